//! The load generator: N keep-alive HTTP/1.1 connections, each sending signed webhooks
//! back-to-back with one request in flight, for a warm-up period and then a measured one.
//!
//! It is a closed loop: a connection sends its next request only when the previous response has
//! been read in full. Latency is therefore the service time one client sees (request written to
//! response body read), and throughput is what N such clients can push. Signing the next webhook
//! happens before its clock starts, so the generator's own work is not counted as latency.
//!
//! A request counts in the measured window if its response *completed* inside it; the one
//! request per connection still in flight when the window closes is discarded. Throughput is
//! 2xx responses in the window divided by the window's length. Each connection keeps its own
//! histogram (no shared state on the hot path) and they are merged at the end.
//!
//! Every loop is bounded: connections stop starting requests at the end of the window, every
//! connect and request has a timeout, and the whole run has a hard deadline on top.
//!
//! Two options serve `deliver`: a request budget (`max_requests`: stop after that many requests
//! in all, `duration` then only caps the time; the window is the whole run, and req/s is 2xx
//! responses ÷ the run's actual length), and `record_accepted`, which keeps the message id of
//! every `202` (`{"id":"msg_…","status":"accepted"}`, warm-up included) with the instant its
//! request was sent, so deliveries can be matched to it later.
//!
//! For `cluster`, `extra_targets` spreads the connections round robin over several servers:
//! connection `i` talks to `[target, extra_targets…][i % n]` for the whole run, as a
//! connection-level load balancer would pin it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::sign::{self, Signer};

/// How long one connect or one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connect, so a dead target is not hammered in a tight loop.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Latencies are recorded in microseconds, from 1 µs up to 60 s, at 3 significant figures.
const HIST_MAX_MICROS: u64 = 60_000_000;

/// Where to send: a loopback socket address plus the `Host` and path to put in requests.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

impl Target {
    /// Parses an `http://HOST:PORT/path` URL whose host is a loopback address or `localhost`.
    ///
    /// Anything else is refused: this tool only ever sends traffic to the local machine.
    pub fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL `{url}`"))?;
        if uri.scheme_str() != Some("http") {
            bail!("only http:// URLs are supported, got `{url}`");
        }
        let authority = uri.authority().context("URL has no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .with_context(|| format!("host `{host}` must be an IP literal or localhost"))?
        };
        if !ip.is_loopback() {
            bail!("refusing to load {ip}: only loopback targets are allowed");
        }
        let port = authority.port_u16().unwrap_or(80);
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            authority: authority.as_str().to_owned(),
            path,
        })
    }
}

/// One load run's parameters.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: Target,
    /// More servers to spread the connections over, round robin (usually empty).
    pub extra_targets: Vec<Target>,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub body_bytes: usize,
    pub signer: Signer,
    /// Stop after this many requests over all connections; `duration` is then only a cap.
    pub max_requests: Option<u64>,
    /// Keep herald's message id of every `202` with the instant its request was sent.
    pub record_accepted: bool,
}

/// One `202`: the id herald gave the message and when its request was sent.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: String,
    pub sent: Instant,
}

/// A run's report plus what `deliver` needs to match deliveries to requests.
#[derive(Debug)]
pub struct LoadRun {
    pub report: LoadReport,
    /// Every `202` of the run (warm-up and the last in-flight requests included), if recorded.
    pub accepted: Vec<Accepted>,
    /// `202`s whose body had no readable `id` (so they cannot be matched).
    pub accepted_without_id: u64,
    pub measure_start: Instant,
    /// The end of the window: its planned end, or in count mode when the last request ended.
    pub measure_end: Instant,
    /// 2xx responses in the window per target: `[target, extra_targets…]`.
    pub successes_by_target: Vec<u64>,
}

/// The part of herald's `202` body the bench reads.
#[derive(Deserialize)]
struct AcceptedBody {
    id: String,
}

/// What one run measured. Latencies are in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub connections: usize,
    pub body_bytes: usize,
    pub measured_secs: f64,
    /// 2xx responses completed in the window.
    pub successes: u64,
    /// Of those, `200`s: herald's answer to a webhook id it already had (should be 0).
    pub duplicates: u64,
    pub req_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Non-2xx responses by status code.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests that got no response: timeouts, resets, failed connects, by kind.
    pub transport_errors: BTreeMap<String, u64>,
    /// Connections re-opened after the server closed one.
    pub reconnects: u64,
}

impl LoadReport {
    /// Non-2xx responses plus transport errors.
    pub fn errors(&self) -> u64 {
        self.non_2xx.values().sum::<u64>() + self.transport_errors.values().sum::<u64>()
    }

