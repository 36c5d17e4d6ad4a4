//! Data subjects (recipients): suppressions, preferences, the audit trail, GDPR export and
//! erasure.
//!
//! Every change here is written together with its audit entry in one job, so the trail cannot
//! miss a change that happened, nor record one that did not. Suppressions carry an expiry index
//! that a periodic sweep uses; an expired entry already stops applying at its expiry time
//! ([`SuppressionRecord::active`]), the sweep only reclaims it.
//!
//! # Rules shared by both backends
//!
//! The table code below is redb's; [`crate::postgres`] stores the same records in its own
//! tables. What the answers *are* is decided once, by the pure functions of the section "rules
//! shared by both backends", which both call with what they read:
//! - what an erasure keeps under the pseudonym ([`erased_preferences`], [`erased_suppression`],
//!   [`refile`] for the audit trail);
//! - how a recipient's two keys combine: its effective preferences
//!   ([`effective_preferences`]), the suppressions that apply to it ([`applying`]), its
//!   export ([`assemble_export`]);
//! - which suppressions the expiry sweep reclaims ([`sweep_bound`]), how an audit entry gets
//!   its id ([`audit_id`]) and how a stored key is shown ([`stored_recipient`]).

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
    let id = audit_id(entry);
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

/// Removes up to `max` suppressions that expired by `now_ms` ([`sweep_bound`]); returns how
/// many.
pub(crate) fn sweep_suppressions(tx: &mut Tx<'_>, now_ms: u64, max: usize) -> Result<usize> {
    let expired: Vec<(u64, String, String)> = tx
        .suppressions_by_expiry()?
        .range((0, "", "")..(sweep_bound(now_ms), "", ""))?
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
        let held = get_preferences(tx, alias)?;
        if let Some(kept) = erased_preferences(&previous, held) {
            put_preferences(tx, alias, Some(&kept))?;
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
        let record: SuppressionRecord = decode("suppressions", raw)?;
        delete_suppression(tx, who, channel)?;
        put_suppression(tx, alias, channel, &erased_suppression(record))?;
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
        refile(&mut entry, from, to, scrub_values);
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
    Ok(applying(
        suppressions_under(txn, recipient)?,
        suppressions_under(txn, &pseudonyms.of(recipient))?,
    ))
}

/// The preferences stored under exactly `key`, on a read snapshot.
fn preferences_under(txn: &ReadTransaction, key: &Recipient) -> Result<Option<Preferences>> {
    txn.open_table(PREFERENCES)?
        .get(key.as_str())?
        .map(|raw| decode("preferences", raw.value()))
        .transpose()
}

/// A recipient's effective preferences ([`effective_preferences`]).
pub(crate) fn preferences_of(
    txn: &ReadTransaction,
    pseudonyms: &Pseudonyms,
    recipient: &Recipient,
) -> Result<Option<Preferences>> {
    Ok(effective_preferences(
        preferences_under(txn, recipient)?,
        preferences_under(txn, &pseudonyms.of(recipient))?,
    ))
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
            recipient: stored_recipient(r),
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

/// Everything held about `recipient`, on one read snapshot ([`assemble_export`]).
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
    let held = |key: &Recipient| -> Result<Held> {
        Ok(Held {
            preferences: preferences_under(txn, key)?,
            suppressions: suppressions_under(txn, key)?,
            audit: list_audit(txn, Some(key.as_str()), None, None, usize::MAX)?.0,
        })
    };
    Ok(assemble_export(
        held(recipient)?,
        held(&pseudonyms.of(recipient))?,
        messages,
    ))
}

// ---- rules shared by both backends ---------------------------------------------------------
//
// Pure functions of what a backend read: each backend does its own table access and calls
// these for the answer, so both answer the same (see the module docs).

/// An audit entry's id: a ULID of its time, so ids sort in time order; the random low bits
/// keep two entries of one millisecond (or of two nodes) apart.
pub(crate) fn audit_id(entry: &AuditEntry) -> u128 {
    MessageId::generate(entry.at_ms).0
}

/// The expiry sweep at `now_ms` reclaims the suppressions expiring before this time (earliest
/// first, then in (recipient, channel) order): exactly those that no longer apply
/// ([`SuppressionRecord::active`]), one expiring at `now_ms` included.
pub(crate) fn sweep_bound(now_ms: u64) -> u64 {
    now_ms.saturating_add(1)
}

/// A stored recipient key as shown. Keys are written canonical; one that is not (a bug) is not
/// worth failing a listing for, so it is shown as stored.
pub(crate) fn stored_recipient(key: &str) -> Recipient {
    Recipient::parse(key).unwrap_or_else(|_| Recipient::from_pseudonym(key.to_owned()))
}

/// What an erasure keeps of a recipient's own preferences `previous` (which it deletes): their
/// opt-outs laid over what its pseudonym already holds (`held`). `None` when there is no
/// opt-out to keep: the pseudonym's entry stays as it is.
pub(crate) fn erased_preferences(
    previous: &Preferences,
    held: Option<Preferences>,
) -> Option<Preferences> {
    let kept = opt_outs(previous)?;
    overlay(held, Some(kept))
}

/// The suppression an erasure keeps under the pseudonym: the same opt-out, without its note
/// (free text may name the person).
pub(crate) fn erased_suppression(mut record: SuppressionRecord) -> SuppressionRecord {
    record.note = None;
    record
}

/// Re-files `entry` from subject `from` to `to`; with `scrub_values`, every mention of `from`
/// in what it recorded (`before`, `after`, their keys included) is replaced by `to` too.
pub(crate) fn refile(entry: &mut AuditEntry, from: &str, to: &str, scrub_values: bool) {
    to.clone_into(&mut entry.subject);
    if scrub_values {
        entry.before = entry.before.take().map(|v| scrub(v, from, to));
        entry.after = entry.after.take().map(|v| scrub(v, from, to));
    }
}

/// A recipient's effective preferences from its own (`own`, under its address) and those kept
/// under its pseudonym (`kept`, if it was erased): the kept opt-outs with whatever it chose
/// since laid on top.
pub(crate) fn effective_preferences(
    own: Option<Preferences>,
    kept: Option<Preferences>,
) -> Option<Preferences> {
    overlay(kept, own)
}

/// The suppressions that apply to a recipient: those under its address, then those kept under
/// its pseudonym; each list by channel.
pub(crate) fn applying(
    mut own: Vec<SuppressionView>,
    kept: Vec<SuppressionView>,
) -> Vec<SuppressionView> {
    own.extend(kept);
    own
}

/// What one key of a recipient holds: its address, or its pseudonym (what an erasure kept).
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Exactly as stored under this key (nothing merged in).
    pub(crate) preferences: Option<Preferences>,
    /// By channel.
    pub(crate) suppressions: Vec<SuppressionView>,
    /// The entries of this subject, newest first.
    pub(crate) audit: Vec<AuditView>,
}

