//! Storage maintenance through the public API: stats, verification of a consistent store,
//! offline compaction and integrity check. (Corrupting an index needs crate-private writes:
//! those tests are unit tests in `src/maintenance.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use bytes::Bytes;
use herald_storage::maintenance::{check_integrity_offline, compact_offline};
use herald_storage::{
    AttemptUpdate, AuditEntry, DedupeKey, DeliveryKey, DestinationRecord, IndexHealth, MessageId,
    MessageRecord, NewMessage, NewSuppression, Options, Outcome, Preferences, Recipient,
    StorageError, Store, SuppressionRecord,
};

fn message(recipient: Option<&str>, destinations: &[&str], body: Bytes) -> NewMessage {
    let id = MessageId::generate(1_000);
    NewMessage {
        id,
        record: MessageRecord {
            source: Some("src".into()),
            external_id: Some(id.to_string()),
            event_type: Some("e".into()),
            content_type: None,
            recipient: recipient.map(|r| Recipient::parse(r).unwrap()),
            channel: None,
            category: None,
            received_at_ms: 1_000,
            body_len: body.len() as u64,
        },
        dedupe_key: Some(DedupeKey::new("src", &id.to_string())),
        body,
        destinations: destinations.iter().map(ToString::to_string).collect(),
        suppress: None,
    }
}

async fn add(store: &Store, recipient: Option<&str>, destinations: &[&str]) -> MessageId {
    let msg = message(recipient, destinations, Bytes::from_static(b"{}"));
    let id = msg.id;
    store.insert_message_async(msg).await.unwrap();
    id
}

async fn attempt(store: &Store, message: MessageId, destination: &str, outcome: Outcome) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.record_attempt(
        AttemptUpdate {
            key: key(message, destination),
            attempt: None,
            outcome,
            destination: None,
            now_ms: 2_000,
        },
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    assert!(rx.await.unwrap().unwrap());
}

fn key(message: MessageId, destination: &str) -> DeliveryKey {
    DeliveryKey {
        message,
        destination: destination.into(),
    }
}

fn audit(subject: &str) -> AuditEntry {
    AuditEntry {
        at_ms: 3_000,
        actor: "test".into(),
        action: "test".into(),
        subject: subject.into(),
        before: None,
        after: None,
    }
}

fn suppression(recipient: &str, expires_at_ms: Option<u64>) -> NewSuppression {
    NewSuppression {
        recipient: Recipient::parse(recipient).unwrap(),
        channel: "email".into(),
        record: SuppressionRecord {
            reason: "bounce".into(),
            expires_at_ms,
            note: None,
            created_by: "test".into(),
            created_at_ms: 3_000,
        },
    }
}

fn destination() -> DestinationRecord {
    DestinationRecord {
        url: "https://example.com/hook".into(),
        sources: vec!["*".into()],
        event_types: Vec::new(),
        channel: "webhook".into(),
        secret: "whsec_x".into(),
        previous_secrets: Vec::new(),
        config_secret_sha256: None,
        rate_limit_per_sec: None,
        enabled: true,
        disabled_reason: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        from_config: false,
        circuit: herald_storage::CircuitRecord::default(),
        policy: herald_storage::DestinationPolicy::default(),
    }
}

