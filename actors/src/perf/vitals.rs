//! Core Web Vitals beacons: what `POST /vitals` accepts, validated into [`Beacon`]s.
//!
//! The `web-vitals` JS library reports one metric per callback; pages usually forward it with
//! `navigator.sendBeacon`, which sends `text/plain` for a string body, or batch several into
//! an array. So the body is parsed as JSON whatever its content type, and it may be one
//! object or an array of at most [`MAX_BEACONS`] objects:
//!
//! ```json
//! {"name": "LCP", "value": 1834.5, "id": "v4-1700000000000-123", "rating": "good",
//!  "navigationType": "navigate", "page": "/checkout"}
//! ```
//!
//! Every item must pass, or the whole body is rejected (the edge answers 400 with the
//! error's text, which names the item and the field: `[2].value: must be a finite number ≥
//! 0`). Only `name`, `value`, `id` and `page` (or, failing that, `url`) are read; `rating`,
//! `delta`, `navigationType` and any other field are ignored, so newer library versions keep
//! working.
//!
//! The input is untrusted: the body is capped at [`MAX_BODY_BYTES`] (the browsers' own
//! `sendBeacon` quota), nesting is bounded by `serde_json`'s recursion limit (128), so deep
//! `[[[[…]]]]` is an error and not a stack overflow, and numbers out of `f64` range are parse
//! errors. Pages are normalised to a bounded path so that one page is one key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// At most this many beacons in one body.
pub const MAX_BEACONS: usize = 100;
/// Browsers refuse `sendBeacon` bodies above 64 KiB; anything larger is not a beacon.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted `id`, in characters (web-vitals ids are about 30).
pub const MAX_ID_CHARS: usize = 128;
/// Longest accepted page path, in characters, after normalisation.
pub const MAX_PAGE_CHARS: usize = 256;
/// Longest accepted timing: ten minutes, in milliseconds. Larger values are bogus clocks.
pub const MAX_TIMING_MS: f64 = 600_000.0;
/// Largest accepted CLS. Real scores are far below 1; 100 leaves room without admitting junk.
pub const MAX_CLS: f64 = 100.0;

/// A Core Web Vital, named as `web-vitals` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Metric {
    /// Largest Contentful Paint, ms.
    Lcp,
    /// Interaction to Next Paint, ms.
    Inp,
    /// Cumulative Layout Shift, unitless.
    Cls,
    /// First Contentful Paint, ms.
    Fcp,
    /// Time to First Byte, ms.
    Ttfb,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::Lcp,
        Metric::Inp,
        Metric::Cls,
        Metric::Fcp,
        Metric::Ttfb,
    ];

    /// The name `web-vitals` uses: `"LCP"`, `"INP"`, `"CLS"`, `"FCP"`, `"TTFB"`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Lcp => "LCP",
            Metric::Inp => "INP",
            Metric::Cls => "CLS",
            Metric::Fcp => "FCP",
            Metric::Ttfb => "TTFB",
        }
    }

    /// Whether values are durations in milliseconds (all but CLS, which is a score).
    pub fn is_timing(self) -> bool {
        !matches!(self, Metric::Cls)
    }

    /// Largest plausible value for this metric.
    pub fn max_value(self) -> f64 {
        if self.is_timing() {
            MAX_TIMING_MS
        } else {
            MAX_CLS
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the five metrics (matching is exact: `"lcp"` is unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric (expected LCP, INP, CLS, FCP or TTFB)")]
pub struct UnknownMetric;

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or(UnknownMetric)
    }
}

/// One validated measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Beacon {
    pub metric: Metric,
    /// Milliseconds for timings, unitless for CLS; finite, ≥ 0, within [`Metric::max_value`].
    pub value: f64,
    /// The library's id for one metric on one page load; later reports for it supersede
    /// earlier ones.
    pub id: String,
    /// A path: starts with `/`, no query or fragment, at most [`MAX_PAGE_CHARS`] characters.
    pub page: String,
}

