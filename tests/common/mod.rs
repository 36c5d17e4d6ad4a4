//! Shared by the end-to-end tests: a real herald on port 0 over a real redb file in a temp dir,
//! and helpers to sign and send webhooks the way partners do.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The standard-webhooks secret of the `std` source in [`BASE_CONFIG`].
pub const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Ports 0, one source per scheme, an admin token. Tests append what they need.
pub const BASE_CONFIG: &str = r#"
[server]
ingest_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"

[api]
token = "test-admin-token"

[[api.tokens]]
name = "reader"
token = "test-reader-token"
scopes = ["read"]

[[api.tokens]]
name = "publisher"
token = "test-publisher-token"
scopes = ["publish"]

[[sources]]
name = "std"
scheme = "standard-webhooks"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[[sources]]
name = "stripe"
scheme = "stripe"
secret = "whsec_stripe_raw_secret"

[[sources]]
name = "github"
scheme = "github"
secret = "gh-secret"

[[sources]]
name = "shopify"
scheme = "shopify"
secret = "shopify-secret"

[[sources]]
name = "slack"
scheme = "slack"
secret = "slack-secret"

[[sources]]
name = "generic"
scheme = "hmac-sha256"
secret = "generic-secret"
id_header = "x-event-id"
timestamp_header = "x-event-time"
signature_header = "x-event-signature"
encoding = "hex"
prefix = "sha256="
"#;

/// A herald running in this test process.
pub struct Server {
    pub ingest: SocketAddr,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
    running: Option<herald::Running>,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts herald on [`BASE_CONFIG`] plus `extra` (more TOML tables).
    pub async fn start(extra: &str) -> Self {
        Self::start_with_env(extra, &[]).await
    }

