//! `soak`: herald under mixed load for N minutes, `SIGKILL`ed and restarted on the same data at
//! random moments, then checked: every acknowledged message reached the receiver or is in the
//! DLQ, nothing acknowledged was stored twice or forgotten, memory stayed under its bound.
//!
//! - **herald** is the real release binary (`herald serve --config FILE`), ports 0 (learned from
//!   its `ingest listening on` / `api listening on` log lines after every start), one
//!   standard-webhooks source `soak`, one destination `sink` taking everything (webhooks and
//!   published messages) and pointing at the receiver below. Delivery: private destinations
//!   allowed, 8 attempts, backoff 200 ms … 5 s, 2 s per attempt; circuit breaker at 20
//!   consecutive failures, open 2 s; a client is blocked after 20 invalid signatures, for 30 s.
//! - **the receiver** is a hyper server in this process. While the load runs it is flaky: of 100
//!   deliveries it answers 80 with `200`, 8 with `500`, 5 with `503` and 4 with `429` (both with
//!   `Retry-After: 1`), and 3 it processes but answers only after 2.5 s, past herald's 2 s
//!   timeout (so herald retries something that was processed: a duplicate). Once the load stops
//!   it answers `200` at once. It records, per `webhook-id` (herald's message id), how often it
//!   processed it, and checks every `webhook-signature` against the destination secret.
//! - **the load**: `--workers` loops share `--rate` requests per second. Of 100 requests: 48 new
//!   signed webhooks, 10 repeats of an acknowledged webhook id (must answer `200` with the same
//!   message id), 6 bad signatures sent from 127.0.0.2 (401, then 403 once that address is
//!   blocked), 3 stale timestamps, 2 missing signature headers, 1 unknown source (401, 400, 404,
//!   from 127.0.0.1, which must never be blocked), 12 messages published with `POST
//!   /v1/messages` and an idempotency key, 18 API reads (`GET /v1/messages`, `/v1/dlq`,
//!   `/v1/destinations/sink`, and `/v1/messages/{id}` of an acknowledged message, which must
//!   exist). A webhook or publication that got no answer (connection refused or reset while
//!   herald is down, a 5 s timeout, a `503`) is unacknowledged: it is sent again later, with the
//!   same id or idempotency key, until herald answers `202` or `200` (duplicate).
//! - **the killer**: every 30–90 s (random, `--kill-min-secs`/`--kill-max-secs`) herald is
//!   `SIGKILL`ed and restarted on the same data dir; an exit nobody asked for is a failure.
//!   herald's `VmRSS` is sampled every second and its `VmHWM` read before every kill.
//! - **the end**: the load stops, the receiver turns healthy, every unacknowledged request is
//!   resent until answered, then the soak waits (up to `--drain-timeout-secs`) until every
//!   acknowledged message id has been processed by the receiver or sits in `GET /v1/dlq`.
//!
//! It fails (exit 1) if any acknowledged message is lost, if herald's memory went over
//! `--rss-bound-mib`, if herald exited by itself, or on any contract violation seen on the way
//! (an acknowledged id accepted again, an acknowledged message missing, a bad delivery
//! signature, an unexpected status).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::herald::{proc_status_kib, resolve_binary};
use crate::load::to_f64;
use crate::sign::{self, BENCH_SECRET, Signer};

const API_TOKEN: &str = "soak-token-0123456789";
const SOURCE: &str = "soak";
const DESTINATION: &str = "sink";
/// Size of every signed webhook body.
const BODY_BYTES: usize = 512;
/// One request's budget on the client side; past it, the request is unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long herald may take to start (it repairs its database after a `SIGKILL`).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
/// herald's per-attempt delivery timeout (`delivery.timeout_ms`) …
const DELIVERY_TIMEOUT_MS: u64 = 2_000;
/// … and how long the receiver sits on a "slow" delivery: longer.
const SLOW_REPLY: Duration = Duration::from_millis(2_500);
/// herald's log lines that give its addresses.
const INGEST_MARKER: &str = "ingest listening on ";
const API_MARKER: &str = "api listening on ";
/// Where the bad signatures come from, so only that address gets blocked.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the load runs, in minutes (the drain and the checks come after).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1440))]
    minutes: u64,
    /// Requests per second, all kinds together.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    rate: u64,
    /// Client loops sharing that rate, one request in flight each.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// Shortest time between two `SIGKILL`s, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    kill_min_secs: u64,
    /// Longest time between two `SIGKILL`s, in seconds.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    kill_max_secs: u64,
    /// herald's resident memory must stay under this many MiB.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rss_bound_mib: u64,
    /// How long the backlog may take to drain once the load stops.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    drain_timeout_secs: u64,
    /// Seed of every random choice (default: from the clock; printed, to repeat a run).
    #[arg(long)]
    seed: Option<u64>,
    /// The herald binary.
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// Keep herald's data directory (its path is printed) instead of deleting it.
    #[arg(long)]
    keep_data: bool,
    /// Also print the figures as JSON on the last line of stdout.
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------------------------
// Small pieces
// ---------------------------------------------------------------------------------------------

/// xorshift64*: reproducible from `--seed`, no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn destination_secret() -> String {
    format!("whsec_{}", STANDARD.encode(b"herald-soak-destination-key!"))
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

/// herald's config for the soak. The server rejects unknown keys, so this is exactly it.
fn config_toml(db: &Path, receiver: SocketAddr) -> Result<String> {
    let db = db.to_str().context("the data dir is not UTF-8")?;
    if db.contains(['"', '\\']) {
        bail!("the data dir {db} needs escaping in TOML; use a plain temp dir");
    }
    Ok(format!(
        r#"[server]
ingest_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"
shutdown_grace_ms = 2000

[storage]
path = "{db}"

[api]
token = "{API_TOKEN}"

[log]
format = "human"
level = "warn,herald=info"

[delivery]
allow_private_destinations = true
max_attempts = 8
backoff_base_ms = 200
backoff_max_ms = 5000
timeout_ms = {DELIVERY_TIMEOUT_MS}

[circuit_breaker]
failure_threshold = 20
open_ms = 2000

[ingest]
block_after_invalid = 20
block_secs = 30

[[sources]]
name = "{SOURCE}"
scheme = "standard-webhooks"
secret = "{BENCH_SECRET}"

[[destinations]]
name = "{DESTINATION}"
url = "http://{receiver}/hooks"
sources = ["*"]
secret = "{secret}"
"#,
        secret = destination_secret(),
    ))
}

