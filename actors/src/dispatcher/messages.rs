use herald_storage::{AttemptUpdate, DeliveryKey, DueDelivery, StorageError};

use super::OptOut;
use super::outbound::AttemptResult;

#[derive(Debug)]
pub enum DispatcherMsg {
    /// Look for due work now (new messages, a re-queue, a timer).
    Scan,
    /// A destination's due deliveries, read (and opt-out checked) by a task the scan spawned:
    /// `read` numbers it, `asked` is how many it was allowed to return.
    Due {
        destination: String,
        read: u64,
        asked: usize,
        due: Result<Vec<(DueDelivery, OptOut)>, StorageError>,
    },
    /// An attempt finished; decide and record its outcome.
    AttemptDone(Box<DueDelivery>, AttemptResult),
    /// The outcome of an attempt is committed: the delivery is no longer in flight.
    Recorded(DeliveryKey),
    /// The outcome could not be committed (for the n-th time): keep it, and its delivery in
    /// flight, until it is.
    NotRecorded(Box<AttemptUpdate>, u32),
    /// A destination was created, changed or deleted (through the API, or by another node):
    /// reload it.
    Reload(String),
    /// Another node's changes may have been missed: reload every destination.
    ReloadAll,
}
