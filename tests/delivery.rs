//! Delivery end to end: a real receiver on 127.0.0.1, a real server, real redb.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::receiver::{Receiver, Reply};
use common::{ADMIN_TOKEN, STD_SECRET, Server, destination, fast_delivery};
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn verify_signature(received: &common::receiver::Received, secret: &str) -> bool {
    let id = received.headers["webhook-id"].to_str().unwrap();
    let ts: i64 = received.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = common::std_headers_with(secret, id, ts, &received.body)[2]
        .1
        .clone();
    received.headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .any(|sig| sig == expected)
}

#[tokio::test]
async fn a_webhook_reaches_its_destination_signed_and_byte_for_byte() {
    let receiver = Receiver::start().await;
    let server =
        Server::start(&(fast_delivery(5) + &destination("orders", &receiver.url("/hooks")))).await;
    let body = br#"{"type":"payment.succeeded","id":"evt_1",  "amount":42}"#;
    let id = server.accept_std("evt_1", body).await;

    let got = receiver.wait_for(1, WAIT).await;
    let request = &got[0];
    assert_eq!(request.path, "/hooks");
    assert_eq!(
        &request.body[..],
        &body[..],
        "the original bytes, untouched"
    );
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(
        request.headers["webhook-id"],
        id.as_str(),
        "webhook-id is the message id"
    );
    assert!(
        verify_signature(request, STD_SECRET),
        "signed with the destination's secret"
    );

    let msg = server.wait_delivery(&id, "succeeded", WAIT).await;
    let attempts = msg["deliveries"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status_code"], 200);
    server.stop().await;
}

#[tokio::test]
async fn failures_are_retried_with_the_same_webhook_id_until_success() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(500), Reply::status(503), Reply::status(502)]);
    let server =
        Server::start(&(fast_delivery(5) + &destination("flaky", &receiver.url("/")))).await;
    let id = server.accept_std("evt_retry", br#"{"type":"x"}"#).await;

    let msg = server.wait_delivery(&id, "succeeded", WAIT).await;
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| r.headers["webhook-id"] == id.as_str()));
    let codes: Vec<_> = msg["deliveries"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 503, 502, 200]);
    server.stop().await;
}

#[tokio::test]
async fn redirects_are_failures_and_never_followed() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::status(302).with_header("location", "/elsewhere"));
    let server =
        Server::start(&(fast_delivery(2) + &destination("moved", &receiver.url("/hooks")))).await;
    let id = server.accept_std("evt_redirect", br#"{"type":"x"}"#).await;
    server.wait_delivery(&id, "dead", WAIT).await;
    let got = receiver.received();
    assert_eq!(
        got.len(),
        2,
        "two attempts, no extra request for the redirect"
    );
    assert!(
        got.iter().all(|r| r.path == "/hooks"),
        "the Location was never visited"
    );
    server.stop().await;
}

