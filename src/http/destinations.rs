//! `/v1/destinations`: create, read, update, delete, list, rotate the signing secret.
//!
//! Writes go to storage first, then the dispatcher is told to reload the destination, so what
//! the API answered is what the dispatcher uses next. Config-defined destinations can be
//! changed here too, but the config file is re-applied at the next start.

use std::time::SystemTime;

use herald_actors::dispatcher::breaker::BreakerPolicy;
use herald_actors::dispatcher::ssrf::{self, Refusal};
use herald_actors::dispatcher::{circuit_from_record, policy, rotation};
use herald_actors::unix_ms;
use herald_actors::verifier::schemes::{decode_whsec, encode_whsec};
use herald_storage::{CircuitRecord, DestinationPolicy, DestinationRecord};
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::auth::Caller;
use super::json_body;
use super::response::{ApiError, Resp, empty, json, rfc3339};
use crate::config::Channel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Create {
    name: String,
    url: String,
    #[serde(default)]
    sources: Option<Vec<String>>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    rate_limit_per_sec: Option<u32>,
    #[serde(default)]
    enabled: Option<bool>,
    // Overrides of `[delivery]` and static headers (see `dispatcher::policy`).
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    timeout_ms: Option<Option<u64>>,
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    max_attempts: Option<Option<u32>>,
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    backoff_base_ms: Option<Option<u64>>,
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    backoff_max_ms: Option<Option<u64>>,
    /// Replaces every static header; `null` or `{}` removes them all.
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    headers: Option<Option<std::collections::BTreeMap<String, String>>>,
}

/// A destination's own policy in a request; in a PATCH `null` removes an override.
#[derive(Debug, Default)]
#[allow(clippy::option_option)] // absent, `null` and a value: three meanings (merge patch)
struct PolicyFields {
    timeout_ms: Option<Option<u64>>,
    max_attempts: Option<Option<u32>>,
    backoff_base_ms: Option<Option<u64>>,
    backoff_max_ms: Option<Option<u64>>,
    headers: Option<Option<std::collections::BTreeMap<String, String>>>,
}

macro_rules! policy_fields {
    ($req:expr) => {
        PolicyFields {
            timeout_ms: $req.timeout_ms,
            max_attempts: $req.max_attempts,
            backoff_base_ms: $req.backoff_base_ms,
            backoff_max_ms: $req.backoff_max_ms,
            headers: $req.headers.clone(),
        }
    };
}

impl PolicyFields {
    /// `current` with these changes, checked by the dispatcher's rule.
    fn apply(
        &self,
        current: &DestinationPolicy,
        defaults: &policy::Defaults,
    ) -> Result<DestinationPolicy, policy::PolicyError> {
        let mut next = current.clone();
        if let Some(v) = self.timeout_ms {
            next.timeout_ms = v;
        }
        if let Some(v) = self.max_attempts {
            next.max_attempts = v;
        }
        if let Some(v) = self.backoff_base_ms {
            next.backoff_base_ms = v;
        }
        if let Some(v) = self.backoff_max_ms {
            next.backoff_max_ms = v;
        }
        if let Some(v) = &self.headers {
            next.headers = v.clone().unwrap_or_default();
        }
        policy::check(&next, defaults)
    }
}

/// A partial update: absent fields are left alone; `rate_limit_per_sec: null` removes the limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Patch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sources: Option<Vec<String>>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    // Absent, `null` and a value mean three things here (JSON merge patch), hence two Options.
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    rate_limit_per_sec: Option<Option<u32>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    timeout_ms: Option<Option<u64>>,
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    max_attempts: Option<Option<u32>>,
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    backoff_base_ms: Option<Option<u64>>,
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    backoff_max_ms: Option<Option<u64>>,
    /// Replaces every static header; `null` or `{}` removes them all.
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "double_option")]
    headers: Option<Option<std::collections::BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    #[serde(default)]
    grace_secs: Option<u64>,
}

/// Tells `null` (Some(None)) from an absent field (None).
#[allow(clippy::option_option)]
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub async fn list(app: &App) -> Result<Resp, ApiError> {
    let all = app.herald.store().destinations().await?;
    let items: Vec<Value> = all.iter().map(|(name, r)| render(app, name, r)).collect();
    Ok(json(StatusCode::OK, &json!({"items": items, "next": null})))
}

pub async fn get(app: &App, name: &str) -> Result<Resp, ApiError> {
    let record = find(app, name).await?;
    let mut view = render(app, name, &record);
    let queued = app.herald.store().queued(name.to_owned()).await?;
    view["queued"] = queued.into();
    Ok(json(StatusCode::OK, &view))
}

