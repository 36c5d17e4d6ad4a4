//! A destination's own delivery policy: its overrides of `[delivery]` (`timeout_ms`,
//! `max_attempts`, `backoff_base_ms`, `backoff_max_ms`) and its static headers. Pure functions:
//! the check of a policy given through the API (the same bounds as the config file's), and the
//! policy an attempt applies.
//!
//! The dispatcher resolves the policy at every attempt from the destination's current record,
//! so a change through the API applies from the next attempt on.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use herald_storage::DestinationPolicy;
use http::{HeaderName, HeaderValue};

use super::headers::check_static_header;
use super::retry::Backoff;

/// `max_attempts`, `[delivery]`'s and a destination's own.
pub const MAX_ATTEMPTS: RangeInclusive<u32> = 1..=100;
/// `timeout_ms`, `[delivery]`'s and a destination's own: at most 5 minutes.
pub const TIMEOUT_MS: RangeInclusive<u64> = 1..=300_000;

/// A policy that cannot be applied; `field` is the request's field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        message: message.into(),
    }
}

/// The `[delivery]` values a destination's own policy falls back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Backoff,
}

/// Checks a destination's policy as the API received it: every override within bounds, the
/// base delay not above the maximum that applies (its own or `[delivery]`'s), every header
/// allowed by [`check_static_header`], no name twice in different cases. Returns it with the
/// header names lowercase.
pub fn check(
    policy: &DestinationPolicy,
    defaults: &Defaults,
) -> Result<DestinationPolicy, PolicyError> {
    if let Some(ms) = policy.timeout_ms
        && !TIMEOUT_MS.contains(&ms)
    {
        return Err(refuse(
            "timeout_ms",
            format!(
                "must be between {} and {} ms",
                TIMEOUT_MS.start(),
                TIMEOUT_MS.end()
            ),
        ));
    }
    if let Some(n) = policy.max_attempts
        && !MAX_ATTEMPTS.contains(&n)
    {
        return Err(refuse(
            "max_attempts",
            format!(
                "must be between {} and {}",
                MAX_ATTEMPTS.start(),
                MAX_ATTEMPTS.end()
            ),
        ));
    }
    for (field, value) in [
        ("backoff_base_ms", policy.backoff_base_ms),
        ("backoff_max_ms", policy.backoff_max_ms),
    ] {
        if value == Some(0) {
            return Err(refuse(field, "must be at least 1"));
        }
    }
    let applied = backoff(policy, defaults);
    if applied.base > applied.max {
        let field = if policy.backoff_base_ms.is_some() {
            "backoff_base_ms"
        } else {
            "backoff_max_ms"
        };
        return Err(refuse(
            field,
            format!(
                "the base delay ({} ms) must not exceed the maximum ({} ms)",
                applied.base.as_millis(),
                applied.max.as_millis()
            ),
        ));
    }
    let mut headers = BTreeMap::new();
    for (name, value) in &policy.headers {
        let field = format!("headers.{name}");
        let (name, value) =
            check_static_header(name, value).map_err(|e| refuse(&field, e.to_string()))?;
        let value = value.to_str().map_err(|e| refuse(&field, e.to_string()))?;
        if headers
            .insert(name.as_str().to_owned(), value.to_owned())
            .is_some()
        {
            return Err(refuse(field, "the same header name twice"));
        }
    }
    Ok(DestinationPolicy {
        headers,
        ..policy.clone()
    })
}

/// The attempt timeout that applies.
pub fn timeout(policy: &DestinationPolicy, defaults: &Defaults) -> Duration {
    policy
        .timeout_ms
        .map_or(defaults.timeout, Duration::from_millis)
}

/// The attempts before the DLQ that apply.
pub fn max_attempts(policy: &DestinationPolicy, defaults: &Defaults) -> u32 {
    policy.max_attempts.unwrap_or(defaults.max_attempts)
}

