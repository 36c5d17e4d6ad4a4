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
use super::messages;
use super::query::Query;
use super::response::{ApiError, Resp, json};
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
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "messages"]) => {
            caller.require(Scope::Read)?;
            messages::list(app, &query).await
        }
        (&Method::GET, ["v1", "messages", id]) => {
            caller.require(Scope::Read)?;
            messages::get(app, id).await
        }
        (_, ["v1", "messages"] | ["v1", "messages", _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found(format_args!("route {path}"))),
    }
}
