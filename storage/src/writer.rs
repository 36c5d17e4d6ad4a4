//! The single writer thread and its group commit.
//!
//! redb admits one write transaction at a time and `begin_write` blocks, so all writes go
//! through one dedicated OS thread (never a tokio worker). Callers enqueue *jobs*; the thread
//! takes the first job, drains whatever else is already waiting (up to [`MAX_BATCH`]), runs all
//! of them in ONE transaction and commits it once at `Durability::Immediate` with two-phase
//! commit. Only then does any job learn its result. One fsync is shared by the whole batch:
//! that is what lets durable and fast coexist (see `../shared/CRATES.md`: ~2k commits/s, but
//! ~80k records/s when batched).
//!
//! A job is a closure over the open transaction. It may be run more than once: when one job of
//! a batch fails, the transaction is aborted (so its partial writes vanish), that job alone is
//! answered with its error, and the rest of the batch is run again in a fresh transaction. A
//! job must therefore be a pure function of the transaction (`FnMut`, no side effects outside
//! it). Expected outcomes such as "duplicate" are `Ok` values, not errors, so the common path
//! never reruns anything. A panicking job is caught and treated as a failed job: the writer
//! thread must outlive any bug in one operation.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use crate::error::{Result, StorageError};
use crate::health::{DbCell, Guard};
use crate::idempotency::Index;
use crate::tx::Tx;

/// The most jobs committed together. Bounds the transaction's size and the latency of the
/// first job in a batch; at ~1 KiB per message a full batch is about 1 MiB of writes.
pub const MAX_BATCH: usize = 1024;

/// Receives a job's outcome on the writer thread, after the commit. Must be quick and must not
/// block: it typically sends on a channel.
pub type Completion<T> = Box<dyn FnOnce(Result<T>) + Send>;

/// Timing of one committed batch, for the perf monitor.
#[derive(Debug, Clone, Copy)]
pub struct BatchStats {
    pub jobs: usize,
    pub apply: std::time::Duration,
    pub commit: std::time::Duration,
}

/// Observes every commit; called on the writer thread.
pub type CommitObserver = Arc<dyn Fn(BatchStats) + Send + Sync>;

trait Job: Send {
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<()>;
    fn complete(self: Box<Self>, result: Result<()>);
}

struct Op<T, F> {
    run: F,
    output: Option<T>,
    done: Completion<T>,
}

impl<T, F> Job for Op<T, F>
where
    T: Send,
    F: FnMut(&mut Tx<'_>) -> Result<T> + Send,
{
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        self.output = Some((self.run)(tx)?);
        Ok(())
    }

    fn complete(self: Box<Self>, result: Result<()>) {
        let Self { output, done, .. } = *self;
        done(result.and_then(|()| output.ok_or(StorageError::Closed)));
    }
}

enum Command {
    Job(Box<dyn Job>),
    /// Finish everything queued before this, then exit.
    Stop(oneshot::Sender<()>),
}

/// A handle on the writer thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Command>,
    running: Arc<AtomicBool>,
    /// The open database and whether it takes writes (see [`crate::health`]).
    cell: Arc<DbCell>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    pub(crate) fn spawn(
        db: Arc<Database>,
        observer: Option<CommitObserver>,
        guard: Guard,
        cell: Arc<DbCell>,
        mut index: Index,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let running = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&running);
        thread::Builder::new()
            .name("herald-storage-writer".into())
            .spawn(move || {
                let mut db = Some(db);
                let stopped = run(&mut db, &mut index, &rx, observer.as_deref(), guard);
                // Release the file before saying so: a caller may reopen it at once.
                drop(db);
                flag.store(false, Ordering::Release);
                if let Some(done) = stopped {
                    let _ = done.send(());
                }
            })
            .map_err(|e| StorageError::Redb(Arc::new(e.into())))?;
        Ok(Self { tx, running, cell })
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Whether writes are taken: the last commit succeeded (true before the first) and the
    /// store is neither reopening nor lost.
    pub(crate) fn is_committing(&self) -> bool {
        self.cell.writable()
    }

    pub(crate) fn submit<T, F>(&self, run: F, done: Completion<T>)
    where
        T: Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let job = Box::new(Op {
            run,
            output: None,
            done,
        });
        if let Err(mpsc::SendError(Command::Job(job))) = self.tx.send(Command::Job(job)) {
            job.complete(Err(StorageError::Closed));
        }
    }

    /// Asks the thread to finish the queued work and exit; resolves when it has.
    pub(crate) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Command::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }
}

/// The writer loop. Returns the stop request that ended it, if any (else every sender is gone).
/// Between batches, and at least every second, it lets `guard` check the file and reopen the
/// database when it failed (see [`crate::health`]).
fn run(
    db: &mut Option<Arc<Database>>,
    index: &mut Index,
    rx: &mpsc::Receiver<Command>,
    observer: Option<&(dyn Fn(BatchStats) + Send + Sync)>,
    mut guard: Guard,
) -> Option<oneshot::Sender<()>> {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = match rx.recv_timeout(guard.wait()) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => {
                guard.maintain(db);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return None,
        };
        let mut stop = None;
        match first {
            Command::Job(job) => batch.push(job),
            Command::Stop(done) => stop = Some(done),
        }
        while stop.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Command::Job(job)) => batch.push(job),
                Ok(Command::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            guard.maintain(db);
            let stats = commit_guarded(db, index, &mut batch, &mut guard);
            if let (Some(observe), Some(stats)) = (observer, stats) {
                observe(stats);
            }
        }
        // Seal only into a healthy database; a refused or reopening store seals later.
        if index.wants_seal()
            && guard.refusal().is_none()
            && let Some(open) = db.as_ref()
        {
            seal(open, index);
        }
        if stop.is_some() {
            return stop;
        }
    }
}

