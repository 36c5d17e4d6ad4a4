//! Deliveries on PostgreSQL: claims with leases, outcomes, the DLQ.
//!
//! A row of `deliveries` holds the JSON [`DeliveryRecord`] and, beside it, the columns its
//! queries use, derived from the record by [`DeliveryRecord::queues`] whenever it is written:
//! `status`, `due_ms` (set exactly while live) and `dead_ms` (set exactly while in the DLQ).
//! What each operation does to the record is [`crate::rules`], the same code as on redb; this
//! module only finds, locks and writes the rows.
//!
//! # Claims
//! [`claim_due`] takes due rows with `FOR UPDATE SKIP LOCKED` (so two nodes claiming at once
//! never wait on each other, nor get the same row) and stamps them `lease_until_ms = now +
//! lease` under this node's name before committing. A claimed row is not due for the others
//! until its lease ends; this node may claim its own again at once (what it claimed but did
//! not start, or claimed before a restart under the same name). Recording the outcome clears
//! the lease if this node still holds it: a lease some other node took over after it expired
//! is that node's to clear. A DLQ retry or a resend leaves leases as they are: an attempt may
//! still be in flight on the node that holds one. Lease times are on the callers' clocks (the
//! dispatcher's `now`); a lease (the attempt's timeout and 10 s by default) dwarfs any skew between nodes kept in step by NTP.
//!
//! # Locks
//! Every write locks the rows it reads (`FOR UPDATE`) before deciding, in one order shared by
//! every node and operation, so concurrent writers never deadlock: destinations first (by
//! name), then deliveries by `(message_id, destination)`. A DLQ retry or a resend takes the
//! destination `FOR SHARE`, so a concurrent deletion (which takes it `FOR UPDATE`, then kills
//! its live deliveries) either sees the re-queued delivery and kills it, or runs first and the
//! re-queue finds no destination: no live delivery is ever left to a deleted destination.
//! Claims never wait (`SKIP LOCKED`), and no write here locks a message row.
//!
//! Re-queued work (a DLQ retry, a resend) notifies [`Change::Work`], so the other nodes read
//! their queues now rather than at their next scan.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::Bytes;
use deadpool_postgres::{GenericClient, Transaction};

use super::Shared;
use super::schema::{id_bytes, id_from, ms, ms_from};
use crate::error::{Result, StorageError};
use crate::records::{DeliveryRecord, decode, encode};
use crate::rules::{DESTINATION_DELETED, Recorded};
use crate::{
    AttemptUpdate, AuditEntry, Change, DeadCursor, DeadFilter, DeadLetter, DeliveryKey,
    DueDelivery, MessageId,
};

const TABLE: &str = "deliveries";

