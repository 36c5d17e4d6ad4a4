//! Data subjects (recipients): suppressions, preferences, the audit trail, GDPR export and
//! erasure.
//!
//! Every change here is written together with its audit entry in one job, so the trail cannot
//! miss a change that happened, nor record one that did not. Suppressions carry an expiry index
//! that a periodic sweep uses; an expired entry already stops applying at its expiry time
//! ([`SuppressionRecord::active`]), the sweep only reclaims it.

use redb::{ReadTransaction, ReadableTable as _};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::messages::{self, MessageView};
use crate::records::{AuditEntry, MessageId, Preferences, SuppressionRecord, decode, encode};
use crate::tables::{AUDIT, AUDIT_BY_SUBJECT, MESSAGES_BY_RECIPIENT, PREFERENCES, SUPPRESSIONS};
use crate::tx::Tx;

/// What an erased recipient is known as from then on: `sha256:<hex of the address>`.
pub fn pseudonym(recipient: &str) -> String {
    let digest = Sha256::digest(recipient.as_bytes());
    digest.iter().fold(String::from("sha256:"), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A suppression to store.
#[derive(Debug, Clone)]
pub struct NewSuppression {
    pub recipient: String,
    pub channel: String,
    pub record: SuppressionRecord,
}

pub(crate) fn append_audit(tx: &mut Tx<'_>, entry: &AuditEntry) -> Result<u128> {
    // Time-ordered ids; the random low bits keep two entries of one millisecond apart.
    let id = MessageId::generate(entry.at_ms).0;
    tx.audit()?.insert(id, encode(entry).as_slice())?;
    tx.audit_by_subject()?
        .insert((entry.subject.as_str(), id), ())?;
    Ok(id)
}

/// Stores (or replaces) suppressions. All or nothing: the job fails as a whole.
pub(crate) fn put_suppressions(tx: &mut Tx<'_>, items: &[NewSuppression]) -> Result<()> {
    for item in items {
        let key = (item.recipient.as_str(), item.channel.as_str());
        let previous: Option<SuppressionRecord> = tx
            .suppressions()?
            .get(key)?
            .map(|raw| decode("suppressions", raw.value()))
            .transpose()?;
        if let Some(at) = previous.and_then(|p| p.expires_at_ms) {
            tx.suppressions_by_expiry()?.remove((at, key.0, key.1))?;
        }
        tx.suppressions()?
            .insert(key, encode(&item.record).as_slice())?;
        if let Some(at) = item.record.expires_at_ms {
            tx.suppressions_by_expiry()?
                .insert((at, key.0, key.1), ())?;
        }
    }
    Ok(())
}

pub(crate) fn delete_suppression(
    tx: &mut Tx<'_>,
    recipient: &str,
    channel: &str,
) -> Result<Option<SuppressionRecord>> {
    let removed: Option<SuppressionRecord> = tx
        .suppressions()?
        .remove((recipient, channel))?
        .map(|raw| decode("suppressions", raw.value()))
        .transpose()?;
    if let Some(at) = removed.as_ref().and_then(|r| r.expires_at_ms) {
        tx.suppressions_by_expiry()?
            .remove((at, recipient, channel))?;
    }
    Ok(removed)
}

/// Removes up to `max` suppressions that expired by `now_ms`; returns how many.
pub(crate) fn sweep_suppressions(tx: &mut Tx<'_>, now_ms: u64, max: usize) -> Result<usize> {
    let expired: Vec<(u64, String, String)> = tx
        .suppressions_by_expiry()?
        .range((0, "", "")..=(now_ms, "", ""))?
        .take(max)
        .map(|e| {
            e.map(|(k, _)| {
                let (at, r, c) = k.value();
                (at, r.to_owned(), c.to_owned())
            })
        })
        .collect::<Result<_, _>>()?;
    for (at, recipient, channel) in &expired {
        tx.suppressions_by_expiry()?
            .remove((*at, recipient.as_str(), channel.as_str()))?;
        tx.suppressions()?
            .remove((recipient.as_str(), channel.as_str()))?;
    }
    Ok(expired.len())
}

pub(crate) fn get_preferences(tx: &mut Tx<'_>, recipient: &str) -> Result<Option<Preferences>> {
    tx.preferences()?
        .get(recipient)?
        .map(|raw| decode("preferences", raw.value()))
        .transpose()
}

/// Stores `preferences` (`None` resets to the defaults); returns the previous ones.
pub(crate) fn put_preferences(
    tx: &mut Tx<'_>,
    recipient: &str,
    preferences: Option<&Preferences>,
) -> Result<Option<Preferences>> {
    let previous = get_preferences(tx, recipient)?;
    match preferences {
        Some(p) => {
            tx.preferences()?.insert(recipient, encode(p).as_slice())?;
        }
        None => {
            tx.preferences()?.remove(recipient)?;
        }
    }
    Ok(previous)
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    pub messages: usize,
    pub preferences: bool,
    /// Suppressions now kept under the pseudonym.
    pub suppressions: usize,
    pub audit_entries: usize,
}

/// GDPR erasure: deletes the recipient's messages (with their deliveries) and preferences,
/// moves its suppressions under [`pseudonym`], and pseudonymises its audit entries.
pub(crate) fn erase(tx: &mut Tx<'_>, recipient: &str) -> Result<Erasure> {
    let alias = pseudonym(recipient);
    let mut report = Erasure::default();

    let ids: Vec<u128> = tx
        .messages_by_recipient()?
        .range((recipient, 0)..=(recipient, u128::MAX))?
        .map(|e| e.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for id in &ids {
        messages::delete(tx, *id)?;
        tx.messages_by_recipient()?.remove((recipient, *id))?;
    }
    report.messages = ids.len();

    report.preferences = put_preferences(tx, recipient, None)?.is_some();

    let held: Vec<(String, Vec<u8>)> = tx
        .suppressions()?
        .range((recipient, "")..)?
        .map_while(|e| match e {
            Ok((k, v)) if k.value().0 == recipient => {
                Some(Ok((k.value().1.to_owned(), v.value().to_vec())))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for (channel, raw) in &held {
        let mut record: SuppressionRecord = decode("suppressions", raw)?;
        delete_suppression(tx, recipient, channel)?;
        record.note = None; // free text may name the person
        put_suppressions(
            tx,
            &[NewSuppression {
                recipient: alias.clone(),
                channel: channel.clone(),
                record,
            }],
        )?;
    }
    report.suppressions = held.len();

    let entries: Vec<u128> = tx
        .audit_by_subject()?
        .range((recipient, 0)..=(recipient, u128::MAX))?
        .map(|e| e.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for id in &entries {
        let Some(raw) = tx.audit()?.get(*id)?.map(|r| r.value().to_vec()) else {
            continue;
        };
        let mut entry: AuditEntry = decode("audit", &raw)?;
        entry.subject.clone_from(&alias);
        entry.before = entry.before.map(|v| scrub(v, recipient, &alias));
        entry.after = entry.after.map(|v| scrub(v, recipient, &alias));
        tx.audit()?.insert(*id, encode(&entry).as_slice())?;
        tx.audit_by_subject()?.remove((recipient, *id))?;
        tx.audit_by_subject()?.insert((alias.as_str(), *id), ())?;
    }
    report.audit_entries = entries.len();
    Ok(report)
}

/// Replaces every string equal to (or containing) `needle` with `alias`.
fn scrub(value: Value, needle: &str, alias: &str) -> Value {
    match value {
        Value::String(s) if s.contains(needle) => Value::String(s.replace(needle, alias)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| scrub(v, needle, alias)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace(needle, alias), scrub(v, needle, alias)))
                .collect(),
        ),
        other => other,
    }
}

// ---- reads ---------------------------------------------------------------------------------

/// Every suppression held for `recipient`, under its address or its pseudonym, by channel.
pub(crate) fn suppressions_of(
    txn: &ReadTransaction,
    recipient: &str,
) -> Result<Vec<(String, SuppressionRecord)>> {
    let table = txn.open_table(SUPPRESSIONS)?;
    let mut out = Vec::new();
    for key in [recipient.to_owned(), pseudonym(recipient)] {
        for entry in table.range((key.as_str(), "")..)? {
            let (k, v) = entry?;
            let (r, channel) = k.value();
            if r != key {
                break;
            }
            out.push((channel.to_owned(), decode("suppressions", v.value())?));
        }
    }
    Ok(out)
}

pub(crate) fn preferences_of(
    txn: &ReadTransaction,
    recipient: &str,
) -> Result<Option<Preferences>> {
    txn.open_table(PREFERENCES)?
        .get(recipient)?
        .map(|raw| decode("preferences", raw.value()))
        .transpose()
}

/// A suppression as listed.
#[derive(Debug, Clone)]
pub struct SuppressionView {
    pub recipient: String,
    pub channel: String,
    pub record: SuppressionRecord,
}

/// Suppressions in (recipient, channel) order after the cursor `after`.
pub(crate) fn list_suppressions(
    txn: &ReadTransaction,
    recipient: Option<&str>,
    channel: Option<&str>,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<(Vec<SuppressionView>, bool)> {
    let table = txn.open_table(SUPPRESSIONS)?;
    let start = after.unwrap_or((recipient.unwrap_or(""), ""));
    let mut items = Vec::new();
    let mut more = false;
    for entry in table.range(start..)? {
        let (k, v) = entry?;
        let (r, c) = k.value();
        if after == Some((r, c)) {
            continue;
        }
        if recipient.is_some_and(|want| want != r) {
            if recipient.is_some_and(|want| r > want) {
                break;
            }
            continue;
        }
        if channel.is_some_and(|want| want != c) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(SuppressionView {
            recipient: r.to_owned(),
            channel: c.to_owned(),
            record: decode("suppressions", v.value())?,
        });
    }
    Ok((items, more))
}

/// An audit entry with its id.
#[derive(Debug, Clone)]
pub struct AuditView {
    pub id: u128,
    pub entry: AuditEntry,
}

/// The audit trail, newest first, optionally for one subject and/or one actor.
pub(crate) fn list_audit(
    txn: &ReadTransaction,
    subject: Option<&str>,
    actor: Option<&str>,
    after: Option<u128>,
    limit: usize,
) -> Result<(Vec<AuditView>, bool)> {
    let audit = txn.open_table(AUDIT)?;
    let upper = after.unwrap_or(u128::MAX);
    // Newest first: by the subject's index when there is one, else the whole trail.
    let ids: Vec<u128> = if let Some(subject) = subject {
        txn.open_table(AUDIT_BY_SUBJECT)?
            .range((subject, 0)..(subject, upper))?
            .rev()
            .map(|e| e.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?
    } else {
        audit
            .range(..upper)?
            .rev()
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?
    };
    let mut items = Vec::new();
    let mut more = false;
    for id in ids {
        let Some(raw) = audit.get(id)? else { continue };
        let entry: AuditEntry = decode("audit", raw.value())?;
        if actor.is_some_and(|a| a != entry.actor) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(AuditView { id, entry });
    }
    Ok((items, more))
}

/// Everything held about a recipient.
#[derive(Debug, Clone)]
pub struct SubjectExport {
    pub preferences: Option<Preferences>,
    pub suppressions: Vec<(String, SuppressionRecord)>,
    pub audit: Vec<AuditView>,
    pub messages: Vec<MessageView>,
}

pub(crate) fn export(txn: &ReadTransaction, recipient: &str) -> Result<SubjectExport> {
    let by_recipient = txn.open_table(MESSAGES_BY_RECIPIENT)?;
    let mut messages = Vec::new();
    for entry in by_recipient.range((recipient, 0)..=(recipient, u128::MAX))? {
        let (k, _) = entry?;
        if let Some(view) = messages::get(txn, MessageId(k.value().1))? {
            messages.push(view);
        }
    }
    let (audit, _) = list_audit(txn, Some(recipient), None, None, usize::MAX)?;
    Ok(SubjectExport {
        preferences: preferences_of(txn, recipient)?,
        suppressions: suppressions_of(txn, recipient)?,
        audit,
        messages,
    })
}
