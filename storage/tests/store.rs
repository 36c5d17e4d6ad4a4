//! The store through its public API, on every backend (`common::backends()`: a redb file in
//! a temporary directory, and a fresh PostgreSQL database when the test cluster is there), from
//! the same code: both must answer alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use herald_storage::{
    Accepted, Attempt, AttemptUpdate, AuditEntry, DeadFilter, DedupeKey, DeliveryKey,
    DeliveryRecord, DeliveryStatus, DestinationRecord, IdempotencyOptions, MessageFilter,
    MessageId, MessageRecord, NewMessage, Options, Outcome, StorageError, Store,
};

fn message(source: &str, external: &str, at_ms: u64, destinations: &[&str]) -> NewMessage {
    NewMessage {
        id: MessageId::generate(at_ms),
        record: MessageRecord {
            source: Some(source.into()),
            external_id: Some(external.into()),
            event_type: Some(format!("{source}.event")),
            content_type: Some("application/json".into()),
            recipient: None,
            channel: None,
            category: None,
            received_at_ms: at_ms,
            body_len: 2,
        },
        body: Bytes::from_static(b"{}"),
        dedupe_key: Some(DedupeKey::new(source, external)),
        destinations: destinations.iter().map(ToString::to_string).collect(),
        suppress: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_share_commits_and_all_survive_reopen() {
    for backend in common::backends().await {
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = commits.clone();
        let store = backend
            .open(Options {
                observer: Some(std::sync::Arc::new(move |_| {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                })),
                ..Options::default()
            })
            .await;

        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .insert_message_async(message(
                            "src",
                            &format!("ext-{i}"),
                            1_000 + i,
                            &["d1"],
                        ))
                        .await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Accepted::New(id) => ids.push(id),
                Accepted::Duplicate(_) => panic!("unique ids reported as duplicates"),
            }
        }
        let commits = commits.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            commits < 500,
            "{}: expected group commits, saw {commits} commits for 500 writes",
            backend.name
        );
        store.close().await;
        drop(store);

        let store = backend.open(Options::default()).await;
        for id in ids {
            let view = store
                .message(id)
                .await
                .unwrap()
                .expect("accepted message is stored");
            assert_eq!(view.body.as_deref(), Some(&b"{}"[..]));
            assert_eq!(view.deliveries.len(), 1);
            assert_eq!(view.deliveries[0].0, "d1");
            assert_eq!(view.deliveries[0].1.status, DeliveryStatus::Pending);
        }
    }
}

/// The nested directory of a new redb file is created.
#[tokio::test]
async fn a_new_file_gets_its_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/herald.redb");
    let store = Store::open(&path, Options::default()).unwrap();
    store.close().await;
    assert!(path.is_file());
}

#[tokio::test]
async fn a_repeated_key_is_a_duplicate_even_within_one_batch() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        let first = message("s", "same", 10, &[]);
        let second = message("s", "same", 11, &[]);
        let other_source = message("t", "same", 12, &[]);
        let (a, b, c) = tokio::join!(
            store.insert_message_async(first.clone()),
            store.insert_message_async(second),
            store.insert_message_async(other_source.clone()),
        );
        assert_eq!(a.unwrap(), Accepted::New(first.id));
        assert_eq!(b.unwrap(), Accepted::Duplicate(first.id));
        assert_eq!(c.unwrap(), Accepted::New(other_source.id));
        let all = store
            .list_messages(MessageFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(all.items.len(), 2, "a duplicate stores nothing");
    }
}

