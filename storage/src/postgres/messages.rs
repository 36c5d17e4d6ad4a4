//! Messages and their idempotency keys on PostgreSQL.
//!
//! A batch of accepted messages is four statements whatever its size: claim the dedupe keys
//! (`INSERT … ON CONFLICT DO NOTHING RETURNING`), read the first message's id of each key that
//! was taken, then insert the new messages and their deliveries from arrays. Two nodes
//! accepting the same key at once are ordered by the key's unique index: the second waits for
//! the first's transaction and then sees its key taken, so exactly one message is stored and
//! the other partner request is answered with its id. Keys are claimed in key order, so two
//! batches never wait on each other in a cycle.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Transaction};

use super::Shared;
use super::schema::{id_bytes, id_from, ms};
use crate::error::Result;
use crate::records::{DeliveryRecord, decode, encode};
use crate::{Accepted, Change, MessageFilter, MessageId, MessageView, NewMessage, Page};

/// Accepts `msgs` in `tx`; each gets its outcome (a refused one writes nothing).
pub(super) async fn insert_batch(
    shared: &Shared,
    tx: &Transaction<'_>,
    msgs: &[&NewMessage],
) -> Result<Vec<Result<Accepted>>> {
    if msgs.is_empty() {
        return Ok(Vec::new());
    }
    // A key met twice in the batch: the later messages are duplicates of the first.
    let mut first_with: HashMap<u128, usize> = HashMap::new();
    let mut copy_of: Vec<Option<usize>> = vec![None; msgs.len()];
    let mut claims: Vec<(u128, usize)> = Vec::new();
    for (i, msg) in msgs.iter().enumerate() {
        if let Some(key) = msg.dedupe_key {
            if let Some(&first) = first_with.get(&key.0) {
                copy_of[i] = Some(first);
            } else {
                first_with.insert(key.0, i);
                claims.push((key.0, i));
            }
        }
    }
    claims.sort_unstable();
    let taken = claim_keys(tx, msgs, &claims).await?;

    let mut outcomes: Vec<Accepted> = Vec::with_capacity(msgs.len());
    for (i, msg) in msgs.iter().enumerate() {
        let outcome = match (copy_of[i], msg.dedupe_key) {
            (Some(first), _) => Accepted::Duplicate(match outcomes[first] {
                Accepted::New(id) | Accepted::Duplicate(id) => id,
            }),
            (None, Some(key)) => match taken.get(&key.0) {
                Some(&first) => Accepted::Duplicate(MessageId(first)),
                None => Accepted::New(msg.id),
            },
            (None, None) => Accepted::New(msg.id),
        };
        outcomes.push(outcome);
    }
    let new: Vec<&NewMessage> = msgs
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| matches!(outcome, Accepted::New(_)))
        .map(|(msg, _)| *msg)
        .collect();
    insert_messages(tx, &new).await?;
    let fanned_out = insert_deliveries(tx, &new).await?;
    for msg in &new {
        if let Some((suppression, audit)) = &msg.suppress {
            super::subjects::put_suppressions(shared, tx, std::slice::from_ref(suppression))
                .await?;
            super::subjects::append_audit(tx, audit).await?;
        }
    }
    if fanned_out && shared.work_notice_due() {
        shared.notify(tx, &Change::Work).await?;
    }
    Ok(outcomes.into_iter().map(Ok).collect())
}