    /// A few human-readable lines.
    pub fn summary(&self) -> String {
        let mut lines = vec![
            format!(
                "{} connections, {} B bodies, {:.1} s measured",
                self.connections, self.body_bytes, self.measured_secs
            ),
            format!(
                "{:.0} req/s ({} ok, {} duplicates)",
                self.req_per_sec, self.successes, self.duplicates
            ),
            format!(
                "latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
            ),
            format!("errors: {}", self.errors()),
        ];
        for (status, n) in &self.non_2xx {
            lines.push(format!("  HTTP {status}: {n}"));
        }
        for (kind, n) in &self.transport_errors {
            lines.push(format!("  {kind}: {n}"));
        }
        if self.reconnects > 0 {
            lines.push(format!("reconnects: {}", self.reconnects));
        }
        lines.join("\n")
    }
}

/// What one connection saw inside the measured window.
struct ConnStats {
    latency_us: Histogram<u64>,
    successes: u64,
    duplicates: u64,
    non_2xx: BTreeMap<u16, u64>,
    transport_errors: BTreeMap<String, u64>,
    reconnects: u64,
    accepted: Vec<Accepted>,
    accepted_without_id: u64,
}

impl ConnStats {
    fn new() -> Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, HIST_MAX_MICROS, 3)
                .context("creating latency histogram")?,
            successes: 0,
            duplicates: 0,
            non_2xx: BTreeMap::new(),
            transport_errors: BTreeMap::new(),
            reconnects: 0,
            accepted: Vec::new(),
            accepted_without_id: 0,
        })
    }

    fn response(&mut self, status: StatusCode, latency: Duration) {
        if status.is_success() {
            self.successes += 1;
            if status == StatusCode::OK {
                self.duplicates += 1;
            }
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency_us.saturating_record(micros.max(1));
        } else {
            *self.non_2xx.entry(status.as_u16()).or_default() += 1;
        }
    }

    fn transport_error(&mut self, kind: &str) {
        *self.transport_errors.entry(kind.to_owned()).or_default() += 1;
    }

    fn merge(&mut self, other: Self) -> Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .context("merging histograms")?;
        self.successes += other.successes;
        self.duplicates += other.duplicates;
        for (k, v) in other.non_2xx {
            *self.non_2xx.entry(k).or_default() += v;
        }
        for (k, v) in other.transport_errors {
            *self.transport_errors.entry(k).or_default() += v;
        }
        self.reconnects += other.reconnects;
        self.accepted.extend(other.accepted);
        self.accepted_without_id += other.accepted_without_id;
        Ok(())
    }
}

/// Shared, read-only run state.
struct Plan {
    cfg: LoadConfig,
    run_id: String,
    measure_start: Instant,
    end: Instant,
    /// Requests left to send, in count mode.
    remaining: Option<AtomicU64>,
}

