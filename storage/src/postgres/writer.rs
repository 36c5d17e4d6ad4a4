//! This node's grouped writer: accepted messages and attempt outcomes, whatever is waiting, in
//! one transaction and one commit.
//!
//! A task takes everything queued (up to [`MAX_BATCH`] jobs), applies it with a handful of
//! array statements ([`super::messages::insert_batch`], [`super::deliveries::record_batch`]),
//! commits, and only then answers each job. While a commit waits for its WAL flush, the next
//! batch gathers, so the commit rate follows the disk and the batch size follows the load.
//!
//! Failure isolation: a job refused on its own merits (a record that does not decode) fails
//! alone inside the batch, writing nothing. A statement that fails aborts the transaction: the
//! batch is then applied again one job per transaction, so one bad job never fails the others.
//! A lost connection fails the whole batch with [`StorageError::Unavailable`] and marks the
//! store unavailable until the probe reconnects (see [`super`]); nothing was acknowledged.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Inner, Shared, is_connection_error};
use crate::error::{Result, StorageError};
use crate::{Accepted, AttemptUpdate, BatchStats, CommitObserver, Completion, NewMessage};

/// Transactions in flight at once, each on its own connection: while one waits for its WAL
/// flush the next is gathered and applied, so the disk's flushes follow each other without a
/// gap. Batches are still applied one after the other, in queue order (the next is gathered
/// only once the previous one's statements ran). Two batches never wait on each other in a cycle: every batch takes its locks in one
/// order (idempotency keys sorted, then destinations by name, then deliveries by key), and
/// two outcomes of one delivery are never in flight together (the dispatcher records an
/// attempt before it starts the next).
const WRITERS: usize = 2;

/// At most this many jobs share one transaction: enough to amortise a commit many times over,
/// small enough that the statements' arrays stay a few hundred KiB.
const MAX_BATCH: usize = 512;

/// One write to group.
pub(crate) enum Job {
    Insert(Box<NewMessage>, Completion<Accepted>),
    Attempt(Box<AttemptUpdate>, Completion<bool>),
}

impl Job {
    fn fail(self, error: StorageError) {
        self.split().1.fail(error);
    }
}

enum Command {
    Job(Job),
    /// Commit what is queued, then stop.
    Stop(oneshot::Sender<()>),
}

/// The writer's queue. Unbounded: work is bounded where it enters (the HTTP edge).
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Command>,
}

impl Writer {
    /// The queue, and the task that drains it, holding the store weakly: when the last handle
    /// is dropped the queue closes and the task ends.
    pub(super) fn spawn(store: &Weak<Inner>, observer: Option<&CommitObserver>) -> Self {
        let (queue, commands) = mpsc::unbounded_channel();
        let commands: Commands = Arc::new(tokio::sync::Mutex::new(commands));
        let committing = Arc::new(Semaphore::new(WRITERS));
        for _ in 0..WRITERS {
            tokio::spawn(run(
                store.clone(),
                Arc::clone(&commands),
                Arc::clone(&committing),
                observer.cloned(),
            ));
        }
        Self { queue }
    }

    pub(super) fn send(&self, job: Job) {
        if let Err(mpsc::error::SendError(Command::Job(job))) = self.queue.send(Command::Job(job)) {
            job.fail(StorageError::Closed);
        }
    }

    /// Commits everything queued so far, then stops.
    pub(super) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.queue.send(Command::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }
}

/// The queue, shared by the [`WRITERS`] tasks: one of them at a time gathers a batch.
type Commands = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Command>>>;

async fn run(
    store: Weak<Inner>,
    commands: Commands,
    committing: Arc<Semaphore>,
    observer: Option<CommitObserver>,
) {
    loop {
        // Gather and apply under the queue's lock, commit without it: the other writer
        // gathers and applies the next batch while this one waits for its WAL flush, and
        // batches are applied in the order their jobs were queued (a later batch touching the
        // same rows waits for the earlier one's commit).
        let (jobs, stop, permit, queue) = {
            let mut queue = Arc::clone(&commands).lock_owned().await;
            let Some(command) = queue.recv().await else {
                return; // closed by a stop, and empty
            };
            let Ok(permit) = Arc::clone(&committing).acquire_owned().await else {
                return;
            };
            let (mut jobs, mut stop) = (Vec::new(), None);
            match command {
                Command::Job(job) => jobs.push(job),
                Command::Stop(done) => stop = Some(done),
            }
            while stop.is_none() && jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(Command::Job(job)) => jobs.push(job),
                    Ok(Command::Stop(done)) => stop = Some(done),
                    Err(_) => break,
                }
            }
            if stop.is_some() {
                // Nothing queued after the stop is taken.
                queue.close();
                while let Ok(Command::Job(job)) = queue.try_recv() {
                    job.fail(StorageError::Closed);
                }
            }
            (jobs, stop, permit, queue)
        };
        match store.upgrade() {
            Some(inner) => commit(&Shared { inner }, jobs, observer.as_ref(), queue).await,
            None => jobs
                .into_iter()
                .for_each(|job| job.fail(StorageError::Closed)),
        }
        drop(permit);
        if let Some(done) = stop {
            // Everything queued before the stop is answered once the other writers' batches
            // are committed too.
            let every = u32::try_from(WRITERS).unwrap_or(u32::MAX);
            let _ = committing.acquire_many(every).await;
            let _ = done.send(());
            return;
        }
    }
}

