//! Signature schemes: how each kind of source signs a webhook, and the pure
//! check that a request really came from it.
//!
//! Everything here is a pure function of its arguments: no I/O, no clock (the
//! caller passes `now`), no global state. Every input that arrives with a
//! request is attacker-controlled, so nothing here panics on any input: every
//! parse is fallible, and timestamps are compared with `abs_diff`, which cannot
//! overflow.
//!
//! [`SourceRule::verify`] checks in a fixed order, and the first failure wins:
//!
//! 1. **Headers present and well formed.** The id, timestamp and signature
//!    headers the scheme requires, in that order ([`VerifyError::MissingHeader`]
//!    names the first one absent). An id or timestamp header counts as absent
//!    when it is empty; one that is present but malformed — an id that is not
//!    visible ASCII, a timestamp that is not an integer — is
//!    [`VerifyError::InvalidHeader`], naming it. A signature header counts as
//!    present whenever it exists (what it holds is judged in step 3).
//! 2. **Timestamp fresh**, for schemes that sign one: within the tolerance in
//!    both directions, so neither a replay nor a pre-signed "future" request
//!    passes.
//! 3. **Signature valid.** The HMAC-SHA256 of the signed content under each of
//!    the source's keys (several during a rotation) is compared in constant
//!    time with every signature the request carries; any pair may match.
//!    Entries that do not parse are ignored, so a header with nothing usable
//!    is simply an invalid signature.
//!
//! Only after all three is the body parsed (for the Stripe id), so an
//! unauthenticated body is never parsed.
//!
//! The delivery id comes from a header where the scheme sends one. Stripe's
//! is the body's `"id"` string; Slack sends none. Both otherwise use the hex
//! SHA-256 of the signed content, which is stable for a byte-identical resend
//! but differs when a sender re-signs with a fresh timestamp.
//!
//! Header names match case-insensitively. Of a repeated id or timestamp header
//! the first value is read; every line of a repeated signature header is read,
//! and any signature in any line may match (proxies may split a header, and
//! senders rotating keys may send one line per key). `standard-webhooks` also
//! takes its three headers under the `svix-` names Svix-powered senders use;
//! each `webhook-` header wins over its `svix-` twin. [`VerifyError`] names a
//! header in the casing the scheme documents (for `hmac-sha256`, as configured).

use std::str;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

const WHSEC_PREFIX: &str = "whsec_";

const STANDARD_ID: &str = "webhook-id";
const STANDARD_TIMESTAMP: &str = "webhook-timestamp";
const STANDARD_SIGNATURE: &str = "webhook-signature";
const SVIX_ID: &str = "svix-id";
const SVIX_TIMESTAMP: &str = "svix-timestamp";
const SVIX_SIGNATURE: &str = "svix-signature";
const STRIPE_SIGNATURE: &str = "Stripe-Signature";
const GITHUB_ID: &str = "X-GitHub-Delivery";
const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
const GITHUB_EVENT: &str = "X-GitHub-Event";
const SHOPIFY_ID: &str = "X-Shopify-Webhook-Id";
const SHOPIFY_SIGNATURE: &str = "X-Shopify-Hmac-SHA256";
const SHOPIFY_TOPIC: &str = "X-Shopify-Topic";
const SLACK_TIMESTAMP: &str = "X-Slack-Request-Timestamp";
const SLACK_SIGNATURE: &str = "X-Slack-Signature";

/// How a generic HMAC source writes its signature bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex::decode(text).ok(),
            Self::Base64 => BASE64_STANDARD.decode(text).ok(),
        }
    }
}

/// Where a generic `hmac-sha256` source puts its id, timestamp and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacHeaders {
    pub id_header: String,
    /// When set, the timestamp is checked and signed as `{timestamp}.{body}`.
    pub timestamp_header: Option<String>,
    pub signature_header: String,
    pub encoding: Encoding,
    /// Text before the encoded signature, such as `sha256=`; required when set.
    pub prefix: Option<String>,
}

/// A signature scheme a source can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    Stripe,
    Github,
    Shopify,
    Slack,
    HmacSha256(HmacHeaders),
}

