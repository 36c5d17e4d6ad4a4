//! Destinations on PostgreSQL: one row per destination, its JSON [`DestinationRecord`]
//! (URL, secrets, circuit, disabling: shared by every node).
//!
//! Every node keeps a copy of each destination (its dispatcher's circuit, its router), so
//! every change — through the API ([`put`], [`create`], [`update`], [`delete`]) or by an
//! attempt ([`AttemptBatch`]) — notifies [`Change::Destination`] in its transaction: a circuit
//! opened on one node holds on the others once they reload it.
//!
//! Locks (see [`super::deliveries`] for the whole order): a change takes the destination's row
//! `FOR UPDATE` before the deliveries it touches; a DLQ retry or resend takes it `FOR SHARE`
//! ([`lock_shared`]), so it never re-queues work for a destination being deleted.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::{GenericClient, Transaction};

use super::Shared;
use crate::error::Result;
use crate::records::{decode, encode};
use crate::{AuditEntry, Change, DestinationRecord};

const TABLE: &str = "destinations";

pub(super) async fn get(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<DestinationRecord>> {
    let statement = client
        .prepare_cached("SELECT record FROM destinations WHERE name = $1")
        .await?;
    client
        .query_opt(&statement, &[&name])
        .await?
        .map(|row| decode(TABLE, row.get::<_, &[u8]>(0)))
        .transpose()
}

/// Every destination, by name (bytes order, as redb lists them).
pub(super) async fn list(client: &impl GenericClient) -> Result<Vec<(String, DestinationRecord)>> {
    let statement = client
        .prepare_cached("SELECT name, record FROM destinations ORDER BY name")
        .await?;
    client
        .query(&statement, &[])
        .await?
        .into_iter()
        .map(|row| Ok((row.get(0), decode(TABLE, row.get::<_, &[u8]>(1))?)))
        .collect()
}

/// Creates or replaces a destination.
pub(super) async fn put(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    record: &DestinationRecord,
) -> Result<()> {
    let tx = client.transaction().await?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO destinations (name, record) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
        )
        .await?;
    tx.execute(&statement, &[&name, &encode(record)]).await?;
    changed(shared, &tx, name).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates a destination unless one of that name exists (false, nothing written), with its
/// audit entry. Two nodes creating the same name at once: the second waits for the first's
/// row, then finds it taken.
pub(super) async fn create(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    record: &DestinationRecord,
    audit: &AuditEntry,
) -> Result<bool> {
    let tx = client.transaction().await?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO destinations (name, record) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    if tx.execute(&statement, &[&name, &encode(record)]).await? == 0 {
        return Ok(false);
    }
    super::subjects::append_audit(&tx, audit).await?;
    changed(shared, &tx, name).await?;
    tx.commit().await?;
    Ok(true)
}

/// Applies `change` to the stored destination under its row lock, so concurrent API calls and
/// attempts (on any node) never lose each other's updates; `None` if there is none.
pub(super) async fn update<F, A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    change: F,
    audit: Option<A>,
) -> Result<Option<DestinationRecord>>
where
    F: Fn(&mut DestinationRecord) + Send + 'static,
    A: Fn(&DestinationRecord, &DestinationRecord) -> AuditEntry + Send + 'static,
{
    let tx = client.transaction().await?;
    let Some(before) = get_for_update(&tx, name).await? else {
        return Ok(None);
    };
    let mut record = before.clone();
    change(&mut record);
    store(&tx, name, &record).await?;
    if let Some(audit) = &audit {
        super::subjects::append_audit(&tx, &audit(&before, &record)).await?;
    }
    changed(shared, &tx, name).await?;
    tx.commit().await?;
    Ok(Some(record))
}

/// Deletes a destination and sends its live deliveries to the DLQ, with `audit(deleted)`'s
/// entry, in one transaction; returns the deleted record, `None` if there was none.
pub(super) async fn delete<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    now_ms: u64,
    audit: A,
) -> Result<Option<DestinationRecord>>
where
    A: Fn(&DestinationRecord) -> AuditEntry + Send + 'static,
{
    let tx = client.transaction().await?;
    let Some(record) = get_for_update(&tx, name).await? else {
        return Ok(None);
    };
    let statement = tx
        .prepare_cached("DELETE FROM destinations WHERE name = $1")
        .await?;
    tx.execute(&statement, &[&name]).await?;
    super::deliveries::kill_destination(&tx, name, now_ms).await?;
    super::subjects::append_audit(&tx, &audit(&record)).await?;
    changed(shared, &tx, name).await?;
    tx.commit().await?;
    Ok(Some(record))
}

