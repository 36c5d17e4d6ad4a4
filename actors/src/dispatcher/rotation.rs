//! Signing-secret rotation: which secrets sign at a given time, and what a rotation (through the
//! API, or by a changed `secret` in the config file) does to them. Pure functions over the
//! stored secrets and an explicit `now`.
//!
//! A destination has one current secret and a list of previous ones, each with its own expiry.
//! At every attempt the current secret signs, and so does each previous secret whose expiry is
//! still ahead; an expired one stops signing at that instant (it is dropped from storage at the
//! next rotation). A rotation makes a new secret current and keeps the old one signing for the
//! grace period; earlier previous secrets keep their own expiries.
//!
//! For a destination declared in `config.toml` the file's `secret` is applied at every start,
//! with this precedence:
//! 1. the file's secret is the one last applied (its SHA-256 is stored with the destination):
//!    the stored secrets win, including any rotation made through the API since;
//! 2. the file's secret changed: that is a rotation to it: the stored current secret becomes a
//!    previous one for [`DEFAULT_GRACE_MS`];
//! 3. a row from before this rule (no stored SHA-256): the file's secret is adopted as
//!    "last applied" if it is the stored current secret or one of the previous ones (an API
//!    rotation away from it), otherwise it is a rotation as in 2.

use std::fmt::Write as _;

use herald_storage::{DestinationRecord, PreviousSecret};
use sha2::{Digest, Sha256};

/// How long a rotated-out secret keeps signing unless the rotation says otherwise: one day.
pub const DEFAULT_GRACE_MS: u64 = 86_400_000;

/// The most previous secrets signing at once. Every one adds a signature to every attempt's
/// `webhook-signature`; a rotation beyond this is refused until one expires.
pub const MAX_PREVIOUS: usize = 10;

/// The secrets that sign an attempt made at `now_ms`: the current one first, then every
/// previous one whose expiry is still ahead, newest first.
pub fn signing_at(record: &DestinationRecord, now_ms: u64) -> Vec<&str> {
    std::iter::once(record.secret.as_str())
        .chain(
            record
                .previous_secrets
                .iter()
                .rev()
                .filter(|p| p.expires_at_ms > now_ms)
                .map(|p| p.secret.as_str()),
        )
        .collect()
}

/// A rotation was refused: [`MAX_PREVIOUS`] previous secrets still sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_PREVIOUS} previous secrets are still signing; wait for one to expire")]
pub struct TooManySecrets;

/// Rotates to `new`: the current secret keeps signing until `now_ms + grace_ms`, expired
/// previous secrets are dropped, the others keep their expiries. Changes nothing when refused.
pub fn rotate(
    record: &mut DestinationRecord,
    new: String,
    grace_ms: u64,
    now_ms: u64,
) -> Result<(), TooManySecrets> {
    let live = record
        .previous_secrets
        .iter()
        .filter(|p| p.expires_at_ms > now_ms)
        .count();
    if live >= MAX_PREVIOUS {
        return Err(TooManySecrets);
    }
    record.previous_secrets.retain(|p| p.expires_at_ms > now_ms);
    // A secret that comes back (a config file reverted) is current again, not also previous.
    record.previous_secrets.retain(|p| p.secret != new);
    let old = std::mem::replace(&mut record.secret, new);
    if old != record.secret && grace_ms > 0 {
        record.previous_secrets.push(PreviousSecret {
            secret: old,
            expires_at_ms: now_ms.saturating_add(grace_ms),
        });
    }
    Ok(())
}

/// What applying the config file's secret did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSecret {
    /// The file's secret is the one last applied: the stored secrets stay as they are.
    Kept,
    /// An older row: the file's secret was recorded as the one last applied, nothing rotated.
    Adopted,
    /// The file's secret changed: it is current now, the old one signs for the default grace.
    Rotated,
}

