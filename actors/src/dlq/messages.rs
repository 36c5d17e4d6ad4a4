use herald_storage::{AuditEntry, DeadFilter, DeliveryKey, StorageError};
use ractor::RpcReplyPort;

use crate::admin::dlq::RequeueAudit;

#[derive(Debug)]
pub enum DlqMsg {
    /// Re-queue these dead deliveries with fresh attempts, with the audit entry the count
    /// makes; answers how many were dead.
    Retry(
        Vec<DeliveryKey>,
        RequeueAudit,
        RpcReplyPort<Result<usize, StorageError>>,
    ),
    /// Re-queue every dead delivery matching the filter; answers the count at once and
    /// re-queues large sets in the background. The audit entry goes with the first chunk.
    BulkRetry(
        DeadFilter,
        RequeueAudit,
        RpcReplyPort<Result<usize, StorageError>>,
    ),
    /// Remove one entry from the DLQ, with its audit entry; answers whether it was there.
    Discard(
        DeliveryKey,
        AuditEntry,
        RpcReplyPort<Result<bool, StorageError>>,
    ),
    /// A destination's circuit closed again: re-queue its dead deliveries (`auto_recover`).
    AutoRecover(String),
}
