//! Server-side latency per route: HDR histograms keyed by (port, route, status class).
//!
//! # Design
//!
//! - A route is the matched **template** with its method (`"POST /webhooks/{source}"`),
//!   never the raw path, so keys stay few. The port is a `&'static str` (`"public"`,
//!   `"admin"`…): named in code, never taken from a request.
//! - Durations are recorded in microseconds into an auto-resizing `hdrhistogram` with 3
//!   significant figures: every percentile is within 0.1 % of the true sample, and a
//!   histogram grows only as far as its slowest request (clamped to [`MAX_TRACKED`]).
//! - **Cardinality guard.** At most `max_keys` (default [`MAX_ROUTE_KEYS`]) distinct keys;
//!   a request on a new key beyond that is counted under (its port, [`OTHER_ROUTE`], its
//!   status class), so nothing is lost and memory stays bounded (those extra keys number
//!   at most ports × status classes).
//! - Counts are since creation or the last [`RouteLatencies::reset`]; the owner decides
//!   the reporting interval.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Distinct (port, route, status class) keys kept before new ones go to [`OTHER_ROUTE`].
pub const MAX_ROUTE_KEYS: usize = 200;
/// The route under which keys beyond the cap are counted.
pub const OTHER_ROUTE: &str = "(other)";
/// Longer requests are recorded as this long: it bounds each histogram's size.
pub const MAX_TRACKED: Duration = Duration::from_secs(600);
const SIGNIFICANT_FIGURES: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    port: &'static str,
    route: String,
    status_class: &'static str,
}

/// `"2xx"` for 200–299 and so on; `"other"` outside 100–599.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// One key's numbers, for `GET /v1/perf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStats {
    pub port: &'static str,
    pub route: String,
    pub status_class: &'static str,
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Latency histograms per (port, route, status class). See the module docs.
#[derive(Debug)]
pub struct RouteLatencies {
    max_keys: usize,
    /// Keys counted against `max_keys` (all but the [`OTHER_ROUTE`] ones).
    named: usize,
    histograms: HashMap<RouteKey, Histogram<u64>>,
}

impl Default for RouteLatencies {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteLatencies {
    pub fn new() -> Self {
        Self::with_max_keys(MAX_ROUTE_KEYS)
    }

    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            max_keys,
            named: 0,
            histograms: HashMap::new(),
        }
    }

    /// Distinct keys held, [`OTHER_ROUTE`] ones included.
    pub fn key_count(&self) -> usize {
        self.histograms.len()
    }

    /// Records one request on `route` (`"METHOD /template"`) served on `port`.
    pub fn record(&mut self, port: &'static str, route: &str, status: u16, duration: Duration) {
        let status_class = status_class(status);
        let key = RouteKey {
            port,
            route: route.to_owned(),
            status_class,
        };
        // Known keys, and new ones while under the cap, count under their own name.
        let key = if self.histograms.contains_key(&key)
            || key.route == OTHER_ROUTE
            || self.named < self.max_keys
        {
            key
        } else {
            RouteKey {
                route: OTHER_ROUTE.to_owned(),
                ..key
            }
        };
        if !self.histograms.contains_key(&key) {
            // Creation fails only for a sigfig above 5; recording nothing beats panicking.
            let Ok(histogram) = Histogram::new(SIGNIFICANT_FIGURES) else {
                return;
            };
            if key.route != OTHER_ROUTE {
                self.named += 1;
            }
            self.histograms.insert(key.clone(), histogram);
        }
        let micros = duration.min(MAX_TRACKED).as_micros() as u64;
        if let Some(histogram) = self.histograms.get_mut(&key) {
            // Not `saturating_record`: it clamps to the current size instead of growing. The
            // lowest discernible value is 1 µs, and `MAX_TRACKED` keeps growth in range, so
            // this cannot fail.
            let _ = histogram.record(micros.max(1));
        }
    }

    /// Every key's count and percentiles (ms), sorted by port, route, status class.
    pub fn snapshot(&self) -> Vec<RouteStats> {
        let mut out: Vec<RouteStats> = self
            .histograms
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(key, h)| RouteStats {
                port: key.port,
                route: key.route.clone(),
                status_class: key.status_class,
                count: h.len(),
                p50_ms: quantile_ms(h, 0.50),
                p95_ms: quantile_ms(h, 0.95),
                p99_ms: quantile_ms(h, 0.99),
            })
            .collect();
        out.sort_by(|a, b| {
            (a.port, &a.route, a.status_class).cmp(&(b.port, &b.route, b.status_class))
        });
        out
    }

    /// The p75 (ms) and count of `route` (`"METHOD /template"`) over every port and status
    /// class, for `route:` budgets; `None` without requests.
    pub fn p75_ms(&self, route: &str) -> Option<(f64, u64)> {
        let mut merged: Option<Histogram<u64>> = None;
        for (_, h) in self.histograms.iter().filter(|(k, _)| k.route == route) {
            match &mut merged {
                None => merged = Some(h.clone()),
                // Both auto-resize, so adding cannot run out of range.
                Some(m) => m.add(h).ok()?,
            }
        }
        let merged = merged.filter(|m| !m.is_empty())?;
        Some((quantile_ms(&merged, 0.75), merged.len()))
    }

    /// Forgets every count (the keys and the cap start over too).
    pub fn reset(&mut self) {
        self.histograms.clear();
        self.named = 0;
    }
}

