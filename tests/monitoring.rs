//! Operators' surface end to end: `/metrics` parsed by a Prometheus text parser.
//!
//! The tests that name a node set `server.node_name` through its environment override
//! (`[server]` is [`common::BASE_CONFIG`]'s already) and check that it labels what they read.
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
    let server = Server::start_with_env(
        &(fast_delivery(3) + &destination("sink", &receiver.url("/"))),
        &[(NODE_ENV, "node-a")],
    )
    .await;
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
    // Every series is this node's, those read at scrape time (queue, DLQ) too.
    let unlabelled: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.labels.get("node") != Some("node-a"))
        .map(|s| (&s.metric, &s.labels))
        .collect();
    assert!(unlabelled.is_empty(), "not labelled node-a: {unlabelled:?}");
    // The JSON latency figures name their node too.
    let (_, perf) = server.api_get("/v1/perf", common::ADMIN_TOKEN).await;
    assert_eq!(perf["node"], "node-a", "{perf}");
    assert_eq!(
        value(&scrape, "herald_dlq_depth", &[("node", "node-a")]),
        Some(0.0)
    );
    server.stop().await;
}

/// `server.node_name`'s environment override.
const NODE_ENV: &str = "HERALD_SERVER_NODE_NAME";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_cold_reads_load_once() {
    let server = std::sync::Arc::new(Server::start("").await);
    let reads: Vec<_> = (0..64)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .api_get("/v1/preferences/zed@example.com", common::ADMIN_TOKEN)
                    .await
            })
        })
        .collect();
    for read in reads {
        let (status, prefs) = read.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(prefs["channels"], serde_json::json!({}));
    }
    let (_, stats) = server.api_get("/v1/cache/stats", common::ADMIN_TOKEN).await;
    assert_eq!(stats["loads"], 1, "{stats}");
    let (hits, misses, coalesced) = (
        stats["hits"].as_u64().unwrap(),
        stats["misses"].as_u64().unwrap(),
        stats["coalesced"].as_u64().unwrap(),
    );
    assert_eq!(hits + misses, 64, "each lookup counts once: {stats}");
    assert_eq!(
        coalesced,
        misses - 1,
        "every miss but the loader's waited for it: {stats}"
    );
    let Ok(server) = std::sync::Arc::try_unwrap(server) else {
        panic!("shared")
    };
    server.stop().await;
}

