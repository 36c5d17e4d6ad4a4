//! The records stored in the tables, and their codecs.
//!
//! Values are JSON: self-describing, so a field added later decodes from old rows through
//! `#[serde(default)]`, and a row can be read by eye when something goes wrong. Message bodies
//! are the exception: they are stored as the exact bytes received, because outbound signatures
//! and partners' own verification depend on them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// A message id: a ULID, so that key order is creation order and ids sort in time.
/// Shown to users as `msg_` followed by the 26-character ULID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u128);

impl MessageId {
    const PREFIX: &'static str = "msg_";

    /// A new id for a message received at `now_ms` (milliseconds since the Unix epoch).
    pub fn generate(now_ms: u64) -> Self {
        Self(ulid::Ulid::from_parts(now_ms, rand::random()).0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, ulid::Ulid(self.0))
    }
}

/// The text was not `msg_` followed by a ULID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id (expected msg_ followed by 26 base32 characters)")]
pub struct BadMessageId;

impl FromStr for MessageId {
    type Err = BadMessageId;

    fn from_str(s: &str) -> Result<Self, BadMessageId> {
        let ulid = s.strip_prefix(Self::PREFIX).ok_or(BadMessageId)?;
        // 26 base32 characters hold 130 bits: the first may only be 0-7 (the ULID spec's
        // largest is `7ZZZ…`). `ulid` silently drops the top two bits, so `msg_8…` would
        // name the same message as `msg_0…`.
        if !ulid.starts_with(|c: char| ('0'..='7').contains(&c)) {
            return Err(BadMessageId);
        }
        ulid::Ulid::from_string(ulid)
            .map(|u| Self(u.0))
            .map_err(|_| BadMessageId)
    }
}

/// Everything known about a message except its body and deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The source it came in through; `None` for messages published through the API.
    #[serde(default)]
    pub source: Option<String>,
    /// The partner's id (webhook id, Stripe event id…) or the publisher's idempotency key.
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Canonical. A record written before recipients were canonical reads back canonical; one
    /// whose recipient is not valid at all (an empty string) reads back without one.
    #[serde(default, deserialize_with = "crate::recipient::lenient")]
    pub recipient: Option<crate::Recipient>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// When herald accepted it, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub body_len: u64,
}

/// Where one (message, destination) pair stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Retrying,
    Dead,
    Suppressed,
}

impl DeliveryStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Succeeded,
        Self::Retrying,
        Self::Dead,
        Self::Suppressed,
    ];

    /// Still to be attempted: in the `deliveries_due` queue.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Retrying)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
            Self::Suppressed => "suppressed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The start of the receiver's answer (at most 4 KiB, lossy UTF-8), for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

/// The state of one (message, destination) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub status: DeliveryStatus,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due; `None` once the delivery is final.
    #[serde(default)]
    pub next_attempt_at_ms: Option<u64>,
    /// Attempts since the delivery was (re-)queued: what `max_attempts` counts. A DLQ retry
    /// resets it and keeps the history in `attempts`.
    #[serde(default)]
    pub round_attempts: u32,
    /// When it went to the DLQ; `None` unless `dead`.
    #[serde(default)]
    pub dead_at_ms: Option<u64>,
    /// Why it is `suppressed`, or why it died without an attempt (e.g. its destination was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was last resent (`POST /v1/messages/{id}/resend`): an attempt that began by then
    /// was asked for before the resend, so its outcome is kept in the history without using up
    /// the resend's fresh round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resent_at_ms: Option<u64>,
}

impl DeliveryRecord {
    /// A new delivery, due at once.
    pub fn pending(now_ms: u64) -> Self {
        Self {
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            next_attempt_at_ms: Some(now_ms),
            round_attempts: 0,
            dead_at_ms: None,
            reason: None,
            resent_at_ms: None,
        }
    }
}

/// A destination, as configured or created through the API, with its run-time state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationRecord {
    pub url: String,
    /// Source names, or `"*"` for every source and published messages.
    pub sources: Vec<String>,
    /// Glob patterns; empty takes every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    pub channel: String,
    /// The signing secret, `whsec_…`.
    pub secret: String,
    /// The secret it replaced, still signing until the given time (ms), after a rotation.
    #[serde(default)]
    pub previous_secret: Option<(String, u64)>,
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
    pub enabled: bool,
    #[serde(default)]
    pub disabled_reason: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Defined in the config file: re-applied at every start.
    #[serde(default)]
    pub from_config: bool,
    #[serde(default)]
    pub circuit: CircuitRecord,
}

