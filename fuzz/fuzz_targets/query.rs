//! Query strings, path segments, pagination and the API's times (`src/http/query.rs`,
//! `dlq::parse_time`, `response::rfc3339`), through `herald::http::fuzzing`.
//!
//! Beyond "no panic": percent-decoding agrees with a strict reference (RFC 3986: `%` and two
//! hex digits is a byte, anything else stays as written), pagination stays within its bounds,
//! any `u64` of milliseconds renders as a time, and a parsed time renders as text that parses
//! back to it.
#![no_main]

use std::collections::HashMap;

use herald::http::fuzzing::{MAX_LIMIT, Pagination, Query, parse_time, rfc3339, segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ms) = data.first_chunk::<8>() {
        let ms = u64::from_le_bytes(*ms);
        let shown = rfc3339(ms);
        if let Ok(back) = parse_time("t", &shown) {
            assert!(back <= ms, "{ms} ms shown as {shown}, read back as {back}");
        }
    }
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };

    let query = Query::parse(Some(raw));
    for (key, value) in reference_query(raw) {
        let want = Some(value.as_str()).filter(|v| !v.is_empty());
        assert_eq!(query.get(&key), want, "{key:?} in {raw:?}");
    }
    assert_eq!(
        segment(raw),
        reference_decode(raw, false),
        "segment {raw:?}"
    );

    match Pagination::from_query(&query) {
        Ok(page) => {
            assert!((1..=MAX_LIMIT).contains(&page.limit));
            assert_eq!(page.after.as_deref(), query.get("after"));
        }
        Err(e) => assert!(e.message.starts_with("limit: ")),
    }

    if let Ok(ms) = parse_time("since", raw) {
        let shown = rfc3339(ms);
        assert_eq!(
            parse_time("since", &shown).ok(),
            Some(ms),
            "{raw:?} → {shown}"
        );
    }
});

/// The pairs of a query string, decoded; the last of a repeated key wins.
fn reference_query(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (reference_decode(k, true), reference_decode(v, true))
        })
        .collect()
}

/// `%` followed by two hex digits is that byte; every other byte is itself (`+` a space in a
/// query string); the bytes are then read as UTF-8, lossily.
fn reference_decode(s: &str, plus_is_space: bool) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).expect("two hex digits"));
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
