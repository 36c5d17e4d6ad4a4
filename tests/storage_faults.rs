//! Storage faults end to end: herald over a store whose writes fail on cue (a full disk), and
//! over a data file removed under it. Attempts are counted at a real receiver: while commits
//! fail, a delivery is not sent again (before, one message was sent hundreds of times a
//! second); herald reopens the store by itself and is ready again without a restart;
//! meanwhile `/readyz` answers 503, ingest 503 `unavailable`, and the `storage_unavailable`
//! alert is open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::receiver::{Receiver, Reply};
use common::{ADMIN_TOKEN, Server, destination, fast_delivery, now, std_headers};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

async fn ready(server: &Server) -> u16 {
    server
        .http
        .get(server.api_url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn storage_alert(server: &Server) -> Option<Value> {
    let (status, alerts) = server.api_get("/v1/alerts", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{alerts}");
    alerts["items"]
        .as_array()
        .or_else(|| alerts.as_array())
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "storage_unavailable")
        .cloned()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts one webhook; returns the status and body.
async fn ingest(server: &Server, id: &str) -> (u16, Value) {
    let body = br#"{"type":"t"}"#;
    server
        .post_webhook("std", &std_headers(id, now(), body), body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_commits_send_nothing_twice_and_herald_recovers_by_itself() {
    let receiver = Receiver::start().await;
    // The receiver fails every attempt: each outcome is a retry after at most 200 ms, so a
    // delivery whose outcome was lost would be sent again within a scan or two.
    receiver.default_reply(Reply::status(500));
    // A breaker that never opens here, so nothing but herald's handling of the fault holds
    // the retries back.
    let config = fast_delivery(100)
        + "[circuit_breaker]\nfailure_threshold = 1000000\n"
        + &destination("d", &receiver.url("/"));
    let (server, switch) = Server::start_switched(&config).await;
    let (status, accepted) = ingest(&server, "evt_1").await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    receiver.wait_for(3, WAIT).await; // retrying, every 200 ms at most

    switch.fail_writes(true);
    let failing_since = receiver.received().len();
    eventually("readyz 503", || async { ready(&server).await == 503 }).await;
    let (status, refused) = ingest(&server, "evt_2").await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "unavailable");
    eventually("the storage_unavailable alert opens", || async {
        storage_alert(&server)
            .await
            .is_some_and(|a| a["resolved_at"].is_null())
    })
    .await;
    // Three seconds of failing commits: at most the attempt in flight when they began.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = receiver.received().len() - failing_since;
    println!("attempts during 3 s of failing commits: {during} (one delivery, backoff ≤ 200 ms)");
    assert!(
        during <= 1,
        "{during} attempts while no outcome could be recorded"
    );

    switch.fail_writes(false);
    eventually("readyz 200 again without a restart", || async {
        ready(&server).await == 200
    })
    .await;
    eventually("the alert resolves", || async {
        storage_alert(&server)
            .await
            .is_some_and(|a| a["resolved_at"].is_string())
    })
    .await;
    let (status, accepted) = ingest(&server, "evt_3").await;
    assert_eq!(status, 202, "{accepted}");
    // Delivery resumes, and the attempts made before and during the fault are on record.
    receiver.default_reply(Reply::status(200));
    let msg = server.wait_delivery(&id, "succeeded", WAIT).await;
    let attempts = msg["deliveries"][0]["attempts"].as_array().unwrap().len();
    assert_eq!(
        attempts,
        receiver
            .received()
            .iter()
            .filter(|r| r.headers["webhook-id"] == id.as_str())
            .count(),
        "every attempt the receiver saw is recorded, none twice: {msg}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_file_removed_under_herald_stops_acknowledging() {
    let receiver = Receiver::start().await;
    let server = Server::start(&(fast_delivery(3) + &destination("d", &receiver.url("/")))).await;
    let (status, _) = ingest(&server, "evt_kept").await;
    assert_eq!(status, 202);
    let file = server.dir.path().join("herald.redb");
    std::fs::remove_file(&file).unwrap();

    eventually("readyz 503", || async { ready(&server).await == 503 }).await;
    let (status, refused) = ingest(&server, "evt_lost").await;
    assert_eq!(
        status, 503,
        "never a 202 into a file nobody will open: {refused}"
    );
    assert_eq!(refused["error"]["code"], "unavailable");
    let alert = storage_alert(&server).await.expect("storage_unavailable");
    assert!(
        alert["detail"].as_str().unwrap().contains("removed"),
        "{alert}"
    );
    assert!(!file.exists(), "no empty database created in its place");
    server.stop().await;
}