#[tokio::test]
async fn listing_filters_and_paginates_newest_first() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        let mut ids = Vec::new();
        for i in 0..7 {
            let source = if i % 2 == 0 { "even" } else { "odd" };
            let msg = message(source, &i.to_string(), 100 + i, &["d"]);
            ids.push(msg.id);
            store.insert_message_async(msg).await.unwrap();
        }
        ids.reverse();

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_messages(MessageFilter::default(), after, 3)
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|m| m.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ids);

        let odd = store
            .list_messages(
                MessageFilter {
                    source: Some("odd".into()),
                    ..MessageFilter::default()
                },
                None,
                50,
            )
            .await
            .unwrap();
        assert_eq!(odd.items.len(), 3);
        assert!(odd.next.is_none());
        assert!(
            odd.items
                .iter()
                .all(|m| m.record.source.as_deref() == Some("odd"))
        );

        let dead = store
            .list_messages(
                MessageFilter {
                    status: Some(DeliveryStatus::Dead),
                    ..MessageFilter::default()
                },
                None,
                50,
            )
            .await
            .unwrap();
        assert!(dead.items.is_empty());
        let pending = store
            .list_messages(
                MessageFilter {
                    status: Some(DeliveryStatus::Pending),
                    event_type: Some("even.event".into()),
                    ..MessageFilter::default()
                },
                None,
                50,
            )
            .await
            .unwrap();
        assert_eq!(pending.items.len(), 4);
    }
}

#[tokio::test]
async fn sweeping_forgets_only_old_keys() {
    for backend in common::backends().await {
        // redb: seal whatever is a second older than the newest key.
        let options = Options {
            idempotency: IdempotencyOptions {
                seal_keys: 1_000,
                seal_span_ms: 1_000,
                seal_lag_ms: 1_000,
            },
            ..Options::default()
        };
        let store = backend.open(options).await;
        let old = message("s", "old", 1_000, &[]);
        let new = message("s", "new", 5_000, &[]);
        store.insert_message_async(old).await.unwrap();
        store.insert_message_async(new.clone()).await.unwrap();
        let early = store.sweep_idempotency(3_999).await.unwrap();
        if backend.name == "redb" {
            // The old key is sealed in a run spanning [0, 4 s): a sweep before its end keeps
            // it. (PostgreSQL forgets each key on its own.)
            assert_eq!(early, 0);
        }
        assert_eq!(
            early + store.sweep_idempotency(4_000).await.unwrap(),
            1,
            "{}",
            backend.name
        );
        assert!(matches!(
            store
                .insert_message_async(message("s", "old", 6_000, &[]))
                .await
                .unwrap(),
            Accepted::New(_)
        ));
        assert_eq!(
            store
                .insert_message_async(message("s", "new", 6_000, &[]))
                .await
                .unwrap(),
            Accepted::Duplicate(new.id)
        );
    }
}

#[tokio::test]
async fn writes_after_close_fail_cleanly() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        assert!(store.is_ready().await);
        store.close().await;
        let err = store
            .insert_message_async(message("s", "late", 1, &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Closed), "{err}");
        assert!(!store.is_ready().await);
    }
}

/// redb writes its magic number last when it creates a file, so a crash while it does leaves a
/// file it refuses ever after. The store creates its file under a temporary name and renames it
/// into place when redb is done: a crash leaves only the temporary file, which the next start
/// replaces. (`tests/faults.rs` produces such files with real injected faults.)
#[tokio::test]
async fn a_file_left_half_created_by_a_crash_does_not_stop_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    // What a crash after redb sized the file, before it wrote its header, leaves.
    let unfinished = vec![0; 64 * 1024];

    let in_place = dir.path().join("in-place.redb");
    std::fs::write(&in_place, &unfinished).unwrap();
    let err = Store::open(&in_place, Options::default()).unwrap_err();
    assert!(err.to_string().contains("Not a redb database"), "{err}");

    let path = dir.path().join("herald.redb");
    let temporary = dir.path().join("herald.redb.creating");
    std::fs::write(&temporary, &unfinished).unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    assert!(!temporary.exists(), "the unfinished file is replaced");
    let msg = message("s", "first", 1_000, &[]);
    store.insert_message_async(msg.clone()).await.unwrap();
    store.close().await;
    drop(store);
    let store = Store::open(&path, Options::default()).unwrap();
    assert!(store.message(msg.id).await.unwrap().is_some());
    assert!(!temporary.exists(), "an existing file is opened in place");
}

fn destination(secret: &str) -> herald_storage::DestinationRecord {
    herald_storage::DestinationRecord {
        url: "https://example.com/hook".into(),
        sources: vec!["*".into()],
        event_types: Vec::new(),
        channel: "webhook".into(),
        secret: secret.into(),
        previous_secrets: Vec::new(),
        config_secret_sha256: None,
        rate_limit_per_sec: None,
        enabled: true,
        disabled_reason: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        from_config: false,
        circuit: herald_storage::CircuitRecord::default(),
        policy: herald_storage::DestinationPolicy::default(),
    }
}