/// A recipient's export from what its address (`own`) and its pseudonym (`kept`) hold, and its
/// messages (oldest first): effective preferences, the suppressions that apply, the audit
/// entries of the address then of the pseudonym.
pub(crate) fn assemble_export(own: Held, kept: Held, messages: Vec<MessageView>) -> SubjectExport {
    let mut audit = own.audit;
    audit.extend(kept.audit);
    SubjectExport {
        preferences: effective_preferences(own.preferences, kept.preferences),
        suppressions: applying(own.suppressions, kept.suppressions),
        audit,
        messages,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prefs(channels: &[(&str, bool)], categories: &[(&str, &[(&str, bool)])]) -> Preferences {
        let map = |entries: &[(&str, bool)]| {
            entries
                .iter()
                .map(|(c, on)| ((*c).to_owned(), *on))
                .collect()
        };
        Preferences {
            channels: map(channels),
            categories: categories
                .iter()
                .map(|(category, channels)| ((*category).to_owned(), map(channels)))
                .collect(),
        }
    }

    #[test]
    fn erasure_keeps_only_opt_outs_laid_over_what_the_pseudonym_holds() {
        let previous = prefs(
            &[("email", false), ("sms", true)],
            &[
                ("marketing", &[("push", false), ("email", true)]),
                ("news", &[("sms", true)]),
            ],
        );
        assert_eq!(
            erased_preferences(&previous, None),
            Some(prefs(
                &[("email", false)],
                &[("marketing", &[("push", false)])]
            ))
        );
        let held = prefs(&[("push", false)], &[("marketing", &[("sms", false)])]);
        assert_eq!(
            erased_preferences(&previous, Some(held)),
            Some(prefs(
                &[("email", false), ("push", false)],
                &[("marketing", &[("push", false), ("sms", false)])]
            ))
        );
        let only_opt_ins = prefs(&[("email", true)], &[("news", &[("sms", true)])]);
        assert_eq!(erased_preferences(&only_opt_ins, None), None);
    }

    #[test]
    fn what_is_chosen_after_an_erasure_wins_over_the_kept_opt_outs() {
        let kept = prefs(&[("email", false), ("sms", false)], &[]);
        let own = prefs(&[("email", true)], &[]);
        assert_eq!(
            effective_preferences(Some(own.clone()), Some(kept.clone())),
            Some(prefs(&[("email", true), ("sms", false)], &[]))
        );
        assert_eq!(effective_preferences(None, Some(kept.clone())), Some(kept));
        assert_eq!(effective_preferences(Some(own.clone()), None), Some(own));
        assert_eq!(effective_preferences(None, None), None);
    }

    #[test]
    fn refiling_replaces_every_mention_of_the_address() {
        let mut entry = AuditEntry {
            at_ms: 1,
            actor: "token".into(),
            action: "suppression.create".into(),
            subject: "eve@x".into(),
            before: Some(json!({"eve@x": {"note": "from eve@x"}})),
            after: Some(json!([{"recipient": "eve@x"}, 3])),
        };
        let mut moved = entry.clone();
        refile(&mut moved, "eve@x", "anon:1", false);
        assert_eq!(moved.subject, "anon:1");
        assert_eq!(moved.before, entry.before, "values untouched without scrub");
        refile(&mut entry, "eve@x", "anon:1", true);
        assert_eq!(entry.subject, "anon:1");
        assert_eq!(
            entry.before,
            Some(json!({"anon:1": {"note": "from anon:1"}}))
        );
        assert_eq!(entry.after, Some(json!([{"recipient": "anon:1"}, 3])));
        assert_eq!(entry.actor, "token");
    }

    #[test]
    fn a_kept_suppression_loses_its_note_only() {
        let record = SuppressionRecord {
            reason: "bounce".into(),
            expires_at_ms: Some(5),
            note: Some("eve@x asked".into()),
            created_by: "t".into(),
            created_at_ms: 1,
        };
        let kept = erased_suppression(record.clone());
        assert_eq!(kept.note, None);
        assert_eq!(
            SuppressionRecord {
                note: None,
                ..record
            },
            kept
        );
    }

    #[test]
    fn the_sweep_takes_exactly_what_no_longer_applies() {
        let at = |expires_at_ms| SuppressionRecord {
            reason: "bounce".into(),
            expires_at_ms: Some(expires_at_ms),
            note: None,
            created_by: "t".into(),
            created_at_ms: 1,
        };
        for (expires, now) in [(10, 9), (10, 10), (10, 11), (0, 0)] {
            let swept = expires < sweep_bound(now);
            assert_eq!(swept, !at(expires).active(now), "{expires} at {now}");
        }
        assert_eq!(sweep_bound(u64::MAX), u64::MAX);
    }

    #[test]
    fn stored_keys_are_shown_canonical_or_as_stored() {
        assert_eq!(stored_recipient("a@x").as_str(), "a@x");
        assert_eq!(stored_recipient("anon:ab12").as_str(), "anon:ab12");
        // Not a valid recipient (a bug wrote it): shown as it is, the listing goes on.
        assert_eq!(stored_recipient("").as_str(), "");
    }
}
