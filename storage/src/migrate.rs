//! Schema migrations: one step per version, applied in order at open, in the same write
//! transaction that creates the tables, so a crash mid-migration leaves the old version intact.
//!
//! | step | from → to | what |
//! | --- | --- | --- |
//! | [`canonical_recipients`] | 1 → 2 | recipients re-keyed to their canonical form ([`Recipient`]); unkeyed `sha256:` pseudonyms re-keyed to keyed `anon:` ones |

use std::collections::BTreeMap;

use redb::{ReadableTable as _, WriteTransaction};

use crate::error::Result;
use crate::recipient::Recipient;
use crate::records::{Preferences, SuppressionRecord, decode, encode};
use crate::subjects::{self, Pseudonyms};
use crate::tx::Tx;

/// Runs every step from `found` up to [`crate::tables::SCHEMA_VERSION`].
pub(crate) fn run(txn: &WriteTransaction, found: u64) -> Result<()> {
    if found < 2 {
        canonical_recipients(txn)?;
    }
    Ok(())
}

/// What a stored subject key becomes: a legacy pseudonym its keyed form, anything else its
/// canonical form. `None` when it is already right (or is not a recipient at all).
fn rekey(stored: &str, pseudonyms: &Pseudonyms) -> Option<String> {
    let wanted = match pseudonyms.of_legacy(stored) {
        Some(alias) => alias,
        None => Recipient::parse(stored).ok()?,
    };
    (wanted.as_str() != stored).then(|| wanted.into())
}

/// 1 → 2: every recipient-keyed table and the audit subjects, re-keyed. Two spellings that
/// meet keep the stricter choice: an existing suppression stays, opt-outs win over opt-ins.
/// Needs the pseudonym key, which the store makes before migrating.
fn canonical_recipients(txn: &WriteTransaction) -> Result<()> {
    let pseudonyms = &subjects::load_key(txn)?;
    let tx = &mut Tx::new(txn);
    // Suppressions (and their expiry index).
    let moves: Vec<(String, String, String, Vec<u8>)> = tx
        .suppressions()?
        .iter()?
        .filter_map(|e| match e {
            Ok((k, v)) => {
                let (r, c) = k.value();
                rekey(r, pseudonyms)
                    .map(|to| Ok((r.to_owned(), c.to_owned(), to, v.value().to_vec())))
            }
            Err(e) => Some(Err(e.into())),
        })
        .collect::<Result<_>>()?;
    for (from, channel, to, raw) in moves {
        subjects::delete_suppression(tx, &from, &channel)?;
        let exists = tx
            .suppressions()?
            .get((to.as_str(), channel.as_str()))?
            .is_some();
        if !exists {
            let record: SuppressionRecord = decode("suppressions", &raw)?;
            tx.suppressions()?
                .insert((to.as_str(), channel.as_str()), encode(&record).as_slice())?;
            if let Some(at) = record.expires_at_ms {
                tx.suppressions_by_expiry()?
                    .insert((at, to.as_str(), channel.as_str()), ())?;
            }
        }
    }

    // Preferences: merged, an opt-out from either spelling wins.
    let moves: Vec<(String, String, Vec<u8>)> = tx
        .preferences()?
        .iter()?
        .filter_map(|e| match e {
            Ok((k, v)) => rekey(k.value(), pseudonyms)
                .map(|to| Ok((k.value().to_owned(), to, v.value().to_vec()))),
            Err(e) => Some(Err(e.into())),
        })
        .collect::<Result<_>>()?;
    for (from, to, raw) in moves {
        let spelled: Preferences = decode("preferences", &raw)?;
        tx.preferences()?.remove(from.as_str())?;
        let merged = match subjects::get_preferences(tx, &to)? {
            Some(held) => strictest(held, spelled),
            None => spelled,
        };
        subjects::put_preferences(tx, &to, Some(&merged))?;
    }

    // The recipient index of messages (the records canonicalise themselves when read).
    let moves: Vec<(String, u128, String)> = tx
        .messages_by_recipient()?
        .iter()?
        .filter_map(|e| match e {
            Ok((k, _)) => {
                let (r, id) = k.value();
                rekey(r, pseudonyms).map(|to| Ok((r.to_owned(), id, to)))
            }
            Err(e) => Some(Err(e.into())),
        })
        .collect::<Result<_>>()?;
    for (from, id, to) in moves {
        tx.messages_by_recipient()?.remove((from.as_str(), id))?;
        tx.messages_by_recipient()?.insert((to.as_str(), id), ())?;
    }

    // Audit subjects: recipients canonical, legacy pseudonyms keyed.
    let subjects: BTreeMap<String, String> = tx
        .audit_by_subject()?
        .iter()?
        .filter_map(|e| match e {
            Ok((k, _)) => {
                let (s, _) = k.value();
                rekey(s, pseudonyms).map(|to| Ok((s.to_owned(), to)))
            }
            Err(e) => Some(Err(e.into())),
        })
        .collect::<Result<_>>()?;
    for (from, to) in subjects {
        subjects::move_audit_subject(tx, &from, &to, from.starts_with(subjects::LEGACY_PREFIX))?;
    }
    Ok(())
}