/// What a batch's jobs came to, in their order.
enum Done {
    Inserted(Result<Accepted>),
    Recorded(Result<bool>),
}

/// The queue's lock, held from gathering a batch until it is applied.
type Gathering = tokio::sync::OwnedMutexGuard<mpsc::UnboundedReceiver<Command>>;

async fn commit(
    shared: &Shared,
    jobs: Vec<Job>,
    observer: Option<&CommitObserver>,
    queue: Gathering,
) {
    let mut queue = Some(queue);
    if jobs.is_empty() {
        return;
    }
    if !shared.accepts_writes() {
        let why = match shared.health() {
            crate::Health::Healthy => StorageError::Closed,
            unhealthy => StorageError::Unavailable(format!("{unhealthy:?}")),
        };
        for job in jobs {
            job.fail(why.clone());
        }
        return;
    }
    // What the statements read, apart from the replies (which are not `Sync`).
    let (work, replies): (Vec<Work>, Vec<Reply>) = jobs.into_iter().map(Job::split).unzip();
    let started = Instant::now();
    let outcome = apply(shared, &work, &mut queue).await;
    drop(queue);
    let applied = started.elapsed();
    match outcome {
        Ok((done, commit_took)) => {
            if let Some(observer) = observer {
                observer(BatchStats {
                    jobs: work.len(),
                    apply: applied.saturating_sub(commit_took),
                    commit: commit_took,
                });
            }
            answer(replies, done);
        }
        Err(e) if is_connection_error(&e) => {
            shared.failed(&e);
            for reply in replies {
                reply.fail(e.clone());
            }
        }
        Err(e) if work.len() == 1 => replies.into_iter().for_each(|reply| reply.fail(e.clone())),
        Err(e) => {
            tracing::warn!(error = %e, jobs = work.len(), "a grouped write failed; applying its jobs one by one");
            for (one, reply) in work.into_iter().zip(replies) {
                let one = [one];
                match apply(shared, &one, &mut None).await {
                    Ok((done, _)) => answer(vec![reply], done),
                    Err(e) => {
                        shared.failed(&e);
                        reply.fail(e);
                    }
                }
            }
        }
    }
}

/// What a job writes.
enum Work {
    Insert(Box<NewMessage>),
    Attempt(Box<AttemptUpdate>),
}

/// Whom a job answers.
enum Reply {
    Insert(Completion<Accepted>),
    Attempt(Completion<bool>),
}

impl Job {
    fn split(self) -> (Work, Reply) {
        match self {
            Self::Insert(msg, done) => (Work::Insert(msg), Reply::Insert(done)),
            Self::Attempt(update, done) => (Work::Attempt(update), Reply::Attempt(done)),
        }
    }
}

impl Reply {
    fn fail(self, error: StorageError) {
        match self {
            Self::Insert(done) => done(Err(error)),
            Self::Attempt(done) => done(Err(error)),
        }
    }
}

fn answer(replies: Vec<Reply>, done: Vec<Done>) {
    for (reply, done) in replies.into_iter().zip(done) {
        match (reply, done) {
            (Reply::Insert(reply), Done::Inserted(outcome)) => reply(outcome),
            (Reply::Attempt(reply), Done::Recorded(outcome)) => reply(outcome),
            (reply, _) => reply.fail(StorageError::Panicked(
                "a write answered out of order".into(),
            )),
        }
    }
}

/// Applies `work` in one transaction and commits; returns each job's outcome and how long the
/// commit took.
/// `queue`, if given, is released once the statements ran, before the commit.
async fn apply(
    shared: &Shared,
    work: &[Work],
    queue: &mut Option<Gathering>,
) -> Result<(Vec<Done>, std::time::Duration)> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    let inserts: Vec<&NewMessage> = work
        .iter()
        .filter_map(|job| match job {
            Work::Insert(msg) => Some(&**msg),
            Work::Attempt(_) => None,
        })
        .collect();
    let attempts: Vec<&AttemptUpdate> = work
        .iter()
        .filter_map(|job| match job {
            Work::Attempt(update) => Some(&**update),
            Work::Insert(_) => None,
        })
        .collect();
    let mut inserted = super::messages::insert_batch(shared, &tx, &inserts)
        .await?
        .into_iter();
    let mut recorded = super::deliveries::record_batch(shared, &tx, &attempts)
        .await?
        .into_iter();
    drop(queue.take());
    let committing = Instant::now();
    tx.commit().await?;
    let commit_took = committing.elapsed();
    let done = work
        .iter()
        .map(|job| match job {
            Work::Insert(_) => Done::Inserted(inserted.next().unwrap_or(Err(
                StorageError::Panicked("an insert went unanswered".into()),
            ))),
            Work::Attempt(_) => Done::Recorded(recorded.next().unwrap_or(Err(
                StorageError::Panicked("an outcome went unanswered".into()),
            ))),
        })
        .collect();
    Ok((done, commit_took))
}