/// Messages with and without recipients and destinations; deliveries pending, retrying,
/// succeeded, dead, and dead then discarded; suppressions with and without expiry; audit
/// entries; a destination and preferences.
async fn populate(store: &Store) {
    let m1 = add(store, Some("alice@x"), &["d1", "d2"]).await; // pending, retrying
    let m2 = add(store, Some("bob@x"), &["d1"]).await; // succeeded
    let m3 = add(store, None, &["d1", "d2"]).await; // dead, dead and discarded
    add(store, None, &[]).await;
    attempt(store, m1, "d2", Outcome::Retry { at_ms: 5_000 }).await;
    attempt(store, m2, "d1", Outcome::Succeeded).await;
    attempt(store, m3, "d1", Outcome::Dead).await;
    attempt(store, m3, "d2", Outcome::Dead).await;
    assert!(store.discard(key(m3, "d2"), audit("d1")).await.unwrap());
    store
        .add_suppressions(
            vec![
                suppression("alice@x", Some(9_000)),
                suppression("bob@x", None),
            ],
            vec![audit("alice@x"), audit("bob@x")],
        )
        .await
        .unwrap();
    store
        .put_destination("d1".into(), destination())
        .await
        .unwrap();
    store
        .update_preferences(
            Recipient::parse("alice@x").unwrap(),
            |_| Some(Preferences::default()),
            |_, _| audit("alice@x"),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_what_was_stored_and_a_consistent_store_needs_no_repair() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    let store = Store::open(&path, Options::default()).unwrap();
    populate(&store).await;

    let stats = store.stats().await.unwrap();
    let counts: Vec<(&str, u64)> = stats
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t.entries))
        .collect();
    assert_eq!(
        counts,
        [
            ("audit", 4),
            ("audit_by_subject", 4),
            ("dead_letters", 1),
            ("deliveries", 5),
            ("deliveries_due", 2),
            ("destinations", 1),
            // The four keys are in the open bucket: in memory, durable in `messages`.
            ("idempotency_loose", 0),
            ("idempotency_run_dir", 0),
            ("idempotency_runs", 0),
            ("keys", 1),
            ("messages", 4),
            ("messages_by_recipient", 2),
            ("meta", 1),
            ("preferences", 1),
            ("suppressions", 2),
            ("suppressions_by_expiry", 1),
        ]
    );
    assert_eq!(stats.schema_version, herald_storage::tables::SCHEMA_VERSION);
    assert_eq!(
        stats.file_bytes,
        std::fs::metadata(&path).unwrap().len(),
        "the file's size"
    );
    assert!(stats.file_bytes > 0);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["tables"][1]["name"], "audit_by_subject");
    assert_eq!(json["tables"][1]["index_of"], "audit");
    assert!(json["tables"][0].get("index_of").is_none());

    let report = store.maintenance(true).await.unwrap();
    let expected: Vec<(&str, &str, u64)> = report
        .indexes
        .iter()
        .map(|h| (h.index, h.primary, h.expected))
        .collect();
    assert_eq!(
        expected,
        [
            ("deliveries_due", "deliveries", 2),
            ("dead_letters", "deliveries", 1),
            ("messages_by_recipient", "messages", 2),
            ("suppressions_by_expiry", "suppressions", 1),
            ("audit_by_subject", "audit", 4),
        ]
    );
    for h in &report.indexes {
        assert!(h.is_healthy() && !h.rebuilt, "{h:?}");
        assert_eq!(h.actual, h.expected);
    }
    assert_eq!(report.integrity, None);
    assert!(report.integrity_note.is_some());
    assert!(!report.compacted);
    assert!(
        report
            .compaction_note
            .as_deref()
            .is_some_and(|n| n.contains("exclusive")),
        "{report:?}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["indexes"][0]["index"], "deliveries_due");
    assert_eq!(json["compacted"], false);
}