// ---------------------------------------------------------------------------------------------
// herald, the process
// ---------------------------------------------------------------------------------------------

/// What herald logged, over all its lives.
#[derive(Debug, Default)]
struct Logs {
    lines: u64,
    errors: u64,
    panics: u64,
    first_errors: Vec<String>,
    tail: VecDeque<String>,
}

/// One life of herald.
#[derive(Debug)]
struct Proc {
    child: Child,
    pid: u32,
    ingest: SocketAddr,
    api: SocketAddr,
}

/// Drains one of herald's pipes until it closes, sending the addresses it finds.
fn read_log(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<Logs>>,
    found: mpsc::Sender<(&'static str, SocketAddr)>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            for (port, marker) in [("ingest", INGEST_MARKER), ("api", API_MARKER)] {
                if let Some(at) = line.find(marker) {
                    let rest = &line[at + marker.len()..];
                    let token = rest.split_whitespace().next().unwrap_or("");
                    if let Ok(addr) = token.parse() {
                        let _ = found.try_send((port, addr));
                    }
                }
            }
            let mut logs = lock(&logs);
            logs.lines += 1;
            if line.contains("panicked") {
                logs.panics += 1;
            }
            if line.contains("ERROR") {
                logs.errors += 1;
                if logs.first_errors.len() < 10 {
                    logs.first_errors.push(line.clone());
                }
            }
            if logs.tail.len() == 30 {
                logs.tail.pop_front();
            }
            logs.tail.push_back(line);
        }
    });
}

impl Proc {
    /// Starts `herald serve --config CONFIG` and waits until it logs both addresses.
    async fn spawn(binary: &Path, config: &Path, logs: &Arc<Mutex<Logs>>) -> Result<Self> {
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("herald exited immediately")?;
        let (tx, mut rx) = mpsc::channel(8);
        read_log(
            child.stdout.take().context("no stdout")?,
            Arc::clone(logs),
            tx.clone(),
        );
        read_log(
            child.stderr.take().context("no stderr")?,
            Arc::clone(logs),
            tx,
        );
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (mut ingest, mut api) = (None, None);
        while ingest.is_none() || api.is_none() {
            tokio::select! {
                found = rx.recv() => match found {
                    Some(("ingest", addr)) => ingest = Some(addr),
                    Some((_, addr)) => api = Some(addr),
                    None => {
                        let status = child.wait().await.ok();
                        bail!(
                            "herald exited during startup ({status:?}); last lines:\n{}",
                            lock(logs).tail.iter().cloned().collect::<Vec<_>>().join("\n")
                        );
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    let _ = child.start_kill();
                    bail!("herald did not log its addresses within {STARTUP_TIMEOUT:?}");
                }
            }
        }
        let (Some(ingest), Some(api)) = (ingest, api) else {
            bail!("herald's addresses went missing");
        };
        if !ingest.ip().is_loopback() || !api.ip().is_loopback() {
            let _ = child.start_kill();
            bail!("herald listens on {ingest} / {api}, not loopback; refusing to load it");
        }
        Ok(Self {
            child,
            pid,
            ingest,
            api,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

/// What the receiver saw.
#[derive(Debug, Default)]
struct Received {
    /// Per message id, how often it was processed (answered `200`, or processed and then
    /// answered too late).
    processed: HashMap<String, u32>,
    requests: u64,
    /// Failures injected, by kind.
    injected: BTreeMap<&'static str, u64>,
    bad_signatures: u64,
    missing_id: u64,
}

#[derive(Debug)]
struct ReceiverShared {
    received: Mutex<Received>,
    healthy: AtomicBool,
    rng: Mutex<Rng>,
    verifier: Signer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Ok,
    Slow,
    Error500,
    Unavailable503,
    TooMany429,
}

fn header<'a>(parts: &'a hyper::http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(
    req: Request<Incoming>,
    shared: Arc<ReceiverShared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let id = header(&parts, "webhook-id").filter(|id| !id.is_empty());
    let signed = match (id, header(&parts, "webhook-timestamp")) {
        (Some(id), Some(ts)) => {
            let expected = shared.verifier.sign(id, ts, &body);
            header(&parts, "webhook-signature")
                .is_some_and(|sigs| sigs.split(' ').any(|s| s == expected))
        }
        _ => false,
    };
    let fate = if shared.healthy.load(Ordering::Relaxed) {
        Fate::Ok
    } else {
        match lock(&shared.rng).below(100) {
            0..80 => Fate::Ok,
            80..88 => Fate::Error500,
            88..93 => Fate::Unavailable503,
            93..97 => Fate::TooMany429,
            _ => Fate::Slow,
        }
    };
    {
        let mut r = lock(&shared.received);
        r.requests += 1;
        if !signed {
            r.bad_signatures += 1;
        }
        match (fate, id) {
            (Fate::Ok | Fate::Slow, Some(id)) => {
                *r.processed.entry(id.to_owned()).or_default() += 1;
            }
            (Fate::Ok | Fate::Slow, None) => r.missing_id += 1,
            _ => {}
        }
        let kind = match fate {
            Fate::Ok => None,
            Fate::Slow => Some("slow 200 (after herald's timeout)"),
            Fate::Error500 => Some("500"),
            Fate::Unavailable503 => Some("503 + Retry-After"),
            Fate::TooMany429 => Some("429 + Retry-After"),
        };
        if let Some(kind) = kind {
            *r.injected.entry(kind).or_default() += 1;
        }
    }
    let (status, retry_after) = match fate {
        Fate::Ok => (StatusCode::OK, false),
        Fate::Slow => {
            tokio::time::sleep(SLOW_REPLY).await;
            (StatusCode::OK, false)
        }
        Fate::Error500 => (StatusCode::INTERNAL_SERVER_ERROR, false),
        Fate::Unavailable503 => (StatusCode::SERVICE_UNAVAILABLE, true),
        Fate::TooMany429 => (StatusCode::TOO_MANY_REQUESTS, true),
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    if retry_after {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    Ok(resp)
}

/// The flaky receiver, on this process's runtime.
#[derive(Debug)]
struct Receiver {
    addr: SocketAddr,
    shared: Arc<ReceiverShared>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(seed: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the receiver")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ReceiverShared {
            received: Mutex::default(),
            healthy: AtomicBool::new(false),
            rng: Mutex::new(Rng::new(seed ^ 0x5EED)),
            verifier: Signer::from_secret(&destination_secret())?,
        });
        let serving = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| receive(req, Arc::clone(&shared)));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    fn with<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        f(&lock(&self.shared.received))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

type Http = Client<HttpConnector, Full<Bytes>>;

fn http_client(local: Option<IpAddr>) -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_local_address(local);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        // Below herald's 5 s header-read timeout, which also closes idle keep-alive connections.
        .pool_idle_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// The kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Valid,
    Resend,
    Duplicate,
    BadSignature,
    Stale,
    MissingHeader,
    UnknownSource,
    Publish,
    ListMessages,
    ListDlq,
    GetDestination,
    GetMessage,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Valid => "webhook (new id)",
            Self::Resend => "resend of an unanswered one",
            Self::Duplicate => "webhook (acknowledged id again)",
            Self::BadSignature => "bad signature (127.0.0.2)",
            Self::Stale => "stale timestamp",
            Self::MissingHeader => "missing signature header",
            Self::UnknownSource => "unknown source",
            Self::Publish => "POST /v1/messages",
            Self::ListMessages => "GET /v1/messages",
            Self::ListDlq => "GET /v1/dlq",
            Self::GetDestination => "GET /v1/destinations/sink",
            Self::GetMessage => "GET /v1/messages/{id}",
        }
    }

    /// The mix, out of 100.
    fn pick(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..48 => Self::Valid,
            48..58 => Self::Duplicate,
            58..64 => Self::BadSignature,
            64..67 => Self::Stale,
            67..69 => Self::MissingHeader,
            69..70 => Self::UnknownSource,
            70..82 => Self::Publish,
            82..87 => Self::ListMessages,
            87..91 => Self::ListDlq,
            91..95 => Self::GetDestination,
            _ => Self::GetMessage,
        }
    }
}

/// A request to send again until herald answers it.
#[derive(Debug, Clone)]
enum Pending {
    Webhook { id: String, body: Bytes },
    Publish { body: Bytes },
}

/// Per kind: requests, answers by status, requests without an answer.
#[derive(Debug, Default, Clone)]
struct OpStats {
    sent: u64,
    statuses: BTreeMap<u16, u64>,
    no_answer: u64,
    slowest: Duration,
}

/// Everything the load learned.
#[derive(Debug, Default)]
struct Ledger {
    /// Key (`w:<webhook id>` or `p:<idempotency key>`) → herald's message id, for every request
    /// herald acknowledged (202, or 200 for a resend).
    acked: HashMap<String, String>,
    /// Acknowledged webhook ids, to repeat; acknowledged message ids, to read back.
    acked_webhooks: Vec<String>,
    acked_messages: Vec<String>,
    unanswered: HashMap<String, Pending>,
    resent: u64,
    stats: BTreeMap<Op, OpStats>,
    violations: Vec<String>,
    violation_count: u64,
}

impl Ledger {
    fn violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < 50 {
            self.violations.push(what);
        }
    }

    fn ack(&mut self, key: String, message: String) {
        self.unanswered.remove(&key);
        if let Some(id) = key.strip_prefix("w:") {
            self.acked_webhooks.push(id.to_owned());
        }
        self.acked_messages.push(message.clone());
        self.acked.insert(key, message);
    }
}

/// The answer to one request: status and body, or why there was none.
type Answer = Result<(u16, Bytes), String>;

/// Shared by every loop.
#[derive(Debug)]
struct Ctx {
    signer: Signer,
    run: String,
    seq: AtomicU64,
    addrs: RwLock<Option<(SocketAddr, SocketAddr)>>,
    main: Http,
    attacker: Http,
    ledger: Mutex<Ledger>,
    stopping: AtomicBool,
}

fn message_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(v.get("id")?.as_str()?.to_owned())
}

