//! herald's store: typed operations over one of two backends, and the only code that names a
//! database.
//!
//! # Design
//! - [`Store`] is the whole API: typed operations (`insert_message`, `list_messages`…) that
//!   every other crate calls. No database type crosses the crate boundary, so the rest of
//!   herald cannot open a transaction by mistake, let alone hold one across an `.await`, and
//!   cannot tell which backend runs.
//! - **redb** (the default, [`embedded`]): one file. Every table and its key layout is listed
//!   in [`tables`]. Writes go through one writer thread that groups whatever is waiting into a
//!   single transaction, committed at `Durability::Immediate` with two-phase commit, and
//!   answers each request only after that commit returned ([`writer`]); a 2xx built on such an
//!   answer survives `kill -9` and power loss. Reads are MVCC snapshots on tokio's blocking
//!   pool. After an I/O error the writer reopens the database by itself, and a data file
//!   removed or replaced under the process stops all writes ([`health`]).
//! - **PostgreSQL** ([`postgres`]): several herald nodes share one database. The same
//!   operations, the same guarantees (an answer only after the commit, `synchronous_commit`
//!   on), concurrent ingests and attempt outcomes grouped into one transaction; deliveries are
//!   claimed with leases so each is in flight on one node at a time; the other nodes hear of
//!   changes through `LISTEN`/`NOTIFY` ([`Change`]).
//! - What each operation does to a delivery (an attempt's outcome, a DLQ retry, a resend, a
//!   deletion of its destination) and what an attempt may change in a destination are pure
//!   functions on the records ([`rules`]): both backends apply the same rules, and differ only
//!   in how they find, lock and write the rows.
//! - The schema version is checked at open: a newer database is refused rather than misread.

pub mod deliveries;
mod destinations;
pub mod embedded;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod idempotency;
mod keywords;
pub mod maintenance;
pub mod messages;
mod migrate;
pub mod postgres;
mod recipient;
mod records;
mod rules;
pub mod subjects;
pub mod tables;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_postgres;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod testing;
mod tx;
pub mod writer;

use std::path::Path;

pub use deliveries::{
    AttemptUpdate, DeadCursor, DeadFilter, DeadLetter, DeliveryKey, DueDelivery, Outcome,
};
pub use error::{Result, StorageError};
pub use health::Health;
pub use idempotency::IdempotencyOptions;
pub use keywords::{Channel, Reason, SuppressedOn, UnknownKeyword};
pub use maintenance::{IndexHealth, MaintenanceReport, StorageStats, TableInfo};
pub use messages::{Accepted, DedupeKey, MessageFilter, MessageView, NewMessage, Page};
pub use postgres::PostgresOptions;
pub use recipient::{Recipient, RecipientError};
pub use records::{
    Attempt, AuditEntry, BadMessageId, CircuitRecord, DeliveryRecord, DeliveryStatus,
    DestinationPolicy, DestinationRecord, MessageId, MessageRecord, Preferences, PreviousSecret,
    SuppressionRecord,
};
pub use subjects::{
    AuditView, Erasure, NewSuppression, PSEUDONYM_PREFIX, Pseudonyms, SubjectExport,
    SuppressionView,
};
pub use writer::{BatchStats, CommitObserver, Completion};

/// A change another node committed to the shared database, of something this node's actors
/// keep a copy of or wait for. Heard through PostgreSQL's `LISTEN`; a node never hears its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New or re-queued deliveries: the queues are worth reading now.
    Work,
    /// A destination was created, changed (its circuit, disabling, secrets, policy) or deleted.
    Destination(String),
    /// A recipient's suppressions or preferences changed, or it was erased: its canonical form.
    Subject(String),
    /// Changes may have been missed (the listening connection was lost and is back): whatever
    /// is kept from the database should be read again.
    Resync,
}

