//! The embedded backend: one redb file, one group-commit writer thread (see the crate docs).
//!
//! Every operation of [`crate::Store`] over redb lives here; the table code it calls
//! ([`crate::messages`], [`crate::deliveries`], [`crate::subjects`]…) is redb's alone.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use crate::tx::Tx;
use crate::{
    Accepted, AttemptUpdate, AuditEntry, AuditView, Completion, DeadCursor, DeadFilter, DeadLetter,
    DeliveryKey, DestinationRecord, DueDelivery, Erasure, Health, IdempotencyOptions, IndexHealth,
    MaintenanceReport, MessageFilter, MessageId, MessageView, NewMessage, NewSuppression, Options,
    Page, Preferences, Pseudonyms, Recipient, Result, StorageError, StorageStats, SubjectExport,
    SuppressionRecord, SuppressionView,
};
use crate::{
    deliveries, destinations, health, idempotency, maintenance, messages, migrate, subjects,
    tables, writer,
};

/// A handle on the open database and its writer. Cheap to clone; all clones share both.
#[derive(Clone)]
pub struct Embedded {
    /// The open database (none while it is being reopened) and its health.
    db: Arc<health::DbCell>,
    writer: writer::Writer,
    /// The database file, for its size; `None` over a custom backend (no file to measure).
    path: Option<Arc<Path>>,
    /// Keyed pseudonyms of erased recipients; the key is read once, at open.
    pseudonyms: Pseudonyms,
    /// Never sent on: one node has no other node's changes to hear of. Kept so that
    /// [`Self::changes`] receivers wait instead of reporting a closed channel.
    changes: tokio::sync::broadcast::Sender<crate::Change>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

impl Embedded {
    /// Opens (or creates) the database at `path`, creating its directory, every table and the
    /// schema version, and starts the writer thread. Blocking: call it before serving, or from
    /// a blocking context.
    pub fn open(path: &Path, options: Options) -> Result<Self> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        if std::fs::metadata(path).map_or(true, |file| file.len() == 0) {
            create_file(path, dir.unwrap_or(Path::new(".")), &options)?;
        }
        let db = builder(&options).create(path)?;
        // Reopened only if it exists: a missing file is a lost one, never a new empty database.
        let (again, settings) = (path.to_owned(), options.clone());
        let reopen: health::Reopen = Box::new(move || Ok(builder(&settings).open(&again)?));
        Self::start(db, Some(path.into()), options, Some(reopen))
    }

    /// [`Self::open`] over a custom redb storage backend instead of a file: for fault-injection
    /// tests, which run the store on a backend that fails writes, syncs or resizes on cue.
    /// Creates the tables and checks the schema exactly as [`Self::open`] does. Only built with
    /// the `test-hooks` feature, which this crate's own tests turn on: redb's types stay out of
    /// herald's API. A store opened this way is never reopened.
    #[cfg(feature = "test-hooks")]
    pub fn open_with_backend(backend: impl redb::StorageBackend, options: Options) -> Result<Self> {
        let db = builder(&options).create_with_backend(backend)?;
        Self::start(db, None, options, None)
    }

    /// [`Self::open_with_backend`] with a way to open the backend again: a store that reopens
    /// itself after a failed write, as one opened by path does. For fault-injection tests.
    #[cfg(feature = "test-hooks")]
    pub fn open_with_backends<B, F>(make: F, options: Options) -> Result<Self>
    where
        B: redb::StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + 'static,
    {
        let db = builder(&options).create_with_backend(make().map_err(io_error)?)?;
        let settings = options.clone();
        let reopen: health::Reopen =
            Box::new(
                move || Ok(builder(&settings).create_with_backend(make().map_err(io_error)?)?),
            );
        Self::start(db, None, options, Some(reopen))
    }

