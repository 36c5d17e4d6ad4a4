//! `/v1/destinations`: parse, call [`herald_actors::admin`], render. The rules live there.

use herald_actors::admin::destinations::{DestinationPatch, NewDestination, Rotation};
use herald_actors::dispatcher::circuit_from_record;
use herald_actors::unix_ms;
use herald_storage::DestinationRecord;
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::App;
use super::auth::Caller;
use super::json_body;
use super::response::{ApiError, Resp, empty, json, rfc3339};

pub async fn list(app: &App) -> Result<Resp, ApiError> {
    let all = app.herald.admin().destinations().await?;
    let items: Vec<Value> = all.iter().map(|(name, r)| render(app, name, r)).collect();
    Ok(json(StatusCode::OK, &json!({"items": items, "next": null})))
}

pub async fn get(app: &App, name: &str) -> Result<Resp, ApiError> {
    let admin = app.herald.admin();
    let record = admin.destination(name).await?;
    let mut view = render(app, name, &record);
    view["queued"] = admin.queued(name).await?.into();
    Ok(json(StatusCode::OK, &view))
}

pub async fn create(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: NewDestination = json_body::read(app, headers, body).await?;
    let name = req.name.clone();
    let created = app
        .herald
        .admin()
        .create_destination(&caller.name, req)
        .await?;
    let mut view = render(app, &name, &created.record);
    // The secret is shown once, on creation (and on rotation), never by GET.
    view["secret"] = created.secret.into();
    Ok(json(StatusCode::CREATED, &view))
}

pub async fn patch(
    app: &App,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: DestinationPatch = json_body::read(app, headers, body).await?;
    let updated = app
        .herald
        .admin()
        .patch_destination(&caller.name, name, req)
        .await?;
    Ok(json(StatusCode::OK, &render(app, name, &updated)))
}

pub async fn delete(app: &App, caller: &Caller, name: &str) -> Result<Resp, ApiError> {
    app.herald
        .admin()
        .delete_destination(&caller.name, name)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn rotate(
    app: &App,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: Rotation = json_body::read_or_default(app, headers, body).await?;
    let rotated = app
        .herald
        .admin()
        .rotate_secret(&caller.name, name, req)
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "secret": rotated.secret,
            "previous_secret_valid_until": rotated.previous_valid_until_ms.map(rfc3339),
        }),
    ))
}

fn render(app: &App, name: &str, r: &DestinationRecord) -> Value {
    let policy = app.herald.core().settings.delivery.breaker;
    let circuit = circuit_from_record(&r.circuit, &policy, unix_ms(std::time::SystemTime::now()));
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
        "circuit": {
            "state": circuit.name(),
            "consecutive_failures": circuit.consecutive_failures(),
            "opened_at": circuit.opened_at_ms().map(rfc3339),
        },
    })
}
