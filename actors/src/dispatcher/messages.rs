use herald_storage::{DeliveryKey, DueDelivery};

use super::outbound::AttemptResult;

#[derive(Debug)]
pub enum DispatcherMsg {
    /// Look for due work now (new messages, a re-queue, a timer).
    Scan,
    /// An attempt finished; decide and record its outcome.
    AttemptDone(Box<DueDelivery>, AttemptResult),
    /// The outcome of an attempt is committed: the delivery is no longer in flight.
    Recorded(DeliveryKey),
    /// A destination was created, changed or deleted through the API: reload it.
    Reload(String),
}
