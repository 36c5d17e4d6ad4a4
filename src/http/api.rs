//! The private API port: authenticated routes, health and readiness.
//!
//! Routing is a match on (method, path segments): every route of the port is visible here in
//! one place. Each arm states the scope it needs.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::json;

use super::App;
use super::query::Query;
use super::response::{ApiError, Resp, json};
use super::{destinations, dlq, messages};
use crate::config::Scope;

pub async fn route(app: Arc<App>, req: Request<Incoming>, _peer: SocketAddr) -> Resp {
    handle(&app, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn handle(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();

    // Unauthenticated: probes for load balancers and orchestrators.
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => return Ok(json(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::GET, ["readyz"]) => {
            return Ok(if app.herald.store().is_ready().await {
                json(StatusCode::OK, &json!({"status": "ready"}))
            } else {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "storage is not ready",
                )
                .into_response()
            });
        }
        _ => {}
    }

    let caller = app.tokens.authenticate(req.headers())?;
    let query = Query::parse(req.uri().query());
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    match (&method, segments.as_slice()) {
        // messages
        (&Method::GET, ["v1", "messages"]) => {
            caller.require(Scope::Read)?;
            messages::list(app, &query).await
        }
        (&Method::POST, ["v1", "messages"]) => {
            caller.require(Scope::Publish)?;
            messages::publish(app, headers, body).await
        }
        (&Method::GET, ["v1", "messages", id]) => {
            caller.require(Scope::Read)?;
            messages::get(app, id).await
        }
        (_, ["v1", "messages"] | ["v1", "messages", _]) => Err(ApiError::method_not_allowed()),

        // destinations
        (&Method::GET, ["v1", "destinations"]) => {
            caller.require(Scope::Read)?;
            destinations::list(app).await
        }
        (&Method::POST, ["v1", "destinations"]) => {
            caller.require(Scope::Write)?;
            destinations::create(app, headers, body).await
        }
        (&Method::GET, ["v1", "destinations", name]) => {
            caller.require(Scope::Read)?;
            destinations::get(app, name).await
        }
        (&Method::PATCH, ["v1", "destinations", name]) => {
            caller.require(Scope::Write)?;
            destinations::patch(app, name, headers, body).await
        }
        (&Method::DELETE, ["v1", "destinations", name]) => {
            caller.require(Scope::Write)?;
            destinations::delete(app, name).await
        }
        (&Method::POST, ["v1", "destinations", name, "rotate-secret"]) => {
            caller.require(Scope::Write)?;
            destinations::rotate(app, name, headers, body).await
        }
        (_, ["v1", "destinations", ..]) => Err(ApiError::method_not_allowed()),

        // dead-letter queue
        (&Method::GET, ["v1", "dlq"]) => {
            caller.require(Scope::Read)?;
            dlq::list(app, &query).await
        }
        (&Method::POST, ["v1", "dlq", "retry"]) => {
            caller.require(Scope::Write)?;
            dlq::bulk_retry(app, headers, body).await
        }
        (&Method::GET, ["v1", "dlq", id]) => {
            caller.require(Scope::Read)?;
            dlq::get(app, id).await
        }
        (&Method::DELETE, ["v1", "dlq", id]) => {
            caller.require(Scope::Write)?;
            dlq::discard(app, id).await
        }
        (&Method::POST, ["v1", "dlq", id, "retry"]) => {
            caller.require(Scope::Write)?;
            dlq::retry(app, id).await
        }
        (_, ["v1", "dlq", ..]) => Err(ApiError::method_not_allowed()),

        _ => Err(ApiError::not_found(format_args!("route {path}"))),
    }
}
