//! The store recovering by itself: reopened after writes failed (a full disk), and refusing
//! writes once its file was removed or replaced under it (see `herald_storage::health`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_storage::testing::open_switched;
use herald_storage::{
    DedupeKey, Health, MessageFilter, MessageId, MessageRecord, NewMessage, Options, StorageError,
    Store,
};

mod common;

fn message(external: &str) -> NewMessage {
    let now = 1_000;
    NewMessage {
        id: MessageId::generate(now),
        record: MessageRecord {
            source: Some("s".into()),
            external_id: Some(external.into()),
            event_type: Some("t".into()),
            content_type: Some("application/json".into()),
            recipient: None,
            channel: None,
            category: None,
            received_at_ms: now,
            body_len: 2,
        },
        body: Bytes::from_static(b"{}"),
        dedupe_key: Some(DedupeKey::new("s", external)),
        destinations: vec!["d".into()],
        suppress: None,
    }
}

async fn wait_for(store: &Store, what: fn(&Health) -> bool, within: Duration) -> Health {
    let deadline = Instant::now() + within;
    loop {
        let health = store.health();
        if what(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "still {health:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored(store: &Store) -> usize {
    store
        .list_messages(MessageFilter::default(), None, 1000)
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_reopen_the_database_and_writes_work_again_without_a_restart() {
    let dir = common::scratch_dir();
    let (store, switch) = open_switched(&dir.path().join("h.redb"), Options::default()).unwrap();
    store.insert_message_async(message("before")).await.unwrap();

    switch.fail_writes(true);
    assert!(store.insert_message_async(message("during")).await.is_err());
    wait_for(
        &store,
        |h| matches!(h, Health::Reopening { .. }),
        Duration::from_secs(2),
    )
    .await;
    assert!(!store.is_ready().await && !store.accepts_writes());
    // Refused at once while reopening, without touching the disk.
    let refused = store.insert_message_async(message("refused")).await;
    assert!(
        matches!(refused, Err(StorageError::Unavailable(_))),
        "{refused:?}"
    );
    // Reopening keeps failing while the disk does.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(store.health(), Health::Reopening { .. }));

    switch.fail_writes(false);
    wait_for(&store, Health::is_healthy, Duration::from_secs(10)).await;
    assert!(store.is_ready().await && store.accepts_writes());
    store.insert_message_async(message("after")).await.unwrap();
    let accepted = store.insert_message_async(message("before")).await.unwrap();
    assert!(
        matches!(accepted, herald_storage::Accepted::Duplicate(_)),
        "what was acknowledged before the fault is still there"
    );
    assert_eq!(stored(&store).await, 2, "before and after; nothing refused");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_data_file_stops_writes_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    let store = Store::open(&path, Options::default()).unwrap();
    store.insert_message_async(message("one")).await.unwrap();

    let aside = dir.path().join("aside.redb");
    std::fs::rename(&path, &aside).unwrap();
    // Noticed within a second with nothing written…
    let lost = wait_for(
        &store,
        |h| matches!(h, Health::Lost { .. }),
        Duration::from_secs(3),
    )
    .await;
    assert!(format!("{lost:?}").contains("removed"), "{lost:?}");
    assert!(!store.is_ready().await);
    let refused = store.insert_message_async(message("two")).await;
    assert!(
        matches!(refused, Err(StorageError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        !path.exists(),
        "no new empty database is created in its place"
    );

    std::fs::rename(&aside, &path).unwrap();
    wait_for(&store, Health::is_healthy, Duration::from_secs(3)).await;
    store.insert_message_async(message("two")).await.unwrap();
    assert_eq!(stored(&store).await, 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_batch_into_a_replaced_file_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    let store = Store::open(&path, Options::default()).unwrap();
    store.insert_message_async(message("one")).await.unwrap();
    // Replaced (restored from elsewhere, another process's file…) just before a write: the
    // check before acknowledging catches it even within the periodic check's second.
    std::fs::rename(&path, dir.path().join("old.redb")).unwrap();
    std::fs::write(&path, b"someone else's file").unwrap();
    let refused = store.insert_message_async(message("two")).await;
    assert!(
        matches!(refused, Err(StorageError::Unavailable(_))),
        "{refused:?}"
    );
    let lost = store.health();
    assert!(format!("{lost:?}").contains("replaced"), "{lost:?}");
    store.close().await;
}
