//! The alert book: which conditions are active, and a bounded history of resolved ones.
//!
//! # Design
//!
//! An alert is identified by its `(kind, subject)`: `(circuit_open, "billing")`,
//! `(budget_violated, "LCP /checkout")`. Whoever evaluates a condition calls
//! [`AlertBook::raise`] while it holds and [`AlertBook::clear`] once it no longer does; the
//! book turns those level signals into edges:
//!
//! - `raise` on an inactive key opens an alert and returns [`Transition::Opened`];
//!   on an active one it only refreshes the severity and detail and returns `None`, so an
//!   alert opens once however often its condition is re-evaluated.
//! - `clear` on an active key resolves it and returns [`Transition::Resolved`]; otherwise
//!   `None`. A later `raise` opens a new alert with a new `started_at_ms`.
//!
//! A book belongs to one node (`server.node_name`) and stamps it on every alert it opens:
//! several nodes may share one database, but each judges its own conditions, so an alert
//! read anywhere (the API, a published message) says which node raised it.
//!
//! The caller publishes transitions as messages. Subjects can come from clients (a blocked
//! address), so memory is bounded: at most `max_active` active alerts (further ones are not
//! opened, and counted in [`AlertBook::dropped`]) and the `max_resolved` most recently
//! resolved ones.
//!
//! [`rate_exceeds`] and [`severity_for`] are the pure threshold tests behind the
//! rate and level conditions (cache miss rate, suppression rate, DLQ depth, …).

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

pub const DEFAULT_MAX_ACTIVE: usize = 1_000;
pub const DEFAULT_MAX_RESOLVED: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A performance budget's p75 is above its ceiling.
    BudgetViolated,
    /// A destination's circuit breaker is open.
    CircuitOpen,
    /// A destination answered 410 Gone and was disabled; it stays so until re-enabled.
    DestinationDisabled,
    /// The dead-letter queue is deeper than its threshold.
    DlqDepth,
    /// A client was blocked for repeated invalid signatures.
    ClientBlocked,
    /// Many webhooks arrive with timestamps outside the tolerance (clock skew, replays).
    StaleTimestamps,
    /// A cache misses more often than its threshold.
    CacheMissRate,
    /// Storage commits are slower than their threshold.
    SlowStorage,
    /// Storage refuses writes: reopening after an I/O error, or its data file was removed.
    StorageUnavailable,
    /// A large share of deliveries is suppressed.
    SuppressionRate,
    /// A bulk operation (DLQ bulk retry, …) is running or ran.
    BulkOperation,
}

impl AlertKind {
    pub const ALL: [AlertKind; 11] = [
        AlertKind::BudgetViolated,
        AlertKind::CircuitOpen,
        AlertKind::DestinationDisabled,
        AlertKind::DlqDepth,
        AlertKind::ClientBlocked,
        AlertKind::StaleTimestamps,
        AlertKind::CacheMissRate,
        AlertKind::SlowStorage,
        AlertKind::StorageUnavailable,
        AlertKind::SuppressionRate,
        AlertKind::BulkOperation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BudgetViolated => "budget_violated",
            AlertKind::CircuitOpen => "circuit_open",
            AlertKind::DestinationDisabled => "destination_disabled",
            AlertKind::DlqDepth => "dlq_depth",
            AlertKind::ClientBlocked => "client_blocked",
            AlertKind::StaleTimestamps => "stale_timestamps",
            AlertKind::CacheMissRate => "cache_miss_rate",
            AlertKind::SlowStorage => "slow_storage",
            AlertKind::StorageUnavailable => "storage_unavailable",
            AlertKind::SuppressionRate => "suppression_rate",
            AlertKind::BulkOperation => "bulk_operation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub severity: Severity,
    pub subject: String,
    pub started_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<u64>,
    pub detail: String,
    /// The node that raised it: its book's.
    pub node: String,
}

impl Alert {
    pub fn is_active(&self) -> bool {
        self.resolved_at_ms.is_none()
    }
}

/// A change the caller publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Opened(Alert),
    Resolved(Alert),
}

/// An alert and its opening order, which breaks ties between equal start times.
#[derive(Debug)]
struct Entry {
    seq: u64,
    alert: Alert,
}

/// Active alerts by `(kind, subject)` and the most recently resolved ones. See the module
/// docs.
#[derive(Debug)]
pub struct AlertBook {
    /// Stamped on every alert.
    node: String,
    max_active: usize,
    max_resolved: usize,
    active: HashMap<(AlertKind, String), Entry>,
    /// Most recently resolved first.
    resolved: VecDeque<Entry>,
    seq: u64,
    dropped: u64,
}

