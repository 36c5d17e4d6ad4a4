//! Query strings and the contract's pagination (`limit`, `after`).

use std::collections::HashMap;

use super::response::ApiError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// Decoded query parameters; the last of a repeated key wins.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            });
        Self(pairs.collect())
    }

    /// A parameter's value; an empty value counts as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A path segment, percent-decoded (`+` stays a plus: that is a query-string convention).
pub fn segment(s: &str) -> String {
    percent_decode(s, false)
}

/// Percent-decoding with `+` as space; a malformed escape is kept as written.
fn decode(s: &str) -> String {
    percent_decode(s, true)
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            // Two hex digits: `from_str_radix` alone also takes a sign, reading `%+A` as 0x0A.
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `limit` (default 50, at most 1000) and the opaque `after` cursor.
#[derive(Debug)]
pub struct Pagination {
    pub limit: usize,
    pub after: Option<String>,
}

impl Pagination {
    pub fn from_query(query: &Query) -> Result<Self, ApiError> {
        let limit = match query.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(MAX_LIMIT),
                _ => {
                    return Err(ApiError::invalid(
                        "limit",
                        format!("expected a whole number from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
        };
        Ok(Self {
            limit,
            after: query.get("after").map(str::to_owned),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs() {
        let q = Query::parse(Some("a=1&b=x%2Ey+z&c&d=%zz&e=%4"));
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("b"), Some("x.y z"));
        assert_eq!(q.get("c"), None);
        assert_eq!(q.get("d"), Some("%zz"));
        assert_eq!(q.get("e"), Some("%4"));
        assert_eq!(Query::parse(None).get("a"), None);
    }

    #[test]
    fn an_escape_is_two_hex_digits_not_a_signed_number() {
        // Found by the `query` fuzz target: `%+A` decoded as a newline, `%+0` as NUL.
        let q = Query::parse(Some("a=%+A&b=%+0x&c=%-1&d=%2B1&e=%0a"));
        assert_eq!(q.get("a"), Some("% A"));
        assert_eq!(q.get("b"), Some("% 0x"));
        assert_eq!(q.get("c"), Some("%-1"));
        assert_eq!(q.get("d"), Some("+1"));
        assert_eq!(q.get("e"), Some("\n"));
        assert_eq!(segment("%+A%+0"), "%+A%+0");
    }

    #[test]
    fn pagination_bounds() {
        let p = |raw| Pagination::from_query(&Query::parse(Some(raw)));
        assert_eq!(p("").unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(p("limit=7&after=c").unwrap().limit, 7);
        assert_eq!(p("limit=7&after=c").unwrap().after.as_deref(), Some("c"));
        assert_eq!(p("limit=5000").unwrap().limit, MAX_LIMIT);
        for bad in ["limit=0", "limit=-1", "limit=abc"] {
            let err = p(bad).unwrap_err();
            assert_eq!(err.code, "invalid_request");
            assert!(err.message.starts_with("limit:"), "{}", err.message);
        }
    }
}
