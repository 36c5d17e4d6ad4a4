//! A recipient's one identity: the canonical form under which everything about it is stored.
//!
//! Ingest body fields, published messages, suppressions (bulk included), preferences, export,
//! erasure, audit subjects and list filters all go through [`Recipient::parse`], so two
//! spellings of one address are one subject:
//! - surrounding whitespace is removed (a pasted `" ivan@example.com "` is Ivan);
//! - the text is put in Unicode NFC, so a precomposed `é` and `e` + combining accent match;
//! - an email address (anything with an `@`) is lower-cased, all of it. RFC 5321 lets a
//!   server treat the local part as case-sensitive, but no mainstream mailbox provider does,
//!   and suppression lists (SES, `SendGrid`, Postmark, Mailgun) match addresses case-insensitively:
//!   a bounce for `Dave@Example.com` must stop mail to `dave@example.com`. Erring the other way
//!   would send to someone who opted out.
//!
//! Other recipients (phone numbers, user ids, push tokens) are kept as written once trimmed and
//! normalised: their case can be significant.
//!
//! A recipient erased under GDPR is known from then on by its keyed pseudonym (see
//! [`crate::subjects`]), itself a valid recipient string (`anon:<hex>`), so the audit trail and
//! the opt-outs kept for it can still be filtered by it.

use std::fmt;

use serde::Deserialize as _;

use unicode_normalization::UnicodeNormalization as _;

/// The longest recipient accepted, in bytes once canonical (an email address is at most 320).
pub const MAX_LEN: usize = 320;

/// A recipient in canonical form. The only way to build one is [`Recipient::parse`] (or
/// deserialising, which parses), so every stored subject key is canonical.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Recipient(String);

/// Why a string is not a recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipientError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_LEN} bytes")]
    TooLong,
    #[error("must not contain control characters")]
    Control,
}

impl Recipient {
    /// Canonicalises `raw`: trimmed, NFC, and lower-cased when it is an email address.
    pub fn parse(raw: &str) -> Result<Self, RecipientError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(RecipientError::Empty);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(RecipientError::Control);
        }
        let nfc: String = trimmed.nfc().collect();
        // Lower-casing can produce a sequence that is not NFC (rare, but possible with
        // combining marks), so normalise once more after it.
        let canonical = if nfc.contains('@') {
            nfc.to_lowercase().nfc().collect()
        } else {
            nfc
        };
        if canonical.len() > MAX_LEN {
            return Err(RecipientError::TooLong);
        }
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a pseudonym computed by this crate (already canonical by construction).
    pub(crate) fn from_pseudonym(alias: String) -> Self {
        Self(alias)
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Recipient {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Recipient> for String {
    fn from(r: Recipient) -> Self {
        r.0
    }
}

impl std::str::FromStr for Recipient {
    type Err = RecipientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Recipient {
    /// Parses, so a record written before recipients were canonical reads back canonical.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Deserialises an optional recipient, reading one that does not parse as absent: for stored
/// records, which must stay readable whatever an older version let in.
pub(crate) fn lenient<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Recipient>, D::Error> {
    let raw = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(raw.and_then(|r| Recipient::parse(&r).ok()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Recipient::parse(s).unwrap().0
    }

    #[test]
    fn one_address_many_spellings() {
        assert_eq!(canon("dave@EXAMPLE.com"), "dave@example.com");
        assert_eq!(canon("Dave@Example.COM"), "dave@example.com");
        assert_eq!(canon("  ivan@example.com \t"), "ivan@example.com");
        // "é" precomposed (NFC) and "e" + U+0301 (NFD) are one subject.
        assert_eq!(
            canon("jos\u{e9}@example.com"),
            canon("jose\u{301}@example.com")
        );
        assert_eq!(canon("JOSE\u{301}@example.com"), "jos\u{e9}@example.com");
    }

    #[test]
    fn non_email_recipients_keep_their_case() {
        assert_eq!(canon(" +44 20 7946 0000 "), "+44 20 7946 0000");
        assert_eq!(canon("user_ABC"), "user_ABC");
    }

    #[test]
    fn bad_recipients_are_refused() {
        assert_eq!(Recipient::parse("   "), Err(RecipientError::Empty));
        assert_eq!(Recipient::parse("a\nb@x"), Err(RecipientError::Control));
        let long = format!("{}@x.com", "a".repeat(MAX_LEN));
        assert_eq!(Recipient::parse(&long), Err(RecipientError::TooLong));
    }

    #[test]
    fn deserialising_canonicalises() {
        let r: Recipient = serde_json::from_str("\" Bob@X.org \"").unwrap();
        assert_eq!(r.as_str(), "bob@x.org");
        assert!(serde_json::from_str::<Recipient>("\"\"").is_err());
    }
}
