//! Messages, their idempotency index and their deliveries.
//!
//! Accepting a message is one job: the idempotency check, the message with its body, its
//! idempotency entry and one `pending` delivery per destination it fans out to, all in the
//! same transaction. So a message is never half-stored, and a delivery exists for it as soon as
//! the partner got its 202.

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable as _};

use sha2::{Digest, Sha256};

use crate::error::{Result, StorageError};

use crate::records::{DeliveryRecord, DeliveryStatus, MessageId, MessageRecord, decode, encode};
use crate::tables::{DELIVERIES, MESSAGES};
use crate::tx::Tx;

/// How many messages one list call examines at most. A selective filter over a large table
/// returns a short (even empty) page with a `next` cursor rather than scanning everything.
pub const MAX_SCAN: usize = 10_000;

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub record: MessageRecord,
    pub body: Bytes,
    /// A second message with the same key is a duplicate.
    pub dedupe_key: Option<DedupeKey>,
    /// The destinations it fans out to; each gets a `pending` delivery due at once.
    pub destinations: Vec<String>,
    /// A suppression this message causes (a partner's bounce or complaint, through a source's
    /// `suppress_on`), stored with its audit entry in the same commit.
    pub suppress: Option<(crate::subjects::NewSuppression, crate::records::AuditEntry)>,
}

/// The outcome of accepting a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored under this id.
    New(MessageId),
    /// The key was seen before: nothing was stored; this is the first message's id.
    Duplicate(MessageId),
}

/// The idempotency key of an external id within a scope (a source's name, or the publishing
/// API's): the first 128 bits of SHA-256 over `scope \0 id`. The NUL keeps `("a", "b\0c")`
/// and `("a\0b", "c")` apart. A cryptographic hash because ids are attacker-chosen: nobody can
/// craft a collision to have a genuine webhook dropped as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupeKey(u128);

impl DedupeKey {
    pub fn new(scope: &str, external_id: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(scope.as_bytes())
            .chain_update([0])
            .chain_update(external_id.as_bytes())
            .finalize();
        let mut prefix = [0; 16];
        prefix.copy_from_slice(&digest[..16]);
        Self(u128::from_be_bytes(prefix))
    }
}

/// The idempotency table is swept in this many equal slices of its (uniform) key space, one
/// slice per call, so each sweep does a bounded share of the work.
pub const SWEEP_SLICES: u32 = 256;

pub(crate) fn insert(tx: &mut Tx<'_>, msg: &NewMessage) -> Result<Accepted> {
    let received = msg.record.received_at_ms;
    if let Some(DedupeKey(key)) = msg.dedupe_key {
        // One descent in the common case: insert, and only on a hit put the first one back.
        let idempotency = tx.idempotency()?;
        let previous = idempotency
            .insert(key, (msg.id.0, received))?
            .map(|seen| seen.value());
        if let Some(first) = previous {
            idempotency.insert(key, first)?;
            return Ok(Accepted::Duplicate(MessageId(first.0)));
        }
    }
    tx.messages()?
        .insert(msg.id.0, encode_message(&msg.record, &msg.body).as_slice())?;
    if let Some(recipient) = &msg.record.recipient {
        tx.messages_by_recipient()?
            .insert((recipient.as_str(), msg.id.0), ())?;
    }
    if let Some((suppression, audit)) = &msg.suppress {
        crate::subjects::put_suppressions(tx, std::slice::from_ref(suppression))?;
        crate::subjects::append_audit(tx, audit)?;
    }
    if msg.destinations.is_empty() {
        return Ok(Accepted::New(msg.id));
    }
    let pending = encode(&DeliveryRecord::pending(received));
    let deliveries = tx.deliveries()?;
    for destination in &msg.destinations {
        deliveries.insert((msg.id.0, destination.as_str()), pending.as_slice())?;
    }
    let due = tx.deliveries_due()?;
    for destination in &msg.destinations {
        due.insert((destination.as_str(), received, msg.id.0), ())?;
    }
    Ok(Accepted::New(msg.id))
}