impl Scheme {
    pub fn name(&self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Stripe => "stripe",
            Self::Github => "github",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
            Self::HmacSha256(_) => "hmac-sha256",
        }
    }

    /// Whether requests carry a signed timestamp, and so are checked for freshness.
    pub fn has_timestamp(&self) -> bool {
        match self {
            Self::StandardWebhooks | Self::Stripe | Self::Slack => true,
            Self::Github | Self::Shopify => false,
            Self::HmacSha256(h) => h.timestamp_header.is_some(),
        }
    }

    /// Reads one request's signing material; fails only on a missing or malformed header.
    fn read<'a>(
        &self,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Result<Envelope<'a>, VerifyError> {
        match self {
            Self::StandardWebhooks => {
                let either = |name, svix| {
                    if headers.contains_key(name) {
                        name
                    } else {
                        svix
                    }
                };
                let id = required_id(headers, either(STANDARD_ID, SVIX_ID))
                    .map_err(|e| e.renamed(SVIX_ID, STANDARD_ID))?;
                let timestamp =
                    required_timestamp(headers, either(STANDARD_TIMESTAMP, SVIX_TIMESTAMP))
                        .map_err(|e| e.renamed(SVIX_TIMESTAMP, STANDARD_TIMESTAMP))?;
                let signatures =
                    signature_lines(headers, either(STANDARD_SIGNATURE, SVIX_SIGNATURE))
                        .map_err(|e| e.renamed(SVIX_SIGNATURE, STANDARD_SIGNATURE))?;
                Ok(Envelope {
                    id: IdSource::Header(id),
                    timestamp: Some(timestamp),
                    signatures: signatures.flat_map(standard_signatures).collect(),
                    content: vec![id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
                    event_type: None,
                })
            }
            Self::Stripe => {
                let lines: Vec<&str> = signature_lines(headers, STRIPE_SIGNATURE)?.collect();
                // The signed timestamp is the first `t=`; a header without one is
                // malformed, like one whose `t=` is not an integer.
                let timestamp = lines
                    .iter()
                    .find_map(|line| stripe_field(line, "t").next())
                    .filter(|t| is_integer(t))
                    .ok_or_else(|| {
                        VerifyError::invalid(STRIPE_SIGNATURE, "expected t=<Unix seconds>")
                    })?;
                Ok(Envelope {
                    id: IdSource::BodyField,
                    timestamp: Some(timestamp),
                    signatures: lines
                        .iter()
                        .flat_map(|line| stripe_field(line, "v1"))
                        .filter_map(|sig| Encoding::Hex.decode(sig))
                        .collect(),
                    content: vec![timestamp.as_bytes(), b".", body],
                    event_type: None,
                })
            }
            Self::Github => Ok(Envelope {
                id: IdSource::Header(required_id(headers, GITHUB_ID)?),
                timestamp: None,
                signatures: prefixed(
                    signature_lines(headers, GITHUB_SIGNATURE)?,
                    "sha256=",
                    Encoding::Hex,
                ),
                content: vec![body],
                event_type: text(headers, GITHUB_EVENT),
            }),
            Self::Shopify => Ok(Envelope {
                id: IdSource::Header(required_id(headers, SHOPIFY_ID)?),
                timestamp: None,
                signatures: prefixed(
                    signature_lines(headers, SHOPIFY_SIGNATURE)?,
                    "",
                    Encoding::Base64,
                ),
                content: vec![body],
                event_type: text(headers, SHOPIFY_TOPIC),
            }),
            Self::Slack => {
                let timestamp = required_timestamp(headers, SLACK_TIMESTAMP)?;
                let signatures = signature_lines(headers, SLACK_SIGNATURE)?;
                Ok(Envelope {
                    id: IdSource::ContentHash,
                    timestamp: Some(timestamp),
                    signatures: prefixed(signatures, "v0=", Encoding::Hex),
                    content: vec![b"v0:", timestamp.as_bytes(), b":", body],
                    event_type: None,
                })
            }
            Self::HmacSha256(h) => {
                let id = required_id(headers, &h.id_header)?;
                let timestamp = match &h.timestamp_header {
                    Some(name) => Some(required_timestamp(headers, name)?),
                    None => None,
                };
                let signatures = signature_lines(headers, &h.signature_header)?;
                let prefix = h.prefix.as_deref().unwrap_or_default();
                Ok(Envelope {
                    id: IdSource::Header(id),
                    timestamp,
                    signatures: prefixed(signatures, prefix, h.encoding),
                    content: match timestamp {
                        Some(ts) => vec![ts.as_bytes(), b".", body],
                        None => vec![body],
                    },
                    event_type: None,
                })
            }
        }
    }
}

/// One request's signing material, as its scheme lays it out.
struct Envelope<'a> {
    id: IdSource<'a>,
    /// The timestamp exactly as sent (it is signed as text); `None` when the
    /// scheme has none.
    timestamp: Option<&'a str>,
    /// Every well-formed signature the request carries, decoded.
    signatures: Vec<Vec<u8>>,
    /// The signed content, in pieces, so the body is never copied.
    content: Vec<&'a [u8]>,
    event_type: Option<&'a str>,
}

/// Where a verified request's delivery id comes from.
enum IdSource<'a> {
    Header(&'a str),
    /// The body's `"id"` string, else the content hash (Stripe).
    BodyField,
    /// The hex SHA-256 of the signed content (Slack carries no id).
    ContentHash,
}

/// A source's verification rule: scheme + decoded keys + tolerance. Built once at startup.
#[derive(Clone)]
pub struct SourceRule {
    scheme: Scheme,
    keys: Vec<Vec<u8>>,
    tolerance_secs: u64,
}

// Hand-written so key bytes can never reach a log line.
impl std::fmt::Debug for SourceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRule")
            .field("scheme", &self.scheme)
            .field("keys", &self.keys.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl SourceRule {
    /// Decodes the secrets (`whsec_` base64 for standard-webhooks; the raw
    /// bytes otherwise). Errors if there is no secret, a `whsec_` secret does
    /// not decode, or any key would be empty (an empty HMAC key is public).
    pub fn new(scheme: Scheme, secrets: &[String], tolerance_secs: u64) -> Result<Self, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::NoSecret);
        }
        let keys = secrets
            .iter()
            .map(|secret| match scheme {
                Scheme::StandardWebhooks => decode_whsec(secret),
                _ => Ok(secret.as_bytes().to_vec()),
            })
            .collect::<Result<_, _>>()?;
        Self::from_keys(scheme, keys, tolerance_secs)
    }

    /// A rule over keys that are already decoded (the config loader decodes `whsec_`
    /// secrets while validating them). Errors if there is no key or any key is empty.
    pub fn from_keys(
        scheme: Scheme,
        keys: Vec<Vec<u8>>,
        tolerance_secs: u64,
    ) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoSecret);
        }
        if keys.iter().any(Vec::is_empty) {
            return Err(KeyError::EmptySecret);
        }
        Ok(Self {
            scheme,
            keys,
            tolerance_secs,
        })
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The decoded keys, in configured order.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    pub fn tolerance_secs(&self) -> u64 {
        self.tolerance_secs
    }

    /// Verify one request. `now_unix` is the current Unix time in seconds.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyError> {
        let envelope = self.scheme.read(headers, body)?;
        let timestamp = self.fresh_timestamp(envelope.timestamp, now_unix)?;
        if !self.any_key_signed(&envelope.content, &envelope.signatures) {
            return Err(VerifyError::InvalidSignature);
        }
        Ok(Verified {
            id: delivery_id(&envelope, body),
            timestamp,
            event_type: envelope.event_type.map(str::to_owned),
        })
    }

    fn fresh_timestamp(
        &self,
        raw: Option<&str>,
        now_unix: i64,
    ) -> Result<Option<i64>, VerifyError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        // Well formed since `read`; an integer beyond i64 is as stale as can be.
        match raw.parse::<i64>() {
            Ok(ts) if now_unix.abs_diff(ts) <= self.tolerance_secs => Ok(Some(ts)),
            _ => Err(VerifyError::StaleTimestamp),
        }
    }

    /// Whether any key signed the content as any of `signatures`.
    ///
    /// Every key is tried against every signature and the results are
    /// combined without branching, so the time taken says nothing about which
    /// pair matched or how close a guess came.
    fn any_key_signed(&self, content: &[&[u8]], signatures: &[Vec<u8>]) -> bool {
        if signatures.is_empty() {
            // Nothing to compare; the sender already knows the header is unusable.
            return false;
        }
        let mut matched = Choice::from(0);
        for key in &self.keys {
            let tag = hmac_sha256(key, content);
            for signature in signatures {
                matched |= tag.as_slice().ct_eq(signature);
            }
        }
        matched.into()
    }
}