    /// Starts herald with `HERALD_<SECTION>_<KEY>` overrides, e.g. for `[server]` keys, whose
    /// table [`BASE_CONFIG`] already has.
    pub async fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::launch(dir, extra, env).await
    }

    /// Starts herald with its database in `dir` (to restart over the same data).
    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Self {
        Self::launch(dir, extra, &[]).await
    }

    /// [`Server::start_in`] with environment overrides.
    pub async fn start_in_with_env(
        dir: tempfile::TempDir,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(dir, extra, env).await
    }

    /// Reloads the inbound TLS certificate, as SIGHUP does (see `herald::Running::reload_tls`).
    pub fn reload_tls(&self) -> Result<bool, herald::tls::TlsError> {
        self.running.as_ref().unwrap().reload_tls()
    }

    async fn launch(dir: tempfile::TempDir, extra: &str, env: &[(&str, &str)]) -> Self {
        let config = config_text(&dir, extra);
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let config = herald::config::load_from_str(&config, env)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let running = herald::start(config).await.unwrap();
        Self {
            ingest: running.ingest_addr,
            api: running.api_addr,
            dir,
            running: Some(running),
            http: reqwest::Client::new(),
        }
    }

    /// Starts herald over a store whose writes, syncs and resizes fail while the returned
    /// switch is on (a full disk); the store reopens itself as one on a plain file does.
    pub async fn start_switched(extra: &str) -> (Self, herald_storage::testing::FaultSwitch) {
        let dir = tempfile::tempdir().unwrap();
        let config = herald::config::load_from_str(&config_text(&dir, extra), Vec::new())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let (tx, rx) = std::sync::mpsc::channel();
        let running = herald::start_with(config, move |path, options| {
            let (store, switch) = herald_storage::testing::open_switched(path, options)?;
            let _ = tx.send(switch);
            Ok(store)
        })
        .await
        .unwrap();
        let server = Self {
            ingest: running.ingest_addr,
            api: running.api_addr,
            dir,
            running: Some(running),
            http: reqwest::Client::new(),
        };
        (server, rx.recv().unwrap())
    }

    /// Stops gracefully and hands back the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
        self.dir
    }

    pub fn ingest_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingest)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// GET on the API port with a token; returns the status and the JSON body.
    pub async fn api_get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(self.api_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POSTs a webhook; returns the status and the JSON body.
    pub async fn post_webhook(
        &self,
        source: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(self.ingest_url(&format!("/webhooks/{source}")))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

pub fn config_text(dir: &tempfile::TempDir, extra: &str) -> String {
    let db = dir.path().join("herald.redb");
    format!(
        "{BASE_CONFIG}\n[storage]\npath = {:?}\n\n[log]\nlevel = \"warn\"\n{extra}",
        db.display().to_string()
    )
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

pub fn hmac(key: &[u8], content: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(content);
    mac.finalize().into_bytes().to_vec()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// Headers of a Standard Webhooks delivery of `body`, computed independently of herald.
pub fn std_headers(id: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(STD_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let content = [format!("{id}.{ts}.").as_bytes(), body].concat();
    vec![
        h("webhook-id", id),
        h("webhook-timestamp", ts.to_string()),
        h(
            "webhook-signature",
            format!("v1,{}", b64(&hmac(&key, &content))),
        ),
    ]
}

/// Valid headers for `body` under each scheme of [`BASE_CONFIG`]'s sources.
pub fn signed(source: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let with_ts = |prefix: String| [prefix.as_bytes(), body].concat();
    match source {
        "std" => std_headers(id, ts, body),
        "stripe" => vec![h(
            "stripe-signature",
            format!(
                "t={ts},v1={}",
                hex::encode(hmac(b"whsec_stripe_raw_secret", &with_ts(format!("{ts}."))))
            ),
        )],
        "github" => vec![
            h("x-github-delivery", id),
            h("x-github-event", "push"),
            h(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(hmac(b"gh-secret", body))),
            ),
        ],
        "shopify" => vec![
            h("x-shopify-webhook-id", id),
            h("x-shopify-topic", "orders/create"),
            h("x-shopify-hmac-sha256", b64(&hmac(b"shopify-secret", body))),
        ],
        "slack" => vec![
            h("x-slack-request-timestamp", ts.to_string()),
            h(
                "x-slack-signature",
                format!(
                    "v0={}",
                    hex::encode(hmac(b"slack-secret", &with_ts(format!("v0:{ts}:"))))
                ),
            ),
        ],
        "generic" => vec![
            h("x-event-id", id),
            h("x-event-time", ts.to_string()),
            h(
                "x-event-signature",
                format!(
                    "sha256={}",
                    hex::encode(hmac(b"generic-secret", &with_ts(format!("{ts}."))))
                ),
            ),
        ],
        other => panic!("no signer for {other}"),
    }
}

pub mod process;
pub mod receiver;
pub mod tls;

/// A `[delivery]` table for tests: loopback receivers allowed, fast retries.
pub fn fast_delivery(max_attempts: u32) -> String {
    format!(
        "[delivery]\nallow_private_destinations = true\nmax_attempts = {max_attempts}\nbackoff_base_ms = 20\nbackoff_max_ms = 200\ntimeout_ms = 2000\n"
    )
}

/// A destination table taking every message, signed with [`STD_SECRET`].
pub fn destination(name: &str, url: &str) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nsources = [\"*\"]\nsecret = \"{STD_SECRET}\"\n"
    )
}

impl Server {
    /// Polls a message until every delivery reached `status` (panics after `timeout`).
    pub async fn wait_delivery(
        &self,
        id: &str,
        status: &str,
        timeout: std::time::Duration,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (_, msg) = self
                .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
                .await;
            let deliveries = msg["deliveries"].as_array().cloned().unwrap_or_default();
            if !deliveries.is_empty() && deliveries.iter().all(|d| d["status"] == status) {
                return msg;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never reached {status}: {msg}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Sends one genuine `std` webhook; returns the message id.
    pub async fn accept_std(&self, external_id: &str, body: &[u8]) -> String {
        let (status, json) = self
            .post_webhook("std", &std_headers(external_id, now(), body), body)
            .await;
        assert_eq!(status, 202, "{json}");
        json["id"].as_str().unwrap().to_owned()
    }

    /// A request with a JSON body on the API port.
    pub async fn api_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, self.api_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// [`std_headers`] for any `whsec_` secret.
pub fn std_headers_with(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let content = [format!("{id}.{ts}.").as_bytes(), body].concat();
    vec![
        h("webhook-id", id),
        h("webhook-timestamp", ts.to_string()),
        h(
            "webhook-signature",
            format!("v1,{}", b64(&hmac(&key, &content))),
        ),
    ]
}