pub async fn create(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: Create = json_body::read(app, headers, body).await?;
    check_name(&req.name)?;
    let url = check_url(app, &req.url)?;
    let secret = match req.secret {
        Some(secret) => {
            decode_whsec(&secret).map_err(|e| ApiError::invalid("secret", e))?;
            secret
        }
        None => encode_whsec(&rand_key()),
    };
    let defaults = app.herald.core().settings.delivery.defaults();
    let own_policy = policy_fields!(req)
        .apply(&DestinationPolicy::default(), &defaults)
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    let now = now_ms();
    let record = DestinationRecord {
        url,
        sources: check_sources(app, req.sources.unwrap_or_else(|| vec!["*".into()]))?,
        event_types: check_event_types(req.event_types.unwrap_or_default())?,
        channel: check_channel(req.channel.as_deref().unwrap_or("webhook"))?,
        secret: secret.clone(),
        previous_secrets: Vec::new(),
        config_secret_sha256: None,
        rate_limit_per_sec: check_rate(req.rate_limit_per_sec)?,
        enabled: req.enabled.unwrap_or(true),
        disabled_reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        from_config: false,
        circuit: CircuitRecord::default(),
        policy: own_policy,
    };
    let created = app
        .herald
        .store()
        .create_destination(req.name.clone(), record.clone())
        .await?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a destination named `{}` exists", req.name),
        ));
    }
    changed(app, &req.name);
    let mut view = render(app, &req.name, &record);
    super::subjects::audit(
        app,
        caller,
        "destination.create",
        &req.name,
        None,
        Some(view.clone()),
    )
    .await;
    // The secret is shown once, on creation (and on rotation), never by GET.
    view["secret"] = secret.into();
    Ok(json(StatusCode::CREATED, &view))
}

pub async fn patch(
    app: &App,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: Patch = json_body::read(app, headers, body).await?;
    let url = req.url.as_deref().map(|u| check_url(app, u)).transpose()?;
    let sources = req.sources.map(|s| check_sources(app, s)).transpose()?;
    let event_types = req.event_types.map(check_event_types).transpose()?;
    let channel = req.channel.as_deref().map(check_channel).transpose()?;
    let rate = req.rate_limit_per_sec.map(check_rate).transpose()?;
    let enabled = req.enabled;
    let now = now_ms();
    let (fields, defaults) = (
        policy_fields!(req),
        app.herald.core().settings.delivery.defaults(),
    );
    // Checked against the stored policy inside the update, so concurrent changes compose.
    fields
        .apply(&DestinationPolicy::default(), &defaults)
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None));
    let refusal = std::sync::Arc::clone(&refused);
    let updated = app
        .herald
        .store()
        .update_destination(name.to_owned(), move |r| {
            match fields.apply(&r.policy, &defaults) {
                Ok(next) => r.policy = next,
                Err(e) => {
                    if let Ok(mut slot) = refusal.lock() {
                        *slot = Some(e);
                    }
                    return;
                }
            }
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
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("destination {name}")))?;
    if let Some(e) = refused.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(ApiError::invalid(&e.field, e.message));
    }
    changed(app, name);
    let view = render(app, name, &updated);
    super::subjects::audit(
        app,
        caller,
        "destination.update",
        name,
        None,
        Some(view.clone()),
    )
    .await;
    Ok(json(StatusCode::OK, &view))
}

pub async fn delete(app: &App, caller: &Caller, name: &str) -> Result<Resp, ApiError> {
    let before = find(app, name).await.ok().map(|r| render(app, name, &r));
    let deleted = app
        .herald
        .store()
        .delete_destination(name.to_owned(), now_ms())
        .await?;
    if !deleted {
        return Err(ApiError::not_found(format_args!("destination {name}")));
    }
    changed(app, name);
    super::subjects::audit(app, caller, "destination.delete", name, before, None).await;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn rotate(
    app: &App,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: Rotate = json_body::read_or_default(app, headers, body).await?;
    let grace_ms = req
        .grace_secs
        .map_or(rotation::DEFAULT_GRACE_MS, |secs| secs.saturating_mul(1000));
    let secret = encode_whsec(&rand_key());
    let now = now_ms();
    let new_secret = secret.clone();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refusal = std::sync::Arc::clone(&refused);
    let updated = app
        .herald
        .store()
        .update_destination(name.to_owned(), move |r| {
            let rotated = rotation::rotate(r, new_secret.clone(), grace_ms, now);
            refusal.store(rotated.is_err(), std::sync::atomic::Ordering::Relaxed);
            if rotated.is_ok() {
                r.updated_at_ms = now;
            }
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("destination {name}")))?;
    if refused.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            rotation::TooManySecrets.to_string(),
        ));
    }
    changed(app, name);
    // Never a secret in the audit trail: only that it happened, and the grace period.
    let grace = json!({"rotated": true, "grace_secs": grace_ms / 1000});
    super::subjects::audit(
        app,
        caller,
        "destination.rotate_secret",
        name,
        None,
        Some(grace),
    )
    .await;
    // Each previous secret that still signs, newest first, with the end of its grace.
    let until: Vec<String> = updated
        .previous_secrets
        .iter()
        .rev()
        .filter(|p| p.expires_at_ms > now)
        .map(|p| rfc3339(p.expires_at_ms))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "secret": secret,
            "previous_secret_valid_until": until.first(),
            "previous_secrets_valid_until": until,
        }),
    ))
}

