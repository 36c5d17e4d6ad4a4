//! What only PostgreSQL has: several nodes on one database. Two `Store`s with different node
//! names stand for two herald processes: claims (leases) keep each delivery in flight on one
//! node at a time, a killed node's claims are taken once their lease ends, and the changes one
//! node commits reach the other through `LISTEN`/`NOTIFY`.
//!
//! Skipped (with a message) without the test cluster; see `herald_storage::test_postgres`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use herald_storage::test_postgres::TestDatabase;
use herald_storage::{
    AttemptUpdate, Change, CircuitRecord, DeliveryKey, DestinationPolicy, DestinationRecord,
    MessageId, MessageRecord, NewMessage, Outcome, PostgresOptions, Store,
};

/// Node `node` on `db`, whose claims last `lease`.
async fn node(db: &TestDatabase, node: &str, lease: Duration) -> Store {
    let mut options = PostgresOptions::new(db.url.clone(), node);
    options.lease_margin = lease;
    Store::open_postgres(options).await.unwrap()
}

fn message(n: u64, destinations: &[&str]) -> NewMessage {
    let at_ms = 1_000 + n;
    NewMessage {
        id: MessageId::generate(at_ms),
        record: MessageRecord {
            source: Some("s".into()),
            external_id: Some(n.to_string()),
            event_type: Some("e".into()),
            content_type: Some("application/json".into()),
            recipient: None,
            channel: None,
            category: None,
            received_at_ms: at_ms,
            body_len: 2,
        },
        body: Bytes::from_static(b"{}"),
        dedupe_key: None,
        destinations: destinations.iter().map(ToString::to_string).collect(),
        suppress: None,
    }
}

fn destination() -> DestinationRecord {
    DestinationRecord {
        url: "https://example.com/hook".into(),
        sources: vec!["*".into()],
        event_types: Vec::new(),
        channel: "webhook".into(),
        secret: "whsec_1".into(),
        previous_secrets: Vec::new(),
        config_secret_sha256: None,
        rate_limit_per_sec: None,
        enabled: true,
        disabled_reason: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        from_config: false,
        circuit: CircuitRecord::default(),
        policy: DestinationPolicy::default(),
    }
}

/// Accepts `n` messages to `d` (through `store`); their ids, oldest first.
async fn accept(store: &Store, n: u64) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let msg = message(i, &["d"]);
        ids.push(msg.id);
        store.insert_message_async(msg).await.unwrap();
    }
    ids
}

/// What `store` claims of `d`'s work due by `now_ms`, leaving out `skip`.
async fn claim(store: &Store, now_ms: u64, limit: usize, skip: &[MessageId]) -> Vec<MessageId> {
    store
        .due_deliveries(
            "d".into(),
            now_ms,
            limit,
            skip.iter().copied().collect::<HashSet<_>>(),
            Duration::ZERO, // the claim lasts the node's lease margin
        )
        .await
        .unwrap()
        .into_iter()
        .map(|due| due.key.message)
        .collect()
}

async fn record_attempt(store: &Store, update: AttemptUpdate) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.record_attempt(
        update,
        Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }),
    );
    rx.await.unwrap().unwrap()
}

fn retry(message: MessageId, now_ms: u64, at_ms: u64) -> AttemptUpdate {
    AttemptUpdate {
        key: DeliveryKey {
            message,
            destination: "d".into(),
        },
        attempt: None,
        outcome: Outcome::Retry { at_ms },
        destination: None,
        now_ms,
    }
}

/// The next change `changes` hears that `wanted` accepts, within a few seconds.
async fn hear(
    changes: &mut tokio::sync::broadcast::Receiver<Change>,
    wanted: impl Fn(&Change) -> bool,
) -> Change {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = changes.recv().await.unwrap();
            if wanted(&change) {
                return change;
            }
        }
    })
    .await
    .expect("the change is heard within 5 s")
}

/// A claim is its node's until the lease ends or the node records the outcome; the node
/// itself may take it again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_its_nodes_until_its_outcome_or_its_lease_ends() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let lease = Duration::from_secs(10);
    let a = node(&db, "node-a", lease).await;
    let b = node(&db, "node-b", lease).await;
    a.put_destination("d".into(), destination()).await.unwrap();
    let ids = accept(&a, 3).await;
    let (m0, m1, m2) = (ids[0], ids[1], ids[2]);

    assert_eq!(claim(&a, 2_000, 1, &[]).await, [m0]);
    assert_eq!(
        claim(&b, 2_000, 10, &[]).await,
        [m1, m2],
        "A's claim is A's"
    );
    assert_eq!(claim(&a, 2_000, 10, &[]).await, [m0], "and B's are B's");
    assert_eq!(claim(&a, 2_000, 10, &[m0]).await, [], "what A skips");
    assert_eq!(
        claim(&b, 2_001, 10, &[]).await,
        [m1, m2],
        "a node takes its own again"
    );
    // A claimed m0 at 2 000 for 10 s.
    assert_eq!(claim(&b, 11_999, 10, &[]).await, [m1, m2]);
    assert_eq!(
        claim(&b, 12_000, 10, &[]).await,
        [m0, m1, m2],
        "A's lease ended"
    );

    // B now holds all three until 22 000. Its outcome clears its claim at once.
    assert!(record_attempt(&b, retry(m1, 12_500, 12_600)).await);
    assert_eq!(claim(&a, 12_600, 10, &[]).await, [m1]);
    // A recording an outcome for a delivery B holds (A's lease had ended and B took it over)
    // leaves B's claim alone.
    assert!(record_attempt(&a, retry(m0, 12_700, 12_700)).await);
    assert_eq!(claim(&a, 12_700, 10, &[]).await, [m1], "m0 is still B's");
    // Earliest due first: m2 (1 002), m1 (12 600), m0 (12 700).
    assert_eq!(
        claim(&a, 22_000, 10, &[]).await,
        [m2, m1, m0],
        "B's leases ended"
    );
}