impl AlertBook {
    /// The book of the node named `node`, with the default bounds.
    pub fn new(node: impl Into<String>) -> Self {
        Self::with_limits(node, DEFAULT_MAX_ACTIVE, DEFAULT_MAX_RESOLVED)
    }

    pub fn with_limits(node: impl Into<String>, max_active: usize, max_resolved: usize) -> Self {
        Self {
            node: node.into(),
            max_active,
            max_resolved,
            active: HashMap::new(),
            resolved: VecDeque::new(),
            seq: 0,
            dropped: 0,
        }
    }

    /// Opens `(kind, subject)` unless it is active already, in which case its severity and
    /// detail are refreshed and nothing is returned. Nothing is opened either, and `None`
    /// returned, when `max_active` alerts are active (see [`Self::dropped`]).
    pub fn raise(
        &mut self,
        kind: AlertKind,
        subject: &str,
        severity: Severity,
        detail: impl Into<String>,
        now_ms: u64,
    ) -> Option<Transition> {
        let key = (kind, subject.to_owned());
        if let Some(entry) = self.active.get_mut(&key) {
            entry.alert.severity = severity;
            entry.alert.detail = detail.into();
            return None;
        }
        if self.active.len() >= self.max_active {
            self.dropped += 1;
            return None;
        }
        self.seq += 1;
        let alert = Alert {
            kind,
            severity,
            subject: key.1.clone(),
            started_at_ms: now_ms,
            resolved_at_ms: None,
            detail: detail.into(),
            node: self.node.clone(),
        };
        self.active.insert(
            key,
            Entry {
                seq: self.seq,
                alert: alert.clone(),
            },
        );
        Some(Transition::Opened(alert))
    }

    /// Resolves `(kind, subject)` if it is active.
    pub fn clear(&mut self, kind: AlertKind, subject: &str, now_ms: u64) -> Option<Transition> {
        let mut entry = self.active.remove(&(kind, subject.to_owned()))?;
        // A clock that stepped back must not resolve an alert before it started.
        entry.alert.resolved_at_ms = Some(now_ms.max(entry.alert.started_at_ms));
        let alert = entry.alert.clone();
        self.resolved.push_front(entry);
        self.resolved.truncate(self.max_resolved);
        Some(Transition::Resolved(alert))
    }

    pub fn is_active(&self, kind: AlertKind, subject: &str) -> bool {
        self.active.contains_key(&(kind, subject.to_owned()))
    }