fn is_duplicate(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("duplicate")?.as_bool())
        .unwrap_or(false)
}

impl Ctx {
    fn addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        *self
            .addrs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_addrs(&self, addrs: Option<(SocketAddr, SocketAddr)>) {
        *self
            .addrs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addrs;
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    async fn send(
        &self,
        http: &Http,
        method: Method,
        uri: String,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = http.request(req).await.map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| "timeout".to_owned())?
    }

    /// A standard-webhooks `POST /webhooks/{source}` signed for `id` now (or `signature`).
    async fn webhook(
        &self,
        http: &Http,
        ingest: SocketAddr,
        source: &str,
        id: &str,
        body: Bytes,
        tamper: impl FnOnce(&mut Vec<(&str, String)>),
    ) -> Answer {
        let ts = sign::unix_now_secs().to_string();
        let signature = self.signer.sign(id, &ts, &body);
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts),
            ("webhook-signature", signature),
        ];
        tamper(&mut headers);
        let uri = format!("http://{ingest}/webhooks/{source}");
        self.send(http, Method::POST, uri, &headers, body).await
    }

    async fn publish(&self, api: SocketAddr, body: Bytes) -> Answer {
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("authorization", format!("Bearer {API_TOKEN}")),
        ];
        let uri = format!("http://{api}/v1/messages");
        self.send(&self.main, Method::POST, uri, &headers, body)
            .await
    }

    async fn api_get(&self, api: SocketAddr, path: &str) -> Answer {
        let headers = [("authorization", format!("Bearer {API_TOKEN}"))];
        let uri = format!("http://{api}{path}");
        self.send(&self.main, Method::GET, uri, &headers, Bytes::new())
            .await
    }

    /// Records an answer in the per-kind figures.
    fn count(&self, op: Op, answer: &Answer, took: Duration) {
        let mut ledger = self.ledger();
        let figures = ledger.stats.entry(op).or_default();
        figures.sent += 1;
        figures.slowest = figures.slowest.max(took);
        match answer {
            Ok((code, _)) => *figures.statuses.entry(*code).or_default() += 1,
            Err(_) => figures.no_answer += 1,
        }
    }

    /// Settles a request that must be acknowledged: `202` (or, for a resend, `200`) records it;
    /// no answer or `503` leaves it to be sent again; anything else is a violation.
    fn settle(&self, key: String, pending: Pending, answer: Answer, resend: bool) {
        let mut ledger = self.ledger();
        match answer {
            Ok((202 | 200, body)) => {
                let Some(message) = message_id(&body) else {
                    ledger.violation(format!("{key}: acknowledged without an id"));
                    return;
                };
                let duplicate = is_duplicate(&body);
                if duplicate && !resend {
                    ledger.violation(format!("{key}: a never-sent request answered duplicate"));
                }
                if let Some(before) = ledger.acked.get(&key)
                    && *before != message
                {
                    let v = format!("{key}: acknowledged as {before}, then as {message}");
                    ledger.violation(v);
                }
                ledger.ack(key, message);
            }
            Ok((503, _)) | Err(_) => {
                ledger.unanswered.insert(key, pending);
            }
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(&body).into_owned();
                ledger.violation(format!("{key}: unexpected {status} {body}"));
            }
        }
    }

    /// Checks a request whose answer must be one of `expected` (no answer is fine).
    fn expect(&self, op: Op, answer: &Answer, expected: &[u16]) {
        if let Ok((status, body)) = answer
            && !expected.contains(status)
            && *status != 503
        {
            let body = String::from_utf8_lossy(body).into_owned();
            let v = format!("{}: {status} {body}, expected {expected:?}", op.name());
            self.ledger().violation(v);
        }
    }

    async fn run_op(&self, op: Op, rng: &mut Rng, ingest: SocketAddr, api: SocketAddr) {
        let started = Instant::now();
        let answer = match op {
            Op::Valid => self.new_webhook(ingest).await,
            Op::Resend => self.resend(ingest, api).await,
            Op::Duplicate => self.duplicate(rng, ingest).await,
            Op::Publish => self.new_publication(api).await,
            Op::GetMessage => self.read_back(rng, api).await,
            _ => self.invalid_or_read(op, ingest, api).await,
        };
        if let Some(answer) = answer {
            self.count(op, &answer, started.elapsed());
        }
    }

    async fn new_webhook(&self, ingest: SocketAddr) -> Option<Answer> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("soak_{}_{n}", self.run);
        let body = Bytes::from(sign::padded_body(&id, BODY_BYTES).ok()?);
        let answer = self
            .webhook(&self.main, ingest, SOURCE, &id, body.clone(), |_| {})
            .await;
        let key = format!("w:{id}");
        self.settle(key, Pending::Webhook { id, body }, answer.clone(), false);
        Some(answer)
    }

    async fn new_publication(&self, api: SocketAddr) -> Option<Answer> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let key = format!("pub_{}_{n}", self.run);
        let body = json!({
            "event_type": "soak.published",
            "payload": {"n": n, "run": self.run},
            "idempotency_key": key,
        });
        let body = Bytes::from(serde_json::to_vec(&body).ok()?);
        let answer = self.publish(api, body.clone()).await;
        self.settle(
            format!("p:{key}"),
            Pending::Publish { body },
            answer.clone(),
            false,
        );
        Some(answer)
    }

    /// Sends one unanswered request again; `None` if there is none.
    async fn resend(&self, ingest: SocketAddr, api: SocketAddr) -> Option<Answer> {
        let (key, pending) = {
            let mut ledger = self.ledger();
            let key = ledger.unanswered.keys().next()?.clone();
            let pending = ledger.unanswered.remove(&key)?;
            ledger.resent += 1;
            (key, pending)
        };
        let answer = match &pending {
            Pending::Webhook { id, body } => {
                self.webhook(&self.main, ingest, SOURCE, id, body.clone(), |_| {})
                    .await
            }
            Pending::Publish { body } => self.publish(api, body.clone()).await,
        };
        self.settle(key, pending, answer.clone(), true);
        Some(answer)
    }

    /// An acknowledged webhook id again, with another body: `200` and the same message id.
    async fn duplicate(&self, rng: &mut Rng, ingest: SocketAddr) -> Option<Answer> {
        let (id, message) = {
            let ledger = self.ledger();
            let len = u64::try_from(ledger.acked_webhooks.len()).ok()?;
            if len == 0 {
                return None;
            }
            let id = ledger.acked_webhooks[usize::try_from(rng.below(len)).ok()?].clone();
            let message = ledger.acked.get(&format!("w:{id}"))?.clone();
            (id, message)
        };
        let body = Bytes::from_static(br#"{"type":"soak.duplicate"}"#);
        let answer = self
            .webhook(&self.main, ingest, SOURCE, &id, body, |_| {})
            .await;
        match &answer {
            Ok((200, body)) if message_id(body).as_deref() == Some(&message) => {}
            Ok((503, _)) | Err(_) => {}
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(body).into_owned();
                let v = format!(
                    "acknowledged webhook {id} ({message}) sent again: {status} {body}, \
                     expected 200 with the same id"
                );
                self.ledger().violation(v);
            }
        }
        Some(answer)
    }

    /// An acknowledged message read back: it must exist.
    async fn read_back(&self, rng: &mut Rng, api: SocketAddr) -> Option<Answer> {
        let message = {
            let ledger = self.ledger();
            let len = u64::try_from(ledger.acked_messages.len()).ok()?;
            if len == 0 {
                return None;
            }
            ledger.acked_messages[usize::try_from(rng.below(len)).ok()?].clone()
        };
        let answer = self.api_get(api, &format!("/v1/messages/{message}")).await;
        self.expect(Op::GetMessage, &answer, &[200]);
        Some(answer)
    }

    async fn invalid_or_read(&self, op: Op, ingest: SocketAddr, api: SocketAddr) -> Option<Answer> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("soak_invalid_{}_{n}", self.run);
        let body = Bytes::from_static(br#"{"type":"soak.invalid"}"#);
        let (answer, expected): (Answer, &[u16]) = match op {
            Op::BadSignature => {
                let answer = self
                    .webhook(&self.attacker, ingest, SOURCE, &id, body, |h| {
                        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".clone_into(&mut h[3].1);
                    })
                    .await;
                (answer, &[401, 403])
            }
            Op::Stale => {
                let stale = sign::unix_now_secs().saturating_sub(3_600).to_string();
                let signature = self.signer.sign(&id, &stale, &body);
                let answer = self
                    .webhook(&self.main, ingest, SOURCE, &id, body, |h| {
                        h[2].1 = stale;
                        h[3].1 = signature;
                    })
                    .await;
                (answer, &[401])
            }
            Op::MissingHeader => {
                let answer = self
                    .webhook(&self.main, ingest, SOURCE, &id, body, |h| {
                        h.truncate(3);
                    })
                    .await;
                (answer, &[400])
            }
            Op::UnknownSource => {
                let answer = self
                    .webhook(&self.main, ingest, "no-such-source", &id, body, |_| {})
                    .await;
                (answer, &[404])
            }
            Op::ListMessages => (self.api_get(api, "/v1/messages?limit=50").await, &[200]),
            Op::ListDlq => (self.api_get(api, "/v1/dlq?limit=50").await, &[200]),
            _ => (
                self.api_get(api, &format!("/v1/destinations/{DESTINATION}"))
                    .await,
                &[200],
            ),
        };
        self.expect(op, &answer, expected);
        Some(answer)
    }
}

