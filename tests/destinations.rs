//! The destinations API end to end: CRUD, validation, the SSRF guard at creation, secret
//! rotation with both signatures during the grace period, auto-recover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::receiver::{Receiver, Reply};
use common::{ADMIN_TOKEN, Server, destination, fast_delivery, std_headers_with};
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn create_read_update_delete() {
    let receiver = Receiver::start().await;
    let server = Server::start(&fast_delivery(3)).await;
    let create = json!({"name": "billing", "url": receiver.url("/b"), "sources": ["std"], "event_types": ["invoice.*"]});
    let (status, created) = server
        .api_send(Method::POST, "/v1/destinations", Some(create.clone()))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "billing");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["circuit"]["state"], "closed");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_"),
        "a secret is generated and shown once"
    );

    let (status, again) = server
        .api_send(Method::POST, "/v1/destinations", Some(create))
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    let (status, got) = server
        .api_get("/v1/destinations/billing", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert!(got.get("secret").is_none(), "GET never shows the secret");
    let (_, list) = server.api_get("/v1/destinations", ADMIN_TOKEN).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // It routes at once: an invoice goes there, a payment does not.
    let invoice = server
        .accept_std("evt_inv", br#"{"type":"invoice.paid"}"#)
        .await;
    let payment = server
        .accept_std("evt_pay", br#"{"type":"payment.ok"}"#)
        .await;
    server.wait_delivery(&invoice, "succeeded", WAIT).await;
    let got = receiver.wait_for(1, WAIT).await;
    let sig = std_headers_with(
        &secret,
        &invoice,
        got[0].headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap(),
        &got[0].body,
    );
    assert_eq!(
        got[0].headers["webhook-signature"].to_str().unwrap(),
        sig[2].1,
        "signed with the secret shown at creation"
    );
    let (_, msg) = server
        .api_get(&format!("/v1/messages/{payment}"), ADMIN_TOKEN)
        .await;
    assert!(msg["deliveries"].as_array().unwrap().is_empty());

    let (status, patched) = server
        .api_send(
            Method::PATCH,
            "/v1/destinations/billing",
            Some(json!({"event_types": ["payment.*"], "rate_limit_per_sec": 10})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["event_types"], json!(["payment.*"]));
    assert_eq!(patched["rate_limit_per_sec"], 10);
    let later = server
        .accept_std("evt_pay2", br#"{"type":"payment.ok"}"#)
        .await;
    server.wait_delivery(&later, "succeeded", WAIT).await;

    let (status, _) = server
        .api_send(Method::DELETE, "/v1/destinations/billing", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .api_get("/v1/destinations/billing", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .api_send(Method::DELETE, "/v1/destinations/billing", None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn bad_destinations_are_refused_naming_the_field() {
    let server = Server::start("").await; // allow_private_destinations = false
    let cases = [
        (
            json!({"name": "x", "url": "http://127.0.0.1:9000/"}),
            "destination_not_allowed",
        ),
        (
            json!({"name": "x", "url": "http://169.254.169.254/latest"}),
            "destination_not_allowed",
        ),
        (
            json!({"name": "x", "url": "http://[::ffff:10.0.0.1]/"}),
            "destination_not_allowed",
        ),
        (
            json!({"name": "x", "url": "http://2130706433/"}),
            "destination_not_allowed",
        ),
        (
            json!({"name": "x", "url": "ftp://example.com/"}),
            "destination_not_allowed",
        ),
        (
            json!({"name": "x", "url": "http://localhost/"}),
            "destination_not_allowed",
        ),
        (
            json!({"name": "Bad Name", "url": "http://example.com/"}),
            "invalid_request",
        ),
        (
            json!({"name": "x", "url": "http://example.com/", "channel": "pigeon"}),
            "invalid_request",
        ),
        (
            json!({"name": "x", "url": "http://example.com/", "sources": ["nope"]}),
            "invalid_request",
        ),
        (
            json!({"name": "x", "url": "http://example.com/", "secret": "plain"}),
            "invalid_request",
        ),
        (json!({"name": "x"}), "invalid_request"),
        (
            json!({"name": 5, "url": "http://example.com/"}),
            "invalid_request",
        ),
    ];
    for (body, code) in cases {
        let (status, json) = server
            .api_send(Method::POST, "/v1/destinations", Some(body.clone()))
            .await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (400, Some(code)),
            "{body} -> {json}"
        );
    }
    let resp = server
        .http
        .post(server.api_url("/v1/destinations"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (_, list) = server.api_get("/v1/destinations", ADMIN_TOKEN).await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "nothing was stored"
    );
    let status = server
        .http
        .post(server.api_url("/v1/destinations"))
        .bearer_auth("test-reader-token")
        .json(&json!({"name": "x", "url": "http://example.com/"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_grace_period() {
    let receiver = Receiver::start().await;
    let server = Server::start(&(fast_delivery(3) + &destination("rot", &receiver.url("/")))).await;
    let (status, rotated) = server
        .api_send(
            Method::POST,
            "/v1/destinations/rot/rotate-secret",
            Some(json!({"grace_secs": 3600})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(rotated["previous_secret_valid_until"].is_string());

    let id = server.accept_std("evt_rot", br#"{"type":"x"}"#).await;
    server.wait_delivery(&id, "succeeded", WAIT).await;
    let got = receiver.received();
    let ts: i64 = got[0].headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let header = got[0].headers["webhook-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let signatures: Vec<&str> = header.split(' ').collect();
    assert_eq!(signatures.len(), 2, "{header}");
    let with_new = std_headers_with(&new_secret, &id, ts, &got[0].body)[2]
        .1
        .clone();
    let with_old = std_headers_with(common::STD_SECRET, &id, ts, &got[0].body)[2]
        .1
        .clone();
    assert!(signatures.contains(&with_new.as_str()));
    assert!(signatures.contains(&with_old.as_str()));

    // With no grace, the secret it replaces stops at once; the first one's hour goes on.
    let (_, rotated) = server
        .api_send(
            Method::POST,
            "/v1/destinations/rot/rotate-secret",
            Some(json!({"grace_secs": 0})),
        )
        .await;
    let newest = rotated["secret"].as_str().unwrap().to_owned();
    let last = deliver_one(&server, &receiver, "evt_rot2").await;
    assert_eq!(
        signed_with(&last, &[&newest, &new_secret, common::STD_SECRET]),
        [newest.as_str(), common::STD_SECRET]
    );
    let (status, _) = server
        .api_send(Method::POST, "/v1/destinations/nope/rotate-secret", None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn dead_deliveries_are_recovered_when_the_circuit_closes() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::status(500));
    let config = fast_delivery(1)
        + "[circuit_breaker]\nfailure_threshold = 2\nopen_ms = 500\n"
        + &destination("recover", &receiver.url("/"));
    let server = Server::start(&config).await;
    let first = server.accept_std("evt_r1", br#"{"type":"x"}"#).await;
    let second = server.accept_std("evt_r2", br#"{"type":"x"}"#).await;
    server.wait_delivery(&first, "dead", WAIT).await;
    server.wait_delivery(&second, "dead", WAIT).await;

    // The receiver recovers; a new message is the half-open probe, and its success closes the
    // circuit, which re-queues the two dead ones.
    receiver.default_reply(Reply::status(200));
    let third = server.accept_std("evt_r3", br#"{"type":"x"}"#).await;
    server.wait_delivery(&third, "succeeded", WAIT).await;
    server.wait_delivery(&first, "succeeded", WAIT).await;
    server.wait_delivery(&second, "succeeded", WAIT).await;
    let (_, dlq) = server.api_get("/v1/dlq", ADMIN_TOKEN).await;
    assert!(dlq["items"].as_array().unwrap().is_empty());
    server.stop().await;
}

/// The secrets, among `candidates`, whose signatures `received` carries, in the header's order;
/// panics on a signature made with none of them.
fn signed_with<'a>(received: &common::receiver::Received, candidates: &[&'a str]) -> Vec<&'a str> {
    let id = received.headers["webhook-id"].to_str().unwrap();
    let ts: i64 = received.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    received.headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .map(|sig| {
            *candidates
                .iter()
                .find(|secret| std_headers_with(secret, id, ts, &received.body)[2].1 == sig)
                .unwrap_or_else(|| panic!("a signature by no known secret: {sig}"))
        })
        .collect()
}

/// Sends one webhook and returns the request the receiver got for it.
async fn deliver_one(
    server: &Server,
    receiver: &Receiver,
    external_id: &str,
) -> common::receiver::Received {
    let id = server.accept_std(external_id, br#"{"type":"x"}"#).await;
    server.wait_delivery(&id, "succeeded", WAIT).await;
    receiver
        .received()
        .into_iter()
        .rev()
        .find(|r| r.headers["webhook-id"] == id.as_str())
        .unwrap()
}

#[tokio::test]
async fn each_previous_secret_signs_until_its_own_grace_ends_then_stops() {
    let receiver = Receiver::start().await;
    let server = Server::start(&(fast_delivery(3) + &destination("rot", &receiver.url("/")))).await;
    let rotate = |grace: u64| {
        let server = &server;
        async move {
            let (status, rotated) = server
                .api_send(
                    Method::POST,
                    "/v1/destinations/rot/rotate-secret",
                    Some(json!({"grace_secs": grace})),
                )
                .await;
            assert_eq!(status, 200, "{rotated}");
            rotated
        }
    };
    let first = rotate(60).await; // the config secret signs for a minute more
    let second = rotate(1).await; // the first rotation's secret for one second
    let (b, c) = (
        first["secret"].as_str().unwrap().to_owned(),
        second["secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        second["previous_secrets_valid_until"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{second}"
    );
    let known = [c.as_str(), b.as_str(), common::STD_SECRET];
    let now = deliver_one(&server, &receiver, "evt_r1").await;
    assert_eq!(signed_with(&now, &known), known, "newest first, all three");

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = deliver_one(&server, &receiver, "evt_r2").await;
    assert_eq!(
        signed_with(&later, &known),
        [c.as_str(), common::STD_SECRET],
        "the one-second grace is over; the minute-long one is not cut short"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_config_destination_keeps_rotated_secrets_across_restarts_and_a_new_file_secret_rotates()
{
    let receiver = Receiver::start().await;
    let config = fast_delivery(3) + &destination("cfg", &receiver.url("/"));
    let server = Server::start(&config).await;
    let (status, rotated) = server
        .api_send(Method::POST, "/v1/destinations/cfg/rotate-secret", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let api = rotated["secret"].as_str().unwrap().to_owned();
    let dir = server.stop().await;

    // Same file: the API's rotation stands (the config secret only as its previous one).
    let server = Server::start_in(dir, &config).await;
    let known = [api.as_str(), common::STD_SECRET];
    let got = deliver_one(&server, &receiver, "evt_c1").await;
    assert_eq!(signed_with(&got, &known), known);
    let dir = server.stop().await;

    // A new secret in the file is a rotation to it: the stored one keeps signing for a day.
    let file_secret = format!("whsec_{}", common::b64(b"a-new-secret-written-in-the-file"));
    let changed = config.replace(common::STD_SECRET, &file_secret);
    let server = Server::start_in(dir, &changed).await;
    let known = [file_secret.as_str(), api.as_str(), common::STD_SECRET];
    let got = deliver_one(&server, &receiver, "evt_c2").await;
    assert_eq!(signed_with(&got, &known), known);
    let dir = server.stop().await;

    // And that rotation is not repeated by the next start on the same file.
    let server = Server::start_in(dir, &changed).await;
    let got = deliver_one(&server, &receiver, "evt_c3").await;
    assert_eq!(signed_with(&got, &known), known);
    server.stop().await;
}

#[tokio::test]
async fn a_destinations_own_max_attempts_and_headers_from_the_config_apply() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::status(500));
    // [delivery] allows 5 attempts; this destination only 2, and it adds a header.
    let config = fast_delivery(5)
        + &destination("own", &receiver.url("/"))
        + "max_attempts = 2\nbackoff_base_ms = 10\nheaders = { \"X-Team\" = \"orders\" }\n";
    let server = Server::start(&config).await;
    let id = server.accept_std("evt_own", br#"{"type":"x"}"#).await;
    let msg = server.wait_delivery(&id, "dead", WAIT).await;
    assert_eq!(
        msg["deliveries"][0]["attempts"].as_array().unwrap().len(),
        2,
        "{msg}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "no third attempt");
    assert!(got.iter().all(|r| r.headers["x-team"] == "orders"));
    let (status, dlq) = server.api_get("/v1/dlq?destination=own", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(dlq["items"].as_array().unwrap().len(), 1, "{dlq}");
    let (_, shown) = server.api_get("/v1/destinations/own", ADMIN_TOKEN).await;
    assert_eq!(shown["max_attempts"], 2, "{shown}");
    assert_eq!(shown["headers"]["x-team"], "orders", "{shown}");
    server.stop().await;
}

#[tokio::test]
async fn a_policy_set_through_the_api_applies_and_bad_values_are_refused() {
    let receiver = Receiver::start().await;
    let server = Server::start(&fast_delivery(5)).await;
    let (status, created) = server
        .api_send(
            Method::POST,
            "/v1/destinations",
            Some(json!({
                "name": "api", "url": receiver.url("/"),
                "timeout_ms": 1500, "max_attempts": 3,
                "headers": {"X-Tenant": "acme", "Authorization": "Bearer t0ken"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["timeout_ms"], 1500);
    assert_eq!(created["headers"]["x-tenant"], "acme");
    let id = server.accept_std("evt_api", br#"{"type":"x"}"#).await;
    server.wait_delivery(&id, "succeeded", WAIT).await;
    let got = receiver.received();
    assert_eq!(got[0].headers["x-tenant"], "acme");
    assert_eq!(got[0].headers["authorization"], "Bearer t0ken");
    assert!(
        got[0].headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );

    // PATCH: `null` removes an override, `headers` replaces them all.
    let (status, patched) = server
        .api_send(
            Method::PATCH,
            "/v1/destinations/api",
            Some(json!({"max_attempts": null, "headers": {"x-other": "1"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert!(patched["max_attempts"].is_null(), "{patched}");
    assert_eq!(patched["headers"], json!({"x-other": "1"}));

    let refused = [
        (
            json!({"headers": {"Webhook-Id": "forged"}}),
            "headers.Webhook-Id",
        ),
        (
            json!({"headers": {"content-type": "text/plain"}}),
            "headers.content-type",
        ),
        (json!({"headers": {"host": "elsewhere"}}), "headers.host"),
        (
            json!({"headers": {"content-length": "1"}}),
            "headers.content-length",
        ),
        (json!({"headers": {"bad name": "x"}}), "headers.bad name"),
        (json!({"headers": {"x-a": "line\r\nbreak"}}), "headers.x-a"),
        (json!({"max_attempts": 0}), "max_attempts"),
        (json!({"timeout_ms": 0}), "timeout_ms"),
        (json!({"timeout_ms": -5}), "timeout_ms"),
        (json!({"backoff_base_ms": 0}), "backoff_base_ms"),
        (
            json!({"backoff_max_ms": 500, "backoff_base_ms": 1000}),
            "backoff_base_ms",
        ),
    ];
    for (body, field) in refused {
        for (method, path) in [
            (Method::PATCH, "/v1/destinations/api".to_owned()),
            (Method::POST, "/v1/destinations".to_owned()),
        ] {
            let mut body = body.clone();
            if method == Method::POST {
                body["name"] = json!("other");
                body["url"] = json!(receiver.url("/"));
            }
            let (status, error) = server
                .api_send(method.clone(), &path, Some(body.clone()))
                .await;
            assert_eq!(status, 400, "{method} {body}: {error}");
            assert_eq!(error["error"]["code"], "invalid_request");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(field), "{body}: {message}");
        }
    }
    // Nothing refused was stored.
    let (_, shown) = server.api_get("/v1/destinations/api", ADMIN_TOKEN).await;
    assert_eq!(shown["headers"], json!({"x-other": "1"}), "{shown}");
    assert_eq!(shown["timeout_ms"], 1500);
    let (status, _) = server.api_get("/v1/destinations/other", ADMIN_TOKEN).await;
    assert_eq!(status, 404);
    server.stop().await;
}
