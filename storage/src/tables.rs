//! Every table herald keeps, with its key layout. Nothing outside this crate names a table.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `&str` name | `u64` (`schema_version`) |
//! | `keys` | `&str` name | `&[u8]` secret key material (`pseudonym`: 32 random bytes, made at the first start) |
//! | `messages` | `u128` message id (ULID: creation order) | [`MessageRecord`](crate::MessageRecord) and body, see below |
//! | `idempotency` | `u128` [`DedupeKey`](crate::DedupeKey) | `(u128 message id, u64 accepted at ms)` |
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
//! A `messages` value is `[u32 LE n][n bytes of JSON record][body bytes]`: the record and the
//! exact body in one value, so accepting a message writes one B-tree, and its key grows with
//! time, so a batch of messages fills the same rightmost leaves.
//!
//! `idempotency` is keyed by a 128-bit hash rather than the partner's id: fixed-width keys are
//! cheaper to compare and pack densely, and uniform keys let the sweep walk the table in equal
//! slices of the hash space without a second, time-ordered index (one insert per message less).
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
pub const SCHEMA_VERSION: u64 = 2;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
pub(crate) const MESSAGES: TableDefinition<u128, &[u8]> = TableDefinition::new("messages");
pub(crate) const IDEMPOTENCY: TableDefinition<u128, (u128, u64)> =
    TableDefinition::new("idempotency");
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
pub(crate) const PSEUDONYM_KEY: &str = "pseudonym";
