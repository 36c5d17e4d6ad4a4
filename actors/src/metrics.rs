//! herald's Prometheus metrics, through `prometheus-client`.
//!
//! Two kinds: metrics updated where the event happens (request latencies, ingest outcomes,
//! delivery outcomes, attempt durations, commit timings, circuit states), registered once in
//! [`Metrics::registry`]; and values owned elsewhere that are read at scrape time (cache stats,
//! queue and DLQ depth), which the scraper puts in a fresh registry per scrape (see
//! [`Metrics::scrape_registry`] and [`Metrics::encode`]). Label values come from bounded sets
//! (route templates, configured sources and destinations), never from request data.
//!
//! Every series carries a `node` label, `server.node_name`: several herald nodes may share one
//! database, and their figures are per node, so a Prometheus scraping them all tells them apart
//! by the series themselves rather than by scrape-target relabelling. It is a constant label of
//! both registries, so no metric can be registered without it. The text encoder escapes label
//! values (`\`, `"`, newline), which keeps the exposition valid whatever the validated name
//! holds.

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub port: &'static str,
    pub route: String,
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    pub source: String,
    /// `accepted`, `duplicate`, or the error code (`invalid_signature`, `rate_limited`…).
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub destination: String,
    /// `succeeded`, `retrying`, `dead`, `suppressed`, `gone`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    /// `server.node_name`: the `node` label of every series, scrape-time ones included.
    node: String,
    pub http_request_seconds: HistogramFamily<RouteLabels>,
    pub ingest: Family<IngestLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub attempt_seconds: HistogramFamily<DestinationLabels>,
    /// 0 closed, 1 half-open, 2 open.
    pub circuit_state: Family<DestinationLabels, Gauge>,
    pub commit_seconds: Histogram,
    pub commit_batch_size: Histogram,
    /// Vitals beacons accepted.
    pub vitals: Counter,
    /// Serialises encoding: the text encoder takes the registry by reference.
    encode_lock: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Every metric's name prefix.
const PREFIX: &str = "herald";

/// A registry whose every series is labelled `node="<node>"`.
fn node_registry(node: &str) -> Registry {
    let label = (Cow::Borrowed("node"), Cow::Owned(node.to_owned()));
    Registry::with_prefix_and_labels(PREFIX, std::iter::once(label))
}

impl Metrics {
    /// The metrics of the node named `node` (`server.node_name`).
    pub fn new(node: &str) -> Self {
        let mut registry = node_registry(node);
        let http_request_seconds: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Request latency by port, route template and status class",
            http_request_seconds.clone(),
        );
        let ingest = Family::<IngestLabels, Counter>::default();
        registry.register(
            "ingest",
            "Partner webhooks by source and outcome",
            ingest.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery outcomes by destination",
            deliveries.clone(),
        );
        let attempt_seconds: HistogramFamily<DestinationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "delivery_attempt_duration_seconds",
            "Outbound attempt duration by destination",
            attempt_seconds.clone(),
        );
        let circuit_state = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "circuit_state",
            "Circuit breaker per destination: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        let commit_seconds = latency_histogram();
        registry.register(
            "storage_commit_duration_seconds",
            "Group commit duration (apply and fsync)",
            commit_seconds.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "storage_commit_batch_size",
            "Requests per group commit",
            commit_batch_size.clone(),
        );
        let vitals = Counter::default();
        registry.register(
            "vitals_beacons",
            "Web-vitals beacons accepted",
            vitals.clone(),
        );
        Self {
            registry,
            node: node.to_owned(),
            http_request_seconds,
            ingest,
            deliveries,
            attempt_seconds,
            circuit_state,
            commit_seconds,
            commit_batch_size,
            vitals,
            encode_lock: Mutex::new(()),
        }
    }

    pub fn request(&self, port: &'static str, route: String, status: u16, took: Duration) {
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_request_seconds
            .get_or_create(&RouteLabels {
                port,
                route,
                status,
            })
            .observe(took.as_secs_f64());
    }

    pub fn ingest(&self, source: &str, outcome: &str) {
        self.ingest
            .get_or_create(&IngestLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn delivery(&self, destination: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                destination: destination.to_owned(),
                outcome,
            })
            .inc();
    }

    /// An empty registry for values read at scrape time, with the same prefix and `node`
    /// label as the rest: fill it, then pass it to [`Self::encode`].
    pub fn scrape_registry(&self) -> Registry {
        node_registry(&self.node)
    }

    /// The text exposition of every metric, plus `scrape` (from [`Self::scrape_registry`]):
    /// values read at scrape time.
    pub fn encode(&self, scrape: &Registry) -> Result<String, std::fmt::Error> {
        let _serial = self
            .encode_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, scrape)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Some of every kind of series: families, plain metrics, histograms, scrape-time gauges.
    fn exposition(node: &str) -> String {
        let metrics = Metrics::new(node);
        metrics.request("api", "GET /v1/perf".into(), 200, Duration::from_millis(3));
        metrics.ingest("std", "accepted");
        metrics.delivery("sink", "succeeded");
        metrics
            .circuit_state
            .get_or_create(&DestinationLabels {
                destination: "sink".into(),
            })
            .set(0);
        metrics.commit_seconds.observe(0.002);
        metrics.vitals.inc();
        let mut scrape = metrics.scrape_registry();
        let dlq = Gauge::<i64>::default();
        dlq.set(4);
        scrape.register("dlq_depth", "Dead deliveries in the DLQ", dlq);
        metrics.encode(&scrape).unwrap()
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_series_is_labelled_with_the_node() {
        let text = exposition("node-a");
        let samples = samples(&text);
        assert!(samples.len() > 20, "{text}");
        for line in &samples {
            assert!(
                line.contains("node=\"node-a\""),
                "unlabelled: {line}\n{text}"
            );
        }
        // Family labels follow the node's; histogram buckets carry it too.
        assert!(
            text.contains(
                "herald_ingest_total{node=\"node-a\",source=\"std\",outcome=\"accepted\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("herald_dlq_depth{node=\"node-a\"} 4"),
            "{text}"
        );
        assert!(
            samples.iter().any(|l| l
                .starts_with("herald_storage_commit_duration_seconds_bucket{node=\"node-a\",le=")),
            "{text}"
        );
    }

    #[test]
    fn a_node_name_is_escaped_as_a_label_value() {
        // Validation allows any visible characters, quotes and backslashes among them.
        let text = exposition(r#"a"b\c"#);
        for line in samples(&text) {
            assert!(line.contains(r#"node="a\"b\\c""#), "{line}");
        }
    }
}
