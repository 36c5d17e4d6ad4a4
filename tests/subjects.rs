//! Suppressions, preferences, the audit trail and GDPR, end to end through real delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use common::{ADMIN_TOKEN, STD_SECRET, Server, fast_delivery, now, std_headers};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Destinations for the email and sms channels, both at `receiver`, plus a writer token.
fn config(receiver: &Receiver) -> String {
    let dest = |name: &str, channel: &str| {
        format!(
            "[[destinations]]\nname = \"{name}\"\nurl = \"{}\"\nsources = [\"*\"]\nchannel = \"{channel}\"\nsecret = \"{STD_SECRET}\"\n",
            receiver.url(&format!("/{name}"))
        )
    };
    fast_delivery(3)
        + &dest("mailer", "email")
        + &dest("texter", "sms")
        + "[[api.tokens]]\nname = \"support-bot\"\ntoken = \"test-writer-token\"\nscopes = [\"read\", \"write\"]\n"
}

async fn publish(server: &Server, recipient: &str, category: Option<&str>) -> String {
    let mut body =
        json!({"event_type": "notice.sent", "payload": {"to": recipient}, "recipient": recipient});
    if let Some(category) = category {
        body["category"] = category.into();
    }
    let (status, json) = server
        .api_send(Method::POST, "/v1/messages", Some(body))
        .await;
    assert_eq!(status, 202, "{json}");
    json["id"].as_str().unwrap().to_owned()
}