/// What needs no deliveries code beyond accepting messages: messages with and without
/// recipients and destinations, suppressions with and without expiry, preferences, audit.
async fn populate_subjects(store: &Store) {
    add(store, Some("alice@x"), &["d1", "d2"]).await;
    add(store, Some("bob@x"), &["d1"]).await;
    add(store, None, &[]).await;
    add(store, None, &[]).await;
    store
        .add_suppressions(
            vec![
                suppression("alice@x", Some(9_000)),
                suppression("bob@x", None),
            ],
            vec![audit("alice@x"), audit("bob@x")],
        )
        .await
        .unwrap();
    store
        .update_preferences(
            Recipient::parse("alice@x").unwrap(),
            |_| Some(Preferences::default()),
            |_, _| audit("alice@x"),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_mean_the_same_on_every_backend() {
    for backend in common::backends().await {
        let name = backend.name;
        let store = backend.open(Options::default()).await;
        populate_subjects(&store).await;
        let stats = store.stats().await.unwrap();
        for (table, entries) in [
            ("audit", 3),
            ("audit_by_subject", 3),
            ("dead_letters", 0),
            ("deliveries", 3),
            ("deliveries_due", 3),
            ("destinations", 0),
            ("messages", 4),
            ("messages_by_recipient", 2),
            ("preferences", 1),
            ("suppressions", 2),
            ("suppressions_by_expiry", 1),
        ] {
            assert_eq!(stats.entries(table), Some(entries), "{name}: {table}");
        }
        for (index, primary) in [
            ("audit_by_subject", "audit"),
            ("dead_letters", "deliveries"),
            ("deliveries_due", "deliveries"),
            ("messages_by_recipient", "messages"),
            ("suppressions_by_expiry", "suppressions"),
        ] {
            let info = stats.tables.iter().find(|t| t.name == index).unwrap();
            assert_eq!(info.index_of, Some(primary), "{name}: {index}");
        }
        let names: Vec<&str> = stats.tables.iter().map(|t| t.name.as_str()).collect();
        assert!(names.is_sorted(), "{name}: {names:?}");
        assert!(stats.schema_version >= 1 && stats.file_bytes > 0, "{name}");

        let report = store.maintenance(true).await.unwrap();
        assert!(report.indexes.iter().all(IndexHealth::is_healthy), "{name}");
        assert!(!report.compacted, "{name}");
        assert!(report.integrity_note.is_some() && report.compaction_note.is_some());
        store.close().await;
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_compaction_shrinks_the_file_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    let store = Store::open(&path, Options::default()).unwrap();
    let body = Bytes::from(vec![b'x'; 16 * 1024]);
    for _ in 0..300 {
        let msg = message(Some("gone@x"), &["d1"], body.clone());
        store.insert_message_async(msg).await.unwrap();
    }
    let mut kept = Vec::new();
    for _ in 0..10 {
        let msg = message(Some("kept@x"), &["d1"], body.clone());
        kept.push(msg.id);
        store.insert_message_async(msg).await.unwrap();
    }
    let erased = store
        .erase_subject(Recipient::parse("gone@x").unwrap(), |_| audit("gone@x"))
        .await
        .unwrap();
    assert_eq!(erased.messages, 300);

    // While the store is open the file is locked: no compaction under a running herald.
    let err = compact_offline(&path).unwrap_err();
    assert!(
        matches!(&err, StorageError::Redb(e) if matches!(**e, redb::Error::DatabaseAlreadyOpen)),
        "{err}"
    );
    store.close().await;
    drop(store);

    let before = file_len(&path);
    assert!(
        compact_offline(&path).unwrap(),
        "there was space to reclaim"
    );
    let after = file_len(&path);
    assert!(
        after < before / 2,
        "the file shrank from {before} to {after} bytes"
    );
    assert!(check_integrity_offline(&path).unwrap());

    let store = Store::open(&path, Options::default()).unwrap();
    for id in &kept {
        let view = store.message(*id).await.unwrap().expect("kept message");
        assert_eq!(view.body.as_deref(), Some(&body[..]));
        assert_eq!(view.deliveries.len(), 1);
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.entries("messages"), Some(10));
    assert_eq!(stats.entries("deliveries_due"), Some(10));
    assert_eq!(stats.file_bytes, file_len(&path));
    let report = store.maintenance(false).await.unwrap();
    assert!(
        report.indexes.iter().all(IndexHealth::is_healthy),
        "{report:?}"
    );
}

#[test]
fn offline_tools_never_create_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.redb");
    assert!(compact_offline(&path).is_err());
    assert!(check_integrity_offline(&path).is_err());
    assert!(!path.exists());
}