/// Applies the config file's `file_secret` to a stored destination, by the precedence in the
/// module docs.
pub fn apply_config_secret(
    stored: &mut DestinationRecord,
    file_secret: &str,
    now_ms: u64,
) -> ConfigSecret {
    let digest = sha256_hex(file_secret);
    let holds_it = stored.secret == file_secret
        || stored
            .previous_secrets
            .iter()
            .any(|p| p.secret == file_secret);
    let outcome = match &stored.config_secret_sha256 {
        Some(applied) if *applied == digest => return ConfigSecret::Kept,
        None if holds_it => ConfigSecret::Adopted,
        Some(_) | None => ConfigSecret::Rotated,
    };
    if outcome == ConfigSecret::Rotated {
        // The file wins even at the bound: the soonest to expire makes room.
        while rotate(stored, file_secret.to_owned(), DEFAULT_GRACE_MS, now_ms).is_err() {
            if let Some(soonest) = stored
                .previous_secrets
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.expires_at_ms)
                .map(|(i, _)| i)
            {
                stored.previous_secrets.remove(soonest);
            }
        }
    }
    stored.config_secret_sha256 = Some(digest);
    outcome
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(secret: &str) -> DestinationRecord {
        DestinationRecord {
            url: "http://127.0.0.1:1/".into(),
            sources: vec!["*".into()],
            event_types: Vec::new(),
            channel: "webhook".into(),
            secret: secret.into(),
            previous_secrets: Vec::new(),
            config_secret_sha256: None,
            rate_limit_per_sec: None,
            enabled: true,
            disabled_reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            from_config: true,
            circuit: herald_storage::CircuitRecord::default(),
            policy: herald_storage::DestinationPolicy::default(),
        }
    }

    #[test]
    fn a_previous_secret_signs_until_its_own_grace_ends_then_stops() {
        let mut r = record("a");
        rotate(&mut r, "b".into(), 3_000, 10_000).unwrap();
        assert_eq!(signing_at(&r, 10_000), ["b", "a"]);
        assert_eq!(signing_at(&r, 12_999), ["b", "a"]);
        assert_eq!(signing_at(&r, 13_000), ["b"], "expired at its instant");
        assert_eq!(signing_at(&r, 310_000), ["b"], "and stays expired");
    }

    #[test]
    fn several_rotations_keep_each_previous_secret_to_its_own_expiry() {
        let mut r = record("a");
        rotate(&mut r, "b".into(), 10_000, 0).unwrap(); // a until 10 s
        rotate(&mut r, "c".into(), 2_000, 1_000).unwrap(); // b until 3 s
        assert_eq!(signing_at(&r, 1_000), ["c", "b", "a"]);
        assert_eq!(signing_at(&r, 3_000), ["c", "a"], "b's grace was shorter");
        assert_eq!(signing_at(&r, 10_000), ["c"]);
        // A later rotation drops what has expired, not what still signs.
        rotate(&mut r, "d".into(), 5_000, 4_000).unwrap();
        let kept: Vec<&str> = r
            .previous_secrets
            .iter()
            .map(|p| p.secret.as_str())
            .collect();
        assert_eq!(kept, ["a", "c"]);
    }

    #[test]
    fn a_zero_grace_stops_the_old_secret_at_once() {
        let mut r = record("a");
        rotate(&mut r, "b".into(), 0, 5).unwrap();
        assert_eq!(signing_at(&r, 5), ["b"]);
        assert!(r.previous_secrets.is_empty());
    }

    #[test]
    fn rotations_beyond_the_bound_are_refused_until_one_expires() {
        let mut r = record("s0");
        for i in 1..=MAX_PREVIOUS {
            rotate(&mut r, format!("s{i}"), 1_000, 0).unwrap();
        }
        let before = r.clone();
        assert_eq!(rotate(&mut r, "x".into(), 1_000, 999), Err(TooManySecrets));
        assert_eq!(r, before, "a refused rotation changes nothing");
        rotate(&mut r, "x".into(), 1_000, 1_000).unwrap();
        assert_eq!(signing_at(&r, 1_000), ["x", &format!("s{MAX_PREVIOUS}")]);
    }

    #[test]
    fn an_unchanged_config_secret_keeps_the_rotated_secrets() {
        let mut r = record("file");
        assert_eq!(
            apply_config_secret(&mut r, "file", 0),
            ConfigSecret::Adopted
        );
        rotate(&mut r, "api".into(), 60_000, 1_000).unwrap();
        let rotated = r.clone();
        assert_eq!(
            apply_config_secret(&mut r, "file", 2_000),
            ConfigSecret::Kept
        );
        assert_eq!(
            r, rotated,
            "a restart on the same file keeps the API's rotation"
        );
        assert_eq!(signing_at(&r, 2_000), ["api", "file"]);
    }

    #[test]
    fn a_changed_config_secret_is_a_rotation_with_the_default_grace() {
        let mut r = record("one");
        apply_config_secret(&mut r, "one", 0);
        assert_eq!(
            apply_config_secret(&mut r, "two", 1_000),
            ConfigSecret::Rotated
        );
        assert_eq!(signing_at(&r, 1_000), ["two", "one"]);
        assert_eq!(signing_at(&r, 1_000 + DEFAULT_GRACE_MS), ["two"]);
        // The stored secret, not the file's old one, is what becomes previous.
        rotate(&mut r, "api".into(), DEFAULT_GRACE_MS, 2_000).unwrap();
        assert_eq!(
            apply_config_secret(&mut r, "three", 3_000),
            ConfigSecret::Rotated
        );
        assert_eq!(signing_at(&r, 3_000), ["three", "api", "two", "one"]);
    }

    #[test]
    fn older_rows_adopt_the_file_secret_when_they_hold_it() {
        // Rotated through the API before this rule: the file's secret is now a previous one.
        let mut r = record("file");
        rotate(&mut r, "api".into(), 60_000, 0).unwrap();
        assert_eq!(
            apply_config_secret(&mut r, "file", 1_000),
            ConfigSecret::Adopted
        );
        assert_eq!(signing_at(&r, 1_000), ["api", "file"]);
        // Holding neither: the file changed while herald was stopped.
        let mut r = record("stored");
        assert_eq!(
            apply_config_secret(&mut r, "file", 0),
            ConfigSecret::Rotated
        );
        assert_eq!(signing_at(&r, 0), ["file", "stored"]);
    }

    #[test]
    fn the_file_wins_even_at_the_bound() {
        let mut r = record("s0");
        apply_config_secret(&mut r, "s0", 0);
        for i in 1..=MAX_PREVIOUS {
            rotate(
                &mut r,
                format!("s{i}"),
                1_000 + u64::try_from(i).unwrap(),
                0,
            )
            .unwrap();
        }
        assert_eq!(
            apply_config_secret(&mut r, "new", 10),
            ConfigSecret::Rotated
        );
        assert_eq!(r.secret, "new");
        assert_eq!(r.previous_secrets.len(), MAX_PREVIOUS);
        assert!(
            r.previous_secrets.iter().all(|p| p.secret != "s0"),
            "the soonest to expire made room"
        );
    }

    #[test]
    fn reverting_the_file_makes_the_old_secret_current_once() {
        let mut r = record("one");
        apply_config_secret(&mut r, "one", 0);
        apply_config_secret(&mut r, "two", 1);
        apply_config_secret(&mut r, "one", 2);
        assert_eq!(signing_at(&r, 2), ["one", "two"], "no duplicate signature");
    }
}
