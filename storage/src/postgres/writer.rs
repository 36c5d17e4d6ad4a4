//! This node's grouped writer: accepted messages and attempt outcomes, whatever is waiting, in
//! one transaction and one commit.
//!
//! One task takes everything queued (up to [`MAX_BATCH`] jobs), applies it with a handful of
//! array statements ([`super::messages::insert_batch`], [`super::deliveries::record_batch`]),
//! commits, and only then answers each job. While a commit waits for its WAL flush, the next
//! batch gathers, so the commit rate follows the disk and the batch size follows the load.
//!
//! Failure isolation: a job refused on its own merits (a record that does not decode) fails
//! alone inside the batch, writing nothing. A statement that fails aborts the transaction: the
//! batch is then applied again one job per transaction, so one bad job never fails the others.
//! A lost connection fails the whole batch with [`StorageError::Unavailable`] and marks the
//! store unavailable until the probe reconnects (see [`super`]); nothing was acknowledged.

use std::sync::Weak;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{Inner, Shared, is_connection_error};
use crate::error::{Result, StorageError};
use crate::{Accepted, AttemptUpdate, BatchStats, CommitObserver, Completion, NewMessage};

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
    pub(super) fn spawn(store: Weak<Inner>, observer: Option<CommitObserver>) -> Self {
        let (queue, commands) = mpsc::unbounded_channel();
        tokio::spawn(run(store, commands, observer));
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

async fn run(
    store: Weak<Inner>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    observer: Option<CommitObserver>,
) {
    let mut batch = Vec::new();
    while let Some(command) = commands.recv().await {
        let mut stop = None;
        match command {
            Command::Job(job) => batch.push(job),
            Command::Stop(done) => stop = Some(done),
        }
        while stop.is_none() && batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(Command::Job(job)) => batch.push(job),
                Ok(Command::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
        }
        let jobs = std::mem::take(&mut batch);
        match store.upgrade() {
            Some(inner) => commit(&Shared { inner }, jobs, observer.as_ref()).await,
            None => jobs
                .into_iter()
                .for_each(|job| job.fail(StorageError::Closed)),
        }
        if let Some(done) = stop {
            commands.close();
            while let Ok(Command::Job(job)) = commands.try_recv() {
                job.fail(StorageError::Closed);
            }
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

async fn commit(shared: &Shared, jobs: Vec<Job>, observer: Option<&CommitObserver>) {
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
    let outcome = apply(shared, &work).await;
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
                match apply(shared, &one).await {
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
async fn apply(shared: &Shared, work: &[Work]) -> Result<(Vec<Done>, std::time::Duration)> {
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