async fn record_attempt(store: &Store, update: herald_storage::AttemptUpdate) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.record_attempt(
        update,
        Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }),
    );
    rx.await.unwrap().unwrap()
}

/// The dispatcher sends its copy of the destination with an attempt's outcome; the API may have
/// changed or deleted the destination while the attempt was in flight. Found by the model test
/// (`tests/model.rs`): the copy used to be written whole.
#[tokio::test]
async fn an_attempt_neither_undoes_an_api_change_nor_resurrects_a_deleted_destination() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        let dispatchers_copy = destination("whsec_old");
        store
            .put_destination("d".into(), dispatchers_copy.clone())
            .await
            .unwrap();
        let msg = message("s", "1", 1_000, &["d"]);
        store.insert_message_async(msg.clone()).await.unwrap();
        let failed = |now_ms| {
            let mut copy = dispatchers_copy.clone();
            copy.circuit.consecutive_failures = 1;
            AttemptUpdate {
                key: DeliveryKey {
                    message: msg.id,
                    destination: "d".into(),
                },
                attempt: None,
                outcome: Outcome::Retry { at_ms: now_ms },
                destination: Some(("d".into(), copy)),
                now_ms,
            }
        };

        // The secret is rotated through the API; then an attempt started before completes.
        store
            .update_destination(
                "d".into(),
                |r| r.secret = "whsec_new".into(),
                None::<fn(&DestinationRecord, &DestinationRecord) -> AuditEntry>,
            )
            .await
            .unwrap();
        assert!(record_attempt(&store, failed(2_000)).await);
        let stored = store.destination("d".into()).await.unwrap().unwrap();
        assert_eq!(stored.secret, "whsec_new", "the rotation stays");
        assert_eq!(
            stored.circuit.consecutive_failures, 1,
            "the circuit is taken"
        );

        // Deleted through the API; then an attempt started before completes.
        assert!(
            store
                .delete_destination("d".into(), 3_000, |_| note(3_000))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            !record_attempt(&store, failed(4_000)).await,
            "its delivery is dead"
        );
        assert_eq!(store.destination("d".into()).await.unwrap(), None);
        assert!(store.destinations().await.unwrap().is_empty());
    }
}

/// A DLQ retry re-queues what is in the DLQ; a discarded delivery (still `dead` in its
/// message's history) is not. Found by the model test: it used to be re-queued.
#[tokio::test]
async fn a_discarded_delivery_is_not_retried() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        let msg = message("s", "1", 1_000, &["d"]);
        store.insert_message_async(msg.clone()).await.unwrap();
        let key = DeliveryKey {
            message: msg.id,
            destination: "d".into(),
        };
        let dead = AttemptUpdate {
            key: key.clone(),
            attempt: None,
            outcome: Outcome::Dead,
            destination: None,
            now_ms: 2_000,
        };
        assert!(record_attempt(&store, dead).await);
        assert!(store.discard(key.clone(), note(3_000)).await.unwrap());
        assert_eq!(store.dead(key.clone()).await.unwrap().map(|d| d.key), None);
        assert_eq!(
            store
                .requeue(vec![key.clone()], 3_000, |_| None)
                .await
                .unwrap(),
            0
        );
        let view = store.message(msg.id).await.unwrap().unwrap();
        assert_eq!(view.deliveries[0].1.status, DeliveryStatus::Dead);
        assert_eq!(store.queued("d".into()).await.unwrap(), 0);
    }
}

/// An audit entry for the admin operations these tests make.
fn note(at_ms: u64) -> AuditEntry {
    AuditEntry {
        at_ms,
        actor: "test".into(),
        action: "test".into(),
        subject: "d".into(),
        before: None,
        after: None,
    }
}

fn key(message: MessageId, destination: &str) -> DeliveryKey {
    DeliveryKey {
        message,
        destination: destination.into(),
    }
}

