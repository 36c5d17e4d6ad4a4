//! Several herald nodes on one PostgreSQL database (CONTRACT §6), as real processes.
//!
//! - Three nodes take webhooks round robin while one of them is `SIGKILL`ed and restarted
//!   every couple of seconds: every 202 is stored, every acknowledged webhook reaches the
//!   receiver at least once, and the duplicates the receiver sees are counted and bounded by
//!   kills × the deliveries a node can have in flight.
//! - What one node changes (a DLQ retry, a bulk suppression, an erasure, a destination) the
//!   others see, through the API and on the delivery path (their caches are told).
//!
//! The database comes from `POSTGRES_TEST_URL` (see `herald_storage::test_postgres`):
//! without it these tests are skipped, except under `CI=true` where they fail.
// Each test is one scenario across several processes, read top to bottom.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Process, spawn_with_env};
use common::receiver::{Receiver, Reply};
use common::{ADMIN_TOKEN, BASE_CONFIG, STD_SECRET, now, std_headers};
use herald_storage::test_postgres::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

const NODES: usize = 3;
const SENDERS: usize = 12;
/// How long the load runs, and how often a node is killed meanwhile.
const LOAD_FOR: Duration = Duration::from_secs(8);
const KILL_EVERY: Duration = Duration::from_secs(2);
/// A node's in-flight budget (`herald_actors::dispatcher::BUDGET`): at most this many
/// deliveries can be sent and not yet recorded when a node dies.
const IN_FLIGHT: usize = 256;

/// One node's config: the shared database, a sink receiving everything, and `extra`.
fn node_config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "{BASE_CONFIG}\n[storage]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n\n\
         [delivery]\nallow_private_destinations = true\nmax_attempts = 8\n\
         backoff_base_ms = 50\nbackoff_max_ms = 500\ntimeout_ms = 2000\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &Path, node: usize) -> Process {
    spawn_with_env(
        config,
        &[("HERALD_SERVER_NODE_NAME", &format!("node-{node}"))],
    )
}