#[tokio::test]
async fn writes_invalidate_and_patterns_clear_the_cache() {
    let server = Server::start("").await;
    let path = "/v1/preferences/yan@example.com";
    server.api_get(path, common::ADMIN_TOKEN).await; // cached: no preferences
    let (status, _) = server
        .api_send(
            reqwest::Method::POST,
            &format!("{path}/opt-out"),
            Some(serde_json::json!({"channel": "sms"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, prefs) = server.api_get(path, common::ADMIN_TOKEN).await;
    assert_eq!(
        prefs["channels"]["sms"], false,
        "no stale read after a write"
    );

    let (status, body) = server
        .api_send(
            reqwest::Method::POST,
            "/v1/cache/invalidate",
            Some(serde_json::json!({"pattern": "prefs:*"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["invalidated"], 1, "{body}");
    let (_, cache) = server.api_get("/v1/cache/stats", common::ADMIN_TOKEN).await;
    assert_eq!(cache["entries"], 0);
    let (status, _) = server
        .api_send(
            reqwest::Method::POST,
            "/v1/cache/invalidate",
            Some(serde_json::json!({"pattern": ""})),
        )
        .await;
    assert_eq!(status, 400);
    server.stop().await;
}

/// Posts beacons the way `navigator.sendBeacon` does: text/plain, cross-origin.
async fn beacon(server: &Server, body: serde_json::Value) -> reqwest::Response {
    server
        .http
        .post(server.ingest_url("/vitals"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "https://shop.example")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn wait_alert(server: &Server, kind: &str, active: bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, alerts) = server.api_get("/v1/alerts", common::ADMIN_TOKEN).await;
        let found = alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == kind && a["resolved_at"].is_null() == active)
            .cloned();
        if let Some(alert) = found {
            return alert;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} alert (active: {active}): {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn vitals_budgets_and_their_alerts() {
    let server = Server::start("").await;
    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.ingest_url("/vitals"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );

    // Six slow LCPs on /checkout: over the 2500 ms budget.
    let slow: Vec<_> = (0..6)
        .map(|i| serde_json::json!({"name": "LCP", "value": 4000 + i, "id": format!("v4-slow-{i}"), "rating": "poor", "navigationType": "navigate", "page": "/checkout"}))
        .collect();
    let resp = beacon(&server, serde_json::Value::Array(slow)).await;
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let resp = beacon(&server, serde_json::json!({"name": "LCP", "value": "fast"})).await;
    assert_eq!(resp.status().as_u16(), 400, "malformed beacons are refused");

    let (_, perf) = server.api_get("/v1/perf", common::ADMIN_TOKEN).await;
    let vital = perf["vitals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["page"] == "/checkout")
        .cloned()
        .unwrap();
    assert_eq!(vital["metric"], "LCP");
    assert_eq!(vital["samples"], 6);
    assert!(vital["p75"].as_f64().unwrap() >= 4000.0);
    let lcp = perf["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["metric"] == "LCP")
        .cloned()
        .unwrap();
    assert_eq!(lcp["state"], "violated", "{lcp}");
    assert_eq!(lcp["p75_max"], 2500.0);

    let alert = wait_alert(&server, "budget_violated", true).await;
    assert!(
        alert["subject"].as_str().unwrap().contains("/checkout"),
        "{alert}"
    );
    // No node_name configured: the host name (never empty) names the node.
    assert!(
        alert["node"].as_str().is_some_and(|node| !node.is_empty()),
        "{alert}"
    );

    // Twenty fast page loads bring the p75 under budget: the alert resolves.
    let fast: Vec<_> = (0..20)
        .map(|i| serde_json::json!({"name": "LCP", "value": 900 + i, "id": format!("v4-fast-{i}"), "page": "/checkout"}))
        .collect();
    beacon(&server, serde_json::Value::Array(fast)).await;
    wait_alert(&server, "budget_violated", false).await;
    let (_, perf) = server.api_get("/v1/perf", common::ADMIN_TOKEN).await;
    let lcp = perf["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["metric"] == "LCP")
        .cloned()
        .unwrap();
    assert_eq!(lcp["state"], "ok", "{lcp}");
    assert!(
        perf["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["route"] == "GET /v1/perf"),
        "herald's own routes are measured: {perf}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_blocked_client_and_an_open_circuit_raise_alerts_delivered_to_ops() {
    let ops = Receiver::start().await;
    let down = Receiver::start().await;
    down.default_reply(common::receiver::Reply::status(500));
    let config = fast_delivery(50)
        + "[ingest]\nblock_after_invalid = 2\nblock_secs = 60\n"
        + "[circuit_breaker]\nfailure_threshold = 2\nopen_ms = 60000\n"
        + "[alerts]\ndestination = \"ops\"\n"
        + &format!(
            "[[destinations]]\nname = \"ops\"\nurl = \"{}\"\nsources = [\"std\"]\nsecret = \"{}\"\n",
            ops.url("/alerts"),
            common::STD_SECRET
        )
        + &destination("flaky", &down.url("/"));
    let server = Server::start_with_env(&config, &[(NODE_ENV, "node-b")]).await;

    let body = br#"{"type":"x"}"#;
    let mut bad = std_headers("evt_bad", now(), body);
    bad[2].1 = "v1,AAAA".into();
    for _ in 0..2 {
        server.post_webhook("std", &bad, body).await;
    }
    let alert = wait_alert(&server, "client_blocked", true).await;
    assert_eq!(alert["subject"], "127.0.0.1");
    assert_eq!(alert["node"], "node-b", "{alert}");

    // A published message fails twice at "flaky": its circuit opens.
    server
        .api_send(
            reqwest::Method::POST,
            "/v1/messages",
            Some(serde_json::json!({"event_type": "x", "payload": {}})),
        )
        .await;
    let alert = wait_alert(&server, "circuit_open", true).await;
    assert_eq!(alert["subject"], "flaky");
    let (_, active) = server
        .api_get("/v1/alerts?state=active", common::ADMIN_TOKEN)
        .await;
    let active = active["items"].as_array().unwrap();
    assert!(active.len() >= 2);
    assert!(active.iter().all(|a| a["node"] == "node-b"), "{active:?}");

    // Both transitions were delivered to the alerts destination as alert.<kind> messages,
    // each naming the node that raised it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let delivered: Vec<serde_json::Value> = ops
            .received()
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .collect();
        let kinds: Vec<&str> = delivered
            .iter()
            .map(|v| v["type"].as_str().unwrap_or_default())
            .collect();
        if kinds.contains(&"alert.client_blocked") && kinds.contains(&"alert.circuit_open") {
            assert!(
                delivered.iter().all(|v| v["alert"]["node"] == "node-b"),
                "{delivered:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alerts delivered so far: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn storage_reports_and_maintenance() {
    let server = Server::start("").await;
    for i in 0..3 {
        let body = format!(r#"{{"type":"s","recipient":"r{i}@example.com"}}"#);
        server
            .accept_std(&format!("evt_s{i}"), body.as_bytes())
            .await;
    }
    let (status, report) = server.api_get("/v1/storage", common::ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    let tables = report["stats"]["tables"].as_array().unwrap();
    let messages = tables.iter().find(|t| t["name"] == "messages").unwrap();
    assert_eq!(messages["entries"], 3);
    assert!(report["stats"]["file_bytes"].as_u64().unwrap() > 0);
    assert!(
        report["last_maintenance"].is_null(),
        "no maintenance has run yet, and reading the report runs none: {report}"
    );

    let resp = server
        .http
        .post(server.api_url("/v1/storage/maintenance"))
        .bearer_auth("test-reader-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403, "maintenance is admin only");
    let (status, done) = server
        .api_send(reqwest::Method::POST, "/v1/storage/maintenance", None)
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["indexes"].as_array().unwrap().len(), 5);
    assert!(
        done["compaction_note"].is_string(),
        "says why it did not compact online"
    );
    // From then on the report shows that run's findings.
    let (_, report) = server.api_get("/v1/storage", common::ADMIN_TOKEN).await;
    assert_eq!(report["last_maintenance"], done, "{report}");
    assert!(
        report["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["missing"] == 0 && i["extra"] == 0)
    );
    server.stop().await;
}

#[tokio::test]
async fn an_empty_budget_list_disables_budgets() {
    // `budgets = []` is documented to disable budgets; it used to bring the defaults back.
    let dir = tempfile::tempdir().unwrap();
    let text = format!("budgets = []\n{}", common::config_text(&dir, ""));
    let config = herald::config::load_from_str(&text, []).unwrap();
    assert!(config.budgets.is_empty());
    let running = herald::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let beacon = serde_json::json!({"name": "LCP", "value": 9000, "id": "v4-1", "rating": "poor", "navigationType": "navigate", "page": "/"});
    let resp = http
        .post(format!("http://{}/vitals", running.ingest_addr))
        .body(beacon.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let perf: serde_json::Value = http
        .get(format!("http://{}/v1/perf", running.api_addr))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(perf["budgets"], serde_json::json!([]), "{perf}");
    running.shutdown().await.unwrap();

    // Without the key, the three defaults apply.
    let server = Server::start("").await;
    let (_, perf) = server.api_get("/v1/perf", common::ADMIN_TOKEN).await;
    let metrics: Vec<&str> = perf["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["metric"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["LCP", "INP", "CLS"], "{perf}");
    server.stop().await;
}