/// Claims `claims`' keys (sorted) for their messages; returns the keys already taken, with the
/// id of the message that took them.
async fn claim_keys(
    tx: &Transaction<'_>,
    msgs: &[&NewMessage],
    claims: &[(u128, usize)],
) -> Result<HashMap<u128, u128>> {
    if claims.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<Vec<u8>> = claims.iter().map(|(key, _)| id_bytes(*key)).collect();
    let ids: Vec<Vec<u8>> = claims
        .iter()
        .map(|&(_, i)| id_bytes(msgs[i].id.0))
        .collect();
    let times: Vec<i64> = claims
        .iter()
        .map(|&(_, i)| ms(msgs[i].record.received_at_ms))
        .collect();
    let claim = tx
        .prepare_cached(
            "INSERT INTO idempotency (key, message_id, accepted_ms)
             SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::int8[])
             ON CONFLICT (key) DO NOTHING
             RETURNING key",
        )
        .await?;
    let won: HashSet<Vec<u8>> = tx
        .query(&claim, &[&keys, &ids, &times])
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let lost: Vec<&Vec<u8>> = keys.iter().filter(|key| !won.contains(*key)).collect();
    if lost.is_empty() {
        return Ok(HashMap::new());
    }
    let firsts = tx
        .prepare_cached("SELECT key, message_id FROM idempotency WHERE key = ANY($1)")
        .await?;
    let mut taken = HashMap::new();
    for row in tx.query(&firsts, &[&lost]).await? {
        let key: &[u8] = row.get(0);
        let first: &[u8] = row.get(1);
        taken.insert(id_from(key, "idempotency")?, id_from(first, "idempotency")?);
    }
    Ok(taken)
}

async fn insert_messages(tx: &Transaction<'_>, new: &[&NewMessage]) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let ids: Vec<Vec<u8>> = new.iter().map(|m| id_bytes(m.id.0)).collect();
    let received: Vec<i64> = new.iter().map(|m| ms(m.record.received_at_ms)).collect();
    let sources: Vec<Option<&str>> = new.iter().map(|m| m.record.source.as_deref()).collect();
    let types: Vec<Option<&str>> = new.iter().map(|m| m.record.event_type.as_deref()).collect();
    let recipients: Vec<Option<&str>> = new
        .iter()
        .map(|m| m.record.recipient.as_ref().map(crate::Recipient::as_str))
        .collect();
    let keys: Vec<Option<Vec<u8>>> = new
        .iter()
        .map(|m| m.dedupe_key.map(|key| id_bytes(key.0)))
        .collect();
    let records: Vec<Vec<u8>> = new.iter().map(|m| encode(&m.record)).collect();
    let bodies: Vec<&[u8]> = new.iter().map(|m| m.body.as_ref()).collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO messages
                 (id, received_ms, source, event_type, recipient, dedupe_key, record, body)
             SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::text[], $4::text[], $5::text[],
                                  $6::bytea[], $7::bytea[], $8::bytea[])",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &ids,
            &received,
            &sources,
            &types,
            &recipients,
            &keys,
            &records,
            &bodies,
        ],
    )
    .await?;
    Ok(())
}

/// One `pending` delivery per destination of each message, due at once. True if there were
/// any.
async fn insert_deliveries(tx: &Transaction<'_>, new: &[&NewMessage]) -> Result<bool> {
    let mut ids = Vec::new();
    let mut destinations = Vec::new();
    let mut due = Vec::new();
    let mut records = Vec::new();
    for msg in new {
        let received = msg.record.received_at_ms;
        for destination in &msg.destinations {
            ids.push(id_bytes(msg.id.0));
            destinations.push(destination.as_str());
            due.push(ms(received));
            records.push(encode(&DeliveryRecord::pending(received)));
        }
    }
    if ids.is_empty() {
        return Ok(false);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO deliveries (message_id, destination, status, due_ms, record)
             SELECT id, destination, 'pending', due, record
             FROM UNNEST($1::bytea[], $2::text[], $3::int8[], $4::bytea[])
                  AS fresh (id, destination, due, record)",
        )
        .await?;
    tx.execute(&insert, &[&ids, &destinations, &due, &records])
        .await?;
    Ok(true)
}

/// Forgets the keys of messages accepted before `before_ms`; returns how many.
pub(super) async fn sweep_idempotency(
    client: &impl GenericClient,
    before_ms: u64,
) -> Result<usize> {
    let swept = client
        .execute(
            "DELETE FROM idempotency WHERE accepted_ms < $1",
            &[&ms(before_ms)],
        )
        .await?;
    Ok(usize::try_from(swept).unwrap_or(usize::MAX))
}

