//! Destinations on PostgreSQL. (To be written.)

use deadpool_postgres::{GenericClient, Transaction};

use super::Shared;
use crate::error::{Result, StorageError};
use crate::{AuditEntry, DestinationRecord};

fn todo() -> StorageError {
    StorageError::Unavailable("not built yet".into())
}

pub(super) async fn get(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<DestinationRecord>> {
    let _ = (client, name);
    Err(todo())
}

pub(super) async fn list(client: &impl GenericClient) -> Result<Vec<(String, DestinationRecord)>> {
    let _ = client;
    Err(todo())
}

pub(super) async fn put(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    record: &DestinationRecord,
) -> Result<()> {
    let _ = (shared, client, name, record);
    Err(todo())
}

pub(super) async fn create(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    record: &DestinationRecord,
    audit: &AuditEntry,
) -> Result<bool> {
    let _ = (shared, client, name, record, audit);
    Err(todo())
}

pub(super) async fn update<F, A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    change: F,
    audit: Option<A>,
) -> Result<Option<DestinationRecord>>
where
    F: Fn(&mut DestinationRecord) + Send + 'static,
    A: Fn(&DestinationRecord, &DestinationRecord) -> AuditEntry + Send + 'static,
{
    let _ = (shared, client, name, change, audit);
    Err(todo())
}

pub(super) async fn delete<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    name: &str,
    now_ms: u64,
    audit: A,
) -> Result<Option<DestinationRecord>>
where
    A: Fn(&DestinationRecord) -> AuditEntry + Send + 'static,
{
    let _ = (shared, client, name, now_ms, audit);
    Err(todo())
}

/// The circuit and disabling of the dispatcher's copy `record`, if the destination still
/// exists (see [`crate::Store::record_attempt`]).
pub(super) async fn apply_attempt(
    shared: &Shared,
    tx: &Transaction<'_>,
    name: &str,
    record: &DestinationRecord,
) -> Result<()> {
    let _ = (shared, tx, name, record);
    Err(todo())
}