/// How to open the store.
#[derive(Clone)]
pub struct Options {
    /// redb's page cache. redb defaults to 1 GiB, which would dominate herald's memory. The
    /// hot set is small: every table the ingest path writes is time-ordered (messages,
    /// deliveries, due queues), so a commit dirties the rightmost leaves and their branches,
    /// and the dispatcher reads recent messages; no index is written at random any more.
    pub cache_bytes: usize,
    /// Called on the writer thread after every successful group commit.
    pub observer: Option<CommitObserver>,
    /// When the idempotency index seals its open bucket (see [`idempotency`]).
    pub idempotency: IdempotencyOptions,
}

impl Options {
    /// Measured with `herald-bench ingest` and `deliver` (README, Performance): no slower
    /// than 64 MiB.
    pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
            observer: None,
            idempotency: IdempotencyOptions::default(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("cache_bytes", &self.cache_bytes)
            .field("observer", &self.observer.is_some())
            .field("idempotency", &self.idempotency)
            .finish()
    }
}

/// herald's store: the typed operations every other crate uses, over whichever backend the
/// configuration chose. Cheap to clone; all clones share the backend. Nothing above this crate
/// can tell the backends apart, save by [`Store::backend`].
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Redb(embedded::Embedded),
    Postgres(postgres::Shared),
}

/// Calls the same operation on whichever backend runs.
macro_rules! dispatch {
    ($self:ident . $($call:tt)+) => {
        match &$self.backend {
            Backend::Redb(backend) => backend.$($call)+,
            Backend::Postgres(backend) => backend.$($call)+,
        }
    };
}

impl Store {
    /// Opens (or creates) the embedded database at `path`, creating its directory, every
    /// table and the schema version, and starts the writer thread. Blocking: call it before
    /// serving, or from a blocking context.
    pub fn open(path: &Path, options: Options) -> Result<Self> {
        embedded::Embedded::open(path, options).map(Self::redb)
    }

    /// [`Self::open`] over a custom redb storage backend instead of a file: for fault-injection
    /// tests, which run the store on a backend that fails writes, syncs or resizes on cue.
    /// Only built with the `test-hooks` feature. A store opened this way is never reopened.
    #[cfg(feature = "test-hooks")]
    pub fn open_with_backend(backend: impl redb::StorageBackend, options: Options) -> Result<Self> {
        embedded::Embedded::open_with_backend(backend, options).map(Self::redb)
    }

    /// [`Self::open_with_backend`] with a way to open the backend again: a store that reopens
    /// itself after a failed write, as one opened by path does. For fault-injection tests.
    #[cfg(feature = "test-hooks")]
    pub fn open_with_backends<B, F>(make: F, options: Options) -> Result<Self>
    where
        B: redb::StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + 'static,
    {
        embedded::Embedded::open_with_backends(make, options).map(Self::redb)
    }

    /// Connects to PostgreSQL, applies the schema's migrations (refusing a newer schema) and
    /// starts this node's writer and its listener for the other nodes' changes (see
    /// [`postgres`]).
    pub async fn open_postgres(options: PostgresOptions) -> Result<Self> {
        postgres::Shared::open(options).await.map(|backend| Self {
            backend: Backend::Postgres(backend),
        })
    }

    /// The redb backend, for this crate's unit tests that reach into its tables (to damage an
    /// index, say); `None` over PostgreSQL.
    #[cfg(test)]
    pub(crate) fn as_redb(&self) -> Option<&embedded::Embedded> {
        match &self.backend {
            Backend::Redb(backend) => Some(backend),
            Backend::Postgres(_) => None,
        }
    }

    fn redb(backend: embedded::Embedded) -> Self {
        Self {
            backend: Backend::Redb(backend),
        }
    }

    /// Which backend runs: `"redb"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Redb(_) => "redb",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// How many herald nodes share this store now, this one included: 1 on redb. A
    /// destination's rate limit is divided between them.
    pub fn nodes(&self) -> usize {
        dispatch!(self.nodes())
    }

