//! The store through its public API, on a real redb file in a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use herald_storage::{
    Accepted, AuditEntry, DedupeKey, DeliveryStatus, DestinationRecord, MessageFilter, MessageId,
    MessageRecord, NewMessage, Options, SWEEP_SLICES, StorageError, Store,
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/herald.redb");
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = commits.clone();
    let store = Store::open(
        &path,
        Options {
            observer: Some(std::sync::Arc::new(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })),
            ..Options::default()
        },
    )
    .unwrap();

    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_message_async(message("src", &format!("ext-{i}"), 1_000 + i, &["d1"]))
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
        "expected group commits, saw {commits} commits for 500 writes"
    );
    store.close().await;
    drop(store);

    let store = Store::open(&path, Options::default()).unwrap();
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

#[tokio::test]
async fn a_repeated_key_is_a_duplicate_even_within_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("h.redb"), Options::default()).unwrap();
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

#[tokio::test]
async fn listing_filters_and_paginates_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("h.redb"), Options::default()).unwrap();
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

#[tokio::test]
async fn sweeping_forgets_only_old_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("h.redb"), Options::default()).unwrap();
    let old = message("s", "old", 1_000, &[]);
    let new = message("s", "new", 5_000, &[]);
    store.insert_message_async(old).await.unwrap();
    store.insert_message_async(new.clone()).await.unwrap();
    let mut removed = 0;
    for slice in 0..SWEEP_SLICES {
        removed += store.sweep_idempotency(2_000, slice).await.unwrap();
    }
    assert_eq!(removed, 1);
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

#[tokio::test]
async fn writes_after_close_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("h.redb"), Options::default()).unwrap();
    assert!(store.is_ready().await);
    store.close().await;
    let err = store
        .insert_message_async(message("s", "late", 1, &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Closed), "{err}");
    assert!(!store.is_ready().await);
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
        previous_secret: None,
        rate_limit_per_sec: None,
        enabled: true,
        disabled_reason: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        from_config: false,
        circuit: herald_storage::CircuitRecord::default(),
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
    use herald_storage::{AttemptUpdate, DeliveryKey, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("h.redb"), Options::default()).unwrap();
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

/// A DLQ retry re-queues what is in the DLQ; a discarded delivery (still `dead` in its
/// message's history) is not. Found by the model test: it used to be re-queued.
#[tokio::test]
async fn a_discarded_delivery_is_not_retried() {
    use herald_storage::{AttemptUpdate, DeliveryKey, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("h.redb"), Options::default()).unwrap();
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
