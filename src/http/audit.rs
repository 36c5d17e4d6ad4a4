//! `GET /v1/audit`: the append-only trail, newest first, paginated in storage.

use herald_storage::AuditView;
use http::StatusCode;
use serde_json::{Value, json};

use super::App;
use super::query::{Pagination, Query};
use super::response::{ApiError, Resp, json, rfc3339};

pub async fn list(app: &App, query: &Query) -> Result<Resp, ApiError> {
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
    // A subject filter names a recipient in its canonical form, like everything else; other
    // subjects (destination names, DLQ ids, `*`) are left as they are by the parse.
    let subject = query
        .get("subject")
        .map(|s| herald_actors::admin::recipient("subject", s).map(String::from))
        .transpose()?;
    let (items, more) = app
        .herald
        .store()
        .list_audit(
            subject,
            query.get("actor").map(str::to_owned),
            after,
            page.limit,
        )
        .await?;
    let next = more.then(|| items.last().map(|e| id(e.id))).flatten();
    let items: Vec<Value> = items.iter().map(render).collect();
    Ok(json(StatusCode::OK, &json!({"items": items, "next": next})))
}

fn id(id: u128) -> String {
    format!("aud_{id:032x}")
}

pub fn render(view: &AuditView) -> Value {
    let e = &view.entry;
    json!({
        "id": id(view.id),
        "at": rfc3339(e.at_ms),
        "actor": e.actor,
        "action": e.action,
        "subject": e.subject,
        "before": e.before,
        "after": e.after,
    })
}