fn sink(name: &str, url: &str) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nsources = [\"*\"]\nsecret = \"{STD_SECRET}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_keep_every_acknowledged_webhook_through_kills() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(dir.path(), &db.url, &sink("sink", &receiver.url("/hook")));
    // The first node migrates the schema; the others find it done.
    let mut nodes: Vec<Process> = vec![start(&config, 0)];
    for n in 1..NODES {
        nodes.push(start(&config, n));
    }
    let ingest: Arc<Mutex<Vec<SocketAddr>>> =
        Arc::new(Mutex::new(nodes.iter().map(|p| p.ingest).collect()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // external id -> message id, for every 202
    let acknowledged: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Instant::now() + LOAD_FOR;
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (http, acknowledged, ingest) =
                (http.clone(), Arc::clone(&acknowledged), Arc::clone(&ingest));
            tokio::spawn(async move {
                let mut unanswered = Vec::new();
                let mut n = 0usize;
                while Instant::now() < stop {
                    let node = (sender + n) % NODES;
                    let addr = ingest.lock().unwrap()[node];
                    let id = format!("evt_s{sender}_{n}");
                    n += 1;
                    let body = format!(r#"{{"type":"cluster.test","n":{n}}}"#);
                    let mut req = http
                        .post(format!("http://{addr}/webhooks/std"))
                        .body(body.clone());
                    for (k, v) in std_headers(&id, now(), body.as_bytes()) {
                        req = req.header(k, v);
                    }
                    match req.send().await {
                        Ok(resp) if resp.status().as_u16() == 202 => {
                            let json: Value = resp.json().await.unwrap_or_default();
                            match json["id"].as_str() {
                                Some(msg) => {
                                    acknowledged.lock().unwrap().insert(id, msg.to_owned());
                                }
                                None => unanswered.push(id),
                            }
                        }
                        // 503 while a node's database connection is being re-made is allowed:
                        // nothing was acknowledged.
                        Ok(resp) if resp.status().as_u16() == 503 => unanswered.push(id),
                        Ok(resp) => panic!("unexpected status {} for {id}", resp.status()),
                        Err(_) => unanswered.push(id), // the node was killed under us
                    }
                }
                unanswered
            })
        })
        .collect();

    // Kill one node after another, each restarted at once under the same name.
    let mut kills = 0;
    let mut round = 0;
    while Instant::now() + KILL_EVERY < stop {
        tokio::time::sleep(KILL_EVERY).await;
        let victim = round % NODES;
        round += 1;
        nodes[victim].child.kill().unwrap(); // SIGKILL: no shutdown path runs
        nodes[victim].child.wait().unwrap();
        kills += 1;
        let config = config.clone();
        let restarted = tokio::task::spawn_blocking(move || start(&config, victim))
            .await
            .unwrap();
        ingest.lock().unwrap()[victim] = restarted.ingest;
        nodes[victim] = restarted;
    }
    let mut unanswered = Vec::new();
    for sender in senders {
        unanswered.extend(sender.await.unwrap());
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20 * SENDERS,
        "the load was too light to mean anything: {} acknowledged",
        acknowledged.len()
    );

    // Every 202 is stored, whichever node is asked.
    for (n, (id, msg)) in acknowledged.iter().enumerate() {
        let api = nodes[n % NODES].api;
        let resp = http
            .get(format!("http://{api}/v1/messages/{msg}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{id} ({msg}) acknowledged, then lost"
        );
    }

    // Every acknowledged webhook reaches the receiver at least once.
    let wanted: HashSet<&str> = acknowledged.values().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (delivered, total) = loop {
        let arrived = receiver.received();
        let ids: HashSet<String> = arrived
            .iter()
            .filter_map(|r| {
                r.headers
                    .get("webhook-id")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .collect();
        let missing = wanted.iter().filter(|id| !ids.contains(**id)).count();
        if missing == 0 {
            break (ids, arrived.len());
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged webhooks never reached the receiver",
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Resent after a kill, a delivery may arrive twice; never more than what the killed nodes
    // had in flight. (Webhooks that got no answer may have been stored and delivered too.)
    let duplicates = total - delivered.len();
    assert!(
        duplicates <= kills * IN_FLIGHT,
        "{duplicates} duplicate deliveries after {kills} kills"
    );
    eprintln!(
        "{} acknowledged over {kills} kills of {NODES} nodes, all stored and delivered; \
         {} unanswered; {duplicates} duplicate deliveries",
        acknowledged.len(),
        unanswered.len()
    );
    for mut node in nodes {
        node.signal("TERM");
        let exit = node.child.wait().unwrap();
        assert!(exit.success(), "SIGTERM must exit 0, got {exit:?}");
    }
}

/// A client of one node's API.
struct Api {
    http: reqwest::Client,
    addr: SocketAddr,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn publish(&self, recipient: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/messages",
                Some(json!({"event_type": "cluster.note", "payload": {"to": recipient}, "recipient": recipient})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Polls until `id`'s delivery to `destination` has `status`.
    async fn wait_status(&self, id: &str, destination: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let message = self.get(&format!("/v1/messages/{id}")).await;
            let found = message["deliveries"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["destination"] == destination))
                .map(|d| d["status"].clone());
            if found.as_ref().and_then(Value::as_str) == Some(status) {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "{id} to {destination}: wanted {status}, have {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_changes_the_others_see() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let flaky = Receiver::start().await;
    flaky.default_reply(Reply::status(500));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}max_attempts = 1\n", sink("flaky", &flaky.url("/hook")));
    let config = node_config(dir.path(), &db.url, &extra);
    let nodes: Vec<Process> = (0..NODES).map(|n| start(&config, n)).collect();
    let http = reqwest::Client::new();
    let api: Vec<Api> = nodes
        .iter()
        .map(|p| Api {
            http: http.clone(),
            addr: p.api,
        })
        .collect();
    let (a, b, c) = (&api[0], &api[1], &api[2]);

    // A delivery dies on whichever node sent it; the DLQ shows it on every node; a retry
    // through another node reaches the receiver.
    let id = a.publish("dlq@example.com").await;
    a.wait_status(&id, "flaky", "dead").await;
    let dlq = b.get("/v1/dlq?destination=flaky").await;
    let entry = dlq["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in node B's DLQ: {dlq}"))
        .clone();
    flaky.default_reply(Reply::status(200));
    let dead_id = entry["id"].as_str().unwrap();
    let (status, body) = c
        .call(Method::POST, &format!("/v1/dlq/{dead_id}/retry"), None)
        .await;
    assert!(
        status == 200 || status == 202,
        "retry through node C: {status} {body}"
    );
    a.wait_status(&id, "flaky", "succeeded").await;
    assert!(
        flaky.received().iter().any(|r| r
            .headers
            .get("webhook-id")
            .is_some_and(|h| h == id.as_str())),
        "the retried delivery reached the receiver"
    );

    // Node C looks a recipient up (and caches that nothing suppresses it); node A then
    // suppresses it in bulk; node C's next message to it is suppressed, not sent.
    let before = c.publish("bulk@example.com").await;
    c.wait_status(&before, "flaky", "succeeded").await;
    let (status, body) = a
        .call(
            Method::POST,
            "/v1/suppressions/bulk",
            Some(json!({"items": [
                {"recipient": "bulk@example.com", "channel": "*", "reason": "complaint"},
                {"recipient": "other@example.com", "channel": "*", "reason": "bounce"},
            ]})),
        )
        .await;
    assert!(
        status == 200 || status == 201,
        "bulk suppression: {status} {body}"
    );
    let listed = b.get("/v1/suppressions?recipient=bulk@example.com").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    let after = c.publish("bulk@example.com").await;
    c.wait_status(&after, "flaky", "suppressed").await;

    // An opt-out, then an erasure through node B: node C exports nothing of the address, and
    // node A's next message to it is still suppressed (the opt-out is kept, pseudonymised).
    let (status, body) = a
        .call(
            Method::POST,
            "/v1/suppressions",
            Some(
                json!({"recipient": "erase@example.com", "channel": "*", "reason": "user_request"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let old = a.publish("erase@example.com").await;
    a.wait_status(&old, "flaky", "suppressed").await;
    let (status, body) = b
        .call(Method::DELETE, "/v1/subjects/erase@example.com", None)
        .await;
    assert!(
        status == 200 || status == 204,
        "erasure through node B: {status} {body}"
    );
    let export = c.get("/v1/subjects/erase@example.com/export").await;
    assert!(
        export["messages"].as_array().is_none_or(Vec::is_empty),
        "node C still holds the erased messages: {export}"
    );
    let (status, _) = c
        .call(Method::GET, &format!("/v1/messages/{old}"), None)
        .await;
    assert_eq!(
        status, 404,
        "the erased recipient's message is gone everywhere"
    );
    let later = a.publish("erase@example.com").await;
    a.wait_status(&later, "flaky", "suppressed").await;

    // A destination created through one node routes on the others at once.
    let fresh = Receiver::start().await;
    let (status, body) = b
        .call(
            Method::POST,
            "/v1/destinations",
            Some(json!({"name": "fresh", "url": fresh.url("/new"), "sources": ["*"], "secret": STD_SECRET})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let routed = c.publish("fresh@example.com").await;
        let message = c.get(&format!("/v1/messages/{routed}")).await;
        if message["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["destination"] == "fresh"))
        {
            c.wait_status(&routed, "fresh", "succeeded").await;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node C never routed to the destination node B created"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Alerts and figures are per node, each labelled with its own name.
    for (n, node) in api.iter().enumerate() {
        let text = http
            .get(format!("http://{}/metrics", node.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!("node=\"node-{n}\"")),
            "node-{n}'s metrics are not labelled with its name"
        );
    }
    for mut node in nodes {
        node.signal("TERM");
        node.child.wait().unwrap();
    }
}

/// A loopback TCP proxy in front of PostgreSQL that can be cut (every connection closed, new
/// ones refused) and restored: a database lost and back, without stopping the shared cluster.
struct Proxy {
    addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every cut: connections of an older generation close themselves.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, generation2) = (Arc::clone(&up), Arc::clone(&generation));
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let born = generation2.load(Ordering::SeqCst);
                let generation = Arc::clone(&generation2);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let cut = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = cut => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"));
    format!("{scheme}://{}{addr}/{path}", user.unwrap_or_default())
}

fn upstream(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_503_until_it_is_back_and_nothing_acknowledged_is_lost() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let proxy = Proxy::start(upstream(&db.url)).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(
        dir.path(),
        &through(&db.url, proxy.addr),
        &sink("sink", &receiver.url("/hook")),
    );
    let mut node = start(&config, 0);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let send = |id: String| {
        let (http, ingest) = (http.clone(), node.ingest);
        async move {
            let body = r#"{"type":"lost.db"}"#;
            let mut req = http
                .post(format!("http://{ingest}/webhooks/std"))
                .body(body);
            for (k, v) in std_headers(&id, now(), body.as_bytes()) {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or_default())
        }
    };
    let ready = |http: reqwest::Client, api: SocketAddr| async move {
        http.get(format!("http://{api}/readyz"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    };
    let mut acknowledged = Vec::new();
    let (status, body) = send("evt_before".into()).await;
    assert_eq!(status, 202, "{body}");
    acknowledged.push(body["id"].as_str().unwrap().to_owned());

    proxy.cut();
    // Within a few seconds, herald notices: /readyz and ingest say 503.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        let (status, body) = send(format!("evt_during_{n}")).await;
        match status {
            202 => acknowledged.push(body["id"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                if ready(http.clone(), node.api).await == 503 {
                    break;
                }
            }
            other => panic!("ingest answered {other} with the database gone: {body}"),
        }
        assert!(
            Instant::now() < deadline,
            "herald still ready without its database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(http.clone(), node.api).await != 200 {
        assert!(
            Instant::now() < deadline,
            "herald did not come back with its database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = send("evt_after".into()).await;
    assert_eq!(status, 202, "{body}");
    acknowledged.push(body["id"].as_str().unwrap().to_owned());

    // Everything acknowledged is stored and delivered.
    for id in &acknowledged {
        let resp = http
            .get(format!("http://{}/v1/messages/{id}", node.api))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{id} acknowledged, then lost");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|r| {
                r.headers
                    .get("webhook-id")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .collect();
        if acknowledged.iter().all(|id| ids.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged webhooks not delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.signal("TERM");
    node.child.wait().unwrap();
}

#[tokio::test]
async fn an_unreachable_database_is_a_startup_error_naming_the_key() {
    // A port nobody listens on: bind one, then let it go.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(dir.path(), &format!("postgres://herald@{addr}/herald"), "");
    let output = std::process::Command::new(common::process::HERALD)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage.postgres_url"), "{stderr}");
}
