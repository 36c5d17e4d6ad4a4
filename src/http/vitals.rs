//! `POST /vitals`: Core Web Vitals beacons from browsers (`navigator.sendBeacon`).
//!
//! Public and cross-origin by design: CORS allows any origin, and preflight is answered. The
//! body is JSON whatever the content type (`sendBeacon` sends `text/plain`), one beacon or an
//! array; anything malformed is a 400 naming the item and field, never a crash.

use http::{HeaderValue, Method, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming;

use super::App;
use super::body;
use super::response::{ApiError, Resp, empty};

/// Browsers cap `sendBeacon` payloads at 64 KiB; more is not a beacon.
const MAX_BEACON_BYTES: usize = 64 * 1024;

pub async fn route(app: &App, req: Request<Incoming>) -> Resp {
    let mut resp = match *req.method() {
        Method::OPTIONS => {
            let mut resp = empty(StatusCode::NO_CONTENT);
            let headers = resp.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            resp
        }
        Method::POST => accept(app, req)
            .await
            .unwrap_or_else(ApiError::into_response),
        _ => ApiError::method_not_allowed().into_response(),
    };
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

async fn accept(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, incoming) = req.into_parts();
    let limit = MAX_BEACON_BYTES.min(app.max_body_bytes);
    let bytes = body::read(&parts.headers, incoming, limit, app.body_timeout).await?;
    let beacons = herald_actors::perf::vitals::parse_beacons(&bytes)
        .map_err(|e| ApiError::invalid("body", e))?;
    app.herald.vitals(beacons);
    Ok(empty(StatusCode::NO_CONTENT))
}
