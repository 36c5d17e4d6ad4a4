//! Static headers an operator adds to a destination's deliveries: which are allowed.
//!
//! One pure rule, shared by config validation and the admin API, so a header that loads from
//! `config.toml` is exactly one the API accepts. A name must be an HTTP field name (RFC 9110
//! `token`) and a value an HTTP field value (visible ASCII, spaces and tabs inside). herald sets
//! some headers itself on every attempt, and an operator's copy would either be overwritten or,
//! worse, corrupt the request (a second `content-length`) or forge the signature headers, so
//! those names are refused, case-insensitively: every `webhook-*` name, `content-type`,
//! `content-length` and `host`.

use http::{HeaderName, HeaderValue};

/// Names herald always sets itself, besides the `webhook-` prefix (lowercase).
const RESERVED: &[&str] = &["content-type", "content-length", "host"];
const RESERVED_PREFIX: &str = "webhook-";

/// Why a static header is refused. `Display` is a sentence about the name or the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRefusal {
    #[error("expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), got `{0}`")]
    InvalidName(String),
    #[error("`{0}` is set by herald on every delivery and cannot be overridden")]
    Reserved(String),
    #[error("expected an HTTP header value (visible ASCII, spaces and tabs inside)")]
    InvalidValue,
}

/// Checks one static header; returns it parsed, its name lowercase.
pub fn check_static_header(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), HeaderRefusal> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| HeaderRefusal::InvalidName(name.to_owned()))?;
    let lower = parsed.as_str();
    if lower.starts_with(RESERVED_PREFIX) || RESERVED.contains(&lower) {
        return Err(HeaderRefusal::Reserved(name.to_owned()));
    }
    // `HeaderValue` also takes obsolete non-ASCII bytes, which receivers read differently;
    // surrounding whitespace is not part of a field value (RFC 9110 §5.5), so it is refused
    // rather than silently cut.
    let visible = value
        .bytes()
        .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t');
    if !visible || value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err(HeaderRefusal::InvalidValue);
    }
    let value = HeaderValue::from_str(value).map_err(|_| HeaderRefusal::InvalidValue)?;
    Ok((parsed, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_headers_pass_lowercased() {
        let (name, value) = check_static_header("X-Team", "orders east").unwrap_or_else(|e| {
            panic!("{e}");
        });
        assert_eq!(name.as_str(), "x-team");
        assert_eq!(value.as_bytes(), b"orders east");
        assert!(check_static_header("authorization", "Bearer abc").is_ok());
        assert!(check_static_header("x-empty", "").is_ok());
    }

    #[test]
    fn reserved_names_are_refused_in_any_case() {
        for name in [
            "webhook-id",
            "Webhook-Signature",
            "WEBHOOK-anything",
            "Content-Type",
            "content-length",
            "HOST",
        ] {
            assert_eq!(
                check_static_header(name, "x"),
                Err(HeaderRefusal::Reserved(name.to_owned())),
                "{name}"
            );
        }
        // Only the prefix is reserved, not every name containing `webhook`.
        assert!(check_static_header("x-webhook-team", "x").is_ok());
    }

    #[test]
    fn malformed_names_and_values_are_refused() {
        for name in ["", "x team", "x:y", "caf\u{e9}", "x\n"] {
            assert!(
                matches!(
                    check_static_header(name, "x"),
                    Err(HeaderRefusal::InvalidName(_))
                ),
                "{name:?}"
            );
        }
        for value in ["a\r\nb", "caf\u{e9}", " padded", "padded\t", "nul\0"] {
            assert_eq!(
                check_static_header("x-a", value),
                Err(HeaderRefusal::InvalidValue),
                "{value:?}"
            );
        }
    }
}
