//! `/v1/suppressions`: parse, call [`herald_actors::admin`], render.

use herald_actors::admin::suppressions::{BulkSuppressions, SuppressionInput, SuppressionQuery};
use herald_storage::SuppressionView;
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::App;
use super::auth::Caller;
use super::json_body;
use super::query::{Pagination, Query};
use super::response::{ApiError, Resp, empty, json, rfc3339};

pub async fn list(app: &App, query: &Query) -> Result<Resp, ApiError> {
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
    let (items, more) = app
        .herald
        .admin()
        .suppressions(SuppressionQuery {
            recipient: query.get("recipient").map(str::to_owned),
            channel: query.get("channel").map(str::to_owned),
            after,
            limit: page.limit,
        })
        .await?;
    let next = more
        .then(|| {
            items
                .last()
                .map(|s| format!("{}\n{}", s.recipient, s.channel))
        })
        .flatten();
    let items: Vec<Value> = items.iter().map(render).collect();
    Ok(json(StatusCode::OK, &json!({"items": items, "next": next})))
}

pub async fn create(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: SuppressionInput = json_body::read(app, headers, body).await?;
    let view = app
        .herald
        .admin()
        .create_suppression(&caller.name, req)
        .await?;
    Ok(json(StatusCode::CREATED, &render(&view)))
}

pub async fn bulk(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: BulkSuppressions = json_body::read(app, headers, body).await?;
    let count = app
        .herald
        .admin()
        .create_suppressions_in_bulk(&caller.name, req)
        .await?;
    Ok(json(StatusCode::CREATED, &json!({"created": count})))
}

pub async fn delete(
    app: &App,
    caller: &Caller,
    recipient: &str,
    channel: &str,
) -> Result<Resp, ApiError> {
    app.herald
        .admin()
        .delete_suppression(&caller.name, recipient, channel)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub fn render(s: &SuppressionView) -> Value {
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
