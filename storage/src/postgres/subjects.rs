//! Suppressions, preferences, the audit trail, GDPR export and erasure on PostgreSQL.
//!
//! # Design
//! - **The same answers as redb.** What an erasure keeps, how a recipient's address and
//!   pseudonym combine (effective preferences, applying suppressions, the export), which
//!   suppressions the sweep reclaims, how an audit id is made and a stored key shown: all are
//!   the pure functions of [`crate::subjects`], called here with what the statements read. This
//!   module only reads and writes rows.
//! - **One transaction per change**, from the pool: the change, its audit entry, and the
//!   `NOTIFY` naming every recipient it touched ([`Change::Subject`], its canonical form; for an
//!   erasure both the address and the pseudonym), so other nodes drop their cached copy exactly
//!   when it commits, and hear nothing of a rolled-back one. Nothing is acknowledged before the
//!   commit.
//! - **Read-modify-write is serialised per recipient.** Changing preferences reads them,
//!   applies the caller's change and writes the result; erasure merges opt-outs into the
//!   pseudonym's. A row lock cannot guard a row that does not exist yet (a recipient's first
//!   opt-out), so both take a transaction-level advisory lock on the recipient's key first:
//!   two nodes opting one recipient out of two channels at once keep both opt-outs, as redb's
//!   single writer does. Keys are locked in byte order, so two erasures never wait on each
//!   other in a cycle.
//! - **Bulk is a few array statements** (`UNNEST`), whatever the size: 10 000 suppressions, their
//!   audit entries and their notifications are three statements. Within one bulk the last item of
//!   a (recipient, channel) wins, as when redb writes them in turn.
//! - **Keys are `COLLATE "C"`**, so listings and their cursors page in redb's byte order.
//! - Reads of one answer are one statement (one snapshot); the export, several statements,
//!   runs in one `REPEATABLE READ` read-only transaction, so it never shows half an erasure.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::Shared;
use super::schema::{id_bytes, id_from, ms};
use crate::error::Result;
use crate::records::{decode, encode};
use crate::subjects::{
    Held, applying, assemble_export, audit_id, effective_preferences, erased_preferences,
    erased_suppression, refile, stored_recipient, sweep_bound,
};
use crate::{
    AuditEntry, AuditView, Change, Erasure, MessageId, MessageView, NewSuppression, Preferences,
    Pseudonyms, Recipient, SubjectExport, SuppressionRecord, SuppressionView,
};

/// The advisory-lock class of preference changes (the two-`int4` key space, apart from the
/// migration's `bigint` one): "pref" in ASCII.
const PREFERENCES_LOCK: i32 = 0x7072_6566;

/// `result`, having marked the store unavailable if its error says the database cannot be
/// reached (a write's connection lost midway): readiness then reports it at once.
fn noted<T>(shared: &Shared, result: Result<T>) -> Result<T> {
    if let Err(error) = &result {
        shared.failed(error);
    }
    result
}

/// `WHERE` with `conditions` joined by `AND`; nothing when there are none.
fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

/// A row count or `LIMIT` as PostgreSQL's `bigint`.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---- writes ---------------------------------------------------------------------------------

/// Stores (or replaces) suppressions in `tx` and tells the other nodes their recipients
/// changed. All or nothing with `tx`.
pub(super) async fn put_suppressions(
    shared: &Shared,
    tx: &Transaction<'_>,
    items: &[NewSuppression],
) -> Result<()> {
    // The last of a key wins; in key order, so two bulks lock shared rows in the same order.
    let latest: BTreeMap<(&str, &str), &SuppressionRecord> = items
        .iter()
        .map(|s| ((s.recipient.as_str(), s.channel.as_str()), &s.record))
        .collect();
    let rows: Vec<(&str, &str, &SuppressionRecord)> = latest
        .into_iter()
        .map(|((recipient, channel), record)| (recipient, channel, record))
        .collect();
    upsert_suppressions(tx, &rows).await?;
    notify_subjects(shared, tx, rows.iter().map(|(recipient, ..)| *recipient)).await
}

