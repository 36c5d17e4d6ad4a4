//! `herald-bench deliver`: end-to-end delivery, from the signed webhook going into herald to its
//! copy arriving at a receiver.
//!
//! Three herald runs, each a fresh child process with a fresh store:
//! 1. **ingest only**: no destinations, the same load as `ingest`: the yardstick.
//! 2. **steady state**: one destination, `sink`, pointing at an in-process [`Receiver`] that
//!    answers `200` at once. The load generator records, for every `202`, herald's message id
//!    and the instant its request was sent; the receiver records the first arrival of every
//!    `webhook-id`. After the load, the bench waits (up to 60 s) until every accepted message has
//!    arrived, then reports delivered/s, ingest-to-delivery latency, duplicates and messages
//!    accepted but never delivered.
//! 3. **backlog**: the destination's port is picked and then left closed (connection refused),
//!    `--backlog` webhooks are sent as fast as the connections allow, then the receiver is started
//!    on that port and the bench times how long herald takes to deliver all of them, watching its
//!    memory the whole time.
//!
//!
//! With `--https`, phase 2 runs a second time against an https receiver (rustls, a CA made at
//! start that herald trusts through `delivery.ca_file`), and the report compares the two:
//! https delivered/s ÷ http delivered/s, target ≥ 0.8.
//!
//! Progress goes to stderr (with a one-line summary of the steady state as soon as it is known);
//! at the end, one markdown table per phase with its PASS/FAIL lines goes to stdout, and with
//! `--json` one JSON object on its last line. Every wait is bounded.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use crate::herald::{API_TOKEN, Herald, Sink};
use crate::load::{self, Accepted, LoadConfig, LoadReport, LoadRun, Target, to_f64};
use crate::receiver::{Receiver, TestPki};
use crate::sign::{BENCH_SECRET, Signer};

/// Targets herald is judged on.
const MIN_E2E_RATIO: f64 = 0.5;
const MIN_HTTPS_RATIO: f64 = 0.8;
const MAX_BACKLOG_RSS_MIB: f64 = 200.0;

/// How long the steady phase waits after the load for the last accepted message to arrive.
const STEADY_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest the backlog phase may spend sending (the load stops by itself at this point).
const BACKLOG_SEND_CAP: Duration = Duration::from_secs(600);
/// How often the drain wait checks the receiver, and how often it says where it is.
const POLL: Duration = Duration::from_millis(20);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const RSS_EVERY: Duration = Duration::from_millis(250);
/// Undelivered messages looked up through herald's API for the report.
const LOOKUPS: usize = 3;
/// Ingest-to-delivery latencies are recorded in µs up to an hour.
const E2E_HIST_MAX_MICROS: u64 = 3_600_000_000;

const INGEST_PATH: &str = "/webhooks/bench";

/// Options of the `deliver` subcommand.
#[derive(Debug, Clone)]
pub struct DeliverOptions {
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub body_bytes: usize,
    /// Bodies name a recipient out of this many (herald then runs its opt-out check on every
    /// delivery); `None`: no recipient, no check.
    pub recipients: Option<u64>,
    /// Run the steady state over https too.
    pub https: bool,
    pub backlog: u64,
    pub drain_timeout: Duration,
    pub herald: PathBuf,
    pub json: bool,
}

/// How a herald run ended, and its memory.
#[derive(Debug, Serialize)]
struct HeraldSummary {
    /// `VmHWM` just before SIGTERM.
    peak_rss_mib: Option<f64>,
    /// Highest `VmRSS` sampled every 250 ms.
    sampled_rss_mib: Option<f64>,
    exit: String,
    log_lines: u64,
    warn_or_error_lines: u64,
    first_warnings: Vec<String>,
}

/// Phase 1.
#[derive(Debug, Serialize)]
struct IngestOnly {
    ingest: LoadReport,
    herald: HeraldSummary,
}

/// What the receiver saw, for either delivering phase.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ReceiverCounts {
    pub(crate) requests: u64,
    /// Copies of an id after its first.
    pub(crate) duplicates: u64,
    /// Ids that arrived but no `202` named (e.g. a request that timed out at the client after
    /// herald had committed it).
    pub(crate) unexpected_ids: u64,
    pub(crate) bad_signature: u64,
    pub(crate) bad_body: u64,
    pub(crate) missing_id: u64,
}