/// Claims (leases to this node) up to `limit` deliveries of `destination` due by `now_ms`,
/// earliest first, leaving out `skip` (in flight here) and those another node holds.
pub(super) async fn claim_due(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    destination: &str,
    now_ms: u64,
    limit: usize,
    skip: &HashSet<MessageId>,
    lease_ms: u64,
) -> Result<Vec<DueDelivery>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let skip: Vec<Vec<u8>> = skip.iter().map(|id| id_bytes(id.0)).collect();
    // One statement, so one round trip and its own transaction: lock the due keys (narrow
    // rows, read in the queue index's order, never the bodies) and stamp the lease. The
    // messages are read after the claim committed; a claim is this node's whatever it reads.
    let claim = client
        .prepare_cached(
            "WITH due AS (
                 SELECT message_id FROM deliveries
                 WHERE destination = $1 AND due_ms <= $2
                   AND (lease_until_ms <= $2 OR leased_by = $3)
                   AND NOT (message_id = ANY($4))
                 ORDER BY due_ms, message_id
                 LIMIT $5
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE deliveries d SET lease_until_ms = $6, leased_by = $3
             FROM due WHERE d.destination = $1 AND d.message_id = due.message_id
             RETURNING d.message_id, d.due_ms, d.record",
        )
        .await?;
    let until = ms(now_ms.saturating_add(lease_ms));
    let rows = client
        .query(
            &claim,
            &[
                &destination,
                &ms(now_ms),
                &shared.node(),
                &skip,
                &count(limit),
                &until,
            ],
        )
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let raw_id: Vec<u8> = row.get(0);
        let id = MessageId(id_from(&raw_id, TABLE)?);
        let delivery: DeliveryRecord = decode(TABLE, row.get::<_, &[u8]>(2))?;
        claimed.push((ms_from(row.get(1)), id, delivery.round_attempts, raw_id));
    }
    // RETURNING keeps no order: the queue's is (due time, message id).
    claimed.sort_unstable_by_key(|(due, id, ..)| (*due, *id));
    let ids: Vec<&Vec<u8>> = claimed.iter().map(|(.., raw)| raw).collect();
    let messages = client
        .prepare_cached("SELECT id, record, body FROM messages WHERE id = ANY($1)")
        .await?;
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for row in client.query(&messages, &[&ids]).await? {
        let id = id_from(row.get::<_, &[u8]>(0), "messages")?;
        let record = decode("messages", row.get::<_, &[u8]>(1))?;
        found.insert(id, (record, Bytes::from(row.get::<_, Vec<u8>>(2))));
    }
    claimed
        .into_iter()
        .map(|(due_at_ms, id, round_attempts, _)| {
            // As on redb: a queued delivery without its message is reported, not skipped.
            let (message, body) = found
                .remove(&id.0)
                .ok_or_else(|| StorageError::corrupt(TABLE, "queued message missing"))?;
            Ok(DueDelivery {
                key: DeliveryKey {
                    message: id,
                    destination: destination.to_owned(),
                },
                due_at_ms,
                round_attempts,
                message,
                body,
            })
        })
        .collect()
}

/// Applies a batch of attempt outcomes in the writer's transaction `tx`, in their order (a
/// later outcome for the same delivery sees the earlier one), with the destinations' new
/// circuits and disablings. Each gets its answer: `Ok(false)` if the delivery is gone or no
/// longer live, an error if a row it needs does not decode; either way that update writes
/// nothing.
pub(super) async fn record_batch(
    shared: &Shared,
    tx: &Transaction<'_>,
    updates: &[&AttemptUpdate],
) -> Result<Vec<Result<bool>>> {
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    // Destinations, then deliveries: the lock order of every writer (see the module docs).
    let names: BTreeSet<&str> = updates
        .iter()
        .filter_map(|u| u.destination.as_ref().map(|(name, _)| name.as_str()))
        .collect();
    let mut destinations = super::destinations::AttemptBatch::lock(tx, &names).await?;
    let keys: BTreeSet<&DeliveryKey> = updates.iter().map(|u| &u.key).collect();
    let mut rows = lock(tx, &keys).await?;

    let mut answers = Vec::with_capacity(updates.len());
    let mut taken: BTreeSet<&DeliveryKey> = BTreeSet::new();
    for update in updates {
        // Everything this update needs must decode before any of it is applied.
        let snapshot = update.destination.as_ref();
        if let Some((name, _)) = snapshot
            && let Err(e) = destinations.check(name)
        {
            answers.push(Err(e));
            continue;
        }
        let row = match rows.get_mut(&update.key) {
            Some(Err(e)) => {
                answers.push(Err(e.clone()));
                continue;
            }
            Some(Ok(row)) => Some(row),
            None => None,
        };
        // As on redb, the destination takes the attempt's state whether or not the delivery
        // is still live: the attempt happened.
        if let Some((name, record)) = snapshot {
            destinations.apply(name, record);
        }
        let Some(row) = row else {
            answers.push(Ok(false));
            continue;
        };
        let recorded = row.record_outcome(update.attempt.as_ref(), &update.outcome, update.now_ms);
        if recorded != Recorded::NotLive {
            // Written even when `Unchanged`: that clears this node's lease.
            taken.insert(&update.key);
        }
        answers.push(Ok(recorded.taken()));
    }
    destinations.write(shared, tx).await?;
    write(tx, &changed(&rows, taken), Some(shared.node())).await?;
    Ok(answers)
}

