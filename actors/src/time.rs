//! RFC 3339 times as the API takes them: any offset, kept as Unix milliseconds in UTC.
//!
//! The one parser of a time from a request (`since`, `expires_at`, …), so every operation
//! accepts the same spellings; responses render UTC (`…Z`). Accepted:
//! `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, the `T` (or a space) and `Z` in either case
//! (RFC 3339 §5.6), a leap second `:60` read as `:59.999`. Fractions beyond milliseconds are
//! truncated. Times before 1970 are refused: nothing herald stores predates them.
//!
//! Hand-written rather than a date crate: `humantime` knows only `Z`, and this grammar is
//! small enough to check completely in the tests below.

use crate::dispatcher::retry::days_from_civil;

/// Milliseconds since the Unix epoch (UTC) of an RFC 3339 time such as `2026-12-01T10:00:00Z`,
/// `2026-12-01T11:00:00.250+01:00` or `2026-12-01 10:00:00-05:30`; the error says what is
/// wrong. Surrounding whitespace is ignored.
pub fn parse_rfc3339(raw: &str) -> Result<u64, String> {
    parse(raw.trim()).map_err(|why| {
        format!(
            "expected an RFC 3339 time such as 2026-12-01T10:00:00Z or \
             2026-12-01T11:00:00+01:00: {why}"
        )
    })
}

fn parse(raw: &str) -> Result<u64, &'static str> {
    let b = raw.as_bytes();
    let number = |at: usize, len: usize| -> Result<i64, &'static str> {
        let digits = b.get(at..at + len).ok_or("too short")?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err("expected digits where the date or time is");
        }
        Ok(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let expect = |at: usize, allowed: &[u8], what: &'static str| match b.get(at) {
        Some(c) if allowed.contains(c) => Ok(()),
        _ => Err(what),
    };
    let year = number(0, 4)?;
    expect(4, b"-", "expected `-` after the year")?;
    let month = number(5, 2)?;
    expect(7, b"-", "expected `-` after the month")?;
    let day = number(8, 2)?;
    expect(10, b"Tt ", "expected `T` between the date and the time")?;
    let hour = number(11, 2)?;
    expect(13, b":", "expected `:` after the hour")?;
    let minute = number(14, 2)?;
    expect(16, b":", "expected `:` after the minutes")?;
    let second = number(17, 2)?;
    let mut at = 19;
    let mut millis = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b
            .get(at + 1..)
            .unwrap_or_default()
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err("expected digits after the decimal point");
        }
        // The first three digits, padded: `.5` is 500 ms.
        millis = (0..3).try_fold(0, |ms, i| {
            if i < digits {
                number(at + 1 + i, 1).map(|d| ms * 10 + d)
            } else {
                Ok(ms * 10)
            }
        })?;
        at += 1 + digits;
    }
    let offset_minutes = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() => {
            expect(at + 3, b":", "expected `:` in the offset")?;
            let (hours, minutes) = (number(at + 1, 2)?, number(at + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return Err("the offset is out of range");
            }
            let minutes = hours * 60 + minutes;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return Err("expected `Z` or an offset such as +01:00 at the end"),
    };
    if !(1..=12).contains(&month) {
        return Err("the month is out of range");
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return Err("the day is out of range for its month");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("the time of day is out of range");
    }
    // A leap second is the last instant of its minute; Unix time has no room for it.
    let (second, millis) = if second == 60 {
        (59, 999)
    } else {
        (second, millis)
    };
    let local_secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let utc_ms = (local_secs - offset_minutes * 60) * 1000 + millis;
    u64::try_from(utc_ms).map_err(|_| "times before 1970 are not accepted")
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// As the API renders a time.
    fn rfc3339(ms: u64) -> String {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_millis(t).to_string()
    }

    #[test]
    fn any_offset_is_the_same_instant_in_utc() {
        let utc = parse("2026-12-01T09:30:00Z").unwrap();
        for same in [
            "2026-12-01T10:30:00+01:00",
            "2026-12-01T04:00:00-05:30",
            "2026-12-01t09:30:00z",
            "2026-12-01 09:30:00Z",
            "2026-12-01T09:30:00.000Z",
            "2026-12-01T09:30:00.0001+00:00",
            "2026-12-01T09:30:00-00:00",
            "2026-12-02T00:29:00+14:59",
        ] {
            assert_eq!(parse(same), Ok(utc), "{same}");
        }
        assert_eq!(rfc3339(utc), "2026-12-01T09:30:00.000Z");
    }

    #[test]
    fn known_instants() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000_500));
        assert_eq!(parse("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse("9999-12-31T23:59:59.999Z"), Ok(253_402_300_799_999));
        // A leap second is the last millisecond of its minute.
        assert_eq!(parse("2016-12-31T23:59:60Z"), Ok(1_483_228_799_999));
        // Every millisecond rendered reads back as itself.
        for ms in [
            0,
            1,
            999,
            1_700_000_000_123,
            951_782_400_000,
            253_402_300_799_999,
        ] {
            assert_eq!(parse(&rfc3339(ms)), Ok(ms), "{ms}");
        }
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T09:30Z",
            "2026-12-01T09:30:00",
            "2026-12-01T09:30:00+0100",
            "2026-12-01T09:30:00+01",
            "2026-12-01T09:30:00+24:00",
            "2026-12-01T09:30:00+01:60",
            "2026-12-01T09:30:00.Z",
            "2026-12-01T09:30:00ZZ",
            "2026-13-01T09:30:00Z",
            "2026-00-01T09:30:00Z",
            "2025-02-29T09:30:00Z",
            "2026-04-31T09:30:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T09:60:00Z",
            "2026-12-01T09:30:61Z",
            "+2026-12-01T09:30:00Z",
            "2026-12-01T09:30:00 Z",
            "2026-1２-01T09:30:00Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "yesterday",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let err = parse_rfc3339("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
        // As the API has always taken them: surrounding spaces, and these spellings.
        assert_eq!(
            parse_rfc3339(" 2026-12-01T10:00:00Z ").ok(),
            parse("2026-12-01T10:00:00Z").ok()
        );
        for bad in ["2026-12-01T10:00:00+1:00x", "2026-12-01T10:00:00+24:00"] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