/// Inserts or replaces `rows` (distinct keys) in one statement.
async fn upsert_suppressions(
    tx: &Transaction<'_>,
    rows: &[(&str, &str, &SuppressionRecord)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let recipients: Vec<&str> = rows.iter().map(|(r, ..)| *r).collect();
    let channels: Vec<&str> = rows.iter().map(|(_, c, _)| *c).collect();
    let expiries: Vec<Option<i64>> = rows
        .iter()
        .map(|(.., record)| record.expires_at_ms.map(ms))
        .collect();
    let records: Vec<Vec<u8>> = rows.iter().map(|(.., record)| encode(record)).collect();
    let upsert = tx
        .prepare_cached(
            "INSERT INTO suppressions (recipient, channel, expires_ms, record)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::bytea[])
             ON CONFLICT (recipient, channel)
             DO UPDATE SET expires_ms = EXCLUDED.expires_ms, record = EXCLUDED.record",
        )
        .await?;
    tx.execute(&upsert, &[&recipients, &channels, &expiries, &records])
        .await?;
    Ok(())
}

/// Tells the other nodes that these recipients' suppressions or preferences changed, once
/// each, when `tx` commits.
async fn notify_subjects<'a>(
    shared: &Shared,
    tx: &Transaction<'_>,
    recipients: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let distinct: BTreeSet<&str> = recipients.into_iter().collect();
    let changes: Vec<Change> = distinct
        .into_iter()
        .map(|r| Change::Subject(r.to_owned()))
        .collect();
    shared.notify_all(tx, &changes).await
}

/// Appends an audit entry in `tx`.
pub(super) async fn append_audit(tx: &Transaction<'_>, entry: &AuditEntry) -> Result<()> {
    append_audits(tx, std::slice::from_ref(entry)).await
}

/// Appends audit entries in `tx`, in one statement.
async fn append_audits(tx: &Transaction<'_>, entries: &[AuditEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Vec<u8>> = entries.iter().map(|e| id_bytes(audit_id(e))).collect();
    let subjects: Vec<&str> = entries.iter().map(|e| e.subject.as_str()).collect();
    let actors: Vec<&str> = entries.iter().map(|e| e.actor.as_str()).collect();
    let records: Vec<Vec<u8>> = entries.iter().map(encode).collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO audit (id, subject, actor, record)
             SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::text[], $4::bytea[])",
        )
        .await?;
    tx.execute(&insert, &[&ids, &subjects, &actors, &records])
        .await?;
    Ok(())
}

/// Stores suppressions and the audit entries describing them, all or nothing.
pub(super) async fn add_suppressions(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    items: &[NewSuppression],
    audit: &[AuditEntry],
) -> Result<()> {
    let written = async {
        let tx = client.transaction().await?;
        put_suppressions(shared, &tx, items).await?;
        append_audits(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    noted(shared, written)
}

/// Deletes the suppression of exactly (`recipient`, `channel`), with `audit(removed)`; nothing
/// is written when there was none.
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
    let removed = async {
        let tx = client.transaction().await?;
        let delete = tx
            .prepare_cached(
                "DELETE FROM suppressions WHERE recipient = $1 AND channel = $2 RETURNING record",
            )
            .await?;
        let Some(row) = tx
            .query_opt(&delete, &[&recipient.as_str(), &channel])
            .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let record: SuppressionRecord = decode("suppressions", row.get::<_, &[u8]>(0))?;
        append_audit(&tx, &audit(&record)).await?;
        notify_subjects(shared, &tx, [recipient.as_str()]).await?;
        tx.commit().await?;
        Ok(Some(record))
    }
    .await;
    noted(shared, removed)
}

/// Takes the preference locks of `keys` (see the module docs), in byte order.
async fn lock_preferences(tx: &Transaction<'_>, keys: &[&str]) -> Result<()> {
    let keys: BTreeSet<&str> = keys.iter().copied().collect();
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))")
        .await?;
    for key in keys {
        tx.execute(&lock, &[&PREFERENCES_LOCK, &key]).await?;
    }
    Ok(())
}

