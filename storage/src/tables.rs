//! Every table herald keeps, with its key layout. Nothing outside this crate names a table.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `&str` name | `u64` (`schema_version`) |
//! | `messages` | `u128` message id (ULID: creation order) | JSON [`MessageRecord`](crate::MessageRecord) |
//! | `message_bodies` | `u128` message id | the original body bytes |
//! | `idempotency` | `&str` `"{source}\0{external id}"` | `(u128 message id, u64 accepted at ms)` |
//! | `idempotency_by_time` | `(u64 accepted at ms, &str idempotency key)` | `()`: the sweep order |
//! | `deliveries` | `(u128 message id, &str destination)` | JSON [`DeliveryRecord`](crate::DeliveryRecord) |
//! | `deliveries_due` | `(u8 status, u64 due at ms, u128 message id, &str destination)` | `()` |
//!
//! `deliveries_due` is the scheduler's index: a range scan over one status in due order finds
//! the next work without touching the `deliveries` table. Every write that changes a delivery's
//! status or due time moves its index entry in the same transaction.

use redb::TableDefinition;

/// Bumped whenever a table's key or value layout changes; [`crate::Store::open`] refuses a file
/// written by a newer version and migrates an older one.
pub const SCHEMA_VERSION: u64 = 1;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const MESSAGES: TableDefinition<u128, &[u8]> = TableDefinition::new("messages");
pub(crate) const MESSAGE_BODIES: TableDefinition<u128, &[u8]> =
    TableDefinition::new("message_bodies");
pub(crate) const IDEMPOTENCY: TableDefinition<&str, (u128, u64)> =
    TableDefinition::new("idempotency");
pub(crate) const IDEMPOTENCY_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("idempotency_by_time");
pub(crate) const DELIVERIES: TableDefinition<(u128, &str), &[u8]> =
    TableDefinition::new("deliveries");
pub(crate) const DELIVERIES_DUE: TableDefinition<(u8, u64, u128, &str), ()> =
    TableDefinition::new("deliveries_due");

pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";