pub(super) async fn get(client: &impl GenericClient, id: MessageId) -> Result<Option<MessageView>> {
    let statement = client
        .prepare_cached("SELECT record, body FROM messages WHERE id = $1")
        .await?;
    let Some(row) = client.query_opt(&statement, &[&id_bytes(id.0)]).await? else {
        return Ok(None);
    };
    let record = decode("messages", row.get::<_, &[u8]>(0))?;
    let body: Vec<u8> = row.get(1);
    let mut deliveries = deliveries_of(client, &[id]).await?;
    Ok(Some(MessageView {
        id,
        record,
        deliveries: deliveries.remove(&id).unwrap_or_default(),
        body: Some(body),
    }))
}

/// Newest first, as the redb backend lists them; `next` is set when more may follow.
pub(super) async fn list(
    client: &impl GenericClient,
    filter: &MessageFilter,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Page<MessageView>> {
    // Ids are ULIDs, whose top 48 bits are the receipt time: the time bounds are id bounds.
    let time_key = |ms: u64| u128::from(ms.min((1 << 48) - 1)) << 80;
    let upper = after
        .map_or(u128::MAX, |a| a.0)
        .min(filter.until_ms.map_or(u128::MAX, time_key));
    let lower = filter.since_ms.map_or(0, time_key);
    if lower >= upper || limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let statement = client
        .prepare_cached(
            "SELECT id, record FROM messages m
             WHERE id >= $1 AND id < $2
               AND ($3::text IS NULL OR source = $3)
               AND ($4::text IS NULL OR event_type = $4)
               AND ($5::text IS NULL OR recipient = $5)
               AND ($6::text IS NULL OR EXISTS
                    (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status = $6))
             ORDER BY id DESC
             LIMIT $7",
        )
        .await?;
    let wanted = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &statement,
            &[
                &id_bytes(lower),
                &id_bytes(upper),
                &filter.source,
                &filter.event_type,
                &filter.recipient.as_ref().map(crate::Recipient::as_str),
                &filter.status.map(crate::DeliveryStatus::as_str),
                &wanted,
            ],
        )
        .await?;
    let more = rows.len() > limit;
    let mut found = Vec::with_capacity(limit);
    for row in rows.into_iter().take(limit) {
        let id = MessageId(id_from(row.get(0), "messages")?);
        found.push((id, decode("messages", row.get::<_, &[u8]>(1))?));
    }
    let ids: Vec<MessageId> = found.iter().map(|(id, _)| *id).collect();
    let mut deliveries = deliveries_of(client, &ids).await?;
    let next = if more { ids.last().copied() } else { None };
    let items = found
        .into_iter()
        .map(|(id, record)| MessageView {
            id,
            record,
            deliveries: deliveries.remove(&id).unwrap_or_default(),
            body: None,
        })
        .collect();
    Ok(Page { items, next })
}

/// The deliveries of `ids`, each message's in destination-name order.
pub(super) async fn deliveries_of(
    client: &impl GenericClient,
    ids: &[MessageId],
) -> Result<HashMap<MessageId, Vec<(String, DeliveryRecord)>>> {
    let mut out: HashMap<MessageId, Vec<(String, DeliveryRecord)>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let keys: Vec<Vec<u8>> = ids.iter().map(|id| id_bytes(id.0)).collect();
    let statement = client
        .prepare_cached(
            "SELECT message_id, destination, record FROM deliveries
             WHERE message_id = ANY($1) ORDER BY message_id, destination",
        )
        .await?;
    for row in client.query(&statement, &[&keys]).await? {
        let id = MessageId(id_from(row.get(0), "deliveries")?);
        let record = decode("deliveries", row.get::<_, &[u8]>(2))?;
        out.entry(id).or_default().push((row.get(1), record));
    }
    Ok(out)
}
