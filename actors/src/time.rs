//! RFC 3339 times as the API takes them: any offset, stored in UTC milliseconds.

/// Milliseconds since the Unix epoch of an RFC 3339 time such as `2026-12-01T10:00:00Z`,
/// `2026-12-01T11:00:00.250+01:00` or `2026-12-01 10:00:00-05:30`. Refuses what is not one.
pub fn parse_rfc3339(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let bad = |why: &str| format!("expected an RFC 3339 time such as 2026-12-01T10:00:00Z: {why}");
    // Split the offset off: `Z`/`z`, or `±HH:MM` after the time of day.
    let (local, offset_secs) = if let Some(local) = raw.strip_suffix(['Z', 'z']) {
        (local, 0_i64)
    } else {
        let at = raw
            .len()
            .checked_sub(6)
            .filter(|&at| raw.is_char_boundary(at))
            .ok_or_else(|| bad("no offset"))?;
        let (local, offset) = raw.split_at(at);
        let sign = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad("no offset (`Z` or `±HH:MM`)")),
        };
        let (h, m) = offset[1..]
            .split_once(':')
            .ok_or_else(|| bad("offset is not ±HH:MM"))?;
        let (h, m): (i64, i64) = (
            h.parse().map_err(|_| bad("offset hours"))?,
            m.parse().map_err(|_| bad("offset minutes"))?,
        );
        if h > 23 || m > 59 || h.to_string().len() > 2 {
            return Err(bad("offset out of range"));
        }
        (local, sign * (h * 3600 + m * 60))
    };
    let utc =
        humantime::parse_rfc3339_weak(&format!("{local}Z")).map_err(|e| bad(&e.to_string()))?;
    let ms = i128::try_from(
        utc.duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad("before 1970"))?
            .as_millis(),
    )
    .map_err(|_| bad("out of range"))?;
    u64::try_from(ms - i128::from(offset_secs) * 1000).map_err(|_| bad("before 1970"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn any_offset_is_the_same_instant() {
        let utc = parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-12-01T11:00:00+01:00").unwrap(), utc);
        assert_eq!(parse_rfc3339("2026-12-01T04:30:00-05:30").unwrap(), utc);
        assert_eq!(
            parse_rfc3339("2026-12-01T10:00:00.250z").unwrap(),
            utc + 250
        );
        assert_eq!(parse_rfc3339("2026-12-01 10:00:00+00:00").unwrap(), utc);
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2026-12-01",
            "2026-12-01T10:00:00",
            "2026-12-01T10:00:00+1:00x",
            "2026-13-01T10:00:00Z",
            "2026-12-01T10:00:00+24:00",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