/// An outcome for `key` at `now_ms`; with `began`, of an attempt that began then.
fn outcome(key: &DeliveryKey, began: Option<u64>, outcome: Outcome, now_ms: u64) -> AttemptUpdate {
    AttemptUpdate {
        key: key.clone(),
        attempt: began.map(|at_ms| Attempt {
            at_ms,
            status_code: Some(500),
            error: None,
            duration_ms: 1,
            response_body: None,
        }),
        outcome,
        destination: None,
        now_ms,
    }
}

async fn delivery(store: &Store, key: &DeliveryKey) -> DeliveryRecord {
    let view = store.message(key.message).await.unwrap().unwrap();
    view.deliveries
        .into_iter()
        .find(|(name, _)| *name == key.destination)
        .map(|(_, record)| record)
        .expect("the delivery exists")
}

/// Collects what the audit callbacks were told.
fn audit_log() -> (Arc<Mutex<Vec<usize>>>, impl Fn(usize) -> AuditEntry + Clone) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    (log, move |n| {
        seen.lock().unwrap().push(n);
        note(4_000)
    })
}

/// A deleted destination's live deliveries go to the DLQ (its finished ones stay as they
/// are); they can be retried only once a destination of that name exists again.
#[tokio::test]
async fn deleting_a_destination_sends_its_live_deliveries_to_the_dlq() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        for name in ["d", "e"] {
            store
                .put_destination(name.into(), destination("whsec_1"))
                .await
                .unwrap();
        }
        let m1 = message("s", "1", 1_000, &["d", "e"]);
        let m2 = message("s", "2", 1_001, &["d"]);
        for m in [&m1, &m2] {
            store.insert_message_async(m.clone()).await.unwrap();
        }
        let (m1d, m1e, m2d) = (key(m1.id, "d"), key(m1.id, "e"), key(m2.id, "d"));
        assert!(
            record_attempt(
                &store,
                outcome(&m2d, Some(1_500), Outcome::Succeeded, 1_500)
            )
            .await
        );
        let retry = Outcome::Retry { at_ms: 5_000 };
        assert!(record_attempt(&store, outcome(&m1d, Some(1_600), retry, 1_600)).await);

        let deleted = store
            .delete_destination("d".into(), 3_000, |_| note(3_000))
            .await
            .unwrap();
        assert_eq!(deleted, Some(destination("whsec_1")), "{}", backend.name);
        let killed = delivery(&store, &m1d).await;
        assert_eq!(
            (killed.status, killed.next_attempt_at_ms, killed.dead_at_ms),
            (DeliveryStatus::Dead, None, Some(3_000))
        );
        assert_eq!(killed.reason.as_deref(), Some("destination deleted"));
        assert_eq!(killed.attempts.len(), 1, "its history stays");
        assert_eq!(
            delivery(&store, &m2d).await.status,
            DeliveryStatus::Succeeded
        );
        assert_eq!(delivery(&store, &m1e).await.status, DeliveryStatus::Pending);
        assert_eq!(store.queued("d".into()).await.unwrap(), 0);
        assert_eq!(store.queued("e".into()).await.unwrap(), 1);
        assert_eq!(
            store.dead_keys(DeadFilter::default()).await.unwrap(),
            std::slice::from_ref(&m1d)
        );
        let letter = store.dead(m1d.clone()).await.unwrap().unwrap();
        assert_eq!(
            (letter.dead_at_ms, letter.message),
            (3_000, m1.record.clone())
        );
        assert!(
            store
                .delete_destination("d".into(), 3_000, |_| note(3_000))
                .await
                .unwrap()
                .is_none()
        );

        // Nothing would read a deleted destination's queue: the retry waits for it.
        let (log, audit) = audit_log();
        let requeue = || {
            let (store, audit) = (store.clone(), audit.clone());
            let keys = vec![m1d.clone()];
            async move { store.requeue(keys, 4_000, move |n| Some(audit(n))).await }
        };
        assert_eq!(requeue().await.unwrap(), 0);
        store
            .put_destination("d".into(), destination("whsec_2"))
            .await
            .unwrap();
        assert_eq!(requeue().await.unwrap(), 1);
        assert_eq!(requeue().await.unwrap(), 0, "no longer in the DLQ");
        assert_eq!(
            *log.lock().unwrap(),
            [0, 1, 0],
            "each audit is told its count"
        );
        let back = delivery(&store, &m1d).await;
        assert_eq!(
            (back.status, back.next_attempt_at_ms, back.round_attempts),
            (DeliveryStatus::Pending, Some(4_000), 0)
        );
        assert_eq!((back.dead_at_ms, back.reason), (None, None));
        let due = store
            .due_deliveries(
                "d".into(),
                4_000,
                10,
                HashSet::new(),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].key.clone(), due[0].due_at_ms), (m1d.clone(), 4_000));
    }
}

