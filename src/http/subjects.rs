//! `/v1/subjects/{recipient}`: GDPR export and erasure, through [`herald_actors::admin`].
//! What erasure keeps, and why, is in the README ("GDPR").

use herald_actors::unix_ms;
use http::StatusCode;
use serde_json::{Value, json};

use super::auth::Caller;
use super::response::{ApiError, Resp, empty, json, rfc3339};
use super::{App, audit, preferences, suppressions};

pub async fn export(app: &App, recipient: &str) -> Result<Resp, ApiError> {
    let (who, held) = app.herald.admin().export_subject(recipient).await?;
    let suppressions: Vec<Value> = held.suppressions.iter().map(suppressions::render).collect();
    let messages: Vec<Value> = held
        .messages
        .iter()
        .map(super::messages::render_full)
        .collect();
    let audit: Vec<Value> = held.audit.iter().map(audit::render).collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "recipient": who,
            "exported_at": rfc3339(unix_ms(std::time::SystemTime::now())),
            "preferences": preferences::render(&who, &held.preferences.unwrap_or_default()),
            "suppressions": suppressions,
            "audit": audit,
            "messages": messages,
        }),
    ))
}

pub async fn erase(app: &App, caller: &Caller, recipient: &str) -> Result<Resp, ApiError> {
    app.herald
        .admin()
        .erase_subject(&caller.name, recipient)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