#[tokio::test]
async fn dead_deliveries_land_in_the_dlq_and_can_be_retried() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::status(500));
    let config = fast_delivery(2)
        + "[circuit_breaker]\nfailure_threshold = 100\n"
        + &destination("down", &receiver.url("/"));
    let server = Server::start(&config).await;
    let first = server.accept_std("evt_dead_1", br#"{"type":"x"}"#).await;
    let second = server.accept_std("evt_dead_2", br#"{"type":"x"}"#).await;
    server.wait_delivery(&first, "dead", WAIT).await;
    server.wait_delivery(&second, "dead", WAIT).await;

    let (status, dlq) = server
        .api_get("/v1/dlq?destination=down", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    let items = dlq["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let dlq_id = format!("{first}.down");
    let (status, one) = server
        .api_get(&format!("/v1/dlq/{dlq_id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(one["attempts"][0]["status_code"], 500);

    // The receiver recovers; retry one, then the rest in bulk.
    receiver.default_reply(Reply::status(200));
    let (status, _) = server
        .api_send(Method::POST, &format!("/v1/dlq/{dlq_id}/retry"), None)
        .await;
    assert_eq!(status, 200);
    let msg = server.wait_delivery(&first, "succeeded", WAIT).await;
    assert_eq!(
        msg["deliveries"][0]["attempts"].as_array().unwrap().len(),
        3,
        "history kept"
    );
    let (status, again) = server
        .api_send(Method::POST, &format!("/v1/dlq/{dlq_id}/retry"), None)
        .await;
    assert_eq!(status, 404, "no longer dead: {again}");

    let (status, bulk) = server
        .api_send(
            Method::POST,
            "/v1/dlq/retry",
            Some(json!({"destination": "down"})),
        )
        .await;
    assert_eq!((status, bulk["requeued"].as_u64()), (200, Some(1)));
    server.wait_delivery(&second, "succeeded", WAIT).await;
    let (_, dlq) = server.api_get("/v1/dlq", ADMIN_TOKEN).await;
    assert!(dlq["items"].as_array().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_dlq_entry_can_be_discarded() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::status(500));
    let server =
        Server::start(&(fast_delivery(1) + &destination("down", &receiver.url("/")))).await;
    let id = server.accept_std("evt_discard", br#"{"type":"x"}"#).await;
    server.wait_delivery(&id, "dead", WAIT).await;
    let dlq_id = format!("{id}.down");
    let (status, _) = server
        .api_send(Method::DELETE, &format!("/v1/dlq/{dlq_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .api_get(&format!("/v1/dlq/{dlq_id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .api_send(Method::DELETE, &format!("/v1/dlq/{dlq_id}"), None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn gone_disables_the_destination_and_deliveries_wait() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(410)]);
    let server =
        Server::start(&(fast_delivery(3) + &destination("gone", &receiver.url("/")))).await;
    let id = server.accept_std("evt_gone", br#"{"type":"x"}"#).await;
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (_, dest) = server.api_get("/v1/destinations/gone", ADMIN_TOKEN).await;
    assert_eq!(dest["enabled"], false, "{dest}");
    let (_, msg) = server
        .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(
        msg["deliveries"][0]["status"], "pending",
        "waits, does not die: {msg}"
    );
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing is sent to a disabled destination"
    );
    let (_, alerts) = server.api_get("/v1/alerts?state=active", ADMIN_TOKEN).await;
    let gone = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "destination_disabled")
        .map(|a| a["subject"].clone());
    assert_eq!(gone, Some(json!("gone")), "an alert is raised: {alerts}");

    let (status, _) = server
        .api_send(
            Method::PATCH,
            "/v1/destinations/gone",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    server.wait_delivery(&id, "succeeded", WAIT).await;
    let (_, alerts) = server.api_get("/v1/alerts?state=active", ADMIN_TOKEN).await;
    assert!(
        !alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "destination_disabled"),
        "re-enabling resolves it: {alerts}"
    );
    server.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(429).with_header("retry-after", "1")]);
    // Retry-After is clamped to backoff_max_ms: give it room.
    let config = "[delivery]\nallow_private_destinations = true\nbackoff_base_ms = 20\nbackoff_max_ms = 5000\n";
    let server =
        Server::start(&(config.to_owned() + &destination("busy", &receiver.url("/")))).await;
    let id = server.accept_std("evt_busy", br#"{"type":"x"}"#).await;
    server.wait_delivery(&id, "succeeded", WAIT).await;
    let got = receiver.received();
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "retried after {gap:?}, not after Retry-After: 1"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_circuit_opens_holds_deliveries_without_spending_attempts_then_closes() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::status(500));
    let config = fast_delivery(50)
        + "[circuit_breaker]\nfailure_threshold = 3\nopen_ms = 1000\n"
        + &destination("breaker", &receiver.url("/"));
    let server = Server::start(&config).await;
    let id = server.accept_std("evt_breaker", br#"{"type":"x"}"#).await;
    receiver.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (_, dest) = server
        .api_get("/v1/destinations/breaker", ADMIN_TOKEN)
        .await;
    assert_eq!(dest["circuit"]["state"], "open", "{dest}");
    assert_eq!(dest["circuit"]["consecutive_failures"], 3);
    assert!(dest["circuit"]["opened_at"].is_string());
    assert_eq!(
        receiver.received().len(),
        3,
        "nothing is sent while the circuit is open"
    );

    // After open_ms one probe goes out; it succeeds and closes the circuit.
    receiver.default_reply(Reply::status(200));
    let msg = server.wait_delivery(&id, "succeeded", WAIT).await;
    assert_eq!(
        msg["deliveries"][0]["attempts"].as_array().unwrap().len(),
        4
    );
    let got = receiver.received();
    assert!(
        got[3].at - got[2].at >= Duration::from_millis(900),
        "the probe waited for open_ms"
    );
    let (_, dest) = server
        .api_get("/v1/destinations/breaker", ADMIN_TOKEN)
        .await;
    assert_eq!(dest["circuit"]["state"], "closed");
    server.stop().await;
}

#[tokio::test]
async fn published_messages_go_to_star_destinations() {
    let receiver = Receiver::start().await;
    let only_std = format!(
        "[[destinations]]\nname = \"std-only\"\nurl = \"{}\"\nsources = [\"std\"]\nsecret = \"{STD_SECRET}\"\n",
        receiver.url("/std-only")
    );
    let config = fast_delivery(3) + &destination("all", &receiver.url("/all")) + &only_std;
    let server = Server::start(&config).await;
    let publish =
        json!({"event_type": "user.created", "payload": {"user": 7}, "idempotency_key": "k1"});
    let (status, first) = server
        .api_send(Method::POST, "/v1/messages", Some(publish.clone()))
        .await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    let msg = server.wait_delivery(&id, "succeeded", WAIT).await;
    assert_eq!(
        msg["deliveries"].as_array().unwrap().len(),
        1,
        "only the * destination: {msg}"
    );
    let got = receiver.received();
    assert_eq!(got[0].path, "/all");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got[0].body).unwrap(),
        json!({"user": 7})
    );

    let (status, again) = server
        .api_send(Method::POST, "/v1/messages", Some(publish))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        again["id"], first["id"],
        "the idempotency key names the first message"
    );
    assert_eq!(again["duplicate"], true);

    let (status, bad) = server
        .api_send(Method::POST, "/v1/messages", Some(json!({"payload": {}})))
        .await;
    assert_eq!(status, 400);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event_type"),
        "{bad}"
    );
    let status = server
        .http
        .post(server.api_url("/v1/messages"))
        .bearer_auth("test-reader-token")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403, "publishing needs the publish scope");
    server.stop().await;
}
