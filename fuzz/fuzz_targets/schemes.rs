//! Every signature scheme's header parsing and verification (`SourceRule::verify`), on
//! arbitrary headers and bodies, each scheme under one fixed rule with two keys (a rotation).
//!
//! Beyond "no panic":
//! - Verification is deterministic.
//! - With `genuine`, the harness signs what the request carries, with an HMAC-SHA256 computed
//!   here from the `hmac` crate (independently of the code under test), and puts it where the
//!   scheme wants it. Such a request must never be refused as `InvalidSignature`; when it
//!   verifies, the id is the id header's, and the timestamp is the signed one and within the
//!   tolerance of the clock.
//! - A `webhook-signature` made by `sign_standard` always verifies under standard-webhooks.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use herald_actors::verifier::schemes::{
    Encoding, HmacHeaders, Scheme, SourceRule, Verified, VerifyError, sign_standard,
};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const NOW: i64 = 1_700_000_000;
const TOLERANCE: u64 = 300;

/// The header names the schemes read, in the casing they document, and a few near misses.
const NAMES: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "Stripe-Signature",
    "X-GitHub-Delivery",
    "X-Hub-Signature-256",
    "X-GitHub-Event",
    "X-Hub-Signature",
    "X-Shopify-Webhook-Id",
    "X-Shopify-Hmac-SHA256",
    "X-Shopify-Topic",
    "X-Slack-Request-Timestamp",
    "X-Slack-Signature",
    "X-Event-Id",
    "X-Event-Time",
    "X-Signature",
    "content-type",
];

/// How a sender of one scheme signs, so the harness can sign as a genuine one would.
#[derive(Clone, Copy)]
enum Layout {
    Standard,
    Stripe,
    /// `{prefix}{hex or base64 of HMAC(body)}`, or of `HMAC({ts}{separator}{body})`.
    Prefixed {
        prefix: &'static str,
        encoding: Encoding,
        /// What the signed content is: `[before, ts, separator, body]`.
        before: &'static str,
        separator: &'static str,
    },
}

struct Fixture {
    rule: SourceRule,
    keys: [&'static [u8]; 2],
    layout: Layout,
    id_header: Option<&'static str>,
    timestamp_header: Option<&'static str>,
    signature_header: &'static str,
}

static FIXTURES: LazyLock<Vec<Fixture>> = LazyLock::new(|| {
    let generic = |timestamp: bool, encoding| HmacHeaders {
        id_header: "x-event-id".into(),
        timestamp_header: timestamp.then(|| "x-event-time".into()),
        signature_header: "x-signature".into(),
        encoding,
        prefix: timestamp.then(|| "sha256=".into()),
    };
    let prefixed = |prefix, encoding, before, separator| Layout::Prefixed {
        prefix,
        encoding,
        before,
        separator,
    };
    let fixtures = [
        (
            Scheme::StandardWebhooks,
            Layout::Standard,
            Some("webhook-id"),
            Some("webhook-timestamp"),
            "webhook-signature",
        ),
        (
            Scheme::Stripe,
            Layout::Stripe,
            None,
            None,
            "stripe-signature",
        ),
        (
            Scheme::Github,
            prefixed("sha256=", Encoding::Hex, "", ""),
            Some("x-github-delivery"),
            None,
            "x-hub-signature-256",
        ),
        (
            Scheme::Shopify,
            prefixed("", Encoding::Base64, "", ""),
            Some("x-shopify-webhook-id"),
            None,
            "x-shopify-hmac-sha256",
        ),
        (
            Scheme::Slack,
            prefixed("v0=", Encoding::Hex, "v0:", ":"),
            None,
            Some("x-slack-request-timestamp"),
            "x-slack-signature",
        ),
        (
            Scheme::HmacSha256(generic(true, Encoding::Hex)),
            prefixed("sha256=", Encoding::Hex, "", "."),
            Some("x-event-id"),
            Some("x-event-time"),
            "x-signature",
        ),
        (
            Scheme::HmacSha256(generic(false, Encoding::Base64)),
            prefixed("", Encoding::Base64, "", ""),
            Some("x-event-id"),
            None,
            "x-signature",
        ),
    ];
    fixtures
        .into_iter()
        .map(
            |(scheme, layout, id_header, timestamp_header, signature_header)| {
                let keys: [&'static [u8]; 2] = [b"fuzzing key, current", b"fuzzing key, previous"];
                let rule =
                    SourceRule::from_keys(scheme, keys.map(<[u8]>::to_vec).into(), TOLERANCE)
                        .expect("valid keys");
                Fixture {
                    rule,
                    keys,
                    layout,
                    id_header,
                    timestamp_header,
                    signature_header,
                }
            },
        )
        .collect()
});

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    scheme: u8,
    headers: Vec<(Name<'a>, &'a [u8])>,
    genuine: Option<Genuine<'a>>,
    clock: Clock,
    body: &'a [u8],
}

#[derive(Arbitrary, Debug)]
enum Name<'a> {
    Known(u8),
    Other(&'a str),
}

/// Sign the request as a genuine sender would, over this id and timestamp.
#[derive(Arbitrary, Debug)]
struct Genuine<'a> {
    /// Which of the rule's two keys.
    previous_key: bool,
    id: &'a str,
    timestamp: Timestamp<'a>,
    /// Other text in the signature header, where the scheme allows several entries.
    extra: Option<&'a str>,
}

#[derive(Arbitrary, Debug)]
enum Timestamp<'a> {
    Canonical(i64),
    Text(&'a str),
}