/// One client loop: a request every `period`, until the load stops.
async fn worker(ctx: Arc<Ctx>, seed: u64, period: Duration) {
    let mut rng = Rng::new(seed);
    // Spread the loops' ticks over the period.
    tokio::time::sleep(period.mul_f64(to_f64(rng.below(1_000)) / 1_000.0)).await;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !ctx.stopping.load(Ordering::Relaxed) {
        tick.tick().await;
        let Some((ingest, api)) = ctx.addrs() else {
            continue; // herald is restarting
        };
        let resend = !ctx.ledger().unanswered.is_empty() && rng.below(2) == 0;
        let op = if resend {
            Op::Resend
        } else {
            Op::pick(&mut rng)
        };
        ctx.run_op(op, &mut rng, ingest, api).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The killer
// ---------------------------------------------------------------------------------------------

/// What the supervisor saw.
#[derive(Debug, Default)]
struct Supervision {
    kills: u32,
    /// From spawn to both addresses logged, per restart.
    restarts: Vec<Duration>,
    max_rss_kib: u64,
    max_hwm_kib: u64,
    unexpected_exits: Vec<String>,
}

impl Supervision {
    fn sample(&mut self, pid: u32) {
        if let Ok(kib) = proc_status_kib(pid, "VmRSS") {
            self.max_rss_kib = self.max_rss_kib.max(kib);
        }
    }

    fn high_water(&mut self, pid: u32) {
        if let Ok(kib) = proc_status_kib(pid, "VmHWM") {
            self.max_hwm_kib = self.max_hwm_kib.max(kib);
        }
    }
}

struct Launch {
    binary: PathBuf,
    config: PathBuf,
    logs: Arc<Mutex<Logs>>,
}

impl Launch {
    async fn restart(&self, ctx: &Ctx, sup: &mut Supervision) -> Result<Proc> {
        let started = Instant::now();
        let proc = Proc::spawn(&self.binary, &self.config, &self.logs).await?;
        sup.restarts.push(started.elapsed());
        ctx.set_addrs(Some((proc.ingest, proc.api)));
        Ok(proc)
    }
}

/// Owns herald while the load runs: samples its memory every second, restarts it if it exits,
/// and `SIGKILL`s and restarts it every `kill_min`–`kill_max` seconds.
async fn supervise(
    ctx: Arc<Ctx>,
    launch: Arc<Launch>,
    mut proc: Proc,
    mut rng: Rng,
    kill_every: (u64, u64),
) -> Result<(Proc, Supervision)> {
    let mut sup = Supervision::default();
    let next = |rng: &mut Rng| {
        Instant::now() + Duration::from_secs(rng.between(kill_every.0, kill_every.1))
    };
    let mut kill_at = next(&mut rng);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !ctx.stopping.load(Ordering::Relaxed) {
        tick.tick().await;
        sup.sample(proc.pid);
        if let Some(status) = proc.child.try_wait()? {
            ctx.set_addrs(None);
            let tail = lock(&launch.logs).tail.iter().cloned().collect::<Vec<_>>();
            let what = format!(
                "herald exited by itself ({status}); log tail:\n{}",
                tail.join("\n")
            );
            eprintln!("soak: {what}");
            sup.unexpected_exits.push(what);
            proc = launch.restart(&ctx, &mut sup).await?;
        } else if Instant::now() >= kill_at {
            sup.high_water(proc.pid);
            ctx.set_addrs(None);
            proc.child.start_kill().context("SIGKILL")?;
            proc.child.wait().await.context("reaping herald")?;
            sup.kills += 1;
            proc = launch.restart(&ctx, &mut sup).await?;
            let took = sup.restarts.last().copied().unwrap_or_default();
            eprintln!("soak: kill {} — herald back in {took:.2?}", sup.kills);
            kill_at = next(&mut rng);
        }
    }
    sup.sample(proc.pid);
    Ok((proc, sup))
}

// ---------------------------------------------------------------------------------------------
// The end: resend, drain, check
// ---------------------------------------------------------------------------------------------

/// Sends every unanswered request again until herald has answered them all.
async fn resend_all(ctx: &Ctx, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left = ctx.ledger().unanswered.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} requests still unanswered after {within:?} of resending");
        }
        let (ingest, api) = ctx.addrs().context("herald is not running")?;
        let mut rng = Rng::new(1);
        for _ in 0..left {
            ctx.run_op(Op::Resend, &mut rng, ingest, api).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every message id in the DLQ.
async fn dead_letters(ctx: &Ctx) -> Result<HashSet<String>> {
    let (_, api) = ctx.addrs().context("herald is not running")?;
    let mut ids = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(cursor) => format!("/v1/dlq?limit=1000&after={cursor}"),
            None => "/v1/dlq?limit=1000".to_owned(),
        };
        let (status, body) = ctx.api_get(api, &path).await.map_err(anyhow::Error::msg)?;
        if status != 200 {
            bail!("GET {path}: {status}");
        }
        let page: Value = serde_json::from_slice(&body)?;
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(id) = item["message_id"].as_str() {
                ids.insert(id.to_owned());
            }
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(ids),
        }
    }
}