/// Phase 2.
#[derive(Debug, Serialize)]
struct Steady {
    ingest: LoadReport,
    /// `202`s over the whole run, warm-up included.
    accepted: u64,
    /// Of those, requests sent inside the measured window.
    accepted_in_window: u64,
    accepted_without_id: u64,
    /// Accepted messages (whole run) whose first copy arrived.
    delivered: u64,
    /// Accepted messages that had not arrived when the drain wait ended (must be 0).
    never_delivered: u64,
    /// Messages sent in the window ÷ (arrival of the last of them − window start).
    delivered_per_sec: f64,
    /// First arrivals inside the window ÷ its length.
    delivered_in_window_per_sec: f64,
    /// Last arrival of a window message − window end (the tail after the load stopped).
    tail_secs: f64,
    /// Ingest-to-delivery latency of the window's messages: receiver first arrival − send.
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    e2e_p999_ms: f64,
    e2e_max_ms: f64,
    receiver: ReceiverCounts,
    undelivered_lookups: Vec<String>,
    herald: HeraldSummary,
}

/// Phase 3.
#[derive(Debug, Serialize)]
struct Backlog {
    requested: u64,
    ingest: LoadReport,
    accepted: u64,
    accepted_without_id: u64,
    /// Accepted ÷ the time sending took.
    accept_per_sec: f64,
    send_secs: f64,
    /// Receiver start → first arrival.
    first_delivery_secs: Option<f64>,
    /// Receiver start → last accepted message's arrival (or the timeout).
    drain_secs: f64,
    drain_per_sec: f64,
    drain_timeout_secs: f64,
    delivered: u64,
    /// Accepted but not received within the drain timeout (must be 0).
    lost: u64,
    receiver: ReceiverCounts,
    /// What herald's API says about the oldest message, and about undelivered ones.
    oldest_lookup: Option<String>,
    lost_lookups: Vec<String>,
    herald: HeraldSummary,
}

/// Pass/fail against each target: independent yes/no answers, so plain bools.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Serialize)]
struct Verdicts {
    e2e_ratio: bool,
    /// With `--https`: https delivered/s ≥ 0.8 × http.
    https_ratio: Option<bool>,
    steady_none_undelivered: bool,
    backlog_none_lost: bool,
    backlog_peak_rss: bool,
}

/// Everything `deliver` measured; also the `--json` output.
#[derive(Debug, Serialize)]
struct DeliverReport {
    nproc: usize,
    connections: usize,
    warmup_secs: f64,
    duration_secs: f64,
    body_bytes: usize,
    recipients: Option<u64>,
    ingest_only: IngestOnly,
    steady: Steady,
    /// Steady delivered/s ÷ ingest-only req/s.
    e2e_ratio: f64,
    /// With `--https`: the steady state against the https receiver.
    steady_https: Option<Steady>,
    /// Its delivered/s ÷ the http steady state's.
    https_ratio: Option<f64>,
    backlog: Backlog,
    pass: Verdicts,
}

fn kib_to_mib(kib: u64) -> f64 {
    to_f64(kib) / 1024.0
}