/// Why a body was rejected. The text is safe to return to the client: it never echoes input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeaconError {
    /// Larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// Not JSON (or nested deeper than the parser allows); the parser's message.
    Json(String),
    /// JSON, but neither an object nor an array.
    Shape,
    /// An array of more than [`MAX_BEACONS`] items; how many.
    TooMany(usize),
    /// One item is invalid. `index` is its position in an array (`None` for a lone object);
    /// `field` is empty when the item itself is wrong (not an object).
    Invalid {
        index: Option<usize>,
        field: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for BeaconError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeaconError::TooLarge => write!(f, "body is larger than {MAX_BODY_BYTES} bytes"),
            BeaconError::Json(e) => write!(f, "body is not valid JSON: {e}"),
            BeaconError::Shape => f.write_str("body must be a JSON object or an array of objects"),
            BeaconError::TooMany(n) => {
                write!(f, "at most {MAX_BEACONS} beacons per body, got {n}")
            }
            BeaconError::Invalid {
                index,
                field,
                reason,
            } => {
                match (index, field.is_empty()) {
                    (Some(i), true) => write!(f, "[{i}]")?,
                    (Some(i), false) => write!(f, "[{i}].{field}")?,
                    (None, true) => f.write_str("beacon")?,
                    (None, false) => f.write_str(field)?,
                }
                write!(f, ": {reason}")
            }
        }
    }
}

impl std::error::Error for BeaconError {}

/// Parses and validates a `POST /vitals` body, whatever its content type. All or nothing.
pub fn parse_beacons(body: &[u8]) -> Result<Vec<Beacon>, BeaconError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BeaconError::TooLarge);
    }
    // A text/plain body may carry a BOM; JSON parsers do not skip it.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BeaconError::Json(e.to_string()))?;
    match value {
        Value::Object(item) => Ok(vec![parse_item(&item, None)?]),
        Value::Array(items) => {
            if items.len() > MAX_BEACONS {
                return Err(BeaconError::TooMany(items.len()));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(item) => parse_item(item, Some(i)),
                    _ => Err(invalid(Some(i), "", "must be an object")),
                })
                .collect()
        }
        _ => Err(BeaconError::Shape),
    }
}

fn invalid(index: Option<usize>, field: &'static str, reason: &'static str) -> BeaconError {
    BeaconError::Invalid {
        index,
        field,
        reason,
    }
}

fn parse_item(item: &Map<String, Value>, index: Option<usize>) -> Result<Beacon, BeaconError> {
    let metric = item
        .get("name")
        .and_then(Value::as_str)
        .and_then(|n| n.parse::<Metric>().ok())
        .ok_or_else(|| invalid(index, "name", "must be one of LCP, INP, CLS, FCP, TTFB"))?;

    // JSON has no NaN or infinity and the parser rejects out-of-range numbers, but a string
    // such as "NaN" is not a number either: only JSON numbers are accepted.
    let value = item
        .get("value")
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| invalid(index, "value", "must be a finite number ≥ 0"))?;
    if value > metric.max_value() {
        let reason = if metric.is_timing() {
            "must be at most 600000 ms"
        } else {
            "must be at most 100"
        };
        return Err(invalid(index, "value", reason));
    }
    // -0.0 passes `>= 0.0`; store it as 0.
    let value = value + 0.0;

    let id = match item.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_ID_CHARS => {
            id.clone()
        }
        _ => {
            return Err(invalid(
                index,
                "id",
                "must be a non-empty string of at most 128 characters",
            ));
        }
    };

    // `page` wins over `url`; neither means the site root.
    let page = match (item.get("page"), item.get("url")) {
        (Some(Value::String(page)), _) => {
            normalise_page(page).map_err(|r| invalid(index, "page", r))?
        }
        (Some(Value::Null) | None, Some(Value::String(url))) => {
            normalise_page(url).map_err(|r| invalid(index, "url", r))?
        }
        (Some(Value::Null) | None, Some(Value::Null) | None) => "/".to_owned(),
        (Some(Value::Null) | None, Some(_)) => {
            return Err(invalid(index, "url", "must be a string"));
        }
        (Some(_), _) => return Err(invalid(index, "page", "must be a string")),
    };

    Ok(Beacon {
        metric,
        value,
        id,
        page,
    })
}