/// The preferences stored under exactly `key` (no pseudonym merged in).
async fn preferences_under(client: &impl GenericClient, key: &str) -> Result<Option<Preferences>> {
    let select = client
        .prepare_cached("SELECT record FROM preferences WHERE recipient = $1")
        .await?;
    client
        .query_opt(&select, &[&key])
        .await?
        .map(|row| decode("preferences", row.get::<_, &[u8]>(0)))
        .transpose()
}

/// Stores `preferences` under `key` (`None` resets to the defaults: no row).
async fn put_preferences(
    tx: &Transaction<'_>,
    key: &str,
    preferences: Option<&Preferences>,
) -> Result<()> {
    match preferences {
        Some(p) => {
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO preferences (recipient, record) VALUES ($1, $2)
                     ON CONFLICT (recipient) DO UPDATE SET record = EXCLUDED.record",
                )
                .await?;
            tx.execute(&upsert, &[&key, &encode(p)]).await?;
        }
        None => {
            delete_preferences(tx, key).await?;
        }
    }
    Ok(())
}

/// Deletes the preferences stored under `key`; returns them.
async fn delete_preferences(tx: &Transaction<'_>, key: &str) -> Result<Option<Preferences>> {
    let delete = tx
        .prepare_cached("DELETE FROM preferences WHERE recipient = $1 RETURNING record")
        .await?;
    tx.query_opt(&delete, &[&key])
        .await?
        .map(|row| decode("preferences", row.get::<_, &[u8]>(0)))
        .transpose()
}

/// Replaces `recipient`'s own preferences with what `change` makes of them, with the audit
/// entry `audit(before, after)`; returns them.
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
    let who = recipient.as_str();
    let updated = async {
        let tx = client.transaction().await?;
        lock_preferences(&tx, &[who]).await?;
        let before = preferences_under(&tx, who).await?;
        let after = change(before.clone());
        put_preferences(&tx, who, after.as_ref()).await?;
        append_audit(&tx, &audit(before.as_ref(), after.as_ref())).await?;
        notify_subjects(shared, &tx, [who]).await?;
        tx.commit().await?;
        Ok(after)
    }
    .await;
    noted(shared, updated)
}

/// Removes up to `max` suppressions that expired by `now_ms` (see
/// [`crate::subjects::sweep_bound`]), earliest expiry first; returns how many. Rows another
/// node's sweep (or a replacing write) holds are skipped, not waited for: that sweep takes them.
pub(super) async fn sweep_suppressions(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    now_ms: u64,
    max: usize,
) -> Result<usize> {
    if max == 0 {
        return Ok(0);
    }
    let swept = async {
        let tx = client.transaction().await?;
        let sweep = tx
            .prepare_cached(
                "DELETE FROM suppressions WHERE (recipient, channel) IN (
                     SELECT recipient, channel FROM suppressions
                     WHERE expires_ms < $1
                     ORDER BY expires_ms, recipient, channel
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 RETURNING recipient",
            )
            .await?;
        let rows = tx
            .query(&sweep, &[&ms(sweep_bound(now_ms)), &count(max)])
            .await?;
        // An expired suppression already stopped applying; the notice only keeps other nodes'
        // copies the same as the table.
        notify_subjects(shared, &tx, rows.iter().map(|row| row.get::<_, &str>(0))).await?;
        tx.commit().await?;
        Ok(rows.len())
    }
    .await;
    noted(shared, swept)
}