    /// Subjects of the active alerts of `kind`, sorted: to clear those whose condition is
    /// gone when conditions are evaluated as a set.
    pub fn active_subjects(&self, kind: AlertKind) -> Vec<String> {
        let mut subjects: Vec<String> = self
            .active
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, s)| s.clone())
            .collect();
        subjects.sort();
        subjects
    }

    /// Alerts newest first (by start time, then by opening order); only active ones, or
    /// active and the retained resolved ones.
    pub fn list(&self, active_only: bool) -> Vec<Alert> {
        let mut entries: Vec<&Entry> = self.active.values().collect();
        if !active_only {
            entries.extend(self.resolved.iter());
        }
        entries.sort_by_key(|e| std::cmp::Reverse((e.alert.started_at_ms, e.seq)));
        entries.into_iter().map(|e| e.alert.clone()).collect()
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Alerts not opened because `max_active` were active.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Whether `count` out of `total` is a share above `threshold` (0.0–1.0), judged only once
/// `total` reaches `min_total` (and is not 0), so a handful of events cannot alert.
#[allow(clippy::cast_precision_loss)] // Counts far below 2^53; a rounding at that scale is moot.
pub fn rate_exceeds(count: u64, total: u64, threshold: f64, min_total: u64) -> bool {
    total > 0 && total >= min_total && count as f64 > threshold * total as f64
}

/// The severity of a level (a depth, a duration): `Critical` at or above `critical`,
/// `Warning` at or above `warning`, otherwise `None` (the condition is clear).
pub fn severity_for(value: f64, warning: f64, critical: f64) -> Option<Severity> {
    if value >= critical {
        Some(Severity::Critical)
    } else if value >= warning {
        Some(Severity::Warning)
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const NODE: &str = "node-a";

    fn opened(t: Option<Transition>) -> Alert {
        match t {
            Some(Transition::Opened(a)) => a,
            other => panic!("expected Opened, got {other:?}"),
        }
    }

    fn resolved(t: Option<Transition>) -> Alert {
        match t {
            Some(Transition::Resolved(a)) => a,
            other => panic!("expected Resolved, got {other:?}"),
        }
    }

    #[test]
    fn kinds_serialise_as_their_names() {
        for kind in AlertKind::ALL {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(AlertKind::DlqDepth.as_str(), "dlq_depth");
        assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
    }

    #[test]
    fn opens_once_and_updates_the_detail_silently() {
        let mut book = AlertBook::new(NODE);
        let a = opened(book.raise(
            AlertKind::DlqDepth,
            "dlq",
            Severity::Warning,
            "120 dead",
            10,
        ));
        assert_eq!(
            a,
            Alert {
                kind: AlertKind::DlqDepth,
                severity: Severity::Warning,
                subject: "dlq".into(),
                started_at_ms: 10,
                resolved_at_ms: None,
                detail: "120 dead".into(),
                node: NODE.into(),
            }
        );
        assert_eq!(
            book.raise(
                AlertKind::DlqDepth,
                "dlq",
                Severity::Critical,
                "5000 dead",
                20
            ),
            None
        );
        let listed = book.list(true);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].detail, "5000 dead");
        assert_eq!(listed[0].severity, Severity::Critical);
        assert_eq!(listed[0].started_at_ms, 10);
        // Same subject, other kind: another alert.
        opened(book.raise(AlertKind::SlowStorage, "dlq", Severity::Info, "", 20));
        assert_eq!(book.active_count(), 2);
    }

    #[test]
    fn every_alert_names_its_books_node() {
        let (mut a, mut b) = (AlertBook::new("node-a"), AlertBook::new("node-b"));
        let from_a = opened(a.raise(AlertKind::SlowStorage, "storage", Severity::Warning, "", 1));
        let from_b = opened(b.raise(AlertKind::SlowStorage, "storage", Severity::Warning, "", 1));
        assert_eq!(
            (from_a.node.as_str(), from_b.node.as_str()),
            ("node-a", "node-b")
        );
        let gone = resolved(a.clear(AlertKind::SlowStorage, "storage", 2));
        assert_eq!(gone.node, "node-a");
        assert!(a.list(false).iter().all(|alert| alert.node == "node-a"));
    }

    #[test]
    fn clear_resolves_only_an_active_alert() {
        let mut book = AlertBook::new(NODE);
        assert_eq!(book.clear(AlertKind::CircuitOpen, "billing", 5), None);
        opened(book.raise(
            AlertKind::CircuitOpen,
            "billing",
            Severity::Critical,
            "open",
            10,
        ));
        assert!(book.is_active(AlertKind::CircuitOpen, "billing"));
        let r = resolved(book.clear(AlertKind::CircuitOpen, "billing", 50));
        assert_eq!((r.started_at_ms, r.resolved_at_ms), (10, Some(50)));
        assert!(!r.is_active());
        assert!(!book.is_active(AlertKind::CircuitOpen, "billing"));
        assert_eq!(book.clear(AlertKind::CircuitOpen, "billing", 60), None);
        assert!(book.list(true).is_empty());
        assert_eq!(book.list(false), vec![r]);
        // A clock stepping back does not resolve before the start.
        opened(book.raise(AlertKind::CircuitOpen, "x", Severity::Info, "", 100));
        let r = resolved(book.clear(AlertKind::CircuitOpen, "x", 90));
        assert_eq!(r.resolved_at_ms, Some(100));
    }

    #[test]
    fn raising_after_a_resolve_opens_a_new_alert() {
        let mut book = AlertBook::new(NODE);
        opened(book.raise(
            AlertKind::ClientBlocked,
            "203.0.113.9",
            Severity::Warning,
            "a",
            1,
        ));
        resolved(book.clear(AlertKind::ClientBlocked, "203.0.113.9", 2));
        let again = opened(book.raise(
            AlertKind::ClientBlocked,
            "203.0.113.9",
            Severity::Warning,
            "b",
            3,
        ));
        assert_eq!((again.started_at_ms, again.resolved_at_ms), (3, None));
        let all = book.list(false);
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].detail.as_str(), all[0].resolved_at_ms), ("b", None));
        assert_eq!(
            (all[1].detail.as_str(), all[1].resolved_at_ms),
            ("a", Some(2))
        );
    }

    #[test]
    fn list_is_newest_first() {
        let mut book = AlertBook::new(NODE);
        book.raise(AlertKind::DlqDepth, "a", Severity::Info, "", 30);
        book.raise(AlertKind::DlqDepth, "b", Severity::Info, "", 10);
        book.raise(AlertKind::DlqDepth, "c", Severity::Info, "", 20);
        book.raise(AlertKind::DlqDepth, "d", Severity::Info, "", 20);
        book.clear(AlertKind::DlqDepth, "a", 40);
        let subjects =
            |alerts: Vec<Alert>| -> Vec<String> { alerts.into_iter().map(|a| a.subject).collect() };
        // Equal start times: the later opened first.
        assert_eq!(subjects(book.list(false)), vec!["a", "d", "c", "b"]);
        assert_eq!(subjects(book.list(true)), vec!["d", "c", "b"]);
        assert_eq!(
            book.active_subjects(AlertKind::DlqDepth),
            vec!["b", "c", "d"]
        );
        assert!(book.active_subjects(AlertKind::CircuitOpen).is_empty());
    }

    #[test]
    fn history_is_bounded_to_the_most_recently_resolved() {
        let mut book = AlertBook::with_limits(NODE, 10, 3);
        for i in 0..5_u64 {
            let s = format!("s{i}");
            book.raise(AlertKind::SlowStorage, &s, Severity::Warning, "", i);
            book.clear(AlertKind::SlowStorage, &s, i + 1);
        }
        let kept: Vec<_> = book.list(false).into_iter().map(|a| a.subject).collect();
        assert_eq!(kept, vec!["s4", "s3", "s2"]);
        // The default keeps 1000.
        let mut book = AlertBook::new(NODE);
        for i in 0..1_500_u64 {
            book.raise(AlertKind::BulkOperation, "bulk", Severity::Info, "", i);
            book.clear(AlertKind::BulkOperation, "bulk", i);
        }
        assert_eq!(book.list(false).len(), DEFAULT_MAX_RESOLVED);
        assert_eq!(book.list(false)[0].started_at_ms, 1_499);
    }

    #[test]
    fn active_alerts_are_bounded_too() {
        let mut book = AlertBook::with_limits(NODE, 2, 10);
        assert!(
            book.raise(AlertKind::ClientBlocked, "a", Severity::Warning, "", 0)
                .is_some()
        );
        assert!(
            book.raise(AlertKind::ClientBlocked, "b", Severity::Warning, "", 0)
                .is_some()
        );
        assert_eq!(
            book.raise(AlertKind::ClientBlocked, "c", Severity::Warning, "", 0),
            None
        );
        assert_eq!((book.active_count(), book.dropped()), (2, 1));
        // Refreshing an active one still works at the cap, and a freed slot can be used.
        assert_eq!(
            book.raise(AlertKind::ClientBlocked, "a", Severity::Critical, "x", 1),
            None
        );
        assert_eq!(book.dropped(), 1);
        book.clear(AlertKind::ClientBlocked, "a", 2);
        assert!(
            book.raise(AlertKind::ClientBlocked, "c", Severity::Warning, "", 3)
                .is_some()
        );
    }

    #[test]
    fn rates() {
        // Strictly above the threshold.
        assert!(!rate_exceeds(10, 100, 0.1, 50));
        assert!(rate_exceeds(11, 100, 0.1, 50));
        // Below the minimum total nothing alerts.
        assert!(!rate_exceeds(49, 49, 0.1, 50));
        assert!(rate_exceeds(50, 50, 0.1, 50));
        // Zero totals never alert, whatever the minimum.
        assert!(!rate_exceeds(0, 0, 0.0, 0));
        assert!(!rate_exceeds(5, 0, 0.0, 0));
        assert!(rate_exceeds(1, 1, 0.0, 0));
        assert!(!rate_exceeds(0, 1, 0.0, 0));
    }

    #[test]
    fn levels() {
        assert_eq!(severity_for(99.0, 100.0, 1000.0), None);
        assert_eq!(severity_for(100.0, 100.0, 1000.0), Some(Severity::Warning));
        assert_eq!(severity_for(999.0, 100.0, 1000.0), Some(Severity::Warning));
        assert_eq!(
            severity_for(1000.0, 100.0, 1000.0),
            Some(Severity::Critical)
        );
    }

    #[test]
    fn alerts_serialise_without_an_absent_resolution() {
        let mut book = AlertBook::new(NODE);
        let a = opened(book.raise(
            AlertKind::BudgetViolated,
            "LCP /",
            Severity::Warning,
            "p75 3000 > 2500",
            7,
        ));
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({
                "kind": "budget_violated", "severity": "warning", "subject": "LCP /",
                "started_at_ms": 7, "detail": "p75 3000 > 2500", "node": "node-a"
            })
        );
        let r = resolved(book.clear(AlertKind::BudgetViolated, "LCP /", 9));
        assert_eq!(serde_json::to_value(&r).unwrap()["resolved_at_ms"], 9);
    }
}
