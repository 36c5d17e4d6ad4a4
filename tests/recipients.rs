//! Recipient identity end to end: one canonical form for every spelling of one address, opt-outs
//! that survive erasure, keyed pseudonyms, and resending a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{ADMIN_TOKEN, STD_SECRET, Server, fast_delivery, now, std_headers};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest as _, Sha256};

const WAIT: Duration = Duration::from_secs(10);

/// An email and an sms destination at `receiver`, taking every message.
fn config(receiver: &Receiver) -> String {
    let dest = |name: &str, channel: &str| {
        format!(
            "[[destinations]]\nname = \"{name}\"\nurl = \"{}\"\nsources = [\"*\"]\nchannel = \"{channel}\"\nsecret = \"{STD_SECRET}\"\n",
            receiver.url(&format!("/{name}"))
        )
    };
    fast_delivery(3) + &dest("mailer", "email") + &dest("texter", "sms")
}

async fn publish(server: &Server, recipient: &str, category: Option<&str>) -> String {
    let mut body =
        json!({"event_type": "notice.sent", "payload": {"n": 1}, "recipient": recipient});
    if let Some(category) = category {
        body["category"] = category.into();
    }
    let (status, json) = server
        .api_send(Method::POST, "/v1/messages", Some(body))
        .await;
    assert_eq!(status, 202, "{json}");
    json["id"].as_str().unwrap().to_owned()
}