/// The backoff that applies: each bound its own or `[delivery]`'s.
pub fn backoff(policy: &DestinationPolicy, defaults: &Defaults) -> Backoff {
    Backoff {
        base: policy
            .backoff_base_ms
            .map_or(defaults.backoff.base, Duration::from_millis),
        max: policy
            .backoff_max_ms
            .map_or(defaults.backoff.max, Duration::from_millis),
    }
}

/// The static headers, parsed for the request. Stored ones were checked when set; one that
/// no longer parses is skipped rather than failing every attempt.
pub fn headers(policy: &DestinationPolicy) -> Vec<(HeaderName, HeaderValue)> {
    policy
        .headers
        .iter()
        .filter_map(|(name, value)| check_static_header(name, value).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        timeout: Duration::from_secs(10),
        max_attempts: 5,
        backoff: Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
        },
    };

    fn field(policy: &DestinationPolicy) -> String {
        check(policy, &DEFAULTS).map_or_else(|e| e.field, |_| "ok".into())
    }

    #[test]
    fn unset_fields_take_the_delivery_defaults() {
        let none = DestinationPolicy::default();
        assert_eq!(check(&none, &DEFAULTS), Ok(none.clone()));
        assert_eq!(timeout(&none, &DEFAULTS), Duration::from_secs(10));
        assert_eq!(max_attempts(&none, &DEFAULTS), 5);
        assert_eq!(backoff(&none, &DEFAULTS), DEFAULTS.backoff);
        let own = DestinationPolicy {
            timeout_ms: Some(250),
            max_attempts: Some(2),
            backoff_max_ms: Some(2_000),
            ..DestinationPolicy::default()
        };
        assert_eq!(timeout(&own, &DEFAULTS), Duration::from_millis(250));
        assert_eq!(max_attempts(&own, &DEFAULTS), 2);
        assert_eq!(
            backoff(&own, &DEFAULTS),
            Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn zero_and_out_of_range_values_are_refused_naming_the_field() {
        let with = |f: fn(&mut DestinationPolicy)| {
            let mut p = DestinationPolicy::default();
            f(&mut p);
            field(&p)
        };
        assert_eq!(with(|p| p.timeout_ms = Some(0)), "timeout_ms");
        assert_eq!(with(|p| p.timeout_ms = Some(300_001)), "timeout_ms");
        assert_eq!(with(|p| p.max_attempts = Some(0)), "max_attempts");
        assert_eq!(with(|p| p.max_attempts = Some(101)), "max_attempts");
        assert_eq!(with(|p| p.backoff_base_ms = Some(0)), "backoff_base_ms");
        assert_eq!(with(|p| p.backoff_max_ms = Some(0)), "backoff_max_ms");
        // Against the maximum that applies, its own or [delivery]'s.
        assert_eq!(
            with(|p| p.backoff_base_ms = Some(3_600_001)),
            "backoff_base_ms"
        );
        assert_eq!(with(|p| p.backoff_max_ms = Some(999)), "backoff_max_ms");
        assert_eq!(
            with(|p| {
                p.backoff_base_ms = Some(10);
                p.backoff_max_ms = Some(20);
            }),
            "ok"
        );
    }

    #[test]
    fn headers_are_checked_and_lowercased() {
        let mut p = DestinationPolicy::default();
        p.headers.insert("X-Team".into(), "orders".into());
        let checked = check(&p, &DEFAULTS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            checked.headers.get("x-team").map(String::as_str),
            Some("orders")
        );
        assert_eq!(headers(&checked).len(), 1);
        for bad in [
            "webhook-id",
            "Content-Type",
            "host",
            "content-length",
            "bad name",
        ] {
            let mut p = DestinationPolicy::default();
            p.headers.insert(bad.into(), "x".into());
            assert_eq!(field(&p), format!("headers.{bad}"));
        }
        let mut twice = DestinationPolicy::default();
        twice.headers.insert("X-A".into(), "1".into());
        twice.headers.insert("x-a".into(), "2".into());
        assert!(field(&twice).starts_with("headers."));
        let mut bad_value = DestinationPolicy::default();
        bad_value
            .headers
            .insert("x-a".into(), "line\r\nbreak".into());
        assert_eq!(field(&bad_value), "headers.x-a");
    }
}
