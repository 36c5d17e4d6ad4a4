//! Destinations: create, patch (enable and disable included), delete, rotate the signing secret.
//!
//! Every change is written with its audit entry in one commit; then the cached copy is dropped
//! and the dispatcher told to reload it, so what the caller was answered is what the next
//! attempt uses. Secrets never reach the audit trail: a rotation records only that it happened
//! and its grace period.

use herald_storage::{Channel, CircuitRecord, DestinationRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminError, AdminResult, entry, now_ms};
use crate::cache_keys;
use crate::dispatcher::ssrf;
use crate::verifier::schemes::{decode_whsec, encode_whsec};

/// How long a rotated-out secret keeps signing, unless the request says otherwise.
pub const DEFAULT_GRACE_SECS: u64 = 86_400;
/// The longest grace period a rotation may ask for (a year).
pub const MAX_GRACE_SECS: u64 = 366 * 86_400;

/// `POST /v1/destinations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDestination {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub channel: Option<String>,
    /// `whsec_…`; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /v1/destinations/{name}`: absent fields are left alone; `rate_limit_per_sec: null`
/// removes the limit (JSON merge patch), hence the double option.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(clippy::option_option)]
pub struct DestinationPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub rate_limit_per_sec: Option<Option<u32>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `POST /v1/destinations/{name}/rotate-secret`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    #[serde(default)]
    pub grace_secs: Option<u64>,
}

/// A rotation's outcome: the new secret, shown once, and until when the previous one signs.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub secret: String,
    pub previous_valid_until_ms: Option<u64>,
}

/// A created destination with its secret: the only time the secret is shown.
#[derive(Debug, Clone)]
pub struct Created {
    pub record: DestinationRecord,
    pub secret: String,
}