/// How many of a queue's first deliveries [`next_due`] looks at the claims of.
const CLAIMS_LOOKED_AT: i64 = 64;

/// When node `me` can first claim a queued delivery of each of `destinations`: when it is due,
/// or, if another node holds it, when that node's lease ends. `None` for an empty queue.
///
/// Never later than the exact time, and cheap whatever the queue's length: only the first
/// [`CLAIMS_LOOKED_AT`] deliveries by due time are looked at, and the one after them stands
/// for the rest by its due time (none of them is due before it). This node's own claims count
/// from their due time: it holds them in flight, and their outcomes move them.
pub(super) async fn next_due(
    client: &impl GenericClient,
    me: &str,
    destinations: Vec<String>,
) -> Result<Vec<(String, Option<u64>)>> {
    if destinations.is_empty() {
        return Ok(Vec::new());
    }
    // Two short range scans of `deliveries_due` per destination, in the order asked.
    let statement = client
        .prepare_cached(
            "SELECT LEAST(
                 (SELECT min(first.claimable) FROM (
                      SELECT CASE WHEN d.leased_by = $2 THEN d.due_ms
                                  ELSE GREATEST(d.due_ms, d.lease_until_ms) END AS claimable
                      FROM deliveries d
                      WHERE d.destination = n.name AND d.due_ms IS NOT NULL
                      ORDER BY d.due_ms LIMIT $3) AS first),
                 (SELECT d.due_ms FROM deliveries d
                  WHERE d.destination = n.name AND d.due_ms IS NOT NULL
                  ORDER BY d.due_ms OFFSET $3 LIMIT 1))
             FROM UNNEST($1::text[]) WITH ORDINALITY AS n (name, i)
             ORDER BY n.i",
        )
        .await?;
    let rows = client
        .query(&statement, &[&destinations, &me, &CLAIMS_LOOKED_AT])
        .await?;
    Ok(destinations
        .into_iter()
        .zip(rows)
        .map(|(name, row)| (name, row.get::<_, Option<i64>>(0).map(ms_from)))
        .collect())
}

/// How many deliveries are queued for `destination` (claimed or not).
pub(super) async fn queued(client: &impl GenericClient, destination: &str) -> Result<u64> {
    let statement = client
        .prepare_cached(
            "SELECT count(*) FROM deliveries WHERE destination = $1 AND due_ms IS NOT NULL",
        )
        .await?;
    let n: i64 = client.query_one(&statement, &[&destination]).await?.get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A page of the DLQ, newest first, after the cursor `after`; the cursor of the page's last
/// item when more may follow.
pub(super) async fn list_dead(
    client: &impl GenericClient,
    filter: &DeadFilter,
    after: Option<&DeadCursor>,
    limit: usize,
) -> Result<(Vec<DeadLetter>, Option<DeadCursor>)> {
    // Without a cursor, the bound above every entry: the redb backend's too.
    let (died, id, dest) =
        after.map_or((u64::MAX, u128::MAX, ""), |(t, m, d)| (*t, m.0, d.as_str()));
    let statement = client
        .prepare_cached(
            "SELECT d.message_id, d.destination, d.dead_ms, d.record, m.record
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.dead_ms IS NOT NULL AND d.dead_ms >= $1
               AND (d.dead_ms, d.message_id, d.destination) < ($2, $3, $4)
               AND ($5::text IS NULL OR d.destination = $5)
             ORDER BY d.dead_ms DESC, d.message_id DESC, d.destination DESC
             LIMIT $6",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &ms(filter.since_ms.unwrap_or(0)),
                &ms(died),
                &id_bytes(id),
                &dest,
                &filter.destination,
                &count(limit.saturating_add(1)),
            ],
        )
        .await?;
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(limit);
    for row in rows.into_iter().take(limit) {
        items.push(DeadLetter {
            key: DeliveryKey {
                message: MessageId(id_from(row.get(0), TABLE)?),
                destination: row.get(1),
            },
            dead_at_ms: ms_from(row.get(2)),
            delivery: decode(TABLE, row.get::<_, &[u8]>(3))?,
            message: decode("messages", row.get::<_, &[u8]>(4))?,
        });
    }
    let next = items.last().filter(|_| more).map(|last| {
        (
            last.dead_at_ms,
            last.key.message,
            last.key.destination.clone(),
        )
    });
    Ok((items, next))
}

