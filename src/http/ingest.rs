//! The public ingest port: partner webhooks and health.
//!
//! `POST /webhooks/{source}` applies the contract's checks in its order: source exists (404),
//! client not blocked (403), size (413), rate limit (429 + `Retry-After`), then the verifier's
//! headers (400), timestamp (401) and signature (401), then idempotency and the durable commit
//! (202, or 200 for a duplicate). Nothing is answered 2xx before the commit returned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use herald_actors::InboundWebhook;
use http::{HeaderValue, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::json;

use super::App;
use super::body;
use super::response::{ApiError, Resp, json};
use super::routes::{Params, Route};

pub async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    route: Route,
    params: Params,
) -> Resp {
    let result = match route {
        Route::Webhook => {
            let source = params.get("source");
            let result = webhook(&app, source, req, peer).await;
            // Only configured sources get a series: the label set stays bounded.
            if app.herald.source(source).is_some() {
                let outcome = match &result {
                    Ok(resp) if resp.status() == StatusCode::OK => "duplicate",
                    Ok(_) => "accepted",
                    Err(e) => e.code,
                };
                app.herald.core().metrics.ingest(source, outcome);
            }
            result
        }
        Route::Healthz => Ok(super::api::healthz()),
        Route::Vitals | Route::VitalsPreflight => Ok(super::vitals::route(&app, req).await),
        // The API port's routes: `find` never yields them for this port.
        _ => Err(ApiError::not_found(format_args!(
            "route {}",
            req.uri().path()
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

async fn webhook(
    app: &App,
    source_name: &str,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Resp, ApiError> {
    let herald = &app.herald;
    let source = herald.source(source_name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no source named `{source_name}`"),
        )
    })?;
    if herald.is_blocked(peer.ip()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "blocked",
            "this client is blocked after repeated invalid signatures",
        ));
    }
    let (parts, incoming) = req.into_parts();
    let body = body::read(
        &parts.headers,
        incoming,
        app.max_body_bytes,
        app.body_timeout,
    )
    .await?;
    if let Err(wait) = source.check_rate() {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("source `{source_name}` is over its rate limit"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return Ok(resp);
    }
    let outcome = herald
        .ingest(InboundWebhook {
            source: source.name.clone(),
            client: peer.ip(),
            headers: parts.headers,
            body,
            received_at: SystemTime::now(),
        })
        .await;
    match outcome {
        Ok(done) if done.duplicate => Ok(json(
            StatusCode::OK,
            &json!({"id": done.id.to_string(), "duplicate": true}),
        )),
        Ok(done) => Ok(json(
            StatusCode::ACCEPTED,
            &json!({"id": done.id.to_string(), "status": "accepted"}),
        )),
        Err(e) => Err(e.into()),
    }
}
