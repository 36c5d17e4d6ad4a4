//! Route templates: the bounded label under which a request's latency is recorded.
//!
//! Dynamic segments become placeholders (`/v1/messages/:id`), and anything that is not a
//! route of herald's becomes `other`, so a client probing random paths cannot grow the set
//! of metric series.

/// `METHOD /template` for a request.
pub fn template(method: &http::Method, path: &str) -> String {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let shape = match segments.as_slice() {
        ["webhooks", _] => "/webhooks/:source",
        ["vitals"] => "/vitals",
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        ["v1", "messages"] => "/v1/messages",
        ["v1", "messages", _] => "/v1/messages/:id",
        ["v1", "messages", _, "resend"] => "/v1/messages/:id/resend",
        ["v1", "destinations"] => "/v1/destinations",
        ["v1", "destinations", _] => "/v1/destinations/:name",
        ["v1", "destinations", _, "rotate-secret"] => "/v1/destinations/:name/rotate-secret",
        ["v1", "dlq"] => "/v1/dlq",
        ["v1", "dlq", "retry"] => "/v1/dlq/retry",
        ["v1", "dlq", _] => "/v1/dlq/:id",
        ["v1", "dlq", _, "retry"] => "/v1/dlq/:id/retry",
        ["v1", "suppressions"] => "/v1/suppressions",
        ["v1", "suppressions", "bulk"] => "/v1/suppressions/bulk",
        ["v1", "suppressions", _, _] => "/v1/suppressions/:recipient/:channel",
        ["v1", "preferences", _] => "/v1/preferences/:recipient",
        ["v1", "preferences", _, "opt-out"] => "/v1/preferences/:recipient/opt-out",
        ["v1", "preferences", _, "opt-in"] => "/v1/preferences/:recipient/opt-in",
        ["v1", "subjects", _] => "/v1/subjects/:recipient",
        ["v1", "subjects", _, "export"] => "/v1/subjects/:recipient/export",
        ["v1", "audit"] => "/v1/audit",
        ["v1", "cache", "stats"] => "/v1/cache/stats",
        ["v1", "cache", "invalidate"] => "/v1/cache/invalidate",
        ["v1", "perf"] => "/v1/perf",
        ["v1", "whoami"] => "/v1/whoami",
        [] => "/",
        ["console", ..] => "/console",
        ["v1", "alerts"] => "/v1/alerts",
        ["v1", "storage"] => "/v1/storage",
        ["v1", "storage", "maintenance"] => "/v1/storage/maintenance",
        _ => return "other".to_owned(),
    };
    format!("{method} {shape}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = |m: &str, p: &str| template(&m.parse().unwrap_or(http::Method::GET), p);
        assert_eq!(t("POST", "/webhooks/stripe"), "POST /webhooks/:source");
        assert_eq!(t("GET", "/v1/messages/msg_01H"), "GET /v1/messages/:id");
        assert_eq!(t("GET", "/v1/messages/"), "GET /v1/messages");
        assert_eq!(t("POST", "/v1/dlq/retry"), "POST /v1/dlq/retry");
        assert_eq!(t("POST", "/v1/dlq/x.y/retry"), "POST /v1/dlq/:id/retry");
        assert_eq!(
            t("DELETE", "/v1/suppressions/a@b/email"),
            "DELETE /v1/suppressions/:recipient/:channel"
        );
        assert_eq!(t("GET", "/wp-admin/setup.php"), "other");
        assert_eq!(t("GET", "/v1/messages/a/b/c"), "other");
    }
}
