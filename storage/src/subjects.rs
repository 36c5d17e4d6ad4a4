//! Data subjects (recipients): suppressions, preferences, the audit trail, GDPR export and
//! erasure.
//!
//! Every change here is written together with its audit entry in one job, so the trail cannot
//! miss a change that happened, nor record one that did not. Suppressions carry an expiry index
//! that a periodic sweep uses; an expired entry already stops applying at its expiry time
//! ([`SuppressionRecord::active`]), the sweep only reclaims it.

use std::sync::Arc;

use hmac::{Hmac, KeyInit as _, Mac as _};
use redb::{ReadTransaction, ReadableTable as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::error::Result;
use crate::messages::{self, MessageView};
use crate::recipient::Recipient;
use crate::records::{AuditEntry, MessageId, Preferences, SuppressionRecord, decode, encode};
use crate::tables::{AUDIT, AUDIT_BY_SUBJECT, MESSAGES_BY_RECIPIENT, PREFERENCES, SUPPRESSIONS};
use crate::tx::Tx;

/// Computes the keyed pseudonyms of erased recipients.
///
/// `anon:<hex of HMAC-SHA256(key, SHA-256(canonical address))>`, with a 256-bit key generated
/// at the first start and kept in the store's `keys` table. Without the key a pseudonym cannot
/// be recomputed from a guessed address, so a read token cannot confirm who was erased; with
/// it, herald can still recognise an erased recipient's opt-outs. Hashing the address first
/// lets pseudonyms written before the key existed (`sha256:<hex>`) be migrated from the
/// stored hash alone.
#[derive(Clone)]
pub struct Pseudonyms {
    key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(<key>)")
    }
}

/// The pseudonym key: read from the `keys` table, or made (32 random bytes) and stored there
/// at the first start.
pub(crate) fn load_key(txn: &redb::WriteTransaction) -> Result<Pseudonyms> {
    let mut keys = txn.open_table(crate::tables::KEYS)?;
    let stored = keys
        .get(crate::tables::PSEUDONYM_KEY)?
        .and_then(|v| <[u8; 32]>::try_from(v.value()).ok());
    if let Some(key) = stored {
        return Ok(Pseudonyms::new(key));
    }
    let key: [u8; 32] = rand::random();
    keys.insert(crate::tables::PSEUDONYM_KEY, key.as_slice())?;
    Ok(Pseudonyms::new(key))
}

/// The prefix of every keyed pseudonym.
pub const PSEUDONYM_PREFIX: &str = "anon:";
/// The prefix of the unkeyed pseudonyms of schema version 1, migrated at open.
pub(crate) const LEGACY_PREFIX: &str = "sha256:";

impl Pseudonyms {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self { key: Arc::new(key) }
    }

    /// What an erased `recipient` is known as from then on.
    pub fn of(&self, recipient: &Recipient) -> Recipient {
        self.of_hash(&Sha256::digest(recipient.as_str().as_bytes()))
    }

    /// The keyed pseudonym for a legacy `sha256:<hex>` one; `None` if it is not one.
    pub(crate) fn of_legacy(&self, legacy: &str) -> Option<Recipient> {
        let hash = hex::decode(legacy.strip_prefix(LEGACY_PREFIX)?).ok()?;
        (hash.len() == 32).then(|| self.of_hash(&hash))
    }

    fn of_hash(&self, hash: &[u8]) -> Recipient {
        // A 32-byte key is always accepted; the fallback only satisfies the type.
        let tag = Hmac::<Sha256>::new_from_slice(self.key.as_slice()).map_or_else(
            |_| Vec::new(),
            |mut mac| {
                mac.update(hash);
                mac.finalize().into_bytes().to_vec()
            },
        );
        Recipient::from_pseudonym(format!("{PSEUDONYM_PREFIX}{}", hex::encode(tag)))
    }
}

/// A suppression to store.
#[derive(Debug, Clone)]
pub struct NewSuppression {
    pub recipient: Recipient,
    /// A channel name, or `*` for every channel.
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
        put_suppression(tx, item.recipient.as_str(), &item.channel, &item.record)?;
    }
    Ok(())
}

