//! The private API port: authenticated routes, health and readiness.
//!
//! Routing is a match on (method, path segments), one small router per resource, so every
//! route of the port is visible in this file. Each arm states the scope it needs.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::json;

use super::App;
use super::auth::Caller;
use super::query::{Query, segment};
use super::response::{ApiError, Resp, json};
use super::{
    audit, console, destinations, dlq, messages, monitoring, preferences, subjects, suppressions,
};
use crate::config::Scope;

pub async fn route(app: Arc<App>, req: Request<Incoming>, _peer: SocketAddr) -> Resp {
    handle(&app, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

/// What every resource router gets.
struct Call<'a> {
    app: &'a App,
    caller: Caller,
    method: Method,
    query: Query,
    headers: HeaderMap,
    body: Incoming,
}

async fn handle(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();

    // Unauthenticated: probes for load balancers and orchestrators.
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => return Ok(json(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::GET, ["readyz"]) => return Ok(readiness(app).await),
        (&Method::GET, ["metrics"]) => return monitoring::metrics(app).await,
        _ => {}
    }
    // The console's static files: public, with their own security headers.
    if let Some(resp) = console::asset(req.method(), &path, req.headers(), app.ingest_addr.port()) {
        return Ok(resp);
    }

    let caller = app.tokens.authenticate(req.headers())?;
    let query = Query::parse(req.uri().query());
    let (parts, body) = req.into_parts();
    let call = Call {
        app,
        caller,
        method: parts.method,
        query,
        headers: parts.headers,
        body,
    };
    match segments.as_slice() {
        ["v1", "messages", rest @ ..] => messages_routes(call, rest).await,
        ["v1", "destinations", rest @ ..] => destinations_routes(call, rest).await,
        ["v1", "dlq", rest @ ..] => dlq_routes(call, rest).await,
        ["v1", "suppressions", rest @ ..] => suppressions_routes(call, rest).await,
        ["v1", "preferences", rest @ ..] => preferences_routes(call, rest).await,
        ["v1", "subjects", rest @ ..] => subjects_routes(call, rest).await,
        ["v1", "whoami"] if call.method == Method::GET => Ok(console::whoami(&call.caller)),
        ["v1", "perf"] if call.method == Method::GET => {
            call.caller.require(Scope::Read)?;
            monitoring::perf(app).await
        }
        ["v1", "alerts"] if call.method == Method::GET => {
            call.caller.require(Scope::Read)?;
            monitoring::alerts(app, &call.query).await
        }
        ["v1", "cache", "stats"] if call.method == Method::GET => {
            call.caller.require(Scope::Read)?;
            monitoring::cache_stats(app).await
        }
        ["v1", "cache", "invalidate"] if call.method == Method::POST => {
            call.caller.require(Scope::Write)?;
            monitoring::cache_invalidate(app, &call.headers, call.body).await
        }
        ["v1", "storage"] if call.method == Method::GET => {
            call.caller.require(Scope::Read)?;
            monitoring::storage(app).await
        }
        ["v1", "storage", "maintenance"] if call.method == Method::POST => {
            call.caller.require(Scope::Admin)?;
            monitoring::maintenance(app).await
        }
        ["v1", "audit"] if call.method == Method::GET => {
            call.caller.require(Scope::Read)?;
            audit::list(app, &call.query).await
        }
        _ => Err(ApiError::not_found(format_args!("route {path}"))),
    }
}

async fn readiness(app: &App) -> Resp {
    if app.herald.store().is_ready().await {
        json(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "storage is not ready",
        )
        .into_response()
    }
}

async fn messages_routes(c: Call<'_>, rest: &[&str]) -> Result<Resp, ApiError> {
    let Call {
        app,
        caller,
        method,
        query,
        headers,
        body,
    } = c;
    match (method, rest) {
        (Method::GET, []) => {
            caller.require(Scope::Read)?;
            messages::list(app, &query).await
        }
        (Method::POST, []) => {
            caller.require(Scope::Publish)?;
            messages::publish(app, &headers, body).await
        }
        (Method::GET, [id]) => {
            caller.require(Scope::Read)?;
            messages::get(app, id).await
        }
        (Method::POST, [id, "resend"]) => {
            caller.require(Scope::Write)?;
            messages::resend(app, &caller, id, &headers, body).await
        }
        (_, [] | [_] | [_, "resend"]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("route")),
    }
}

async fn destinations_routes(c: Call<'_>, rest: &[&str]) -> Result<Resp, ApiError> {
    let Call {
        app,
        caller,
        method,
        headers,
        body,
        ..
    } = c;
    match (method, rest) {
        (Method::GET, []) => {
            caller.require(Scope::Read)?;
            destinations::list(app).await
        }
        (Method::POST, []) => {
            caller.require(Scope::Write)?;
            destinations::create(app, &caller, &headers, body).await
        }
        (Method::GET, [name]) => {
            caller.require(Scope::Read)?;
            destinations::get(app, name).await
        }
        (Method::PATCH, [name]) => {
            caller.require(Scope::Write)?;
            destinations::patch(app, &caller, name, &headers, body).await
        }
        (Method::DELETE, [name]) => {
            caller.require(Scope::Write)?;
            destinations::delete(app, &caller, name).await
        }
        (Method::POST, [name, "rotate-secret"]) => {
            caller.require(Scope::Write)?;
            destinations::rotate(app, &caller, name, &headers, body).await
        }
        (_, [] | [_] | [_, "rotate-secret"]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("route")),
    }
}

async fn dlq_routes(c: Call<'_>, rest: &[&str]) -> Result<Resp, ApiError> {
    let Call {
        app,
        caller,
        method,
        query,
        headers,
        body,
    } = c;
    match (method, rest) {
        (Method::GET, []) => {
            caller.require(Scope::Read)?;
            dlq::list(app, &query).await
        }
        (Method::POST, ["retry"]) => {
            caller.require(Scope::Write)?;
            dlq::bulk_retry(app, &caller, &headers, body).await
        }
        (Method::GET, [id]) => {
            caller.require(Scope::Read)?;
            dlq::get(app, id).await
        }
        (Method::DELETE, [id]) => {
            caller.require(Scope::Write)?;
            dlq::discard(app, &caller, id).await
        }
        (Method::POST, [id, "retry"]) => {
            caller.require(Scope::Write)?;
            dlq::retry(app, &caller, id).await
        }
        (_, [] | [_] | [_, "retry"]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("route")),
    }
}

async fn suppressions_routes(c: Call<'_>, rest: &[&str]) -> Result<Resp, ApiError> {
    let Call {
        app,
        caller,
        method,
        query,
        headers,
        body,
    } = c;
    match (method, rest) {
        (Method::GET, []) => {
            caller.require(Scope::Read)?;
            suppressions::list(app, &query).await
        }
        (Method::POST, []) => {
            caller.require(Scope::Write)?;
            suppressions::create(app, &caller, &headers, body).await
        }
        (Method::POST, ["bulk"]) => {
            caller.require(Scope::Admin)?;
            suppressions::bulk(app, &caller, &headers, body).await
        }
        (Method::DELETE, [recipient, channel]) => {
            caller.require(Scope::Write)?;
            let (recipient, channel) = (segment(recipient), segment(channel));
            suppressions::delete(app, &caller, &recipient, &channel).await
        }
        (_, [] | ["bulk"] | [_, _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("route")),
    }
}

async fn preferences_routes(c: Call<'_>, rest: &[&str]) -> Result<Resp, ApiError> {
    let Call {
        app,
        caller,
        method,
        headers,
        body,
        ..
    } = c;
    match (method, rest) {
        (Method::GET, [recipient]) => {
            caller.require(Scope::Read)?;
            preferences::get(app, &segment(recipient)).await
        }
        (Method::PUT, [recipient]) => {
            caller.require(Scope::Write)?;
            preferences::put(app, &caller, &segment(recipient), &headers, body).await
        }
        (Method::DELETE, [recipient]) => {
            caller.require(Scope::Write)?;
            preferences::reset(app, &caller, &segment(recipient)).await
        }
        (Method::POST, [recipient, action @ ("opt-out" | "opt-in")]) => {
            caller.require(Scope::Write)?;
            let allowed = *action == "opt-in";
            preferences::opt(app, &caller, &segment(recipient), allowed, &headers, body).await
        }
        (_, [_] | [_, "opt-out" | "opt-in"]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("route")),
    }
}

/// Data subjects (GDPR): personal data in bulk, so `admin` only.
async fn subjects_routes(c: Call<'_>, rest: &[&str]) -> Result<Resp, ApiError> {
    let Call {
        app,
        caller,
        method,
        ..
    } = c;
    match (method, rest) {
        (Method::GET, [recipient, "export"]) => {
            caller.require(Scope::Admin)?;
            subjects::export(app, &segment(recipient)).await
        }
        (Method::DELETE, [recipient]) => {
            caller.require(Scope::Admin)?;
            subjects::erase(app, &caller, &segment(recipient)).await
        }
        (_, [_] | [_, "export"]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("route")),
    }
}