fn pass_fail(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |m| format!("{m:.1}"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A herald child plus its RSS sampler.
struct Monitored {
    herald: Herald,
    stop_sampler: oneshot::Sender<()>,
    sampler: JoinHandle<Option<u64>>,
}

impl Monitored {
    async fn start(binary: &Path, sink: Option<&Sink>, longest: Duration) -> Result<Self> {
        let herald = Herald::start(binary, BENCH_SECRET, sink).await?;
        eprintln!(
            "herald pid {} ingest on {}{}",
            herald.pid(),
            herald.ingest_addr(),
            sink.map_or_else(String::new, |s| format!(", delivering to {}", s.url))
        );
        let max_samples =
            u32::try_from(longest.as_millis() / RSS_EVERY.as_millis() + 400).unwrap_or(u32::MAX);
        let (stop_sampler, sampler) = herald.sample_rss(RSS_EVERY, max_samples);
        Ok(Self {
            herald,
            stop_sampler,
            sampler,
        })
    }

    /// Fails (with herald's last log lines) if herald has exited.
    async fn check_alive(mut self, during: &str) -> Result<Self> {
        if let Some(status) = self.herald.exited()? {
            let tail = self.finish().await.map(|_| ()).err();
            bail!("herald exited {during} ({status}){}", describe_tail(tail));
        }
        Ok(self)
    }

    /// Stops sampling, reads `VmHWM`, stops herald (SIGTERM, then kill after 10 s).
    async fn finish(self) -> Result<HeraldSummary> {
        let _ = self.stop_sampler.send(());
        let sampled_kib = self.sampler.await.ok().flatten();
        let mut herald = self.herald;
        let died = herald.exited()?;
        let exit = herald.stop().await?;
        if let Some(status) = died {
            bail!(
                "herald had exited before the end of its run ({status}); first WARN/ERROR \
                 lines:\n{}\nlast log lines:\n{}",
                exit.first_warnings.join("\n"),
                exit.log_tail.join("\n")
            );
        }
        if exit.warn_or_error_lines > 0 {
            eprintln!(
                "herald logged {} WARN/ERROR lines; the first:\n{}\n",
                exit.warn_or_error_lines,
                exit.first_warnings.join("\n")
            );
        }
        let exit_text = match (&exit.status, exit.killed) {
            (_, true) => "killed after timeout".to_owned(),
            (Some(s), false) => s.to_string(),
            (None, false) => "unknown".to_owned(),
        };
        Ok(HeraldSummary {
            peak_rss_mib: exit.peak_rss_kib.map(kib_to_mib),
            sampled_rss_mib: sampled_kib.map(kib_to_mib),
            exit: exit_text,
            log_lines: exit.log_lines,
            warn_or_error_lines: exit.warn_or_error_lines,
            first_warnings: exit.first_warnings,
        })
    }
}

fn describe_tail(err: Option<anyhow::Error>) -> String {
    err.map_or_else(String::new, |e| format!(": {e:#}"))
}

/// The load config of every phase; `max_requests` switches to count mode.
fn load_config(
    opts: &DeliverOptions,
    signer: &Signer,
    addr: SocketAddr,
    max_requests: Option<u64>,
) -> Result<LoadConfig> {
    Ok(LoadConfig {
        target: Target::parse(&format!("http://{addr}{INGEST_PATH}"))?,
        extra_targets: Vec::new(),
        connections: opts.connections,
        warmup: if max_requests.is_some() {
            Duration::ZERO
        } else {
            opts.warmup
        },
        duration: if max_requests.is_some() {
            BACKLOG_SEND_CAP
        } else {
            opts.duration
        },
        body_bytes: opts.body_bytes,
        signer: signer.clone(),
        max_requests,
        // Recorded in every phase, so the generator does the same work for the yardstick too.
        record_accepted: true,
    })
}

/// How a drain wait ended.
struct DrainEnd {
    at: Instant,
    completed: bool,
    herald_exited: Option<ExitStatus>,
}

/// Waits until the receiver has a first copy of every registered id, or `limit` passes, or
/// herald exits. Says where it is on stderr every few seconds.
async fn wait_delivered(rx: &Receiver, herald: &mut Herald, limit: Duration) -> Result<DrainEnd> {
    let started = Instant::now();
    let deadline = started + limit;
    let mut next_progress = started + PROGRESS_EVERY;
    loop {
        let now = Instant::now();
        let (pending, arrived, dups) = rx.with(|a| (a.pending(), a.first.len(), a.duplicates));
        if pending == 0 {
            return Ok(DrainEnd {
                at: now,
                completed: true,
                herald_exited: None,
            });
        }
        if let Some(status) = herald.exited()? {
            return Ok(DrainEnd {
                at: now,
                completed: false,
                herald_exited: Some(status),
            });
        }
        if now >= deadline {
            return Ok(DrainEnd {
                at: now,
                completed: false,
                herald_exited: None,
            });
        }
        if now >= next_progress {
            let (warnings, _) = herald.warnings();
            eprintln!(
                "  {:>5.1} s: {pending} pending, {arrived} ids arrived, {dups} duplicates, \
                 herald WARN/ERROR lines {warnings}",
                (now - started).as_secs_f64()
            );
            next_progress += PROGRESS_EVERY;
        }
        sleep(POLL).await;
    }
}

/// `GET path` on herald's API with the bench's admin token.
async fn api_get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes)> {
    let limit = Duration::from_secs(5);
    let stream = timeout(limit, TcpStream::connect(addr))
        .await
        .context("connect to the API timed out")??;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(HOST, addr.to_string())
        .header(AUTHORIZATION, format!("Bearer {API_TOKEN}"))
        .body(Full::new(Bytes::new()))?;
    let exchange = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    let out = timeout(limit, exchange)
        .await
        .context("API request timed out")??;
    driver.abort();
    Ok(out)
}

/// One line about a message from `GET /v1/messages/{id}`: its deliveries' status, attempts and
/// the last attempt's outcome.
pub(crate) async fn lookup(herald: &Herald, id: &str) -> String {
    let Some(api) = herald.api_addr() else {
        return format!("{id}: herald's API address is unknown");
    };
    let (status, body) = match api_get(api, &format!("/v1/messages/{id}")).await {
        Ok(r) => r,
        Err(e) => return format!("{id}: API lookup failed: {e:#}"),
    };
    if status != StatusCode::OK {
        return format!(
            "{id}: API answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return format!("{id}: API answered unparsable JSON");
    };
    let deliveries = v["deliveries"].as_array().cloned().unwrap_or_default();
    if deliveries.is_empty() {
        return format!("{id}: no deliveries recorded");
    }
    let parts: Vec<String> = deliveries
        .iter()
        .map(|d| {
            let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
            let last = attempts.last().map_or_else(
                || "none".to_owned(),
                |a| {
                    format!(
                        "{} status {} error {}",
                        text(&a["at"]),
                        text(&a["status_code"]),
                        text(&a["error"])
                    )
                },
            );
            format!(
                "to {}: {} after {} attempts (last: {last}; next attempt {}; reason {})",
                text(&d["destination"]),
                text(&d["status"]),
                attempts.len(),
                text(&d["next_attempt_at"]),
                text(&d["reason"])
            )
        })
        .collect();
    format!(
        "{id} (received {}) {}",
        text(&v["received_at"]),
        parts.join("; ")
    )
}

/// A JSON value for a one-line report: strings bare, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The receiver's counters, plus ids it got that no `202` named.
pub(crate) fn receiver_counts(rx: &Receiver, accepted: &[Accepted]) -> ReceiverCounts {
    rx.with(|a| {
        let matched = accepted
            .iter()
            .filter(|m| a.first.contains_key(&m.id))
            .count();
        ReceiverCounts {
            requests: a.requests,
            duplicates: a.duplicates,
            unexpected_ids: (a.first.len() as u64).saturating_sub(matched as u64),
            bad_signature: a.bad_signature,
            bad_body: a.bad_body,
            missing_id: a.missing_id,
        }
    })
}

async fn phase_ingest_only(
    opts: &DeliverOptions,
    binary: &Path,
    signer: &Signer,
) -> Result<IngestOnly> {
    eprintln!("[1/3] herald without destinations (ingest only)…");
    let run_time = opts.warmup + opts.duration;
    let herald = Monitored::start(binary, None, run_time).await?;
    let run = load::run_detailed(load_config(
        opts,
        signer,
        herald.herald.ingest_addr(),
        None,
    )?)
    .await;
    let summary = herald.finish().await?;
    let run = run.context("loading herald (ingest only)")?;
    eprintln!("{}\n", run.report.summary());
    Ok(IngestOnly {
        ingest: run.report,
        herald: summary,
    })
}

/// The steady state; with `https`, against a TLS receiver whose CA herald trusts.
async fn phase_steady(
    opts: &DeliverOptions,
    binary: &Path,
    signer: &Signer,
    https: bool,
) -> Result<Steady> {
    let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    // The CA file lives as long as the phase.
    let ca_dir = tempfile::tempdir().context("a temp dir for the CA file")?;
    let (rx, sink) = if https {
        eprintln!("[2b/3] herald delivering to the in-process https receiver (steady state)…");
        let pki = TestPki::new().context("making the receiver's certificate")?;
        let ca_file = ca_dir.path().join("ca.pem");
        std::fs::write(&ca_file, pki.ca_pem()).context("writing the CA file")?;
        let rx = Receiver::start_tls(listen, nproc, signer.clone(), opts.body_bytes, &pki)?;
        let sink = Sink {
            url: format!("https://{}/hooks", rx.addr()),
            secret: BENCH_SECRET.to_owned(),
            ca_file: Some(ca_file),
        };
        (rx, sink)
    } else {
        eprintln!("[2/3] herald delivering to the in-process receiver (steady state)…");
        let rx = Receiver::start(listen, nproc, signer.clone(), opts.body_bytes)?;
        let sink = Sink {
            url: format!("http://{}/hooks", rx.addr()),
            secret: BENCH_SECRET.to_owned(),
            ca_file: None,
        };
        (rx, sink)
    };
    let longest = opts.warmup + opts.duration + STEADY_DRAIN_TIMEOUT;
    let herald = Monitored::start(binary, Some(&sink), longest).await?;
    let run = load::run_detailed(load_config(
        opts,
        signer,
        herald.herald.ingest_addr(),
        None,
    )?)
    .await;
    let mut herald = herald.check_alive("during the steady load").await?;
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            let _ = herald.finish().await;
            return Err(e.context("loading herald (steady state)"));
        }
    };
    eprintln!("{}", run.report.summary());
    let pending = rx.expect(run.accepted.iter().map(|a| a.id.as_str()));
    eprintln!(
        "{} accepted; waiting up to {} s for the {pending} not yet delivered…",
        run.accepted.len(),
        STEADY_DRAIN_TIMEOUT.as_secs()
    );
    let drained = wait_delivered(&rx, &mut herald.herald, STEADY_DRAIN_TIMEOUT).await?;
    let lookups = undelivered_lookups(&rx, &herald.herald).await;
    if let Some(status) = drained.herald_exited {
        let tail = herald.finish().await.err();
        bail!(
            "herald exited while delivering ({status}){}",
            describe_tail(tail)
        );
    }
    let summary = herald.finish().await?;
    let steady = steady_figures(&rx, run, &drained, lookups, summary)?;
    rx.stop().await?;
    Ok(steady)
}