/// A resend queues a fresh round whatever the delivery's state; an attempt that began before
/// the resend joins the history without using up that round.
#[tokio::test]
async fn a_resend_queues_a_fresh_round_that_earlier_attempts_do_not_use_up() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        for name in ["d", "e"] {
            store
                .put_destination(name.into(), destination("whsec_1"))
                .await
                .unwrap();
        }
        let m = message("s", "1", 1_000, &["d", "e"]);
        store.insert_message_async(m.clone()).await.unwrap();
        let (d, e) = (key(m.id, "d"), key(m.id, "e"));
        assert!(record_attempt(&store, outcome(&d, Some(1_100), Outcome::Dead, 1_100)).await);
        assert!(record_attempt(&store, outcome(&e, Some(1_200), Outcome::Succeeded, 1_200)).await);

        let (log, audit) = audit_log();
        let resent = store
            .resend(m.id, None, 2_000, audit.clone())
            .await
            .unwrap();
        assert_eq!(resent, Some(2), "{}", backend.name);
        for k in [&d, &e] {
            let r = delivery(&store, k).await;
            assert_eq!(
                (
                    r.status,
                    r.next_attempt_at_ms,
                    r.round_attempts,
                    r.resent_at_ms
                ),
                (DeliveryStatus::Pending, Some(2_000), 0, Some(2_000))
            );
            assert_eq!(r.dead_at_ms, None);
        }
        assert!(
            store
                .dead_keys(DeadFilter::default())
                .await
                .unwrap()
                .is_empty()
        );

        // Began at 1900, before the resend: kept in the history, the round stays queued.
        assert!(record_attempt(&store, outcome(&d, Some(1_900), Outcome::Dead, 2_100)).await);
        let r = delivery(&store, &d).await;
        assert_eq!(
            (
                r.status,
                r.next_attempt_at_ms,
                r.round_attempts,
                r.attempts.len()
            ),
            (DeliveryStatus::Pending, Some(2_000), 0, 2)
        );
        // Began after it: counts.
        let retry = Outcome::Retry { at_ms: 9_000 };
        assert!(record_attempt(&store, outcome(&d, Some(2_200), retry, 2_200)).await);
        let r = delivery(&store, &d).await;
        assert_eq!(
            (r.status, r.next_attempt_at_ms, r.round_attempts),
            (DeliveryStatus::Retrying, Some(9_000), 1)
        );
        assert_eq!(store.queued("d".into()).await.unwrap(), 1);

        // One destination only; then one deleted since, which is skipped.
        assert_eq!(
            store
                .resend(m.id, Some("d".into()), 3_000, audit.clone())
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(delivery(&store, &d).await.next_attempt_at_ms, Some(3_000));
        assert_eq!(
            store.queued("d".into()).await.unwrap(),
            1,
            "moved, not doubled"
        );
        store
            .delete_destination("e".into(), 3_100, |_| note(3_100))
            .await
            .unwrap();
        assert_eq!(
            store
                .resend(m.id, Some("e".into()), 3_200, audit.clone())
                .await
                .unwrap(),
            Some(0)
        );
        assert_eq!(delivery(&store, &e).await.status, DeliveryStatus::Dead);
        let unknown = MessageId::generate(1_000);
        assert_eq!(
            store.resend(unknown, None, 3_300, audit).await.unwrap(),
            None
        );
        assert_eq!(
            *log.lock().unwrap(),
            [2, 1, 0],
            "no audit without a message"
        );
    }
}

