//! Suppressions, preferences, audit and GDPR on PostgreSQL. (To be written.)

use deadpool_postgres::{GenericClient, Transaction};

use super::Shared;
use crate::error::{Result, StorageError};
use crate::{
    AuditEntry, AuditView, Erasure, NewSuppression, Preferences, Pseudonyms, Recipient,
    SubjectExport, SuppressionRecord, SuppressionView,
};

fn todo() -> StorageError {
    StorageError::Unavailable("not built yet".into())
}

/// Stores suppressions in `tx` (and tells the other nodes their recipients changed).
pub(super) async fn put_suppressions(
    shared: &Shared,
    tx: &Transaction<'_>,
    items: &[NewSuppression],
) -> Result<()> {
    let _ = (shared, tx, items);
    Err(todo())
}

/// Appends an audit entry in `tx`.
pub(super) async fn append_audit(tx: &Transaction<'_>, entry: &AuditEntry) -> Result<()> {
    let _ = (tx, entry);
    Err(todo())
}

pub(super) async fn add_suppressions(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    items: &[NewSuppression],
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = (shared, client, items, audit);
    Err(todo())
}

pub(super) async fn remove_suppression<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    recipient: &Recipient,
    channel: &str,
    audit: A,
) -> Result<Option<SuppressionRecord>>
where
    A: Fn(&SuppressionRecord) -> AuditEntry + Send + 'static,
{
    let _ = (shared, client, recipient, channel, audit);
    Err(todo())
}

pub(super) async fn update_preferences<C, A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    recipient: &Recipient,
    change: C,
    audit: A,
) -> Result<Option<Preferences>>
where
    C: Fn(Option<Preferences>) -> Option<Preferences> + Send + 'static,
    A: Fn(Option<&Preferences>, Option<&Preferences>) -> AuditEntry + Send + 'static,
{
    let _ = (shared, client, recipient, change, audit);
    Err(todo())
}

pub(super) async fn sweep_suppressions(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    now_ms: u64,
    max: usize,
) -> Result<usize> {
    let _ = (shared, client, now_ms, max);
    Err(todo())
}

pub(super) async fn erase<A>(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    alias: &Recipient,
    recipient: &Recipient,
    audit: A,
) -> Result<Erasure>
where
    A: Fn(&Recipient) -> AuditEntry + Send + 'static,
{
    let _ = (shared, client, alias, recipient, audit);
    Err(todo())
}

pub(super) async fn suppressions_of(
    client: &impl GenericClient,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<Vec<(String, SuppressionRecord)>> {
    let _ = (client, pseudonyms, recipient);
    Err(todo())
}

pub(super) async fn list_suppressions(
    client: &impl GenericClient,
    recipient: Option<&Recipient>,
    channel: Option<&str>,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<(Vec<SuppressionView>, bool)> {
    let _ = (client, recipient, channel, after, limit);
    Err(todo())
}

pub(super) async fn preferences_of(
    client: &impl GenericClient,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<Option<Preferences>> {
    let _ = (client, pseudonyms, recipient);
    Err(todo())
}

pub(super) async fn list_audit(
    client: &impl GenericClient,
    subject: Option<&str>,
    actor: Option<&str>,
    after: Option<u128>,
    limit: usize,
) -> Result<(Vec<AuditView>, bool)> {
    let _ = (client, subject, actor, after, limit);
    Err(todo())
}

pub(super) async fn export(
    client: &impl GenericClient,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<SubjectExport> {
    let _ = (client, pseudonyms, recipient);
    Err(todo())
}