/// What a successful verification establishes about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The delivery id used for deduplication.
    pub id: String,
    /// The signed timestamp, for schemes that have one.
    pub timestamp: Option<i64>,
    /// The event type, where the scheme carries it in a header.
    pub event_type: Option<String>,
}

/// Why a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("invalid header {header}: {expected}")]
    InvalidHeader {
        header: String,
        expected: &'static str,
    },
    #[error("timestamp outside the tolerance")]
    StaleTimestamp,
    #[error("no valid signature")]
    InvalidSignature,
}

impl VerifyError {
    /// A stable machine-readable code for responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::InvalidHeader { .. } => "invalid_header",
            Self::StaleTimestamp => "stale_timestamp",
            Self::InvalidSignature => "invalid_signature",
        }
    }
}

impl VerifyError {
    fn invalid(header: &str, expected: &'static str) -> Self {
        Self::InvalidHeader {
            header: header.to_owned(),
            expected,
        }
    }

    /// The same error about `to` where it names `from`: a missing `svix-` header is reported
    /// under its `webhook-` name, the one the contract documents.
    fn renamed(self, from: &str, to: &str) -> Self {
        match self {
            Self::MissingHeader(name) if name == from => Self::MissingHeader(to.to_owned()),
            other => other,
        }
    }
}

/// Why a source's secrets cannot become keys. Never carries the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no secret configured")]
    NoSecret,
    #[error("bad secret: expected \"whsec_\" followed by base64")]
    BadWhsec,
    #[error("secret is empty")]
    EmptySecret,
}

/// Decode a Standard Webhooks secret `whsec_<base64>` into key bytes.
///
/// The prefix is required: without it a raw secret would be mistaken for
/// base64 and silently become a different key.
pub fn decode_whsec(secret: &str) -> Result<Vec<u8>, KeyError> {
    let encoded = secret
        .strip_prefix(WHSEC_PREFIX)
        .ok_or(KeyError::BadWhsec)?;
    let key = BASE64_STANDARD
        .decode(encoded)
        .map_err(|_| KeyError::BadWhsec)?;
    if key.is_empty() {
        return Err(KeyError::EmptySecret);
    }
    Ok(key)
}

/// Encode key bytes as a `whsec_` secret. The caller supplies fresh random
/// bytes (24 to 32 is customary) so this stays pure.
pub fn encode_whsec(key: &[u8]) -> String {
    format!("{WHSEC_PREFIX}{}", BASE64_STANDARD.encode(key))
}

/// The `webhook-signature` value `v1,<base64>` for Standard Webhooks signing
/// (outbound delivery and `herald sign`).
pub fn sign_standard(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let tag = hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", BASE64_STANDARD.encode(tag))
}

fn hmac_sha256(key: &[u8], content: &[&[u8]]) -> [u8; 32] {
    // HMAC is defined for keys of every length (long ones are hashed, short
    // ones padded); the `Result` exists only for fixed-key MACs sharing the trait.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    for piece in content {
        mac.update(piece);
    }
    mac.finalize().into_bytes().into()
}

fn content_hash(content: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for piece in content {
        hasher.update(piece);
    }
    hex::encode(hasher.finalize())
}

fn delivery_id(envelope: &Envelope<'_>, body: &[u8]) -> String {
    match envelope.id {
        IdSource::Header(id) => id.to_owned(),
        IdSource::BodyField => body_id(body).unwrap_or_else(|| content_hash(&envelope.content)),
        IdSource::ContentHash => content_hash(&envelope.content),
    }
}

/// The body's top-level `"id"`, when it is a non-empty string.
fn body_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct WithId {
        id: Option<String>,
    }
    serde_json::from_slice::<WithId>(body)
        .ok()?
        .id
        .filter(|id| !id.is_empty())
}

/// A header's value when it is non-empty UTF-8.
fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?;
    str::from_utf8(value.as_bytes())
        .ok()
        .filter(|text| !text.is_empty())
}

/// An id header: present, non-empty, and visible ASCII (it becomes a dedupe key and is shown
/// in the API).
fn required_id<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    let value = headers
        .get(name)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))?;
    let bytes = value.as_bytes();
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(VerifyError::invalid(name, "expected visible ASCII"));
    }
    // Visible ASCII is UTF-8.
    str::from_utf8(bytes).map_err(|_| VerifyError::invalid(name, "expected visible ASCII"))
}

/// A timestamp header: present, non-empty, and an integer (Unix seconds).
fn required_timestamp<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    if headers.get(name).is_none_or(http::HeaderValue::is_empty) {
        return Err(VerifyError::MissingHeader(name.to_owned()));
    }
    text(headers, name)
        .filter(|text| is_integer(text))
        .ok_or_else(|| VerifyError::invalid(name, "expected an integer (Unix seconds)"))
}

/// Optional `-`, then ASCII digits only: what senders write (no `+`, no spaces).
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Every line of a signature header. Present but not UTF-8 reads as empty: the
/// header exists, it just holds no valid signature.
fn signature_lines<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<impl Iterator<Item = &'a str>, VerifyError> {
    if !headers.contains_key(name) {
        return Err(VerifyError::MissingHeader(name.to_owned()));
    }
    Ok(headers
        .get_all(name)
        .into_iter()
        .map(|value| str::from_utf8(value.as_bytes()).unwrap_or_default()))
}

