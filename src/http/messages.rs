//! `GET /v1/messages` and `GET /v1/messages/{id}`.

use base64::Engine as _;
use herald_actors::admin::messages::Resend;
use herald_actors::{IngestError, Publish};
use herald_storage::{Attempt, DeliveryStatus, MessageFilter, MessageId, MessageView};
use http::HeaderMap;
use http::StatusCode;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::auth::Caller;
use super::json_body;
use super::query::{Pagination, Query};
use super::response::{ApiError, Resp, json, rfc3339};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    event_type: String,
    payload: Value,
    #[serde(default)]
    recipient: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `POST /v1/messages`: publish a message to every `"*"` destination whose event types match.
/// 202 once it is durably stored; a repeated `idempotency_key` answers the first message's id.
pub async fn publish(app: &App, headers: &HeaderMap, body: Incoming) -> Result<Resp, ApiError> {
    let req: PublishRequest = json_body::read(app, headers, body).await?;
    if req.event_type.is_empty() {
        return Err(ApiError::invalid("event_type", "must not be empty"));
    }
    if let Some(channel) = &req.channel {
        herald_actors::admin::keyword::<herald_storage::Channel>("channel", channel)?;
    }
    let recipient = req
        .recipient
        .as_deref()
        .map(|r| herald_actors::admin::recipient("recipient", r))
        .transpose()?;
    if req.idempotency_key.as_deref() == Some("") {
        return Err(ApiError::invalid("idempotency_key", "must not be empty"));
    }
    let body = serde_json::to_vec(&req.payload).map_err(|e| ApiError::invalid("payload", e))?;
    let outcome = app
        .herald
        .publish(Publish {
            event_type: req.event_type,
            body: body.into(),
            recipient,
            channel: req.channel,
            category: req.category,
            idempotency_key: req.idempotency_key,
        })
        .await;
    match outcome {
        Ok(done) => Ok(json(
            StatusCode::ACCEPTED,
            &json!({"id": done.id.to_string(), "status": "accepted", "duplicate": done.duplicate}),
        )),
        Err(IngestError::Storage(e)) => {
            tracing::error!(error = %e, "publish not stored");
            Err(ApiError::unavailable())
        }
        Err(_) => Err(ApiError::unavailable()),
    }
}

/// `POST /v1/messages/{id}/resend {destination?}`: deliver again with fresh attempts.
pub async fn resend(
    app: &App,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: Resend = json_body::read_or_default(app, headers, body).await?;
    let id = id
        .parse::<MessageId>()
        .map_err(|_| ApiError::not_found(format_args!("message {id}")))?;
    let requeued = app.herald.admin().resend(&caller.name, id, req).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({"id": id.to_string(), "requeued": requeued}),
    ))
}

pub async fn list(app: &App, query: &Query) -> Result<Resp, ApiError> {
    let page = Pagination::from_query(query)?;
    let after = page
        .after
        .as_deref()
        .map(|a| {
            a.parse::<MessageId>()
                .map_err(|e| ApiError::invalid("after", e))
        })
        .transpose()?;
    let status = query
        .get("status")
        .map(|s| {
            s.parse::<DeliveryStatus>().map_err(|()| {
                ApiError::invalid(
                    "status",
                    "expected one of pending, succeeded, retrying, dead, suppressed",
                )
            })
        })
        .transpose()?;
    let filter = MessageFilter {
        status,
        source: query.get("source").map(str::to_owned),
        event_type: query.get("event_type").map(str::to_owned),
        recipient: query
            .get("recipient")
            .map(|r| herald_actors::admin::recipient("recipient", r))
            .transpose()?,
        since_ms: query
            .get("since")
            .map(|s| super::dlq::parse_time("since", s))
            .transpose()?,
        until_ms: query
            .get("until")
            .map(|s| super::dlq::parse_time("until", s))
            .transpose()?,
    };
    let found = app
        .herald
        .store()
        .list_messages(filter, after, page.limit)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "listing messages");
            ApiError::unavailable()
        })?;
    let items: Vec<Value> = found.items.iter().map(render).collect();
    Ok(json(
        StatusCode::OK,
        &json!({"items": items, "next": found.next.map(|n| n.to_string())}),
    ))
}

pub async fn get(app: &App, id: &str) -> Result<Resp, ApiError> {
    let not_found = || ApiError::not_found(format_args!("message {id}"));
    let id = id.parse::<MessageId>().map_err(|_| not_found())?;
    let view = app
        .herald
        .store()
        .message(id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading a message");
            ApiError::unavailable()
        })?
        .ok_or_else(not_found)?;
    Ok(json(StatusCode::OK, &render_full(&view)))
}

/// A message with its body: JSON bodies as JSON, anything else as base64 of the exact bytes.
pub fn render_full(view: &MessageView) -> Value {
    let mut out = render(view);
    if let (Some(body), Value::Object(fields)) = (&view.body, &mut out) {
        match serde_json::from_slice::<Value>(body) {
            Ok(payload) => fields.insert("payload".into(), payload),
            Err(_) => fields.insert(
                "body_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            ),
        };
    }
    out
}

pub fn render_attempts(attempts: &[Attempt]) -> Vec<Value> {
    attempts
        .iter()
        .map(|a| {
            json!({
                "at": rfc3339(a.at_ms),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "response_body": a.response_body,
            })
        })
        .collect()
}

fn render(view: &MessageView) -> Value {
    let r = &view.record;
    let deliveries: Vec<Value> = view
        .deliveries
        .iter()
        .map(|(destination, d)| {
            json!({
                "destination": destination,
                "status": d.status.as_str(),
                "attempts": render_attempts(&d.attempts),
                "next_attempt_at": d.next_attempt_at_ms.map(rfc3339),
                "reason": d.reason,
            })
        })
        .collect();
    json!({
        "id": view.id.to_string(),
        "source": r.source,
        "external_id": r.external_id,
        "event_type": r.event_type,
        "content_type": r.content_type,
        "recipient": r.recipient,
        "channel": r.channel,
        "category": r.category,
        "received_at": rfc3339(r.received_at_ms),
        "body_bytes": r.body_len,
        "deliveries": deliveries,
    })
}
