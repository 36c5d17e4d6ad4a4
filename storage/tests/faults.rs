//! Storage fault injection: the store on a redb backend that fails writes, syncs or resizes
//! after a countdown, as redb's own fuzzer does.
//!
//! The invariant: a request whose commit failed never got a 2xx (an `Ok`); after reopening,
//! everything that got one is there, nothing that was never submitted is, the secondary indexes
//! agree with their tables and redb's integrity check passes.
//!
//! A run opens the store on [`FaultyBackend`] (through `Store::open_with_backend`, built with
//! the `test-hooks` feature), writes rounds of concurrent `insert_message_async` with unique
//! keys (some with one or two destinations, a few with bodies spanning pages) and stops after
//! the first round with an error. On the way it checks that the `Ok`s are exactly the jobs of
//! the commits that succeeded (a failed commit answers every job of its batch with the error),
//! and that after a failed commit nothing more is acknowledged, even once the disk works again,
//! and the store stops reporting itself ready.
//!
//! It then reopens three images of the file with a healthy backend, one per way a process
//! stops on a failing disk:
//! - `file`: the file as the run left it, with every write that succeeded (the process died or
//!   the error cleared, but the OS kept what it had been given);
//! - `synced`: the bytes as of the last successful `sync_data` before the fault (power lost
//!   at the fault: nothing unsynced reached the disk);
//! - `torn`: those bytes plus about half of the writes made since, chosen by the run's number
//!   (power lost with some of the unsynced writes on disk, in any order).
//!
//! Each image must open with `Store::open`, hold every acknowledged message with its record,
//! body and pending deliveries, hold nothing never submitted, queue exactly its stored
//! deliveries, verify its indexes, take every submission again as a duplicate exactly when it
//! is stored, and pass `check_integrity_offline` without repair.
//!
//! Sweeps: every countdown of each kind of fault over a whole run (writes in steps of a few),
//! failing from then on (a dead disk) or just once (a transient error), on a file herald had
//! created before; and every countdown up to the end of the store's opening on a new file,
//! where a crash leaves a file redb never finished creating.
//!
//! The backend never calls the real `fsync`: durability is what the `synced` image models, and
//! skipping it keeps the few hundred runs within seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use herald_storage::maintenance::check_integrity_offline;
use herald_storage::{
    Accepted, BatchStats, DedupeKey, DeliveryStatus, MessageFilter, MessageId, MessageRecord,
    MessageView, NewMessage, Options, Store,
};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use tokio::task::JoinSet;

mod common;
use common::scratch_dir;

// ---- the backend -------------------------------------------------------------------------

/// The operations a countdown can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write,
    Sync,
    SetLen,
}

/// Whether the failing operation's kind keeps failing after the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every later operation of the kind fails too (a dead disk).
    Sticky,
    /// Only the one fails; the disk works again afterwards (a transient error).
    Once,
}

/// Shared between the backend (inside redb) and the test.
#[derive(Debug)]
struct Countdown {
    /// `None`: never fail (counting the operations of a healthy run).
    kind: Option<Kind>,
    mode: Mode,
    /// How many more operations of `kind` succeed before one fails.
    remaining: AtomicU64,
    /// An operation failed.
    tripped: AtomicBool,
    /// Operations seen, per kind (`Kind as usize`), failed ones included.
    seen: [AtomicU64; 3],
}

impl Countdown {
    fn new(kind: Option<Kind>, mode: Mode, after: u64) -> Self {
        Self {
            kind,
            mode,
            remaining: AtomicU64::new(after),
            tripped: AtomicBool::new(false),
            seen: Default::default(),
        }
    }

    /// Counts an operation of `kind`; fails it if its turn has come.
    fn check(&self, kind: Kind) -> io::Result<()> {
        self.seen[kind as usize].fetch_add(1, SeqCst);
        if self.kind != Some(kind) {
            return Ok(());
        }
        if self.mode == Mode::Once && self.tripped.load(SeqCst) {
            return Ok(());
        }
        if self
            .remaining
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            self.tripped.store(true, SeqCst);
            return Err(io::Error::other(format!("injected {kind:?} failure")));
        }
        Ok(())
    }

    fn seen(&self) -> [u64; 3] {
        self.seen.each_ref().map(|n| n.load(SeqCst))
    }
}