/// A destination, through the cache (invalidated by every change to it).
async fn find(app: &App, name: &str) -> Result<DestinationRecord, ApiError> {
    let found = app
        .herald
        .core()
        .cached_destination(name)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "destination lookup");
            ApiError::unavailable()
        })?;
    found
        .as_ref()
        .clone()
        .ok_or_else(|| ApiError::not_found(format_args!("destination {name}")))
}

/// Drops the cached copy after a change (before the change is answered).
fn changed(app: &App, name: &str) {
    app.herald
        .core()
        .invalidate(&herald_actors::cache_keys::destination(name));
    app.herald.destination_changed(name);
}

fn render(app: &App, name: &str, r: &DestinationRecord) -> Value {
    let policy: BreakerPolicy = app.herald.core().settings.delivery.breaker;
    let circuit = circuit_from_record(&r.circuit, &policy, now_ms());
    json!({
        "name": name,
        "url": r.url,
        "sources": r.sources,
        "event_types": r.event_types,
        "channel": r.channel,
        "rate_limit_per_sec": r.rate_limit_per_sec,
        "enabled": r.enabled,
        "disabled_reason": r.disabled_reason,
        "from_config": r.from_config,
        "created_at": rfc3339(r.created_at_ms),
        "updated_at": rfc3339(r.updated_at_ms),
        "timeout_ms": r.policy.timeout_ms,
        "max_attempts": r.policy.max_attempts,
        "backoff_base_ms": r.policy.backoff_base_ms,
        "backoff_max_ms": r.policy.backoff_max_ms,
        "headers": r.policy.headers,
        "previous_secrets_valid_until": r
            .previous_secrets
            .iter()
            .rev()
            .filter(|p| p.expires_at_ms > now_ms())
            .map(|p| rfc3339(p.expires_at_ms))
            .collect::<Vec<_>>(),
        "circuit": {
            "state": circuit.name(),
            "consecutive_failures": circuit.consecutive_failures(),
            "opened_at": circuit.opened_at_ms().map(rfc3339),
        },
    })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "expected 1 to 64 of a-z, 0-9, _ and -",
        ))
    }
}

fn check_url(app: &App, url: &str) -> Result<String, ApiError> {
    let allow_private = app.herald.core().settings.delivery.allow_private;
    match ssrf::check_url(url, allow_private) {
        Ok(_) => Ok(url.to_owned()),
        Err(refusal) => Err(refused(&refusal)),
    }
}

fn refused(refusal: &Refusal) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        Refusal::CODE,
        format!("url: {refusal}"),
    )
}

fn check_sources(app: &App, sources: Vec<String>) -> Result<Vec<String>, ApiError> {
    if sources.is_empty() {
        return Err(ApiError::invalid(
            "sources",
            "must name at least one source, or \"*\"",
        ));
    }
    for (i, source) in sources.iter().enumerate() {
        if source != "*" && app.herald.source(source).is_none() {
            return Err(ApiError::invalid(
                &format!("sources[{i}]"),
                format_args!("no source named `{source}`"),
            ));
        }
    }
    Ok(sources)
}

fn check_event_types(types: Vec<String>) -> Result<Vec<String>, ApiError> {
    match types.iter().position(String::is_empty) {
        Some(i) => Err(ApiError::invalid(
            &format!("event_types[{i}]"),
            "must not be empty",
        )),
        None => Ok(types),
    }
}

fn check_channel(channel: &str) -> Result<String, ApiError> {
    channel
        .parse::<Channel>()
        .map(|c| c.as_str().to_owned())
        .map_err(|e| ApiError::invalid("channel", e))
}

fn check_rate(rate: Option<u32>) -> Result<Option<u32>, ApiError> {
    match rate {
        Some(0) => Err(ApiError::invalid(
            "rate_limit_per_sec",
            "must be at least 1",
        )),
        other => Ok(other),
    }
}

fn rand_key() -> [u8; 24] {
    rand::random()
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
