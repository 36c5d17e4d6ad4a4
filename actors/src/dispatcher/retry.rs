//! When to try again: exponential backoff with full jitter. Pure functions.
//!
//! After the n-th failed attempt the next one waits a uniformly random time in
//! `[0, min(max, base · 2^(n-1))]` ("full jitter": it spreads a herd of retries evenly instead
//! of synchronising them). A `Retry-After` from a 429 or 503 replaces the random delay, clamped
//! to `[0, max]` so a receiver cannot park a delivery for a year.

use std::time::Duration;

/// The backoff policy, from `[delivery]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the delay after `failed_attempts` (≥ 1) failures: `min(max, base·2^(n-1))`.
    pub fn ceiling(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let max_ms = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(factor).min(max_ms))
    }

    /// The delay before the next attempt. `unit` is a uniform random number in `[0, 1)`,
    /// passed in so that this stays a pure function; `retry_after` is the receiver's request.
    pub fn delay(
        &self,
        failed_attempts: u32,
        unit: f64,
        retry_after: Option<Duration>,
    ) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max);
        }
        self.ceiling(failed_attempts).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date relative to `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    // IMF-fixdate only ("Sun, 06 Nov 1994 08:49:37 GMT"), the form RFC 9110 requires senders
    // to use; anything else is ignored and the normal backoff applies.
    let rest = value.strip_suffix(" GMT")?;
    let (_, date) = rest.split_once(", ")?;
    let mut parts = date.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next().is_some() || day == 0 || day > 31 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, i64::try_from(day).ok()?);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). Also
/// the API's RFC 3339 parser's (`src/http/time.rs`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(3600),
    };

    #[test]
    fn ceiling_doubles_then_caps() {
        let secs: Vec<u64> = (1..=14).map(|n| POLICY.ceiling(n).as_secs()).collect();
        assert_eq!(
            secs,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600
            ]
        );
        assert_eq!(
            POLICY.ceiling(u32::MAX),
            Duration::from_secs(3600),
            "no overflow"
        );
        assert_eq!(POLICY.ceiling(0), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(POLICY.delay(4, 0.0, None), Duration::ZERO);
        assert_eq!(POLICY.delay(4, 0.5, None), Duration::from_secs(4));
        assert!(POLICY.delay(4, 0.999_999, None) < Duration::from_secs(8));
        assert_eq!(
            POLICY.delay(4, 7.0, None),
            Duration::from_secs(8),
            "unit is clamped"
        );
    }

    #[test]
    fn retry_after_wins_but_is_clamped() {
        let asked = Some(Duration::from_secs(30));
        assert_eq!(POLICY.delay(1, 0.9, asked), Duration::from_secs(30));
        let absurd = Some(Duration::from_secs(86_400 * 365));
        assert_eq!(POLICY.delay(1, 0.9, absurd), Duration::from_secs(3600));
    }

    #[test]
    fn retry_after_formats() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "-5",
            "soon",
            "Sun, 06 Nov 1994 08:51:37 PST",
            "Sun, 32 Nov 1994 08:51:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }
}
