//! Isolation between destinations end to end: five destinations whose receivers take seconds to
//! answer, each with a backlog of 200 messages, must not delay a healthy destination's new
//! messages. (Sharing the in-flight slots first come, first served, the healthy destination
//! waited for the slow receivers' attempts: seconds per message.) The bound here is generous, a
//! regression check; the figure comes from `herald-bench isolation`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{STD_SECRET, Server};
use reqwest::Method;
use serde_json::json;

const SLOW_DESTINATIONS: usize = 5;
const BACKLOG: usize = 200;
/// How long a slow receiver takes to answer: longer than the bound below, so that waiting for
/// even one of its attempts fails the test.
const SLOW_REPLY: Duration = Duration::from_secs(6);
/// A healthy delivery normally takes milliseconds.
const BOUND: Duration = Duration::from_secs(2);

/// A receiver that answers 200 after `delay`, counting the requests it got.
async fn slow_receiver(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, count)
}

fn destination(name: &str, url: &str, event_type: &str) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nsources = [\"*\"]\nevent_types = [\"{event_type}\"]\nsecret = \"{STD_SECRET}\"\n"
    )
}

async fn publish(server: &Server, event_type: &str) -> String {
    let (status, body) = server
        .api_send(
            Method::POST,
            "/v1/messages",
            Some(json!({"event_type": event_type, "payload": {"n": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backlogged_destinations_do_not_delay_a_healthy_one() {
    let mut config = "[delivery]\nallow_private_destinations = true\ntimeout_ms = 30000\n\
                      backoff_base_ms = 100\nbackoff_max_ms = 1000\n"
        .to_owned();
    let mut slow = Vec::new();
    for i in 0..SLOW_DESTINATIONS {
        let (url, count) = slow_receiver(SLOW_REPLY).await;
        config += &destination(&format!("slow{i}"), &url, "slow.*");
        slow.push(count);
    }
    let healthy = Receiver::start().await;
    config += &destination("healthy", &healthy.url("/"), "healthy.*");
    let server = Server::start(&config).await;

    // Every slow message goes to all five slow destinations: 200 queued for each.
    for _ in 0..BACKLOG {
        publish(&server, "slow.tick").await;
    }
    // Wait until the slow destinations hold their slots, as in production.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.iter().map(|c| c.load(Ordering::SeqCst)).sum::<usize>() < 150 {
        assert!(
            Instant::now() < deadline,
            "the slow receivers got no attempts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for n in 1..=5 {
        let sent = Instant::now();
        let id = publish(&server, "healthy.ping").await;
        loop {
            let arrived = healthy
                .received()
                .iter()
                .any(|r| r.headers["webhook-id"] == id.as_str());
            if arrived {
                break;
            }
            assert!(
                sent.elapsed() < BOUND,
                "healthy message {n} not delivered within {BOUND:?} while slow destinations are busy"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // The slow destinations kept working meanwhile (isolation is not starvation).
    assert!(slow.iter().all(|c| c.load(Ordering::SeqCst) > 0));
    server.stop().await;
}