/// Tells `null` (`Some(None)`) from an absent field (`None`).
#[allow(clippy::option_option)]
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl Admin {
    /// One destination, through the cache (invalidated by every change to it).
    pub async fn destination(&self, name: &str) -> AdminResult<DestinationRecord> {
        let found = self.core.cached_destination(name).await.map_err(|e| {
            tracing::error!(error = %e, "destination lookup");
            AdminError::Unavailable
        })?;
        found
            .as_ref()
            .clone()
            .ok_or_else(|| AdminError::not_found(format_args!("destination {name}")))
    }

    pub async fn destinations(&self) -> AdminResult<Vec<(String, DestinationRecord)>> {
        Ok(self.core.store.destinations().await?)
    }

    /// Deliveries waiting for `name`.
    pub async fn queued(&self, name: &str) -> AdminResult<u64> {
        Ok(self.core.store.queued(name.to_owned()).await?)
    }

    pub async fn create_destination(
        &self,
        actor: &str,
        req: NewDestination,
    ) -> AdminResult<Created> {
        check_name(&req.name)?;
        let url = self.check_url(&req.url)?;
        let secret = match req.secret {
            Some(secret) => {
                decode_whsec(&secret).map_err(|e| AdminError::invalid("secret", e))?;
                secret
            }
            None => new_secret(),
        };
        let now = now_ms();
        let record = DestinationRecord {
            url,
            sources: self.check_sources(req.sources.unwrap_or_else(|| vec!["*".into()]))?,
            event_types: check_event_types(req.event_types.unwrap_or_default())?,
            channel: check_channel(req.channel.as_deref().unwrap_or("webhook"))?,
            secret: secret.clone(),
            previous_secret: None,
            rate_limit_per_sec: check_rate(req.rate_limit_per_sec)?,
            enabled: req.enabled.unwrap_or(true),
            disabled_reason: None,
            created_at_ms: now,
            updated_at_ms: now,
            from_config: false,
            circuit: CircuitRecord::default(),
        };
        let audit = entry(
            actor,
            "destination.create",
            &req.name,
            None,
            Some(audited(&record)),
        );
        let created = self
            .core
            .store
            .create_destination(req.name.clone(), record.clone(), audit)
            .await?;
        if !created {
            return Err(AdminError::Conflict(format!(
                "a destination named `{}` exists",
                req.name
            )));
        }
        self.destination_changed(&req.name);
        Ok(Created { record, secret })
    }

    pub async fn patch_destination(
        &self,
        actor: &str,
        name: &str,
        req: DestinationPatch,
    ) -> AdminResult<DestinationRecord> {
        let url = req.url.as_deref().map(|u| self.check_url(u)).transpose()?;
        let sources = req.sources.map(|s| self.check_sources(s)).transpose()?;
        let event_types = req.event_types.map(check_event_types).transpose()?;
        let channel = req.channel.as_deref().map(check_channel).transpose()?;
        let rate = req.rate_limit_per_sec.map(check_rate).transpose()?;
        let enabled = req.enabled;
        let now = now_ms();
        let (actor, subject) = (actor.to_owned(), name.to_owned());
        let updated = self
            .core
            .store
            .update_destination(
                name.to_owned(),
                move |r| {
                    if let Some(url) = &url {
                        r.url.clone_from(url);
                    }
                    if let Some(sources) = &sources {
                        r.sources.clone_from(sources);
                    }
                    if let Some(types) = &event_types {
                        r.event_types.clone_from(types);
                    }
                    if let Some(channel) = &channel {
                        r.channel.clone_from(channel);
                    }
                    if let Some(rate) = rate {
                        r.rate_limit_per_sec = rate;
                    }
                    if let Some(enabled) = enabled {
                        r.enabled = enabled;
                        if enabled {
                            r.disabled_reason = None;
                        }
                    }
                    r.updated_at_ms = now;
                },
                Some(
                    move |before: &DestinationRecord, after: &DestinationRecord| {
                        entry(
                            &actor,
                            "destination.update",
                            &subject,
                            Some(audited(before)),
                            Some(audited(after)),
                        )
                    },
                ),
            )
            .await?
            .ok_or_else(|| AdminError::not_found(format_args!("destination {name}")))?;
        self.destination_changed(name);
        Ok(updated)
    }

    /// Deletes a destination; its queued deliveries go to the DLQ.
    pub async fn delete_destination(&self, actor: &str, name: &str) -> AdminResult<()> {
        let (actor, subject) = (actor.to_owned(), name.to_owned());
        let deleted = self
            .core
            .store
            .delete_destination(name.to_owned(), now_ms(), move |before| {
                entry(
                    &actor,
                    "destination.delete",
                    &subject,
                    Some(audited(before)),
                    None,
                )
            })
            .await?;
        if deleted.is_none() {
            return Err(AdminError::not_found(format_args!("destination {name}")));
        }
        self.destination_changed(name);
        Ok(())
    }

    /// A new signing secret; the previous one keeps signing for `grace_secs` (default a day).
    pub async fn rotate_secret(
        &self,
        actor: &str,
        name: &str,
        req: Rotation,
    ) -> AdminResult<Rotated> {
        let grace_secs = req.grace_secs.unwrap_or(DEFAULT_GRACE_SECS);
        if grace_secs > MAX_GRACE_SECS {
            return Err(AdminError::invalid(
                "grace_secs",
                format_args!("must be at most {MAX_GRACE_SECS} (a year)"),
            ));
        }
        let secret = new_secret();
        let now = now_ms();
        let until = now.saturating_add(grace_secs.saturating_mul(1000));
        let new = secret.clone();
        let (actor, subject) = (actor.to_owned(), name.to_owned());
        let updated = self
            .core
            .store
            .update_destination(
                name.to_owned(),
                move |r| {
                    let old = std::mem::replace(&mut r.secret, new.clone());
                    r.previous_secret = Some((old, until));
                    r.updated_at_ms = now;
                },
                Some(move |_: &DestinationRecord, _: &DestinationRecord| {
                    // Never a secret in the audit trail: only that it happened, and the grace.
                    entry(
                        &actor,
                        "destination.rotate_secret",
                        &subject,
                        None,
                        Some(json!({"rotated": true, "grace_secs": grace_secs})),
                    )
                }),
            )
            .await?
            .ok_or_else(|| AdminError::not_found(format_args!("destination {name}")))?;
        self.destination_changed(name);
        Ok(Rotated {
            secret,
            previous_valid_until_ms: updated.previous_secret.map(|(_, until)| until),
        })
    }

    /// Drops the cached copy and has the dispatcher reload it (before the change is answered).
    fn destination_changed(&self, name: &str) {
        self.core.invalidate(&cache_keys::destination(name));
        let _ = self
            .children
            .dispatcher
            .get()
            .cast(crate::dispatcher::DispatcherMsg::Reload(name.to_owned()));
    }

    fn check_url(&self, url: &str) -> AdminResult<String> {
        let allow_private = self.core.settings.delivery.allow_private;
        match ssrf::check_url(url, allow_private) {
            Ok(_) => Ok(url.to_owned()),
            Err(refusal) => Err(AdminError::NotAllowed(format!("url: {refusal}"))),
        }
    }

    fn check_sources(&self, sources: Vec<String>) -> AdminResult<Vec<String>> {
        if sources.is_empty() {
            return Err(AdminError::invalid(
                "sources",
                "must name at least one source, or \"*\"",
            ));
        }
        for (i, source) in sources.iter().enumerate() {
            if source != "*" && self.core.source(source).is_none() {
                return Err(AdminError::invalid(
                    format!("sources[{i}]"),
                    format_args!("no source named `{source}`"),
                ));
            }
        }
        Ok(sources)
    }
}

/// A destination as the audit trail records it: everything but its secrets.
fn audited(r: &DestinationRecord) -> Value {
    json!({
        "url": r.url,
        "sources": r.sources,
        "event_types": r.event_types,
        "channel": r.channel,
        "rate_limit_per_sec": r.rate_limit_per_sec,
        "enabled": r.enabled,
    })
}

fn new_secret() -> String {
    encode_whsec(&rand::random::<[u8; 24]>())
}

/// 1 to 64 of `a-z 0-9 _ -`: the name appears in URLs and metric labels.
pub fn check_name(name: &str) -> AdminResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            "name",
            "expected 1 to 64 of a-z, 0-9, _ and -",
        ))
    }
}

fn check_event_types(types: Vec<String>) -> AdminResult<Vec<String>> {
    match types.iter().position(String::is_empty) {
        Some(i) => Err(AdminError::invalid(
            format!("event_types[{i}]"),
            "must not be empty",
        )),
        None => Ok(types),
    }
}

fn check_channel(channel: &str) -> AdminResult<String> {
    super::keyword::<Channel>("channel", channel).map(|c| c.as_str().to_owned())
}

fn check_rate(rate: Option<u32>) -> AdminResult<Option<u32>> {
    match rate {
        Some(0) => Err(AdminError::invalid(
            "rate_limit_per_sec",
            "must be at least 1",
        )),
        other => Ok(other),
    }
}
