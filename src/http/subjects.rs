//! Recipients: suppressions, preferences, GDPR export and erasure, and the audit trail.
//!
//! Every change is stored with its audit entry in one commit, attributed to the token that
//! made it. What erasure keeps, and why, is in the README ("GDPR").

use std::collections::BTreeMap;
use std::time::SystemTime;

use herald_actors::perf::monitor::PerfEvent;
use herald_actors::{cache_keys, unix_ms};
use herald_storage::{
    AuditEntry, AuditView, NewSuppression, Preferences, SuppressionRecord, SuppressionView,
};
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::auth::Caller;
use super::json_body;
use super::query::{Pagination, Query};
use super::response::{ApiError, Resp, empty, json, rfc3339};
use super::time::parse_time;
use crate::config::{Channel, Reason};

/// The most items one bulk request may carry.
pub const MAX_BULK: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuppressionBody {
    recipient: String,
    channel: String,
    reason: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bulk {
    items: Vec<SuppressionBody>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreferencesBody {
    #[serde(default)]
    channels: BTreeMap<String, bool>,
    #[serde(default)]
    categories: BTreeMap<String, BTreeMap<String, bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OptBody {
    channel: String,
    #[serde(default)]
    category: Option<String>,
}

// ---- suppressions --------------------------------------------------------------------------

pub async fn list_suppressions(app: &App, query: &Query) -> Result<Resp, ApiError> {
    let page = Pagination::from_query(query)?;
    let after = page
        .after
        .as_deref()
        .map(|a| {
            a.split_once('\n')
                .map(|(r, c)| (r.to_owned(), c.to_owned()))
                .ok_or_else(|| ApiError::invalid("after", "not a cursor from this listing"))
        })
        .transpose()?;
    let recipient = query.get("recipient").map(str::to_owned);
    let channel = query.get("channel").map(str::to_owned);
    let (items, more) = app
        .herald
        .store()
        .list_suppressions(recipient, channel, after, page.limit)
        .await?;
    let next = more
        .then(|| {
            items
                .last()
                .map(|s| format!("{}\n{}", s.recipient, s.channel))
        })
        .flatten();
    let items: Vec<Value> = items.iter().map(render_suppression).collect();
    Ok(json(StatusCode::OK, &json!({"items": items, "next": next})))
}

pub async fn create_suppression(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: SuppressionBody = json_body::read(app, headers, body).await?;
    let item = suppression(req, "", caller)?;
    let view = SuppressionView {
        recipient: item.recipient.clone(),
        channel: item.channel.clone(),
        record: item.record.clone(),
    };
    let audit = entry(
        caller,
        "suppression.create",
        &item.recipient,
        None,
        Some(render_suppression(&view)),
    );
    app.herald
        .store()
        .add_suppressions(vec![item], vec![audit])
        .await?;
    app.herald
        .core()
        .invalidate(&cache_keys::suppressions(&view.recipient));
    Ok(json(StatusCode::CREATED, &render_suppression(&view)))
}

pub async fn bulk_suppress(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: Bulk = json_body::read(app, headers, body).await?;
    if req.items.len() > MAX_BULK {
        return Err(ApiError::invalid(
            "items",
            format_args!(
                "at most {MAX_BULK} items per request, got {}",
                req.items.len()
            ),
        ));
    }
    // Every item is checked before anything is written: all or nothing.
    let items = req
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| suppression(item, &format!("items[{i}]."), caller))
        .collect::<Result<Vec<_>, _>>()?;
    let count = items.len();
    let audit = entry(
        caller,
        "suppression.bulk_create",
        "*",
        None,
        Some(json!({"count": count})),
    );
    app.herald
        .store()
        .add_suppressions(items, vec![audit])
        .await?;
    // Thousands of recipients: one pattern rather than thousands of keys.
    app.herald.core().invalidate(cache_keys::ALL_SUPPRESSIONS);
    app.herald.core().perf_event(PerfEvent::BulkOperation {
        what: "suppressions.bulk".into(),
        count,
    });
    Ok(json(StatusCode::CREATED, &json!({"created": count})))
}

pub async fn delete_suppression(
    app: &App,
    caller: &Caller,
    recipient: &str,
    channel: &str,
) -> Result<Resp, ApiError> {
    let (actor, subject, on) = (
        caller.name.clone(),
        recipient.to_owned(),
        channel.to_owned(),
    );
    let removed = app
        .herald
        .store()
        .remove_suppression(recipient.to_owned(), channel.to_owned(), move |before| {
            AuditEntry {
                at_ms: now_ms(),
                actor: actor.clone(),
                action: "suppression.delete".into(),
                subject: subject.clone(),
                before: Some(json!({"channel": on, "reason": before.reason, "note": before.note})),
                after: None,
            }
        })
        .await?;
    app.herald
        .core()
        .invalidate(&cache_keys::suppressions(recipient));
    match removed {
        Some(_) => Ok(empty(StatusCode::NO_CONTENT)),
        None => Err(ApiError::not_found(format_args!(
            "suppression of {recipient} on {channel}"
        ))),
    }
}

fn suppression(
    req: SuppressionBody,
    at: &str,
    caller: &Caller,
) -> Result<NewSuppression, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    let recipient = req.recipient.trim();
    if recipient.is_empty() || recipient.len() > 320 {
        return Err(ApiError::invalid(
            &field("recipient"),
            "expected 1 to 320 characters",
        ));
    }
    let channel = if req.channel == "*" {
        "*".to_owned()
    } else {
        req.channel
            .parse::<Channel>()
            .map_err(|e| ApiError::invalid(&field("channel"), format_args!("{e} (or \"*\")")))?
            .as_str()
            .to_owned()
    };
    let reason = req
        .reason
        .parse::<Reason>()
        .map_err(|e| ApiError::invalid(&field("reason"), e))?;
    let expires_at_ms = req
        .expires_at
        .as_deref()
        .map(|t| parse_time(&field("expires_at"), t))
        .transpose()?;
    Ok(NewSuppression {
        recipient: recipient.to_owned(),
        channel,
        record: SuppressionRecord {
            reason: reason.as_str().to_owned(),
            expires_at_ms,
            note: req.note,
            created_by: caller.name.clone(),
            created_at_ms: now_ms(),
        },
    })
}

fn render_suppression(s: &SuppressionView) -> Value {
    json!({
        "recipient": s.recipient,
        "channel": s.channel,
        "reason": s.record.reason,
        "expires_at": s.record.expires_at_ms.map(rfc3339),
        "note": s.record.note,
        "created_by": s.record.created_by,
        "created_at": rfc3339(s.record.created_at_ms),
    })
}

// ---- preferences ---------------------------------------------------------------------------

pub async fn get_preferences(app: &App, recipient: &str) -> Result<Resp, ApiError> {
    // Through the cache: the same entry the delivery path reads, one hit or miss per lookup.
    let cached = app
        .herald
        .core()
        .cached_preferences(recipient)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "preferences lookup");
            ApiError::unavailable()
        })?;
    let prefs = cached.as_ref().clone().unwrap_or_default();
    Ok(json(StatusCode::OK, &render_preferences(recipient, &prefs)))
}

