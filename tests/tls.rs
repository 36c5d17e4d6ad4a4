//! TLS end to end, with certificates made here (rcgen) and everything on 127.0.0.1:
//! https destinations (delivered and verified by the receiver; unknown CA, wrong name and
//! expired certificate as failed attempts that say why), and inbound TLS on both ports with
//! a reload that keeps open connections (in process, and by SIGHUP to the real binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::receiver::Receiver;
use common::tls::{TestCa, TlsConnection};
use common::{ADMIN_TOKEN, STD_SECRET, Server, destination, fast_delivery, now, std_headers};

const WAIT: Duration = Duration::from_secs(15);

/// A herald delivering to `url` with `ca` trusted through `delivery.ca_file`.
async fn delivering_to(url: &str, ca: &TestCa, max_attempts: u32) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path());
    let config = format!(
        "{}ca_file = {:?}\n{}",
        fast_delivery(max_attempts),
        ca_file.display().to_string(),
        destination("secure", url)
    );
    Server::start_in(dir, &config).await
}

#[tokio::test]
async fn an_https_destination_trusted_through_ca_file_gets_the_signed_webhook() {
    let ca = TestCa::new("herald test CA");
    let receiver = Receiver::start_tls(ca.issue(&["localhost"]).server_config()).await;
    let server = delivering_to(&receiver.url_named("localhost", "/hooks"), &ca, 3).await;

    let body = br#"{"type":"payment.succeeded","id":"evt_tls"}"#;
    let id = server.accept_std("evt_tls", body).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/hooks");
    assert_eq!(&got[0].body[..], &body[..]);
    assert_eq!(got[0].headers["webhook-id"], id.as_str());
    assert!(
        got[0].signed_with(STD_SECRET),
        "the receiver verifies the signature"
    );

    let msg = server.wait_delivery(&id, "succeeded", WAIT).await;
    let attempts = msg["deliveries"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{msg}");
    assert_eq!(attempts[0]["status_code"], 200);

    // A second message reuses the pooled TLS connection and arrives just the same.
    let second = server.accept_std("evt_tls_2", body).await;
    server.wait_delivery(&second, "succeeded", WAIT).await;
    assert!(receiver.received()[1].signed_with(STD_SECRET));
    server.stop().await;
}

/// Delivers one message to a receiver presenting `leaf_of(ca)` and returns the attempt
/// errors once the delivery is dead (two attempts: the failure is retried per policy).
async fn refused_attempts(
    receiver: &Receiver,
    host: &str,
    trusted: &TestCa,
    external_id: &str,
) -> Vec<String> {
    let server = delivering_to(&receiver.url_named(host, "/"), trusted, 2).await;
    let id = server.accept_std(external_id, b"{}").await;
    let msg = server.wait_delivery(&id, "dead", WAIT).await;
    let attempts = msg["deliveries"][0]["attempts"].as_array().unwrap().clone();
    server.stop().await;
    assert!(receiver.received().is_empty(), "no request got through");
    assert_eq!(attempts.len(), 2, "retried per policy: {attempts:?}");
    attempts
        .iter()
        .map(|a| {
            assert!(a["status_code"].is_null(), "{a}");
            a["error"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_a_failed_attempt_that_says_so() {
    let trusted = TestCa::new("trusted CA");
    let stranger = TestCa::new("stranger CA");
    let receiver = Receiver::start_tls(stranger.issue(&["localhost"]).server_config()).await;
    for error in refused_attempts(&receiver, "localhost", &trusted, "evt_unknown_ca").await {
        assert!(error.contains("unknown issuer"), "{error}");
        assert!(error.contains("localhost"), "{error}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_failed_attempt_that_says_so() {
    let ca = TestCa::new("herald test CA");
    let receiver = Receiver::start_tls(ca.issue(&["hooks.example.com"]).server_config()).await;
    for error in refused_attempts(&receiver, "localhost", &ca, "evt_wrong_name").await {
        assert!(
            error.contains("not valid for the host name localhost"),
            "{error}"
        );
        assert!(error.contains("hooks.example.com"), "{error}");
    }
}

#[tokio::test]
async fn an_expired_certificate_is_a_failed_attempt_that_says_so() {
    let ca = TestCa::new("herald test CA");
    let receiver = Receiver::start_tls(ca.issue_expired(&["localhost"]).server_config()).await;
    for error in refused_attempts(&receiver, "localhost", &ca, "evt_expired").await {
        assert!(error.contains("has expired"), "{error}");
    }
}

#[tokio::test]
async fn without_ca_file_a_private_ca_is_not_trusted() {
    // Mozilla's roots only: the test CA is unknown, and no switch turns verification off.
    let ca = TestCa::new("herald test CA");
    let receiver = Receiver::start_tls(ca.issue(&["localhost"]).server_config()).await;
    let server = Server::start(
        &(fast_delivery(1) + &destination("secure", &receiver.url_named("localhost", "/"))),
    )
    .await;
    let id = server.accept_std("evt_no_ca_file", b"{}").await;
    let msg = server.wait_delivery(&id, "dead", WAIT).await;
    let error = msg["deliveries"][0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("unknown issuer"), "{error}");
    assert!(receiver.received().is_empty());
    server.stop().await;
}

/// A herald serving TLS on both ports with `leaf`, files in its data directory.
async fn serving_tls(leaf: &common::tls::Leaf) -> (Server, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write(dir.path(), "server");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start_in_with_env(
        dir,
        "",
        &[
            ("HERALD_SERVER_TLS_CERT", cert_s.as_str()),
            ("HERALD_SERVER_TLS_KEY", key_s.as_str()),
        ],
    )
    .await;
    (server, cert, key)
}

#[tokio::test]
async fn both_ports_serve_tls_and_a_reload_keeps_open_connections() {
    let ca = TestCa::new("herald test CA");
    let first = ca.issue(&["localhost"]);
    let (server, cert, key) = serving_tls(&first).await;
    let client = ca.client_config();

    // Ingest over TLS: a signed webhook is accepted.
    let mut ingest = TlsConnection::open(server.ingest, "localhost", client.clone()).await;
    assert_eq!(ingest.peer, first.cert);
    let body = br#"{"type":"tls.inbound"}"#;
    let mut headers = std_headers("evt_inbound", now(), body);
    headers.push(("content-type".to_owned(), "application/json".to_owned()));
    let (status, answer) = ingest
        .request("POST", "/webhooks/std", &headers, body)
        .await;
    assert_eq!(status, 202, "{answer:?}");

    // The API over TLS, on a connection kept open across the reload.
    let mut api = TlsConnection::open(server.api, "localhost", client.clone()).await;
    assert_eq!(api.peer, first.cert);
    let auth = [("authorization".to_owned(), format!("Bearer {ADMIN_TOKEN}"))];
    let (status, _) = api.request("GET", "/v1/destinations", &auth, b"").await;
    assert_eq!(status, 200);

    // Plain http on a TLS port gets no HTTP answer.
    let plain = server
        .http
        .get(format!("http://{}/healthz", server.api))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // A reload that fails (the key no longer matches) keeps the old certificate.
    let second = ca.issue(&["localhost"]);
    std::fs::write(&key, &second.key_pem).unwrap();
    assert!(server.reload_tls().is_err());
    let again = TlsConnection::open(server.api, "localhost", client.clone()).await;
    assert_eq!(again.peer, first.cert, "still the old certificate");

    // A good reload: new handshakes get the new certificate on both ports…
    std::fs::write(&cert, &second.cert_pem).unwrap();
    assert!(server.reload_tls().unwrap());
    for addr in [server.ingest, server.api] {
        let fresh = TlsConnection::open(addr, "localhost", client.clone()).await;
        assert_eq!(
            fresh.peer, second.cert,
            "new handshakes use the new certificate"
        );
    }
    // …and the connections opened before it still work.
    assert!(!api.is_closed());
    let (status, _) = api.request("GET", "/v1/destinations", &auth, b"").await;
    assert_eq!(
        status, 200,
        "the open keep-alive connection survived the reload"
    );
    let (status, _) = ingest.request("GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// The test config with `server.tls_cert` and `server.tls_key` in its `[server]` table.
fn config_with_tls(dir: &tempfile::TempDir, cert: &Path, key: &Path) -> String {
    common::config_text(dir, "").replacen(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_real_binary() {
    let ca = TestCa::new("herald test CA");
    let first = ca.issue(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = first.write(dir.path(), "server");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_with_tls(&dir, &cert, &key)).unwrap();
    let mut process = common::process::spawn(&config);
    let client = ca.client_config();

    let mut open = TlsConnection::open(process.api, "localhost", client.clone()).await;
    assert_eq!(open.peer, first.cert);
    let (status, _) = open.request("GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);

    let second = ca.issue(&["localhost"]);
    second.write(dir.path(), "server");
    process.signal("HUP");
    process.wait_log("TLS certificate and key reloaded", WAIT);

    for addr in [process.ingest, process.api] {
        let fresh = TlsConnection::open(addr, "localhost", client.clone()).await;
        assert_eq!(fresh.peer, second.cert, "the new certificate is served");
    }
    let (status, _) = open.request("GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200, "the open connection survived SIGHUP");

    process.signal("TERM");
    let exit = process.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn check_config_refuses_a_key_that_is_not_the_certificates() {
    let ca = TestCa::new("herald test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(&["localhost"]).write(dir.path(), "server");
    let with_tls = |key: &Path| {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config_with_tls(&dir, &cert, key)).unwrap();
        std::process::Command::new(common::process::HERALD)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = with_tls(&key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_, foreign) = ca.issue(&["localhost"]).write(dir.path(), "other");
    let out = with_tls(&foreign);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls_key"), "{stderr}");
    assert!(
        stderr.contains("does not match the certificate"),
        "{stderr}"
    );
}
