//! Storage maintenance: what the file holds, whether the secondary indexes agree with their
//! tables (and their repair), and what compaction can and cannot do while herald runs.
//!
//! # Secondary indexes
//!
//! Five tables hold nothing of their own: each is a function of one primary table
//! (see [`crate::tables`]).
//!
//! | index | primary | one entry for every primary row that … |
//! | --- | --- | --- |
//! | `deliveries_due` | `deliveries` | is `pending`/`retrying` with a `next_attempt_at_ms`: `(destination, next_attempt_at_ms, message)` |
//! | `dead_letters` | `deliveries` | is `dead` with a `dead_at_ms` (a discarded DLQ entry has none): `(dead_at_ms, message, destination)` |
//! | `messages_by_recipient` | `messages` | has a recipient: `(recipient, message)` |
//! | `suppressions_by_expiry` | `suppressions` | expires: `(expires_at_ms, recipient, channel)` |
//! | `audit_by_subject` | `audit` | (every entry): `(subject, entry id)` |
//!
//! Every write moves index entries in the same transaction as the row, so a mismatch means a bug
//! or a damaged file. Each index is described once, by the function deriving its entry from a
//! primary row (`SecondaryIndex::expected`); verification and repair are both built on it.
//!
//! # Cost
//!
//! Both are full scans, meant for an operator's request or an infrequent periodic task, never
//! for a request path.
//! - **Verification** ([`Store::verify_indexes`](crate::Store::verify_indexes)) reads, on one
//!   read snapshot, every row of the four primary tables (decoding the JSON of every delivery,
//!   message header, suppression and audit entry) and every index entry, with one point lookup
//!   per row in the other table: O(n log n) page reads, O(1) memory. It runs on the blocking
//!   pool and never delays a writer, but its snapshot keeps the pages it sees from being reused
//!   until it ends, so the file may grow a little under heavy writes meanwhile.
//! - **Repair** (`repair: true` of [`Store::maintenance`](crate::Store::maintenance)) runs only
//!   for an index found wrong, as ONE write job for all of them: inside the write transaction
//!   it recomputes the index from its primary and replaces what differs
//!   (removes extras, inserts missing entries). Computing from the primary *in* the transaction
//!   makes it exact whatever was written between the verification snapshot and the repair. The
//!   price: no other write commits while it scans (ingestion waits, then resumes), and it holds
//!   the expected keys of the index being repaired in memory (tens of bytes per entry).
//!
//! # Compaction and the integrity check
//!
//! redb's `Database::compact` and `Database::check_integrity` take `&mut Database` and refuse to
//! run while any transaction is alive. A running herald shares its `Database` (in an `Arc`)
//! between every [`Store`](crate::Store) clone and the writer thread, and the caller of
//! [`Store::maintenance`](crate::Store::maintenance) holds one such clone itself, so exclusive
//! access cannot be had while herald runs: not even from the writer thread between batches, where
//! `Arc::get_mut` always fails. Online maintenance therefore reports `compacted: false` and
//! `integrity: None` with the reason, and does not pretend otherwise. [`compact_offline`] and
//! [`check_integrity_offline`] do both on a file no process has open (herald stopped).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{
    Database, Key, ReadTransaction, ReadableTable, ReadableTableMetadata as _, Table,
    TableDefinition, TableHandle as _, Value,
};
use serde::Serialize;

use crate::error::{Result, StorageError};
use crate::messages::decode_message;
use crate::records::{AuditEntry, DeliveryRecord, SuppressionRecord, decode};
use crate::tables::{self, SCHEMA_VERSION_KEY};
use crate::tx::Tx;

/// What the file holds (`GET /v1/storage`). On PostgreSQL the same fields describe the shared
/// database (the `postgres::maintenance` module says exactly how).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    /// The schema version stored in the file (on PostgreSQL, in `herald_meta`: the PostgreSQL
    /// schema's own numbering).
    pub schema_version: u64,
    /// The database file's size on disk (0 for a store on a test backend, which has no file). It
    /// does not shrink when data is deleted: freed pages are reused, and only an offline
    /// [`compact_offline`] returns them to the file system. On PostgreSQL, the whole database's
    /// size (`pg_database_size`), which shrinks only after a `VACUUM FULL`.
    pub file_bytes: u64,
    /// Every table in the file, by name. On PostgreSQL, herald's tables and their secondary
    /// indexes (those standing for redb's secondary tables under the same names), with entry
    /// counts exact up to 10 000 and PostgreSQL's estimates beyond.
    pub tables: Vec<TableInfo>,
}

impl StorageStats {
    /// The entry count of `table`, if the file has it.
    pub fn entries(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|t| t.name == table)
            .map(|t| t.entries)
    }
}

/// One table of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub entries: u64,
    /// For a secondary index, the table it is derived from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_of: Option<&'static str>,
}