#[allow(clippy::cast_precision_loss)] // µs below 2^53 convert exactly.
fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(actual: f64, expected: f64) -> bool {
        // hdrhistogram with 3 significant figures: within 0.1 %.
        (actual - expected).abs() <= expected * 0.001
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(100), "1xx");
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(299), "2xx");
        assert_eq!(status_class(302), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(99), "other");
        assert_eq!(status_class(600), "other");
    }

    #[test]
    fn percentiles_on_known_inputs() {
        let mut l = RouteLatencies::new();
        for i in 1..=1000 {
            l.record("public", "POST /webhooks/{source}", 202, ms(i));
        }
        let stats = l.snapshot();
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!(
            (s.port, s.route.as_str(), s.status_class),
            ("public", "POST /webhooks/{source}", "2xx")
        );
        assert_eq!(s.count, 1000);
        assert!(close(s.p50_ms, 500.0), "p50 {}", s.p50_ms);
        assert!(close(s.p95_ms, 950.0), "p95 {}", s.p95_ms);
        assert!(close(s.p99_ms, 990.0), "p99 {}", s.p99_ms);
        let (p75, n) = l.p75_ms("POST /webhooks/{source}").unwrap();
        assert!(close(p75, 750.0), "p75 {p75}");
        assert_eq!(n, 1000);
    }

    #[test]
    fn sub_millisecond_and_clamped_durations() {
        let mut l = RouteLatencies::new();
        l.record("admin", "GET /v1/perf", 200, Duration::from_micros(250));
        l.record("admin", "GET /v1/slow", 200, Duration::from_secs(3_600));
        l.record("admin", "GET /v1/zero", 200, Duration::ZERO);
        let stats = l.snapshot();
        assert!(close(stats[0].p99_ms, 0.25), "{}", stats[0].p99_ms);
        assert!(close(stats[1].p50_ms, 600_000.0), "{}", stats[1].p50_ms);
        assert!(stats[2].p50_ms <= 0.001);
    }

    #[test]
    fn status_classes_are_separate_keys_and_p75_merges_them() {
        let mut l = RouteLatencies::new();
        for _ in 0..3 {
            l.record("public", "GET /health", 200, ms(10));
        }
        l.record("public", "GET /health", 503, ms(1_000));
        l.record("admin", "GET /health", 200, ms(10));
        let stats = l.snapshot();
        let keys: Vec<_> = stats
            .iter()
            .map(|s| (s.port, s.status_class, s.count))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("admin", "2xx", 1),
                ("public", "2xx", 3),
                ("public", "5xx", 1)
            ]
        );
        // 5 samples: 10,10,10,10,1000 → the 75th percentile is 10 ms.
        let (p75, n) = l.p75_ms("GET /health").unwrap();
        assert!(close(p75, 10.0), "{p75}");
        assert_eq!(n, 5);
        assert_eq!(l.p75_ms("GET /nothing"), None);
        assert_eq!(l.p75_ms("GET"), None);
    }

    #[test]
    fn the_cardinality_guard_sends_new_keys_to_other() {
        let mut l = RouteLatencies::with_max_keys(3);
        for i in 0..50 {
            l.record("public", &format!("GET /r{i}"), 200, ms(5));
            l.record("public", &format!("GET /r{i}"), 404, ms(5));
        }
        // r0 2xx, r0 4xx, r1 2xx; then everything else (r1 4xx on) in two "other" keys.
        assert_eq!(l.key_count(), 5);
        let stats = l.snapshot();
        let other: Vec<_> = stats
            .iter()
            .filter(|s| s.route == OTHER_ROUTE)
            .map(|s| (s.status_class, s.count))
            .collect();
        assert_eq!(other, vec![("2xx", 48), ("4xx", 49)]);
        assert_eq!(stats.iter().map(|s| s.count).sum::<u64>(), 100);
        // Known keys keep counting under their own name.
        l.record("public", "GET /r1", 200, ms(5));
        assert_eq!(l.p75_ms("GET /r1").unwrap().1, 2);
        // The default cap is 200.
        let mut l = RouteLatencies::new();
        for i in 0..1_000 {
            l.record("public", &format!("GET /{i}"), 200, ms(1));
        }
        assert_eq!(l.key_count(), MAX_ROUTE_KEYS + 1);
    }

    #[test]
    fn reset_forgets_everything() {
        let mut l = RouteLatencies::with_max_keys(1);
        l.record("public", "GET /a", 200, ms(1));
        l.record("public", "GET /b", 200, ms(1));
        l.reset();
        assert!(l.snapshot().is_empty());
        l.record("public", "GET /b", 200, ms(1));
        assert_eq!(l.snapshot()[0].route, "GET /b");
    }
}
