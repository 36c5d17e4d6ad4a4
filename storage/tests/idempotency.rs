//! The idempotency guarantee through restarts, crashes and a damaged index.
//!
//! The guarantee (CONTRACT, `ingest.dedupe_window_secs`): a key accepted at time `t` is
//! remembered at least until `t + window`; a duplicate within it answers the first message's
//! id. The model test drives the store through its public API with random sequences of accepts
//! (one by one, or concurrently in one group commit, some of them late: committed after the
//! index sealed their time), erasures of a message's recipient, sweeps at `now - window`, time
//! jumping by minutes to days, clean restarts, crashes (the file copied while the store runs,
//! as `kill -9` leaves it) and damage to the sealed runs (their directory or some of their
//! entries removed), against a map of what was accepted when. Time is the messages' own: ids
//! and `received_at_ms` come from the model's clock, so six days take no time at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use herald_storage::{
    Accepted, DedupeKey, IdempotencyOptions, MessageId, MessageRecord, NewMessage, Options, Store,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use redb::{ReadableTable as _, TableDefinition};

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
const WINDOW: u64 = 7 * DAY;

/// Small buckets, so a few dozen messages make many runs.
fn options() -> Options {
    Options {
        cache_bytes: 4 << 20,
        idempotency: IdempotencyOptions {
            seal_keys: 4,
            seal_span_ms: HOUR,
            seal_lag_ms: 1_000,
        },
        ..Options::default()
    }
}

fn message(external: &str, at_ms: u64) -> NewMessage {
    NewMessage {
        id: MessageId::generate(at_ms),
        record: MessageRecord {
            source: Some("model".into()),
            external_id: Some(external.into()),
            event_type: None,
            content_type: None,
            recipient: Some(recipient(external)),
            channel: None,
            category: None,
            received_at_ms: at_ms,
            body_len: 2,
        },
        body: Bytes::from_static(b"{}"),
        dedupe_key: Some(DedupeKey::new("model", external)),
        destinations: Vec::new(),
        suppress: None,
    }
}

fn recipient(external: &str) -> herald_storage::Recipient {
    herald_storage::Recipient::parse(&format!("{external}@example.com")).unwrap()
}

/// A store on a file that can be closed, crashed and damaged.
struct Harness {
    dir: tempfile::TempDir,
    path: PathBuf,
    store: Option<Store>,
    generation: u32,
}