/// How a secondary index compares with its primary table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexHealth {
    pub index: &'static str,
    pub primary: &'static str,
    /// Entries the primary table implies.
    pub expected: u64,
    /// Entries the index holds.
    pub actual: u64,
    /// Implied by the primary but absent from the index: the row is invisible to the index's
    /// readers (a delivery never dispatched, a message left out of a GDPR export).
    pub missing: u64,
    /// In the index but not implied by the primary (a stale or bogus entry).
    pub extra: u64,
    /// The index was recomputed from its primary and corrected. `missing` and `extra` still
    /// say what verification found before the repair.
    pub rebuilt: bool,
}

impl IndexHealth {
    /// The index matched its primary table when verified.
    pub fn is_healthy(&self) -> bool {
        self.missing == 0 && self.extra == 0
    }
}

/// The outcome of [`Store::maintenance`](crate::Store::maintenance)
/// (`POST /v1/storage/maintenance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaintenanceReport {
    pub indexes: Vec<IndexHealth>,
    /// redb's page-level integrity check: `None` when it could not run (always, online; see
    /// `integrity_note`).
    pub integrity: Option<bool>,
    pub integrity_note: Option<String>,
    /// Always `false` while herald runs: see `compaction_note` and [`compact_offline`].
    pub compacted: bool,
    pub compaction_note: Option<String>,
    pub took_ms: u64,
}

const ONLINE_INTEGRITY_NOTE: &str = "skipped: redb's integrity check needs exclusive access to \
    the database, which the running herald holds; stop herald and check the file offline";
const ONLINE_COMPACTION_NOTE: &str = "skipped: compaction needs exclusive access to the \
    database, which the running herald holds (every store handle and the writer share it); \
    stop herald and compact the file offline";

// ---- stats -----------------------------------------------------------------------------

/// Every table with its entry count (read from the B-tree headers: no scan), the file size (0
/// for a store on a custom backend, which has no file) and the stored schema version.
pub(crate) fn stats(txn: &ReadTransaction, path: Option<&Path>) -> Result<StorageStats> {
    let schema_version = txn
        .open_table(tables::META)?
        .get(SCHEMA_VERSION_KEY)?
        .map(|v| v.value())
        .ok_or_else(|| StorageError::corrupt("meta", "no schema version"))?;
    let mut tables = Vec::new();
    for handle in txn.list_tables()? {
        let table = txn.open_untyped_table(handle)?;
        let name = table.name().to_owned();
        let index_of = INDEXES
            .iter()
            .find(|spec| spec.index == name)
            .map(|spec| spec.primary);
        tables.push(TableInfo {
            entries: table.len()?,
            name,
            index_of,
        });
    }
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let file_bytes = match path {
        Some(path) => std::fs::metadata(path)
            .map_err(|e| StorageError::Redb(Arc::new(e.into())))?
            .len(),
        None => 0,
    };
    Ok(StorageStats {
        schema_version,
        file_bytes,
        tables,
    })
}

// ---- secondary indexes -----------------------------------------------------------------

/// A secondary index: a `key -> ()` table whose every entry follows from one row of a primary
/// table, and whose key leads back to that row.
pub(crate) trait SecondaryIndex {
    type PrimaryKey: Key + 'static;
    type PrimaryValue: Value + 'static;
    type IndexKey: Key + 'static;
    /// An index key that owns its strings.
    type Owned: Ord;

    const PRIMARY: TableDefinition<'static, Self::PrimaryKey, Self::PrimaryValue>;
    const INDEX: TableDefinition<'static, Self::IndexKey, ()>;
    const PRIMARY_NAME: &'static str;
    const INDEX_NAME: &'static str;

    /// The index entry a primary row implies, if any: the index's definition.
    fn expected(
        key: <Self::PrimaryKey as Value>::SelfType<'_>,
        value: <Self::PrimaryValue as Value>::SelfType<'_>,
    ) -> Result<Option<Self::Owned>>;