/// Outcomes queued together (one grouped commit, most likely) apply in their order, a later
/// one seeing the earlier, and each is answered on its own.
#[tokio::test]
async fn outcomes_queued_together_apply_in_order_and_are_answered_each() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        let dispatchers_copy = destination("whsec_1");
        store
            .put_destination("d".into(), dispatchers_copy.clone())
            .await
            .unwrap();
        let msgs: Vec<NewMessage> = (0..3)
            .map(|i| message("s", &i.to_string(), 1_000 + i, &["d"]))
            .collect();
        for m in &msgs {
            store.insert_message_async(m.clone()).await.unwrap();
        }
        let [a, b, c] = [0, 1, 2].map(|i| key(msgs[i].id, "d"));
        let failing = |failures: u32| {
            let mut copy = dispatchers_copy.clone();
            copy.circuit.consecutive_failures = failures;
            copy.circuit.open = failures >= 2;
            Some(("d".to_owned(), copy))
        };
        let updates = vec![
            AttemptUpdate {
                destination: failing(1),
                ..outcome(&a, Some(2_000), Outcome::Retry { at_ms: 2_500 }, 2_000)
            },
            AttemptUpdate {
                destination: failing(2),
                ..outcome(&a, Some(2_001), Outcome::Dead, 2_001)
            },
            outcome(&b, Some(2_002), Outcome::Succeeded, 2_002),
            outcome(&b, Some(2_003), Outcome::Retry { at_ms: 2_600 }, 2_003),
            outcome(
                &key(MessageId::generate(1), "d"),
                None,
                Outcome::Dead,
                2_004,
            ),
        ];
        let answers: Vec<_> = updates
            .into_iter()
            .map(|update| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                store.record_attempt(
                    update,
                    Box::new(move |outcome| {
                        let _ = tx.send(outcome);
                    }),
                );
                rx
            })
            .collect();
        let mut live = Vec::new();
        for answer in answers {
            live.push(answer.await.unwrap().unwrap());
        }
        assert_eq!(live, [true, true, true, false, false], "{}", backend.name);
        let a = delivery(&store, &a).await;
        assert_eq!(
            (a.status, a.attempts.len(), a.round_attempts, a.dead_at_ms),
            (DeliveryStatus::Dead, 2, 2, Some(2_001))
        );
        let b = delivery(&store, &b).await;
        assert_eq!((b.status, b.attempts.len()), (DeliveryStatus::Succeeded, 1));
        assert_eq!(delivery(&store, &c).await.status, DeliveryStatus::Pending);
        let stored = store.destination("d".into()).await.unwrap().unwrap();
        assert_eq!(
            (stored.circuit.consecutive_failures, stored.circuit.open),
            (2, true),
            "the last copy's circuit"
        );
    }
}

/// The due work of a destination: earliest first (then by message), up to the limit, without
/// what is in flight; and when its next delivery is due.
#[tokio::test]
async fn due_work_comes_earliest_first_within_the_limit_without_the_skipped() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        let msgs: Vec<NewMessage> = (0..3)
            .map(|i| message("s", &i.to_string(), 1_000 + i, &["d"]))
            .collect();
        for m in &msgs {
            store.insert_message_async(m.clone()).await.unwrap();
        }
        let ids: Vec<MessageId> = msgs.iter().map(|m| m.id).collect();
        let retry = Outcome::Retry { at_ms: 1_500 };
        assert!(
            record_attempt(
                &store,
                outcome(&key(ids[0], "d"), Some(1_200), retry, 1_200)
            )
            .await
        );
        let due = |now, limit, skip: &[MessageId]| {
            let store = store.clone();
            let skip: HashSet<MessageId> = skip.iter().copied().collect();
            async move {
                store
                    .due_deliveries("d".into(), now, limit, skip, std::time::Duration::ZERO)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|d| (d.key.message, d.due_at_ms, d.round_attempts))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            due(1_400, 10, &[]).await,
            [(ids[1], 1_001, 0), (ids[2], 1_002, 0)]
        );
        assert_eq!(
            due(1_500, 10, &[]).await,
            [(ids[1], 1_001, 0), (ids[2], 1_002, 0), (ids[0], 1_500, 1)],
            "{}",
            backend.name
        );
        assert_eq!(
            due(1_500, 2, &[]).await,
            [(ids[1], 1_001, 0), (ids[2], 1_002, 0)]
        );
        assert_eq!(
            due(1_500, 10, &[ids[1]]).await,
            [(ids[2], 1_002, 0), (ids[0], 1_500, 1)]
        );
        assert!(due(1_500, 0, &[]).await.is_empty());
        let first = store
            .due_deliveries(
                "d".into(),
                1_001,
                1,
                HashSet::new(),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(first[0].message, msgs[1].record);
        assert_eq!(first[0].body, msgs[1].body);
        assert_eq!(
            store
                .next_due(vec!["d".into(), "none".into(), "d".into()])
                .await
                .unwrap(),
            [
                ("d".to_owned(), Some(1_001)),
                ("none".to_owned(), None),
                ("d".to_owned(), Some(1_001))
            ]
        );
        assert_eq!(store.queued("d".into()).await.unwrap(), 3);
        assert_eq!(store.queued("none".into()).await.unwrap(), 0);
    }
}

