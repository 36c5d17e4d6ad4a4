use herald_storage::{AttemptUpdate, DeliveryKey, DueDelivery, StorageError};

use super::OptOut;
use super::outbound::AttemptResult;

#[derive(Debug)]
pub enum DispatcherMsg {
    /// The timer: look for due work in the queues that may have some.
    Scan,
    /// New work was committed (here or on another node): look in every queue.
    Work,
    /// A destination's due deliveries, read (and opt-out checked) by a task the scan spawned:
    /// `read` numbers it, `asked` is how many it was allowed to return.
    Due {
        destination: String,
        read: u64,
        asked: usize,
        due: Result<Vec<(DueDelivery, OptOut)>, StorageError>,
        /// It claimed less than it asked: when the queue's next delivery can be claimed, and
        /// the count of wake-ups for new work when the read began.
        quiet_until: Option<(u64, u64)>,
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