    /// Creates the tables, migrates the file, loads the idempotency index and starts the
    /// writer.
    fn start(
        db: Database,
        path: Option<Arc<Path>>,
        options: Options,
        reopen: Option<health::Reopen>,
    ) -> Result<Self> {
        let db = Arc::new(db);
        let (pseudonyms, index) = initialise(&db, options.idempotency)?;
        let cell = Arc::new(health::DbCell::new(Arc::clone(&db)));
        let guard = health::Guard::new(Arc::clone(&cell), path.as_deref(), reopen)?;
        let writer = writer::Writer::spawn(db, options.observer, guard, Arc::clone(&cell), index)?;
        Ok(Self {
            db: cell,
            writer,
            path,
            pseudonyms,
            changes: tokio::sync::broadcast::channel(1).0,
        })
    }

    /// One node: the embedded database is never shared.
    #[allow(clippy::unused_self)] // the same signature as the PostgreSQL backend's
    pub fn nodes(&self) -> usize {
        1
    }

    /// Nothing, ever: see the `changes` field.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<crate::Change> {
        self.changes.subscribe()
    }

    /// Runs `op` in the next group commit; `done` gets its outcome after the commit.
    fn submit<T, F>(&self, op: F, done: Completion<T>)
    where
        T: Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.writer.submit(op, done);
    }

    /// Runs `op` in the next group commit and waits for the commit.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(
            op,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Runs `op` on a read snapshot, on the blocking pool.
    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.get()?;
        tokio::task::spawn_blocking(move || op(&db.begin_read()?))
            .await
            .unwrap_or_else(|join| Err(StorageError::Panicked(join.to_string())))
    }

    /// Accepts a message (see [`messages`]); `done` is called after the commit.
    pub fn insert_message(&self, msg: NewMessage, done: Completion<Accepted>) {
        self.submit(move |txn| messages::insert(txn, &msg), done);
    }

    /// [`Self::insert_message`], awaiting the commit.
    pub async fn insert_message_async(&self, msg: NewMessage) -> Result<Accepted> {
        self.write(move |txn| messages::insert(txn, &msg)).await
    }

    /// Forgets idempotency keys accepted before `before_ms` (whole sealed runs at a time, so
    /// some live on a little longer); returns how many.
    pub async fn sweep_idempotency(&self, before_ms: u64) -> Result<usize> {
        self.write(move |tx| idempotency::Index::sweep(tx, before_ms))
            .await
    }

    pub async fn message(&self, id: MessageId) -> Result<Option<MessageView>> {
        self.read(move |txn| messages::get(txn, id)).await
    }

    pub async fn list_messages(
        &self,
        filter: MessageFilter,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<MessageView>> {
        self.read(move |txn| messages::list(txn, &filter, after, limit))
            .await
    }

    // ---- deliveries -------------------------------------------------------------------

    /// Applies an attempt's outcome, optionally with the destination's new state (its circuit,
    /// or its disabling after a 410) in the same commit; `done` is called after the commit with
    /// whether the delivery was still live. Only that state is taken from the attempt's record:
    /// the API's changes made meanwhile stay, and a destination deleted meanwhile stays deleted.
    pub fn record_attempt(&self, update: AttemptUpdate, done: Completion<bool>) {
        self.submit(
            move |tx| {
                if let Some((name, record)) = &update.destination {
                    destinations::apply_attempt(tx, name, record)?;
                }
                deliveries::record(
                    tx,
                    &update.key,
                    update.attempt.as_ref(),
                    &update.outcome,
                    update.now_ms,
                )
            },
            done,
        );
    }

    /// Up to `limit` deliveries of `destination` due by `now_ms`, skipping in-flight ones.
    pub async fn due_deliveries(
        &self,
        destination: String,
        now_ms: u64,
        limit: usize,
        skip: std::collections::HashSet<MessageId>,
        _timeout: std::time::Duration,
    ) -> Result<Vec<DueDelivery>> {
        // One node: nothing to lease; the dispatcher's in-flight set (`skip`) is the claim.
        self.read(move |txn| {
            deliveries::due(txn, &destination, now_ms, limit, &|id| skip.contains(&id))
        })
        .await
    }

    /// When the earliest queued delivery of each destination is due.
    pub async fn next_due(&self, destinations: Vec<String>) -> Result<Vec<(String, Option<u64>)>> {
        self.read(move |txn| {
            destinations
                .into_iter()
                .map(|d| deliveries::next_due(txn, &d).map(|at| (d, at)))
                .collect()
        })
        .await
    }

    /// How many deliveries are queued for `destination`.
    pub async fn queued(&self, destination: String) -> Result<u64> {
        self.read(move |txn| deliveries::queued(txn, &destination))
            .await
    }

    pub async fn list_dead(
        &self,
        filter: DeadFilter,
        after: Option<DeadCursor>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<DeadCursor>)> {
        self.read(move |txn| deliveries::list_dead(txn, &filter, after.as_ref(), limit))
            .await
    }

    pub async fn dead(&self, key: DeliveryKey) -> Result<Option<DeadLetter>> {
        self.read(move |txn| deliveries::get_dead(txn, &key)).await
    }

    pub async fn dead_keys(&self, filter: DeadFilter) -> Result<Vec<DeliveryKey>> {
        self.read(move |txn| deliveries::dead_keys(txn, &filter))
            .await
    }

    /// Re-queues dead deliveries with fresh attempts; returns how many were dead.
    ///
    /// `audit(n)` is told how many were re-queued and may describe the change: its entry is
    /// committed with it.
    pub async fn requeue<A>(&self, keys: Vec<DeliveryKey>, now_ms: u64, audit: A) -> Result<usize>
    where
        A: Fn(usize) -> Option<AuditEntry> + Send + 'static,
    {
        self.write(move |tx| {
            let n = deliveries::requeue(tx, &keys, now_ms)?;
            if let Some(entry) = audit(n) {
                subjects::append_audit(tx, &entry)?;
            }
            Ok(n)
        })
        .await
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
        self.write(move |tx| {
            let requeued = deliveries::resend(tx, message, destination.as_deref(), now_ms)?;
            if let Some(n) = requeued {
                subjects::append_audit(tx, &audit(n))?;
            }
            Ok(requeued)
        })
        .await
    }

    /// Removes a delivery from the DLQ, with its audit entry; false if it was not there (and
    /// nothing is written).
    pub async fn discard(&self, key: DeliveryKey, audit: AuditEntry) -> Result<bool> {
        self.write(move |tx| {
            let discarded = deliveries::discard(tx, &key)?;
            if discarded {
                subjects::append_audit(tx, &audit)?;
            }
            Ok(discarded)
        })
        .await
    }

    // ---- destinations -----------------------------------------------------------------

    pub async fn destination(&self, name: String) -> Result<Option<DestinationRecord>> {
        self.read(move |txn| destinations::get(txn, &name)).await
    }

    pub async fn destinations(&self) -> Result<Vec<(String, DestinationRecord)>> {
        self.read(destinations::list).await
    }

    /// Creates or replaces a destination.
    pub async fn put_destination(&self, name: String, record: DestinationRecord) -> Result<()> {
        self.write(move |tx| destinations::put(tx, &name, &record))
            .await
    }

    /// Creates a destination unless one of that name exists (false if it did), with its audit
    /// entry in the same commit.
    pub async fn create_destination(
        &self,
        name: String,
        record: DestinationRecord,
        audit: AuditEntry,
    ) -> Result<bool> {
        self.write(move |tx| {
            if destinations::get_for_update(tx, &name)?.is_some() {
                return Ok(false);
            }
            destinations::put(tx, &name, &record)?;
            subjects::append_audit(tx, &audit)?;
            Ok(true)
        })
        .await
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
        self.write(move |tx| {
            let Some(mut record) = destinations::get_for_update(tx, &name)? else {
                return Ok(None);
            };
            let before = record.clone();
            change(&mut record);
            destinations::put(tx, &name, &record)?;
            if let Some(audit) = &audit {
                subjects::append_audit(tx, &audit(&before, &record))?;
            }
            Ok(Some(record))
        })
        .await
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
        self.write(move |tx| {
            let Some(record) = destinations::get_for_update(tx, &name)? else {
                return Ok(None);
            };
            destinations::delete(tx, &name)?;
            deliveries::kill_destination(tx, &name, now_ms)?;
            subjects::append_audit(tx, &audit(&record))?;
            Ok(Some(record))
        })
        .await
    }

    // ---- subjects: suppressions, preferences, audit, GDPR -----------------------------------

    /// Stores suppressions and the audit entries describing them, all or nothing.
    pub async fn add_suppressions(
        &self,
        items: Vec<NewSuppression>,
        audit: Vec<AuditEntry>,
    ) -> Result<()> {
        self.write(move |tx| {
            subjects::put_suppressions(tx, &items)?;
            for entry in &audit {
                subjects::append_audit(tx, entry)?;
            }
            Ok(())
        })
        .await
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
        self.write(move |tx| {
            let removed = subjects::delete_suppression(tx, recipient.as_str(), &channel)?;
            if let Some(record) = &removed {
                subjects::append_audit(tx, &audit(record))?;
            }
            Ok(removed)
        })
        .await
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
        self.write(move |tx| {
            let before = subjects::get_preferences(tx, recipient.as_str())?;
            let after = change(before.clone());
            subjects::put_preferences(tx, recipient.as_str(), after.as_ref())?;
            subjects::append_audit(tx, &audit(before.as_ref(), after.as_ref()))?;
            Ok(after)
        })
        .await
    }

    /// Removes up to `max` expired suppressions.
    pub async fn sweep_suppressions(&self, now_ms: u64, max: usize) -> Result<usize> {
        self.write(move |tx| subjects::sweep_suppressions(tx, now_ms, max))
            .await
    }

    /// What an erased `recipient` is known as: its keyed pseudonym.
    pub fn pseudonym(&self, recipient: &Recipient) -> Recipient {
        self.pseudonyms.of(recipient)
    }

    /// GDPR erasure of a recipient (see [`subjects::erase`]), with `audit(pseudonym)` in the
    /// same commit (it must name the pseudonym, never the address).
    pub async fn erase_subject<A>(&self, recipient: Recipient, audit: A) -> Result<Erasure>
    where
        A: Fn(&Recipient) -> AuditEntry + Send + 'static,
    {
        let alias = self.pseudonyms.of(&recipient);
        self.write(move |tx| {
            let report = subjects::erase(tx, &alias, &recipient)?;
            subjects::append_audit(tx, &audit(&alias))?;
            Ok(report)
        })
        .await
    }

    /// Every suppression that applies to `recipient` (under its address or its pseudonym), by
    /// channel: what the delivery path checks.
    pub async fn suppressions_of(
        &self,
        recipient: Recipient,
    ) -> Result<Vec<(String, SuppressionRecord)>> {
        let pseudonyms = self.pseudonyms.clone();
        self.read(move |txn| {
            Ok(subjects::suppressions_of(txn, &pseudonyms, &recipient)?
                .into_iter()
                .map(|s| (s.channel, s.record))
                .collect())
        })
        .await
    }

    pub async fn list_suppressions(
        &self,
        recipient: Option<Recipient>,
        channel: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<(Vec<SuppressionView>, bool)> {
        self.read(move |txn| {
            let after = after.as_ref().map(|(r, c)| (r.as_str(), c.as_str()));
            subjects::list_suppressions(txn, recipient.as_ref(), channel.as_deref(), after, limit)
        })
        .await
    }

    /// A recipient's effective preferences (opt-outs kept through an erasure included).
    pub async fn preferences(&self, recipient: Recipient) -> Result<Option<Preferences>> {
        let pseudonyms = self.pseudonyms.clone();
        self.read(move |txn| subjects::preferences_of(txn, &pseudonyms, &recipient))
            .await
    }

    pub async fn list_audit(
        &self,
        subject: Option<String>,
        actor: Option<String>,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<AuditView>, bool)> {
        self.read(move |txn| {
            subjects::list_audit(txn, subject.as_deref(), actor.as_deref(), after, limit)
        })
        .await
    }

    pub async fn export_subject(&self, recipient: Recipient) -> Result<SubjectExport> {
        let pseudonyms = self.pseudonyms.clone();
        self.read(move |txn| subjects::export(txn, &pseudonyms, &recipient))
            .await
    }

    // ---- maintenance (see [`maintenance`]) ---------------------------------------------------

    /// Every table with its entry count, the file's size and the schema version
    /// (`GET /v1/storage`). Cheap: counts are kept in the B-tree headers, nothing is scanned.
    pub async fn stats(&self) -> Result<StorageStats> {
        let path = self.path.clone();
        self.read(move |txn| maintenance::stats(txn, path.as_deref()))
            .await
    }

    /// Compares every secondary index with its primary table on one read snapshot; repairs
    /// nothing. Full scans of the indexed tables, but never delays a write: see [`maintenance`].
    pub async fn verify_indexes(&self) -> Result<Vec<IndexHealth>> {
        self.read(maintenance::verify_all).await
    }

    /// `POST /v1/storage/maintenance`: verifies every secondary index and, with `repair`,
    /// rebuilds the wrong ones from their primary tables in one write job (no other write
    /// commits while it runs). Does not compact nor run redb's integrity check: both need the
    /// database exclusively, which a running herald never has; the report says so. See
    /// [`maintenance`] for the costs and for [`maintenance::compact_offline`].
    pub async fn maintenance(&self, repair: bool) -> Result<MaintenanceReport> {
        let started = std::time::Instant::now();
        let mut indexes = self.verify_indexes().await?;
        let broken = maintenance::unhealthy(&indexes);
        if repair && !broken.is_empty() {
            let repaired = self
                .write(move |tx| maintenance::rebuild_all(tx, &broken))
                .await?;
            maintenance::mark_rebuilt(&mut indexes, &repaired);
        }
        Ok(maintenance::online_report(indexes, started.elapsed()))
    }

    /// True while the database answers reads, the writer thread runs and writes are taken
    /// (not reopening after a failed commit, its file not removed): a store that answers reads
    /// can still take nothing in.
    pub async fn is_ready(&self) -> bool {
        self.writer.is_running()
            && self.writer.is_committing()
            && self.read(|_| Ok(())).await.is_ok()
    }

    /// Whether writes are being committed: the writer runs and its last commit succeeded.
    /// Cheap (two atomic loads), for callers that must not act on work they could not record.
    pub fn accepts_writes(&self) -> bool {
        self.writer.is_running() && self.writer.is_committing()
    }

    /// Whether the store takes writes, and if not why (see [`health`]).
    pub fn health(&self) -> Health {
        self.db.health()
    }

    /// Every change of [`Self::health`], for whoever raises the alert.
    pub fn watch_health(&self) -> tokio::sync::watch::Receiver<Health> {
        self.db.watch()
    }

    /// Commits everything queued so far, then stops the writer. Later writes fail with
    /// [`StorageError::Closed`].
    pub async fn close(&self) {
        self.writer.stop().await;
    }
}

/// redb's settings for herald's database, whatever it is stored on.
fn builder(options: &Options) -> redb::Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_bytes);
    builder
}