    fn own_key(key: <Self::IndexKey as Value>::SelfType<'_>) -> Self::Owned;

    fn borrowed(key: &Self::Owned) -> <Self::IndexKey as Value>::SelfType<'_>;

    /// The primary row an index entry stands for.
    fn primary_key(key: &Self::Owned) -> <Self::PrimaryKey as Value>::SelfType<'_>;

    fn primary_table<'a, 't>(
        tx: &'a mut Tx<'t>,
    ) -> Result<&'a mut Table<'t, Self::PrimaryKey, Self::PrimaryValue>>;

    fn index_table<'a, 't>(tx: &'a mut Tx<'t>) -> Result<&'a mut Table<'t, Self::IndexKey, ()>>;
}

pub(crate) struct DeliveriesDue;

impl SecondaryIndex for DeliveriesDue {
    type PrimaryKey = (u128, &'static str);
    type PrimaryValue = &'static [u8];
    type IndexKey = (&'static str, u64, u128);
    type Owned = (String, u64, u128);

    const PRIMARY: TableDefinition<'static, Self::PrimaryKey, Self::PrimaryValue> =
        tables::DELIVERIES;
    const INDEX: TableDefinition<'static, Self::IndexKey, ()> = tables::DELIVERIES_DUE;
    const PRIMARY_NAME: &'static str = "deliveries";
    const INDEX_NAME: &'static str = "deliveries_due";

    fn expected((id, destination): (u128, &str), raw: &[u8]) -> Result<Option<Self::Owned>> {
        let delivery: DeliveryRecord = decode("deliveries", raw)?;
        Ok(delivery
            .queues()
            .due_ms
            .map(|due| (destination.to_owned(), due, id)))
    }

    fn own_key((destination, due, id): (&str, u64, u128)) -> Self::Owned {
        (destination.to_owned(), due, id)
    }

    fn borrowed(key: &Self::Owned) -> (&str, u64, u128) {
        (key.0.as_str(), key.1, key.2)
    }

    fn primary_key(key: &Self::Owned) -> (u128, &str) {
        (key.2, key.0.as_str())
    }

    fn primary_table<'a, 't>(
        tx: &'a mut Tx<'t>,
    ) -> Result<&'a mut Table<'t, Self::PrimaryKey, Self::PrimaryValue>> {
        tx.deliveries()
    }

    fn index_table<'a, 't>(tx: &'a mut Tx<'t>) -> Result<&'a mut Table<'t, Self::IndexKey, ()>> {
        tx.deliveries_due()
    }
}

pub(crate) struct DeadLetters;

impl SecondaryIndex for DeadLetters {
    type PrimaryKey = (u128, &'static str);
    type PrimaryValue = &'static [u8];
    type IndexKey = (u64, u128, &'static str);
    type Owned = (u64, u128, String);

    const PRIMARY: TableDefinition<'static, Self::PrimaryKey, Self::PrimaryValue> =
        tables::DELIVERIES;
    const INDEX: TableDefinition<'static, Self::IndexKey, ()> = tables::DEAD_LETTERS;
    const PRIMARY_NAME: &'static str = "deliveries";
    const INDEX_NAME: &'static str = "dead_letters";

    /// A discarded DLQ entry is a `dead` delivery whose `dead_at_ms` was cleared: no entry.
    fn expected((id, destination): (u128, &str), raw: &[u8]) -> Result<Option<Self::Owned>> {
        let delivery: DeliveryRecord = decode("deliveries", raw)?;
        Ok(delivery
            .queues()
            .dead_ms
            .map(|died| (died, id, destination.to_owned())))
    }

    fn own_key((died, id, destination): (u64, u128, &str)) -> Self::Owned {
        (died, id, destination.to_owned())
    }

    fn borrowed(key: &Self::Owned) -> (u64, u128, &str) {
        (key.0, key.1, key.2.as_str())
    }

    fn primary_key(key: &Self::Owned) -> (u128, &str) {
        (key.1, key.2.as_str())
    }

    fn primary_table<'a, 't>(
        tx: &'a mut Tx<'t>,
    ) -> Result<&'a mut Table<'t, Self::PrimaryKey, Self::PrimaryValue>> {
        tx.deliveries()
    }

    fn index_table<'a, 't>(tx: &'a mut Tx<'t>) -> Result<&'a mut Table<'t, Self::IndexKey, ()>> {
        tx.dead_letters()
    }
}

pub(crate) struct MessagesByRecipient;

impl SecondaryIndex for MessagesByRecipient {
    type PrimaryKey = u128;
    type PrimaryValue = &'static [u8];
    type IndexKey = (&'static str, u128);
    type Owned = (String, u128);

    const PRIMARY: TableDefinition<'static, Self::PrimaryKey, Self::PrimaryValue> =
        tables::MESSAGES;
    const INDEX: TableDefinition<'static, Self::IndexKey, ()> = tables::MESSAGES_BY_RECIPIENT;
    const PRIMARY_NAME: &'static str = "messages";
    const INDEX_NAME: &'static str = "messages_by_recipient";

    fn expected(id: u128, raw: &[u8]) -> Result<Option<Self::Owned>> {
        let (record, _body) = decode_message(raw)?;
        Ok(record
            .recipient
            .map(|recipient| (String::from(recipient), id)))
    }

    fn own_key((recipient, id): (&str, u128)) -> Self::Owned {
        (recipient.to_owned(), id)
    }

    fn borrowed(key: &Self::Owned) -> (&str, u128) {
        (key.0.as_str(), key.1)
    }

    fn primary_key(key: &Self::Owned) -> u128 {
        key.1
    }

    fn primary_table<'a, 't>(
        tx: &'a mut Tx<'t>,
    ) -> Result<&'a mut Table<'t, Self::PrimaryKey, Self::PrimaryValue>> {
        tx.messages()
    }

    fn index_table<'a, 't>(tx: &'a mut Tx<'t>) -> Result<&'a mut Table<'t, Self::IndexKey, ()>> {
        tx.messages_by_recipient()
    }
}

pub(crate) struct SuppressionsByExpiry;

impl SecondaryIndex for SuppressionsByExpiry {
    type PrimaryKey = (&'static str, &'static str);
    type PrimaryValue = &'static [u8];
    type IndexKey = (u64, &'static str, &'static str);
    type Owned = (u64, String, String);

    const PRIMARY: TableDefinition<'static, Self::PrimaryKey, Self::PrimaryValue> =
        tables::SUPPRESSIONS;
    const INDEX: TableDefinition<'static, Self::IndexKey, ()> = tables::SUPPRESSIONS_BY_EXPIRY;
    const PRIMARY_NAME: &'static str = "suppressions";
    const INDEX_NAME: &'static str = "suppressions_by_expiry";

    fn expected((recipient, channel): (&str, &str), raw: &[u8]) -> Result<Option<Self::Owned>> {
        let record: SuppressionRecord = decode("suppressions", raw)?;
        Ok(record
            .expires_at_ms
            .map(|at| (at, recipient.to_owned(), channel.to_owned())))
    }

    fn own_key((at, recipient, channel): (u64, &str, &str)) -> Self::Owned {
        (at, recipient.to_owned(), channel.to_owned())
    }

    fn borrowed(key: &Self::Owned) -> (u64, &str, &str) {
        (key.0, key.1.as_str(), key.2.as_str())
    }

    fn primary_key(key: &Self::Owned) -> (&str, &str) {
        (key.1.as_str(), key.2.as_str())
    }

    fn primary_table<'a, 't>(
        tx: &'a mut Tx<'t>,
    ) -> Result<&'a mut Table<'t, Self::PrimaryKey, Self::PrimaryValue>> {
        tx.suppressions()
    }

    fn index_table<'a, 't>(tx: &'a mut Tx<'t>) -> Result<&'a mut Table<'t, Self::IndexKey, ()>> {
        tx.suppressions_by_expiry()
    }
}

pub(crate) struct AuditBySubject;

impl SecondaryIndex for AuditBySubject {
    type PrimaryKey = u128;
    type PrimaryValue = &'static [u8];
    type IndexKey = (&'static str, u128);
    type Owned = (String, u128);

    const PRIMARY: TableDefinition<'static, Self::PrimaryKey, Self::PrimaryValue> = tables::AUDIT;
    const INDEX: TableDefinition<'static, Self::IndexKey, ()> = tables::AUDIT_BY_SUBJECT;
    const PRIMARY_NAME: &'static str = "audit";
    const INDEX_NAME: &'static str = "audit_by_subject";

    fn expected(id: u128, raw: &[u8]) -> Result<Option<Self::Owned>> {
        let entry: AuditEntry = decode("audit", raw)?;
        Ok(Some((entry.subject, id)))
    }

    fn own_key((subject, id): (&str, u128)) -> Self::Owned {
        (subject.to_owned(), id)
    }

    fn borrowed(key: &Self::Owned) -> (&str, u128) {
        (key.0.as_str(), key.1)
    }

    fn primary_key(key: &Self::Owned) -> u128 {
        key.1
    }

    fn primary_table<'a, 't>(
        tx: &'a mut Tx<'t>,
    ) -> Result<&'a mut Table<'t, Self::PrimaryKey, Self::PrimaryValue>> {
        tx.audit()
    }

    fn index_table<'a, 't>(tx: &'a mut Tx<'t>) -> Result<&'a mut Table<'t, Self::IndexKey, ()>> {
        tx.audit_by_subject()
    }
}

/// What a repair changed in one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repair {
    pub(crate) inserted: u64,
    pub(crate) removed: u64,
}

/// One index, type-erased.
struct Spec {
    index: &'static str,
    primary: &'static str,
    verify: fn(&ReadTransaction) -> Result<IndexHealth>,
    rebuild: fn(&mut Tx<'_>) -> Result<Repair>,
}

const fn spec<I: SecondaryIndex>() -> Spec {
    Spec {
        index: I::INDEX_NAME,
        primary: I::PRIMARY_NAME,
        verify: verify::<I>,
        rebuild: rebuild::<I>,
    }
}

/// Every secondary index, in the order reports list them.
const INDEXES: [Spec; 5] = [
    spec::<DeliveriesDue>(),
    spec::<DeadLetters>(),
    spec::<MessagesByRecipient>(),
    spec::<SuppressionsByExpiry>(),
    spec::<AuditBySubject>(),
];

/// Compares index `I` with what its primary table implies, on `txn`'s snapshot. Two passes,
/// each with a point lookup per row in the other table, so nothing is held in memory:
/// - every primary row's expected entry must be in the index (else `missing`);
/// - every index entry must be the expected entry of the row it points at (else `extra`).
pub(crate) fn verify<I: SecondaryIndex>(txn: &ReadTransaction) -> Result<IndexHealth> {
    let primary = txn.open_table(I::PRIMARY)?;
    let index = txn.open_table(I::INDEX)?;
    let (mut expected, mut missing, mut actual, mut extra) = (0, 0, 0, 0);
    for entry in primary.iter()? {
        let (key, value) = entry?;
        if let Some(want) = I::expected(key.value(), value.value())? {
            expected += 1;
            if index.get(I::borrowed(&want))?.is_none() {
                missing += 1;
            }
        }
    }
    for entry in index.iter()? {
        let (key, _) = entry?;
        actual += 1;
        let have = I::own_key(key.value());
        let implied = match primary.get(I::primary_key(&have))? {
            Some(value) => I::expected(I::primary_key(&have), value.value())?,
            None => None,
        };
        if implied.as_ref() != Some(&have) {
            extra += 1;
        }
    }
    Ok(IndexHealth {
        index: I::INDEX_NAME,
        primary: I::PRIMARY_NAME,
        expected,
        actual,
        missing,
        extra,
        rebuilt: false,
    })
}

/// Recomputes index `I` from its primary table inside the write transaction and corrects it:
/// removes the entries not implied, inserts the implied ones absent. Holds the expected keys in
/// memory (a job sees its transaction's tables one at a time).
pub(crate) fn rebuild<I: SecondaryIndex>(tx: &mut Tx<'_>) -> Result<Repair> {
    let mut missing = BTreeSet::new();
    for entry in I::primary_table(tx)?.iter()? {
        let (key, value) = entry?;
        if let Some(want) = I::expected(key.value(), value.value())? {
            missing.insert(want);
        }
    }
    let mut extra = Vec::new();
    for entry in I::index_table(tx)?.iter()? {
        let (key, _) = entry?;
        let have = I::own_key(key.value());
        if !missing.remove(&have) {
            extra.push(have);
        }
    }
    let index = I::index_table(tx)?;
    for key in &extra {
        index.remove(I::borrowed(key))?;
    }
    for key in &missing {
        index.insert(I::borrowed(key), ())?;
    }
    Ok(Repair {
        inserted: missing.len() as u64,
        removed: extra.len() as u64,
    })
}

/// Verifies every secondary index on one snapshot.
pub(crate) fn verify_all(txn: &ReadTransaction) -> Result<Vec<IndexHealth>> {
    INDEXES.iter().map(|spec| (spec.verify)(txn)).collect()
}

/// Repairs the named indexes in this one write job; returns what changed in each.
pub(crate) fn rebuild_all(
    tx: &mut Tx<'_>,
    indexes: &[&'static str],
) -> Result<Vec<(&'static str, Repair)>> {
    INDEXES
        .iter()
        .filter(|spec| indexes.contains(&spec.index))
        .map(|spec| (spec.rebuild)(tx).map(|repair| (spec.index, repair)))
        .collect()
}

/// The indexes verification found wrong.
pub(crate) fn unhealthy(indexes: &[IndexHealth]) -> Vec<&'static str> {
    indexes
        .iter()
        .filter(|h| !h.is_healthy())
        .map(|h| h.index)
        .collect()
}

/// Marks the repaired indexes (after the repair committed) and logs what changed.
pub(crate) fn mark_rebuilt(indexes: &mut [IndexHealth], repaired: &[(&'static str, Repair)]) {
    for (name, repair) in repaired {
        tracing::warn!(
            index = name,
            inserted = repair.inserted,
            removed = repair.removed,
            "secondary index rebuilt"
        );
        for health in indexes.iter_mut().filter(|h| h.index == *name) {
            health.rebuilt = true;
        }
    }
}

/// The report of an online maintenance run: indexes as verified (and repaired), and why the
/// integrity check and compaction did not run.
pub(crate) fn online_report(indexes: Vec<IndexHealth>, took: Duration) -> MaintenanceReport {
    MaintenanceReport {
        indexes,
        integrity: None,
        integrity_note: Some(ONLINE_INTEGRITY_NOTE.into()),
        compacted: false,
        compaction_note: Some(ONLINE_COMPACTION_NOTE.into()),
        took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    }
}

// ---- offline ---------------------------------------------------------------------------

/// Compacts the database file at `path`, which no process may have open (stop herald first):
/// moves live pages to the front of the file and truncates the free tail, so the file shrinks
/// after large deletions (erasures, sweeps). Returns whether anything was compacted.
///
/// Opens the file exclusively: fails with a database error ("already open") while herald, or
/// anything else, has it open, and never creates a file that does not exist. Interrupting it
/// is safe (redb commits compaction with two-phase commit) but may leave it partly done.
pub fn compact_offline(path: &Path) -> Result<bool> {
    let mut db = open_exclusive(path)?;
    let compacted = db.compact()?;
    db.close()?;
    Ok(compacted)
}

/// Runs redb's full integrity check (every page's checksum) on the file at `path`, which no
/// process may have open. `Ok(true)`: intact; `Ok(false)`: it was damaged and redb repaired it
/// (a repair can roll back to the last intact commit); an error: damaged beyond repair, or in use.
pub fn check_integrity_offline(path: &Path) -> Result<bool> {
    let mut db = open_exclusive(path)?;
    let intact = db.check_integrity()?;
    db.close()?;
    Ok(intact)
}

fn open_exclusive(path: &Path) -> Result<Database> {
    Ok(Database::builder()
        .set_cache_size(crate::Options::DEFAULT_CACHE_BYTES)
        .open(path)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use bytes::Bytes;
    use redb::TableHandle as _;
    use tokio::sync::oneshot;

    use super::*;
    use crate::{
        AttemptUpdate, DeliveryKey, MessageId, MessageRecord, NewMessage, NewSuppression, Options,
        Outcome, Store,
    };

    const RECEIVED: u64 = 1_000;

    fn message(recipient: Option<&str>, destinations: &[&str]) -> NewMessage {
        NewMessage {
            id: MessageId::generate(RECEIVED),
            record: MessageRecord {
                source: Some("src".into()),
                external_id: None,
                event_type: Some("e".into()),
                content_type: None,
                recipient: recipient.map(|r| crate::Recipient::parse(r).unwrap()),
                channel: None,
                category: None,
                received_at_ms: RECEIVED,
                body_len: 2,
            },
            body: Bytes::from_static(b"{}"),
            dedupe_key: None,
            destinations: destinations.iter().map(ToString::to_string).collect(),
            suppress: None,
        }
    }

    async fn add(store: &Store, msg: NewMessage) -> MessageId {
        let id = msg.id;
        store.insert_message_async(msg).await.unwrap();
        id
    }

    async fn attempt(store: &Store, message: MessageId, destination: &str, outcome: Outcome) {
        let (tx, rx) = oneshot::channel();
        store.record_attempt(
            AttemptUpdate {
                key: key(message, destination),
                attempt: None,
                outcome,
                destination: None,
                now_ms: 2_000,
            },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        assert!(rx.await.unwrap().unwrap(), "the delivery was live");
    }

    fn key(message: MessageId, destination: &str) -> DeliveryKey {
        DeliveryKey {
            message,
            destination: destination.into(),
        }
    }

    fn audit(subject: &str) -> AuditEntry {
        AuditEntry {
            at_ms: 3_000,
            actor: "test".into(),
            action: "suppression.create".into(),
            subject: subject.into(),
            before: None,
            after: None,
        }
    }

    fn suppression(recipient: &str, channel: &str, expires: Option<u64>) -> NewSuppression {
        NewSuppression {
            recipient: crate::Recipient::parse(recipient).unwrap(),
            channel: channel.into(),
            record: SuppressionRecord {
                reason: "user_request".into(),
                expires_at_ms: expires,
                note: None,
                created_by: "test".into(),
                created_at_ms: 3_000,
            },
        }
    }

    /// The messages of the fixture.
    struct Fixture {
        m1: MessageId,
        m2: MessageId,
        m3: MessageId,
    }

    /// Deliveries in every state: pending (m1→d1, m5→d2), retrying (m1→d2), succeeded (m2→d1),
    /// dead (m3→d1), dead and discarded (m3→d2), suppressed (m6→d1).
    async fn fixture(store: &Store) -> Fixture {
        let m1 = add(store, message(Some("alice@x"), &["d1", "d2"])).await;
        let m2 = add(store, message(Some("bob@x"), &["d1"])).await;
        let m3 = add(store, message(None, &["d1", "d2"])).await;
        add(store, message(Some("alice@x"), &[])).await;
        add(store, message(None, &["d2"])).await;
        let m6 = add(store, message(Some("carol@x"), &["d1"])).await;
        attempt(store, m1, "d2", Outcome::Retry { at_ms: 5_000 }).await;
        attempt(store, m2, "d1", Outcome::Succeeded).await;
        attempt(store, m3, "d1", Outcome::Dead).await;
        attempt(store, m3, "d2", Outcome::Dead).await;
        assert!(store.discard(key(m3, "d2"), audit("d1")).await.unwrap());
        let reason = "opted out".to_owned();
        attempt(store, m6, "d1", Outcome::Suppressed { reason }).await;
        store
            .add_suppressions(
                vec![
                    suppression("alice@x", "email", Some(9_000)),
                    suppression("bob@x", "sms", None),
                    suppression("carol@x", "*", Some(10_000)),
                ],
                vec![audit("alice@x"), audit("bob@x"), audit("carol@x")],
            )
            .await
            .unwrap();
        Fixture { m1, m2, m3 }
    }

    /// Expected entry counts of the fixture's indexes, in [`INDEXES`] order.
    const EXPECTED: [(&str, u64); 5] = [
        ("deliveries_due", 3),
        ("dead_letters", 1),
        ("messages_by_recipient", 4),
        ("suppressions_by_expiry", 2),
        ("audit_by_subject", 4),
    ];

    /// The redb backend of a store these tests opened (always redb).
    fn redb(store: &Store) -> &crate::embedded::Embedded {
        store.as_redb().unwrap()
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb"), Options::default()).unwrap();
        (dir, store)
    }

    /// Every row of the primary tables, raw.
    async fn primaries(store: &Store) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        fn dump<K: Key + 'static>(
            txn: &ReadTransaction,
            def: TableDefinition<'static, K, &'static [u8]>,
        ) -> Vec<(Vec<u8>, Vec<u8>)> {
            txn.open_table(def)
                .unwrap()
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (
                        K::as_bytes(&k.value()).as_ref().to_vec(),
                        v.value().to_vec(),
                    )
                })
                .collect()
        }
        redb(store)
            .read(|txn| {
                Ok(vec![
                    dump(txn, tables::MESSAGES),
                    dump(txn, tables::DELIVERIES),
                    dump(txn, tables::SUPPRESSIONS),
                    dump(txn, tables::AUDIT),
                ])
            })
            .await
            .unwrap()
    }

    async fn audit_id(store: &Store, subject: &'static str) -> u128 {
        redb(store)
            .read(move |txn| {
                let index = txn.open_table(tables::AUDIT_BY_SUBJECT)?;
                let first = index.range((subject, 0)..=(subject, u128::MAX))?.next();
                Ok(first.unwrap()?.0.value().1)
            })
            .await
            .unwrap()
    }

    #[test]
    fn the_specs_name_the_tables_they_open() {
        fn check<I: SecondaryIndex>() {
            assert_eq!(I::INDEX.name(), I::INDEX_NAME);
            assert_eq!(I::PRIMARY.name(), I::PRIMARY_NAME);
        }
        check::<DeliveriesDue>();
        check::<DeadLetters>();
        check::<MessagesByRecipient>();
        check::<SuppressionsByExpiry>();
        check::<AuditBySubject>();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consistent_store_verifies_healthy_with_the_expected_counts() {
        let (_dir, store) = open();
        fixture(&store).await;
        let health = store.verify_indexes().await.unwrap();
        let got: Vec<_> = health.iter().map(|h| (h.index, h.expected)).collect();
        assert_eq!(got, EXPECTED);
        for h in &health {
            assert!(h.is_healthy(), "{h:?}");
            assert_eq!(h.actual, h.expected, "{h:?}");
            assert!(!h.rebuilt);
        }
        let report = store.maintenance(true).await.unwrap();
        assert_eq!(report.indexes, health, "nothing to repair");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupted_indexes_are_detected_exactly_and_rebuilt() {
        let (_dir, store) = open();
        let Fixture { m1, m2, m3 } = fixture(&store).await;
        let before = primaries(&store).await;
        let alice_audit = audit_id(&store, "alice@x").await;
        let bogus_audit = MessageId::generate(3_000).0;

        // One entry lost and one bogus (or stale) entry added in every index.
        redb(&store)
            .write(move |tx| {
                let due = tx.deliveries_due()?;
                due.remove(("d1", RECEIVED, m1.0))?;
                // m1→d1 is live, but due at RECEIVED, not 999: stale.
                due.insert(("d1", 999, m1.0), ())?;
                let dead = tx.dead_letters()?;
                dead.remove((2_000, m3.0, "d1"))?;
                // m3→d2 is dead but discarded.
                dead.insert((2_000, m3.0, "d2"), ())?;
                let by_recipient = tx.messages_by_recipient()?;
                by_recipient.remove(("alice@x", m1.0))?;
                by_recipient.insert(("mallory@x", m2.0), ())?;
                let by_expiry = tx.suppressions_by_expiry()?;
                by_expiry.remove((9_000, "alice@x", "email"))?;
                // bob's suppression never expires.
                by_expiry.insert((1, "bob@x", "sms"), ())?;
                let by_subject = tx.audit_by_subject()?;
                by_subject.remove(("alice@x", alice_audit))?;
                by_subject.insert(("nobody", bogus_audit), ())?;
                Ok(())
            })
            .await
            .unwrap();

        // Visible damage: m1→d1 is due at the wrong time, the DLQ shows the discarded m3→d2
        // instead of m3→d1, alice's export misses m1.
        let due = store
            .due_deliveries(
                "d1".into(),
                RECEIVED,
                10,
                std::collections::HashSet::new(),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        let due: Vec<_> = due.iter().map(|d| (d.key.message, d.due_at_ms)).collect();
        assert_eq!(due, [(m1, 999)]);
        let dead = store.dead_keys(crate::DeadFilter::default()).await.unwrap();
        assert_eq!(dead, [key(m3, "d2")]);
        let export = store
            .export_subject(crate::Recipient::parse("alice@x").unwrap())
            .await
            .unwrap();
        assert_eq!(export.messages.len(), 1);

        let health = store.verify_indexes().await.unwrap();
        for (h, (name, expected)) in health.iter().zip(EXPECTED) {
            assert_eq!((h.index, h.expected), (name, expected));
            assert_eq!((h.missing, h.extra, h.actual), (1, 1, expected), "{h:?}");
        }

        // Detection alone repairs nothing.
        let report = store.maintenance(false).await.unwrap();
        assert!(report.indexes.iter().all(|h| !h.rebuilt && !h.is_healthy()));
        assert_eq!(store.verify_indexes().await.unwrap(), health);

        let report = store.maintenance(true).await.unwrap();
        assert!(report.indexes.iter().all(|h| h.rebuilt), "{report:?}");
        assert_eq!(report.integrity, None);
        assert!(!report.compacted && report.compaction_note.is_some());

        let healed = store.verify_indexes().await.unwrap();
        for (h, (name, expected)) in healed.iter().zip(EXPECTED) {
            assert!(h.is_healthy(), "{h:?}");
            assert_eq!((h.index, h.expected, h.actual), (name, expected, expected));
        }
        assert_eq!(primaries(&store).await, before, "primary tables untouched");

        // And the readers see the data again.
        let due = store
            .due_deliveries(
                "d1".into(),
                RECEIVED,
                10,
                std::collections::HashSet::new(),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        let due: Vec<_> = due.iter().map(|d| (d.key.message, d.due_at_ms)).collect();
        assert_eq!(due, [(m1, RECEIVED)]);
        let dead = store.dead_keys(crate::DeadFilter::default()).await.unwrap();
        assert_eq!(dead, [key(m3, "d1")]);
        let export = store
            .export_subject(crate::Recipient::parse("alice@x").unwrap())
            .await
            .unwrap();
        assert_eq!(export.messages.len(), 2);
        assert_eq!(export.audit.len(), 1);
        assert_eq!(export.audit[0].id, alice_audit);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repair_racing_writes_leaves_every_index_exact() {
        let (_dir, store) = open();
        fixture(&store).await;
        redb(&store)
            .write(|tx| {
                tx.deliveries_due()?.insert(("d9", 1, 7), ())?;
                Ok(())
            })
            .await
            .unwrap();
        let writers: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let who = format!("r{i}@x");
                    add(&store, message(Some(&who), &["d1", "d2"])).await;
                })
            })
            .collect();
        let report = store.maintenance(true).await.unwrap();
        for w in writers {
            w.await.unwrap();
        }
        let due = report.indexes.iter().find(|h| h.index == "deliveries_due");
        assert!(due.is_some_and(|h| h.rebuilt && h.extra == 1), "{report:?}");
        for h in store.verify_indexes().await.unwrap() {
            assert!(h.is_healthy(), "{h:?}");
        }
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.entries("deliveries_due"), Some(3 + 100));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rebuilding_in_the_write_transaction_sees_that_transactions_writes() {
        let (_dir, store) = open();
        let Fixture { m1, .. } = fixture(&store).await;
        // One job corrupts and repairs in the same transaction: the repair must see the
        // corruption (it reads the transaction, not a snapshot) and undo it.
        let repaired = redb(&store)
            .write(move |tx| {
                tx.deliveries_due()?.remove(("d1", RECEIVED, m1.0))?;
                rebuild_all(tx, &["deliveries_due", "dead_letters"])
            })
            .await
            .unwrap();
        let inserted = Repair {
            inserted: 1,
            removed: 0,
        };
        let clean = Repair {
            inserted: 0,
            removed: 0,
        };
        assert_eq!(
            repaired,
            [("deliveries_due", inserted), ("dead_letters", clean)]
        );
        assert!(
            store
                .verify_indexes()
                .await
                .unwrap()
                .iter()
                .all(IndexHealth::is_healthy)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_undecodable_primary_row_fails_verification_loudly() {
        let (_dir, store) = open();
        let Fixture { m2, .. } = fixture(&store).await;
        redb(&store)
            .write(move |tx| {
                tx.deliveries()?.insert((m2.0, "d1"), &b"{"[..])?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.verify_indexes().await.unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Corrupt {
                    table: "deliveries",
                    ..
                }
            ),
            "{err}"
        );
    }
}