impl Harness {
    fn new() -> Self {
        let dir = common::scratch_dir();
        let path = dir.path().join("0.redb");
        let store = Store::open(&path, options()).unwrap();
        Self {
            dir,
            path,
            store: Some(store),
            generation: 0,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// Closes the store and lets go of the file.
    async fn close(&mut self) {
        let store = self.store.take().unwrap();
        store.close().await;
    }

    async fn restart(&mut self) {
        self.close().await;
        self.store = Some(Store::open(&self.path, options()).unwrap());
    }

    /// `kill -9`: the file as the running process leaves it (the writer may be sealing right
    /// now), opened by a new process; the old one never writes to it again.
    async fn crash(&mut self) {
        self.generation += 1;
        let image = self.dir.path().join(format!("{}.redb", self.generation));
        std::fs::copy(&self.path, &image).unwrap();
        self.close().await;
        self.path = image;
        self.store = Some(Store::open(&self.path, options()).unwrap());
    }

    /// Closes the store, lets `damage` change the file with redb directly, reopens it.
    async fn damage(&mut self, damage: impl FnOnce(&redb::WriteTransaction)) {
        self.close().await;
        {
            let db = redb::Database::create(&self.path).unwrap();
            let txn = db.begin_write().unwrap();
            damage(&txn);
            txn.commit().unwrap();
        }
        self.store = Some(Store::open(&self.path, options()).unwrap());
    }
}

const RUNS: TableDefinition<(u64, u128), u128> = TableDefinition::new("idempotency_runs");
const RUN_DIR: TableDefinition<u64, (u64, u64, u64)> = TableDefinition::new("idempotency_run_dir");

/// Removes every other entry of every run: the directory's counts no longer match.
fn drop_run_entries(txn: &redb::WriteTransaction) {
    let mut runs = txn.open_table(RUNS).unwrap();
    let mut n = 0;
    runs.retain(|_, _| {
        n += 1;
        n % 2 == 0
    })
    .unwrap();
}

/// Removes the runs' directory: every run is an orphan.
fn drop_run_dir(txn: &redb::WriteTransaction) {
    txn.open_table(RUN_DIR)
        .unwrap()
        .retain(|_, _| false)
        .unwrap();
}

fn sealed_runs(path: &Path) -> usize {
    let db = redb::Database::create(path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let dir = txn.open_table(RUN_DIR).unwrap();
    dir.iter().unwrap().count()
}

// ---- the model ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Time passes, then key `k` is submitted.
    Accept {
        key: u8,
        after_ms: u64,
    },
    /// Several submissions in one group commit (repeats among them are duplicates of each other).
    Burst(Vec<u8>),
    /// Key `k` arrives with a time `ago_ms` in the past: committed after its time was sealed.
    Late {
        key: u8,
        ago_ms: u64,
    },
    /// The recipient of key `k`'s message is erased: its message goes, its key must stay.
    Erase(u8),
    Sweep,
    Restart,
    Crash,
    DropRunEntries,
    DropRunDir,
}

fn op() -> impl Strategy<Value = Op> {
    let after = prop_oneof![
        4 => 0..120_000u64,        // within two minutes
        2 => 0..3 * HOUR,          // across buckets
        1 => 0..2 * DAY,           // across days
    ];
    prop_oneof![
        8 => (0..24u8, after).prop_map(|(key, after_ms)| Op::Accept { key, after_ms }),
        2 => proptest::collection::vec(0..24u8, 1..8).prop_map(Op::Burst),
        1 => (0..24u8, 2_000..HOUR).prop_map(|(key, ago_ms)| Op::Late { key, ago_ms }),
        1 => (0..24u8).prop_map(Op::Erase),
        2 => Just(Op::Sweep),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => Just(Op::DropRunEntries),
        1 => Just(Op::DropRunDir),
    ]
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    /// Key → (first message, accepted at).
    accepted: HashMap<u8, (MessageId, u64)>,
}

impl Model {
    /// Checks one answer: a key accepted within the window must be a duplicate of its first
    /// message; an older one may be either, but a duplicate names the first message.
    fn check(
        &mut self,
        key: u8,
        submitted: MessageId,
        at: u64,
        answer: Accepted,
    ) -> Result<(), TestCaseError> {
        match (self.accepted.get(&key).copied(), answer) {
            (Some((first, _)), Accepted::Duplicate(id)) => {
                prop_assert_eq!(id, first, "key {}", key);
            }
            (Some((first, when)), Accepted::New(id)) => {
                prop_assert!(
                    when + WINDOW < self.now,
                    "key {} accepted at {} (first {}) taken as new at {}",
                    key,
                    when,
                    first,
                    self.now
                );
                prop_assert_eq!(id, submitted);
                self.accepted.insert(key, (id, at));
            }
            (None, Accepted::New(id)) => {
                prop_assert_eq!(id, submitted);
                self.accepted.insert(key, (id, at));
            }
            (None, Accepted::Duplicate(id)) => {
                prop_assert!(
                    false,
                    "key {} never accepted, yet a duplicate of {}",
                    key,
                    id
                );
            }
        }
        Ok(())
    }
}

async fn step(h: &mut Harness, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Accept { key, after_ms } => {
            model.now += after_ms;
            let msg = message(&key.to_string(), model.now);
            let id = msg.id;
            let answer = h.store().insert_message_async(msg).await.unwrap();
            model.check(*key, id, model.now, answer)?;
        }
        Op::Burst(keys) => {
            model.now += 1;
            let msgs: Vec<NewMessage> = keys
                .iter()
                .map(|k| message(&k.to_string(), model.now))
                .collect();
            // Enqueued back to back, so the writer takes them in this order, mostly in one
            // group commit.
            let answers: Vec<_> = msgs
                .iter()
                .map(|m| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    h.store().insert_message(
                        m.clone(),
                        Box::new(move |outcome| {
                            let _ = tx.send(outcome);
                        }),
                    );
                    rx
                })
                .collect();
            for ((key, msg), answer) in keys.iter().zip(&msgs).zip(answers) {
                model.check(*key, msg.id, model.now, answer.await.unwrap().unwrap())?;
            }
        }
        Op::Late { key, ago_ms } => {
            let at = model.now.saturating_sub(*ago_ms).max(T0);
            let msg = message(&key.to_string(), at);
            let id = msg.id;
            let answer = h.store().insert_message_async(msg).await.unwrap();
            model.check(*key, id, at, answer)?;
        }
        Op::Erase(key) => {
            let at_ms = model.now;
            let audit = move |alias: &herald_storage::Recipient| herald_storage::AuditEntry {
                at_ms,
                actor: "model".into(),
                action: "subject.erase".into(),
                subject: alias.as_str().to_owned(),
                before: None,
                after: None,
            };
            h.store()
                .erase_subject(recipient(&key.to_string()), audit)
                .await
                .unwrap();
        }
        Op::Sweep => {
            h.store()
                .sweep_idempotency(model.now.saturating_sub(WINDOW))
                .await
                .unwrap();
        }
        Op::Restart => h.restart().await,
        Op::Crash => h.crash().await,
        Op::DropRunEntries => h.damage(drop_run_entries).await,
        Op::DropRunDir => h.damage(drop_run_dir).await,
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut model = Model {
        now: T0,
        ..Model::default()
    };
    for op in &ops {
        step(&mut h, &mut model, op).await?;
    }
    // At the end, after a crash: every key within the window answers its first message.
    h.crash().await;
    let keys: Vec<(u8, MessageId, u64)> = model
        .accepted
        .iter()
        .map(|(k, (id, at))| (*k, *id, *at))
        .collect();
    for (key, first, at) in keys {
        if at + WINDOW >= model.now {
            let answer = h
                .store()
                .insert_message_async(message(&key.to_string(), model.now))
                .await
                .unwrap();
            prop_assert_eq!(answer, Accepted::Duplicate(first), "key {}", key);
        }
    }
    h.store().close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn duplicates_are_recognised_through_restarts_crashes_and_damage(
        ops in proptest::collection::vec(op(), 1..48)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}

/// The case: an id accepted six days ago, with hundreds of buckets sealed since, then
/// restarts, crashes and sweeps, still answers its first message; after the window it is
/// forgotten, and so is every run of its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_an_id_accepted_six_days_earlier_is_still_recognised() {
    let mut h = Harness::new();
    let first = message("evt_first", T0);
    assert_eq!(
        h.store().insert_message_async(first.clone()).await.unwrap(),
        Accepted::New(first.id)
    );
    let mut now = T0;
    let mut n = 0;
    while now < T0 + 6 * DAY {
        now += 20 * 60_000;
        for _ in 0..3 {
            n += 1;
            let msg = message(&format!("evt_{n}"), now);
            assert_eq!(
                h.store().insert_message_async(msg.clone()).await.unwrap(),
                Accepted::New(msg.id)
            );
        }
        h.store().sweep_idempotency(now - WINDOW).await.unwrap();
        if now % DAY < 20 * 60_000 {
            h.restart().await;
        }
        if now % (2 * DAY) < 20 * 60_000 {
            h.crash().await;
        }
    }
    h.restart().await;
    let runs = sealed_runs_of(&mut h).await;
    assert!(runs > 200, "{runs} runs sealed in six days");
    let again = message("evt_first", now);
    assert_eq!(
        h.store().insert_message_async(again).await.unwrap(),
        Accepted::Duplicate(first.id)
    );
    // Two more days: the first key's run is swept, the key is new again.
    now += 2 * DAY;
    let late = message("evt_late", now);
    h.store().insert_message_async(late).await.unwrap();
    let swept = h.store().sweep_idempotency(now - WINDOW).await.unwrap();
    assert!(swept > 0);
    let after = message("evt_first", now);
    assert_eq!(
        h.store().insert_message_async(after.clone()).await.unwrap(),
        Accepted::New(after.id)
    );
    h.store().close().await;
}

async fn sealed_runs_of(h: &mut Harness) -> usize {
    h.close().await;
    let runs = sealed_runs(&h.path);
    h.store = Some(Store::open(&h.path, options()).unwrap());
    runs
}