/// GDPR erasure of `recipient`, whose pseudonym is `alias`, with `audit(alias)` in the same
/// transaction: exactly what [`crate::subjects::erase`] does on redb.
///
/// - Its messages are deleted with their deliveries (their idempotency keys stay in
///   `idempotency`, so a partner's retry is still a duplicate). Rows are locked in key order
///   first: an attempt outcome being recorded for one of them meanwhile is waited for, never
///   deadlocked with.
/// - Its preferences are deleted; their opt-outs are laid over the pseudonym's
///   ([`erased_preferences`]).
/// - Its suppressions move under the pseudonym, without their notes ([`erased_suppression`]),
///   replacing any of the same channel there.
/// - Its audit entries are re-filed under the pseudonym, every mention of the address replaced
///   ([`refile`]).
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
    let erased = async {
        let tx = client.transaction().await?;
        let report = erase_in(&tx, alias, recipient).await?;
        append_audit(&tx, &audit(alias)).await?;
        notify_subjects(shared, &tx, [recipient.as_str(), alias.as_str()]).await?;
        tx.commit().await?;
        Ok(report)
    }
    .await;
    noted(shared, erased)
}

async fn erase_in(
    tx: &Transaction<'_>,
    alias: &Recipient,
    recipient: &Recipient,
) -> Result<Erasure> {
    let (alias, who) = (alias.as_str(), recipient.as_str());
    let mut report = Erasure {
        pseudonym: Some(Recipient::from_pseudonym(alias.to_owned())),
        ..Erasure::default()
    };
    lock_preferences(tx, &[who, alias]).await?;
    report.messages = erase_messages(tx, who).await?;

    if let Some(previous) = delete_preferences(tx, who).await? {
        report.preferences = true;
        let held = preferences_under(tx, alias).await?;
        if let Some(kept) = erased_preferences(&previous, held) {
            put_preferences(tx, alias, Some(&kept)).await?;
            report.opt_outs_kept = true;
        }
    }

    let take = tx
        .prepare_cached("DELETE FROM suppressions WHERE recipient = $1 RETURNING channel, record")
        .await?;
    let mut moved = Vec::new();
    for row in tx.query(&take, &[&who]).await? {
        let record: SuppressionRecord = decode("suppressions", row.get::<_, &[u8]>(1))?;
        moved.push((row.get::<_, String>(0), erased_suppression(record)));
    }
    moved.sort_by(|a, b| a.0.cmp(&b.0));
    let rows: Vec<(&str, &str, &SuppressionRecord)> = moved
        .iter()
        .map(|(channel, record)| (alias, channel.as_str(), record))
        .collect();
    upsert_suppressions(tx, &rows).await?;
    report.suppressions = moved.len();

    report.audit_entries = refile_audit(tx, who, alias).await?;
    Ok(report)
}

/// Deletes the messages of `who` with their deliveries; returns how many messages.
async fn erase_messages(tx: &Transaction<'_>, who: &str) -> Result<usize> {
    let lock_messages = tx
        .prepare_cached("SELECT id FROM messages WHERE recipient = $1 ORDER BY id FOR UPDATE")
        .await?;
    let ids: Vec<Vec<u8>> = tx
        .query(&lock_messages, &[&who])
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let lock_deliveries = tx
        .prepare_cached(
            "SELECT 1 FROM deliveries WHERE message_id = ANY($1)
             ORDER BY message_id, destination FOR UPDATE",
        )
        .await?;
    tx.execute(&lock_deliveries, &[&ids]).await?;
    let deliveries = tx
        .prepare_cached("DELETE FROM deliveries WHERE message_id = ANY($1)")
        .await?;
    tx.execute(&deliveries, &[&ids]).await?;
    let messages = tx
        .prepare_cached("DELETE FROM messages WHERE id = ANY($1)")
        .await?;
    tx.execute(&messages, &[&ids]).await?;
    Ok(ids.len())
}

/// Re-files every audit entry of subject `from` under `to`, every mention of `from` in them
/// replaced; returns how many.
async fn refile_audit(tx: &Transaction<'_>, from: &str, to: &str) -> Result<usize> {
    let select = tx
        .prepare_cached("SELECT id, record FROM audit WHERE subject = $1 ORDER BY id FOR UPDATE")
        .await?;
    let rows = tx.query(&select, &[&from]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut entry: AuditEntry = decode("audit", row.get::<_, &[u8]>(1))?;
        refile(&mut entry, from, to, true);
        ids.push(row.get::<_, Vec<u8>>(0));
        records.push(encode(&entry));
    }
    let update = tx
        .prepare_cached(
            "UPDATE audit SET subject = $1, record = refiled.record
             FROM UNNEST($2::bytea[], $3::bytea[]) AS refiled (id, record)
             WHERE audit.id = refiled.id",
        )
        .await?;
    tx.execute(&update, &[&to, &ids, &records]).await?;
    Ok(rows.len())
}