#[derive(Arbitrary, Debug)]
enum Clock {
    Now,
    At(i64),
    /// The signed timestamp, when it is a number.
    Signed,
    /// The signed timestamp plus this many seconds.
    Skewed(i16),
}

fuzz_target!(|input: Input<'_>| {
    let f = &FIXTURES[usize::from(input.scheme) % FIXTURES.len()];
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        let name = match name {
            Name::Known(i) => NAMES[usize::from(*i) % NAMES.len()],
            Name::Other(name) => name,
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let signed = input
        .genuine
        .as_ref()
        .and_then(|g| sign(f, g, &mut headers, input.body));
    let signed_ts = signed
        .as_ref()
        .and_then(|s| s.timestamp.parse::<i64>().ok());
    let now = match input.clock {
        Clock::Now => NOW,
        Clock::At(at) => at,
        Clock::Signed => signed_ts.unwrap_or(NOW),
        Clock::Skewed(by) => signed_ts.unwrap_or(NOW).saturating_add(i64::from(by)),
    };

    let result = f.rule.verify(&headers, input.body, now);
    assert_eq!(result, f.rule.verify(&headers, input.body, now));
    if let Err(e) = &result {
        assert!(!e.to_string().is_empty() && !e.code().is_empty());
    }
    if let Some(signed) = signed {
        assert_ne!(
            result,
            Err(VerifyError::InvalidSignature),
            "a genuine signature was refused"
        );
        if let Ok(verified) = &result {
            if f.id_header.is_some() {
                assert_eq!(verified.id, signed.id);
            }
            assert!(!verified.id.is_empty());
            if f.timestamp_header.is_some() || matches!(f.layout, Layout::Stripe) {
                let ts = verified.timestamp.expect("a timestamped scheme");
                assert_eq!(Some(ts), signed_ts);
                assert!(now.abs_diff(ts) <= TOLERANCE);
            } else {
                assert_eq!(verified.timestamp, None);
            }
        }
    }

    // `sign_standard` (outbound signing) always verifies under standard-webhooks, for every id
    // a sender may use: visible ASCII (anything else is a 400 `invalid_header`, CONTRACT §3).
    if let Some(Genuine {
        id,
        timestamp: Timestamp::Canonical(ts),
        ..
    }) = &input.genuine
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_graphic())
        && let Ok(id_value) = HeaderValue::from_str(id)
    {
        let standard = &FIXTURES[0];
        let mut request = HeaderMap::new();
        request.insert("webhook-id", id_value);
        request.insert("webhook-timestamp", HeaderValue::from(*ts));
        let signature = sign_standard(standard.keys[0], id, *ts, input.body);
        request.insert(
            "webhook-signature",
            HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
        );
        assert_eq!(
            standard.rule.verify(&request, input.body, *ts),
            Ok(Verified {
                id: (*id).to_owned(),
                timestamp: Some(*ts),
                event_type: None,
            })
        );
    }
});

/// What the harness signed.
struct Signed {
    id: String,
    timestamp: String,
}

/// Puts a genuine signature over `g`'s id and timestamp into `headers`, as `f`'s scheme lays
/// it out; `None` (and `headers` maybe half-changed) when `g` cannot be sent as headers.
fn sign(f: &Fixture, g: &Genuine<'_>, headers: &mut HeaderMap, body: &[u8]) -> Option<Signed> {
    let key = f.keys[usize::from(g.previous_key)];
    let timestamp = match g.timestamp {
        Timestamp::Canonical(ts) => ts.to_string(),
        Timestamp::Text(text) => text.to_owned(),
    };
    if let Some(name) = f.id_header {
        headers.insert(name, HeaderValue::from_str(g.id).ok()?);
    }
    if let Some(name) = f.timestamp_header {
        headers.insert(name, HeaderValue::from_str(&timestamp).ok()?);
    }
    let extra = g.extra.filter(|e| HeaderValue::from_str(e).is_ok());
    let value = match f.layout {
        Layout::Standard => {
            let tag = hmac(
                key,
                &[g.id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            );
            let entry = format!("v1,{}", BASE64_STANDARD.encode(tag));
            match extra {
                Some(extra) => format!("{extra} {entry}"),
                None => entry,
            }
        }
        Layout::Stripe => {
            // The header is `t=…,v1=…` split at commas, each item trimmed: a timestamp with a
            // comma or trailing space is not sent as written.
            if timestamp.contains(',') || timestamp.trim_end() != timestamp {
                return None;
            }
            let tag = hex::encode(hmac(key, &[timestamp.as_bytes(), b".", body]));
            match extra {
                Some(extra) => format!("t={timestamp},v1={tag},{extra}"),
                None => format!("t={timestamp},v1={tag}"),
            }
        }
        Layout::Prefixed {
            prefix,
            encoding,
            before,
            separator,
        } => {
            let tag = if f.timestamp_header.is_some() {
                hmac(
                    key,
                    &[
                        before.as_bytes(),
                        timestamp.as_bytes(),
                        separator.as_bytes(),
                        body,
                    ],
                )
            } else {
                hmac(key, &[body])
            };
            let encoded = match encoding {
                Encoding::Hex => hex::encode(tag),
                Encoding::Base64 => BASE64_STANDARD.encode(tag),
            };
            format!("{prefix}{encoded}")
        }
    };
    headers.insert(f.signature_header, HeaderValue::from_str(&value).ok()?);
    Some(Signed {
        id: g.id.to_owned(),
        timestamp,
    })
}

/// HMAC-SHA256 straight from the `hmac` crate: the reference, not the code under test.
fn hmac(key: &[u8], pieces: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for piece in pieces {
        mac.update(piece);
    }
    mac.finalize().into_bytes().to_vec()
}