/// One DLQ entry by key, if it is in the DLQ.
pub(super) async fn get_dead(
    client: &impl GenericClient,
    key: &DeliveryKey,
) -> Result<Option<DeadLetter>> {
    let statement = client
        .prepare_cached(
            "SELECT d.record, m.record
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.message_id = $1 AND d.destination = $2",
        )
        .await?;
    let Some(row) = client
        .query_opt(
            &statement,
            &[&id_bytes(key.message.0), &key.destination.as_str()],
        )
        .await?
    else {
        return Ok(None);
    };
    let delivery: DeliveryRecord = decode(TABLE, row.get::<_, &[u8]>(0))?;
    let Some(dead_at_ms) = delivery.queues().dead_ms else {
        return Ok(None);
    };
    Ok(Some(DeadLetter {
        key: key.clone(),
        dead_at_ms,
        delivery,
        message: decode("messages", row.get::<_, &[u8]>(1))?,
    }))
}

/// Every DLQ entry matching `filter`, oldest first (for bulk retry).
pub(super) async fn dead_keys(
    client: &impl GenericClient,
    filter: &DeadFilter,
) -> Result<Vec<DeliveryKey>> {
    let statement = client
        .prepare_cached(
            "SELECT message_id, destination FROM deliveries
             WHERE dead_ms IS NOT NULL AND dead_ms >= $1
               AND ($2::text IS NULL OR destination = $2)
             ORDER BY dead_ms, message_id, destination",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&ms(filter.since_ms.unwrap_or(0)), &filter.destination],
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(DeliveryKey {
                message: MessageId(id_from(row.get(0), TABLE)?),
                destination: row.get(1),
            })
        })
        .collect()
}

