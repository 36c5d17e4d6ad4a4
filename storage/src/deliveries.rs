//! Deliveries after acceptance: the dispatcher's queue, attempts and their outcomes, and the
//! dead-letter queue.
//!
//! The redb side: the rules themselves (what an outcome, a DLQ retry or a resend does to a
//! delivery) are [`crate::rules`], shared with the PostgreSQL backend.
//!
//! Invariants, kept by every function here in one transaction ([`crate::rules::Queues`]):
//! - a delivery is in `deliveries_due` under `(destination, next_attempt_at, message)` exactly
//!   when its status is live (`pending`, `retrying`);
//! - it is in `dead_letters` under `(dead_at, message, destination)` exactly when it is `dead`
//!   and has not been discarded.

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable as _};

use crate::error::{Result, StorageError};
use crate::messages::decode_message;
use crate::records::{Attempt, DeliveryRecord, MessageId, MessageRecord, decode, encode};
use crate::rules::{DESTINATION_DELETED, Queues, Recorded};
use crate::tables::{DEAD_LETTERS, DELIVERIES, DELIVERIES_DUE, MESSAGES};
use crate::tx::Tx;

/// Identifies one delivery: a message to a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    pub message: MessageId,
    pub destination: String,
}

impl std::fmt::Display for DeliveryKey {
    /// `msg_….destination`: the DLQ's ids. Message ids and destination names are made of
    /// `[A-Za-z0-9_-]`, so the first `.` splits the two unambiguously.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.message, self.destination)
    }
}

impl std::str::FromStr for DeliveryKey {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (message, destination) = s.split_once('.').ok_or(())?;
        if destination.is_empty() {
            return Err(());
        }
        Ok(Self {
            message: message.parse().map_err(|_| ())?,
            destination: destination.to_owned(),
        })
    }
}

/// A delivery ready to attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub key: DeliveryKey,
    pub due_at_ms: u64,
    pub round_attempts: u32,
    pub message: MessageRecord,
    pub body: Bytes,
}

/// What an attempt (or a decision about one) does to a delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded,
    /// Try again at this time (`retrying`).
    Retry {
        at_ms: u64,
    },
    /// Stay `pending` until this time without counting the attempt against `max_attempts`
    /// (the destination was disabled by a 410, or the attempt was refused locally).
    Wait {
        until_ms: u64,
    },
    /// Out of attempts: to the DLQ.
    Dead,
    /// Never sent: the recipient opted out. `reason` says why.
    Suppressed {
        reason: String,
    },
}

/// Everything one attempt changes, written in one job.
#[derive(Debug, Clone)]
pub struct AttemptUpdate {
    pub key: DeliveryKey,
    /// `None` for decisions taken without sending (suppressed, refused locally).
    pub attempt: Option<Attempt>,
    pub outcome: Outcome,
    /// The destination's new state (circuit, or disabled after a 410), if it changed: the
    /// dispatcher's copy of the record. Only the circuit and the disabling are taken from it,
    /// and only if the destination still exists.
    pub destination: Option<(String, crate::records::DestinationRecord)>,
    pub now_ms: u64,
}

/// Applies an attempt's outcome ([`DeliveryRecord::record_outcome`]). `attempt` is `None` for
/// decisions taken without sending. Returns false if the delivery no longer exists or is no
/// longer live (deleted meanwhile): then nothing is written.
pub(crate) fn record(
    tx: &mut Tx<'_>,
    key: &DeliveryKey,
    attempt: Option<&Attempt>,
    outcome: &Outcome,
    now_ms: u64,
) -> Result<bool> {
    let id = key.message.0;
    let dest = key.destination.as_str();
    let Some(mut delivery) = get_delivery(tx, id, dest)? else {
        return Ok(false);
    };
    let was = delivery.queues();
    let recorded = delivery.record_outcome(attempt, outcome, now_ms);
    if recorded == Recorded::Changed {
        put_moved(tx, id, dest, was, &delivery)?;
    }
    Ok(recorded.taken())
}