/// Creates a new database file at `path` in `dir`: under a temporary name, renamed into place
/// once redb has initialised it. redb writes its magic number last, so a crash while it creates
/// a file in place leaves one it refuses ever after ("not a redb database"), and herald would
/// not start again until someone deleted it; under the temporary name, the next start simply
/// creates it again.
fn create_file(path: &Path, dir: &Path, options: &Options) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Ok(()); // no file name: let redb report it
    };
    let mut temporary = name.to_os_string();
    temporary.push(".creating");
    let temporary = path.with_file_name(temporary);
    match std::fs::remove_file(&temporary) {
        Ok(()) => tracing::warn!(file = %temporary.display(), "removed an unfinished database"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    builder(options).create(&temporary)?.close()?;
    std::fs::rename(&temporary, path).map_err(io_error)?;
    // The rename itself is durable once the directory is.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error)?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageError::Redb(Arc::new(e.into()))
}

/// Creates every table (so readers never meet a missing one), makes the pseudonym key at the
/// first start, migrates an older file (refusing a newer one) and loads the idempotency index,
/// all in one commit.
fn initialise(
    db: &Database,
    options: IdempotencyOptions,
) -> Result<(Pseudonyms, idempotency::Index)> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.set_two_phase_commit(true);
    let pseudonyms = subjects::load_key(&txn)?;
    migrate::run(&txn)?;
    create_tables(&txn)?;
    let index = idempotency::Index::load(&txn, options)?;
    txn.commit()?;
    Ok((pseudonyms, index))
}

