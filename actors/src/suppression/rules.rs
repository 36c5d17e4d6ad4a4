//! Whether a delivery may be sent to its recipient. A pure function of what is stored.
//!
//! A delivery is held back when the recipient has an active suppression on the destination's
//! channel or on `*`, or has opted out of that channel, or of the message's category on that
//! channel. Everything else is allowed: preferences are opt-in by default.

use herald_storage::{Preferences, SuppressionRecord};

/// Why a delivery is not sent, as recorded on it; `None` to send.
pub fn verdict(
    suppressions: &[(String, SuppressionRecord)],
    preferences: Option<&Preferences>,
    channel: &str,
    category: Option<&str>,
    now_ms: u64,
) -> Option<String> {
    if let Some((on, s)) = suppressions
        .iter()
        .find(|(c, s)| (c == channel || c == "*") && s.active(now_ms))
    {
        return Some(format!("suppressed ({}) on {on}", s.reason));
    }
    let preferences = preferences?;
    if let Some(category) = category
        && preferences
            .categories
            .get(category)
            .and_then(|channels| channels.get(channel))
            == Some(&false)
    {
        return Some(format!("opted out of {category} on {channel}"));
    }
    if preferences.channels.get(channel) == Some(&false) {
        return Some(format!("opted out of {channel}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suppression(reason: &str, expires_at_ms: Option<u64>) -> SuppressionRecord {
        SuppressionRecord {
            reason: reason.into(),
            expires_at_ms,
            note: None,
            created_by: "t".into(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn suppressions_apply_per_channel_and_star_until_they_expire() {
        let held = vec![("email".to_owned(), suppression("bounce", None))];
        assert!(verdict(&held, None, "email", None, 5).is_some_and(|r| r.contains("bounce")));
        assert_eq!(verdict(&held, None, "sms", None, 5), None);
        let all = vec![("*".to_owned(), suppression("complaint", Some(100)))];
        assert!(verdict(&all, None, "push", None, 99).is_some());
        assert_eq!(
            verdict(&all, None, "push", None, 100),
            None,
            "expired at once"
        );
    }

    #[test]
    fn preferences_by_channel_and_category() {
        let mut p = Preferences::default();
        assert_eq!(
            verdict(&[], Some(&p), "email", Some("marketing"), 0),
            None,
            "opt-in by default"
        );
        p.categories
            .insert("marketing".into(), [("email".to_owned(), false)].into());
        assert!(verdict(&[], Some(&p), "email", Some("marketing"), 0).is_some());
        assert_eq!(verdict(&[], Some(&p), "email", Some("billing"), 0), None);
        assert_eq!(verdict(&[], Some(&p), "sms", Some("marketing"), 0), None);
        p.channels.insert("sms".into(), false);
        assert!(verdict(&[], Some(&p), "sms", None, 0).is_some());
        p.channels.insert("email".into(), true);
        assert!(
            verdict(&[], Some(&p), "email", Some("marketing"), 0).is_some(),
            "a category opt-out holds even when the channel is on"
        );
    }
}