// ---- reads ----------------------------------------------------------------------------------

/// The suppressions stored under `recipient`'s address and under `pseudonym`, by channel, in
/// one statement.
async fn suppressions_both(
    client: &impl GenericClient,
    recipient: &Recipient,
    pseudonym: &Recipient,
) -> Result<(Vec<SuppressionView>, Vec<SuppressionView>)> {
    let select = client
        .prepare_cached(
            "SELECT recipient, channel, record FROM suppressions
             WHERE recipient = $1 OR recipient = $2
             ORDER BY recipient, channel",
        )
        .await?;
    let (mut own, mut kept) = (Vec::new(), Vec::new());
    for row in client
        .query(&select, &[&recipient.as_str(), &pseudonym.as_str()])
        .await?
    {
        let key: &str = row.get(0);
        let (list, who) = if key == recipient.as_str() {
            (&mut own, recipient)
        } else {
            (&mut kept, pseudonym)
        };
        list.push(SuppressionView {
            recipient: who.clone(),
            channel: row.get(1),
            record: decode("suppressions", row.get::<_, &[u8]>(2))?,
        });
    }
    Ok((own, kept))
}

/// Every suppression that applies to `recipient` (under its address, then its pseudonym), by
/// channel.
pub(super) async fn suppressions_of(
    client: &impl GenericClient,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<Vec<(String, SuppressionRecord)>> {
    let (own, kept) = suppressions_both(client, recipient, &pseudonyms.of(recipient)).await?;
    Ok(applying(own, kept)
        .into_iter()
        .map(|s| (s.channel, s.record))
        .collect())
}

/// Suppressions in (recipient, channel) order after the cursor `after`, as many as `limit`,
/// and whether more follow.
pub(super) async fn list_suppressions(
    client: &impl GenericClient,
    recipient: Option<&Recipient>,
    channel: Option<&str>,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<(Vec<SuppressionView>, bool)> {
    // One statement per combination of filters rather than `$n IS NULL OR …`: each is planned
    // for what it filters on (a recipient is a primary-key range), never as a generic scan.
    let wanted = count(limit.saturating_add(1));
    let recipient = recipient.map(Recipient::as_str);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut conditions = Vec::new();
    if let Some(recipient) = &recipient {
        params.push(recipient);
        conditions.push(format!("recipient = ${}", params.len()));
    }
    if let Some(channel) = &channel {
        params.push(channel);
        conditions.push(format!("channel = ${}", params.len()));
    }
    if let Some((r, c)) = &after {
        params.push(r);
        params.push(c);
        let n = params.len();
        conditions.push(format!("(recipient, channel) > (${}, ${n})", n - 1));
    }
    params.push(&wanted);
    let sql = format!(
        "SELECT recipient, channel, record FROM suppressions {} ORDER BY recipient, channel \
         LIMIT ${}",
        where_clause(&conditions),
        params.len()
    );
    let select = client.prepare_cached(&sql).await?;
    let rows = client.query(&select, &params).await?;
    let more = rows.len() > limit;
    let items = rows
        .iter()
        .take(limit)
        .map(|row| {
            Ok(SuppressionView {
                recipient: stored_recipient(row.get(0)),
                channel: row.get(1),
                record: decode("suppressions", row.get::<_, &[u8]>(2))?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((items, more))
}

/// A recipient's effective preferences ([`effective_preferences`]), in one statement.
pub(super) async fn preferences_of(
    client: &impl GenericClient,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<Option<Preferences>> {
    let alias = pseudonyms.of(recipient);
    let select = client
        .prepare_cached(
            "SELECT recipient, record FROM preferences WHERE recipient = $1 OR recipient = $2",
        )
        .await?;
    let (mut own, mut kept) = (None, None);
    for row in client
        .query(&select, &[&recipient.as_str(), &alias.as_str()])
        .await?
    {
        let preferences = Some(decode("preferences", row.get::<_, &[u8]>(1))?);
        if row.get::<_, &str>(0) == recipient.as_str() {
            own = preferences;
        } else {
            kept = preferences;
        }
    }
    Ok(effective_preferences(own, kept))
}

/// The audit trail, newest first, optionally of one subject and/or one actor, one page before
/// the cursor `after` (an entry id), and whether more follow. Each filter is an index range
/// (`audit_by_subject`, `audit_by_actor`, or the primary key), read backwards up to the page.
pub(super) async fn list_audit(
    client: &impl GenericClient,
    subject: Option<&str>,
    actor: Option<&str>,
    after: Option<u128>,
    limit: usize,
) -> Result<(Vec<AuditView>, bool)> {
    // As on redb, the cursor bound is exclusive and no cursor means "below u128::MAX".
    let upper = id_bytes(after.unwrap_or(u128::MAX));
    let wanted = count(limit.saturating_add(1));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&upper];
    let mut conditions = vec!["id < $1".to_owned()];
    if let Some(subject) = &subject {
        params.push(subject);
        conditions.push(format!("subject = ${}", params.len()));
    }
    if let Some(actor) = &actor {
        params.push(actor);
        conditions.push(format!("actor = ${}", params.len()));
    }
    params.push(&wanted);
    let sql = format!(
        "SELECT id, record FROM audit {} ORDER BY id DESC LIMIT ${}",
        where_clause(&conditions),
        params.len()
    );
    let select = client.prepare_cached(&sql).await?;
    let rows = client.query(&select, &params).await?;
    let more = rows.len() > limit;
    let items = rows
        .iter()
        .take(limit)
        .map(|row| {
            Ok(AuditView {
                id: id_from(row.get(0), "audit")?,
                entry: decode("audit", row.get::<_, &[u8]>(1))?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((items, more))
}

/// Everything held about `recipient` ([`assemble_export`]), on one snapshot.
pub(super) async fn export(
    client: &mut deadpool_postgres::Client,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<SubjectExport> {
    let alias = pseudonyms.of(recipient);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let (own_suppressions, kept_suppressions) = suppressions_both(&tx, recipient, &alias).await?;
    let own = Held {
        preferences: preferences_under(&tx, recipient.as_str()).await?,
        suppressions: own_suppressions,
        audit: list_audit(&tx, Some(recipient.as_str()), None, None, usize::MAX)
            .await?
            .0,
    };
    let kept = Held {
        preferences: preferences_under(&tx, alias.as_str()).await?,
        suppressions: kept_suppressions,
        audit: list_audit(&tx, Some(alias.as_str()), None, None, usize::MAX)
            .await?
            .0,
    };
    let messages = messages_of(&tx, recipient).await?;
    tx.commit().await?;
    Ok(assemble_export(own, kept, messages))
}

/// `recipient`'s messages, oldest first, with their bodies and deliveries.
async fn messages_of(
    client: &impl GenericClient,
    recipient: &Recipient,
) -> Result<Vec<MessageView>> {
    let select = client
        .prepare_cached("SELECT id, record, body FROM messages WHERE recipient = $1 ORDER BY id")
        .await?;
    let mut messages = Vec::new();
    for row in client.query(&select, &[&recipient.as_str()]).await? {
        messages.push(MessageView {
            id: MessageId(id_from(row.get(0), "messages")?),
            record: decode("messages", row.get::<_, &[u8]>(1))?,
            deliveries: Vec::new(),
            body: Some(row.get(2)),
        });
    }
    let ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();
    let mut deliveries = super::messages::deliveries_of(client, &ids).await?;
    for message in &mut messages {
        message.deliveries = deliveries.remove(&message.id).unwrap_or_default();
    }
    Ok(messages)
}