impl Plan {
    /// Takes one request from the budget; false once it is spent (never false without one).
    fn claim(&self) -> bool {
        self.remaining.as_ref().is_none_or(|r| {
            r.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    /// How many servers the connections are spread over.
    fn targets(&self) -> usize {
        1 + self.cfg.extra_targets.len()
    }

    /// The server connection `conn` talks to.
    fn target(&self, conn: usize) -> &Target {
        match conn % self.targets() {
            0 => &self.cfg.target,
            i => &self.cfg.extra_targets[i - 1],
        }
    }

    /// Gives back a claimed request that was not sent after all.
    fn unclaim(&self) {
        if let Some(r) = &self.remaining {
            r.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the load and returns what the measured window saw.
pub async fn run(cfg: LoadConfig) -> Result<LoadReport> {
    Ok(run_detailed(cfg).await?.report)
}

/// Runs the load and returns the report plus the recorded `202`s and the window's bounds.
pub async fn run_detailed(cfg: LoadConfig) -> Result<LoadRun> {
    if cfg.connections == 0 {
        bail!("need at least one connection");
    }
    if cfg.duration.is_zero() {
        bail!("duration must be positive");
    }
    // Fail before the run, not in every connection, if the body size cannot hold the JSON.
    let longest_id = format!(
        "msg_bench_{}_{}_{}",
        cfg.connections,
        u64::MAX,
        sign::run_id()
    );
    cfg.signer.check_body(&longest_id, cfg.body_bytes)?;

    let start = Instant::now();
    // In count mode there is no warm-up: every request is part of the run.
    let counted = cfg.max_requests.is_some();
    let measure_start = if counted { start } else { start + cfg.warmup };
    let end = measure_start + cfg.duration;
    let plan = Arc::new(Plan {
        remaining: cfg.max_requests.map(AtomicU64::new),
        cfg,
        run_id: sign::run_id(),
        measure_start,
        end,
    });

    let workers: Vec<_> = (0..plan.cfg.connections)
        .map(|conn| tokio::spawn(connection_loop(conn, Arc::clone(&plan))))
        .collect();

    // Hard stop: the window, plus one request timeout for the last in-flight requests, plus slack.
    let hard_deadline = end + REQUEST_TIMEOUT * 2 + Duration::from_secs(5);
    let mut total = ConnStats::new()?;
    let mut successes_by_target = vec![0; plan.targets()];
    for (conn, worker) in workers.into_iter().enumerate() {
        let stats = tokio::time::timeout_at(hard_deadline, worker)
            .await
            .context("a connection did not finish by the hard deadline")?
            .context("a connection task panicked")??;
        successes_by_target[conn % plan.targets()] += stats.successes;
        total.merge(stats)?;
    }
    let measure_end = if counted {
        Instant::now().min(end)
    } else {
        end
    };

    let secs = (measure_end - measure_start).as_secs_f64().max(1e-9);
    let h = &total.latency_us;
    let ms = |micros: u64| to_f64(micros) / 1000.0;
    let report = LoadReport {
        connections: plan.cfg.connections,
        body_bytes: plan.cfg.body_bytes,
        measured_secs: secs,
        successes: total.successes,
        duplicates: total.duplicates,
        req_per_sec: to_f64(total.successes) / secs,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
        non_2xx: total.non_2xx,
        transport_errors: total.transport_errors,
        reconnects: total.reconnects,
    };
    Ok(LoadRun {
        report,
        accepted: total.accepted,
        accepted_without_id: total.accepted_without_id,
        measure_start,
        measure_end,
        successes_by_target,
    })
}

/// `u64` → `f64` for reporting; counts and microseconds here stay far below 2^52, so exact.
#[allow(clippy::cast_precision_loss)]
pub fn to_f64(v: u64) -> f64 {
    v as f64
}

/// Opens one keep-alive HTTP/1.1 client connection and spawns its driver task.
async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>> {
    let stream = timeout(REQUEST_TIMEOUT, TcpStream::connect(target.addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    // Ends when the sender is dropped (or the server closes the connection).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Builds the `n`th signed request of connection `conn`.
fn build_request(plan: &Plan, conn: usize, n: u64) -> Result<Request<Full<Bytes>>> {
    let id = format!("msg_bench_{conn}_{n}_{}", plan.run_id);
    let hook = plan.cfg.signer.webhook(id, plan.cfg.body_bytes)?;
    let target = plan.target(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, hook.body.len())
        .header("webhook-id", hook.id)
        .header("webhook-timestamp", hook.timestamp)
        .header("webhook-signature", hook.signature)
        .body(Full::new(hook.body))?;
    Ok(req)
}

/// Names a hyper error for the error table.
fn classify(e: &hyper::Error) -> &'static str {
    if e.is_incomplete_message() {
        "connection closed mid-response"
    } else if e.is_closed() || e.is_canceled() {
        "connection closed"
    } else if e.is_parse() {
        "malformed response"
    } else if e.is_body_write_aborted() {
        "request body write aborted"
    } else {
        "other transport error"
    }
}

/// One connection's closed loop: sign, send, read the whole response, record; until the end.
async fn connection_loop(conn: usize, plan: Arc<Plan>) -> Result<ConnStats> {
    let mut seen = ConnStats::new()?;
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut opened = 0u64;
    let mut n = 0u64;

    while Instant::now() < plan.end {
        let in_window = |t: Instant| t >= plan.measure_start && t <= plan.end;

        let mut s = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let Ok(s) = connect(plan.target(conn)).await else {
                    if in_window(Instant::now()) {
                        seen.transport_error("connect failed");
                    }
                    sleep(RECONNECT_BACKOFF).await;
                    continue;
                };
                if opened > 0 {
                    seen.reconnects += 1;
                }
                opened += 1;
                s
            }
        };

        if !plan.claim() {
            break;
        }
        // Signing is the generator's work, not the server's: do it before the clock starts.
        let req = build_request(&plan, conn, n)?;
        n += 1;
        if !matches!(timeout(REQUEST_TIMEOUT, s.ready()).await, Ok(Ok(()))) {
            // The server closed the idle connection; reconnect on the next turn.
            plan.unclaim();
            continue;
        }

        let started = Instant::now();
        let outcome = timeout(REQUEST_TIMEOUT, async {
            let resp = s.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        let done = Instant::now();

        match outcome {
            Ok(Ok((status, body))) => {
                if in_window(done) {
                    seen.response(status, done - started);
                }
                if plan.cfg.record_accepted && status == StatusCode::ACCEPTED {
                    match serde_json::from_slice::<AcceptedBody>(&body) {
                        Ok(b) => seen.accepted.push(Accepted {
                            id: b.id,
                            sent: started,
                        }),
                        Err(_) => seen.accepted_without_id += 1,
                    }
                }
                sender = Some(s);
            }
            Ok(Err(e)) => {
                if in_window(done) {
                    seen.transport_error(classify(&e));
                }
            }
            Err(_) => {
                if in_window(done) {
                    seen.transport_error("timeout");
                }
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bare::BareServer;

    #[test]
    fn target_accepts_loopback_only() -> Result<()> {
        let t = Target::parse("http://127.0.0.1:8080/webhooks/bench")?;
        assert_eq!(t.addr, "127.0.0.1:8080".parse()?);
        assert_eq!(t.path, "/webhooks/bench");
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(
            Target::parse("http://localhost:9/")?.addr.ip(),
            Ipv4Addr::LOCALHOST
        );
        assert!(Target::parse("http://[::1]:9/x")?.addr.ip().is_loopback());
        assert!(Target::parse("http://10.0.0.1:80/").is_err());
        assert!(Target::parse("http://example.com/").is_err());
        assert!(Target::parse("https://127.0.0.1/").is_err());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_the_bare_server() -> Result<()> {
        let server = BareServer::start("127.0.0.1:0".parse()?, 1)?;
        let url = format!("http://{}/webhooks/bench", server.addr());
        let report = run(LoadConfig {
            target: Target::parse(&url)?,
            extra_targets: Vec::new(),
            connections: 4,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(500),
            body_bytes: 1024,
            signer: Signer::from_secret(sign::BENCH_SECRET)?,
            max_requests: None,
            record_accepted: false,
        })
        .await?;
        server.stop().await?;
        assert!(report.successes > 0, "{}", report.summary());
        assert_eq!(report.errors(), 0, "{}", report.summary());
        assert_eq!(report.duplicates, 0);
        assert!(report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_spread_round_robin_over_the_targets() -> Result<()> {
        let servers = [
            BareServer::start("127.0.0.1:0".parse()?, 1)?,
            BareServer::start("127.0.0.1:0".parse()?, 1)?,
            BareServer::start("127.0.0.1:0".parse()?, 1)?,
        ];
        let url = |s: &BareServer| format!("http://{}/webhooks/bench", s.addr());
        let run = run_detailed(LoadConfig {
            target: Target::parse(&url(&servers[0]))?,
            extra_targets: vec![
                Target::parse(&url(&servers[1]))?,
                Target::parse(&url(&servers[2]))?,
            ],
            // Two connections on the first server, one on each of the others.
            connections: 4,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
            body_bytes: 256,
            signer: Signer::from_secret(sign::BENCH_SECRET)?,
            max_requests: Some(400),
            record_accepted: false,
        })
        .await?;
        for server in servers {
            server.stop().await?;
        }
        assert_eq!(run.report.successes, 400, "{}", run.report.summary());
        assert_eq!(run.successes_by_target.len(), 3);
        assert_eq!(run.successes_by_target.iter().sum::<u64>(), 400);
        assert!(run.successes_by_target.iter().all(|&n| n > 0));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn count_mode_sends_exactly_the_budget_and_records_ids() -> Result<()> {
        let server = BareServer::start("127.0.0.1:0".parse()?, 1)?;
        let url = format!("http://{}/webhooks/bench", server.addr());
        let run = run_detailed(LoadConfig {
            target: Target::parse(&url)?,
            extra_targets: Vec::new(),
            connections: 8,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(30),
            body_bytes: 1024,
            signer: Signer::from_secret(sign::BENCH_SECRET)?,
            max_requests: Some(500),
            record_accepted: true,
        })
        .await?;
        server.stop().await?;
        let report = &run.report;
        assert_eq!(report.successes, 500, "{}", report.summary());
        assert_eq!(run.accepted.len(), 500);
        assert_eq!(run.accepted_without_id, 0);
        // The bare server answers `"id":"x"` to everything.
        assert!(run.accepted.iter().all(|a| a.id == "x"));
        assert!(run.measure_end > run.measure_start);
        assert!(report.measured_secs < 30.0);
        assert!(report.req_per_sec > 0.0);
        Ok(())
    }
}
