//! Building responses: JSON bodies and the contract's error shape
//! `{"error": {"code": "snake_case", "message": "…"}}`.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use hyper::Response;
use serde::Serialize;

pub type Resp = Response<Full<Bytes>>;

/// An error answer. Internal details are logged where they happen, never put in `message`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`, naming the field at fault.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{field}: {problem}"),
        )
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "temporarily unavailable; retry shortly",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    }

    pub fn into_response(self) -> Resp {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        json(
            self.status,
            &Body {
                error: Inner {
                    code: self.code,
                    message: &self.message,
                },
            },
        )
    }
}

/// Storage failures are internal: logged here, answered 503 (the client may retry).
impl From<herald_storage::StorageError> for ApiError {
    fn from(e: herald_storage::StorageError) -> Self {
        tracing::error!(error = %e, "storage");
        Self::unavailable()
    }
}

/// A request refused by verification keeps its code; anything else is a 503.
impl From<herald_actors::admin::AdminError> for ApiError {
    fn from(e: herald_actors::admin::AdminError) -> Self {
        use herald_actors::admin::AdminError;
        match e {
            AdminError::Invalid { field, message } => Self::invalid(&field, message),
            AdminError::NotFound(what) => Self::not_found(what),
            AdminError::Conflict(why) => Self::new(StatusCode::CONFLICT, "conflict", why),
            AdminError::NotAllowed(why) => Self::new(
                StatusCode::BAD_REQUEST,
                herald_actors::dispatcher::ssrf::Refusal::CODE,
                why,
            ),
            AdminError::Storage(e) => e.into(),
            _ => Self::unavailable(),
        }
    }
}

impl From<herald_actors::IngestError> for ApiError {
    fn from(e: herald_actors::IngestError) -> Self {
        use herald_actors::IngestError;
        use herald_actors::verifier::schemes::VerifyError;
        match e {
            IngestError::Rejected(v @ VerifyError::MissingHeader(_)) => {
                Self::new(StatusCode::BAD_REQUEST, v.code(), v.to_string())
            }
            IngestError::Rejected(v) => {
                Self::new(StatusCode::UNAUTHORIZED, v.code(), v.to_string())
            }
            IngestError::Storage(e) => e.into(),
            _ => Self::unavailable(),
        }
    }
}

/// A JSON response. Serialising our own response types cannot fail; if it somehow did, the
/// client gets a 500 with the error shape rather than a half-written body.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => with_body(status, body, "application/json"),
        Err(e) => {
            tracing::error!(error = %e, "response did not serialise");
            with_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec(),
                "application/json",
            )
        }
    }
}

pub fn with_body(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// RFC 3339 in UTC with milliseconds, as every timestamp in the API. RFC 3339 has four-digit
/// years, so a time after 9999 (a rotation's grace period of `u64::MAX` seconds, say) shows as
/// the last millisecond of 9999: "never", either way. `humantime` refuses to format it, and
/// `to_string` panics on a refusal.
pub fn rfc3339(unix_ms: u64) -> String {
    /// 9999-12-31T23:59:59.999Z.
    const LAST_MS: u64 = 253_402_300_799_999;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.min(LAST_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_renders_every_u64_of_milliseconds() {
        // Found by the `query` fuzz target: past year 9999 this panicked, and it was reachable
        // from `POST /v1/destinations/{name}/rotate` with a huge `grace_secs`.
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        for beyond in [253_402_300_800_000, u64::MAX / 1000, u64::MAX] {
            assert_eq!(rfc3339(beyond), "9999-12-31T23:59:59.999Z", "{beyond}");
        }
    }
}