/// Commits `batch` unless the store refuses writes (then every job gets the refusal at once),
/// and hands a failure of the transaction itself to `guard`, which reopens the database.
fn commit_guarded(
    db: &mut Option<Arc<Database>>,
    index: &mut Index,
    batch: &mut Vec<Box<dyn Job>>,
    guard: &mut Guard,
) -> Option<BatchStats> {
    let open = match (guard.refusal(), db.as_ref()) {
        (None, Some(open)) => Arc::clone(open),
        (refusal, _) => {
            let refusal = refusal.unwrap_or_else(|| StorageError::Unavailable("closed".into()));
            answer_all(batch, &Err(refusal));
            return None;
        }
    };
    match commit_batch(&open, index, batch, guard) {
        Ok(stats) => {
            guard.write_succeeded();
            stats
        }
        Err(e) => {
            drop(open);
            guard.write_failed(db, &e);
            None
        }
    }
}

/// Runs every job of `batch` in one transaction and commits it; answers each job. Leaves
/// `batch` empty. Returns the timing of the successful commit, if there was one, or the error
/// that kept the transaction from being begun or committed, or that the disk gave a job (a
/// job's own error does not count: it fails that job alone).
/// A committed batch is acknowledged only if the file is still the one opened (see
/// [`Guard::check_file`]): a commit into a removed file is as good as lost.
fn commit_batch(
    db: &Database,
    index: &mut Index,
    batch: &mut Vec<Box<dyn Job>>,
    guard: &mut Guard,
) -> Result<Option<BatchStats>> {
    loop {
        let started = Instant::now();
        let txn = match begin(db) {
            Ok(txn) => txn,
            Err(e) => {
                answer_all(batch, &Err(e.clone()));
                return Err(e);
            }
        };
        let mut tx = Tx::new(&txn, index);
        let applied = apply_all(&mut tx, batch);
        drop(tx); // redb: every table handle must be gone before commit or abort
        match applied {
            Ok(()) => {
                let applied = Instant::now();
                let result = txn.commit().map_err(StorageError::from);
                let stats = BatchStats {
                    jobs: batch.len(),
                    apply: applied - started,
                    commit: applied.elapsed(),
                };
                if let Err(e) = &result {
                    tracing::error!(error = %e, jobs = batch.len(), "commit failed");
                }
                tracing::debug!(
                    jobs = stats.jobs,
                    apply_us = stats.apply.as_micros(),
                    commit_us = stats.commit.as_micros(),
                    "group commit"
                );
                if let Err(e) = result {
                    index.abort();
                    answer_all(batch, &Err(e.clone()));
                    return Err(e);
                }
                // The commit is in the database: the index's changes are now true of it.
                index.commit();
                let acknowledged = guard.check_file();
                answer_all(batch, &acknowledged);
                return Ok(acknowledged.is_ok().then_some(stats));
            }
            Err((_, error)) if is_storage_failure(&error) => {
                // The disk failed under a job (a write or a resize while it ran), not the job:
                // the batch fails as a failed commit does, so the store stops taking writes
                // (reopening where it can) rather than trying job after job on that disk, and
                // a later write that happens not to touch the disk is never acknowledged.
                if let Err(e) = txn.abort() {
                    tracing::warn!(error = %e, "abort after a storage failure");
                }
                index.abort();
                answer_all(batch, &Err(error.clone()));
                return Err(error);
            }
            Err((culprit, error)) => {
                // Roll back the partial writes of the whole batch, answer the culprit, and run
                // the others again without it.
                if let Err(e) = txn.abort() {
                    tracing::warn!(error = %e, "abort after a failed job");
                }
                index.abort();
                batch.remove(culprit).complete(Err(error));
                if batch.is_empty() {
                    return Ok(None);
                }
            }
        }
    }
}

/// Seals the idempotency index's open bucket into a run, in a transaction of its own so that
/// a failure costs no job anything (it is tried again after the next batch).
fn seal(db: &Database, index: &mut Index) {
    let sealed = begin(db).and_then(|txn| {
        let mut tx = Tx::new(&txn, index);
        let applied = Index::seal(&mut tx);
        drop(tx);
        applied?;
        txn.commit()?;
        Ok(())
    });
    match sealed {
        Ok(()) => index.commit(),
        Err(e) => {
            tracing::warn!(error = %e, "sealing idempotency keys failed");
            index.abort();
        }
    }
}

fn begin(db: &Database) -> Result<WriteTransaction> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    // Payloads are attacker-controlled: two-phase commit keeps a crafted page from ever being
    // mistaken for a valid commit after a crash.
    txn.set_two_phase_commit(true);
    Ok(txn)
}

fn apply_all(tx: &mut Tx<'_>, batch: &mut [Box<dyn Job>]) -> Result<(), (usize, StorageError)> {
    for (index, job) in batch.iter_mut().enumerate() {
        let outcome = catch_unwind(AssertUnwindSafe(|| job.apply(tx)))
            .unwrap_or_else(|panic| Err(StorageError::Panicked(panic_message(&*panic))));
        if let Err(e) = outcome {
            return Err((index, e));
        }
    }
    Ok(())
}

/// Whether a job's error is the storage's own (an I/O failure, or redb's memory of one) rather
/// than the job's.
fn is_storage_failure(error: &StorageError) -> bool {
    matches!(
        error,
        StorageError::Redb(e) if matches!(
            **e,
            redb::Error::Io(_)
                | redb::Error::PreviousIo
                | redb::Error::Backend(_)
                | redb::Error::DatabaseClosed
        )
    )
}

fn answer_all(batch: &mut Vec<Box<dyn Job>>, result: &Result<()>) {
    for job in batch.drain(..) {
        job.complete(result.clone());
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
