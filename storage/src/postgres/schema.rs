//! The PostgreSQL schema and its migrations.
//!
//! Every table, with what its columns hold (ids and keys as in [`crate::tables`]: a message id
//! is its ULID's 16 bytes big-endian, so byte order is time order; records are the same JSON
//! the redb backend stores, so one codec serves both):
//!
//! | table | key | holds |
//! | --- | --- | --- |
//! | `herald_meta` | `name` | `schema_version` |
//! | `herald_keys` | `name` | `pseudonym`: 32 random bytes, made by the first node to start |
//! | `messages` | `id` | the record's list filters as columns, the JSON record, the exact body |
//! | `idempotency` | `key` (a [`DedupeKey`](crate::DedupeKey)'s 16 bytes) | the first message's id, its time |
//! | `deliveries` | `(message_id, destination)` | status, `due_ms` exactly while live, `dead_ms` exactly while in the DLQ, the lease, the JSON record |
//! | `destinations` | `name` | the JSON record (circuit, disabled flag, secrets: shared by every node) |
//! | `suppressions` | `(recipient, channel)` | `expires_ms`, the JSON record |
//! | `preferences` | `recipient` | the JSON record |
//! | `audit` | `id` (ULID: time order) | `subject`, `actor`, the JSON entry |
//! | `herald_nodes` | `name` (`server.node_name`) | `seen_ms`: the node's last heartbeat ([`super::nodes`]) |
//!
//! Every text column is `COLLATE "C"`: ordered by bytes, as redb orders its keys, so listings
//! and cursors page the same way on both backends whatever the database's locale.
//!
//! The redb backend's secondary tables are indexes here, of the same names (`deliveries_due`,
//! `dead_letters`, `messages_by_recipient`, `suppressions_by_expiry`, `audit_by_subject`), so
//! [`crate::StorageStats::entries`] answers for either backend: PostgreSQL keeps them in step
//! with their table in the same transaction, which the redb code does by hand. `audit_by_actor`
//! has no redb twin (redb's actor filter walks the trail); here it keeps `GET /v1/audit?actor=`
//! a range scan.
//!
//! Migrations are numbered steps, applied in order at start inside one transaction that holds
//! an advisory lock, so nodes starting together migrate once; a database whose version is newer
//! than [`SCHEMA_VERSION`] is refused ([`crate::StorageError::SchemaTooNew`]).

use crate::error::{Result, StorageError};

/// The version this build writes. Bump it with a new entry in [`STEPS`].
pub const SCHEMA_VERSION: u64 = 1;

/// Every table herald keeps, in the order [`crate::StorageStats`] lists them (by name).
pub(super) const TABLES: &[&str] = &[
    "audit",
    "deliveries",
    "destinations",
    "herald_keys",
    "herald_meta",
    "herald_nodes",
    "idempotency",
    "messages",
    "preferences",
    "suppressions",
];

/// Taken for the migration transaction (an arbitrary constant: "herald" in ASCII).
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64;

/// `STEPS[n]` takes the schema from version `n` to `n + 1`.
const STEPS: &[&str] = &[r#"
CREATE TABLE messages (
    id bytea PRIMARY KEY,
    received_ms bigint NOT NULL,
    source text COLLATE "C",
    event_type text COLLATE "C",
    recipient text COLLATE "C",
    dedupe_key bytea,
    record bytea NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX messages_by_recipient ON messages (recipient, id) WHERE recipient IS NOT NULL;

CREATE TABLE idempotency (
    key bytea PRIMARY KEY,
    message_id bytea NOT NULL,
    accepted_ms bigint NOT NULL
);
CREATE INDEX idempotency_by_time ON idempotency (accepted_ms);

CREATE TABLE deliveries (
    message_id bytea NOT NULL,
    destination text COLLATE "C" NOT NULL,
    status text NOT NULL,
    due_ms bigint,
    dead_ms bigint,
    lease_until_ms bigint NOT NULL DEFAULT 0,
    leased_by text,
    record bytea NOT NULL,
    PRIMARY KEY (message_id, destination)
);
CREATE INDEX deliveries_due ON deliveries (destination, due_ms, message_id) WHERE due_ms IS NOT NULL;
CREATE INDEX dead_letters ON deliveries (dead_ms, message_id, destination) WHERE dead_ms IS NOT NULL;

CREATE TABLE destinations (
    name text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE suppressions (
    recipient text COLLATE "C" NOT NULL,
    channel text COLLATE "C" NOT NULL,
    expires_ms bigint,
    record bytea NOT NULL,
    PRIMARY KEY (recipient, channel)
);
CREATE INDEX suppressions_by_expiry ON suppressions (expires_ms, recipient, channel)
    WHERE expires_ms IS NOT NULL;

CREATE TABLE preferences (
    recipient text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE audit (
    id bytea PRIMARY KEY,
    subject text COLLATE "C" NOT NULL,
    actor text COLLATE "C" NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX audit_by_subject ON audit (subject, id);
CREATE INDEX audit_by_actor ON audit (actor, id);

CREATE TABLE herald_nodes (
    name text COLLATE "C" PRIMARY KEY,
    seen_ms bigint NOT NULL
);
"#];

/// Brings the schema to [`SCHEMA_VERSION`] and returns the pseudonym key, in one transaction.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<[u8; 32]> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_meta (name text PRIMARY KEY, value bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS herald_keys (name text PRIMARY KEY, material bytea NOT NULL);",
    )
    .await?;
    let found = tx
        .query_opt(
            "SELECT value FROM herald_meta WHERE name = 'schema_version'",
            &[],
        )
        .await?
        .map_or(0, |row| row.get::<_, i64>(0));
    let found = u64::try_from(found).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, step) in STEPS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tracing::info!(
            from = version,
            to = version + 1,
            "migrating the PostgreSQL schema"
        );
        tx.batch_execute(step).await?;
    }
    tx.execute(
        "INSERT INTO herald_meta (name, value) VALUES ('schema_version', $1)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&SCHEMA_VERSION.cast_signed()],
    )
    .await?;
    let fresh: [u8; 32] = rand::random();
    tx.execute(
        "INSERT INTO herald_keys (name, material) VALUES ('pseudonym', $1) ON CONFLICT DO NOTHING",
        &[&fresh.as_slice()],
    )
    .await?;
    let stored: Vec<u8> = tx
        .query_one(
            "SELECT material FROM herald_keys WHERE name = 'pseudonym'",
            &[],
        )
        .await?
        .get(0);
    let key = <[u8; 32]>::try_from(stored.as_slice())
        .map_err(|_| StorageError::corrupt("herald_keys", "the pseudonym key is not 32 bytes"))?;
    tx.commit().await?;
    Ok(key)
}

/// A message id or dedupe key as stored: 16 bytes, big-endian.
pub(super) fn id_bytes(id: u128) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// The inverse of [`id_bytes`].
pub(super) fn id_from(bytes: &[u8], table: &'static str) -> Result<u128> {
    <[u8; 16]>::try_from(bytes)
        .map(u128::from_be_bytes)
        .map_err(|_| StorageError::corrupt(table, "an id is not 16 bytes"))
}

/// Unix ms as stored (`bigint`); herald's times are far below `i64::MAX`.
pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`ms`]; a negative time (never written) reads as 0.
pub(super) fn ms_from(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
