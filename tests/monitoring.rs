//! Operators' surface end to end: `/metrics` parsed by a Prometheus text parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use common::{Server, destination, fast_delivery, now, std_headers};

async fn scrape(server: &Server) -> prometheus_parse::Scrape {
    let resp = server
        .http
        .get(server.api_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "no token needed");
    let text = resp.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("unparseable: {e}\n{text}"))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_reflect_what_happened() {
    let receiver = Receiver::start().await;
    let server =
        Server::start(&(fast_delivery(3) + &destination("sink", &receiver.url("/")))).await;
    let body = br#"{"type":"m.t"}"#;
    for i in 0..3 {
        let id = format!("evt_m{i}");
        let (status, _) = server
            .post_webhook("std", &std_headers(&id, now(), body), body)
            .await;
        assert_eq!(status, 202);
    }
    server
        .post_webhook("std", &std_headers("evt_m0", now(), body), body)
        .await; // duplicate
    let mut bad = std_headers("evt_bad", now(), body);
    bad[2].1 = "v1,AAAA".into();
    server.post_webhook("std", &bad, body).await;
    receiver.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let scrape = scrape(&server).await;
    let ingest = |outcome| {
        value(
            &scrape,
            "herald_ingest_total",
            &[("source", "std"), ("outcome", outcome)],
        )
    };
    assert_eq!(ingest("accepted"), Some(3.0));
    assert_eq!(ingest("duplicate"), Some(1.0));
    assert_eq!(ingest("invalid_signature"), Some(1.0));
    assert_eq!(
        value(
            &scrape,
            "herald_deliveries_total",
            &[("destination", "sink"), ("outcome", "succeeded")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&scrape, "herald_queue_depth", &[("destination", "sink")]),
        Some(0.0)
    );
    assert_eq!(value(&scrape, "herald_dlq_depth", &[]), Some(0.0));
    assert_eq!(
        value(&scrape, "herald_circuit_state", &[("destination", "sink")]),
        Some(0.0)
    );
    let requests = value(
        &scrape,
        "herald_http_request_duration_seconds",
        &[
            ("port", "ingest"),
            ("route", "POST /webhooks/:source"),
            ("status", "2xx"),
        ],
    );
    assert_eq!(requests, Some(4.0), "three 202s and one 200");
    assert!(value(&scrape, "herald_storage_commit_duration_seconds", &[]).unwrap() >= 3.0);
    server.stop().await;
}