    /// What other nodes changed in the shared database (always empty on redb: one node).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        dispatch!(self.changes())
    }

    /// Accepts a message (see [`messages`]); `done` is called after the commit.
    pub fn insert_message(&self, msg: NewMessage, done: Completion<Accepted>) {
        dispatch!(self.insert_message(msg, done));
    }

    /// [`Self::insert_message`], awaiting the commit.
    pub async fn insert_message_async(&self, msg: NewMessage) -> Result<Accepted> {
        dispatch!(self.insert_message_async(msg).await)
    }

    /// Forgets idempotency keys accepted before `before_ms` (whole sealed runs at a time, so
    /// some live on a little longer); returns how many.
    pub async fn sweep_idempotency(&self, before_ms: u64) -> Result<usize> {
        dispatch!(self.sweep_idempotency(before_ms).await)
    }

    pub async fn message(&self, id: MessageId) -> Result<Option<MessageView>> {
        dispatch!(self.message(id).await)
    }

    pub async fn list_messages(
        &self,
        filter: MessageFilter,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<MessageView>> {
        dispatch!(self.list_messages(filter, after, limit).await)
    }

    /// Applies an attempt's outcome, optionally with the destination's new state (its circuit,
    /// or its disabling after a 410) in the same commit; `done` is called after the commit with
    /// whether the delivery was still live. Only that state is taken from the attempt's record:
    /// the API's changes made meanwhile stay, and a destination deleted meanwhile stays deleted.
    pub fn record_attempt(&self, update: AttemptUpdate, done: Completion<bool>) {
        dispatch!(self.record_attempt(update, done));
    }

    /// Up to `limit` deliveries of `destination` due by `now_ms`, skipping in-flight ones, for
    /// attempts that time out after `timeout`. On PostgreSQL they are claimed: leased to this
    /// node for `timeout` plus the lease margin ([`PostgresOptions::lease_margin`]), so no other
    /// node attempts them meanwhile.
    pub async fn due_deliveries(
        &self,
        destination: String,
        now_ms: u64,
        limit: usize,
        skip: std::collections::HashSet<MessageId>,
        timeout: std::time::Duration,
    ) -> Result<Vec<DueDelivery>> {
        dispatch!(
            self.due_deliveries(destination, now_ms, limit, skip, timeout)
                .await
        )
    }

    /// When the earliest queued delivery of each destination is due: when this node can next
    /// claim one. On PostgreSQL a delivery another node has claimed counts from when its lease
    /// ends (never later than that: see `postgres::deliveries::next_due`).
    pub async fn next_due(&self, destinations: Vec<String>) -> Result<Vec<(String, Option<u64>)>> {
        dispatch!(self.next_due(destinations).await)
    }

    /// How many deliveries are queued for `destination`.
    pub async fn queued(&self, destination: String) -> Result<u64> {
        dispatch!(self.queued(destination).await)
    }

    pub async fn list_dead(
        &self,
        filter: DeadFilter,
        after: Option<DeadCursor>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<DeadCursor>)> {
        dispatch!(self.list_dead(filter, after, limit).await)
    }

    pub async fn dead(&self, key: DeliveryKey) -> Result<Option<DeadLetter>> {
        dispatch!(self.dead(key).await)
    }

    pub async fn dead_keys(&self, filter: DeadFilter) -> Result<Vec<DeliveryKey>> {
        dispatch!(self.dead_keys(filter).await)
    }

    /// Re-queues dead deliveries with fresh attempts; returns how many were dead.
    ///
    /// `audit(n)` is told how many were re-queued and may describe the change: its entry is
    /// committed with it.
    pub async fn requeue<A>(&self, keys: Vec<DeliveryKey>, now_ms: u64, audit: A) -> Result<usize>
    where
        A: Fn(usize) -> Option<AuditEntry> + Send + 'static,
    {
        dispatch!(self.requeue(keys, now_ms, audit).await)
    }

    /// `POST /v1/messages/{id}/resend`: see [`deliveries::resend`]; `audit(n)` is committed
    /// with the change. `None` if there is no such message.
    pub async fn resend<A>(
        &self,
        message: MessageId,
        destination: Option<String>,
        now_ms: u64,
        audit: A,
    ) -> Result<Option<usize>>
    where
        A: Fn(usize) -> AuditEntry + Send + 'static,
    {
        dispatch!(self.resend(message, destination, now_ms, audit).await)
    }

    /// Removes a delivery from the DLQ, with its audit entry; false if it was not there (and
    /// nothing is written).
    pub async fn discard(&self, key: DeliveryKey, audit: AuditEntry) -> Result<bool> {
        dispatch!(self.discard(key, audit).await)
    }

    pub async fn destination(&self, name: String) -> Result<Option<DestinationRecord>> {
        dispatch!(self.destination(name).await)
    }

    pub async fn destinations(&self) -> Result<Vec<(String, DestinationRecord)>> {
        dispatch!(self.destinations().await)
    }

    /// Creates or replaces a destination.
    pub async fn put_destination(&self, name: String, record: DestinationRecord) -> Result<()> {
        dispatch!(self.put_destination(name, record).await)
    }

    /// Creates a destination unless one of that name exists (false if it did), with its audit
    /// entry in the same commit.
    pub async fn create_destination(
        &self,
        name: String,
        record: DestinationRecord,
        audit: AuditEntry,
    ) -> Result<bool> {
        dispatch!(self.create_destination(name, record, audit).await)
    }

    /// Applies `change` to the stored destination in one transaction, so concurrent API calls
    /// and the dispatcher never lose each other's updates; returns the new record, `None` if
    /// there is no such destination. `audit(before, after)` describes the change and is
    /// committed with it (the dispatcher's own updates pass `None`).
    pub async fn update_destination<F, A>(
        &self,
        name: String,
        change: F,
        audit: Option<A>,
    ) -> Result<Option<DestinationRecord>>
    where
        F: Fn(&mut DestinationRecord) + Send + 'static,
        A: Fn(&DestinationRecord, &DestinationRecord) -> AuditEntry + Send + 'static,
    {
        dispatch!(self.update_destination(name, change, audit).await)
    }

    /// Deletes a destination; its queued deliveries go to the DLQ. Returns the deleted record,
    /// `None` if it did not exist; `audit(deleted)` is committed with the deletion.
    pub async fn delete_destination<A>(
        &self,
        name: String,
        now_ms: u64,
        audit: A,
    ) -> Result<Option<DestinationRecord>>
    where
        A: Fn(&DestinationRecord) -> AuditEntry + Send + 'static,
    {
        dispatch!(self.delete_destination(name, now_ms, audit).await)
    }

    /// Stores suppressions and the audit entries describing them, all or nothing.
    pub async fn add_suppressions(
        &self,
        items: Vec<NewSuppression>,
        audit: Vec<AuditEntry>,
    ) -> Result<()> {
        dispatch!(self.add_suppressions(items, audit).await)
    }

    /// Deletes a suppression; `audit` is called with the removed record to describe the change
    /// (nothing is written when there was none). Returns the removed record.
    pub async fn remove_suppression<A>(
        &self,
        recipient: Recipient,
        channel: String,
        audit: A,
    ) -> Result<Option<SuppressionRecord>>
    where
        A: Fn(&SuppressionRecord) -> AuditEntry + Send + 'static,
    {
        dispatch!(self.remove_suppression(recipient, channel, audit).await)
    }

    /// Replaces a recipient's preferences with what `change` makes of the current ones
    /// (`None` = the defaults), with the audit entry `audit(before, after)`; returns them.
    pub async fn update_preferences<C, A>(
        &self,
        recipient: Recipient,
        change: C,
        audit: A,
    ) -> Result<Option<Preferences>>
    where
        C: Fn(Option<Preferences>) -> Option<Preferences> + Send + 'static,
        A: Fn(Option<&Preferences>, Option<&Preferences>) -> AuditEntry + Send + 'static,
    {
        dispatch!(self.update_preferences(recipient, change, audit).await)
    }

    /// Removes up to `max` expired suppressions.
    pub async fn sweep_suppressions(&self, now_ms: u64, max: usize) -> Result<usize> {
        dispatch!(self.sweep_suppressions(now_ms, max).await)
    }

    /// What an erased `recipient` is known as: its keyed pseudonym.
    pub fn pseudonym(&self, recipient: &Recipient) -> Recipient {
        dispatch!(self.pseudonym(recipient))
    }

    /// GDPR erasure of a recipient (see [`subjects::erase`]), with `audit(pseudonym)` in the
    /// same commit (it must name the pseudonym, never the address).
    pub async fn erase_subject<A>(&self, recipient: Recipient, audit: A) -> Result<Erasure>
    where
        A: Fn(&Recipient) -> AuditEntry + Send + 'static,
    {
        dispatch!(self.erase_subject(recipient, audit).await)
    }

    /// Every suppression that applies to `recipient` (under its address or its pseudonym), by
    /// channel: what the delivery path checks.
    pub async fn suppressions_of(
        &self,
        recipient: Recipient,
    ) -> Result<Vec<(String, SuppressionRecord)>> {
        dispatch!(self.suppressions_of(recipient).await)
    }

    pub async fn list_suppressions(
        &self,
        recipient: Option<Recipient>,
        channel: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<(Vec<SuppressionView>, bool)> {
        dispatch!(
            self.list_suppressions(recipient, channel, after, limit)
                .await
        )
    }

    /// A recipient's effective preferences (opt-outs kept through an erasure included).
    pub async fn preferences(&self, recipient: Recipient) -> Result<Option<Preferences>> {
        dispatch!(self.preferences(recipient).await)
    }

    pub async fn list_audit(
        &self,
        subject: Option<String>,
        actor: Option<String>,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<AuditView>, bool)> {
        dispatch!(self.list_audit(subject, actor, after, limit).await)
    }

    pub async fn export_subject(&self, recipient: Recipient) -> Result<SubjectExport> {
        dispatch!(self.export_subject(recipient).await)
    }

    /// Every table with its entry count, the file's size and the schema version
    /// (`GET /v1/storage`). Cheap on both backends. On redb the counts are kept in the B-tree
    /// headers, nothing is scanned. On PostgreSQL the tables are the database's, with the
    /// indexes standing for redb's secondary tables under the same names; counts are exact up
    /// to 10 000 (no count reads more) and PostgreSQL's estimates beyond, and `file_bytes` is the
    /// whole database's size (see the `postgres::maintenance` module).
    pub async fn stats(&self) -> Result<StorageStats> {
        dispatch!(self.stats().await)
    }

    /// Compares every secondary index with its primary table on one read snapshot; repairs
    /// nothing. Full scans of the indexed tables, but never delays a write: see [`maintenance`].
    pub async fn verify_indexes(&self) -> Result<Vec<IndexHealth>> {
        dispatch!(self.verify_indexes().await)
    }

    /// `POST /v1/storage/maintenance`: verifies every secondary index and, with `repair`,
    /// rebuilds the wrong ones from their primary tables in one write job (no other write
    /// commits while it runs). Does not compact nor run redb's integrity check: both need the
    /// database exclusively, which a running herald never has; the report says so. See
    /// [`maintenance`] for the costs and for [`maintenance::compact_offline`]. On PostgreSQL,
    /// which keeps its indexes consistent itself, there is nothing to verify or repair: the
    /// report says so and names the operator's tools (`VACUUM`, `REINDEX`).
    pub async fn maintenance(&self, repair: bool) -> Result<MaintenanceReport> {
        dispatch!(self.maintenance(repair).await)
    }

    /// True while the database answers reads, the writer thread runs and writes are taken
    /// (not reopening after a failed commit, its file not removed): a store that answers reads
    /// can still take nothing in.
    pub async fn is_ready(&self) -> bool {
        dispatch!(self.is_ready().await)
    }

    /// Whether writes are being committed: the writer runs and its last commit succeeded.
    /// Cheap (two atomic loads), for callers that must not act on work they could not record.
    pub fn accepts_writes(&self) -> bool {
        dispatch!(self.accepts_writes())
    }

    /// Whether the store takes writes, and if not why (see [`health`]).
    pub fn health(&self) -> Health {
        dispatch!(self.health())
    }

    /// Every change of [`Self::health`], for whoever raises the alert.
    pub fn watch_health(&self) -> tokio::sync::watch::Receiver<Health> {
        dispatch!(self.watch_health())
    }

    /// Commits everything queued so far, then stops the writer. Later writes fail with
    /// [`StorageError::Closed`].
    pub async fn close(&self) {
        dispatch!(self.close().await);
    }
}