/// Re-queues the DLQ entries among `keys` whose destination still exists
/// ([`DeliveryRecord::requeue`]), with `audit(n)`'s entry, in one transaction; returns how many.
pub(super) async fn requeue<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    keys: &[DeliveryKey],
    now_ms: u64,
    audit: A,
) -> Result<usize>
where
    A: Fn(usize) -> Option<AuditEntry> + Send + 'static,
{
    let tx = client.transaction().await?;
    let names: BTreeSet<&str> = keys.iter().map(|k| k.destination.as_str()).collect();
    let existing = super::destinations::lock_shared(&tx, &names).await?;
    let wanted: BTreeSet<&DeliveryKey> = keys
        .iter()
        .filter(|k| existing.contains(&k.destination))
        .collect();
    let mut rows = lock(&tx, &wanted).await?;
    let mut requeued = BTreeSet::new();
    // In the order given, as on redb: a key given twice is re-queued once.
    for key in keys {
        if let Some(row) = rows.get_mut(key) {
            let row = row.as_mut().map_err(|e| e.clone())?;
            if row.requeue(now_ms) {
                requeued.insert(key);
            }
        }
    }
    let n = requeued.len();
    write(&tx, &changed(&rows, requeued), None).await?;
    if let Some(entry) = audit(n) {
        super::subjects::append_audit(&tx, &entry).await?;
    }
    if n > 0 {
        shared.notify(&tx, &Change::Work).await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Resends `message` ([`DeliveryRecord::resend`]) to each of its destinations that still exists
/// (only `destination`, if given), with `audit(n)`'s entry, in one transaction. `None` if there
/// is no such message.
pub(super) async fn resend<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    message: MessageId,
    destination: Option<&str>,
    now_ms: u64,
    audit: A,
) -> Result<Option<usize>>
where
    A: Fn(usize) -> AuditEntry + Send + 'static,
{
    let tx = client.transaction().await?;
    let id = id_bytes(message.0);
    // Not locked: a message deleted from here on takes its deliveries along, which the
    // locking below then finds gone (and does not count).
    let exists = tx
        .prepare_cached("SELECT 1 FROM messages WHERE id = $1")
        .await?;
    if tx.query_opt(&exists, &[&id]).await?.is_none() {
        return Ok(None);
    }
    let targets = tx
        .prepare_cached(
            "SELECT destination FROM deliveries
             WHERE message_id = $1 AND ($2::text IS NULL OR destination = $2)",
        )
        .await?;
    let names: Vec<String> = tx
        .query(&targets, &[&id, &destination])
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let existing = super::destinations::lock_shared(&tx, &names).await?;
    let keys: Vec<DeliveryKey> = existing
        .into_iter()
        .map(|destination| DeliveryKey {
            message,
            destination,
        })
        .collect();
    let mut rows = lock(&tx, &keys.iter().collect()).await?;
    let mut resent = BTreeSet::new();
    for key in &keys {
        if let Some(row) = rows.get_mut(key) {
            row.as_mut().map_err(|e| e.clone())?.resend(now_ms);
            resent.insert(key);
        }
    }
    let n = resent.len();
    write(&tx, &changed(&rows, resent), None).await?;
    super::subjects::append_audit(&tx, &audit(n)).await?;
    if n > 0 {
        shared.notify(&tx, &Change::Work).await?;
    }
    tx.commit().await?;
    Ok(Some(n))
}

/// Takes a delivery out of the DLQ ([`DeliveryRecord::discard`]), with its audit entry; false
/// (and nothing written) if it was not there.
pub(super) async fn discard(
    client: &mut deadpool_postgres::Client,
    key: &DeliveryKey,
    audit: &AuditEntry,
) -> Result<bool> {
    let tx = client.transaction().await?;
    let mut rows = lock(&tx, &BTreeSet::from([key])).await?;
    let Some(row) = rows.get_mut(key) else {
        return Ok(false);
    };
    let row = row.as_mut().map_err(|e| e.clone())?;
    if !row.discard() {
        return Ok(false);
    }
    write(&tx, &[(key, &*row)], None).await?;
    super::subjects::append_audit(&tx, audit).await?;
    tx.commit().await?;
    Ok(true)
}

/// Every live delivery of `destination` to the DLQ (the destination is being deleted, and
/// `tx` holds its row `FOR UPDATE`).
pub(super) async fn kill_destination(
    tx: &Transaction<'_>,
    destination: &str,
    now_ms: u64,
) -> Result<()> {
    let live = tx
        .prepare_cached(
            "SELECT message_id, record FROM deliveries
             WHERE destination = $1 AND due_ms IS NOT NULL
             ORDER BY message_id
             FOR UPDATE",
        )
        .await?;
    let mut killed = Vec::new();
    for row in tx.query(&live, &[&destination]).await? {
        let key = DeliveryKey {
            message: MessageId(id_from(row.get(0), TABLE)?),
            destination: destination.to_owned(),
        };
        let mut delivery: DeliveryRecord = decode(TABLE, row.get::<_, &[u8]>(1))?;
        if delivery.kill(now_ms, DESTINATION_DELETED) {
            killed.push((key, delivery));
        }
    }
    let killed: Vec<(&DeliveryKey, &DeliveryRecord)> = killed.iter().map(|(k, d)| (k, d)).collect();
    write(tx, &killed, None).await
}

/// The rows of `keys` that exist, locked `FOR UPDATE` in key order, each decoded (or the
/// reason it does not decode, for the caller to answer with).
async fn lock(
    tx: &Transaction<'_>,
    keys: &BTreeSet<&DeliveryKey>,
) -> Result<BTreeMap<DeliveryKey, Result<DeliveryRecord>>> {
    if keys.is_empty() {
        return Ok(BTreeMap::new());
    }
    // `DeliveryKey`'s order (id, then name by bytes) is the rows' `ORDER BY` under
    // `COLLATE "C"`: the locks are taken in the order the set iterates.
    let ids: Vec<Vec<u8>> = keys.iter().map(|k| id_bytes(k.message.0)).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.destination.as_str()).collect();
    let statement = tx
        .prepare_cached(
            "SELECT d.message_id, d.destination, d.record
             FROM deliveries d
             JOIN UNNEST($1::bytea[], $2::text[]) AS k (message_id, destination)
               ON d.message_id = k.message_id AND d.destination = k.destination
             ORDER BY d.message_id, d.destination
             FOR UPDATE OF d",
        )
        .await?;
    let mut rows = BTreeMap::new();
    for row in tx.query(&statement, &[&ids, &names]).await? {
        let key = DeliveryKey {
            message: MessageId(id_from(row.get(0), TABLE)?),
            destination: row.get(1),
        };
        rows.insert(key, decode(TABLE, row.get::<_, &[u8]>(2)));
    }
    Ok(rows)
}

