//! One outbound attempt: a signed `POST` of the original bytes, its outcome as data.
//!
//! Headers are the Standard Webhooks three, signed with the destination's secret (and, during
//! a rotation's grace period, also with the previous one: both signatures travel in
//! `webhook-signature`, and receivers accept either). `webhook-id` is the message id, the same
//! on every attempt, so receivers can deduplicate. Redirects are never followed: a 3xx is a
//! failure like any non-2xx. A failed attempt is a value, never an error or a panic.
//!
//! One client serves every destination. Its pool keeps keep-alive connections per scheme and
//! authority, so each destination reuses its own (TLS sessions included); every new
//! connection is opened by the SSRF guard, and for `https` carries TLS on top of it.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

use crate::dispatcher::ssrf::GuardedConnector;
use crate::dispatcher::tls;
use crate::verifier::schemes::sign_standard;

/// The HTTP client shared by all attempts: pooled keep-alive connections, every one opened
/// through the SSRF guard.
pub type HttpClient = Client<GuardedConnector, Full<Bytes>>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The client: connections through the SSRF guard (`allow_private` as configured, each
/// step bounded by `connect_timeout`), TLS trusting Mozilla's roots plus `extra_roots`, at
/// most `max_idle_per_host` idle connections kept per destination. Fails only on an extra
/// root that is not a usable CA certificate.
pub fn client(
    allow_private: bool,
    connect_timeout: Duration,
    extra_roots: &[CertificateDer<'static>],
    max_idle_per_host: usize,
) -> Result<HttpClient, rustls::Error> {
    let connector = GuardedConnector::new(
        allow_private,
        connect_timeout,
        tls::client_config(extra_roots)?,
    );
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(max_idle_per_host)
        .build(connector))
}

/// How much of a response body is kept with the attempt.
pub const RESPONSE_BODY_LIMIT: usize = 4096;

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub status: Option<u16>,
    /// Set when there was no HTTP answer (refused, timed out, connection failed).
    pub error: Option<String>,
    /// The receiver's `Retry-After`, on a 429 or 503.
    pub retry_after: Option<Duration>,
    pub duration: Duration,
    pub response_body: Option<String>,
}

/// The outbound request for one attempt.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub url: &'a str,
    pub message_id: &'a str,
    pub content_type: Option<&'a str>,
    pub body: Bytes,
    /// Signing keys: the current one first, then the previous ones during their grace.
    pub keys: &'a [Vec<u8>],
    /// The destination's static headers (none of them one herald sets itself).
    pub headers: &'a [(http::HeaderName, HeaderValue)],
}

/// The `webhook-signature` value: one `v1,<base64>` per key, space-separated.
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| sign_standard(key, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn send(client: &HttpClient, out: Outbound<'_>, timeout: Duration) -> AttemptResult {
    let started = Instant::now();
    let failed = |error: String| AttemptResult {
        status: None,
        error: Some(error),
        retry_after: None,
        duration: started.elapsed(),
        response_body: None,
    };
    let timestamp = i64::try_from(crate::unix_ms(SystemTime::now()) / 1000).unwrap_or(0);
    let signature = signature_header(out.keys, out.message_id, timestamp, &out.body);
    let content_type = out
        .content_type
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("application/json"));
    let mut request = Request::builder().method(Method::POST).uri(out.url);
    for (name, value) in out.headers {
        request = request.header(name, value);
    }
    let request = request
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::USER_AGENT,
            concat!("herald/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", out.message_id)
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature)
        .body(Full::new(out.body));
    let request = match request {
        Ok(request) => request,
        Err(e) => return failed(format!("invalid request: {e}")),
    };
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status().as_u16();
        let retry_after = (status == 429 || status == 503)
            .then(|| response.headers().get(header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| super::retry::parse_retry_after(v, SystemTime::now()));
        // Keep the start of the body; a receiver that streams forever is cut off by the
        // attempt's timeout, one that sends more than the limit by `Limited`.
        let body = Limited::new(response.into_body(), RESPONSE_BODY_LIMIT)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .ok();
        Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => failed(format!("timed out after {} ms", timeout.as_millis())),
        Ok(Err(e)) => failed(describe(&e)),
        Ok(Ok((status, retry_after, body))) => AttemptResult {
            status: Some(status),
            error: None,
            retry_after,
            duration: started.elapsed(),
            response_body: body
                .filter(|b| !b.is_empty())
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        },
    }
}

/// The most specific cause in a client error's chain (the SSRF guard's refusal, a refused
/// connection…), rather than hyper's generic "client error (Connect)".
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