/// Waits until every delivery of `id` is final; destination → status.
async fn statuses(server: &Server, id: &str) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
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
                        d["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "{id} not final: {msg}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn suppress(server: &Server, recipient: &str, channel: &str) {
    let (status, body) = server
        .api_send(
            Method::POST,
            "/v1/suppressions",
            Some(json!({"recipient": recipient, "channel": channel, "reason": "user_request"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn every_spelling_of_an_address_is_one_subject() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;

    // Case: a suppression of the lower-case address holds a message to a mixed-case one.
    suppress(&server, "dave@example.com", "email").await;
    let id = publish(&server, "dave@EXAMPLE.com", None).await;
    assert_eq!(statuses(&server, &id).await["mailer"], "suppressed");

    // Whitespace: stored trimmed, and messages are matched trimmed too.
    suppress(&server, " ivan@example.com ", "email").await;
    let id = publish(&server, "ivan@example.com", None).await;
    assert_eq!(statuses(&server, &id).await["mailer"], "suppressed");
    let id = publish(&server, "\tIvan@Example.com  ", None).await;
    assert_eq!(statuses(&server, &id).await["mailer"], "suppressed");

    // Unicode: an opt-out under the NFC spelling holds a message to the NFD one.
    let nfc = "jos\u{e9}@example.com";
    let nfd = "jose\u{301}@example.com";
    let (status, body) = server
        .api_send(
            Method::POST,
            &format!("/v1/preferences/{}/opt-out", urlencode(nfc)),
            Some(json!({"channel": "sms"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = publish(&server, nfd, None).await;
    let result = statuses(&server, &id).await;
    assert_eq!(result["texter"], "suppressed", "{result:?}");
    assert_eq!(result["mailer"], "succeeded");

    // Reads, filters and the audit trail name the canonical form, whatever the spelling asked.
    let (_, prefs) = server
        .api_get(
            &format!("/v1/preferences/{}", urlencode("JOSE\u{301}@EXAMPLE.COM")),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(prefs["recipient"], nfc, "{prefs}");
    assert_eq!(prefs["channels"]["sms"], false);
    let (_, held) = server
        .api_get("/v1/suppressions?recipient=IVAN@example.com", ADMIN_TOKEN)
        .await;
    assert_eq!(held["items"][0]["recipient"], "ivan@example.com", "{held}");
    let (_, trail) = server
        .api_get("/v1/audit?subject=Dave@Example.com", ADMIN_TOKEN)
        .await;
    assert_eq!(trail["items"][0]["subject"], "dave@example.com", "{trail}");
    let (_, msg) = server
        .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(msg["recipient"], nfc, "messages store the canonical form");

    // Bulk items are canonicalised the same way; deleting by another spelling finds it.
    let (status, _) = server
        .api_send(
            Method::POST,
            "/v1/suppressions/bulk",
            Some(json!({"items": [{"recipient": " Kim@Example.COM", "channel": "*", "reason": "complaint"}]})),
        )
        .await;
    assert_eq!(status, 201);
    let id = publish(&server, "kim@example.com", None).await;
    assert!(
        statuses(&server, &id)
            .await
            .values()
            .all(|s| s == "suppressed")
    );
    let (status, _) = server
        .api_send(
            Method::DELETE,
            &format!("/v1/suppressions/{}/*", urlencode("KIM@example.com")),
            None,
        )
        .await;
    assert_eq!(status, 204);

    // A recipient that is only whitespace is refused, naming the field.
    let (status, body) = server
        .api_send(
            Method::POST,
            "/v1/suppressions",
            Some(json!({"recipient": "   ", "channel": "email", "reason": "bounce"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("recipient")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_webhook_recipient_is_matched_in_its_canonical_form() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    suppress(&server, "lea@example.com", "email").await;
    let body = br#"{"type":"invoice.paid","recipient":"  LEA@example.com "}"#;
    let (status, json) = server
        .post_webhook("std", &std_headers("evt_lea", now(), body), body)
        .await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let result = statuses(&server, &id).await;
    assert_eq!(result["mailer"], "suppressed", "{result:?}");
    assert_eq!(result["texter"], "succeeded");
    server.stop().await;
}

#[tokio::test]
async fn erasure_keeps_every_opt_out_and_they_are_still_honoured() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let who = "rita@example.com";
    for (path, body) in [
        ("opt-out", json!({"channel": "email"})),
        (
            "opt-out",
            json!({"channel": "sms", "category": "marketing"}),
        ),
        ("opt-in", json!({"channel": "push"})),
    ] {
        let (status, json) = server
            .api_send(
                Method::POST,
                &format!("/v1/preferences/{who}/{path}"),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{json}");
    }
    let (status, _) = server
        .api_send(Method::DELETE, &format!("/v1/subjects/{who}"), None)
        .await;
    assert_eq!(status, 204);

    // Every opt-out still applies, under any spelling of the address.
    let id = publish(&server, "Rita@Example.com", None).await;
    let result = statuses(&server, &id).await;
    assert_eq!(
        result["mailer"], "suppressed",
        "channel opt-out kept: {result:?}"
    );
    assert_eq!(result["texter"], "succeeded");
    let id = publish(&server, who, Some("marketing")).await;
    assert_eq!(
        statuses(&server, &id).await["texter"],
        "suppressed",
        "category opt-out kept"
    );

    // Nothing about the person is kept in plain text; the opt-ins are gone.
    let (_, export) = server
        .api_get(&format!("/v1/subjects/{who}/export"), ADMIN_TOKEN)
        .await;
    assert_eq!(export["preferences"]["channels"], json!({"email": false}));
    assert_eq!(
        export["preferences"]["categories"],
        json!({"marketing": {"sms": false}})
    );
    let (_, trail) = server.api_get("/v1/audit?limit=1000", ADMIN_TOKEN).await;
    assert!(!trail.to_string().contains("rita"), "{trail}");

    // A new, explicit opt-in after erasure is the person's new choice.
    server
        .api_send(
            Method::POST,
            &format!("/v1/preferences/{who}/opt-in"),
            Some(json!({"channel": "email"})),
        )
        .await;
    let id = publish(&server, who, None).await;
    assert_eq!(statuses(&server, &id).await["mailer"], "succeeded");
    server.stop().await;
}

/// The pseudonym an erasure leaves in the audit trail.
async fn erased_as(server: &Server, who: &str) -> String {
    suppress(server, who, "email").await;
    let (status, _) = server
        .api_send(Method::DELETE, &format!("/v1/subjects/{who}"), None)
        .await;
    assert_eq!(status, 204);
    let (_, trail) = server
        .api_get("/v1/audit?actor=admin&limit=1", ADMIN_TOKEN)
        .await;
    assert_eq!(trail["items"][0]["action"], "subject.erase", "{trail}");
    trail["items"][0]["subject"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_pseudonym_cannot_be_recomputed_from_the_address() {
    let receiver = Receiver::start().await;
    let who = "sam@example.com";
    let first = Server::start(&config(&receiver)).await;
    let alias = erased_as(&first, who).await;
    let second = Server::start(&config(&receiver)).await;
    let other = erased_as(&second, who).await;

    assert!(alias.starts_with("anon:"), "{alias}");
    let unkeyed = hex::encode(Sha256::digest(who.as_bytes()));
    assert!(!alias.contains(&unkeyed), "not a plain hash of the address");
    assert_ne!(
        alias, other,
        "each herald has its own key: the address alone does not give the pseudonym"
    );
    // The pseudonym is stable within one herald: the kept suppression is filed under it.
    let (_, held) = first
        .api_get(&format!("/v1/suppressions?recipient={alias}"), ADMIN_TOKEN)
        .await;
    assert_eq!(held["items"][0]["recipient"], alias.as_str(), "{held}");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn resend_delivers_again_with_the_same_webhook_id() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let id = publish(&server, "tom@example.com", None).await;
    statuses(&server, &id).await;
    receiver.wait_for(2, WAIT).await;

    // To one destination.
    let (status, body) = server
        .api_send(
            Method::POST,
            &format!("/v1/messages/{id}/resend"),
            Some(json!({"destination": "mailer"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["requeued"], 1);
    let got = receiver.wait_for(3, WAIT).await;
    let to_mailer: Vec<&str> = got
        .iter()
        .filter(|r| r.path == "/mailer")
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert_eq!(to_mailer, [id.as_str(), id.as_str()], "same webhook-id");

    // To every destination it matched, with no body at all.
    let (status, body) = server
        .api_send(Method::POST, &format!("/v1/messages/{id}/resend"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["requeued"], 2);
    receiver.wait_for(5, WAIT).await;
    // Each attempt's outcome is committed just after the receiver answered it.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, msg) = server
            .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
            .await;
        let attempts: usize = msg["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["attempts"].as_array().unwrap().len())
            .sum();
        if attempts == 5 {
            break;
        }
        assert!(Instant::now() < deadline && attempts < 5, "{msg}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.received().len(), 5, "nothing more than asked for");

    // Audited; unknown ids and destinations are 404; a read token may not resend.
    let (_, trail) = server
        .api_get(&format!("/v1/audit?subject={id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(trail["items"][0]["action"], "message.resend", "{trail}");
    let (status, _) = server
        .api_send(
            Method::POST,
            &format!("/v1/messages/{id}/resend"),
            Some(json!({"destination": "nowhere"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .api_send(
            Method::POST,
            "/v1/messages/msg_01JBQ1Z7K5V3N7Q0000000000Z/resend",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let forbidden = server
        .http
        .post(server.api_url(&format!("/v1/messages/{id}/resend")))
        .bearer_auth("test-reader-token")
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn a_suppressed_recipient_stays_suppressed_on_resend() {
    let receiver = Receiver::start().await;
    let server = Server::start(&config(&receiver)).await;
    let id = publish(&server, "uma@example.com", None).await;
    statuses(&server, &id).await;
    suppress(&server, "uma@example.com", "*").await;
    let (status, _) = server
        .api_send(Method::POST, &format!("/v1/messages/{id}/resend"), None)
        .await;
    assert_eq!(status, 202);
    let result = statuses(&server, &id).await;
    assert!(result.values().all(|s| s == "suppressed"), "{result:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "only the first delivery reached it"
    );
    server.stop().await;
}

/// Percent-encodes a path segment (the API decodes segments).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
