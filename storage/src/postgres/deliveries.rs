//! Deliveries on PostgreSQL: claims with leases, outcomes, the DLQ. (To be written.)

use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Transaction};

use super::Shared;
use crate::error::{Result, StorageError};
use crate::{
    AttemptUpdate, AuditEntry, DeadCursor, DeadFilter, DeadLetter, DeliveryKey, DueDelivery,
    MessageId,
};

fn todo() -> StorageError {
    StorageError::Unavailable("not built yet".into())
}

pub(super) async fn claim_due(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    destination: &str,
    now_ms: u64,
    limit: usize,
    skip: &HashSet<MessageId>,
) -> Result<Vec<DueDelivery>> {
    let _ = (shared, client, destination, now_ms, limit, skip);
    Err(todo())
}

pub(super) async fn record_batch(
    shared: &Shared,
    tx: &Transaction<'_>,
    updates: &[&AttemptUpdate],
) -> Result<Vec<Result<bool>>> {
    let _ = (shared, tx);
    Ok(updates.iter().map(|_| Err(todo())).collect())
}

pub(super) async fn next_due(
    client: &impl GenericClient,
    destinations: Vec<String>,
) -> Result<Vec<(String, Option<u64>)>> {
    let _ = (client, destinations);
    Err(todo())
}

pub(super) async fn queued(client: &impl GenericClient, destination: &str) -> Result<u64> {
    let _ = (client, destination);
    Err(todo())
}

pub(super) async fn list_dead(
    client: &impl GenericClient,
    filter: &DeadFilter,
    after: Option<&DeadCursor>,
    limit: usize,
) -> Result<(Vec<DeadLetter>, Option<DeadCursor>)> {
    let _ = (client, filter, after, limit);
    Err(todo())
}

pub(super) async fn get_dead(
    client: &impl GenericClient,
    key: &DeliveryKey,
) -> Result<Option<DeadLetter>> {
    let _ = (client, key);
    Err(todo())
}

pub(super) async fn dead_keys(
    client: &impl GenericClient,
    filter: &DeadFilter,
) -> Result<Vec<DeliveryKey>> {
    let _ = (client, filter);
    Err(todo())
}

pub(super) async fn requeue<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    keys: &[DeliveryKey],
    now_ms: u64,
    audit: A,
) -> Result<usize>
where
    A: Fn(usize) -> Option<AuditEntry> + Send + 'static,
{
    let _ = (shared, client, keys, now_ms, audit);
    Err(todo())
}

pub(super) async fn resend<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    message: MessageId,
    destination: Option<&str>,
    now_ms: u64,
    audit: A,
) -> Result<Option<usize>>
where
    A: Fn(usize) -> AuditEntry + Send + 'static,
{
    let _ = (shared, client, message, destination, now_ms, audit);
    Err(todo())
}

pub(super) async fn discard(
    client: &mut deadpool_postgres::Client,
    key: &DeliveryKey,
    audit: &AuditEntry,
) -> Result<bool> {
    let _ = (client, key, audit);
    Err(todo())
}

/// Every live delivery of `destination` to the DLQ (the destination was deleted).
pub(super) async fn kill_destination(
    tx: &Transaction<'_>,
    destination: &str,
    now_ms: u64,
) -> Result<()> {
    let _ = (tx, destination, now_ms);
    Err(todo())
}