/// A node killed while it holds claims: the others take them once the lease ends, by the
/// clock; the same node restarted takes its own back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_claims_are_taken_once_their_lease_ends() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let now = || {
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let lease = Duration::from_millis(600);
    let a = node(&db, "node-a", lease).await;
    let b = node(&db, "node-b", lease).await;
    a.put_destination("d".into(), destination()).await.unwrap();
    let ids = accept(&a, 2).await;
    assert_eq!(claim(&a, now(), 10, &[]).await, ids);
    drop(a); // killed: nothing recorded, nothing released
    assert_eq!(claim(&b, now(), 10, &[]).await, []);
    let restarted = node(&db, "node-a", lease).await;
    assert_eq!(
        claim(&restarted, now(), 10, &[]).await,
        ids,
        "its own claims"
    );
    drop(restarted);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(claim(&b, now(), 10, &[]).await, ids, "after the lease");
}

/// Two nodes claiming the same destination's work at once never both get a delivery, and
/// between them get all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_return_the_same_delivery() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let lease = Duration::from_secs(60);
    let a = node(&db, "node-a", lease).await;
    let b = node(&db, "node-b", lease).await;
    a.put_destination("d".into(), destination()).await.unwrap();
    let ids = accept(&a, 300).await;
    // Each node claims in small reads, as its dispatcher does, skipping what it holds.
    let drain = |store: Store| {
        tokio::spawn(async move {
            let mut held: Vec<MessageId> = Vec::new();
            let mut reads = 0;
            loop {
                let got = claim(&store, 5_000, 7, &held).await;
                if got.is_empty() {
                    return (held, reads);
                }
                reads += 1;
                held.extend(got);
            }
        })
    };
    let (from_a, from_b) = tokio::join!(drain(a.clone()), drain(b.clone()));
    let ((from_a, reads_a), (from_b, reads_b)) = (from_a.unwrap(), from_b.unwrap());
    let mut all: Vec<MessageId> = from_a.iter().chain(&from_b).copied().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "a delivery claimed by both nodes");
    assert_eq!(all, ids, "every delivery claimed");
    assert!(
        reads_a > 0 && reads_b > 0,
        "both nodes claimed: {reads_a}, {reads_b}"
    );
}

/// What one node changes, the other hears: a circuit opened by an attempt's outcome (and
/// then holds there), a destination changed or deleted through the API, re-queued work. A
/// node never hears its own changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_node_hears_destination_changes_and_requeued_work() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let lease = Duration::from_secs(60);
    let a = node(&db, "node-a", lease).await;
    let b = node(&db, "node-b", lease).await;
    let mut heard_by_a = a.changes();
    let mut heard_by_b = b.changes();
    let is_destination = |c: &Change| matches!(c, Change::Destination(_));

    a.put_destination("d".into(), destination()).await.unwrap();
    assert_eq!(
        hear(&mut heard_by_b, is_destination).await,
        Change::Destination("d".into())
    );
    let ids = accept(&a, 1).await;

    // A's dispatcher opens the circuit with a failed attempt's outcome.
    let mut copy = destination();
    copy.circuit = CircuitRecord {
        open: true,
        consecutive_failures: 5,
        opened_at_ms: Some(2_000),
    };
    let update = AttemptUpdate {
        destination: Some(("d".into(), copy.clone())),
        ..retry(ids[0], 2_000, 3_000)
    };
    assert!(record_attempt(&a, update).await);
    assert_eq!(
        hear(&mut heard_by_b, is_destination).await,
        Change::Destination("d".into())
    );
    let seen_by_b = b.destination("d".into()).await.unwrap().unwrap();
    assert_eq!(
        seen_by_b.circuit, copy.circuit,
        "B reloads the open circuit"
    );

    // Work re-queued on B wakes A.
    let dead = AttemptUpdate {
        outcome: Outcome::Dead,
        ..retry(ids[0], 3_000, 0)
    };
    assert!(record_attempt(&b, dead).await);
    let key = DeliveryKey {
        message: ids[0],
        destination: "d".into(),
    };
    assert_eq!(b.requeue(vec![key], 4_000, |_| None).await.unwrap(), 1);
    assert_eq!(
        hear(&mut heard_by_a, |c| *c == Change::Work).await,
        Change::Work
    );

    let changed = b
        .update_destination(
            "d".into(),
            |r| r.secret = "whsec_2".into(),
            None::<fn(&DestinationRecord, &DestinationRecord) -> herald_storage::AuditEntry>,
        )
        .await
        .unwrap();
    assert!(changed.is_some());
    assert_eq!(
        hear(&mut heard_by_a, is_destination).await,
        Change::Destination("d".into())
    );

    // Neither heard itself: A heard only what B sent, and B only what A sent.
    assert!(heard_by_b.try_recv().is_err(), "B heard its own changes");
    assert!(heard_by_a.try_recv().is_err(), "A heard its own changes");
}