pub async fn put_preferences(
    app: &App,
    caller: &Caller,
    recipient: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: PreferencesBody = json_body::read(app, headers, body).await?;
    let prefs = Preferences {
        channels: check_channels("channels", req.channels)?,
        categories: req
            .categories
            .into_iter()
            .map(|(category, channels)| {
                if category.is_empty() {
                    return Err(ApiError::invalid(
                        "categories",
                        "a category name must not be empty",
                    ));
                }
                let at = format!("categories.{category}");
                Ok((category, check_channels(&at, channels)?))
            })
            .collect::<Result<_, _>>()?,
    };
    let stored = change_preferences(app, caller, recipient, "preferences.replace", move |_| {
        Some(prefs.clone())
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &render_preferences(recipient, &stored),
    ))
}

pub async fn reset_preferences(
    app: &App,
    caller: &Caller,
    recipient: &str,
) -> Result<Resp, ApiError> {
    change_preferences(app, caller, recipient, "preferences.reset", |_| None).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `opt-out` (`allowed` false) or `opt-in` (true) of a channel, or of a category on a channel.
pub async fn opt(
    app: &App,
    caller: &Caller,
    recipient: &str,
    allowed: bool,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: OptBody = json_body::read(app, headers, body).await?;
    let channel = req
        .channel
        .parse::<Channel>()
        .map_err(|e| ApiError::invalid("channel", e))?
        .as_str()
        .to_owned();
    if req.category.as_deref() == Some("") {
        return Err(ApiError::invalid("category", "must not be empty"));
    }
    let category = req.category;
    let action = if allowed {
        "preferences.opt_in"
    } else {
        "preferences.opt_out"
    };
    let stored = change_preferences(app, caller, recipient, action, move |current| {
        let mut prefs = current.unwrap_or_default();
        match &category {
            Some(category) => {
                prefs
                    .categories
                    .entry(category.clone())
                    .or_default()
                    .insert(channel.clone(), allowed);
            }
            None => {
                prefs.channels.insert(channel.clone(), allowed);
            }
        }
        Some(prefs)
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &render_preferences(recipient, &stored),
    ))
}

async fn change_preferences<C>(
    app: &App,
    caller: &Caller,
    recipient: &str,
    action: &'static str,
    change: C,
) -> Result<Preferences, ApiError>
where
    C: Fn(Option<Preferences>) -> Option<Preferences> + Send + 'static,
{
    let (actor, subject) = (caller.name.clone(), recipient.to_owned());
    let stored = app
        .herald
        .store()
        .update_preferences(recipient.to_owned(), change, move |before, after| {
            AuditEntry {
                at_ms: now_ms(),
                actor: actor.clone(),
                action: action.into(),
                subject: subject.clone(),
                before: before.and_then(|p| serde_json::to_value(p).ok()),
                after: after.and_then(|p| serde_json::to_value(p).ok()),
            }
        })
        .await?;
    app.herald
        .core()
        .invalidate(&cache_keys::preferences(recipient));
    Ok(stored.unwrap_or_default())
}

fn check_channels(
    at: &str,
    channels: BTreeMap<String, bool>,
) -> Result<BTreeMap<String, bool>, ApiError> {
    channels
        .into_iter()
        .map(|(channel, on)| {
            let channel = channel
                .parse::<Channel>()
                .map_err(|e| ApiError::invalid(&format!("{at}.{channel}"), e))?;
            Ok((channel.as_str().to_owned(), on))
        })
        .collect()
}

fn render_preferences(recipient: &str, p: &Preferences) -> Value {
    json!({"recipient": recipient, "channels": p.channels, "categories": p.categories})
}

// ---- GDPR ----------------------------------------------------------------------------------

pub async fn export(app: &App, recipient: &str) -> Result<Resp, ApiError> {
    let held = app
        .herald
        .store()
        .export_subject(recipient.to_owned())
        .await?;
    let suppressions: Vec<Value> = held
        .suppressions
        .iter()
        .map(|(channel, record)| {
            render_suppression(&SuppressionView {
                recipient: recipient.to_owned(),
                channel: channel.clone(),
                record: record.clone(),
            })
        })
        .collect();
    let messages: Vec<Value> = held
        .messages
        .iter()
        .map(super::messages::render_full)
        .collect();
    let audit: Vec<Value> = held.audit.iter().map(render_audit).collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "recipient": recipient,
            "exported_at": rfc3339(now_ms()),
            "preferences": render_preferences(recipient, &held.preferences.unwrap_or_default()),
            "suppressions": suppressions,
            "audit": audit,
            "messages": messages,
        }),
    ))
}