/// Up to [`LOOKUPS`] ids still pending, each described by herald's API.
async fn undelivered_lookups(rx: &Receiver, herald: &Herald) -> Vec<String> {
    let ids = rx.with(|a| a.some_pending(LOOKUPS));
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(lookup(herald, &id).await);
    }
    out
}

fn steady_figures(
    rx: &Receiver,
    run: LoadRun,
    drained: &DrainEnd,
    lookups: Vec<String>,
    herald: HeraldSummary,
) -> Result<Steady> {
    let window = (run.measure_start, run.measure_end);
    let in_window = |t: Instant| t >= window.0 && t <= window.1;
    let mut hist = Histogram::<u64>::new_with_bounds(1, E2E_HIST_MAX_MICROS, 3)
        .context("creating the delivery latency histogram")?;
    let mut accepted_in_window = 0u64;
    let mut delivered = 0u64;
    let mut arrived_in_window = 0u64;
    let mut last_window_arrival: Option<Instant> = None;
    rx.with(|a| {
        for m in &run.accepted {
            let arrived = a.first.get(&m.id).copied();
            if arrived.is_some() {
                delivered += 1;
            }
            if arrived.is_some_and(in_window) {
                arrived_in_window += 1;
            }
            if !in_window(m.sent) {
                continue;
            }
            accepted_in_window += 1;
            if let Some(at) = arrived {
                hist.saturating_record(micros(at.saturating_duration_since(m.sent)));
                last_window_arrival = last_window_arrival.max(Some(at));
            }
        }
    });
    let delivered_from_window = hist.len();
    let span = last_window_arrival
        .unwrap_or(drained.at)
        .saturating_duration_since(window.0)
        .as_secs_f64()
        .max(1e-9);
    let window_secs = (window.1 - window.0).as_secs_f64().max(1e-9);
    let ms = |v: u64| to_f64(v) / 1000.0;
    let accepted = run.accepted.len() as u64;
    Ok(Steady {
        accepted,
        accepted_in_window,
        accepted_without_id: run.accepted_without_id,
        delivered,
        never_delivered: accepted - delivered,
        delivered_per_sec: to_f64(delivered_from_window) / span,
        delivered_in_window_per_sec: to_f64(arrived_in_window) / window_secs,
        tail_secs: last_window_arrival
            .map_or(0.0, |t| t.saturating_duration_since(window.1).as_secs_f64()),
        e2e_p50_ms: ms(hist.value_at_quantile(0.50)),
        e2e_p99_ms: ms(hist.value_at_quantile(0.99)),
        e2e_p999_ms: ms(hist.value_at_quantile(0.999)),
        e2e_max_ms: ms(hist.max()),
        receiver: receiver_counts(rx, &run.accepted),
        ingest: run.report,
        undelivered_lookups: lookups,
        herald,
    })
}

