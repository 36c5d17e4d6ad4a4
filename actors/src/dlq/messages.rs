use herald_storage::{DeadFilter, DeliveryKey, StorageError};
use ractor::RpcReplyPort;

#[derive(Debug)]
pub enum DlqMsg {
    /// Re-queue these dead deliveries with fresh attempts; answers how many were dead.
    Retry(Vec<DeliveryKey>, RpcReplyPort<Result<usize, StorageError>>),
    /// Re-queue every dead delivery matching the filter; answers the count at once and
    /// re-queues large sets in the background.
    BulkRetry(DeadFilter, RpcReplyPort<Result<usize, StorageError>>),
    /// Remove one entry from the DLQ; answers whether it was there.
    Discard(DeliveryKey, RpcReplyPort<Result<bool, StorageError>>),
    /// A destination's circuit closed again: re-queue its dead deliveries (`auto_recover`).
    AutoRecover(String),
}