/// The DLQ lists newest first (by death, then message and destination, descending), filtered
/// by destination and age, a page at a time; bulk retry takes its keys oldest first.
#[tokio::test]
async fn the_dlq_lists_newest_first_filtered_and_paged() {
    for backend in common::backends().await {
        let store = backend.open(Options::default()).await;
        let msgs: Vec<NewMessage> = (0..4)
            .map(|i| message("s", &i.to_string(), 1_000 + i, &["d", "e"]))
            .collect();
        for m in &msgs {
            store.insert_message_async(m.clone()).await.unwrap();
        }
        let ids: Vec<MessageId> = msgs.iter().map(|m| m.id).collect();
        let deaths = [
            (key(ids[0], "d"), 2_000),
            (key(ids[0], "e"), 2_000),
            (key(ids[1], "d"), 3_000),
            (key(ids[2], "e"), 4_000),
        ];
        for (k, at) in &deaths {
            assert!(record_attempt(&store, outcome(k, None, Outcome::Dead, *at)).await);
        }
        let newest_first: Vec<DeliveryKey> =
            [3, 2, 1, 0].iter().map(|&i| deaths[i].0.clone()).collect();
        let list = |filter: DeadFilter| {
            let store = store.clone();
            async move {
                let (page, next) = store.list_dead(filter, None, 10).await.unwrap();
                assert!(next.is_none());
                page.into_iter().map(|l| l.key).collect::<Vec<_>>()
            }
        };
        assert_eq!(
            list(DeadFilter::default()).await,
            newest_first,
            "{}",
            backend.name
        );
        let only_d = DeadFilter {
            destination: Some("d".into()),
            since_ms: None,
        };
        assert_eq!(
            list(only_d).await,
            [deaths[2].0.clone(), deaths[0].0.clone()]
        );
        let recent = DeadFilter {
            destination: None,
            since_ms: Some(3_000),
        };
        assert_eq!(list(recent.clone()).await, newest_first[..2]);

        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store
                .list_dead(DeadFilter::default(), after, 1)
                .await
                .unwrap();
            paged.extend(page.into_iter().map(|l| (l.key, l.dead_at_ms)));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<(DeliveryKey, u64)> =
            [3, 2, 1, 0].iter().map(|&i| deaths[i].clone()).collect();
        assert_eq!(paged, expected);

        let oldest_first: Vec<DeliveryKey> = deaths.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            store.dead_keys(DeadFilter::default()).await.unwrap(),
            oldest_first
        );
        assert_eq!(
            store
                .dead_keys(DeadFilter {
                    destination: Some("e".into()),
                    since_ms: Some(3_000),
                })
                .await
                .unwrap(),
            [deaths[3].0.clone()]
        );
        assert!(
            store.dead(key(ids[3], "d")).await.unwrap().is_none(),
            "pending"
        );
        let letter = store.dead(deaths[2].0.clone()).await.unwrap().unwrap();
        assert_eq!(letter.dead_at_ms, 3_000);
        assert_eq!(letter.delivery.status, DeliveryStatus::Dead);
    }
}
