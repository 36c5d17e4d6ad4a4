//! `POST /vitals`: Core Web Vitals beacons from browsers (`navigator.sendBeacon`).
//!
//! Public and cross-origin by design: CORS allows any origin, credentialed requests included,
//! and preflight is answered. `sendBeacon` always sends credentials, so a beacon whose body
//! is an `application/json` Blob (not a CORS-safelisted type) is preflighted in credentials
//! mode `include`, where browsers refuse `Access-Control-Allow-Origin: *` and a `*` in the
//! allowed headers. So a request with an `Origin` gets that origin back, with
//! `Access-Control-Allow-Credentials: true` and `Vary: Origin` (caches must not serve one
//! origin's answer to another), and a preflight gets the request headers it asked for listed
//! by name. Nothing is read from cookies: allowing credentials exposes nothing, since the
//! answer is an empty 204. A request without an `Origin` (not from a browser page) gets `*`.
//!
//! The body is JSON whatever the content type (`sendBeacon` of a string sends `text/plain`),
//! one beacon or an array; anything malformed is a 400 naming the item and field, never a
//! crash.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming;

use super::App;
use super::body;
use super::response::{ApiError, Resp, empty};

/// Browsers cap `sendBeacon` payloads at 64 KiB; more is not a beacon.
const MAX_BEACON_BYTES: usize = 64 * 1024;

pub async fn route(app: &App, req: Request<Incoming>) -> Resp {
    let origin = req.headers().get(header::ORIGIN).cloned();
    // What the answer depends on besides the URL; a preflight echoes the headers asked for.
    let vary = if req.method() == Method::OPTIONS {
        "Origin, Access-Control-Request-Headers"
    } else {
        "Origin"
    };
    let mut resp = match *req.method() {
        Method::OPTIONS => preflight(req.headers()),
        Method::POST => accept(app, req)
            .await
            .unwrap_or_else(ApiError::into_response),
        _ => ApiError::method_not_allowed().into_response(),
    };
    let headers = resp.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static(vary));
    match origin {
        Some(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    resp
}

/// The answer to a CORS preflight: POST, with the headers asked for.
fn preflight(request: &HeaderMap) -> Resp {
    let mut resp = empty(StatusCode::NO_CONTENT);
    let headers = resp.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    // Echoed, since `*` means the literal name `*` for a credentialed request; they arrive
    // as a valid header value, so they go back as one.
    let asked = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|asked| !asked.is_empty())
        .cloned()
        .unwrap_or(HeaderValue::from_static("content-type"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
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