/// What a database reopened after a failed write needs before it takes writes again: its
/// tables, and a commit that shows writes work. Its idempotency index is the writer's, which
/// only ever holds what was committed.
pub(crate) fn prepare_reopened(db: &Database) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.set_two_phase_commit(true);
    migrate::run(&txn)?;
    create_tables(&txn)?;
    txn.commit()?;
    Ok(())
}

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<()> {
    txn.open_table(tables::META)?;
    txn.open_table(tables::MESSAGES)?;
    txn.open_table(tables::IDEMPOTENCY_RUNS)?;
    txn.open_table(tables::IDEMPOTENCY_RUN_DIR)?;
    txn.open_table(tables::IDEMPOTENCY_LOOSE)?;
    txn.open_table(tables::DELIVERIES)?;
    txn.open_table(tables::DELIVERIES_DUE)?;
    txn.open_table(tables::DEAD_LETTERS)?;
    txn.open_table(tables::DESTINATIONS)?;
    txn.open_table(tables::MESSAGES_BY_RECIPIENT)?;
    txn.open_table(tables::SUPPRESSIONS)?;
    txn.open_table(tables::SUPPRESSIONS_BY_EXPIRY)?;
    txn.open_table(tables::PREFERENCES)?;
    txn.open_table(tables::AUDIT)?;
    txn.open_table(tables::AUDIT_BY_SUBJECT)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use redb::ReadableTable as _;

    const SCRATCH: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("scratch");

    fn put(key: u64, fail: bool) -> impl FnMut(&mut Tx<'_>) -> Result<u64> + Send {
        move |tx| {
            tx.txn().open_table(SCRATCH)?.insert(key, key)?;
            if fail {
                return Err(StorageError::corrupt("scratch", "injected"));
            }
            Ok(key)
        }
    }

    async fn scratch_keys(store: &Embedded) -> Vec<u64> {
        store
            .read(|txn| {
                let table = txn.open_table(SCRATCH)?;
                table
                    .iter()?
                    .map(|e| e.map(|(k, _)| k.value()).map_err(StorageError::from))
                    .collect()
            })
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_job_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(&dir.path().join("h.redb"), Options::default()).unwrap();
        let panicking = |_: &mut Tx<'_>| -> Result<u64> { panic!("bug in one job") };
        let (first, failing, panicked, last) = tokio::join!(
            store.write(put(1, false)),
            store.write(put(2, true)),
            store.write(panicking),
            store.write(put(3, false)),
        );
        assert_eq!(first.unwrap(), 1);
        assert!(matches!(failing, Err(StorageError::Corrupt { .. })));
        assert!(
            matches!(panicked, Err(StorageError::Panicked(ref why)) if why.contains("bug in one job"))
        );
        assert_eq!(last.unwrap(), 3);
        assert_eq!(
            scratch_keys(&store).await,
            vec![1, 3],
            "the failed job's write is gone"
        );
        // The writer survived the panic.
        assert_eq!(store.write(put(4, false)).await.unwrap(), 4);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert(tables::SCHEMA_VERSION_KEY, tables::SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Embedded::open(&path, Options::default()).unwrap_err();
        assert!(matches!(err, StorageError::SchemaTooNew { .. }), "{err}");
    }
}
