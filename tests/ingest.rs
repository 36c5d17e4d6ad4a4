//! The ingest port end to end: every scheme, the contract's check order and error codes,
//! duplicates, limits and blocking, against a real server and a real redb file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, Server, now, signed, std_headers};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCHEMES: [&str; 6] = ["std", "stripe", "github", "shopify", "slack", "generic"];

fn body(id: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","type":"payment.succeeded","amount":4200}}"#).into_bytes()
}

#[tokio::test]
async fn every_scheme_accepts_genuine_and_rejects_tampered_webhooks() {
    let server = Server::start("").await;
    for source in SCHEMES {
        let id = format!("evt_{source}_1");
        let body = body(&id);
        let headers = signed(source, &id, now(), &body);

        let (status, json) = server.post_webhook(source, &headers, &body).await;
        assert_eq!(status, 202, "{source}: {json}");
        assert_eq!(json["status"], "accepted");
        let msg_id = json["id"].as_str().unwrap().to_owned();
        assert!(msg_id.starts_with("msg_"));

        // The same bytes with one byte changed, and the same JSON re-serialised.
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() = b' ';
        let reserialised =
            serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
        for bad in [tampered, reserialised] {
            let (status, json) = server.post_webhook(source, &headers, &bad).await;
            assert_eq!(status, 401, "{source}: {json}");
            assert_eq!(json["error"]["code"], "invalid_signature", "{source}");
        }

        // What was stored is what was sent.
        let (status, stored) = server
            .api_get(&format!("/v1/messages/{msg_id}"), ADMIN_TOKEN)
            .await;
        assert_eq!(status, 200);
        assert_eq!(stored["source"], source);
        assert_eq!(
            stored["payload"],
            serde_json::from_slice::<Value>(&body).unwrap()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn stale_and_future_timestamps_are_rejected() {
    let server = Server::start("").await;
    for source in ["std", "stripe", "slack", "generic"] {
        for skew in [-301, 301, -86_400] {
            let id = format!("evt_{source}_{skew}");
            let body = body(&id);
            let headers = signed(source, &id, now() + skew, &body);
            let (status, json) = server.post_webhook(source, &headers, &body).await;
            assert_eq!(status, 401, "{source} {skew}: {json}");
            assert_eq!(json["error"]["code"], "stale_timestamp");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_repeated_webhook_id_is_a_duplicate_and_stores_nothing() {
    let server = Server::start("").await;
    for source in SCHEMES {
        let id = format!("evt_dup_{source}");
        let body = body(&id);
        let headers = signed(source, &id, now(), &body);
        let (first, accepted) = server.post_webhook(source, &headers, &body).await;
        assert_eq!(first, 202, "{source}");
        let (again, dup) = server.post_webhook(source, &headers, &body).await;
        assert_eq!(again, 200, "{source}: {dup}");
        assert_eq!(dup["duplicate"], true);
        assert_eq!(
            dup["id"], accepted["id"],
            "{source}: a duplicate names the first message"
        );
    }
    let (_, list) = server.api_get("/v1/messages?limit=1000", ADMIN_TOKEN).await;
    assert_eq!(list["items"].as_array().unwrap().len(), SCHEMES.len());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_store_exactly_one_message() {
    let server = Server::start("").await;
    let body = body("evt_race");
    let headers = std_headers("evt_race", now(), &body);
    let server = std::sync::Arc::new(server);
    let sends: Vec<_> = (0..32)
        .map(|_| {
            let (server, headers, body) = (server.clone(), headers.clone(), body.clone());
            tokio::spawn(async move { server.post_webhook("std", &headers, &body).await })
        })
        .collect();
    let mut results = Vec::new();
    for send in sends {
        results.push(send.await.unwrap());
    }
    let accepted = results.iter().filter(|(s, _)| *s == 202).count();
    let duplicates = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((accepted, duplicates), (1, 31), "{results:?}");
    let ids: std::collections::HashSet<_> = results.iter().map(|(_, j)| j["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "every answer names the same message");
    let Ok(server) = std::sync::Arc::try_unwrap(server) else {
        panic!("server still shared")
    };
    server.stop().await;
}

#[tokio::test]
async fn missing_headers_are_named() {
    let server = Server::start("").await;
    let body = body("evt_missing");
    let headers = std_headers("evt_missing", now(), &body);
    for dropped in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let partial: Vec<_> = headers
            .iter()
            .filter(|(k, _)| k != dropped)
            .cloned()
            .collect();
        let (status, json) = server.post_webhook("std", &partial, &body).await;
        assert_eq!(status, 400, "{dropped}: {json}");
        assert_eq!(json["error"]["code"], "missing_header");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(dropped),
            "{json}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_sources_and_routes() {
    let server = Server::start("").await;
    let (status, json) = server.post_webhook("nope", &[], b"{}").await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("unknown_source"))
    );
    let resp = server
        .http
        .get(server.ingest_url("/webhooks/std"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    for port in [server.ingest, server.api] {
        let resp = server
            .http
            .get(format!("http://{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_even_when_chunked() {
    let server = Server::start("").await;
    let big = vec![b'x'; 1_048_577];
    let headers = std_headers("evt_big", now(), &big);
    let (status, json) = server.post_webhook("std", &headers, &big).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Chunked, no Content-Length: the limit is enforced while reading.
    let mut stream = tokio::net::TcpStream::connect(server.ingest).await.unwrap();
    let head = "POST /webhooks/std HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'y'; 64 * 1024];
    let mut response = Vec::new();
    for _ in 0..20 {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&frame).await.is_err() {
            break; // the server stopped reading: fine, its answer is already on the wire
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let server = Server::start(
        r#"
[[sources]]
name = "limited"
scheme = "github"
secret = "gh-limited"
rate_limit_per_sec = 2
"#,
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let body = body(&format!("evt_rl_{i}"));
        let headers = vec![
            ("x-github-delivery".to_owned(), format!("rl-{i}")),
            (
                "x-hub-signature-256".to_owned(),
                format!("sha256={}", hex::encode(common::hmac(b"gh-limited", &body))),
            ),
        ];
        let mut req = server
            .http
            .post(server.ingest_url("/webhooks/limited"))
            .body(body);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        if resp.status().as_u16() == 429 {
            let retry_after: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry_after), "{retry_after}");
            let json: Value = resp.json().await.unwrap();
            assert_eq!(json["error"]["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(resp.status().as_u16());
        }
    }
    assert_eq!(&statuses[..2], &[202, 202], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    server.stop().await;
}

#[tokio::test]
async fn repeated_invalid_signatures_block_the_client() {
    let server = Server::start("[ingest]\nblock_after_invalid = 3\nblock_secs = 60\n").await;
    let body = body("evt_block");
    let mut headers = std_headers("evt_block", now(), &body);
    headers[2].1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    for _ in 0..3 {
        let (status, json) = server.post_webhook("std", &headers, &body).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (401, Some("invalid_signature"))
        );
    }
    // Blocked now, even with a valid signature; and before the size and signature checks.
    let good = std_headers("evt_block", now(), &body);
    let (status, json) = server.post_webhook("std", &good, &body).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (403, Some("blocked"))
    );
    // Stale timestamps and missing headers do not count towards a block.
    let server2 = Server::start("[ingest]\nblock_after_invalid = 2\n").await;
    for _ in 0..5 {
        let stale = std_headers("evt_stale", now() - 3_600, &body);
        let (status, _) = server2.post_webhook("std", &stale, &body).await;
        assert_eq!(status, 401);
    }
    let (status, _) = server2.post_webhook("std", &good, &body).await;
    assert_eq!(status, 202);
    server.stop().await;
    server2.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let server =
        Server::start_with_env("", &[("HERALD_SERVER_HEADER_READ_TIMEOUT_MS", "300")]).await;
    let mut stream = tokio::net::TcpStream::connect(server.ingest).await.unwrap();
    stream
        .write_all(b"POST /webhooks/std HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server must close a connection whose headers never finish"
    );
    // Meanwhile, a well-behaved client is served.
    let resp = server
        .http
        .get(server.ingest_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test]
async fn accepted_webhooks_survive_a_graceful_restart() {
    let server = Server::start("").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = format!("evt_restart_{i}");
        let body = body(&id);
        let (status, json) = server
            .post_webhook("std", &std_headers(&id, now(), &body), &body)
            .await;
        assert_eq!(status, 202);
        ids.push(json["id"].as_str().unwrap().to_owned());
    }
    let dir = server.stop().await;
    let server = Server::start_in(dir, "").await;
    for id in &ids {
        let (status, _) = server
            .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
            .await;
        assert_eq!(status, 200, "{id} lost across restart");
    }
    // And the idempotency index survived too.
    let body = body("evt_restart_0");
    let (status, _) = server
        .post_webhook("std", &std_headers("evt_restart_0", now(), &body), &body)
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn svix_headers_signed_by_the_reference_implementation_are_accepted() {
    let server = Server::start("").await;
    // Signed by the Standard Webhooks reference library, not by herald's own code.
    let signer = standardwebhooks::Webhook::new(common::STD_SECRET).unwrap();
    let body = body("evt_svix_1");
    let ts = now();
    let signature = signer.sign("msg_svix_1", ts, &body).unwrap();
    let headers = [
        ("svix-id".to_owned(), "msg_svix_1".to_owned()),
        ("svix-timestamp".to_owned(), ts.to_string()),
        ("svix-signature".to_owned(), signature.clone()),
    ];
    let (status, json) = server.post_webhook("std", &headers, &body).await;
    assert_eq!(status, 202, "{json}");
    // The same webhook under the webhook-* names is the same message: a duplicate.
    let renamed: Vec<_> = headers
        .iter()
        .map(|(k, v)| (k.replacen("svix-", "webhook-", 1), v.clone()))
        .collect();
    let (status, again) = server.post_webhook("std", &renamed, &body).await;
    assert_eq!((status, &again["id"]), (200, &json["id"]), "{again}");

    // A wrong key still fails under the svix names.
    let other = standardwebhooks::Webhook::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    let forged = [
        ("svix-id".to_owned(), "msg_svix_2".to_owned()),
        ("svix-timestamp".to_owned(), ts.to_string()),
        (
            "svix-signature".to_owned(),
            other.sign("msg_svix_2", ts, &body).unwrap(),
        ),
    ];
    let (status, json) = server.post_webhook("std", &forged, &body).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    server.stop().await;
}

#[tokio::test]
async fn any_signature_on_any_header_line_may_match() {
    let server = Server::start("").await;
    let body = body("evt_lines");
    let mut headers = std_headers("evt_lines", now(), &body);
    let at = headers
        .iter()
        .position(|(k, _)| k == "webhook-signature")
        .unwrap();
    let (name, genuine) = headers.remove(at);
    // A rotated-out key's signature on the first line, the valid one on a second line.
    headers.push((name.clone(), "v1,bm90IHRoZSByaWdodCBvbmU=".to_owned()));
    headers.push((name, genuine));
    let (status, json) = server.post_webhook("std", &headers, &body).await;
    assert_eq!(status, 202, "{json}");
    server.stop().await;
}

#[tokio::test]
async fn malformed_headers_are_invalid_headers_naming_them() {
    let server = Server::start("").await;
    let body = body("evt_malformed");
    let genuine = std_headers("evt_malformed", now(), &body);
    for (header, value) in [
        ("webhook-timestamp", "yesterday"),
        ("webhook-timestamp", "1.7e9"),
        ("webhook-id", "two words"),
    ] {
        let headers: Vec<_> = genuine
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == header {
                        value.to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        let (status, json) = server.post_webhook("std", &headers, &body).await;
        assert_eq!(status, 400, "{header}={value}: {json}");
        assert_eq!(json["error"]["code"], "invalid_header", "{json}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(header),
            "{json}"
        );
    }

    // An id that is not ASCII at all (reqwest sends the raw bytes).
    let mut req = server
        .http
        .post(server.ingest_url("/webhooks/github"))
        .body(body.clone());
    for (k, v) in signed("github", "evt_malformed", now(), &body) {
        if k.eq_ignore_ascii_case("x-github-delivery") {
            continue;
        }
        req = req.header(k, v);
    }
    let resp = req
        .header(
            "x-github-delivery",
            reqwest::header::HeaderValue::from_bytes("délivré".as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "invalid_header", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("x-github-delivery"),
        "{json}"
    );
    server.stop().await;
}

/// Whether a browser's CORS check passes for a credentialed request from `origin` (Fetch
/// standard, "CORS check": with credentials included the allowed origin must be the origin
/// itself, not `*`, and credentials must be allowed explicitly).
fn credentialed_cors_passes(resp: &reqwest::Response, origin: &str) -> bool {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    header("access-control-allow-origin") == origin
        && header("access-control-allow-credentials") == "true"
        && header("vary")
            .split(',')
            .any(|v| v.trim().eq_ignore_ascii_case("origin"))
}

#[tokio::test]
async fn a_credentialed_json_beacon_from_another_origin_passes_cors() {
    let server = Server::start("").await;
    let origin = "https://shop.example";
    // The preflight exactly as Chromium sends it for
    // `navigator.sendBeacon(url, new Blob([json], {type: "application/json"}))`.
    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.ingest_url("/vitals"))
        .header("accept", "*/*")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .header("origin", origin)
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-dest", "empty")
        .header("referer", "https://shop.example/checkout")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        )
        .header("accept-language", "en-US,en;q=0.9")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert!(
        credentialed_cors_passes(&preflight, origin),
        "{:?}",
        preflight.headers()
    );
    let listed = |name: &str| {
        preflight.headers()[name]
            .to_str()
            .unwrap()
            .split(',')
            .map(|v| v.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    // With credentials, `*` is not a wildcard: the method and header must be named.
    assert!(listed("access-control-allow-methods").contains(&"post".to_owned()));
    assert!(listed("access-control-allow-headers").contains(&"content-type".to_owned()));

    // The beacon that follows: credentials (a cookie of the page's site) and a JSON body.
    let beacon = serde_json::json!({"name": "LCP", "value": 1234.5, "id": "v4-cors-1", "rating": "good", "navigationType": "navigate", "page": "/checkout"});
    let resp = server
        .http
        .post(server.ingest_url("/vitals"))
        .header("content-type", "application/json")
        .header("origin", origin)
        .header("cookie", "session=abc123")
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "cross-site")
        .body(beacon.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(
        credentialed_cors_passes(&resp, origin),
        "{:?}",
        resp.headers()
    );

    // Not from a browser page: no origin to echo.
    let resp = server
        .http
        .post(server.ingest_url("/vitals"))
        .body(beacon.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(
        resp.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    server.stop().await;
}
