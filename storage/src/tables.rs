//! Every table herald keeps, with its key layout. Nothing outside this crate names a table.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `&str` name | `u64` (`schema_version`, `idempotency_boundary_ms`) |
//! | `keys` | `&str` name | `&[u8]` secret key material (`pseudonym`: 32 random bytes, made at the first start) |
//! | `messages` | `u128` message id (ULID: creation order) | [`MessageRecord`](crate::MessageRecord), dedupe key and body, see below |
//! | `idempotency_runs` | `(u64 run, u128` [`DedupeKey`](crate::DedupeKey)`)` | `u128 message id` |
//! | `idempotency_run_dir` | `u64 run` | `(u64 from ms, u64 until ms, u64 keys)` |
//! | `idempotency_loose` | `u128` [`DedupeKey`](crate::DedupeKey) | `u128 message id` |
//! | `deliveries` | `(u128 message id, &str destination)` | JSON [`DeliveryRecord`](crate::DeliveryRecord) |
//! | `deliveries_due` | `(&str destination, u64 due at ms, u128 message id)` | `()` |
//! | `dead_letters` | `(u64 died at ms, u128 message id, &str destination)` | `()` |
//! | `destinations` | `&str name` | JSON [`DestinationRecord`](crate::DestinationRecord) |
//! | `messages_by_recipient` | `(&str recipient, u128 message id)` | `()` |
//! | `suppressions` | `(&str recipient, &str channel)` | JSON [`SuppressionRecord`](crate::SuppressionRecord) |
//! | `suppressions_by_expiry` | `(u64 expires at ms, &str recipient, &str channel)` | `()` |
//! | `preferences` | `&str recipient` | JSON [`Preferences`](crate::Preferences) |
//! | `audit` | `u128 entry id (ULID: time order)` | JSON [`AuditEntry`](crate::AuditEntry) |
//! | `audit_by_subject` | `(&str subject, u128 entry id)` | `()` |
//!
//! Every recipient key (`messages_by_recipient`, `suppressions`, `preferences`, recipient
//! subjects of `audit_by_subject`) is the recipient's canonical form ([`crate::Recipient`]).
//! A recipient erased under GDPR keeps its opt-outs (suppressions, and the `false` entries of
//! its preferences) under its keyed pseudonym `anon:<hex>` ([`crate::subjects::Pseudonyms`])
//! instead of the address, so they are still honoured (the delivery path checks both keys).
//!
//! A `messages` value is `[u32 LE n | K][16 bytes BE dedupe key, if K][n bytes of JSON
//! record][body bytes]`, where `K` = bit 31 says the message has a dedupe key: the record, the key
//! and the exact body in one value, so accepting a message writes one B-tree, and its key grows
//! with time, so a batch of messages fills the same rightmost leaves.
//!
//! The idempotency index is a derivative of `messages` (see [`crate::idempotency`] for its
//! invariants): the keys of messages since `idempotency_boundary_ms` live in memory only and are
//! rebuilt from `messages` at start; older ones are in sealed *runs*, each written once in key
//! order under a new, larger run number (an append), with its span of message times and key
//! count in `idempotency_run_dir`; `idempotency_loose` holds the few keys that fit neither (a
//! message committed after its time was sealed, a deleted message's key). Dedupe keys are
//! 128-bit hashes rather than the partner's ids: fixed width, uniform (so the in-memory filters
//! need no hashing of their own), and not attacker-chosen.
//!
//! `deliveries_due` is the scheduler's queue: it holds exactly the live (`pending`, `retrying`)
//! deliveries, per destination in due order, so the dispatcher reads the next work of each
//! destination it may send to with one range scan and never walks past the backlog of a
//! destination whose circuit is open. `dead_letters` is the DLQ in the order deliveries died.
//! Every write that changes a delivery's status or due time moves its index entries in the same
//! transaction.

use redb::TableDefinition;

/// Bumped whenever a table's key or value layout changes; [`crate::Store::open`] refuses a file
/// written by a newer version and migrates an older one.
///
/// - 1: the first layout.
/// - 2: recipients canonical; keyed pseudonyms; the `keys` table ([`crate::migrate`]).
/// - 3: the idempotency index in sealed runs derived from `messages`, whose values carry their
///   dedupe key (was one `idempotency` table keyed by dedupe key).
pub const SCHEMA_VERSION: u64 = 3;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
pub(crate) const MESSAGES: TableDefinition<u128, &[u8]> = TableDefinition::new("messages");
pub(crate) const IDEMPOTENCY_RUNS: TableDefinition<(u64, u128), u128> =
    TableDefinition::new("idempotency_runs");
pub(crate) const IDEMPOTENCY_RUN_DIR: TableDefinition<u64, (u64, u64, u64)> =
    TableDefinition::new("idempotency_run_dir");
pub(crate) const IDEMPOTENCY_LOOSE: TableDefinition<u128, u128> =
    TableDefinition::new("idempotency_loose");
pub(crate) const DELIVERIES: TableDefinition<(u128, &str), &[u8]> =
    TableDefinition::new("deliveries");
pub(crate) const DELIVERIES_DUE: TableDefinition<(&str, u64, u128), ()> =
    TableDefinition::new("deliveries_due");
pub(crate) const DEAD_LETTERS: TableDefinition<(u64, u128, &str), ()> =
    TableDefinition::new("dead_letters");
pub(crate) const DESTINATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("destinations");
pub(crate) const MESSAGES_BY_RECIPIENT: TableDefinition<(&str, u128), ()> =
    TableDefinition::new("messages_by_recipient");
pub(crate) const SUPPRESSIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("suppressions");
pub(crate) const SUPPRESSIONS_BY_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("suppressions_by_expiry");
pub(crate) const PREFERENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("preferences");
pub(crate) const AUDIT: TableDefinition<u128, &[u8]> = TableDefinition::new("audit");
pub(crate) const AUDIT_BY_SUBJECT: TableDefinition<(&str, u128), ()> =
    TableDefinition::new("audit_by_subject");

pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";
/// Messages from this time on have their dedupe keys only in the open bucket (in memory).
pub(crate) const IDEMPOTENCY_BOUNDARY_KEY: &str = "idempotency_boundary_ms";
pub(crate) const PSEUDONYM_KEY: &str = "pseudonym";