/// Which of `names` exist, each locked `FOR SHARE` (in name order) until `tx` ends: none can
/// be deleted meanwhile.
pub(super) async fn lock_shared(
    tx: &Transaction<'_>,
    names: &BTreeSet<&str>,
) -> Result<BTreeSet<String>> {
    if names.is_empty() {
        return Ok(BTreeSet::new());
    }
    let names: Vec<&str> = names.iter().copied().collect();
    let statement = tx
        .prepare_cached(
            "SELECT name FROM destinations WHERE name = ANY($1) ORDER BY name FOR SHARE",
        )
        .await?;
    Ok(tx
        .query(&statement, &[&names])
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// The destinations a batch of attempt outcomes changes (see [`crate::Store::record_attempt`]):
/// locked first, then changed in memory in the batch's order, then written once each. Each
/// attempt's copy of the record gives only its circuit and disabling
/// ([`DestinationRecord::take_attempt_state`]), and only to a destination that still exists.
#[derive(Debug)]
pub(super) struct AttemptBatch {
    /// The stored records (absent: deleted), or why one does not decode.
    stored: BTreeMap<String, Result<DestinationRecord>>,
    changed: BTreeSet<String>,
}

impl AttemptBatch {
    /// Locks the rows of `names` `FOR UPDATE`, in name order.
    pub(super) async fn lock(tx: &Transaction<'_>, names: &BTreeSet<&str>) -> Result<Self> {
        let mut stored = BTreeMap::new();
        if !names.is_empty() {
            let names: Vec<&str> = names.iter().copied().collect();
            let statement = tx
                .prepare_cached(
                    "SELECT name, record FROM destinations WHERE name = ANY($1)
                     ORDER BY name FOR UPDATE",
                )
                .await?;
            for row in tx.query(&statement, &[&names]).await? {
                stored.insert(row.get(0), decode(TABLE, row.get::<_, &[u8]>(1)));
            }
        }
        Ok(Self {
            stored,
            changed: BTreeSet::new(),
        })
    }

    /// An error if `name`'s stored record does not decode: then the attempt that carries it
    /// must write nothing.
    pub(super) fn check(&self, name: &str) -> Result<()> {
        match self.stored.get(name) {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Takes an attempt's state from the dispatcher's copy `attempt`, if `name` still exists.
    pub(super) fn apply(&mut self, name: &str, attempt: &DestinationRecord) {
        if let Some(Ok(stored)) = self.stored.get_mut(name) {
            let before = stored.clone();
            stored.take_attempt_state(attempt);
            // Unchanged, it is neither written nor reloaded by the other nodes.
            if *stored != before {
                self.changed.insert(name.to_owned());
            }
        }
    }

    /// Writes the changed destinations in `tx`, and tells the other nodes.
    pub(super) async fn write(self, shared: &Shared, tx: &Transaction<'_>) -> Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut names = Vec::with_capacity(self.changed.len());
        let mut records = Vec::with_capacity(self.changed.len());
        for name in &self.changed {
            if let Some(Ok(record)) = self.stored.get(name) {
                names.push(name.as_str());
                records.push(encode(record));
            }
        }
        let statement = tx
            .prepare_cached(
                "UPDATE destinations d SET record = u.record
                 FROM UNNEST($1::text[], $2::bytea[]) AS u (name, record)
                 WHERE d.name = u.name",
            )
            .await?;
        tx.execute(&statement, &[&names, &records]).await?;
        for name in names {
            changed(shared, tx, name).await?;
        }
        Ok(())
    }
}

/// Reads a destination inside a write, locking its row until `tx` ends.
async fn get_for_update(tx: &Transaction<'_>, name: &str) -> Result<Option<DestinationRecord>> {
    let statement = tx
        .prepare_cached("SELECT record FROM destinations WHERE name = $1 FOR UPDATE")
        .await?;
    tx.query_opt(&statement, &[&name])
        .await?
        .map(|row| decode(TABLE, row.get::<_, &[u8]>(0)))
        .transpose()
}

async fn store(tx: &Transaction<'_>, name: &str, record: &DestinationRecord) -> Result<()> {
    let statement = tx
        .prepare_cached("UPDATE destinations SET record = $2 WHERE name = $1")
        .await?;
    tx.execute(&statement, &[&name, &encode(record)]).await?;
    Ok(())
}

/// Tells the other nodes, when `tx` commits, to reload `name`.
async fn changed(shared: &Shared, tx: &Transaction<'_>, name: &str) -> Result<()> {
    shared
        .notify(tx, &Change::Destination(name.to_owned()))
        .await
}
