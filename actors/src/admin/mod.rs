//! The domain layer: every admin operation of herald, one file per resource.
//!
//! | file | operations |
//! | --- | --- |
//! | [`destinations`] | create, patch (incl. enable/disable), delete, rotate the secret, read |
//! | [`dlq`] | retry one, bulk retry, discard |
//! | [`messages`] | resend |
//! | [`suppressions`] | create, bulk create, delete, list |
//! | [`preferences`] | read, replace, reset, opt out / opt in |
//! | [`subjects`] | GDPR export and erasure |
//! | [`Admin::invalidate_cache`] | cache invalidation |
//!
//! Each operation takes the caller's name and an input that the edge deserialised but did not
//! judge; it validates that input (an [`AdminError::Invalid`] names the field), writes the
//! change **and its audit entry in one commit**, invalidates the cache keys the change makes
//! stale, and tells the actors that must know (the dispatcher reloads a changed destination,
//! the DLQ keeper re-queues). The HTTP edge only parses, calls and renders: it names no storage
//! item and holds no rule.
//!
//! Every string that names a recipient becomes a [`Recipient`] here, through
//! [`Recipient::parse`], so one person has one canonical key everywhere.

pub mod destinations;
pub mod dlq;
pub mod messages;
pub mod preferences;
pub mod subjects;
pub mod suppressions;

use std::sync::Arc;
use std::time::SystemTime;

use herald_storage::{AuditEntry, Recipient, StorageError};
use serde_json::Value;

use crate::supervisor::Children;
use crate::{Core, cache_keys, unix_ms};

/// Why an admin operation did not happen. Nothing was written in any of these cases.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The input is wrong; `field` names the offending field (`items[3].channel`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such resource; the text names it.
    #[error("{0} not found")]
    NotFound(String),
    /// The resource exists already.
    #[error("{0}")]
    Conflict(String),
    /// A destination URL refused by the SSRF guard.
    #[error("{0}")]
    NotAllowed(String),
    /// An actor is restarting or did not answer in time; retrying is safe.
    #[error("temporarily unavailable")]
    Unavailable,
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl AdminError {
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::NotFound(what.to_string())
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

/// Parses a recipient named by a request (a path segment, a body field, a filter).
pub fn recipient(field: &str, raw: &str) -> AdminResult<Recipient> {
    Recipient::parse(raw).map_err(|e| AdminError::invalid(field, e))
}

/// Parses a keyword (a channel, a reason) named by field `field`.
pub fn keyword<K>(field: &str, raw: &str) -> AdminResult<K>
where
    K: std::str::FromStr<Err = herald_storage::UnknownKeyword>,
{
    raw.parse().map_err(|e| AdminError::invalid(field, e))
}

/// The admin operations over the running actors. Reached through [`crate::Herald::admin`].
#[derive(Debug)]
pub struct Admin {
    core: Arc<Core>,
    children: Children,
}

impl Admin {
    pub(crate) fn new(core: Arc<Core>, children: Children) -> Self {
        Self { core, children }
    }

    /// `POST /v1/cache/invalidate`: drops every cache entry whose key matches the glob
    /// `pattern` (`*` = all); returns how many.
    pub async fn invalidate_cache(&self, pattern: &str) -> AdminResult<usize> {
        if pattern.is_empty() {
            return Err(AdminError::invalid("pattern", "must not be empty"));
        }
        let cache = self.core.cache().ok_or(AdminError::Unavailable)?;
        Ok(crate::cache::invalidate(&cache, pattern).await)
    }

    /// Drops the cached reads of one recipient after a change to it.
    fn recipient_changed(&self, recipient: &Recipient) {
        self.core
            .invalidate(&cache_keys::suppressions(recipient.as_str()));
        self.core
            .invalidate(&cache_keys::preferences(recipient.as_str()));
    }
}

/// An audit entry for a change made now by `actor`.
fn entry(
    actor: &str,
    action: &str,
    subject: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> AuditEntry {
    AuditEntry {
        at_ms: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        before,
        after,
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
