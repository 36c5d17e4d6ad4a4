//! `/v1/dlq`: dead deliveries. Reads here; retry, bulk retry and discard are
//! [`herald_actors::admin`] operations.
//!
//! A DLQ entry's id is `{message id}.{destination}`. Retrying re-queues the delivery with a
//! fresh round of `max_attempts`; its earlier attempts stay in its history.

use herald_actors::admin::dlq::BulkRetry;
use herald_storage::{DeadCursor, DeadFilter, DeadLetter, DeliveryKey};
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::App;
use super::auth::Caller;
use super::json_body;
use super::messages::render_attempts;
use super::query::{Pagination, Query};
use super::response::{ApiError, Resp, empty, json, rfc3339};

pub async fn list(app: &App, query: &Query) -> Result<Resp, ApiError> {
    let page = Pagination::from_query(query)?;
    let after = page.after.as_deref().map(parse_cursor).transpose()?;
    let filter = DeadFilter {
        destination: query.get("destination").map(str::to_owned),
        since_ms: query
            .get("since")
            .map(|s| parse_time("since", s))
            .transpose()?,
    };
    let (items, next) = app
        .herald
        .store()
        .list_dead(filter, after, page.limit)
        .await?;
    let items: Vec<Value> = items.iter().map(render).collect();
    let next = next.map(|(at, msg, dest)| format!("{at}.{msg}.{dest}"));
    Ok(json(StatusCode::OK, &json!({"items": items, "next": next})))
}

pub async fn get(app: &App, id: &str) -> Result<Resp, ApiError> {
    let key = parse_id(id)?;
    let letter = app
        .herald
        .store()
        .dead(key)
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("dead delivery {id}")))?;
    Ok(json(StatusCode::OK, &render(&letter)))
}

pub async fn retry(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    app.herald
        .admin()
        .retry_dead(&caller.name, parse_id(id)?)
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({"id": id, "status": "pending", "requeued": 1}),
    ))
}

pub async fn bulk_retry(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: BulkRetry = json_body::read_or_default(app, headers, body).await?;
    let count = app
        .herald
        .admin()
        .retry_dead_in_bulk(&caller.name, req)
        .await?;
    Ok(json(StatusCode::OK, &json!({"requeued": count})))
}

pub async fn discard(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    app.herald
        .admin()
        .discard_dead(&caller.name, parse_id(id)?)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn render(letter: &DeadLetter) -> Value {
    let m = &letter.message;
    json!({
        "id": letter.key.to_string(),
        "message_id": letter.key.message.to_string(),
        "destination": letter.key.destination,
        "dead_at": rfc3339(letter.dead_at_ms),
        "reason": letter.delivery.reason,
        "source": m.source,
        "event_type": m.event_type,
        "attempts": render_attempts(&letter.delivery.attempts),
    })
}

fn parse_id(id: &str) -> Result<DeliveryKey, ApiError> {
    id.parse()
        .map_err(|()| ApiError::not_found(format_args!("dead delivery {id}")))
}

fn parse_cursor(raw: &str) -> Result<DeadCursor, ApiError> {
    let bad = || ApiError::invalid("after", "not a cursor from this listing");
    let (at, rest) = raw.split_once('.').ok_or_else(bad)?;
    let key: DeliveryKey = rest.parse().map_err(|()| bad())?;
    Ok((at.parse().map_err(|_| bad())?, key.message, key.destination))
}

/// An RFC 3339 time (any offset) in a query parameter, as UTC milliseconds.
pub fn parse_time(field: &str, raw: &str) -> Result<u64, ApiError> {
    herald_actors::time::parse_rfc3339(raw).map_err(|e| ApiError::invalid(field, e))
}