/// How the drain ended.
#[derive(Debug)]
struct Drain {
    took: Duration,
    /// Acknowledged ids neither processed by the receiver nor in the DLQ.
    lost: Vec<String>,
    /// Acknowledged ids in the DLQ and never processed.
    dead_only: usize,
    dlq_total: usize,
}

/// Waits until every acknowledged message was processed by the receiver or is dead.
async fn drain(ctx: &Ctx, receiver: &Receiver, timeout: Duration) -> Result<Drain> {
    let started = Instant::now();
    let acked: HashSet<String> = ctx.ledger().acked.values().cloned().collect();
    let mut missing: Vec<String> = receiver.with(|r| {
        acked
            .iter()
            .filter(|id| !r.processed.contains_key(*id))
            .cloned()
            .collect()
    });
    let mut dlq = HashSet::new();
    let mut last_report = Instant::now();
    let mut last_dlq: Option<Instant> = None;
    loop {
        missing = receiver.with(|r| {
            missing
                .into_iter()
                .filter(|id| !r.processed.contains_key(id))
                .collect()
        });
        if last_dlq.is_none_or(|at| at.elapsed() > Duration::from_secs(15)) || missing.is_empty() {
            dlq = dead_letters(ctx).await?;
            last_dlq = Some(Instant::now());
        }
        let undelivered = missing.iter().filter(|id| !dlq.contains(*id)).count();
        if undelivered == 0 || started.elapsed() > timeout {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "soak: draining, {undelivered} acknowledged messages not delivered yet ({:.0?})",
                started.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dead_only = missing.iter().filter(|id| dlq.contains(*id)).count();
    let lost = missing.into_iter().filter(|id| !dlq.contains(id)).collect();
    Ok(Drain {
        took: started.elapsed(),
        lost,
        dead_only,
        dlq_total: dlq.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// The data dir, the receiver, herald's first life and the shared state.
struct Setup {
    dir: tempfile::TempDir,
    receiver: Receiver,
    launch: Arc<Launch>,
    proc: Proc,
    ctx: Arc<Ctx>,
}

impl Setup {
    async fn new(binary: PathBuf, seed: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("herald-soak-")
            .tempdir()
            .context("creating the data dir")?;
        let receiver = Receiver::start(seed).await?;
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            config_toml(&dir.path().join("herald.redb"), receiver.addr)?,
        )?;
        let launch = Arc::new(Launch {
            binary,
            config,
            logs: Arc::default(),
        });
        let proc = Proc::spawn(&launch.binary, &launch.config, &launch.logs).await?;
        let ctx = Arc::new(Ctx {
            signer: Signer::from_secret(BENCH_SECRET)?,
            run: sign::run_id(),
            seq: AtomicU64::new(0),
            addrs: RwLock::new(Some((proc.ingest, proc.api))),
            main: http_client(None),
            attacker: http_client(Some(ATTACKER)),
            ledger: Mutex::default(),
            stopping: AtomicBool::new(false),
        });
        Ok(Self {
            dir,
            receiver,
            launch,
            proc,
            ctx,
        })
    }
}

pub async fn run(args: SoakArgs) -> Result<()> {
    if args.kill_min_secs > args.kill_max_secs {
        bail!("--kill-min-secs must not exceed --kill-max-secs");
    }
    let binary = resolve_binary(&args.herald)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let Setup {
        dir,
        receiver,
        launch,
        proc,
        ctx,
    } = Setup::new(binary, seed).await?;
    eprintln!(
        "soak: {} min at {} req/s over {} loops, SIGKILL every {}–{} s, seed {seed}, data in {}",
        args.minutes,
        args.rate,
        args.workers,
        args.kill_min_secs,
        args.kill_max_secs,
        dir.path().display()
    );

    let started = Instant::now();
    let period = Duration::from_secs_f64(to_f64(args.workers) / to_f64(args.rate));
    let workers: Vec<_> = (0..args.workers)
        .map(|n| tokio::spawn(worker(Arc::clone(&ctx), seed ^ (n + 1), period)))
        .collect();
    let supervisor = tokio::spawn(supervise(
        Arc::clone(&ctx),
        Arc::clone(&launch),
        proc,
        Rng::new(seed ^ 0x00C0_FFEE),
        (args.kill_min_secs, args.kill_max_secs),
    ));
    let load_for = Duration::from_secs(args.minutes * 60);
    while started.elapsed() < load_for {
        tokio::time::sleep(Duration::from_secs(30).min(load_for.saturating_sub(started.elapsed())))
            .await;
        progress(&ctx, &receiver, started);
    }
    ctx.stopping.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, w).await;
    }
    let load_secs = started.elapsed();
    let (mut proc, mut sup) = supervisor.await.context("the supervisor panicked")??;

    eprintln!("soak: load stopped; receiver healthy; resending the unanswered, then draining");
    receiver.shared.healthy.store(true, Ordering::Relaxed);
    resend_all(&ctx, Duration::from_secs(120)).await?;
    let drain = drain(
        &ctx,
        &receiver,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await?;
    sup.sample(proc.pid);
    sup.high_water(proc.pid);
    let stop = stop_gracefully(&mut proc).await;

    let report = Report::new(&ctx, &receiver, &sup, &drain, &launch.logs, load_secs, stop);
    let lost_detail = explain_lost(&ctx, &drain, &launch).await;
    println!("{}", report.table(&args, seed));
    for line in lost_detail {
        println!("{line}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report.json())?);
    }
    if args.keep_data {
        let kept = dir.keep();
        println!("data kept in {}", kept.display());
    }
    let failures = report.failures(args.rss_bound_mib);
    if failures.is_empty() {
        println!("PASS");
        Ok(())
    } else {
        bail!("soak failed: {}", failures.join("; "))
    }
}

fn progress(ctx: &Ctx, receiver: &Receiver, started: Instant) {
    let (acked, unanswered, violations) = {
        let l = ctx.ledger();
        (l.acked.len(), l.unanswered.len(), l.violation_count)
    };
    let processed = receiver.with(|r| r.processed.len());
    eprintln!(
        "soak: {:>4.0?} acknowledged {acked}, unanswered {unanswered}, processed by the receiver \
         {processed}, violations {violations}",
        started.elapsed()
    );
}

/// SIGTERM, then up to 15 s for a clean exit.
async fn stop_gracefully(proc: &mut Proc) -> String {
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(proc.pid.to_string())
        .status()
        .await;
    if !matches!(term, Ok(s) if s.success()) {
        return format!("kill -TERM failed: {term:?}");
    }
    match tokio::time::timeout(Duration::from_secs(15), proc.child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => {
            let _ = proc.child.start_kill();
            "did not exit within 15 s of SIGTERM (killed)".to_owned()
        }
    }
}

/// For up to three lost messages, what herald's API says about them (herald is restarted for
/// it, since it was stopped).
async fn explain_lost(ctx: &Ctx, drain: &Drain, launch: &Launch) -> Vec<String> {
    if drain.lost.is_empty() {
        return Vec::new();
    }
    let mut sup = Supervision::default();
    let Ok(mut proc) = launch.restart(ctx, &mut sup).await else {
        return vec!["(could not restart herald to look the lost messages up)".to_owned()];
    };
    let mut lines = Vec::new();
    for id in drain.lost.iter().take(3) {
        let answer = ctx.api_get(proc.api, &format!("/v1/messages/{id}")).await;
        lines.push(match answer {
            Ok((status, body)) => format!("lost {id}: {status} {}", String::from_utf8_lossy(&body)),
            Err(e) => format!("lost {id}: no answer: {e}"),
        });
    }
    let _ = stop_gracefully(&mut proc).await;
    lines
}

/// The figures.
#[derive(Debug)]
struct Report {
    load_secs: f64,
    requests: u64,
    answered: u64,
    by_kind: Vec<(&'static str, OpStats)>,
    acked_webhooks: usize,
    acked_published: usize,
    resent: u64,
    delivered: usize,
    duplicate_copies: u64,
    ids_with_duplicates: usize,
    processed_not_acked: usize,
    dead_only: usize,
    dlq_total: usize,
    lost: usize,
    drain_secs: f64,
    receiver_requests: u64,
    injected: BTreeMap<&'static str, u64>,
    bad_signatures: u64,
    kills: u32,
    unexpected_exits: usize,
    restart_max_secs: f64,
    restart_mean_secs: f64,
    max_rss_mib: u64,
    max_hwm_mib: u64,
    log_errors: u64,
    log_panics: u64,
    first_errors: Vec<String>,
    violations: Vec<String>,
    violation_count: u64,
    final_stop: String,
}

impl Report {
    fn new(
        ctx: &Ctx,
        receiver: &Receiver,
        sup: &Supervision,
        drain: &Drain,
        logs: &Mutex<Logs>,
        load: Duration,
        final_stop: String,
    ) -> Self {
        let ledger = ctx.ledger();
        let acked: HashSet<&String> = ledger.acked.values().collect();
        let (delivered, duplicate_copies, ids_with_duplicates, processed_not_acked) = receiver
            .with(|r| {
                let delivered = r.processed.keys().filter(|id| acked.contains(id)).count();
                let extra: u64 = r
                    .processed
                    .values()
                    .map(|n| u64::from(n.saturating_sub(1)))
                    .sum();
                let with = r.processed.values().filter(|n| **n > 1).count();
                let stray = r.processed.keys().filter(|id| !acked.contains(id)).count();
                (delivered, extra, with, stray)
            });
        let (receiver_requests, injected, bad_signatures) =
            receiver.with(|r| (r.requests, r.injected.clone(), r.bad_signatures));
        let requests = ledger.stats.values().map(|s| s.sent).sum();
        let answered = ledger
            .stats
            .values()
            .map(|s| s.statuses.values().sum::<u64>())
            .sum();
        let restarts = &sup.restarts;
        let restart_max_secs = restarts.iter().max().map_or(0.0, Duration::as_secs_f64);
        let restart_mean_secs = if restarts.is_empty() {
            0.0
        } else {
            restarts.iter().map(Duration::as_secs_f64).sum::<f64>() / to_f64(restarts.len() as u64)
        };
        let logs = lock(logs);
        Self {
            load_secs: load.as_secs_f64(),
            requests,
            answered,
            by_kind: ledger
                .stats
                .iter()
                .map(|(op, s)| (op.name(), s.clone()))
                .collect(),
            acked_webhooks: ledger.acked.keys().filter(|k| k.starts_with("w:")).count(),
            acked_published: ledger.acked.keys().filter(|k| k.starts_with("p:")).count(),
            resent: ledger.resent,
            delivered,
            duplicate_copies,
            ids_with_duplicates,
            processed_not_acked,
            dead_only: drain.dead_only,
            dlq_total: drain.dlq_total,
            lost: drain.lost.len(),
            drain_secs: drain.took.as_secs_f64(),
            receiver_requests,
            injected,
            bad_signatures,
            kills: sup.kills,
            unexpected_exits: sup.unexpected_exits.len(),
            restart_max_secs,
            restart_mean_secs,
            max_rss_mib: mib(sup.max_rss_kib),
            max_hwm_mib: mib(sup.max_hwm_kib),
            log_errors: logs.errors,
            log_panics: logs.panics,
            first_errors: logs.first_errors.clone(),
            violations: ledger.violations.clone(),
            violation_count: ledger.violation_count,
            final_stop,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acked_webhooks + self.acked_published
    }

    fn failures(&self, rss_bound_mib: u64) -> Vec<String> {
        let mut failures = Vec::new();
        if self.lost > 0 {
            failures.push(format!("{} acknowledged messages lost", self.lost));
        }
        let peak = self.max_rss_mib.max(self.max_hwm_mib);
        if peak >= rss_bound_mib {
            failures.push(format!(
                "herald's memory reached {peak} MiB (bound {rss_bound_mib})"
            ));
        }
        if self.unexpected_exits > 0 {
            failures.push(format!(
                "herald exited by itself {} times",
                self.unexpected_exits
            ));
        }
        if self.violation_count > 0 {
            failures.push(format!("{} contract violations", self.violation_count));
        }
        if self.bad_signatures > 0 {
            failures.push(format!("{} deliveries badly signed", self.bad_signatures));
        }
        if self.log_panics > 0 {
            failures.push(format!("herald logged {} panics", self.log_panics));
        }
        failures
    }

    fn table(&self, args: &SoakArgs, seed: u64) -> String {
        let mut out = String::new();
        let rate = to_f64(self.answered) / self.load_secs;
        let _ = writeln!(
            out,
            "soak: {:.1} min of load, seed {seed}, target {} req/s over {} loops, SIGKILL every \
             {}–{} s",
            self.load_secs / 60.0,
            args.rate,
            args.workers,
            args.kill_min_secs,
            args.kill_max_secs
        );
        let _ = writeln!(
            out,
            "requests: {} sent, {} answered ({rate:.0}/s), {} resends of unanswered ones",
            self.requests, self.answered, self.resent
        );
        let _ = writeln!(
            out,
            "\n| kind | sent | answers by status | no answer | slowest |"
        );
        let _ = writeln!(out, "| --- | ---: | --- | ---: | ---: |");
        for (name, s) in &self.by_kind {
            let statuses: Vec<String> = s
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.2?} |",
                s.sent,
                statuses.join(", "),
                s.no_answer,
                s.slowest
            );
        }
        let _ = writeln!(
            out,
            "\n| acknowledged | delivered | in DLQ (not delivered) | duplicates | lost | kills | \
             restart max / mean s | max RSS MiB (bound {}) |",
            args.rss_bound_mib
        );
        let _ = writeln!(
            out,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let _ = writeln!(
            out,
            "| {} ({} webhooks, {} published) | {} | {} | {} copies of {} ids | {} | {} | \
             {:.2} / {:.2} | {} (VmHWM {}) |",
            self.acknowledged(),
            self.acked_webhooks,
            self.acked_published,
            self.delivered,
            self.dead_only,
            self.duplicate_copies,
            self.ids_with_duplicates,
            self.lost,
            self.kills,
            self.restart_max_secs,
            self.restart_mean_secs,
            self.max_rss_mib,
            self.max_hwm_mib
        );
        let injected: Vec<String> = self
            .injected
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            out,
            "\nreceiver: {} requests; injected failures: {}; badly signed: {}; processed but \
             never acknowledged: {}",
            self.receiver_requests,
            injected.join(", "),
            self.bad_signatures,
            self.processed_not_acked
        );
        let _ = writeln!(
            out,
            "drain: {:.1} s after the load; DLQ holds {} messages in all",
            self.drain_secs, self.dlq_total
        );
        let _ = writeln!(
            out,
            "herald: {} unexpected exits, {} ERROR log lines, {} panics, final SIGTERM: {}",
            self.unexpected_exits, self.log_errors, self.log_panics, self.final_stop
        );
        for line in &self.first_errors {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(out, "violations: {}", self.violation_count);
        for v in &self.violations {
            let _ = writeln!(out, "  {v}");
        }
        out
    }

    fn json(&self) -> Value {
        json!({
            "load_secs": self.load_secs,
            "requests": self.requests,
            "answered": self.answered,
            "resent": self.resent,
            "acknowledged": self.acknowledged(),
            "acknowledged_webhooks": self.acked_webhooks,
            "acknowledged_published": self.acked_published,
            "delivered": self.delivered,
            "in_dlq_not_delivered": self.dead_only,
            "dlq_total": self.dlq_total,
            "duplicate_copies": self.duplicate_copies,
            "ids_with_duplicates": self.ids_with_duplicates,
            "processed_not_acknowledged": self.processed_not_acked,
            "lost": self.lost,
            "kills": self.kills,
            "unexpected_exits": self.unexpected_exits,
            "restart_max_secs": self.restart_max_secs,
            "restart_mean_secs": self.restart_mean_secs,
            "max_rss_mib": self.max_rss_mib,
            "max_hwm_mib": self.max_hwm_mib,
            "drain_secs": self.drain_secs,
            "violations": self.violation_count,
            "bad_signatures": self.bad_signatures,
            "log_errors": self.log_errors,
            "log_panics": self.log_panics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.between(30, 90);
            assert_eq!(x, b.between(30, 90));
            assert!((30..=90).contains(&x));
        }
    }

    #[test]
    fn the_mix_has_every_kind() {
        let mut rng = Rng::new(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10_000 {
            seen.insert(Op::pick(&mut rng));
        }
        assert_eq!(seen.len(), 11, "{seen:?}"); // every kind but Resend, which is not drawn
    }

    #[test]
    fn config_has_the_documented_delivery_settings() -> Result<()> {
        let cfg = config_toml(Path::new("/tmp/soak/herald.redb"), "127.0.0.1:9".parse()?)?;
        for needle in [
            "max_attempts = 8\n",
            "backoff_base_ms = 200\n",
            "backoff_max_ms = 5000\n",
            "allow_private_destinations = true\n",
            "url = \"http://127.0.0.1:9/hooks\"\n",
            "sources = [\"*\"]\n",
        ] {
            assert!(cfg.contains(needle), "missing {needle:?} in\n{cfg}");
        }
        assert!(config_toml(Path::new("/tmp/a\"b/h.redb"), "127.0.0.1:9".parse()?).is_err());
        Ok(())
    }

    #[test]
    fn reads_ids_and_duplicate_flags() {
        assert_eq!(
            message_id(br#"{"id":"msg_1","status":"accepted"}"#).as_deref(),
            Some("msg_1")
        );
        assert!(is_duplicate(br#"{"duplicate":true,"id":"msg_1"}"#));
        assert!(!is_duplicate(br#"{"id":"msg_1"}"#));
        assert_eq!(message_id(b"not json"), None);
    }
}
