//! Messages, their idempotency index and their deliveries.
//!
//! Accepting a message is one job: the idempotency check, the message, its body, its
//! idempotency entries and one `pending` delivery per destination it fans out to, all in the
//! same transaction. So a message is never half-stored, and a delivery exists for it as soon as
//! the partner got its 202.

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::error::Result;
use crate::records::{DeliveryRecord, DeliveryStatus, MessageId, MessageRecord, decode, encode};
use crate::tables::{
    DELIVERIES, DELIVERIES_DUE, IDEMPOTENCY, IDEMPOTENCY_BY_TIME, MESSAGE_BODIES, MESSAGES,
};

/// How many messages one list call examines at most. A selective filter over a large table
/// returns a short (even empty) page with a `next` cursor rather than scanning everything.
pub const MAX_SCAN: usize = 10_000;

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub record: MessageRecord,
    pub body: Bytes,
    /// `"{source}\0{external id}"`: a second message with the same key is a duplicate.
    pub dedupe_key: Option<String>,
    /// The destinations it fans out to; each gets a `pending` delivery due at once.
    pub destinations: Vec<String>,
}

/// The outcome of accepting a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored under this id.
    New(MessageId),
    /// The key was seen before: nothing was stored; this is the first message's id.
    Duplicate(MessageId),
}

/// Builds the idempotency key of an external id. The NUL keeps `("a", "b\0c")` and
/// `("a\0b", "c")` apart; neither source names nor header values can contain it.
pub fn dedupe_key(scope: &str, external_id: &str) -> String {
    format!("{scope}\0{external_id}")
}

pub(crate) fn insert(txn: &WriteTransaction, msg: &NewMessage) -> Result<Accepted> {
    let received = msg.record.received_at_ms;
    if let Some(key) = &msg.dedupe_key {
        let mut idempotency = txn.open_table(IDEMPOTENCY)?;
        if let Some(seen) = idempotency.get(key.as_str())? {
            return Ok(Accepted::Duplicate(MessageId(seen.value().0)));
        }
        idempotency.insert(key.as_str(), (msg.id.0, received))?;
        txn.open_table(IDEMPOTENCY_BY_TIME)?
            .insert((received, key.as_str()), ())?;
    }
    txn.open_table(MESSAGES)?
        .insert(msg.id.0, encode(&msg.record).as_slice())?;
    txn.open_table(MESSAGE_BODIES)?
        .insert(msg.id.0, msg.body.as_ref())?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut due = txn.open_table(DELIVERIES_DUE)?;
    let pending = encode(&DeliveryRecord {
        status: DeliveryStatus::Pending,
        attempts: Vec::new(),
        next_attempt_at_ms: Some(received),
    });
    for destination in &msg.destinations {
        deliveries.insert((msg.id.0, destination.as_str()), pending.as_slice())?;
        due.insert(
            (
                DeliveryStatus::Pending.index_tag(),
                received,
                msg.id.0,
                destination.as_str(),
            ),
            (),
        )?;
    }
    Ok(Accepted::New(msg.id))
}

/// Forgets idempotency keys accepted before `before_ms`, at most `max` of them; returns how
/// many were removed. Run periodically; the keys are then older than the dedupe window.
pub(crate) fn sweep_idempotency(
    txn: &WriteTransaction,
    before_ms: u64,
    max: usize,
) -> Result<usize> {
    let mut by_time = txn.open_table(IDEMPOTENCY_BY_TIME)?;
    let mut idempotency = txn.open_table(IDEMPOTENCY)?;
    let expired: Vec<(u64, String)> = by_time
        .range((0, "")..(before_ms, ""))?
        .take(max)
        .map(|entry| {
            entry.map(|(k, _)| {
                let (at, key) = k.value();
                (at, key.to_owned())
            })
        })
        .collect::<Result<_, _>>()?;
    for (at, key) in &expired {
        by_time.remove((*at, key.as_str()))?;
        idempotency.remove(key.as_str())?;
    }
    Ok(expired.len())
}

/// Narrows a message listing. Every given field must match.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Messages that have at least one delivery in this status.
    pub status: Option<DeliveryStatus>,
    pub source: Option<String>,
    pub event_type: Option<String>,
}

/// A message as the API shows it.
#[derive(Debug, Clone)]
pub struct MessageView {
    pub id: MessageId,
    pub record: MessageRecord,
    /// `(destination, state)`, in destination-name order.
    pub deliveries: Vec<(String, DeliveryRecord)>,
    /// The original bytes; only filled in by [`get`].
    pub body: Option<Vec<u8>>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `after` for the next page; `None` at the end.
    pub next: Option<MessageId>,
}

pub(crate) fn get(txn: &ReadTransaction, id: MessageId) -> Result<Option<MessageView>> {
    let messages = txn.open_table(MESSAGES)?;
    let Some(raw) = messages.get(id.0)? else {
        return Ok(None);
    };
    let record = decode("messages", raw.value())?;
    let body = txn
        .open_table(MESSAGE_BODIES)?
        .get(id.0)?
        .map(|b| b.value().to_vec());
    Ok(Some(MessageView {
        id,
        record,
        deliveries: deliveries_of(txn, id)?,
        body,
    }))
}

pub(crate) fn list(
    txn: &ReadTransaction,
    filter: &MessageFilter,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Page<MessageView>> {
    let messages = txn.open_table(MESSAGES)?;
    let upper = after.map_or(u128::MAX, |a| a.0);
    let mut items = Vec::new();
    let mut last_seen = None;
    let mut scanned = 0;
    for entry in messages.range(..upper)?.rev() {
        let (key, raw) = entry?;
        let id = MessageId(key.value());
        last_seen = Some(id);
        scanned += 1;
        let record: MessageRecord = decode("messages", raw.value())?;
        if filter.source.is_some() && record.source != filter.source
            || filter.event_type.is_some() && record.event_type != filter.event_type
        {
            continue;
        }
        let deliveries = deliveries_of(txn, id)?;
        if let Some(status) = filter.status
            && !deliveries.iter().any(|(_, d)| d.status == status)
        {
            continue;
        }
        items.push(MessageView {
            id,
            record,
            deliveries,
            body: None,
        });
        if items.len() == limit || scanned >= MAX_SCAN {
            break;
        }
    }
    // More may follow only if we stopped early; then resume after the last message examined.
    let next = match last_seen {
        Some(id) if messages.range(..id.0)?.next().is_some() => Some(id),
        _ => None,
    };
    Ok(Page { items, next })
}

fn deliveries_of(txn: &ReadTransaction, id: MessageId) -> Result<Vec<(String, DeliveryRecord)>> {
    let deliveries = txn.open_table(DELIVERIES)?;
    let mut out = Vec::new();
    for entry in deliveries.range((id.0, "")..(id.0.saturating_add(1), ""))? {
        let (key, raw) = entry?;
        let (_, destination) = key.value();
        out.push((destination.to_owned(), decode("deliveries", raw.value())?));
    }
    Ok(out)
}