/// One change to the file since the last sync.
#[derive(Debug, Clone)]
enum Change {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

impl Change {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Self::Write(offset, data) => {
                let start = usize::try_from(*offset).unwrap();
                let end = start + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[start..end].copy_from_slice(data);
            }
            Self::SetLen(len) => image.resize(usize::try_from(*len).unwrap(), 0),
        }
    }
}

/// What a power cut would leave on the disk.
#[derive(Debug, Default)]
struct Durable {
    /// The bytes as of the last successful sync.
    synced: Vec<u8>,
    /// The changes made since, in order.
    unsynced: Vec<Change>,
    /// Set at the first injected failure: the power is cut there, so nothing after it counts.
    frozen: bool,
}

/// A [`FileBackend`] that fails operations on a [`Countdown`] and keeps the [`Durable`] image.
#[derive(Debug)]
struct FaultyBackend {
    inner: FileBackend,
    countdown: Arc<Countdown>,
    durable: Arc<Mutex<Durable>>,
}

impl FaultyBackend {
    fn check(&self, kind: Kind) -> io::Result<()> {
        let checked = self.countdown.check(kind);
        if checked.is_err() {
            self.durable.lock().unwrap().frozen = true;
        }
        checked
    }

    fn record(&self, change: Change) {
        let mut durable = self.durable.lock().unwrap();
        if !durable.frozen {
            durable.unsynced.push(change);
        }
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.check(Kind::SetLen)?;
        self.inner.set_len(len)?;
        self.record(Change::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.check(Kind::Sync)?;
        let mut durable = self.durable.lock().unwrap();
        if !durable.frozen {
            let Durable {
                synced, unsynced, ..
            } = &mut *durable;
            for change in unsynced.drain(..) {
                change.apply(synced);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.check(Kind::Write)?;
        self.inner.write(offset, data)?;
        self.record(Change::Write(offset, data.to_vec()));
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    // The file's locks, so that two opens of one file still exclude each other.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// The first bytes of every redb file (its magic number begins so).
const REDB_MAGIC: &[u8] = b"redb";

// ---- the workload ------------------------------------------------------------------------

/// Rounds of concurrent inserts; a run stops after the first round with an error.
const ROUNDS: usize = 5;
const PER_ROUND: usize = 8;
const DESTINATIONS: [&str; 2] = ["alpha", "beta"];
/// Small, so that redb evicts and writes pages before commits too.
const CACHE_BYTES: usize = 256 * 1024;

/// The `i`th message of a run: unique dedupe key, a body whose size varies (a few of them span
/// several pages, growing the file), and 0, 1 or 2 destinations.
fn message(run: usize, i: usize) -> NewMessage {
    let received_at_ms = 1_000 + i as u64;
    let len = if i % 7 == 3 { 20_000 + i } else { 50 + i * 37 };
    let body: Vec<u8> = (0..len).map(|b| (b * 31 + i + run) as u8).collect();
    let external = format!("run{run}-msg{i}");
    NewMessage {
        id: MessageId::generate(received_at_ms),
        record: MessageRecord {
            source: Some("faults".into()),
            external_id: Some(external.clone()),
            event_type: Some("e".into()),
            content_type: None,
            recipient: i.is_multiple_of(2).then(|| {
                herald_storage::Recipient::parse(&format!("user{i}@example.com")).unwrap()
            }),
            channel: None,
            category: None,
            received_at_ms,
            body_len: len as u64,
        },
        body: Bytes::from(body),
        dedupe_key: Some(DedupeKey::new("faults", &external)),
        destinations: DESTINATIONS[..i % 3]
            .iter()
            .map(ToString::to_string)
            .collect(),
        suppress: None,
    }
}

/// What one run did, for checking the images it left.
#[derive(Debug)]
struct Run {
    /// Every message submitted, in order.
    submitted: Vec<NewMessage>,
    /// Indexes into `submitted` of the messages that got `Ok`.
    acked: Vec<usize>,
    tripped: bool,
    images: Vec<(&'static str, Vec<u8>)>,
    /// Operations of each kind (`Kind as usize`) the open made, and the whole run.
    ops_to_open: [u64; 3],
    ops: [u64; 3],
}

/// Rounds of concurrent inserts until one fails; records what was submitted and which got
/// `Ok` (by index into `submitted`). Returns whether one failed.
async fn workload(
    store: &Store,
    run_no: usize,
    submitted: &mut Vec<NewMessage>,
    acked: &mut Vec<usize>,
) -> bool {
    let mut failed = false;
    for round in 0..ROUNDS {
        let mut jobs = JoinSet::new();
        for _ in 0..PER_ROUND {
            let index = submitted.len();
            let msg = message(run_no, index);
            submitted.push(msg.clone());
            let store = store.clone();
            jobs.spawn(async move { (index, store.insert_message_async(msg).await) });
        }
        while let Some(joined) = jobs.join_next().await {
            let (index, outcome) = joined.unwrap();
            match outcome {
                Ok(accepted) => {
                    assert_eq!(
                        accepted,
                        Accepted::New(submitted[index].id),
                        "run {run_no}: a unique key is never a duplicate"
                    );
                    acked.push(index);
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            // After a failed commit nothing more is acknowledged, even when the disk works
            // again (`Mode::Once`): redb latches the I/O error until the store is reopened.
            let index = submitted.len();
            let probe = message(run_no, index);
            submitted.push(probe.clone());
            assert!(
                store.insert_message_async(probe).await.is_err(),
                "run {run_no} (round {round}): a write was acknowledged after a failed commit"
            );
            assert!(
                !store.is_ready().await,
                "run {run_no}: ready, though it can commit nothing"
            );
            break;
        }
    }
    failed
}

async fn run(dir: &Path, base: &[u8], countdown: Countdown, run_no: usize) -> Run {
    let path = dir.join(format!("run{run_no}.redb"));
    std::fs::write(&path, base).unwrap();
    let countdown = Arc::new(countdown);
    let durable = Arc::new(Mutex::new(Durable {
        synced: base.to_vec(),
        ..Durable::default()
    }));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let backend = FaultyBackend {
        inner: FileBackend::new(file).unwrap(),
        countdown: Arc::clone(&countdown),
        durable: Arc::clone(&durable),
    };
    let committed_jobs = Arc::new(AtomicUsize::new(0));
    let observer = {
        let committed = Arc::clone(&committed_jobs);
        Arc::new(move |stats: BatchStats| {
            committed.fetch_add(stats.jobs, SeqCst);
        })
    };
    let options = Options {
        cache_bytes: CACHE_BYTES,
        observer: Some(observer),
        ..Options::default()
    };

    let mut submitted = Vec::new();
    let mut acked = Vec::new();
    let opened = Store::open_with_backend(backend, options);
    let ops_to_open = countdown.seen();
    if let Ok(store) = opened {
        let failed = workload(&store, run_no, &mut submitted, &mut acked).await;
        if !failed {
            assert!(store.is_ready().await, "run {run_no}: not ready");
        }
        // The observer runs after the jobs are answered: count once the writer has stopped.
        store.close().await;
        // Every job of a committed batch got Ok and every job of a failed one got the error:
        // the acknowledgements are exactly the jobs of the commits that succeeded.
        assert_eq!(
            acked.len(),
            committed_jobs.load(SeqCst),
            "run {run_no}: acknowledged jobs vs jobs in successful commits"
        );
    }
    // The store and its writer are gone: redb has closed the backend.

    let file_image = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let durable = std::mem::take(&mut *durable.lock().unwrap());
    // About half of the unsynced writes, chosen by the run's number (reproducible); every
    // resize, so that each write lands within the file.
    let mut torn = durable.synced.clone();
    for (i, change) in durable.unsynced.iter().enumerate() {
        let keep = (i.wrapping_mul(0x9E37_79B9) ^ run_no.wrapping_mul(0x85EB_CA6B)) >> 7 & 1 == 1;
        if keep || matches!(change, Change::SetLen(_)) {
            change.apply(&mut torn);
        }
    }
    acked.sort_unstable();
    Run {
        submitted,
        acked,
        tripped: countdown.tripped.load(SeqCst),
        images: vec![
            ("file", file_image),
            ("synced", durable.synced),
            ("torn", torn),
        ],
        ops_to_open,
        ops: countdown.seen(),
    }
}

/// What one image held beyond the invariant.
#[derive(Debug, Default)]
struct Found {
    /// Messages stored although their request got an error: the commit reached the disk, then
    /// failed. Allowed, and harmless, since the client's retry is a duplicate.
    stored_despite_error: usize,
    /// The image is a file redb never finished creating.
    unfinished: bool,
}

/// Reopens `image` with a healthy backend and checks the invariant.
async fn check_image(dir: &Path, name: &str, image: &[u8], run: &Run, label: &str) -> Found {
    let label = format!("{label}/{name}");
    let path = dir.join("image.redb");
    let unfinished = place(&path, image, run, &label);
    let store = Store::open(&path, Options::default())
        .unwrap_or_else(|e| panic!("{label}: the image does not open: {e}"));
    assert!(!dir.join("image.redb.creating").exists(), "{label}");
    let stored = check_contents(&store, run, &label).await;
    let stored_despite_error = retry_all(&store, run, &stored, &label).await;
    store.close().await;
    drop(store);
    assert!(
        check_integrity_offline(&path)
            .unwrap_or_else(|e| panic!("{label}: integrity check failed: {e}")),
        "{label}: redb had to repair the file"
    );
    Found {
        stored_despite_error,
        unfinished,
    }
}

/// Puts `image` where the next start finds it, and says whether it is a file redb never
/// finished creating. redb writes its magic number last when it creates a file, so a crash
/// before leaves a file that redb refuses ever after. `Store::open` creates its file under a
/// temporary name and renames it into place once redb is done: that is where such an image is
/// left, and the next start creates the file again.
fn place(path: &Path, image: &[u8], run: &Run, label: &str) -> bool {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, image).unwrap();
    let unfinished = !image.is_empty() && !image.starts_with(REDB_MAGIC);
    if unfinished {
        assert!(
            run.acked.is_empty(),
            "{label}: acknowledged writes in a file redb never finished creating"
        );
        assert!(
            Store::open(path, Options::default()).is_err(),
            "{label}: redb opens a file it never finished creating"
        );
        std::fs::remove_file(path).unwrap();
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".creating");
        std::fs::write(temporary, image).unwrap();
    }
    unfinished
}

/// Checks what the reopened store holds against what the run submitted and acknowledged;
/// returns the stored messages.
async fn check_contents(store: &Store, run: &Run, label: &str) -> BTreeMap<MessageId, MessageView> {
    let submitted: HashMap<MessageId, &NewMessage> =
        run.submitted.iter().map(|m| (m.id, m)).collect();
    let mut stored = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_messages(MessageFilter::default(), after, 100)
            .await
            .unwrap();
        for view in page.items {
            stored.insert(view.id, view);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    for &index in &run.acked {
        let id = run.submitted[index].id;
        assert!(
            stored.contains_key(&id),
            "{label}: acknowledged message {index} ({id}) is lost"
        );
    }
    for id in stored.keys() {
        let sent = submitted
            .get(id)
            .unwrap_or_else(|| panic!("{label}: {id} was never submitted"));
        let view = store.message(*id).await.unwrap().unwrap();
        assert_eq!(view.record, sent.record, "{label}: {id}'s record");
        assert_eq!(
            view.body.as_deref(),
            Some(&sent.body[..]),
            "{label}: {id}'s body"
        );
        let destinations: Vec<&str> = view.deliveries.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            destinations, sent.destinations,
            "{label}: {id}'s deliveries"
        );
        for (_, delivery) in &view.deliveries {
            assert_eq!(delivery.status, DeliveryStatus::Pending);
            assert_eq!(
                delivery.next_attempt_at_ms,
                Some(sent.record.received_at_ms)
            );
        }
    }
    for destination in DESTINATIONS {
        let due = store
            .due_deliveries(
                destination.into(),
                u64::MAX,
                1_000,
                HashSet::new(),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        let expected = stored
            .values()
            .filter(|v| v.deliveries.iter().any(|(d, _)| d == destination))
            .count();
        assert_eq!(due.len(), expected, "{label}: {destination}'s queue");
    }
    for health in store.verify_indexes().await.unwrap() {
        assert!(health.is_healthy(), "{label}: {health:?}");
    }
    stored
}

/// The client's retry of every submission, with its key and a new id: a duplicate of the stored
/// message if its commit reached the disk, whatever the first answer was; a new message
/// otherwise. Returns how many were stored although their request got an error.
async fn retry_all(
    store: &Store,
    run: &Run,
    stored: &BTreeMap<MessageId, MessageView>,
    label: &str,
) -> usize {
    let mut retries = JoinSet::new();
    for (index, sent) in run.submitted.iter().enumerate() {
        let retry = NewMessage {
            id: MessageId::generate(sent.record.received_at_ms),
            ..sent.clone()
        };
        let store = store.clone();
        retries.spawn(async move { (index, retry.id, store.insert_message_async(retry).await) });
    }
    let mut stored_despite_error = 0;
    while let Some(joined) = retries.join_next().await {
        let (index, retry, accepted) = joined.unwrap();
        let sent = &run.submitted[index];
        if stored.contains_key(&sent.id) {
            assert_eq!(accepted.unwrap(), Accepted::Duplicate(sent.id), "{label}");
            stored_despite_error += usize::from(run.acked.binary_search(&index).is_err());
        } else {
            assert_eq!(accepted.unwrap(), Accepted::New(retry), "{label}");
        }
    }
    stored_despite_error
}

/// A clean store file with the tables created, as herald leaves it.
async fn base_file(dir: &Path) -> Vec<u8> {
    let path = dir.join("base.redb");
    let store = Store::open(&path, Options::default()).unwrap();
    store.close().await;
    drop(store);
    std::fs::read(&path).unwrap()
}

/// The countdowns of one sweep, with what they found.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    tripped: usize,
    /// Runs that acknowledged some messages, then failed.
    partial: usize,
    acked: usize,
    images: usize,
    stored_despite_error: usize,
    /// Images of a file redb never finished creating.
    unfinished: usize,
}

/// Which countdowns a sweep tries.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// Every one from 0 to a little past the operations of a whole run, `runs` values at most.
    Run { runs: u64 },
    /// Every one up to the operations of opening the store, and a few more.
    Open,
}

/// Runs the workload once without a fault, to count the operations of each kind, then once per
/// countdown value of `span`, checking every distinct image each run leaves. `fresh`: the
/// store creates its file in the run, rather than opening one herald created before.
async fn sweep(kind: Kind, mode: Mode, fresh: bool, span: Span) -> Tally {
    let started = Instant::now();
    let dir = scratch_dir();
    let base = if fresh {
        Vec::new()
    } else {
        base_file(dir.path()).await
    };
    let healthy = run(dir.path(), &base, Countdown::new(None, mode, 0), 0).await;
    assert_eq!(
        healthy.acked.len(),
        ROUNDS * PER_ROUND,
        "a healthy run stores everything"
    );
    let ops = healthy.ops[kind as usize];
    assert!(ops > 0, "the workload never calls {kind:?}");
    let (last, step) = match span {
        // Batching varies from run to run, and so does the count: go a little past it.
        Span::Run { runs } => {
            let last = ops + ops / 10 + 1;
            (last, (last / runs).max(1))
        }
        Span::Open => (healthy.ops_to_open[kind as usize] + 2, 1),
    };

    let mut tally = Tally::default();
    for (run_no, after) in (0..=last)
        .step_by(usize::try_from(step).unwrap())
        .enumerate()
    {
        let label = format!(
            "{kind:?} {mode:?} fault after {after} ({}), run {run_no}",
            if fresh { "fresh file" } else { "existing file" }
        );
        let r = run(
            dir.path(),
            &base,
            Countdown::new(Some(kind), mode, after),
            run_no,
        )
        .await;
        tally.runs += 1;
        tally.tripped += usize::from(r.tripped);
        tally.partial += usize::from(r.tripped && !r.acked.is_empty());
        tally.acked += r.acked.len();
        let mut seen: Vec<&[u8]> = Vec::new();
        for (name, image) in &r.images {
            if seen.contains(&image.as_slice()) {
                continue;
            }
            seen.push(image);
            tally.images += 1;
            let found = check_image(dir.path(), name, image, &r, &label).await;
            tally.stored_despite_error += found.stored_despite_error;
            tally.unfinished += usize::from(found.unfinished);
        }
    }
    eprintln!(
        "{kind:?} {mode:?} {}: {ops} ops in a healthy run ({} to open), countdowns \
         0..={last} step {step}: {tally:?} in {:?}",
        if fresh { "fresh" } else { "existing" },
        healthy.ops_to_open[kind as usize],
        started.elapsed()
    );
    assert!(tally.tripped > 0, "no countdown tripped");
    if let Span::Run { .. } = span {
        assert!(tally.partial > 0, "no run failed part way through");
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes() {
    sweep(Kind::Write, Mode::Sticky, false, Span::Run { runs: 36 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_syncs() {
    sweep(Kind::Sync, Mode::Sticky, false, Span::Run { runs: 40 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_resizes() {
    sweep(Kind::SetLen, Mode::Sticky, false, Span::Run { runs: 10 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults() {
    sweep(Kind::Write, Mode::Once, false, Span::Run { runs: 10 }).await;
    sweep(Kind::Sync, Mode::Once, false, Span::Run { runs: 12 }).await;
    sweep(Kind::SetLen, Mode::Once, false, Span::Run { runs: 10 }).await;
}

/// The first start: redb creates the file, then herald its tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_while_creating_the_file() {
    let mut unfinished = 0;
    for kind in [Kind::Write, Kind::Sync, Kind::SetLen] {
        unfinished += sweep(kind, Mode::Sticky, true, Span::Open).await.unfinished;
    }
    assert!(unfinished > 0, "no fault left a half-created file");
}

// ---- a change and its audit entry ----------------------------------------------------------

/// Under a disk that starts failing at any write, every admin change reopened from the file is
/// there with its audit entry, or neither is: they share one commit. Destinations stand for
/// every audited change (they all go through the same `write` path with the entry beside them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_and_its_audit_entry_are_kept_or_lost_together() {
    use herald_storage::{AuditEntry, CircuitRecord, DestinationRecord};
    let dir = scratch_dir();
    let base = base_file(dir.path()).await;
    let (mut kept, mut lost) = (0, 0);
    for after in (0..60).step_by(3) {
        let path = dir.path().join(format!("audit{after}.redb"));
        std::fs::write(&path, &base).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let backend = FaultyBackend {
            inner: FileBackend::new(file).unwrap(),
            countdown: Arc::new(Countdown::new(Some(Kind::Write), Mode::Sticky, after)),
            durable: Arc::default(),
        };
        let options = Options {
            cache_bytes: CACHE_BYTES,
            ..Options::default()
        };
        let Ok(store) = Store::open_with_backend(backend, options) else {
            continue; // failed while opening: nothing was changed
        };
        let mut acked = HashSet::new();
        for i in 0..8 {
            let name = format!("d{i}");
            let record = DestinationRecord {
                url: format!("https://example.com/{i}"),
                sources: vec!["*".into()],
                event_types: Vec::new(),
                channel: "webhook".into(),
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                previous_secrets: Vec::new(),
                config_secret_sha256: None,
                rate_limit_per_sec: None,
                enabled: true,
                disabled_reason: None,
                created_at_ms: 1,
                updated_at_ms: 1,
                from_config: false,
                circuit: CircuitRecord::default(),
                policy: herald_storage::DestinationPolicy::default(),
            };
            let audit = AuditEntry {
                at_ms: 1,
                actor: "test".into(),
                action: "destination.create".into(),
                subject: name.clone(),
                before: None,
                after: None,
            };
            if store
                .create_destination(name.clone(), record, audit)
                .await
                .is_ok()
            {
                acked.insert(name);
            }
        }
        store.close().await;
        drop(store);

        let store = Store::open(&path, Options::default()).unwrap();
        for i in 0..8 {
            let name = format!("d{i}");
            let stored = store.destination(name.clone()).await.unwrap().is_some();
            let (trail, _) = store
                .list_audit(Some(name.clone()), None, None, 10)
                .await
                .unwrap();
            assert_eq!(
                stored,
                !trail.is_empty(),
                "countdown {after}: {name} and its audit entry disagree"
            );
            if acked.contains(&name) {
                assert!(stored, "countdown {after}: acknowledged {name} lost");
            }
            if stored {
                kept += 1;
            } else {
                lost += 1;
            }
        }
        store.close().await;
    }
    assert!(
        kept > 0 && lost > 0,
        "the sweep exercised both: {kept} kept, {lost} lost"
    );
}