/// Deletes a message with its deliveries, their queue entries and DLQ entries.
pub(crate) fn delete(tx: &mut Tx<'_>, id: u128) -> Result<()> {
    tx.messages()?.remove(id)?;
    let deliveries: Vec<(String, DeliveryRecord)> = tx
        .deliveries()?
        .range((id, "")..(id.saturating_add(1), ""))?
        .map(|e| {
            e.map_err(StorageError::from)
                .and_then(|(k, v)| Ok((k.value().1.to_owned(), decode("deliveries", v.value())?)))
        })
        .collect::<Result<_>>()?;
    for (destination, delivery) in &deliveries {
        let dest = destination.as_str();
        if let Some(due) = delivery
            .next_attempt_at_ms
            .filter(|_| delivery.status.is_live())
        {
            tx.deliveries_due()?.remove((dest, due, id))?;
        }
        if let Some(died) = delivery.dead_at_ms {
            tx.dead_letters()?.remove((died, id, dest))?;
        }
        tx.deliveries()?.remove((id, dest))?;
    }
    Ok(())
}

/// Forgets the keys of slice `slice` accepted before `before_ms`; returns how many.
pub(crate) fn sweep_idempotency(tx: &mut Tx<'_>, before_ms: u64, slice: u32) -> Result<usize> {
    let width = u128::MAX / u128::from(SWEEP_SLICES);
    let start = width * u128::from(slice % SWEEP_SLICES);
    let end = if slice % SWEEP_SLICES == SWEEP_SLICES - 1 {
        u128::MAX
    } else {
        start + width - 1
    };
    let mut removed = 0;
    tx.idempotency()?
        .retain_in(start..=end, |_, (_, accepted)| {
            let keep = accepted >= before_ms;
            removed += usize::from(!keep);
            keep
        })?;
    Ok(removed)
}

/// `[u32 LE n][n bytes of JSON record][body]`.
pub(crate) fn encode_message(record: &MessageRecord, body: &[u8]) -> Vec<u8> {
    let header = encode(record);
    let len = u32::try_from(header.len()).unwrap_or(u32::MAX);
    let mut value = Vec::with_capacity(4 + header.len() + body.len());
    value.extend_from_slice(&len.to_le_bytes());
    value.extend_from_slice(&header);
    value.extend_from_slice(body);
    value
}

/// The record and the body of a stored message value.
pub(crate) fn decode_message(value: &[u8]) -> Result<(MessageRecord, &[u8])> {
    let corrupt = || StorageError::corrupt("messages", "truncated value");
    let (len, rest) = value.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| corrupt())?;
    if rest.len() < len {
        return Err(corrupt());
    }
    let (header, body) = rest.split_at(len);
    Ok((decode("messages", header)?, body))
}

/// Narrows a message listing. Every given field must match.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Messages that have at least one delivery in this status.
    pub status: Option<DeliveryStatus>,
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub recipient: Option<crate::Recipient>,
    /// Received at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    /// Received before this time (Unix ms).
    pub until_ms: Option<u64>,
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
    let (record, body) = decode_message(raw.value())?;
    Ok(Some(MessageView {
        id,
        record,
        deliveries: deliveries_of(txn, id)?,
        body: Some(body.to_vec()),
    }))
}

pub(crate) fn list(
    txn: &ReadTransaction,
    filter: &MessageFilter,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Page<MessageView>> {
    let messages = txn.open_table(MESSAGES)?;
    // Ids are ULIDs, whose top 48 bits are the receipt time: the time bounds are key bounds.
    let time_key = |ms: u64| u128::from(ms.min((1 << 48) - 1)) << 80;
    let upper = after
        .map_or(u128::MAX, |a| a.0)
        .min(filter.until_ms.map_or(u128::MAX, time_key));
    let lower = filter.since_ms.map_or(0, time_key);
    if lower >= upper {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let mut items = Vec::new();
    let mut last_seen = None;
    let mut scanned = 0;
    for entry in messages.range(lower..upper)?.rev() {
        let (key, raw) = entry?;
        let id = MessageId(key.value());
        last_seen = Some(id);
        scanned += 1;
        let (record, _) = decode_message(raw.value())?;
        if filter.source.is_some() && record.source != filter.source
            || filter.event_type.is_some() && record.event_type != filter.event_type
            || filter.recipient.is_some() && record.recipient != filter.recipient
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
        Some(id) if messages.range(lower..id.0)?.next().is_some() => Some(id),
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