/// Picks a free loopback port and closes it again, so connecting to it is refused.
fn closed_port() -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("picking a port for the receiver")?;
    let addr = probe.local_addr()?;
    drop(probe);
    Ok(addr)
}

async fn phase_backlog(opts: &DeliverOptions, binary: &Path, signer: &Signer) -> Result<Backlog> {
    eprintln!(
        "[3/3] backlog: {} webhooks while the receiver is down, then the receiver comes up…",
        opts.backlog
    );
    let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let rx_addr = closed_port()?;
    let sink = Sink {
        ca_file: None,
        url: format!("http://{rx_addr}/hooks"),
        secret: BENCH_SECRET.to_owned(),
    };
    let longest = BACKLOG_SEND_CAP + opts.drain_timeout;
    let herald = Monitored::start(binary, Some(&sink), longest).await?;
    let run = load::run_detailed(load_config(
        opts,
        signer,
        herald.herald.ingest_addr(),
        Some(opts.backlog),
    )?)
    .await;
    let mut herald = herald.check_alive("while the backlog was sent").await?;
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            let _ = herald.finish().await;
            return Err(e.context("sending the backlog"));
        }
    };
    eprintln!("{}", run.report.summary());
    let send_secs = (run.measure_end - run.measure_start).as_secs_f64();
    let accepted = run.accepted.len() as u64;

    let rx = match Receiver::start(rx_addr, nproc, signer.clone(), opts.body_bytes) {
        Ok(rx) => rx,
        Err(e) => {
            let _ = herald.finish().await;
            return Err(e.context("starting the receiver on the port written into the config"));
        }
    };
    let up = Instant::now();
    rx.expect(run.accepted.iter().map(|a| a.id.as_str()));
    eprintln!(
        "{accepted} accepted in {send_secs:.1} s; receiver up on {rx_addr}, waiting up to {} s…",
        opts.drain_timeout.as_secs()
    );
    let drained = wait_delivered(&rx, &mut herald.herald, opts.drain_timeout).await?;
    let lost_lookups = undelivered_lookups(&rx, &herald.herald).await;
    // The oldest message went through the most failed attempts while the receiver was down.
    let oldest = run.accepted.iter().min_by_key(|a| a.sent);
    let oldest_lookup = match oldest {
        Some(m) if drained.herald_exited.is_none() => Some(lookup(&herald.herald, &m.id).await),
        _ => None,
    };
    if let Some(status) = drained.herald_exited {
        let tail = herald.finish().await.err();
        bail!(
            "herald exited while draining the backlog ({status}){}",
            describe_tail(tail)
        );
    }
    let summary = herald.finish().await?;

    let (delivered, first, last) = rx.with(|a| {
        let mut delivered = 0u64;
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        for at in run.accepted.iter().filter_map(|m| a.first.get(&m.id)) {
            delivered += 1;
            first = Some(first.map_or(*at, |f| f.min(*at)));
            last = last.max(Some(*at));
        }
        (delivered, first, last)
    });
    let drain_secs = if drained.completed {
        last.unwrap_or(drained.at)
    } else {
        drained.at
    }
    .saturating_duration_since(up)
    .as_secs_f64();
    let receiver = receiver_counts(&rx, &run.accepted);
    rx.stop().await?;
    Ok(Backlog {
        requested: opts.backlog,
        accepted,
        accepted_without_id: run.accepted_without_id,
        accept_per_sec: to_f64(accepted) / send_secs.max(1e-9),
        send_secs,
        first_delivery_secs: first.map(|f| f.saturating_duration_since(up).as_secs_f64()),
        drain_per_sec: to_f64(delivered) / drain_secs.max(1e-9),
        drain_secs,
        drain_timeout_secs: opts.drain_timeout.as_secs_f64(),
        delivered,
        lost: accepted - delivered,
        receiver,
        ingest: run.report,
        oldest_lookup,
        lost_lookups,
        herald: summary,
    })
}