/// Puts dead deliveries back in the queue with a fresh round of attempts, due at `now_ms`
/// ([`DeliveryRecord::requeue`]). A delivery whose destination no longer exists stays in the
/// DLQ: nothing would read its queue.
/// Skips keys that are not dead (already retried, discarded, never existed). Returns how many
/// were re-queued.
pub(crate) fn requeue(tx: &mut Tx<'_>, keys: &[DeliveryKey], now_ms: u64) -> Result<usize> {
    let mut requeued = 0;
    for key in keys {
        let (id, dest) = (key.message.0, key.destination.as_str());
        if tx.destinations()?.get(dest)?.is_none() {
            continue;
        }
        let Some(mut delivery) = get_delivery(tx, id, dest)? else {
            continue;
        };
        let was = delivery.queues();
        if delivery.requeue(now_ms) {
            put_moved(tx, id, dest, was, &delivery)?;
            requeued += 1;
        }
    }
    Ok(requeued)
}

/// Resends a message: each of its deliveries (only the one to `destination`, if given) is due
/// again at once with a fresh round of attempts, whatever its status — succeeded, dead (it
/// leaves the DLQ), suppressed (the opt-out check runs again before the attempt) or still
/// queued ([`DeliveryRecord::resend`]). Deliveries to destinations deleted since are skipped.
/// `None` if there is no such message; otherwise how many deliveries were re-queued.
pub(crate) fn resend(
    tx: &mut Tx<'_>,
    message: MessageId,
    destination: Option<&str>,
    now_ms: u64,
) -> Result<Option<usize>> {
    let id = message.0;
    if tx.messages()?.get(id)?.is_none() {
        return Ok(None);
    }
    let targets: Vec<String> = tx
        .deliveries()?
        .range((id, "")..)?
        .map_while(|e| match e {
            Ok((k, _)) if k.value().0 == id => Some(Ok(k.value().1.to_owned())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<std::result::Result<_, _>>()?;
    let mut requeued = 0;
    for dest in targets
        .iter()
        .filter(|d| destination.is_none_or(|want| want == d.as_str()))
    {
        let dest = dest.as_str();
        if tx.destinations()?.get(dest)?.is_none() {
            continue;
        }
        let Some(mut delivery) = get_delivery(tx, id, dest)? else {
            continue;
        };
        let was = delivery.queues();
        delivery.resend(now_ms);
        put_moved(tx, id, dest, was, &delivery)?;
        requeued += 1;
    }
    Ok(Some(requeued))
}

/// Removes a dead delivery from the DLQ ([`DeliveryRecord::discard`]); it stays `dead` in the
/// message's history. False if it was not in the DLQ.
pub(crate) fn discard(tx: &mut Tx<'_>, key: &DeliveryKey) -> Result<bool> {
    let (id, dest) = (key.message.0, key.destination.as_str());
    let Some(mut delivery) = get_delivery(tx, id, dest)? else {
        return Ok(false);
    };
    let was = delivery.queues();
    if !delivery.discard() {
        return Ok(false);
    }
    put_moved(tx, id, dest, was, &delivery)?;
    Ok(true)
}

/// Kills every live delivery to `destination` (it is being deleted): they go to the DLQ with
/// that reason ([`DeliveryRecord::kill`]). Returns how many.
pub(crate) fn kill_destination(tx: &mut Tx<'_>, destination: &str, now_ms: u64) -> Result<usize> {
    let queued: Vec<(u64, u128)> = tx
        .deliveries_due()?
        .range((destination, 0, 0)..=(destination, u64::MAX, u128::MAX))?
        .map(|e| {
            e.map(|(k, _)| {
                let (_, due, id) = k.value();
                (due, id)
            })
        })
        .collect::<Result<_, _>>()?;
    let mut killed = 0;
    for (due, id) in queued {
        let Some(mut delivery) = get_delivery(tx, id, destination)? else {
            // An entry without its delivery: nothing to kill, and nothing to queue either.
            tx.deliveries_due()?.remove((destination, due, id))?;
            continue;
        };
        let was = delivery.queues();
        if delivery.kill(now_ms, DESTINATION_DELETED) {
            put_moved(tx, id, destination, was, &delivery)?;
            killed += 1;
        }
    }
    Ok(killed)
}

/// Writes `delivery`, moving its `deliveries_due` and `dead_letters` entries from where they
/// were (`was`, before the change) to where it now belongs: the one place the redb backend
/// keeps the rules' invariants in its indexes.
fn put_moved(
    tx: &mut Tx<'_>,
    id: u128,
    dest: &str,
    was: Queues,
    delivery: &DeliveryRecord,
) -> Result<()> {
    let now = delivery.queues();
    if was.due_ms != now.due_ms {
        if let Some(due) = was.due_ms {
            tx.deliveries_due()?.remove((dest, due, id))?;
        }
        if let Some(due) = now.due_ms {
            tx.deliveries_due()?.insert((dest, due, id), ())?;
        }
    }
    if was.dead_ms != now.dead_ms {
        if let Some(died) = was.dead_ms {
            tx.dead_letters()?.remove((died, id, dest))?;
        }
        if let Some(died) = now.dead_ms {
            tx.dead_letters()?.insert((died, id, dest), ())?;
        }
    }
    put_delivery(tx, id, dest, delivery)
}

fn get_delivery(tx: &mut Tx<'_>, id: u128, dest: &str) -> Result<Option<DeliveryRecord>> {
    tx.deliveries()?
        .get((id, dest))?
        .map(|raw| decode("deliveries", raw.value()))
        .transpose()
}

fn put_delivery(tx: &mut Tx<'_>, id: u128, dest: &str, delivery: &DeliveryRecord) -> Result<()> {
    tx.deliveries()?
        .insert((id, dest), encode(delivery).as_slice())?;
    Ok(())
}

/// Up to `limit` deliveries of `destination` due by `now_ms`, earliest first, skipping those
/// for which `skip` is true (already in flight), with their messages.
pub(crate) fn due(
    txn: &ReadTransaction,
    destination: &str,
    now_ms: u64,
    limit: usize,
    skip: &dyn Fn(MessageId) -> bool,
) -> Result<Vec<DueDelivery>> {
    let queue = txn.open_table(DELIVERIES_DUE)?;
    let deliveries = txn.open_table(DELIVERIES)?;
    let messages = txn.open_table(MESSAGES)?;
    let mut out = Vec::new();
    for entry in queue.range((destination, 0, 0)..=(destination, now_ms, u128::MAX))? {
        if out.len() >= limit {
            break;
        }
        let (key, _) = entry?;
        let (_, due_at_ms, id) = key.value();
        if skip(MessageId(id)) {
            continue;
        }
        let delivery: DeliveryRecord = match deliveries.get((id, destination))? {
            Some(raw) => decode("deliveries", raw.value())?,
            None => {
                return Err(StorageError::corrupt(
                    "deliveries_due",
                    "queued delivery missing",
                ));
            }
        };
        let Some(raw) = messages.get(id)? else {
            return Err(StorageError::corrupt(
                "deliveries_due",
                "queued message missing",
            ));
        };
        let (message, body) = decode_message(raw.value())?;
        out.push(DueDelivery {
            key: DeliveryKey {
                message: MessageId(id),
                destination: destination.to_owned(),
            },
            due_at_ms,
            round_attempts: delivery.round_attempts,
            message,
            body: Bytes::copy_from_slice(body),
        });
    }
    Ok(out)
}

/// When the earliest queued delivery of `destination` is due.
pub(crate) fn next_due(txn: &ReadTransaction, destination: &str) -> Result<Option<u64>> {
    let queue = txn.open_table(DELIVERIES_DUE)?;
    let first = queue
        .range((destination, 0, 0)..=(destination, u64::MAX, u128::MAX))?
        .next()
        .transpose()?;
    Ok(first.map(|(k, _)| k.value().1))
}

/// How many deliveries are queued for `destination`.
pub(crate) fn queued(txn: &ReadTransaction, destination: &str) -> Result<u64> {
    let queue = txn.open_table(DELIVERIES_DUE)?;
    let mut n = 0;
    for entry in queue.range((destination, 0, 0)..=(destination, u64::MAX, u128::MAX))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// A dead delivery as the DLQ shows it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: DeliveryKey,
    pub dead_at_ms: u64,
    pub delivery: DeliveryRecord,
    pub message: MessageRecord,
}

/// Filters of a DLQ listing.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub destination: Option<String>,
    /// Only deliveries that died at or after this time.
    pub since_ms: Option<u64>,
}

/// The DLQ's position: `(dead_at, message, destination)` of the last item of a page.
pub type DeadCursor = (u64, MessageId, String);

/// A page of the DLQ, newest first.
pub(crate) fn list_dead(
    txn: &ReadTransaction,
    filter: &DeadFilter,
    after: Option<&DeadCursor>,
    limit: usize,
) -> Result<(Vec<DeadLetter>, Option<DeadCursor>)> {
    let dlq = txn.open_table(DEAD_LETTERS)?;
    let upper = after.map_or((u64::MAX, u128::MAX, ""), |(t, m, d)| (*t, m.0, d.as_str()));
    let lower = (filter.since_ms.unwrap_or(0), 0, "");
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for entry in dlq.range(lower..upper)?.rev() {
        let (key, _) = entry?;
        let (dead_at_ms, id, dest) = key.value();
        if filter.destination.as_deref().is_some_and(|d| d != dest) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        if let Some(letter) = dead_letter(txn, id, dest, dead_at_ms)? {
            last = Some((dead_at_ms, MessageId(id), dest.to_owned()));
            items.push(letter);
        }
    }
    Ok((items, if more { last } else { None }))
}

/// Every DLQ entry matching `filter`, oldest first (for bulk retry).
pub(crate) fn dead_keys(txn: &ReadTransaction, filter: &DeadFilter) -> Result<Vec<DeliveryKey>> {
    let dlq = txn.open_table(DEAD_LETTERS)?;
    let mut keys = Vec::new();
    for entry in dlq.range((filter.since_ms.unwrap_or(0), 0, "")..)? {
        let (key, _) = entry?;
        let (_, id, dest) = key.value();
        if filter.destination.as_deref().is_none_or(|d| d == dest) {
            keys.push(DeliveryKey {
                message: MessageId(id),
                destination: dest.to_owned(),
            });
        }
    }
    Ok(keys)
}

/// One DLQ entry by key, if it is in the DLQ.
pub(crate) fn get_dead(txn: &ReadTransaction, key: &DeliveryKey) -> Result<Option<DeadLetter>> {
    let deliveries = txn.open_table(DELIVERIES)?;
    let Some(raw) = deliveries.get((key.message.0, key.destination.as_str()))? else {
        return Ok(None);
    };
    let delivery: DeliveryRecord = decode("deliveries", raw.value())?;
    match delivery.queues().dead_ms {
        Some(at) => dead_letter(txn, key.message.0, &key.destination, at),
        None => Ok(None),
    }
}

fn dead_letter(
    txn: &ReadTransaction,
    id: u128,
    dest: &str,
    dead_at_ms: u64,
) -> Result<Option<DeadLetter>> {
    let deliveries = txn.open_table(DELIVERIES)?;
    let messages = txn.open_table(MESSAGES)?;
    let (Some(delivery), Some(message)) = (deliveries.get((id, dest))?, messages.get(id)?) else {
        return Ok(None);
    };
    Ok(Some(DeadLetter {
        key: DeliveryKey {
            message: MessageId(id),
            destination: dest.to_owned(),
        },
        dead_at_ms,
        delivery: decode("deliveries", delivery.value())?,
        message: decode_message(message.value())?.0,
    }))
}
