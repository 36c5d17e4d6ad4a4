//! Standard Webhooks signing for the load generator.
//!
//! Every request the bench sends is a fresh, uniquely identified webhook signed the way a real
//! sender would sign it: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`,
//! where `key` is the base64 decoding of the secret after its `whsec_` prefix. Herald verifies
//! each one, so signing here has to be byte-for-byte what the scheme specifies, or the benchmark
//! would measure the rejection path instead of the ingest path.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The fixed secret shared by the load generator and the herald config the bench writes:
/// `whsec_` + base64 of the 24 bytes `herald-bench-fixed-key!!`.
pub const BENCH_SECRET: &str = "whsec_aGVyYWxkLWJlbmNoLWZpeGVkLWtleSEh";

/// An HMAC-SHA256 keyed once; each signature clones the keyed state instead of re-keying.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
    /// If set, every body names a recipient `user{k}@example.com`, `k` in `0..n`.
    recipients: Option<u64>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

/// One signed webhook, ready to be put on the wire.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
}

impl Signer {
    /// Builds a signer from a `whsec_<base64>` secret.
    pub fn from_secret(secret: &str) -> Result<Self> {
        let encoded = secret
            .strip_prefix("whsec_")
            .context("secret must start with `whsec_`")?;
        let key = STANDARD
            .decode(encoded)
            .context("secret after `whsec_` is not valid base64")?;
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).context("invalid HMAC key")?;
        Ok(Self {
            mac,
            recipients: None,
        })
    }

    /// Makes every body carry `"recipient":"user{k}@example.com"`, `k` in `0..n` picked
    /// pseudo-randomly from the webhook id; `None` (or 0) for no recipient.
    #[must_use]
    pub fn with_recipients(mut self, n: Option<u64>) -> Self {
        self.recipients = n.filter(|&n| n > 0);
        self
    }

    /// Fails if a body of `body_bytes` cannot hold `id` and the longest recipient.
    pub fn check_body(&self, id: &str, body_bytes: usize) -> Result<()> {
        match self.recipients {
            None => padded_body(id, body_bytes),
            Some(n) => padded_body_for(id, Some(&recipient(n - 1)), body_bytes),
        }
        .map(drop)
    }

    /// Returns the `v1,<base64>` signature of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Builds and signs a webhook with the given id, a body of exactly `body_bytes` bytes and
    /// the current time as its timestamp.
    pub fn webhook(&self, id: String, body_bytes: usize) -> Result<Webhook> {
        let recipient = self.recipients.map(|n| recipient(pick(&id) % n));
        let body = padded_body_for(&id, recipient.as_deref(), body_bytes)?;
        let timestamp = unix_now_secs().to_string();
        let signature = self.sign(&id, &timestamp, &body);
        Ok(Webhook {
            id,
            timestamp,
            signature,
            body: Bytes::from(body),
        })
    }
}

/// `{"type":"bench.event","id":"<id>","data":"xxxx…"}`, padded with `x` to exactly `len` bytes.
///
/// `id` must be JSON-safe as-is (the bench only uses `[A-Za-z0-9_]`).
pub fn padded_body(id: &str, len: usize) -> Result<Vec<u8>> {
    padded_body_for(id, None, len)
}

/// [`padded_body`], with `"recipient":"<recipient>"` after the id if given (JSON-safe as-is).
fn padded_body_for(id: &str, recipient: Option<&str>, len: usize) -> Result<Vec<u8>> {
    const HEAD: &str = r#"{"type":"bench.event","id":""#;
    const RECIPIENT: &str = r#"","recipient":""#;
    const MID: &str = r#"","data":""#;
    const TAIL: &str = r#""}"#;
    let named = recipient.map_or(0, |r| RECIPIENT.len() + r.len());
    let fixed = HEAD.len() + id.len() + named + MID.len() + TAIL.len();
    let Some(pad) = len.checked_sub(fixed) else {
        bail!("body of {len} bytes is too small: id `{id}` alone needs {fixed} bytes");
    };
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(HEAD.as_bytes());
    body.extend_from_slice(id.as_bytes());
    if let Some(r) = recipient {
        body.extend_from_slice(RECIPIENT.as_bytes());
        body.extend_from_slice(r.as_bytes());
    }
    body.extend_from_slice(MID.as_bytes());
    body.resize(body.len() + pad, b'x');
    body.extend_from_slice(TAIL.as_bytes());
    Ok(body)
}

/// Recipient number `k`.
fn recipient(k: u64) -> String {
    format!("user{k}@example.com")
}

/// A well-spread number from a webhook id (FNV-1a, then splitmix64's finaliser).
fn pick(id: &str) -> u64 {
    let mut h = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Seconds since the Unix epoch (0 if the clock is before it, which it is not on a real machine).
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A per-run tag so ids never collide with those of an earlier run against the same store.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example from the Standard Webhooks / Svix documentation.
    #[test]
    fn matches_the_published_example() -> Result<()> {
        let signer = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        let sig = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        Ok(())
    }

    #[test]
    fn bench_secret_is_24_fixed_bytes() -> Result<()> {
        let key = STANDARD.decode(BENCH_SECRET.trim_start_matches("whsec_"))?;
        assert_eq!(key, b"herald-bench-fixed-key!!");
        Signer::from_secret(BENCH_SECRET)?;
        Ok(())
    }

    #[test]
    fn body_is_exact_length_json() -> Result<()> {
        for len in [60, 1024, 4096] {
            let body = padded_body("msg_bench_3_17_abc", len)?;
            assert_eq!(body.len(), len);
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            assert_eq!(v["type"], "bench.event");
            assert_eq!(v["id"], "msg_bench_3_17_abc");
        }
        assert!(padded_body("msg_bench_3_17_abc", 10).is_err());
        Ok(())
    }

    #[test]
    fn recipients_are_spread_and_bodies_keep_their_length() -> Result<()> {
        let signer = Signer::from_secret(BENCH_SECRET)?.with_recipients(Some(10));
        signer.check_body("msg_bench_0_0_abc", 1024)?;
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..200 {
            let hook = signer.webhook(format!("msg_bench_0_{n}_abc"), 1024)?;
            assert_eq!(hook.body.len(), 1024);
            let v: serde_json::Value = serde_json::from_slice(&hook.body)?;
            let r = v["recipient"].as_str().context("no recipient")?.to_owned();
            assert!(r.starts_with("user") && r.ends_with("@example.com"), "{r}");
            seen.insert(r);
        }
        assert_eq!(seen.len(), 10, "every recipient of 0..10 shows up");
        let plain = Signer::from_secret(BENCH_SECRET)?.with_recipients(None);
        let v: serde_json::Value =
            serde_json::from_slice(&plain.webhook("msg_x".into(), 200)?.body)?;
        assert!(v.get("recipient").is_none());
        assert!(signer.check_body("msg_bench_0_0_abc", 80).is_err());
        Ok(())
    }

    #[test]
    fn rejects_bad_secrets() {
        assert!(Signer::from_secret("aGVsbG8=").is_err());
        assert!(Signer::from_secret("whsec_not base64!").is_err());
    }
}