/// The rows of `keys` among `rows`, to write back: a rule changed each, so each decoded.
fn changed<'a>(
    rows: &'a BTreeMap<DeliveryKey, Result<DeliveryRecord>>,
    keys: BTreeSet<&'a DeliveryKey>,
) -> Vec<(&'a DeliveryKey, &'a DeliveryRecord)> {
    keys.into_iter()
        .filter_map(|key| match rows.get(key) {
            Some(Ok(row)) => Some((key, row)),
            _ => None,
        })
        .collect()
}

/// Writes `rows` back with their query columns derived from the records
/// ([`DeliveryRecord::queues`]), in one statement. With `release`, the leases that node holds
/// on them end (its attempts' outcomes are in).
async fn write(
    tx: &Transaction<'_>,
    rows: &[(&DeliveryKey, &DeliveryRecord)],
    release: Option<&str>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut names = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut due = Vec::with_capacity(rows.len());
    let mut dead = Vec::with_capacity(rows.len());
    let mut records = Vec::with_capacity(rows.len());
    for (key, record) in rows {
        let queues = record.queues();
        ids.push(id_bytes(key.message.0));
        names.push(key.destination.as_str());
        statuses.push(record.status.as_str());
        due.push(queues.due_ms.map(ms));
        dead.push(queues.dead_ms.map(ms));
        records.push(encode(*record));
    }
    // `leased_by = NULL` is never true: without `release`, every lease stays.
    let statement = tx
        .prepare_cached(
            "UPDATE deliveries d
             SET status = u.status, due_ms = u.due_ms, dead_ms = u.dead_ms, record = u.record,
                 lease_until_ms = CASE WHEN d.leased_by = $7 THEN 0 ELSE d.lease_until_ms END,
                 leased_by = CASE WHEN d.leased_by = $7 THEN NULL ELSE d.leased_by END
             FROM UNNEST($1::bytea[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                         $6::bytea[])
                  AS u (message_id, destination, status, due_ms, dead_ms, record)
             WHERE d.message_id = u.message_id AND d.destination = u.destination",
        )
        .await?;
    tx.execute(
        &statement,
        &[&ids, &names, &statuses, &due, &dead, &records, &release],
    )
    .await?;
    Ok(())
}

/// A row count as a `LIMIT`.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