fn header_line(opts: &DeliverOptions, nproc: usize) -> String {
    format!(
        "{} connections, {} B signed bodies{}, {:.0} s warm-up + {:.0} s measured, nproc {nproc}",
        opts.connections,
        opts.body_bytes,
        opts.recipients
            .map_or_else(String::new, |n| format!(" naming 1 of {n} recipients")),
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64()
    )
}

fn steady_markdown(r: &DeliverReport) -> String {
    let (io, s) = (&r.ingest_only, &r.steady);
    let na = "n/a";
    let mut lines = vec![
        "## Steady state".to_owned(),
        String::new(),
        format!(
            "{} connections, {} B signed bodies{}, {:.0} s warm-up + {:.0} s measured, nproc {}",
            r.connections,
            r.body_bytes,
            r.recipients
                .map_or_else(String::new, |n| format!(" naming 1 of {n} recipients")),
            r.warmup_secs,
            r.duration_secs,
            r.nproc
        ),
        String::new(),
        "| herald | ingest req/s | ingest p50 ms | ingest p99 ms | errors | delivered/s \
         | delivery p50 ms | delivery p99 ms | delivery max ms | duplicates | never delivered \
         | peak RSS MiB |"
            .to_owned(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
        format!(
            "| no destinations | {:.0} | {:.2} | {:.2} | {} | {na} | {na} | {na} | {na} | {na} \
             | {na} | {} |",
            io.ingest.req_per_sec,
            io.ingest.p50_ms,
            io.ingest.p99_ms,
            io.ingest.errors(),
            mib(io.herald.peak_rss_mib)
        ),
        format!(
            "| → receiver | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} \
             | {} |",
            s.ingest.req_per_sec,
            s.ingest.p50_ms,
            s.ingest.p99_ms,
            s.ingest.errors(),
            s.delivered_per_sec,
            s.e2e_p50_ms,
            s.e2e_p99_ms,
            s.e2e_max_ms,
            s.receiver.duplicates,
            s.never_delivered,
            mib(s.herald.peak_rss_mib)
        ),
        String::new(),
        format!(
            "- end-to-end delivered/s ÷ ingest-only req/s: {:.0} / {:.0} = {:.2} \
             (target ≥ {MIN_E2E_RATIO:.2}) {}",
            s.delivered_per_sec,
            io.ingest.req_per_sec,
            r.e2e_ratio,
            pass_fail(r.pass.e2e_ratio)
        ),
        format!(
            "- accepted but never delivered: {} of {} (target 0, waited up to {} s) {}",
            s.never_delivered,
            s.accepted,
            STEADY_DRAIN_TIMEOUT.as_secs(),
            pass_fail(r.pass.steady_none_undelivered)
        ),
        format!(
            "- accepted {} ({} sent in the window); the last of those arrived {:.3} s after the \
             window; first arrivals inside the window: {:.0}/s",
            s.accepted, s.accepted_in_window, s.tail_secs, s.delivered_in_window_per_sec
        ),
        format!(
            "- receiver: {} requests, {} duplicates, {} unexpected ids, {} bad signatures, \
             {} bad bodies, {} without webhook-id",
            s.receiver.requests,
            s.receiver.duplicates,
            s.receiver.unexpected_ids,
            s.receiver.bad_signature,
            s.receiver.bad_body,
            s.receiver.missing_id
        ),
        format!(
            "- herald VmRSS, highest sample: {} MiB (no destinations) / {} MiB (→ receiver); \
             exit after SIGTERM: {} / {}",
            mib(io.herald.sampled_rss_mib),
            mib(s.herald.sampled_rss_mib),
            io.herald.exit,
            s.herald.exit
        ),
    ];
    push_errors(&mut lines, "ingest only", &io.ingest);
    push_errors(&mut lines, "→ receiver", &s.ingest);
    for l in &s.undelivered_lookups {
        lines.push(format!("- undelivered: {l}"));
    }
    lines.join("\n")
}

/// http against https, when `--https` ran.
fn https_markdown(r: &DeliverReport) -> Option<String> {
    let (http, tls, ratio) = (&r.steady, r.steady_https.as_ref()?, r.https_ratio?);
    let row = |name: &str, s: &Steady| {
        format!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            s.ingest.req_per_sec,
            s.delivered_per_sec,
            s.e2e_p50_ms,
            s.e2e_p99_ms,
            s.e2e_max_ms,
            s.receiver.bad_signature,
            s.never_delivered,
            mib(s.herald.peak_rss_mib)
        )
    };
    let mut lines = vec![
        "## https against http".to_owned(),
        String::new(),
        "| receiver | ingest req/s | delivered/s | delivery p50 ms | delivery p99 ms \
         | delivery max ms | bad signatures | never delivered | peak RSS MiB |"
            .to_owned(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
        row("http", http),
        row("https (rustls, ring)", tls),
        String::new(),
        format!(
            "- https delivered/s ÷ http delivered/s: {:.0} / {:.0} = {ratio:.2} \
             (target ≥ {MIN_HTTPS_RATIO:.2}) {}",
            tls.delivered_per_sec,
            http.delivered_per_sec,
            pass_fail(r.pass.https_ratio.unwrap_or(false))
        ),
    ];
    push_errors(&mut lines, "→ https receiver", &tls.ingest);
    for l in &tls.undelivered_lookups {
        lines.push(format!("- undelivered (https): {l}"));
    }
    Some(lines.join("\n"))
}

fn push_errors(lines: &mut Vec<String>, name: &str, r: &LoadReport) {
    for (status, n) in &r.non_2xx {
        lines.push(format!("- {name}: HTTP {status} × {n}"));
    }
    for (kind, n) in &r.transport_errors {
        lines.push(format!("- {name}: {kind} × {n}"));
    }
    if r.duplicates > 0 {
        lines.push(format!(
            "- {name}: {} ingest duplicates (200)",
            r.duplicates
        ));
    }
}

fn backlog_markdown(r: &DeliverReport) -> String {
    let b = &r.backlog;
    let mut lines = vec![
        "## Backlog".to_owned(),
        String::new(),
        format!(
            "{} webhooks sent over {} connections while the receiver's port is closed, then the \
             receiver starts on it; drain timeout {:.0} s",
            b.requested, r.connections, b.drain_timeout_secs
        ),
        String::new(),
        "| accepted | accept/s | errors | first delivery s | drain s | drained msg/s \
         | duplicates | lost | peak RSS MiB (VmHWM) | highest VmRSS sample MiB |"
            .to_owned(),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
        format!(
            "| {} | {:.0} | {} | {} | {:.2} | {:.0} | {} | {} | {} | {} |",
            b.accepted,
            b.accept_per_sec,
            b.ingest.errors(),
            b.first_delivery_secs
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.2}")),
            b.drain_secs,
            b.drain_per_sec,
            b.receiver.duplicates,
            b.lost,
            mib(b.herald.peak_rss_mib),
            mib(b.herald.sampled_rss_mib)
        ),
        String::new(),
        format!(
            "- lost (accepted, not received within {:.0} s): {} of {} (target 0) {}",
            b.drain_timeout_secs,
            b.lost,
            b.accepted,
            pass_fail(r.pass.backlog_none_lost)
        ),
        format!(
            "- herald peak RSS (VmHWM): {} MiB (target < {MAX_BACKLOG_RSS_MIB:.0} MiB) {}",
            mib(b.herald.peak_rss_mib),
            pass_fail(r.pass.backlog_peak_rss)
        ),
        format!(
            "- sending took {:.2} s ({} of {} requests accepted, ingest p99 {:.2} ms); \
             herald exit after SIGTERM: {}",
            b.send_secs, b.accepted, b.requested, b.ingest.p99_ms, b.herald.exit
        ),
        format!(
            "- receiver: {} requests, {} duplicates, {} unexpected ids, {} bad signatures, \
             {} bad bodies, {} without webhook-id",
            b.receiver.requests,
            b.receiver.duplicates,
            b.receiver.unexpected_ids,
            b.receiver.bad_signature,
            b.receiver.bad_body,
            b.receiver.missing_id
        ),
    ];
    push_errors(&mut lines, "backlog", &b.ingest);
    if let Some(l) = &b.oldest_lookup {
        lines.push(format!("- oldest message: {l}"));
    }
    for l in &b.lost_lookups {
        lines.push(format!("- lost: {l}"));
    }
    lines.join("\n")
}

