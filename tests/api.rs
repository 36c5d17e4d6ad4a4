//! The API port's base: authentication, scopes, the error body, message listing and lookup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Server, now, signed};

async fn accept(server: &Server, source: &str, id: &str, event_type: &str) -> String {
    let body = format!(r#"{{"id":"{id}","type":"{event_type}"}}"#).into_bytes();
    let (status, json) = server
        .post_webhook(source, &signed(source, id, now(), &body), &body)
        .await;
    assert_eq!(status, 202, "{json}");
    json["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_and_scopes() {
    let server = Server::start("").await;
    let resp = server
        .http
        .get(server.api_url("/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "unauthorized");
    assert!(json["error"]["message"].is_string());

    assert_eq!(server.api_get("/v1/messages", "wrong-token").await.0, 401);
    assert_eq!(
        server.api_get("/v1/messages", "test-reader-token").await.0,
        200
    );
    assert_eq!(server.api_get("/v1/messages", ADMIN_TOKEN).await.0, 200);
    let (status, json) = server.api_get("/v1/messages", "test-publisher-token").await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // Probes need no token.
    for path in ["/healthz", "/readyz"] {
        let resp = server.http.get(server.api_url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let (status, json) = server.api_get("/v1/nothing-here", ADMIN_TOKEN).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    server.stop().await;
}

#[tokio::test]
async fn messages_list_filters_and_paginates() {
    let server = Server::start(
        r#"
[delivery]
max_attempts = 1
allow_private_destinations = true

[[destinations]]
name = "payments-only"
url = "http://127.0.0.1:9/hooks"
sources = ["std"]
event_types = ["payment.*"]
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(accept(&server, "std", &format!("p{i}"), "payment.succeeded").await);
    }
    let github = accept(&server, "github", "g1", "ignored").await;
    let refund = accept(&server, "std", "r1", "refund.created").await;

    // Pages of 3, newest first, each message once.
    let mut seen = Vec::new();
    let mut path = "/v1/messages?limit=3".to_owned();
    loop {
        let (status, page) = server.api_get(&path, ADMIN_TOKEN).await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/messages?limit=3&after={next}"),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.push(github.clone());
    expected.push(refund.clone());
    expected.reverse();
    assert_eq!(seen, expected);

    let (_, by_source) = server
        .api_get("/v1/messages?source=github", ADMIN_TOKEN)
        .await;
    let items = by_source["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], github.as_str());
    assert_eq!(
        items[0]["event_type"], "push",
        "GitHub's type comes from X-GitHub-Event"
    );

    let (_, by_type) = server
        .api_get("/v1/messages?event_type=refund.created", ADMIN_TOKEN)
        .await;
    assert_eq!(by_type["items"][0]["id"], refund.as_str());

    // Fan-out: only payment.* from std got a delivery. Nothing listens on its port, so with
    // one attempt each dies.
    for id in &ids {
        server
            .wait_delivery(id, "dead", std::time::Duration::from_secs(10))
            .await;
    }
    let (_, dead) = server
        .api_get("/v1/messages?status=dead", ADMIN_TOKEN)
        .await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 5);
    let (_, pending) = server
        .api_get("/v1/messages?status=pending", ADMIN_TOKEN)
        .await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 0);
    let (_, one) = server
        .api_get(&format!("/v1/messages/{}", ids[0]), ADMIN_TOKEN)
        .await;
    assert_eq!(one["deliveries"][0]["destination"], "payments-only");
    let error = one["deliveries"][0]["attempts"][0]["error"]
        .as_str()
        .unwrap();
    assert!(
        error.to_lowercase().contains("refused"),
        "the failure is recorded: {error}"
    );
    assert!(one["received_at"].as_str().unwrap().ends_with('Z'));
    let (_, none) = server
        .api_get(&format!("/v1/messages/{refund}"), ADMIN_TOKEN)
        .await;
    assert_eq!(none["deliveries"].as_array().unwrap().len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn bad_parameters_and_unknown_ids() {
    let server = Server::start("").await;
    for (path, field) in [
        ("/v1/messages?limit=0", "limit"),
        ("/v1/messages?limit=lots", "limit"),
        ("/v1/messages?status=finished", "status"),
        ("/v1/messages?after=garbage", "after"),
    ] {
        let (status, json) = server.api_get(path, ADMIN_TOKEN).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(json["error"]["code"], "invalid_request");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{json}"
        );
    }
    for id in ["msg_01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope", "msg_"] {
        let (status, json) = server
            .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
            .await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{id}"
        );
    }
    let (status, _) = server.api_get("/v1/messages?limit=5000", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "an over-large limit is capped, not refused");
    server.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_matches_in_any_case() {
    let server = Server::start("").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = server
            .http
            .get(server.api_url("/v1/messages"))
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{scheme}");
    }
    let resp = server
        .http
        .get(server.api_url("/v1/messages"))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    server.stop().await;
}

#[tokio::test]
async fn times_with_any_offset_are_accepted_and_shown_in_utc() {
    let server = Server::start("").await;
    let (status, created) = server
        .api_send(
            reqwest::Method::POST,
            "/v1/suppressions",
            Some(serde_json::json!({
                "recipient": "offset@example.com",
                "channel": "email",
                "reason": "user_request",
                "expires_at": "2099-01-01T06:30:00+05:30",
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["expires_at"], "2099-01-01T01:00:00.000Z",
        "{created}"
    );

    for since in ["2026-12-01T10:30:00+01:00", "2026-12-01T04:00:00.5-05:30"] {
        let (status, json) = server
            .api_get(
                &format!("/v1/dlq?since={}", since.replace('+', "%2B")),
                ADMIN_TOKEN,
            )
            .await;
        assert_eq!(status, 200, "{since}: {json}");
        let (status, json) = server
            .api_send(
                reqwest::Method::POST,
                "/v1/dlq/retry",
                Some(serde_json::json!({"since": since})),
            )
            .await;
        assert_eq!(status, 200, "{since}: {json}");
    }
    let (status, json) = server
        .api_send(
            reqwest::Method::POST,
            "/v1/dlq/retry",
            Some(serde_json::json!({"since": "2026-12-01T10:30:00+0100"})),
        )
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        json["error"]["message"].as_str().unwrap().contains("since"),
        "{json}"
    );
    server.stop().await;
}
