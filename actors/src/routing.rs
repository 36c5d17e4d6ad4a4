//! Fan-out: which destinations a message goes to. Pure functions.
//!
//! A destination takes a message when its `sources` list names the message's source (or is
//! `"*"`, which also takes messages published through the API, that have no source) and, if
//! it has `event_types`, one of those glob patterns matches the message's event type.

/// The routing part of a destination's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: String,
    /// Source names; `"*"` matches every source and published messages.
    pub sources: Vec<String>,
    /// Glob patterns (`*` matches any run of characters); empty matches every type.
    pub event_types: Vec<String>,
}

impl Route {
    pub fn matches(&self, source: Option<&str>, event_type: Option<&str>) -> bool {
        let source_ok = self
            .sources
            .iter()
            .any(|s| s == "*" || Some(s.as_str()) == source);
        let type_ok = self.event_types.is_empty()
            || event_type.is_some_and(|t| self.event_types.iter().any(|p| glob_match(p, t)));
        source_ok && type_ok
    }
}

/// The destinations, in configuration order, that a message fans out to.
pub fn destinations_for(
    routes: &[Route],
    source: Option<&str>,
    event_type: Option<&str>,
) -> Vec<String> {
    routes
        .iter()
        .filter(|r| r.matches(source, event_type))
        .map(|r| r.destination.clone())
        .collect()
}

/// Glob matching where `*` stands for any (possibly empty) run of characters and every other
/// character stands for itself. Linear time: the classic two-pointer walk with one backtrack
/// point, so a hostile pattern or event type cannot make it explode.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("payment.*", "payment.succeeded", true),
            ("payment.*", "payment.", true),
            ("payment.*", "payments.succeeded", false),
            ("*", "", true),
            ("*.created", "user.created", true),
            ("*.created", "user.created.v2", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_match(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn glob_is_linear_on_hostile_input() {
        let pattern = "*a".repeat(50) + "b";
        let text = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!glob_match(&pattern, &text));
        // Generous: an exponential matcher takes hours here, a linear one microseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    fn route(name: &str, sources: &[&str], types: &[&str]) -> Route {
        Route {
            destination: name.into(),
            sources: sources.iter().map(ToString::to_string).collect(),
            event_types: types.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn fan_out_by_source_and_type() {
        let routes = [
            route("orders", &["payments"], &["payment.*"]),
            route("all", &["*"], &[]),
            route("gh", &["github"], &[]),
        ];
        assert_eq!(
            destinations_for(&routes, Some("payments"), Some("payment.failed")),
            ["orders", "all"]
        );
        assert_eq!(
            destinations_for(&routes, Some("payments"), Some("refund.created")),
            ["all"]
        );
        assert_eq!(destinations_for(&routes, Some("payments"), None), ["all"]);
        assert_eq!(
            destinations_for(&routes, None, Some("x")),
            ["all"],
            "published messages go to * only"
        );
        assert_eq!(
            destinations_for(&routes, Some("github"), Some("push")),
            ["all", "gh"]
        );
    }
}