/// `v1,<base64>` entries, space-separated; other versions (such as the
/// asymmetric `v1a,`) are not ours to check and are skipped.
fn standard_signatures(value: &str) -> Vec<Vec<u8>> {
    value
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|sig| Encoding::Base64.decode(sig))
        .collect()
}

/// The values of `key` in a Stripe header `t=…,v1=…,v0=…`, in order.
fn stripe_field<'a>(value: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> {
    value
        .split(',')
        .filter_map(|item| item.trim().split_once('='))
        .filter(move |(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// One signature per line, each written as `{prefix}{encoded}`.
fn prefixed<'a>(
    lines: impl Iterator<Item = &'a str>,
    prefix: &str,
    encoding: Encoding,
) -> Vec<Vec<u8>> {
    lines
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|encoded| encoding.decode(encoded))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::HeaderName;

    const NOW: i64 = 1_700_000_000;
    const TOLERANCE: u64 = 300;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"order.paid"}"#;

    /// HMAC-SHA256, computed straight from the crates, independent of the code
    /// under test.
    fn mac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    fn b64(bytes: &[u8]) -> String {
        BASE64_STANDARD.encode(bytes)
    }

    fn sha256_hex(message: &[u8]) -> String {
        hex::encode(Sha256::digest(message))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    /// Joins the pieces of a signed message (the slice type lets literals mix).
    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// One scheme as a sender uses it: the secret it is configured with, and
    /// how a genuine sender signs a body at a time.
    struct Fixture {
        scheme: Scheme,
        secret: &'static str,
        other_secret: &'static str,
        /// The headers a genuine sender holding `secret` attaches.
        sign: fn(secret: &str, body: &[u8], ts: i64) -> HeaderMap,
        id_header: Option<&'static str>,
        timestamp_header: Option<&'static str>,
        signature_header: &'static str,
    }

    impl Fixture {
        fn rule(&self, secrets: &[&str]) -> SourceRule {
            let secrets: Vec<String> = secrets.iter().map(ToString::to_string).collect();
            SourceRule::new(self.scheme.clone(), &secrets, TOLERANCE).unwrap()
        }

        fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
            self.rule(&[self.secret]).verify(headers, body, NOW)
        }

        fn name(&self) -> &'static str {
            self.scheme.name()
        }

        /// Required headers, in the order they are checked.
        fn required(&self) -> Vec<&'static str> {
            let signature = Some(self.signature_header);
            [self.id_header, self.timestamp_header, signature]
                .into_iter()
                .flatten()
                .collect()
        }
    }

    fn generic_headers() -> HmacHeaders {
        HmacHeaders {
            id_header: "X-Event-Id".into(),
            timestamp_header: Some("X-Event-Time".into()),
            signature_header: "X-Signature".into(),
            encoding: Encoding::Hex,
            prefix: Some("sha256=".into()),
        }
    }

    fn sign_standard_webhooks(secret: &str, body: &[u8], ts: i64) -> HeaderMap {
        let key = BASE64_STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let ts = ts.to_string();
        let sig = mac(&key, &concat(&[b"msg_1.", ts.as_bytes(), b".", body]));
        headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &format!("v1,{}", b64(&sig))),
        ])
    }

    fn sign_stripe(secret: &str, body: &[u8], ts: i64) -> HeaderMap {
        let sig = mac(
            secret.as_bytes(),
            &concat(&[ts.to_string().as_bytes(), b".", body]),
        );
        headers(&[(
            "stripe-signature",
            &format!("t={ts},v1={}", hex::encode(sig)),
        )])
    }

    fn sign_github(secret: &str, body: &[u8], _ts: i64) -> HeaderMap {
        let sig = mac(secret.as_bytes(), body);
        headers(&[
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("x-github-event", "push"),
            (
                "x-hub-signature-256",
                &format!("sha256={}", hex::encode(sig)),
            ),
        ])
    }

    fn sign_shopify(secret: &str, body: &[u8], _ts: i64) -> HeaderMap {
        let sig = mac(secret.as_bytes(), body);
        headers(&[
            (
                "x-shopify-webhook-id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            ),
            ("x-shopify-topic", "orders/create"),
            ("x-shopify-hmac-sha256", &b64(&sig)),
        ])
    }

    fn sign_slack(secret: &str, body: &[u8], ts: i64) -> HeaderMap {
        let ts = ts.to_string();
        let sig = mac(
            secret.as_bytes(),
            &concat(&[b"v0:", ts.as_bytes(), b":", body]),
        );
        headers(&[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &format!("v0={}", hex::encode(sig))),
        ])
    }

    fn sign_generic(secret: &str, body: &[u8], ts: i64) -> HeaderMap {
        let ts = ts.to_string();
        let sig = mac(secret.as_bytes(), &concat(&[ts.as_bytes(), b".", body]));
        headers(&[
            ("x-event-id", "evt_generic"),
            ("x-event-time", &ts),
            ("x-signature", &format!("sha256={}", hex::encode(sig))),
        ])
    }

    fn fixtures() -> Vec<Fixture> {
        vec![
            Fixture {
                scheme: Scheme::StandardWebhooks,
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                other_secret: "whsec_dGhlIG90aGVyIHNlY3JldCBrZXkgYnl0ZXM=",
                sign: sign_standard_webhooks,
                id_header: Some("webhook-id"),
                timestamp_header: Some("webhook-timestamp"),
                signature_header: "webhook-signature",
            },
            Fixture {
                scheme: Scheme::Stripe,
                secret: "whsec_stripe_endpoint_secret",
                other_secret: "whsec_another_stripe_secret",
                sign: sign_stripe,
                id_header: None,
                timestamp_header: None,
                signature_header: "Stripe-Signature",
            },
            Fixture {
                scheme: Scheme::Github,
                secret: "It's a Secret to Everybody",
                other_secret: "a different github secret",
                sign: sign_github,
                id_header: Some("X-GitHub-Delivery"),
                timestamp_header: None,
                signature_header: "X-Hub-Signature-256",
            },
            Fixture {
                scheme: Scheme::Shopify,
                secret: "shpss_0123456789abcdef",
                other_secret: "shpss_fedcba9876543210",
                sign: sign_shopify,
                id_header: Some("X-Shopify-Webhook-Id"),
                timestamp_header: None,
                signature_header: "X-Shopify-Hmac-SHA256",
            },
            Fixture {
                scheme: Scheme::Slack,
                secret: "8f742231b10e8888abcd99yyyzzz85a5",
                other_secret: "0000000000000000aaaaaaaaaaaaaaaa",
                sign: sign_slack,
                id_header: None,
                timestamp_header: Some("X-Slack-Request-Timestamp"),
                signature_header: "X-Slack-Signature",
            },
            Fixture {
                scheme: Scheme::HmacSha256(generic_headers()),
                secret: "generic-secret",
                other_secret: "generic-secret-2",
                sign: sign_generic,
                id_header: Some("X-Event-Id"),
                timestamp_header: Some("X-Event-Time"),
                signature_header: "X-Signature",
            },
        ]
    }

    #[test]
    fn every_scheme_accepts_a_valid_signature() {
        for f in fixtures() {
            let verified = f
                .verify(&(f.sign)(f.secret, BODY, NOW), BODY)
                .unwrap_or_else(|e| panic!("{}: {e}", f.name()));
            let expected_ts = f.scheme.has_timestamp().then_some(NOW);
            assert_eq!(verified.timestamp, expected_ts, "{}", f.name());
        }
    }

    #[test]
    fn every_scheme_rejects_a_tampered_body() {
        let tampered = br#"{"id":"evt_1","type":"order.refunded"}"#;
        for f in fixtures() {
            let result = f.verify(&(f.sign)(f.secret, BODY, NOW), tampered);
            assert_eq!(result, Err(VerifyError::InvalidSignature), "{}", f.name());
        }
    }

    #[test]
    fn every_scheme_rejects_a_wrong_secret() {
        for f in fixtures() {
            let result = f.verify(&(f.sign)(f.other_secret, BODY, NOW), BODY);
            assert_eq!(result, Err(VerifyError::InvalidSignature), "{}", f.name());
        }
    }

    #[test]
    fn every_scheme_rejects_reserialised_json() {
        let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        let reserialised = serde_json::to_vec_pretty(&value).unwrap();
        assert_ne!(reserialised, BODY);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&reserialised).unwrap(),
            value
        );
        for f in fixtures() {
            let result = f.verify(&(f.sign)(f.secret, BODY, NOW), &reserialised);
            assert_eq!(result, Err(VerifyError::InvalidSignature), "{}", f.name());
        }
    }

    #[test]
    fn every_scheme_accepts_either_secret_during_rotation() {
        for f in fixtures() {
            let rule = f.rule(&[f.other_secret, f.secret]);
            for secret in [f.secret, f.other_secret] {
                let result = rule.verify(&(f.sign)(secret, BODY, NOW), BODY, NOW);
                assert!(result.is_ok(), "{} with {secret}: {result:?}", f.name());
            }
            let retired = f.rule(&[f.other_secret]);
            let result = retired.verify(&(f.sign)(f.secret, BODY, NOW), BODY, NOW);
            assert_eq!(result, Err(VerifyError::InvalidSignature), "{}", f.name());
        }
    }

    #[test]
    fn every_scheme_names_each_missing_header() {
        for f in fixtures() {
            for name in f.required() {
                let mut request = (f.sign)(f.secret, BODY, NOW);
                assert!(request.remove(name).is_some(), "{}: {name}", f.name());
                let expected = VerifyError::MissingHeader(name.to_owned());
                assert_eq!(f.verify(&request, BODY), Err(expected), "{}", f.name());
            }
        }
    }

    #[test]
    fn every_scheme_reports_the_first_required_header_when_there_are_none() {
        for f in fixtures() {
            let expected = VerifyError::MissingHeader(f.required()[0].to_owned());
            assert_eq!(
                f.verify(&HeaderMap::new(), BODY),
                Err(expected),
                "{}",
                f.name()
            );
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_stale_in_both_directions() {
        let limit = TOLERANCE.cast_signed();
        for f in fixtures().into_iter().filter(|f| f.scheme.has_timestamp()) {
            for ts in [NOW - limit - 1, NOW + limit + 1, 0, -NOW] {
                let result = f.verify(&(f.sign)(f.secret, BODY, ts), BODY);
                assert_eq!(
                    result,
                    Err(VerifyError::StaleTimestamp),
                    "{} at {ts}",
                    f.name()
                );
            }
            for ts in [NOW - limit, NOW + limit] {
                let result = f.verify(&(f.sign)(f.secret, BODY, ts), BODY);
                assert!(result.is_ok(), "{} at {ts}: {result:?}", f.name());
            }
        }
    }

    #[test]
    fn schemes_without_a_timestamp_ignore_the_clock() {
        for f in fixtures().into_iter().filter(|f| !f.scheme.has_timestamp()) {
            let request = (f.sign)(f.secret, BODY, NOW);
            let rule = f.rule(&[f.secret]);
            for now in [i64::MIN, 0, NOW, i64::MAX] {
                let verified = rule.verify(&request, BODY, now).unwrap();
                assert_eq!(verified.timestamp, None, "{}", f.name());
            }
        }
    }

    #[test]
    fn a_stale_request_is_stale_even_when_its_signature_is_also_bad() {
        for f in fixtures().into_iter().filter(|f| f.scheme.has_timestamp()) {
            let request = (f.sign)(f.other_secret, BODY, NOW - 10_000);
            let result = f.verify(&request, b"tampered");
            assert_eq!(result, Err(VerifyError::StaleTimestamp), "{}", f.name());
        }
    }

    #[test]
    fn a_missing_header_is_reported_before_a_stale_timestamp() {
        for f in fixtures() {
            let mut request = (f.sign)(f.secret, BODY, NOW - 10_000);
            request.remove(f.signature_header);
            let expected = VerifyError::MissingHeader(f.signature_header.to_owned());
            assert_eq!(f.verify(&request, BODY), Err(expected), "{}", f.name());
        }
    }

    #[test]
    fn header_names_match_case_insensitively() {
        let request = headers(&[
            ("X-GITHUB-DELIVERY", "d-1"),
            (
                "X-Hub-Signature-256",
                &format!("sha256={}", hex::encode(mac(b"k", BODY))),
            ),
        ]);
        let rule = SourceRule::new(Scheme::Github, &["k".into()], TOLERANCE).unwrap();
        assert_eq!(rule.verify(&request, BODY, NOW).unwrap().id, "d-1");
    }

    #[test]
    fn standard_webhooks_matches_the_specification_test_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (id, ts, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

        let key = decode_whsec(secret).unwrap();
        assert_eq!(sign_standard(&key, id, ts, body), expected);

        let request = headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", expected),
        ]);
        let rule = SourceRule::new(Scheme::StandardWebhooks, &[secret.into()], TOLERANCE).unwrap();
        let verified = rule.verify(&request, body, ts).unwrap();
        assert_eq!(
            verified,
            Verified {
                id: id.into(),
                timestamp: Some(ts),
                event_type: None
            }
        );
    }

    #[test]
    fn sign_standard_round_trips_through_verify() {
        let key = b"an outbound key of twenty-four".to_vec();
        let secret = encode_whsec(&key);
        assert_eq!(decode_whsec(&secret).unwrap(), key);
        let signature = sign_standard(&key, "msg_out", NOW, BODY);
        let request = headers(&[
            ("webhook-id", "msg_out"),
            ("webhook-timestamp", &NOW.to_string()),
            ("webhook-signature", &signature),
        ]);
        let rule = SourceRule::new(Scheme::StandardWebhooks, &[secret], TOLERANCE).unwrap();
        assert_eq!(rule.verify(&request, BODY, NOW).unwrap().id, "msg_out");
    }

    #[test]
    fn standard_webhooks_accepts_any_of_several_signatures() {
        let f = &fixtures()[0];
        let genuine = (f.sign)(f.secret, BODY, NOW);
        let genuine = genuine["webhook-signature"].to_str().unwrap();
        let forged = format!("v1,{}", b64(&[7; 32]));
        let mut request = (f.sign)(f.secret, BODY, NOW);
        request.insert(
            "webhook-signature",
            HeaderValue::from_str(&format!("{forged} v1,!!notbase64 {genuine}")).unwrap(),
        );
        assert!(f.verify(&request, BODY).is_ok());

        request.insert("webhook-signature", HeaderValue::from_str(&forged).unwrap());
        assert_eq!(f.verify(&request, BODY), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn standard_webhooks_ignores_entries_that_are_not_v1() {
        let f = &fixtures()[0];
        let mut request = (f.sign)(f.secret, BODY, NOW);
        let genuine = request["webhook-signature"].to_str().unwrap().to_owned();
        // The right bytes under another version tag must not count.
        let relabelled = genuine.replacen("v1,", "v1a,", 1);
        request.insert(
            "webhook-signature",
            HeaderValue::from_str(&relabelled).unwrap(),
        );
        assert_eq!(f.verify(&request, BODY), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn stripe_accepts_any_v1_and_ignores_other_keys() {
        let secret = "whsec_stripe_endpoint_secret";
        let good = hex::encode(mac(secret.as_bytes(), &concat(&[b"1700000000.", BODY])));
        let bad = hex::encode([0_u8; 32]);
        let rule = SourceRule::new(Scheme::Stripe, &[secret.into()], TOLERANCE).unwrap();
        let verify = |value: &str| rule.verify(&headers(&[("Stripe-Signature", value)]), BODY, NOW);

        assert!(verify(&format!("t={NOW},v1={bad},v0={bad},v1={good}")).is_ok());
        assert!(verify(&format!("t={NOW}, v1={good}, v0={bad}")).is_ok());
        // The right bytes under `v0` are not a v1 signature.
        assert_eq!(
            verify(&format!("t={NOW},v0={good}")),
            Err(VerifyError::InvalidSignature)
        );
        // No `t=`, or one that is not an integer: a malformed header (CONTRACT §3).
        for value in [format!("v1={good}"), format!("t=soon,v1={good}")] {
            assert_eq!(
                verify(&value),
                Err(VerifyError::invalid(
                    "Stripe-Signature",
                    "expected t=<Unix seconds>"
                )),
                "{value}"
            );
        }
        // Several header lines: the timestamp from the first, any v1 in any line.
        let mut lines = headers(&[("Stripe-Signature", &format!("t={NOW},v1={bad}"))]);
        lines.append(
            "stripe-signature",
            HeaderValue::from_str(&format!("v1={good}")).unwrap(),
        );
        assert!(rule.verify(&lines, BODY, NOW).is_ok());
    }

    #[test]
    fn stripe_takes_the_id_from_the_body() {
        let f = &fixtures()[1];
        let verified = f.verify(&(f.sign)(f.secret, BODY, NOW), BODY).unwrap();
        assert_eq!(verified.id, "evt_1");
        assert_eq!(verified.event_type, None);
    }

    #[test]
    fn stripe_falls_back_to_the_content_hash_without_a_body_id() {
        let f = &fixtures()[1];
        for body in [
            &br#"{"type":"x"}"#[..],
            br#"{"id":42}"#,
            br#"{"id":""}"#,
            b"not json",
        ] {
            let verified = f.verify(&(f.sign)(f.secret, body, NOW), body).unwrap();
            let signed = concat(&[NOW.to_string().as_bytes(), b".", body]);
            assert_eq!(verified.id, sha256_hex(&signed));
        }
    }

    #[test]
    fn github_reads_delivery_and_event_headers() {
        let f = &fixtures()[2];
        let verified = f.verify(&(f.sign)(f.secret, BODY, NOW), BODY).unwrap();
        assert_eq!(
            verified,
            Verified {
                id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
                timestamp: None,
                event_type: Some("push".into())
            }
        );
    }

    #[test]
    fn github_requires_the_sha256_prefix() {
        let f = &fixtures()[2];
        let mut request = (f.sign)(f.secret, BODY, NOW);
        let bare = hex::encode(mac(f.secret.as_bytes(), BODY));
        request.insert("x-hub-signature-256", HeaderValue::from_str(&bare).unwrap());
        assert_eq!(f.verify(&request, BODY), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn github_matches_its_documented_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let request = headers(&[
            ("X-GitHub-Delivery", "1"),
            (
                "X-Hub-Signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        ]);
        let rule = SourceRule::new(
            Scheme::Github,
            &["It's a Secret to Everybody".into()],
            TOLERANCE,
        )
        .unwrap();
        assert!(rule.verify(&request, b"Hello, World!", NOW).is_ok());
    }

    #[test]
    fn shopify_reads_id_and_topic_headers() {
        let f = &fixtures()[3];
        let verified = f.verify(&(f.sign)(f.secret, BODY, NOW), BODY).unwrap();
        assert_eq!(verified.id, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
        assert_eq!(verified.event_type.as_deref(), Some("orders/create"));
    }

    #[test]
    fn slack_derives_the_id_from_the_signed_content() {
        let f = &fixtures()[4];
        let verified = f.verify(&(f.sign)(f.secret, BODY, NOW), BODY).unwrap();
        let signed = concat(&[b"v0:", NOW.to_string().as_bytes(), b":", BODY]);
        assert_eq!(verified.id, sha256_hex(&signed));
        assert_eq!(verified.event_type, None);
    }

    #[test]
    fn slack_matches_its_documented_example() {
        // From Slack's "Verifying requests from Slack" documentation.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let request = headers(&[
            ("X-Slack-Request-Timestamp", "1531420618"),
            (
                "X-Slack-Signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ]);
        let rule = SourceRule::new(
            Scheme::Slack,
            &["8f742231b10e8888abcd99yyyzzz85a5".into()],
            TOLERANCE,
        )
        .unwrap();
        assert!(rule.verify(&request, body, 1_531_420_618).is_ok());
    }

    #[test]
    fn generic_hmac_supports_base64_without_timestamp_or_prefix() {
        let scheme = Scheme::HmacSha256(HmacHeaders {
            timestamp_header: None,
            encoding: Encoding::Base64,
            prefix: None,
            ..generic_headers()
        });
        assert!(!scheme.has_timestamp());
        let rule = SourceRule::new(scheme, &["k".into()], TOLERANCE).unwrap();
        let request = headers(&[
            ("x-event-id", "e-9"),
            ("x-signature", &b64(&mac(b"k", BODY))),
        ]);
        let verified = rule.verify(&request, BODY, i64::MAX).unwrap();
        assert_eq!(verified.id, "e-9");
        assert_eq!(verified.timestamp, None);
    }

    #[test]
    fn generic_hmac_requires_its_configured_prefix() {
        let f = &fixtures()[5];
        let mut request = (f.sign)(f.secret, BODY, NOW);
        let signed = concat(&[NOW.to_string().as_bytes(), b".", BODY]);
        let bare = hex::encode(mac(f.secret.as_bytes(), &signed));
        request.insert("x-signature", HeaderValue::from_str(&bare).unwrap());
        assert_eq!(f.verify(&request, BODY), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn malformed_id_or_timestamp_is_an_invalid_header_but_a_malformed_signature_is_invalid() {
        let f = &fixtures()[0];
        let garbage = HeaderValue::from_bytes(b"\xff\xfe").unwrap();
        let ascii = VerifyError::invalid("webhook-id", "expected visible ASCII");
        let integer =
            VerifyError::invalid("webhook-timestamp", "expected an integer (Unix seconds)");
        for (name, value, expected) in [
            ("webhook-id", garbage.clone(), ascii.clone()),
            ("webhook-id", HeaderValue::from_static("two words"), ascii),
            ("webhook-timestamp", garbage.clone(), integer.clone()),
            (
                "webhook-timestamp",
                HeaderValue::from_static("1.7e9"),
                integer.clone(),
            ),
            (
                "webhook-timestamp",
                HeaderValue::from_static("+1700000000"),
                integer,
            ),
            (
                "webhook-signature",
                garbage.clone(),
                VerifyError::InvalidSignature,
            ),
            (
                "webhook-id",
                HeaderValue::from_static(""),
                VerifyError::MissingHeader("webhook-id".into()),
            ),
        ] {
            let mut request = (f.sign)(f.secret, BODY, NOW);
            request.insert(name, value);
            assert_eq!(f.verify(&request, BODY), Err(expected), "{name}");
        }
    }

    #[test]
    fn ids_beyond_visible_ascii_are_invalid_headers() {
        let f = &fixtures()[2];
        let mut request = (f.sign)(f.secret, BODY, NOW);
        request.insert(
            "x-github-delivery",
            HeaderValue::from_bytes("délivré".as_bytes()).unwrap(),
        );
        assert_eq!(
            f.verify(&request, BODY),
            Err(VerifyError::invalid(
                "X-GitHub-Delivery",
                "expected visible ASCII"
            ))
        );
    }

    #[test]
    fn standard_webhooks_reads_svix_headers_and_every_signature_line() {
        let f = &fixtures()[0];
        let signed = (f.sign)(f.secret, BODY, NOW);
        let mut svix = HeaderMap::new();
        for (name, value) in &signed {
            let renamed = name.as_str().replacen("webhook-", "svix-", 1);
            svix.insert(
                HeaderName::from_bytes(renamed.as_bytes()).unwrap(),
                value.clone(),
            );
        }
        assert_eq!(
            f.verify(&svix, BODY).unwrap().id,
            f.verify(&signed, BODY).unwrap().id
        );
        // A missing svix header is reported under its documented webhook- name.
        svix.remove("svix-timestamp");
        assert_eq!(
            f.verify(&svix, BODY),
            Err(VerifyError::MissingHeader("webhook-timestamp".into()))
        );

        // The valid signature on a second header line.
        let mut lines = signed.clone();
        let genuine = lines.remove("webhook-signature").unwrap();
        lines.append("webhook-signature", HeaderValue::from_static("v1,AAAA"));
        lines.append("webhook-signature", genuine);
        assert!(f.verify(&lines, BODY).is_ok());
    }

    #[test]
    fn garbage_never_panics_and_never_verifies() {
        let signatures = [
            "",
            ",",
            " ",
            "v1,",
            "v1,=",
            "v1a,",
            "t=",
            "t=,v1=",
            "v1=",
            "=",
            "==,==",
            "sha256=",
            "sha256=zz",
            "sha256=abc",
            "v0=",
            "v0=zz",
            "t=1,t=2,v1=zz",
            "t=-1,v1=00",
            "t=99999999999999999999,v1=00",
            ",,,,",
            "v1,v1,v1",
            "\t",
        ];
        let timestamps = [
            "",
            "0",
            "-1",
            "+1",
            "abc",
            "1.5",
            " 1700000000",
            "99999999999999999999",
            "-9223372036854775808",
            "9223372036854775807",
        ];
        for f in fixtures() {
            let rule = f.rule(&[f.secret]);
            for signature in signatures {
                for timestamp in timestamps {
                    let mut request = (f.sign)(f.secret, BODY, NOW);
                    let replaced = f.timestamp_header.map(|name| (name, timestamp));
                    let replaced = replaced
                        .into_iter()
                        .chain([(f.signature_header, signature)]);
                    for (name, value) in replaced {
                        request.insert(
                            HeaderName::from_bytes(name.as_bytes()).unwrap(),
                            HeaderValue::from_str(value).unwrap(),
                        );
                    }
                    for now in [i64::MIN, -1, 0, NOW, i64::MAX] {
                        let result = rule.verify(&request, BODY, now);
                        assert!(result.is_err(), "{}: {signature:?} {timestamp:?}", f.name());
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_timestamps_and_clocks_are_stale_not_overflows() {
        let f = &fixtures()[4];
        for (ts, now) in [
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (i64::MIN, NOW),
            (NOW, i64::MIN),
        ] {
            let result = f
                .rule(&[f.secret])
                .verify(&(f.sign)(f.secret, BODY, ts), BODY, now);
            assert_eq!(result, Err(VerifyError::StaleTimestamp), "{ts} at {now}");
        }
        let result =
            f.rule(&[f.secret])
                .verify(&(f.sign)(f.secret, BODY, i64::MIN), BODY, i64::MIN);
        assert!(result.is_ok());
    }

    #[test]
    fn garbage_bodies_never_panic() {
        let f = &fixtures()[1];
        for body in [
            &b""[..],
            b"\xff\xfe",
            b"{",
            b"[]",
            b"null",
            br#"{"id":{"id":"x"}}"#,
        ] {
            let verified = f.verify(&(f.sign)(f.secret, body, NOW), body).unwrap();
            assert_eq!(verified.id.len(), 64, "{body:?}");
        }
    }

    #[test]
    fn source_rule_rejects_missing_or_malformed_secrets() {
        let new = |scheme: Scheme, secrets: &[&str]| {
            let secrets: Vec<String> = secrets.iter().map(ToString::to_string).collect();
            SourceRule::new(scheme, &secrets, TOLERANCE).map(|_| ())
        };
        assert_eq!(new(Scheme::Github, &[]), Err(KeyError::NoSecret));
        assert_eq!(new(Scheme::Github, &[""]), Err(KeyError::EmptySecret));
        assert_eq!(new(Scheme::Slack, &["ok", ""]), Err(KeyError::EmptySecret));
        assert_eq!(
            new(
                Scheme::StandardWebhooks,
                &["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            ),
            Err(KeyError::BadWhsec)
        );
        assert_eq!(
            new(Scheme::StandardWebhooks, &["whsec_not base64!"]),
            Err(KeyError::BadWhsec)
        );
        assert_eq!(
            new(Scheme::StandardWebhooks, &["whsec_"]),
            Err(KeyError::EmptySecret)
        );
        // Outside Standard Webhooks a `whsec_` secret is just bytes (Stripe's are).
        assert_eq!(new(Scheme::Stripe, &["whsec_not base64!"]), Ok(()));
    }

    #[test]
    fn key_errors_explain_the_expected_format_without_echoing_the_secret() {
        let err = decode_whsec("whsec_s3cr3t!!").unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("expected \"whsec_\" followed by base64"),
            "{shown}"
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn debug_output_never_shows_key_bytes() {
        let rule = SourceRule::new(
            Scheme::Shopify,
            &["topsecret".into(), "othersecret".into()],
            TOLERANCE,
        )
        .unwrap();
        let shown = format!("{rule:?}");
        assert!(
            shown.contains("Shopify") && shown.contains("keys: 2"),
            "{shown}"
        );
        assert!(
            !shown.contains("topsecret") && !shown.contains("116"),
            "{shown}"
        );
    }

    #[test]
    fn names_and_codes_are_stable() {
        let names: Vec<_> = fixtures().iter().map(Fixture::name).collect();
        assert_eq!(
            names,
            [
                "standard-webhooks",
                "stripe",
                "github",
                "shopify",
                "slack",
                "hmac-sha256"
            ]
        );
        assert_eq!(
            VerifyError::MissingHeader("x".into()).code(),
            "missing_header"
        );
        assert_eq!(VerifyError::StaleTimestamp.code(), "stale_timestamp");
        assert_eq!(VerifyError::InvalidSignature.code(), "invalid_signature");
    }
}