/// Runs the three phases and prints the report.
pub async fn run(opts: DeliverOptions) -> Result<()> {
    let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let binary = crate::herald::resolve_binary(&opts.herald)?;
    let signer = Signer::from_secret(BENCH_SECRET)?.with_recipients(opts.recipients);
    eprintln!("{}", header_line(&opts, nproc));

    let ingest_only = phase_ingest_only(&opts, &binary, &signer).await?;
    let steady = phase_steady(&opts, &binary, &signer, false).await?;
    let steady_https = if opts.https {
        Some(phase_steady(&opts, &binary, &signer, true).await?)
    } else {
        None
    };
    let https_ratio = steady_https.as_ref().map(|tls| {
        if steady.delivered_per_sec > 0.0 {
            tls.delivered_per_sec / steady.delivered_per_sec
        } else {
            0.0
        }
    });
    if let (Some(tls), Some(ratio)) = (&steady_https, https_ratio) {
        eprintln!(
            "https: {:.0} delivered/s vs {:.0} over http ({ratio:.2}); delivery p50 {:.2} ms \
             p99 {:.2} ms; {} never delivered\n",
            tls.delivered_per_sec,
            steady.delivered_per_sec,
            tls.e2e_p50_ms,
            tls.e2e_p99_ms,
            tls.never_delivered
        );
    }
    let e2e_ratio = if ingest_only.ingest.req_per_sec > 0.0 {
        steady.delivered_per_sec / ingest_only.ingest.req_per_sec
    } else {
        0.0
    };
    // Shown now, so it survives a failure in the backlog phase.
    eprintln!(
        "steady: {:.0} delivered/s vs {:.0} req/s ingest-only ({e2e_ratio:.2}); delivery p50 \
         {:.2} ms p99 {:.2} ms; {} never delivered, {} duplicates\n",
        steady.delivered_per_sec,
        ingest_only.ingest.req_per_sec,
        steady.e2e_p50_ms,
        steady.e2e_p99_ms,
        steady.never_delivered,
        steady.receiver.duplicates
    );
    let backlog = phase_backlog(&opts, &binary, &signer).await?;

    let pass = Verdicts {
        e2e_ratio: e2e_ratio >= MIN_E2E_RATIO,
        https_ratio: https_ratio.map(|r| r >= MIN_HTTPS_RATIO),
        steady_none_undelivered: steady.accepted > 0 && steady.never_delivered == 0,
        backlog_none_lost: backlog.accepted > 0 && backlog.lost == 0,
        backlog_peak_rss: backlog
            .herald
            .peak_rss_mib
            .is_some_and(|m| m < MAX_BACKLOG_RSS_MIB),
    };
    let report = DeliverReport {
        nproc,
        connections: opts.connections,
        warmup_secs: opts.warmup.as_secs_f64(),
        duration_secs: opts.duration.as_secs_f64(),
        body_bytes: opts.body_bytes,
        recipients: opts.recipients,
        ingest_only,
        steady,
        e2e_ratio,
        steady_https,
        https_ratio,
        backlog,
        pass,
    };
    println!(
        "{}\n\n{}{}",
        steady_markdown(&report),
        https_markdown(&report).map_or_else(String::new, |md| md + "\n\n"),
        backlog_markdown(&report)
    );
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