/// Two nodes recording outcomes for both of two destinations at once (circuits included),
/// while the API resends the same messages: every write locks destinations before deliveries,
/// each in key order, so none waits on another in a cycle. PostgreSQL would break a deadlock
/// by failing one transaction, which the writer would then retry job by job: its statistics
/// show whether any happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_nodes_never_deadlock() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let lease = Duration::from_secs(60);
    let a = node(&db, "node-a", lease).await;
    let b = node(&db, "node-b", lease).await;
    for name in ["d", "e"] {
        a.put_destination(name.into(), destination()).await.unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..120 {
        let msg = message(i, &["d", "e"]);
        ids.push(msg.id);
        a.insert_message_async(msg).await.unwrap();
    }
    // Node `me` fails every attempt of its half, each with a new circuit for its destination,
    // in an order that crosses the other node's: A takes d then e, B e then d.
    let record = |store: Store, names: [&'static str; 2], half: usize| {
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == half) {
                for name in names {
                    let mut copy = destination();
                    copy.circuit.consecutive_failures = u32::try_from(i).unwrap();
                    let update = AttemptUpdate {
                        key: DeliveryKey {
                            message: *id,
                            destination: name.into(),
                        },
                        destination: Some((name.into(), copy)),
                        ..retry(*id, 2_000, 3_000)
                    };
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    store.record_attempt(
                        update,
                        Box::new(move |outcome| {
                            let _ = tx.send(outcome);
                        }),
                    );
                    answers.push(rx);
                }
            }
            let mut live = 0;
            for answer in answers {
                live += usize::from(answer.await.unwrap().unwrap());
            }
            live
        })
    };
    let resend_all = |store: Store| {
        let ids = ids.clone();
        tokio::spawn(async move {
            for id in ids.iter().rev() {
                let audit = |_| herald_storage::AuditEntry {
                    at_ms: 2_500,
                    actor: "test".into(),
                    action: "message.resend".into(),
                    subject: "m".into(),
                    before: None,
                    after: None,
                };
                store.resend(*id, None, 2_500, audit).await.unwrap();
            }
        })
    };
    let (from_a, from_b, resends) = tokio::join!(
        record(a.clone(), ["d", "e"], 0),
        record(b.clone(), ["e", "d"], 1),
        resend_all(b.clone()),
    );
    resends.unwrap();
    assert_eq!(
        from_a.unwrap() + from_b.unwrap(),
        240,
        "every outcome taken"
    );

    // The statistics are flushed when a session goes idle: give them a moment.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadlocks: i64 = client
        .query_one(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deadlocks, 0);
}

/// A queue's next claimable time, as each node sees it: another node's claims count from when
/// their lease ends, a node's own from when they are due; an outcome moves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_due_time_counts_the_other_nodes_claims_from_their_lease_end() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let lease = Duration::from_secs(10);
    let a = node(&db, "node-a", lease).await;
    let b = node(&db, "node-b", lease).await;
    a.put_destination("d".into(), destination()).await.unwrap();
    let next = |store: Store| async move {
        let next = store.next_due(vec!["d".into(), "e".into()]).await.unwrap();
        assert_eq!(next[1], ("e".to_owned(), None));
        next[0].1
    };
    assert_eq!(next(a.clone()).await, None, "an empty queue");
    let ids = accept(&a, 3).await;
    assert_eq!(next(b.clone()).await, Some(1_000));
    assert_eq!(claim(&a, 2_000, 2, &[]).await, ids[..2]);
    assert_eq!(next(a.clone()).await, Some(1_000), "A's own, in flight");
    assert_eq!(
        next(b.clone()).await,
        Some(1_002),
        "the one A did not claim"
    );
    assert_eq!(claim(&a, 2_000, 10, &[]).await, ids);
    assert_eq!(next(b.clone()).await, Some(12_000), "when A's lease ends");
    assert!(record_attempt(&a, retry(ids[1], 2_500, 4_000)).await);
    assert_eq!(next(b.clone()).await, Some(4_000), "A's retry, unclaimed");

    // Past the first deliveries looked at, the next one's due time stands for the rest.
    for i in 0..70 {
        a.insert_message_async(message(100 + i, &["d"]))
            .await
            .unwrap();
    }
    assert_eq!(claim(&a, 3_000, 100, &[]).await.len(), 72);
    // All 72 are A's until 13 000; the 65th by due time (1 162) stands for the rest: earlier
    // than the exact answer (the retry at 4 000), never later.
    assert_eq!(next(b.clone()).await, Some(1_162));
}