fn put_suppression(
    tx: &mut Tx<'_>,
    recipient: &str,
    channel: &str,
    record: &SuppressionRecord,
) -> Result<()> {
    let previous: Option<SuppressionRecord> = tx
        .suppressions()?
        .get((recipient, channel))?
        .map(|raw| decode("suppressions", raw.value()))
        .transpose()?;
    if let Some(at) = previous.and_then(|p| p.expires_at_ms) {
        tx.suppressions_by_expiry()?
            .remove((at, recipient, channel))?;
    }
    tx.suppressions()?
        .insert((recipient, channel), encode(record).as_slice())?;
    if let Some(at) = record.expires_at_ms {
        tx.suppressions_by_expiry()?
            .insert((at, recipient, channel), ())?;
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

/// The preferences stored under exactly this key (no pseudonym merged in).
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

/// `base` with `over` laid on top: `over`'s explicit choices win, `base`'s others remain.
pub(crate) fn overlay(base: Option<Preferences>, over: Option<Preferences>) -> Option<Preferences> {
    let Some(mut merged) = base else { return over };
    let Some(over) = over else {
        return Some(merged);
    };
    merged.channels.extend(over.channels);
    for (category, channels) in over.categories {
        merged
            .categories
            .entry(category)
            .or_default()
            .extend(channels);
    }
    Some(merged)
}

/// Only the opt-outs (`false`) of `preferences`: what erasure keeps under the pseudonym.
fn opt_outs(preferences: &Preferences) -> Option<Preferences> {
    let kept = Preferences {
        channels: preferences
            .channels
            .iter()
            .filter(|(_, on)| !**on)
            .map(|(c, on)| (c.clone(), *on))
            .collect(),
        categories: preferences
            .categories
            .iter()
            .map(|(category, channels)| {
                let off = channels
                    .iter()
                    .filter(|(_, on)| !**on)
                    .map(|(c, on)| (c.clone(), *on))
                    .collect::<std::collections::BTreeMap<_, _>>();
                (category.clone(), off)
            })
            .filter(|(_, off)| !off.is_empty())
            .collect(),
    };
    (!kept.channels.is_empty() || !kept.categories.is_empty()).then_some(kept)
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// The pseudonym the recipient's opt-outs and audit entries are kept under.
    pub pseudonym: Option<Recipient>,
    pub messages: usize,
    pub preferences: bool,
    /// Suppressions now kept under the pseudonym.
    pub suppressions: usize,
    /// Whether preference opt-outs are now kept under the pseudonym.
    pub opt_outs_kept: bool,
    pub audit_entries: usize,
}

/// GDPR erasure: deletes the recipient's messages (with their deliveries) and preferences,
/// and keeps every opt-out — its suppressions and the `false` entries of its preferences —
/// under its keyed pseudonym, so they are still honoured; its audit entries are pseudonymised.
pub(crate) fn erase(tx: &mut Tx<'_>, alias: &Recipient, recipient: &Recipient) -> Result<Erasure> {
    let (alias, who) = (alias.as_str(), recipient.as_str());
    let mut report = Erasure {
        pseudonym: Some(Recipient::from_pseudonym(alias.to_owned())),
        ..Erasure::default()
    };

    let ids: Vec<u128> = tx
        .messages_by_recipient()?
        .range((who, 0)..=(who, u128::MAX))?
        .map(|e| e.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for id in &ids {
        messages::delete(tx, *id)?;
        tx.messages_by_recipient()?.remove((who, *id))?;
    }
    report.messages = ids.len();

    if let Some(previous) = put_preferences(tx, who, None)? {
        report.preferences = true;
        if let Some(kept) = opt_outs(&previous) {
            let held = get_preferences(tx, alias)?;
            let merged = overlay(held, Some(kept));
            put_preferences(tx, alias, merged.as_ref())?;
            report.opt_outs_kept = true;
        }
    }

    let held: Vec<(String, Vec<u8>)> = tx
        .suppressions()?
        .range((who, "")..)?
        .map_while(|e| match e {
            Ok((k, v)) if k.value().0 == who => {
                Some(Ok((k.value().1.to_owned(), v.value().to_vec())))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for (channel, raw) in &held {
        let mut record: SuppressionRecord = decode("suppressions", raw)?;
        delete_suppression(tx, who, channel)?;
        record.note = None; // free text may name the person
        put_suppression(tx, alias, channel, &record)?;
    }
    report.suppressions = held.len();

    report.audit_entries = move_audit_subject(tx, who, alias, true)?;
    Ok(report)
}

/// Re-files every audit entry of subject `from` under `to`; with `scrub`, every mention of
/// `from` inside the entries is replaced too. Returns how many entries moved.
pub(crate) fn move_audit_subject(
    tx: &mut Tx<'_>,
    from: &str,
    to: &str,
    scrub_values: bool,
) -> Result<usize> {
    let entries: Vec<u128> = tx
        .audit_by_subject()?
        .range((from, 0)..=(from, u128::MAX))?
        .map(|e| e.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for id in &entries {
        let Some(raw) = tx.audit()?.get(*id)?.map(|r| r.value().to_vec()) else {
            continue;
        };
        let mut entry: AuditEntry = decode("audit", &raw)?;
        to.clone_into(&mut entry.subject);
        if scrub_values {
            entry.before = entry.before.map(|v| scrub(v, from, to));
            entry.after = entry.after.map(|v| scrub(v, from, to));
        }
        tx.audit()?.insert(*id, encode(&entry).as_slice())?;
        tx.audit_by_subject()?.remove((from, *id))?;
        tx.audit_by_subject()?.insert((to, *id), ())?;
    }
    Ok(entries.len())
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

/// A suppression as listed.
#[derive(Debug, Clone)]
pub struct SuppressionView {
    pub recipient: Recipient,
    pub channel: String,
    pub record: SuppressionRecord,
}

/// The suppressions stored under exactly `key`, by channel.
fn suppressions_under(txn: &ReadTransaction, key: &Recipient) -> Result<Vec<SuppressionView>> {
    let table = txn.open_table(SUPPRESSIONS)?;
    let mut out = Vec::new();
    for entry in table.range((key.as_str(), "")..)? {
        let (k, v) = entry?;
        let (r, channel) = k.value();
        if r != key.as_str() {
            break;
        }
        out.push(SuppressionView {
            recipient: key.clone(),
            channel: channel.to_owned(),
            record: decode("suppressions", v.value())?,
        });
    }
    Ok(out)
}

/// Every suppression held for `recipient`: under its address, then under its pseudonym.
pub(crate) fn suppressions_of(
    txn: &ReadTransaction,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<Vec<SuppressionView>> {
    let mut out = suppressions_under(txn, recipient)?;
    out.extend(suppressions_under(txn, &pseudonyms.of(recipient))?);
    Ok(out)
}

/// A recipient's effective preferences: the opt-outs kept under its pseudonym (if it was
/// erased) with whatever it chose since laid on top.
pub(crate) fn preferences_of(
    txn: &ReadTransaction,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<Option<Preferences>> {
    let table = txn.open_table(PREFERENCES)?;
    let get = |key: &str| -> Result<Option<Preferences>> {
        table
            .get(key)?
            .map(|raw| decode("preferences", raw.value()))
            .transpose()
    };
    let kept = get(pseudonyms.of(recipient).as_str())?;
    Ok(overlay(kept, get(recipient.as_str())?))
}

/// Suppressions in (recipient, channel) order after the cursor `after`.
pub(crate) fn list_suppressions(
    txn: &ReadTransaction,
    recipient: Option<&Recipient>,
    channel: Option<&str>,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<(Vec<SuppressionView>, bool)> {
    let table = txn.open_table(SUPPRESSIONS)?;
    let recipient = recipient.map(Recipient::as_str);
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
            // Keys are written canonical; a key that is not (a bug) is not worth failing a
            // listing for, so it is shown as stored.
            recipient: Recipient::parse(r)
                .unwrap_or_else(|_| Recipient::from_pseudonym(r.to_owned())),
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

/// The audit trail, newest first, optionally for one subject and/or one actor, one page after
/// the cursor `after`. Walks the trail (or the subject's index) backwards and stops as soon as
/// the page is full: the cost is the page, not the trail.
pub(crate) fn list_audit(
    txn: &ReadTransaction,
    subject: Option<&str>,
    actor: Option<&str>,
    after: Option<u128>,
    limit: usize,
) -> Result<(Vec<AuditView>, bool)> {
    let audit = txn.open_table(AUDIT)?;
    let upper = after.unwrap_or(u128::MAX);
    let by_subject = txn.open_table(AUDIT_BY_SUBJECT)?;
    let ids: Box<dyn Iterator<Item = Result<u128>>> = match subject {
        Some(subject) => Box::new(
            by_subject
                .range((subject, 0)..(subject, upper))?
                .rev()
                .map(|e| e.map(|(k, _)| k.value().1).map_err(Into::into)),
        ),
        None => Box::new(
            audit
                .range(..upper)?
                .rev()
                .map(|e| e.map(|(k, _)| k.value()).map_err(Into::into)),
        ),
    };
    let mut items = Vec::new();
    let mut more = false;
    for id in ids {
        let id = id?;
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

/// Everything held about a recipient. After an erasure that is only what is kept under its
/// pseudonym: opt-outs and pseudonymised audit entries, none naming the address.
#[derive(Debug, Clone)]
pub struct SubjectExport {
    pub preferences: Option<Preferences>,
    pub suppressions: Vec<SuppressionView>,
    pub audit: Vec<AuditView>,
    pub messages: Vec<MessageView>,
}

pub(crate) fn export(
    txn: &ReadTransaction,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<SubjectExport> {
    let by_recipient = txn.open_table(MESSAGES_BY_RECIPIENT)?;
    let mut messages = Vec::new();
    let who = recipient.as_str();
    for entry in by_recipient.range((who, 0)..=(who, u128::MAX))? {
        let (k, _) = entry?;
        if let Some(view) = messages::get(txn, MessageId(k.value().1))? {
            messages.push(view);
        }
    }
    let alias = pseudonyms.of(recipient);
    let mut audit = list_audit(txn, Some(who), None, None, usize::MAX)?.0;
    audit.extend(list_audit(txn, Some(alias.as_str()), None, None, usize::MAX)?.0);
    Ok(SubjectExport {
        preferences: preferences_of(txn, pseudonyms, recipient)?,
        suppressions: suppressions_of(txn, pseudonyms, recipient)?,
        audit,
        messages,
    })
}