/// A recipient's opt-out on one channel (`*` = every channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionRecord {
    /// `user_request`, `bounce`, `complaint` or `admin_action`.
    pub reason: String,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    #[serde(default)]
    pub note: Option<String>,
    /// The token name (or `source:<name>` for the feedback loop) that created it.
    pub created_by: String,
    pub created_at_ms: u64,
}

impl SuppressionRecord {
    /// Whether it applies at `now_ms`: expired entries stop applying at once, before the sweep.
    pub fn active(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// A recipient's preferences. Everything is opted in unless set to `false` here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Preferences {
    /// Channel → allowed.
    #[serde(default)]
    pub channels: std::collections::BTreeMap<String, bool>,
    /// Category → channel → allowed.
    #[serde(default)]
    pub categories: std::collections::BTreeMap<String, std::collections::BTreeMap<String, bool>>,
}

/// One entry of the append-only audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    /// The token name that made the change (or `source:<name>`, `system`).
    pub actor: String,
    /// What happened, e.g. `suppression.create`, `destination.update`, `dlq.retry`.
    pub action: String,
    /// What it happened to: a recipient, a destination name, a DLQ id.
    pub subject: String,
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    #[serde(default)]
    pub after: Option<serde_json::Value>,
}

/// A destination's circuit breaker as stored; the dispatcher owns the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CircuitRecord {
    /// Open or half-open (which of the two follows from `opened_at_ms` and the open period).
    pub open: bool,
    pub consecutive_failures: u32,
    #[serde(default)]
    pub opened_at_ms: Option<u64>,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no foreign
    // `Serialize` impls. An empty vector would still decode as an error, never as data.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(table: &'static str, bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::corrupt(table, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_and_sort_by_time() {
        let a = MessageId::generate(1_000);
        let b = MessageId::generate(2_000);
        assert!(a < b);
        let text = a.to_string();
        assert!(text.starts_with("msg_") && text.len() == 30, "{text}");
        assert_eq!(text.parse::<MessageId>(), Ok(a));
    }

    #[test]
    fn bad_message_ids_are_rejected() {
        for bad in [
            "",
            "msg_",
            "msg_xyz",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "msg_01ARZ3NDEKTSV4RRFFQ69G5FAVV",
        ] {
            assert_eq!(bad.parse::<MessageId>(), Err(BadMessageId), "{bad}");
        }
    }

    #[test]
    fn message_ids_beyond_128_bits_are_rejected_not_wrapped() {
        // Found by the `codecs` fuzz target: `msg_8…` parsed as the id shown as `msg_0…`.
        let id = "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<MessageId>();
        assert!(id.is_ok());
        for alias in [
            "msg_81ARZ3NDEKTSV4RRFFQ69G5FAV",
            "msg_G1ARZ3NDEKTSV4RRFFQ69G5FAV",
            "msg_r1arz3ndektsv4rrffq69g5fav",
            "msg_Z1ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert_eq!(alias.parse::<MessageId>(), Err(BadMessageId), "{alias}");
        }
        assert_eq!("msg_01arz3ndektsv4rrffq69g5fav".parse(), id);
        let max = MessageId(u128::MAX);
        assert_eq!(max.to_string(), "msg_7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(max.to_string().parse(), Ok(max));
    }

    #[test]
    fn delivery_status_names_round_trip() {
        for s in DeliveryStatus::ALL {
            assert_eq!(s.as_str().parse::<DeliveryStatus>(), Ok(s));
        }
        assert!("done".parse::<DeliveryStatus>().is_err());
    }

    #[test]
    fn records_decode_with_fields_added_later_missing() {
        let old = br#"{"received_at_ms": 5, "body_len": 3}"#;
        let rec: MessageRecord = decode("messages", old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.received_at_ms, 5);
        assert_eq!(rec.source, None);
        assert!(decode::<MessageRecord>("messages", b"{").is_err());
    }
}
