//! `/v1/preferences/{recipient}`: parse, call [`herald_actors::admin`], render.

use herald_actors::admin::preferences::{OptInput, PreferencesInput};
use herald_storage::{Preferences, Recipient};
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::App;
use super::auth::Caller;
use super::json_body;
use super::response::{ApiError, Resp, empty, json};

pub async fn get(app: &App, recipient: &str) -> Result<Resp, ApiError> {
    let (who, prefs) = app.herald.admin().preferences(recipient).await?;
    Ok(json(StatusCode::OK, &render(&who, &prefs)))
}

pub async fn put(
    app: &App,
    caller: &Caller,
    recipient: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: PreferencesInput = json_body::read(app, headers, body).await?;
    let (who, prefs) = app
        .herald
        .admin()
        .replace_preferences(&caller.name, recipient, req)
        .await?;
    Ok(json(StatusCode::OK, &render(&who, &prefs)))
}

pub async fn reset(app: &App, caller: &Caller, recipient: &str) -> Result<Resp, ApiError> {
    app.herald
        .admin()
        .reset_preferences(&caller.name, recipient)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `opt-out` (`allowed` false) or `opt-in` (true).
pub async fn opt(
    app: &App,
    caller: &Caller,
    recipient: &str,
    allowed: bool,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: OptInput = json_body::read(app, headers, body).await?;
    let (who, prefs) = app
        .herald
        .admin()
        .opt(&caller.name, recipient, allowed, req)
        .await?;
    Ok(json(StatusCode::OK, &render(&who, &prefs)))
}

pub fn render(recipient: &Recipient, p: &Preferences) -> Value {
    json!({"recipient": recipient, "channels": p.channels, "categories": p.categories})
}