/// Reduces a page (a path, or an absolute URL) to its path: no query, no fragment, starting
/// with `/`, at most [`MAX_PAGE_CHARS`] characters, no control characters.
pub fn normalise_page(raw: &str) -> Result<String, &'static str> {
    let (path, absolute) = match url_path(raw) {
        Some(path) => (path, true),
        None => (raw, false),
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    if path.is_empty() && absolute {
        // `https://example.com` or `https://example.com?x`: the root.
        return Ok("/".to_owned());
    }
    if !path.starts_with('/') {
        return Err("must be a path starting with / or an absolute URL");
    }
    if path.chars().count() > MAX_PAGE_CHARS {
        return Err("must be a path of at most 256 characters");
    }
    if path.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(path.to_owned())
}

/// The part of an absolute URL (`scheme://authority…`) after the authority, if `raw` is one.
fn url_path(raw: &str) -> Option<&str> {
    let (scheme, rest) = raw.split_once("://")?;
    let mut chars = scheme.chars();
    let valid_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return None;
    }
    let start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[start..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn one(body: &str) -> Beacon {
        let mut beacons = parse_beacons(body.as_bytes()).unwrap();
        assert_eq!(beacons.len(), 1);
        beacons.remove(0)
    }

    fn error(body: &str) -> String {
        parse_beacons(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn metric_names_round_trip_exactly() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
        assert_eq!("lcp".parse::<Metric>(), Err(UnknownMetric));
        assert_eq!("LCP ".parse::<Metric>(), Err(UnknownMetric));
        assert_eq!("FID".parse::<Metric>(), Err(UnknownMetric));
        assert!(Metric::Lcp.is_timing() && Metric::Ttfb.is_timing());
        assert!(!Metric::Cls.is_timing());
    }

    #[test]
    fn parses_the_shape_web_vitals_sends() {
        let b = one(
            r#"{"name":"LCP","value":1834.5,"rating":"good","delta":1834.5,"id":"v4-1700000000000-123","navigationType":"navigate","page":"/checkout"}"#,
        );
        assert_eq!(
            b,
            Beacon {
                metric: Metric::Lcp,
                value: 1834.5,
                id: "v4-1700000000000-123".into(),
                page: "/checkout".into(),
            }
        );
    }

    #[test]
    fn text_plain_bodies_are_the_same_bytes_and_a_bom_is_skipped() {
        let json = r#"{"name":"CLS","value":0.042,"id":"v4-1","page":"/"}"#;
        let plain = one(json);
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(json.as_bytes());
        assert_eq!(parse_beacons(&with_bom).unwrap(), vec![plain.clone()]);
        assert_eq!(plain.metric, Metric::Cls);
        assert!((plain.value - 0.042).abs() < f64::EPSILON);
    }

    #[test]
    fn arrays_keep_their_order() {
        let beacons = parse_beacons(
            br#"[
              {"name":"INP","value":120,"id":"a","page":"/a"},
              {"name":"TTFB","value":0,"id":"b","page":"/b","extra":{"nested":[1,2,3]}},
              {"name":"FCP","value":900.25,"id":"c"}
            ]"#,
        )
        .unwrap();
        let got: Vec<_> = beacons
            .iter()
            .map(|b| (b.metric, b.value, b.id.as_str(), b.page.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Metric::Inp, 120.0, "a", "/a"),
                (Metric::Ttfb, 0.0, "b", "/b"),
                (Metric::Fcp, 900.25, "c", "/"),
            ]
        );
        assert_eq!(parse_beacons(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn pages_are_normalised() {
        let page = |p: &str| {
            one(&format!(
                r#"{{"name":"LCP","value":1,"id":"x","page":{}}}"#,
                serde_json::to_string(p).unwrap()
            ))
            .page
        };
        assert_eq!(page("/checkout?step=2#pay"), "/checkout");
        assert_eq!(page("/a#frag?not-a-query"), "/a");
        assert_eq!(
            page("https://shop.example.com/cart/items?x=1"),
            "/cart/items"
        );
        assert_eq!(page("https://shop.example.com"), "/");
        assert_eq!(page("http://shop.example.com:8080?q#f"), "/");
        assert_eq!(page(&format!("/{}", "a".repeat(255))).len(), 256);
        // A long query does not count against the path.
        assert_eq!(page(&format!("/p?{}", "q".repeat(5000))), "/p");
        // `url` is read when `page` is absent or null; `page` wins otherwise.
        let b = one(r#"{"name":"LCP","value":1,"id":"x","url":"https://e.com/from-url?a"}"#);
        assert_eq!(b.page, "/from-url");
        let b = one(r#"{"name":"LCP","value":1,"id":"x","page":null,"url":"/u"}"#);
        assert_eq!(b.page, "/u");
        let b = one(r#"{"name":"LCP","value":1,"id":"x","page":"/p","url":"/u"}"#);
        assert_eq!(b.page, "/p");
    }

    fn assert_rejections(cases: &[(&str, &str)]) {
        for (body, expected) in cases {
            let e = error(body);
            assert!(
                e.starts_with(expected),
                "{body}: got {e:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn rejections_of_name_and_value_name_the_field() {
        let cases = [
            (
                r#"{"value":1,"id":"x"}"#,
                "name: must be one of LCP, INP, CLS, FCP, TTFB",
            ),
            (
                r#"{"name":"lcp","value":1,"id":"x"}"#,
                "name: must be one of",
            ),
            (
                r#"{"name":"FID","value":1,"id":"x"}"#,
                "name: must be one of",
            ),
            (r#"{"name":5,"value":1,"id":"x"}"#, "name: must be one of"),
            (
                r#"{"name":"LCP","id":"x"}"#,
                "value: must be a finite number ≥ 0",
            ),
            (
                r#"{"name":"LCP","value":"NaN","id":"x"}"#,
                "value: must be a finite number ≥ 0",
            ),
            (
                r#"{"name":"LCP","value":"Infinity","id":"x"}"#,
                "value: must be a finite",
            ),
            (
                r#"{"name":"LCP","value":"12","id":"x"}"#,
                "value: must be a finite",
            ),
            (
                r#"{"name":"LCP","value":null,"id":"x"}"#,
                "value: must be a finite",
            ),
            (
                r#"{"name":"LCP","value":-0.5,"id":"x"}"#,
                "value: must be a finite number ≥ 0",
            ),
            (
                r#"{"name":"LCP","value":-3,"id":"x"}"#,
                "value: must be a finite number ≥ 0",
            ),
            (
                r#"{"name":"LCP","value":600000.5,"id":"x"}"#,
                "value: must be at most 600000 ms",
            ),
            (
                r#"{"name":"LCP","value":1e300,"id":"x"}"#,
                "value: must be at most 600000 ms",
            ),
            (
                r#"{"name":"LCP","value":123456789012345678901234567890,"id":"x"}"#,
                "value: must be at most 600000 ms",
            ),
            (
                r#"{"name":"CLS","value":100.01,"id":"x"}"#,
                "value: must be at most 100",
            ),
        ];
        assert_rejections(&cases);
    }

    #[test]
    fn rejections_of_id_and_page_name_the_field() {
        let cases = [
            (
                r#"{"name":"LCP","value":1}"#,
                "id: must be a non-empty string",
            ),
            (
                r#"{"name":"LCP","value":1,"id":""}"#,
                "id: must be a non-empty string",
            ),
            (
                r#"{"name":"LCP","value":1,"id":7}"#,
                "id: must be a non-empty string",
            ),
            (
                r#"{"name":"LCP","value":1,"id":"x","page":"checkout"}"#,
                "page: must be a path",
            ),
            (
                r#"{"name":"LCP","value":1,"id":"x","page":""}"#,
                "page: must be a path",
            ),
            (
                r#"{"name":"LCP","value":1,"id":"x","page":"?q=1"}"#,
                "page: must be a path",
            ),
            (
                r#"{"name":"LCP","value":1,"id":"x","page":"/a\u0000b"}"#,
                "page: must not contain",
            ),
            (
                r#"{"name":"LCP","value":1,"id":"x","page":42}"#,
                "page: must be a string",
            ),
            (
                r#"{"name":"LCP","value":1,"id":"x","url":["/"]}"#,
                "url: must be a string",
            ),
            (
                r#"{"name":"LCP","value":1,"id":"x","url":"relative"}"#,
                "url: must be a path",
            ),
        ];
        assert_rejections(&cases);
        let long_id = format!(r#"{{"name":"LCP","value":1,"id":"{}"}}"#, "i".repeat(129));
        assert!(error(&long_id).starts_with("id: must be a non-empty string"));
        let ok_id = format!(r#"{{"name":"LCP","value":1,"id":"{}"}}"#, "é".repeat(128));
        assert_eq!(one(&ok_id).id.chars().count(), 128);
        let long_page = format!(
            r#"{{"name":"LCP","value":1,"id":"x","page":"/{}"}}"#,
            "a".repeat(256)
        );
        assert!(error(&long_page).starts_with("page: must be a path of at most 256"));
    }

    #[test]
    fn limits_of_each_metric_are_inclusive() {
        assert!((one(r#"{"name":"INP","value":600000,"id":"x"}"#).value - 600_000.0).abs() < 1e-9);
        assert!((one(r#"{"name":"CLS","value":100,"id":"x"}"#).value - 100.0).abs() < 1e-9);
        let zero = one(r#"{"name":"CLS","value":-0.0,"id":"x"}"#).value;
        assert!(zero == 0.0 && zero.is_sign_positive());
    }

    #[test]
    fn array_errors_name_the_index() {
        let body = r#"[
            {"name":"LCP","value":1,"id":"a"},
            {"name":"LCP","value":2,"id":"b"},
            {"name":"LCP","value":-1,"id":"c"}
        ]"#;
        assert_eq!(error(body), "[2].value: must be a finite number ≥ 0");
        assert_eq!(
            error(r#"[{"name":"LCP","value":1,"id":"a"}, 7]"#),
            "[1]: must be an object"
        );
        assert_eq!(error("[[]]"), "[0]: must be an object");
        let e = parse_beacons(br#"[{"name":"LCP","value":1,"id":"a","page":"x"}]"#).unwrap_err();
        assert_eq!(
            e,
            BeaconError::Invalid {
                index: Some(0),
                field: "page",
                reason: "must be a path starting with / or an absolute URL"
            }
        );
    }

    #[test]
    fn at_most_a_hundred_items() {
        let item = r#"{"name":"TTFB","value":80,"id":"x"}"#;
        let body = |n: usize| format!("[{}]", vec![item; n].join(","));
        assert_eq!(parse_beacons(body(100).as_bytes()).unwrap().len(), 100);
        assert_eq!(
            parse_beacons(body(101).as_bytes()).unwrap_err(),
            BeaconError::TooMany(101)
        );
    }

    #[test]
    fn bodies_that_are_not_beacons_are_errors() {
        for body in [
            "",
            "   ",
            "null",
            "42",
            "\"LCP\"",
            "true",
            "{",
            "[1,",
            "{\"name\":}",
            "NaN",
        ] {
            let e = parse_beacons(body.as_bytes()).unwrap_err();
            assert!(
                matches!(e, BeaconError::Json(_) | BeaconError::Shape),
                "{body:?}: {e:?}"
            );
        }
        assert_eq!(parse_beacons(b"null").unwrap_err(), BeaconError::Shape);
        // Out of f64 range is a parse error, not infinity.
        assert!(matches!(
            parse_beacons(br#"{"name":"LCP","value":1e400,"id":"x"}"#).unwrap_err(),
            BeaconError::Json(_)
        ));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse_beacons(&big).unwrap_err(), BeaconError::TooLarge);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse_beacons(deep.as_bytes()).unwrap_err(),
            BeaconError::Json(_)
        ));
        let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
        assert!(matches!(
            parse_beacons(deep_objects.as_bytes()).unwrap_err(),
            BeaconError::Json(_)
        ));
        // Unclosed, too.
        assert!(parse_beacons("[".repeat(60_000).as_bytes()).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic xorshift stream of bytes, biased towards JSON punctuation.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"[]{}\":,0123456789.-eE+ nulltrufasNIy\\\xff\x00LCPINPvaluepageid/?#";
        for round in 0..5_000 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if round % 3 == 0 {
                        r as u8
                    } else {
                        alphabet[(r as usize) % alphabet.len()]
                    }
                })
                .collect();
            let _ = parse_beacons(&bytes);
        }
        // Mutations of a valid body: each prefix, and each byte replaced.
        let valid = br#"[{"name":"LCP","value":1834.5,"id":"v4-1","page":"https://x.io/a?b#c"}]"#;
        for cut in 0..valid.len() {
            let _ = parse_beacons(&valid[..cut]);
            for b in [b'"', b'{', b']', 0xC3, b'9'] {
                let mut mutated = valid.to_vec();
                mutated[cut] = b;
                let _ = parse_beacons(&mutated);
            }
        }
    }
}