pub async fn erase(app: &App, caller: &Caller, recipient: &str) -> Result<Resp, ApiError> {
    let alias = herald_storage::pseudonym(recipient);
    // The erasure's own entry names the pseudonym, never the address.
    let audit = entry(caller, "subject.erase", &alias, None, None);
    let report = app
        .herald
        .store()
        .erase_subject(recipient.to_owned(), audit)
        .await?;
    app.herald
        .core()
        .invalidate(&cache_keys::suppressions(recipient));
    app.herald
        .core()
        .invalidate(&cache_keys::preferences(recipient));
    tracing::info!(
        messages = report.messages,
        suppressions_kept = report.suppressions,
        audit_pseudonymised = report.audit_entries,
        "subject erased"
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---- audit ---------------------------------------------------------------------------------

pub async fn list_audit(app: &App, query: &Query) -> Result<Resp, ApiError> {
    let page = Pagination::from_query(query)?;
    let after = page
        .after
        .as_deref()
        .map(|a| {
            a.strip_prefix("aud_")
                .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                .ok_or_else(|| ApiError::invalid("after", "not a cursor from this listing"))
        })
        .transpose()?;
    let (items, more) = app
        .herald
        .store()
        .list_audit(
            query.get("subject").map(str::to_owned),
            query.get("actor").map(str::to_owned),
            after,
            page.limit,
        )
        .await?;
    let next = more.then(|| items.last().map(|e| audit_id(e.id))).flatten();
    let items: Vec<Value> = items.iter().map(render_audit).collect();
    Ok(json(StatusCode::OK, &json!({"items": items, "next": next})))
}

fn audit_id(id: u128) -> String {
    format!("aud_{id:032x}")
}

fn render_audit(view: &AuditView) -> Value {
    let e = &view.entry;
    json!({
        "id": audit_id(view.id),
        "at": rfc3339(e.at_ms),
        "actor": e.actor,
        "action": e.action,
        "subject": e.subject,
        "before": e.before,
        "after": e.after,
    })
}

/// Appends the audit entry for a change already made elsewhere (destinations, the DLQ); a
/// failure to do so is logged, not reported to the caller, whose change did happen.
pub async fn audit(
    app: &App,
    caller: &Caller,
    action: &str,
    subject: &str,
    before: Option<Value>,
    after: Option<Value>,
) {
    let entry = entry(caller, action, subject, before, after);
    if let Err(e) = app.herald.store().append_audit(entry).await {
        tracing::error!(error = %e, action, subject, "audit entry not written");
    }
}

/// An audit entry for a change made by `caller`.
pub fn entry(
    caller: &Caller,
    action: &str,
    subject: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> AuditEntry {
    AuditEntry {
        at_ms: now_ms(),
        actor: caller.name.clone(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        before,
        after,
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