/// Two preference sets for one recipient, merged so that every opt-out of either holds.
fn strictest(mut a: Preferences, b: Preferences) -> Preferences {
    for (channel, on) in b.channels {
        let slot = a.channels.entry(channel).or_insert(on);
        *slot = *slot && on;
    }
    for (category, channels) in b.categories {
        let held = a.categories.entry(category).or_default();
        for (channel, on) in channels {
            let slot = held.entry(channel).or_insert(on);
            *slot = *slot && on;
        }
    }
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use redb::{Database, ReadableDatabase as _};
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::records::AuditEntry;
    use crate::tables::{
        AUDIT, AUDIT_BY_SUBJECT, MESSAGES_BY_RECIPIENT, META, PREFERENCES, SCHEMA_VERSION_KEY,
        SUPPRESSIONS, SUPPRESSIONS_BY_EXPIRY,
    };
    use crate::{Options, Store};

    fn suppression(expires_at_ms: Option<u64>) -> Vec<u8> {
        encode(&SuppressionRecord {
            reason: "bounce".into(),
            expires_at_ms,
            note: None,
            created_by: "t".into(),
            created_at_ms: 1,
        })
    }

    fn prefs(channels: &[(&str, bool)]) -> Vec<u8> {
        encode(&Preferences {
            channels: channels.iter().map(|(c, on)| ((*c).into(), *on)).collect(),
            categories: BTreeMap::new(),
        })
    }

    /// A database as schema version 1 wrote it: recipients as given, an unkeyed pseudonym.
    fn write_version_1(path: &std::path::Path) -> String {
        let legacy = format!("sha256:{}", hex::encode(Sha256::digest(b"gone@x.com")));
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, 1)
                .unwrap();
            let mut s = txn.open_table(SUPPRESSIONS).unwrap();
            s.insert(
                (" Dave@Example.COM ", "email"),
                suppression(Some(9_000)).as_slice(),
            )
            .unwrap();
            s.insert((legacy.as_str(), "*"), suppression(None).as_slice())
                .unwrap();
            txn.open_table(SUPPRESSIONS_BY_EXPIRY)
                .unwrap()
                .insert((9_000, " Dave@Example.COM ", "email"), ())
                .unwrap();
            let mut p = txn.open_table(PREFERENCES).unwrap();
            p.insert(
                "Ann@X.com",
                prefs(&[("email", false), ("sms", true)]).as_slice(),
            )
            .unwrap();
            p.insert(
                "ann@x.com",
                prefs(&[("email", true), ("push", false)]).as_slice(),
            )
            .unwrap();
            txn.open_table(MESSAGES_BY_RECIPIENT)
                .unwrap()
                .insert(("Bob@X.com", 7), ())
                .unwrap();
            let entry = AuditEntry {
                at_ms: 1,
                actor: "t".into(),
                action: "subject.erase".into(),
                subject: legacy.clone(),
                before: None,
                after: Some(serde_json::json!({"was": legacy})),
            };
            txn.open_table(AUDIT)
                .unwrap()
                .insert(5, encode(&entry).as_slice())
                .unwrap();
            txn.open_table(AUDIT_BY_SUBJECT)
                .unwrap()
                .insert((legacy.as_str(), 5), ())
                .unwrap();
        }
        txn.commit().unwrap();
        legacy
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_1_database_is_migrated_to_canonical_recipients_and_keyed_pseudonyms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.redb");
        let legacy = write_version_1(&path);

        let store = Store::open(&path, Options::default()).unwrap();
        let r = |s: &str| Recipient::parse(s).unwrap();
        let dave = store.suppressions_of(r("dave@example.com")).await.unwrap();
        assert_eq!(dave.len(), 1, "the spaced, mixed-case key is re-keyed");
        let gone = store.suppressions_of(r("gone@x.com")).await.unwrap();
        assert_eq!(
            gone.len(),
            1,
            "the erased opt-out is found through the keyed pseudonym"
        );
        let ann = store.preferences(r("ANN@x.com")).await.unwrap().unwrap();
        assert_eq!(
            ann.channels.get("email"),
            Some(&false),
            "an opt-out of either spelling wins"
        );
        assert_eq!(ann.channels.get("push"), Some(&false));
        assert_eq!(ann.channels.get("sms"), Some(&true));
        let (trail, _) = store.list_audit(None, None, None, 10).await.unwrap();
        let alias = store.pseudonym(&r("gone@x.com"));
        assert_eq!(trail[0].entry.subject, alias.as_str());
        assert!(
            !serde_json::to_string(&trail[0].entry)
                .unwrap()
                .contains(&legacy)
        );
        store.close().await;
        drop(store);

        // Every index agrees with its table; the version is current; a reopen changes nothing.
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let version = txn
            .open_table(META)
            .unwrap()
            .get(SCHEMA_VERSION_KEY)
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(version, crate::tables::SCHEMA_VERSION);
        let expiry: Vec<(u64, String, String)> = txn
            .open_table(SUPPRESSIONS_BY_EXPIRY)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, _) = e.unwrap();
                let (at, r, c) = k.value();
                (at, r.to_owned(), c.to_owned())
            })
            .collect();
        assert_eq!(
            expiry,
            [(9_000, "dave@example.com".to_owned(), "email".to_owned())]
        );
        let by_recipient: Vec<String> = txn
            .open_table(MESSAGES_BY_RECIPIENT)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().0.to_owned())
            .collect();
        assert_eq!(by_recipient, ["bob@x.com"]);
        drop(txn);
        drop(db);
        let store = Store::open(&path, Options::default()).unwrap();
        assert_eq!(store.pseudonym(&r("gone@x.com")), alias, "the key is kept");
        store.close().await;
    }
}