/// Waits until every delivery of `id` is final; returns destination → (status, reason).
async fn outcome(server: &Server, id: &str) -> std::collections::BTreeMap<String, (String, Value)> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, msg) = server
            .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
            .await;
        let deliveries = msg["deliveries"].as_array().cloned().unwrap_or_default();
        if !deliveries.is_empty()
            && deliveries
                .iter()
                .all(|d| d["status"] == "succeeded" || d["status"] == "suppressed")
        {
            return deliveries
                .iter()
                .map(|d| {
                    (
                        d["destination"].as_str().unwrap().to_owned(),
                        (
                            d["status"].as_str().unwrap().to_owned(),
                            d["reason"].clone(),
                        ),
                    )
                })
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not final: {msg}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn paths(receiver: &Receiver, id: &str) -> Vec<String> {
    receiver
        .received()
        .iter()
        .filter(|r| r.headers["webhook-id"] == id)
        .map(|r| r.path.clone())
        .collect()
}

#[tokio::test]
async fn a_suppressed_recipient_is_never_contacted_on_that_channel() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let (status, created) = server
        .api_send(
            Method::POST,
            "/v1/suppressions",
            Some(json!({"recipient": "ann@example.com", "channel": "email", "reason": "bounce", "note": "hard bounce"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created_by"], "admin");

    let id = publish(&server, "ann@example.com", None).await;
    let result = outcome(&server, &id).await;
    assert_eq!(result["mailer"].0, "suppressed");
    assert!(
        result["mailer"].1.as_str().unwrap().contains("bounce"),
        "{result:?}"
    );
    assert_eq!(
        result["texter"].0, "succeeded",
        "other channels are untouched"
    );
    assert_eq!(
        paths(&receiver, &id),
        ["/texter"],
        "the email receiver never saw it"
    );

    // `*` suppresses every channel; deleting it lifts it.
    server
        .api_send(
            Method::POST,
            "/v1/suppressions",
            Some(json!({"recipient": "bob@example.com", "channel": "*", "reason": "complaint"})),
        )
        .await;
    let id = publish(&server, "bob@example.com", None).await;
    let result = outcome(&server, &id).await;
    assert!(
        result.values().all(|(status, _)| status == "suppressed"),
        "{result:?}"
    );
    assert!(paths(&receiver, &id).is_empty());
    let (status, _) = server
        .api_send(Method::DELETE, "/v1/suppressions/bob%40example.com/*", None)
        .await;
    assert_eq!(status, 204);
    let id = publish(&server, "bob@example.com", None).await;
    assert!(
        outcome(&server, &id)
            .await
            .values()
            .all(|(s, _)| s == "succeeded")
    );

    let (_, list) = server
        .api_get("/v1/suppressions?recipient=ann@example.com", ADMIN_TOKEN)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["reason"], "bounce");
    let (status, _) = server
        .api_send(Method::DELETE, "/v1/suppressions/nobody/email", None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn expired_suppressions_stop_applying_at_once() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let soon =
        humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_millis(1500))
            .to_string();
    server
        .api_send(Method::POST, "/v1/suppressions", Some(json!({"recipient": "cy@example.com", "channel": "email", "reason": "user_request", "expires_at": soon})))
        .await;
    let before = publish(&server, "cy@example.com", None).await;
    assert_eq!(outcome(&server, &before).await["mailer"].0, "suppressed");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let after = publish(&server, "cy@example.com", None).await;
    assert_eq!(outcome(&server, &after).await["mailer"].0, "succeeded");
    server.stop().await;
}

#[tokio::test]
async fn preferences_by_channel_and_category() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let (status, prefs) = server
        .api_get("/v1/preferences/dee@example.com", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        prefs["channels"],
        json!({}),
        "opted in to everything by default"
    );

    let (status, prefs) = server
        .api_send(
            Method::POST,
            "/v1/preferences/dee@example.com/opt-out",
            Some(json!({"channel": "email", "category": "marketing"})),
        )
        .await;
    assert_eq!(status, 200, "{prefs}");
    assert_eq!(prefs["categories"]["marketing"]["email"], false);

    let marketing = publish(&server, "dee@example.com", Some("marketing")).await;
    let billing = publish(&server, "dee@example.com", Some("billing")).await;
    let m = outcome(&server, &marketing).await;
    assert_eq!(
        (m["mailer"].0.as_str(), m["texter"].0.as_str()),
        ("suppressed", "succeeded")
    );
    assert_eq!(outcome(&server, &billing).await["mailer"].0, "succeeded");

    server
        .api_send(
            Method::POST,
            "/v1/preferences/dee@example.com/opt-out",
            Some(json!({"channel": "sms"})),
        )
        .await;
    let any = publish(&server, "dee@example.com", None).await;
    assert_eq!(outcome(&server, &any).await["texter"].0, "suppressed");
    server
        .api_send(
            Method::POST,
            "/v1/preferences/dee@example.com/opt-in",
            Some(json!({"channel": "sms"})),
        )
        .await;
    let back = publish(&server, "dee@example.com", None).await;
    assert_eq!(outcome(&server, &back).await["texter"].0, "succeeded");

    // PUT replaces; DELETE resets to the defaults.
    let (status, replaced) = server
        .api_send(
            Method::PUT,
            "/v1/preferences/dee@example.com",
            Some(json!({"channels": {"push": false}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(replaced["channels"], json!({"push": false}));
    assert_eq!(replaced["categories"], json!({}));
    let (status, _) = server
        .api_send(Method::DELETE, "/v1/preferences/dee@example.com", None)
        .await;
    assert_eq!(status, 204);
    let (_, reset) = server
        .api_get("/v1/preferences/dee@example.com", ADMIN_TOKEN)
        .await;
    assert_eq!(reset["channels"], json!({}));

    for (body, field) in [
        (json!({"channel": "pigeon"}), "channel"),
        (json!({"channel": "email", "category": ""}), "category"),
        (json!({}), "channel"),
    ] {
        let (status, err) = server
            .api_send(
                Method::POST,
                "/v1/preferences/dee@example.com/opt-out",
                Some(body),
            )
            .await;
        assert_eq!(status, 400);
        assert!(
            err["error"]["message"].as_str().unwrap().contains(field),
            "{err}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn bulk_suppression_is_all_or_nothing_and_admin_only() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let item = |n: usize| json!({"recipient": format!("user{n}@example.com"), "channel": "email", "reason": "admin_action"});
    let mut items: Vec<Value> = (0..5).map(item).collect();
    items[3]["channel"] = "fax".into();
    let (status, err) = server
        .api_send(
            Method::POST,
            "/v1/suppressions/bulk",
            Some(json!({"items": items})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("items[3].channel"),
        "{err}"
    );
    let (_, list) = server.api_get("/v1/suppressions", ADMIN_TOKEN).await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "nothing stored"
    );

    let too_many: Vec<Value> = (0..10_001).map(item).collect();
    let (status, _) = server
        .api_send(
            Method::POST,
            "/v1/suppressions/bulk",
            Some(json!({"items": too_many})),
        )
        .await;
    assert_eq!(status, 400);

    let resp = server
        .http
        .post(server.api_url("/v1/suppressions/bulk"))
        .bearer_auth("test-writer-token")
        .json(&json!({"items": [item(1)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403, "write is not enough");

    let items: Vec<Value> = (0..10_000).map(item).collect();
    let (status, created) = server
        .api_send(
            Method::POST,
            "/v1/suppressions/bulk",
            Some(json!({"items": items})),
        )
        .await;
    assert_eq!((status, created["created"].as_u64()), (201, Some(10_000)));
    let (_, page) = server
        .api_get("/v1/suppressions?limit=1000", ADMIN_TOKEN)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1000);
    assert!(page["next"].is_string());
    let (_, audit) = server.api_get("/v1/audit?actor=admin", ADMIN_TOKEN).await;
    let bulk: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "suppression.bulk_create")
        .collect();
    assert_eq!(bulk.len(), 1, "one entry for the whole bulk");
    assert_eq!(bulk[0]["after"]["count"], 10_000);
    server.stop().await;
}

#[tokio::test]
async fn the_audit_trail_names_who_changed_what() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let resp = server
        .http
        .post(server.api_url("/v1/suppressions"))
        .bearer_auth("test-writer-token")
        .json(&json!({"recipient": "eve@example.com", "channel": "sms", "reason": "user_request"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    server
        .api_send(
            Method::POST,
            "/v1/preferences/eve@example.com/opt-out",
            Some(json!({"channel": "push"})),
        )
        .await;
    server
        .api_send(
            Method::PATCH,
            "/v1/destinations/mailer",
            Some(json!({"rate_limit_per_sec": 5})),
        )
        .await;

    let (_, trail) = server
        .api_get("/v1/audit?subject=eve@example.com", ADMIN_TOKEN)
        .await;
    let items = trail["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{trail}");
    assert_eq!(items[0]["action"], "preferences.opt_out", "newest first");
    assert_eq!(items[0]["actor"], "admin");
    assert_eq!(items[0]["after"]["channels"]["push"], false);
    assert_eq!(items[1]["action"], "suppression.create");
    assert_eq!(items[1]["actor"], "support-bot", "the token's name");
    let (_, by_bot) = server
        .api_get("/v1/audit?actor=support-bot", ADMIN_TOKEN)
        .await;
    assert_eq!(by_bot["items"].as_array().unwrap().len(), 1);
    let (_, dest) = server
        .api_get("/v1/audit?subject=mailer", ADMIN_TOKEN)
        .await;
    assert_eq!(dest["items"][0]["action"], "destination.update");
    server.stop().await;
}

#[tokio::test]
async fn export_then_erasure_keeps_the_opt_out() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let who = "fay@example.com";
    server
        .api_send(Method::POST, "/v1/suppressions", Some(json!({"recipient": who, "channel": "email", "reason": "user_request", "note": "asked by phone"})))
        .await;
    server
        .api_send(
            Method::POST,
            &format!("/v1/preferences/{who}/opt-out"),
            Some(json!({"channel": "push"})),
        )
        .await;
    let id = publish(&server, who, None).await;
    outcome(&server, &id).await;

    let (status, export) = server
        .api_get(&format!("/v1/subjects/{who}/export"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_eq!(export["recipient"], who);
    assert_eq!(export["preferences"]["channels"]["push"], false);
    assert_eq!(export["suppressions"][0]["channel"], "email");
    assert_eq!(export["messages"][0]["id"], id.as_str());
    assert_eq!(export["messages"][0]["payload"], json!({"to": who}));
    assert_eq!(export["audit"].as_array().unwrap().len(), 2);

    let (status, _) = server
        .api_send(Method::DELETE, &format!("/v1/subjects/{who}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 404, "messages are erased");
    let (_, export) = server
        .api_get(&format!("/v1/subjects/{who}/export"), ADMIN_TOKEN)
        .await;
    assert!(export["messages"].as_array().unwrap().is_empty());
    assert_eq!(
        export["preferences"]["channels"],
        json!({"push": false}),
        "preferences are erased, their opt-outs kept"
    );
    let exported = export.to_string();
    assert_eq!(
        exported.matches(who).count(),
        2,
        "only the request's own echo names the address: {exported}"
    );
    let (_, trail) = server.api_get("/v1/audit", ADMIN_TOKEN).await;
    assert!(
        !trail.to_string().contains(who),
        "audit pseudonymised: {trail}"
    );

    // The opt-out survives, kept under a keyed pseudonym: a new message is still held.
    let (_, held) = server.api_get("/v1/suppressions", ADMIN_TOKEN).await;
    let key = held["items"][0]["recipient"].as_str().unwrap();
    assert!(
        key.starts_with("anon:") && !held.to_string().contains(who),
        "{held}"
    );
    assert!(held["items"][0]["note"].is_null(), "free text dropped");
    let again = publish(&server, who, None).await;
    assert_eq!(outcome(&server, &again).await["mailer"].0, "suppressed");
    server.stop().await;
}

#[tokio::test]
async fn a_bounce_webhook_suppresses_its_recipient() {
    let receiver = Receiver::start().await;
    let feedback = "[[sources]]\nname = \"esp\"\nscheme = \"standard-webhooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nsuppress_on = { \"email.bounced\" = \"bounce\", \"email.complained\" = \"complaint\" }\n";
    let server = Server::start(&(config(&receiver) + feedback)).await;
    let body = br#"{"type":"email.bounced","recipient":"gus@example.com"}"#;
    let (status, json) = server
        .post_webhook("esp", &std_headers("bounce-1", now(), body), body)
        .await;
    assert_eq!(status, 202, "{json}");
    let (_, held) = server
        .api_get("/v1/suppressions?recipient=gus@example.com", ADMIN_TOKEN)
        .await;
    assert_eq!(held["items"][0]["reason"], "bounce", "{held}");
    assert_eq!(held["items"][0]["channel"], "email");
    assert_eq!(held["items"][0]["created_by"], "source:esp");
    let id = publish(&server, "gus@example.com", None).await;
    assert_eq!(outcome(&server, &id).await["mailer"].0, "suppressed");
    server.stop().await;
}
