//! Opening a file written by an older schema migrates it.
//!
//! `fixtures/schema-1.redb` was written by herald-storage at schema version 1 (commit e056883)
//! `fixtures/write_schema_1.rs.txt`, run once: ten messages from source `fixture`, one a minute from
//! 1,700,000,000,000 ms, `evt_0` … `evt_9`, each keyed `DedupeKey::new("fixture", "evt_n")`
//! except `evt_5`; the even ones with a pending delivery to `d`; `evt_7` addressed to
//! `erase@example.com`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use herald_storage::{
    Accepted, AuditEntry, DedupeKey, MessageFilter, MessageId, MessageRecord, NewMessage, Options,
    Recipient, StorageError, Store,
};
use redb::{ReadableDatabase as _, ReadableTableMetadata as _, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const V1_IDEMPOTENCY: TableDefinition<u128, (u128, u64)> = TableDefinition::new("idempotency");

fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.redb");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-1.redb"),
        &path,
    )
    .unwrap();
    (dir, path)
}

fn resubmit(n: u64) -> NewMessage {
    let external = format!("evt_{n}");
    let at = 1_700_000_000_000 + 20 * 60_000;
    NewMessage {
        id: MessageId::generate(at),
        record: MessageRecord {
            source: Some("fixture".into()),
            external_id: Some(external.clone()),
            event_type: None,
            content_type: None,
            recipient: None,
            channel: None,
            category: None,
            received_at_ms: at,
            body_len: 0,
        },
        body: Bytes::new(),
        dedupe_key: Some(DedupeKey::new("fixture", &external)),
        destinations: Vec::new(),
        suppress: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_file_is_migrated_and_keeps_every_key() {
    let (_dir, path) = fixture();
    {
        // What the fixture is: version 1, with the old index of nine keys.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let version = txn.open_table(META).unwrap().get("schema_version").unwrap();
        assert_eq!(version.map(|v| v.value()), Some(1));
        assert_eq!(txn.open_table(V1_IDEMPOTENCY).unwrap().len().unwrap(), 9);
    }
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(store.stats().await.unwrap().schema_version, 3);
    let page = store
        .list_messages(MessageFilter::default(), None, 50)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 10, "every message is still there");
    let bodies: Vec<Vec<u8>> = {
        let mut bodies = Vec::new();
        for item in &page.items {
            bodies.push(store.message(item.id).await.unwrap().unwrap().body.unwrap());
        }
        bodies
    };
    assert!(bodies.iter().any(|b| b == br#"{"n":3}"#), "bodies survive");
    let first_of = |n: u64| {
        page.items
            .iter()
            .find(|m| m.record.external_id.as_deref() == Some(&format!("evt_{n}")))
            .map(|m| m.id)
    };

    // Every keyed message is a duplicate, of its first id; the unkeyed one is not.
    for n in (0..10).filter(|n| *n != 5) {
        assert_eq!(
            store.insert_message_async(resubmit(n)).await.unwrap(),
            Accepted::Duplicate(first_of(n).unwrap()),
            "evt_{n}"
        );
    }
    assert!(matches!(
        store.insert_message_async(resubmit(5)).await.unwrap(),
        Accepted::New(_)
    ));

    // Erasing evt_7's recipient deletes it; its key stays, through a restart.
    let audit = |alias: &Recipient| AuditEntry {
        at_ms: 1_700_000_000_000,
        actor: "test".into(),
        action: "subject.erase".into(),
        subject: alias.as_str().to_owned(),
        before: None,
        after: None,
    };
    let erased = store
        .erase_subject(Recipient::parse("erase@example.com").unwrap(), audit)
        .await
        .unwrap();
    assert_eq!(erased.messages, 1);
    store.close().await;
    drop(store);

    let store = Store::open(&path, Options::default()).unwrap();
    for n in (0..10).filter(|n| *n != 5) {
        assert!(
            matches!(
                store.insert_message_async(resubmit(n)).await.unwrap(),
                Accepted::Duplicate(_)
            ),
            "evt_{n} after the restart"
        );
    }
    store.close().await;
}

#[tokio::test]
async fn a_file_from_a_newer_schema_is_refused_untouched() {
    let (_dir, path) = fixture();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path, Options::default()).unwrap_err();
    assert!(
        matches!(err, StorageError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(txn.open_table(V1_IDEMPOTENCY).unwrap().len().unwrap(), 9);
}
