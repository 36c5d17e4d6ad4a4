//! `herald-bench cluster`: herald on `PostgreSQL` next to herald on redb, one node and several, on
//! the same machine in one run.
//!
//! Three setups, each run twice (once per phase), every run on fresh storage:
//! - **redb**: one herald with its embedded store in a temp dir (the default backend);
//! - **`PostgreSQL`, 1 node**: one herald with `storage.backend = "postgres"`;
//! - **`PostgreSQL`, N nodes** (`--nodes`, default 3): N herald processes sharing one database,
//!   each with its own `server.node_name` (`bench-1` …), the load's connections spread round
//!   robin over their ingest ports (connection `i` → node `i % N`, for the whole run).
//!
//! Each `PostgreSQL` run gets a database of its own, `CREATE DATABASE herald_bench_…` on the
//! `--postgres-url` cluster (its role must be allowed to create databases), dropped (`WITH
//! (FORCE)`) once the run's nodes have stopped, also when the run fails.
//!
//! Phases:
//! 1. **ingest**: no destinations; the same load generator and shape as `ingest` (64 keep-alive
//!    connections, 1 KiB signed bodies, 2 s warm-up, 10 s measured): verified, committed
//!    webhooks per second and the latency one client sees. Issue 12's targets are checked on
//!    the one-node `PostgreSQL` row: ≥ 8 000 req/s and p99 < 25 ms.
//! 2. **e2e**: one destination `sink` (every source) pointing at an in-process receiver; as in
//!    `deliver`'s steady state, every `202`'s message id is matched to its first arrival there
//!    (delivered/s, accepted-to-delivered latency, duplicates, never delivered), waiting up to
//!    `--drain-timeout-secs` after the load for the last of them.
//!
//! Progress goes to stderr; one markdown table per phase with the PASS/FAIL lines goes to
//! stdout, and with `--json` the same figures as one JSON object on its last line. A run that
//! fails (a node that does not start, dies, or a load error) is reported in its row and the
//! others still run; the command then exits non-zero after printing the report.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use crate::deliver::{ReceiverCounts, lookup, receiver_counts};
use crate::herald::{Herald, Node, Sink};
use crate::load::{self, LoadConfig, LoadReport, LoadRun, Target, to_f64};
use crate::receiver::Receiver;
use crate::sign::{self, BENCH_SECRET, Signer};

/// Issue 12: one herald node on `PostgreSQL`, 64 connections, 1 KiB bodies.
const MIN_PG_REQ_PER_SEC: f64 = 8000.0;
const MAX_PG_P99_MS: f64 = 25.0;

const INGEST_PATH: &str = "/webhooks/bench";
/// How often the drain wait checks the receiver, and how often it says where it is.
const POLL: Duration = Duration::from_millis(20);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const RSS_EVERY: Duration = Duration::from_millis(250);
/// Undelivered messages looked up through herald's API for the report.
const LOOKUPS: usize = 3;
/// Accepted-to-delivered latencies are recorded in µs up to an hour.
const E2E_HIST_MAX_MICROS: u64 = 3_600_000_000;
/// Time for the database's backends to exit (and flush their statistics) after herald stops.
const STATS_SETTLE: Duration = Duration::from_millis(500);

/// One way of running herald.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    /// One node on its embedded redb store.
    Redb,
    /// One node on `PostgreSQL`.
    Pg,
    /// `--nodes` nodes on one `PostgreSQL` database.
    PgCluster,
}

/// One half of the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// No destinations: ingest throughput and latency.
    Ingest,
    /// One destination at an in-process receiver: accepted → delivered.
    E2e,
}

/// Options of the `cluster` subcommand.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub body_bytes: usize,
    pub herald: PathBuf,
    /// The cluster to create each run's database on; required by the `PostgreSQL` setups.
    pub postgres_url: Option<String>,
    /// Nodes in [`Setup::PgCluster`].
    pub nodes: usize,
    pub setups: Vec<Setup>,
    pub phases: Vec<Phase>,
    /// How long the e2e phase waits after the load for the last accepted message to arrive.
    pub drain_timeout: Duration,
    pub json: bool,
}

impl Setup {
    fn label(self, nodes: usize) -> String {
        match self {
            Self::Redb => "redb, 1 node".to_owned(),
            Self::Pg => "PostgreSQL, 1 node".to_owned(),
            Self::PgCluster => format!("PostgreSQL, {nodes} nodes"),
        }
    }

    fn nodes(self, cluster_nodes: usize) -> usize {
        match self {
            Self::Redb | Self::Pg => 1,
            Self::PgCluster => cluster_nodes,
        }
    }

    fn postgres(self) -> bool {
        self != Self::Redb
    }
}

// ---------------------------------------------------------------------------------------------
// The database

/// `url` with its database name replaced by `name` (`postgres://user@host:port/db?query`).
fn with_database(url: &str, name: &str) -> Result<String> {
    let Some(scheme_end) = url.find("://") else {
        bail!("--postgres-url must be a postgres:// URL (key=value strings are not supported)");
    };
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let rest = &base[scheme_end + 3..];
    let authority_end = scheme_end + 3 + rest.find('/').unwrap_or(rest.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// Refuses a cluster URL whose hosts are not this machine: the bench loads what it names.
fn check_loopback(url: &str) -> Result<tokio_postgres::Config> {
    let config: tokio_postgres::Config = url
        .parse()
        .context("--postgres-url is not a valid PostgreSQL URL")?;
    for host in config.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(name) => {
                let local = name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !local {
                    bail!("refusing PostgreSQL host `{name}`: only loopback or a socket path");
                }
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => {}
        }
    }
    for addr in config.get_hostaddrs() {
        if !addr.is_loopback() {
            bail!("refusing PostgreSQL hostaddr `{addr}`: only loopback");
        }
    }
    Ok(config)
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to --postgres-url")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// What the server is, for the report's header.
async fn server_description(admin: &str) -> Result<String> {
    let client = connect(admin).await?;
    let mut parts = Vec::new();
    for setting in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "max_connections",
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .with_context(|| format!("SHOW {setting}"))?;
        parts.push(format!("{setting} {}", row.get::<_, String>(0)));
    }
    Ok(format!("PostgreSQL: {}", parts.join(", ")))
}

/// The database's counters at the end of a run (the database was empty at its start).
#[derive(Debug, Clone, Serialize)]
struct DbStats {
    name: String,
    /// Transactions committed over the nodes' whole life, reads and startup included.
    xact_commit: i64,
    xact_rollback: i64,
    size_mib: f64,
}

/// A database of this run's own, dropped when this is (or by [`Database::finish`]).
#[derive(Debug)]
struct Database {
    admin: String,
    name: String,
    /// Connects to this database only: what the nodes are given.
    url: String,
    dropped: bool,
}

impl Database {
    async fn create(admin: &str) -> Result<Self> {
        let name = format!("herald_bench_{}_{}", std::process::id(), sign::run_id());
        let url = with_database(admin, &name)?;
        connect(admin)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        eprintln!("  created database {name}");
        Ok(Self {
            admin: admin.to_owned(),
            name,
            url,
            dropped: false,
        })
    }

    /// Reads the counters, then drops the database. Call once the nodes have stopped.
    async fn finish(mut self) -> Result<DbStats> {
        sleep(STATS_SETTLE).await;
        let client = connect(&self.admin).await?;
        let stats = client
            .query_one(
                "SELECT xact_commit, xact_rollback, pg_database_size(datname) \
                 FROM pg_stat_database WHERE datname = $1",
                &[&self.name],
            )
            .await
            .context("reading pg_stat_database")
            .map(|row| DbStats {
                name: self.name.clone(),
                xact_commit: row.get(0),
                xact_rollback: row.get(1),
                #[allow(clippy::cast_precision_loss)]
                size_mib: row.get::<_, i64>(2) as f64 / 1_048_576.0,
            });
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .with_context(|| format!("DROP DATABASE {}", self.name))?;
        self.dropped = true;
        eprintln!("  dropped database {}", self.name);
        stats
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop is not async and runs inside the runtime: a thread of its own, with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                connect(&admin)
                    .await?
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        });
        match dropped.join() {
            Ok(Ok(())) => eprintln!("  dropped database {}", self.name),
            Ok(Err(e)) => eprintln!("warning: could not drop database {}: {e:#}", self.name),
            Err(_) => eprintln!("warning: dropping database {} panicked", self.name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The nodes

/// How one node's run ended, and its memory.
#[derive(Debug, Serialize)]
struct NodeSummary {
    name: String,
    /// `VmHWM` just before SIGTERM.
    peak_rss_mib: Option<f64>,
    /// Highest `VmRSS` sampled every 250 ms.
    sampled_rss_mib: Option<f64>,
    exit: String,
    log_lines: u64,
    warn_or_error_lines: u64,
    first_warnings: Vec<String>,
}

/// A herald child plus its RSS sampler.
struct Running {
    herald: Herald,
    name: String,
    stop_sampler: oneshot::Sender<()>,
    sampler: JoinHandle<Option<u64>>,
}

impl Running {
    /// Stops sampling, reads `VmHWM`, stops herald (SIGTERM, then kill after 10 s).
    async fn finish(self) -> Result<NodeSummary> {
        let _ = self.stop_sampler.send(());
        let sampled_kib = self.sampler.await.ok().flatten();
        let mut herald = self.herald;
        let died = herald.exited()?;
        let exit = herald.stop().await?;
        if let Some(status) = died {
            bail!(
                "herald {} had exited before the end of its run ({status}); first WARN/ERROR \
                 lines:\n{}\nlast log lines:\n{}",
                self.name,
                exit.first_warnings.join("\n"),
                exit.log_tail.join("\n")
            );
        }
        if exit.warn_or_error_lines > 0 {
            eprintln!(
                "  herald {} logged {} WARN/ERROR lines; the first:\n{}",
                self.name,
                exit.warn_or_error_lines,
                exit.first_warnings.join("\n")
            );
        }
        let kib_to_mib = |kib: u64| to_f64(kib) / 1024.0;
        Ok(NodeSummary {
            name: self.name,
            peak_rss_mib: exit.peak_rss_kib.map(kib_to_mib),
            sampled_rss_mib: sampled_kib.map(kib_to_mib),
            exit: match (&exit.status, exit.killed) {
                (_, true) => "killed after timeout".to_owned(),
                (Some(s), false) => s.to_string(),
                (None, false) => "unknown".to_owned(),
            },
            log_lines: exit.log_lines,
            warn_or_error_lines: exit.warn_or_error_lines,
            first_warnings: exit.first_warnings,
        })
    }
}

/// Stops every node (all of them, even after a failure); the first failure is returned.
async fn finish_all(nodes: Vec<Running>) -> Result<Vec<NodeSummary>> {
    let mut out = Vec::with_capacity(nodes.len());
    let mut first_error = None;
    for node in nodes {
        match node.finish().await {
            Ok(summary) => out.push(summary),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(out), Err)
}

/// The first node that has exited, if any: name and status.
fn any_exited(nodes: &mut [Running]) -> Result<Option<String>> {
    for node in nodes {
        if let Some(status) = node.herald.exited()? {
            return Ok(Some(format!("{} ({status})", node.name)));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Runs

/// What every run shares.
struct Ctx {
    opts: ClusterOptions,
    binary: PathBuf,
    signer: Signer,
    nproc: usize,
}

/// `/proc/loadavg`'s three load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
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

impl Ctx {
    /// A fresh database for a `PostgreSQL` setup.
    async fn database(&self, setup: Setup) -> Result<Option<Database>> {
        if !setup.postgres() {
            return Ok(None);
        }
        let admin = self
            .opts
            .postgres_url
            .as_deref()
            .context("the PostgreSQL setups need --postgres-url")?;
        Ok(Some(Database::create(admin).await?))
    }

    /// Starts the setup's nodes one after the other (the first migrates the schema).
    async fn start_nodes(
        &self,
        setup: Setup,
        db: Option<&Database>,
        sink: Option<&Sink>,
        longest: Duration,
    ) -> Result<Vec<Running>> {
        let count = setup.nodes(self.opts.nodes);
        let mut nodes = Vec::with_capacity(count);
        for i in 1..=count {
            let node = Node {
                postgres_url: db.map(|d| d.url.clone()),
                name: db.map(|_| format!("bench-{i}")),
            };
            let name = node.name.clone().unwrap_or_else(|| "redb".to_owned());
            let herald = Herald::start_node(&self.binary, BENCH_SECRET, sink, &node)
                .await
                .with_context(|| format!("starting herald {name}"))?;
            eprintln!(
                "  herald {name}: pid {} ingest on {}",
                herald.pid(),
                herald.ingest_addr()
            );
            let max_samples = u32::try_from(longest.as_millis() / RSS_EVERY.as_millis() + 400)
                .unwrap_or(u32::MAX);
            let (stop_sampler, sampler) = herald.sample_rss(RSS_EVERY, max_samples);
            nodes.push(Running {
                herald,
                name,
                stop_sampler,
                sampler,
            });
        }
        Ok(nodes)
    }

    /// The load over every node's ingest port, connections round robin.
    fn load_config(&self, nodes: &[Running]) -> Result<LoadConfig> {
        let mut targets = nodes
            .iter()
            .map(|n| Target::parse(&format!("http://{}{INGEST_PATH}", n.herald.ingest_addr())));
        let target = targets.next().context("no nodes")??;
        Ok(LoadConfig {
            target,
            extra_targets: targets.collect::<Result<_>>()?,
            connections: self.opts.connections,
            warmup: self.opts.warmup,
            duration: self.opts.duration,
            body_bytes: self.opts.body_bytes,
            signer: self.signer.clone(),
            max_requests: None,
            // In both phases, so the generator does the same work everywhere.
            record_accepted: true,
        })
    }
}

/// 2xx per second in the window, per node.
fn per_node(run: &LoadRun) -> Vec<f64> {
    run.successes_by_target
        .iter()
        .map(|&n| to_f64(n) / run.report.measured_secs)
        .collect()
}

/// One ingest run's figures.
#[derive(Debug, Serialize)]
struct IngestFigures {
    ingest: LoadReport,
    /// `202`s over the whole run, warm-up included.
    accepted: u64,
    per_node_req_per_sec: Vec<f64>,
    nodes: Vec<NodeSummary>,
    database: Option<DbStats>,
}

/// One e2e run's figures.
#[derive(Debug, Serialize)]
struct E2eFigures {
    ingest: LoadReport,
    per_node_req_per_sec: Vec<f64>,
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
    /// Last arrival of a window message − window end.
    tail_secs: f64,
    /// Accepted-to-delivered latency of the window's messages: first arrival − request sent.
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    e2e_p999_ms: f64,
    e2e_max_ms: f64,
    receiver: ReceiverCounts,
    undelivered_lookups: Vec<String>,
    nodes: Vec<NodeSummary>,
    database: Option<DbStats>,
}

/// One (phase, setup) run: its figures, or why it failed.
#[derive(Debug, Serialize)]
struct Row<F> {
    setup: Setup,
    label: String,
    nodes: usize,
    /// `/proc/loadavg` just before the run started.
    loadavg_before: String,
    figures: Option<F>,
    error: Option<String>,
}

impl<F> Row<F> {
    fn ok(&self) -> Option<&F> {
        self.figures.as_ref()
    }
}

async fn ingest_run(ctx: &Ctx, setup: Setup) -> Result<IngestFigures> {
    let db = ctx.database(setup).await?;
    let nodes = ctx
        .start_nodes(
            setup,
            db.as_ref(),
            None,
            ctx.opts.warmup + ctx.opts.duration,
        )
        .await?;
    let run = load::run_detailed(ctx.load_config(&nodes)?).await;
    if let Ok(run) = &run {
        eprintln!("{}", run.report.summary());
    }
    let summaries = finish_all(nodes).await;
    let run = run.context("loading herald")?;
    let summaries = summaries?;
    let database = match db {
        Some(db) => Some(db.finish().await?),
        None => None,
    };
    Ok(IngestFigures {
        per_node_req_per_sec: per_node(&run),
        accepted: run.accepted.len() as u64,
        ingest: run.report,
        nodes: summaries,
        database,
    })
}

/// How a drain wait ended.
struct DrainEnd {
    at: Instant,
    /// A node that exited meanwhile.
    exited: Option<String>,
}

/// Waits until the receiver has a first copy of every registered id, or `limit` passes, or a
/// node exits. Says where it is on stderr every few seconds.
async fn wait_delivered(rx: &Receiver, nodes: &mut [Running], limit: Duration) -> Result<DrainEnd> {
    let started = Instant::now();
    let deadline = started + limit;
    let mut next_progress = started + PROGRESS_EVERY;
    loop {
        let now = Instant::now();
        let (pending, arrived, dups) = rx.with(|a| (a.pending(), a.first.len(), a.duplicates));
        if pending == 0 || now >= deadline {
            return Ok(DrainEnd {
                at: now,
                exited: None,
            });
        }
        if let Some(node) = any_exited(nodes)? {
            return Ok(DrainEnd {
                at: now,
                exited: Some(node),
            });
        }
        if now >= next_progress {
            eprintln!(
                "  {:>5.1} s: {pending} pending, {arrived} ids arrived, {dups} duplicates",
                (now - started).as_secs_f64()
            );
            next_progress += PROGRESS_EVERY;
        }
        sleep(POLL).await;
    }
}

async fn e2e_run(ctx: &Ctx, setup: Setup) -> Result<E2eFigures> {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let rx = Receiver::start(listen, ctx.nproc, ctx.signer.clone(), ctx.opts.body_bytes)?;
    let sink = Sink {
        url: format!("http://{}/hooks", rx.addr()),
        secret: BENCH_SECRET.to_owned(),
        ca_file: None,
    };
    let db = ctx.database(setup).await?;
    let longest = ctx.opts.warmup + ctx.opts.duration + ctx.opts.drain_timeout;
    let mut nodes = ctx
        .start_nodes(setup, db.as_ref(), Some(&sink), longest)
        .await?;
    let run = load::run_detailed(ctx.load_config(&nodes)?).await;
    if let Some(node) = any_exited(&mut nodes)? {
        let why = finish_all(nodes).await.err();
        bail!(
            "herald {node} exited during the load{}",
            why.map_or_else(String::new, |e| format!(": {e:#}"))
        );
    }
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            let _ = finish_all(nodes).await;
            return Err(e.context("loading herald"));
        }
    };
    eprintln!("{}", run.report.summary());
    let pending = rx.expect(run.accepted.iter().map(|a| a.id.as_str()));
    eprintln!(
        "  {} accepted; waiting up to {} s for the {pending} not yet delivered…",
        run.accepted.len(),
        ctx.opts.drain_timeout.as_secs()
    );
    let drained = wait_delivered(&rx, &mut nodes, ctx.opts.drain_timeout).await?;
    // Every node sees every message: the first one's API answers for all.
    let mut lookups = Vec::new();
    if drained.exited.is_none() {
        for id in rx.with(|a| a.some_pending(LOOKUPS)) {
            lookups.push(lookup(&nodes[0].herald, &id).await);
        }
    }
    let summaries = finish_all(nodes).await;
    if let Some(node) = drained.exited {
        bail!(
            "herald {node} exited while delivering{}",
            summaries
                .err()
                .map_or_else(String::new, |e| format!(": {e:#}"))
        );
    }
    let summaries = summaries?;
    let database = match db {
        Some(db) => Some(db.finish().await?),
        None => None,
    };
    let figures = e2e_figures(&rx, run, drained.at, lookups, summaries, database)?;
    rx.stop().await?;
    Ok(figures)
}

fn e2e_figures(
    rx: &Receiver,
    run: LoadRun,
    drained_at: Instant,
    undelivered_lookups: Vec<String>,
    nodes: Vec<NodeSummary>,
    database: Option<DbStats>,
) -> Result<E2eFigures> {
    let window = (run.measure_start, run.measure_end);
    let in_window = |t: Instant| t >= window.0 && t <= window.1;
    let mut hist = Histogram::<u64>::new_with_bounds(1, E2E_HIST_MAX_MICROS, 3)
        .context("creating the delivery latency histogram")?;
    let (mut accepted_in_window, mut delivered, mut arrived_in_window) = (0u64, 0u64, 0u64);
    let mut last_window_arrival: Option<Instant> = None;
    rx.with(|a| {
        for m in &run.accepted {
            let arrived = a.first.get(&m.id).copied();
            delivered += u64::from(arrived.is_some());
            arrived_in_window += u64::from(arrived.is_some_and(in_window));
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
    let span = last_window_arrival
        .unwrap_or(drained_at)
        .saturating_duration_since(window.0)
        .as_secs_f64()
        .max(1e-9);
    let window_secs = (window.1 - window.0).as_secs_f64().max(1e-9);
    let ms = |v: u64| to_f64(v) / 1000.0;
    let accepted = run.accepted.len() as u64;
    Ok(E2eFigures {
        per_node_req_per_sec: per_node(&run),
        accepted,
        accepted_in_window,
        accepted_without_id: run.accepted_without_id,
        delivered,
        never_delivered: accepted - delivered,
        delivered_per_sec: to_f64(hist.len()) / span,
        delivered_in_window_per_sec: to_f64(arrived_in_window) / window_secs,
        tail_secs: last_window_arrival
            .map_or(0.0, |t| t.saturating_duration_since(window.1).as_secs_f64()),
        e2e_p50_ms: ms(hist.value_at_quantile(0.50)),
        e2e_p99_ms: ms(hist.value_at_quantile(0.99)),
        e2e_p999_ms: ms(hist.value_at_quantile(0.999)),
        e2e_max_ms: ms(hist.max()),
        receiver: receiver_counts(rx, &run.accepted),
        ingest: run.report,
        undelivered_lookups,
        nodes,
        database,
    })
}

// ---------------------------------------------------------------------------------------------
// The report

/// Issue 12, on the one-node `PostgreSQL` ingest run.
#[derive(Debug, Serialize)]
struct Verdicts {
    pg_req_per_sec: bool,
    pg_p99: bool,
}

/// Everything `cluster` measured; also the `--json` output.
#[derive(Debug, Serialize)]
struct ClusterReport {
    nproc: usize,
    connections: usize,
    warmup_secs: f64,
    duration_secs: f64,
    body_bytes: usize,
    cluster_nodes: usize,
    postgres: Option<String>,
    loadavg_start: String,
    loadavg_end: String,
    ingest: Vec<Row<IngestFigures>>,
    e2e: Vec<Row<E2eFigures>>,
    /// `None` when the one-node `PostgreSQL` ingest run did not run (or failed).
    pass: Option<Verdicts>,
}

fn peak_rss(nodes: &[NodeSummary]) -> String {
    mib(nodes.iter().filter_map(|n| n.peak_rss_mib).reduce(f64::max))
}

fn per_node_text(rates: &[f64]) -> String {
    if rates.len() < 2 {
        return "—".to_owned();
    }
    rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn db_columns(db: Option<&DbStats>, accepted: u64) -> (String, String) {
    db.map_or_else(
        || ("n/a".to_owned(), "n/a".to_owned()),
        |d| {
            #[allow(clippy::cast_precision_loss)]
            let per = to_f64(accepted) / (d.xact_commit.max(1) as f64);
            (d.xact_commit.to_string(), format!("{per:.1}"))
        },
    )
}

fn push_details(
    lines: &mut Vec<String>,
    label: &str,
    ingest: &LoadReport,
    nodes: &[NodeSummary],
    db: Option<&DbStats>,
) {
    for (status, n) in &ingest.non_2xx {
        lines.push(format!("- {label}: HTTP {status} × {n}"));
    }
    for (kind, n) in &ingest.transport_errors {
        lines.push(format!("- {label}: {kind} × {n}"));
    }
    if ingest.duplicates > 0 {
        lines.push(format!(
            "- {label}: {} ingest duplicates (200)",
            ingest.duplicates
        ));
    }
    for n in nodes.iter().filter(|n| n.warn_or_error_lines > 0) {
        lines.push(format!(
            "- {label}: herald {} logged {} WARN/ERROR lines, the first: `{}`",
            n.name,
            n.warn_or_error_lines,
            n.first_warnings.first().map_or("", String::as_str)
        ));
    }
    for n in nodes.iter().filter(|n| !n.exit.contains("exit status: 0")) {
        lines.push(format!(
            "- {label}: herald {} exit after SIGTERM: {}",
            n.name, n.exit
        ));
    }
    if let Some(d) = db {
        lines.push(format!(
            "- {label}: database {} ended at {:.1} MiB, {} commits, {} rollbacks",
            d.name, d.size_mib, d.xact_commit, d.xact_rollback
        ));
    }
}

fn push_failures<F>(lines: &mut Vec<String>, rows: &[Row<F>]) {
    for r in rows {
        if let Some(e) = &r.error {
            // The first line says what failed; herald's first ERROR line (if it logged one)
            // says why. The whole text is on stderr and in the JSON.
            let why = e
                .lines()
                .skip(1)
                .find(|l| l.contains("ERROR"))
                .map_or_else(String::new, |l| format!(" `{}`", l.trim()));
            lines.push(format!(
                "- {}: FAILED: {}{why}",
                r.label,
                e.lines().next().unwrap_or_default()
            ));
        }
    }
}

impl ClusterReport {
    fn header(&self) -> String {
        let mut s = format!(
            "{} connections, {} B signed bodies, {:.0} s warm-up + {:.0} s measured, nproc {}; \
             load average (1/5/15 min) {} at the start, {} at the end",
            self.connections,
            self.body_bytes,
            self.warmup_secs,
            self.duration_secs,
            self.nproc,
            self.loadavg_start,
            self.loadavg_end
        );
        if let Some(pg) = &self.postgres {
            let _ = write!(s, "\n\n{pg}");
        }
        s
    }

    fn row_by(&self, setup: Setup) -> Option<&IngestFigures> {
        self.ingest
            .iter()
            .find(|r| r.setup == setup)
            .and_then(Row::ok)
    }

    fn ingest_markdown(&self) -> String {
        let mut lines = vec![
            "## Ingest (no destinations)".to_owned(),
            String::new(),
            "| setup | req/s | p50 ms | p99 ms | max ms | errors | req/s per node \
             | PG commits | msgs/commit | peak RSS MiB | load avg before |"
                .to_owned(),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
        ];
        for r in &self.ingest {
            lines.push(match r.ok() {
                None => format!(
                    "| {} | failed | | | | | | | | | {} |",
                    r.label, r.loadavg_before
                ),
                Some(f) => {
                    let (commits, per) = db_columns(f.database.as_ref(), f.accepted);
                    format!(
                        "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {commits} | {per} \
                         | {} | {} |",
                        r.label,
                        f.ingest.req_per_sec,
                        f.ingest.p50_ms,
                        f.ingest.p99_ms,
                        f.ingest.max_ms,
                        f.ingest.errors(),
                        per_node_text(&f.per_node_req_per_sec),
                        peak_rss(&f.nodes),
                        r.loadavg_before
                    )
                }
            });
        }
        lines.push(String::new());
        if let (Some(pg), Some(pass)) = (self.row_by(Setup::Pg), &self.pass) {
            lines.push(format!(
                "- PostgreSQL, 1 node: {:.0} verified webhooks/s (target ≥ {MIN_PG_REQ_PER_SEC:.0}) \
                 {}",
                pg.ingest.req_per_sec,
                pass_fail(pass.pg_req_per_sec)
            ));
            lines.push(format!(
                "- PostgreSQL, 1 node: p99 {:.2} ms (target < {MAX_PG_P99_MS:.0} ms) {}",
                pg.ingest.p99_ms,
                pass_fail(pass.pg_p99)
            ));
        } else {
            lines.push(
                "- issue 12's targets (PostgreSQL, 1 node): not measured, no verdict".to_owned(),
            );
        }
        let ratio = |a: Option<&IngestFigures>, b: Option<&IngestFigures>| match (a, b) {
            (Some(a), Some(b)) if b.ingest.req_per_sec > 0.0 => {
                Some(a.ingest.req_per_sec / b.ingest.req_per_sec)
            }
            _ => None,
        };
        let mut ratios = Vec::new();
        if let Some(x) = ratio(self.row_by(Setup::Pg), self.row_by(Setup::Redb)) {
            ratios.push(format!("PostgreSQL 1 node ÷ redb {x:.2}"));
        }
        if let Some(x) = ratio(self.row_by(Setup::PgCluster), self.row_by(Setup::Pg)) {
            ratios.push(format!(
                "PostgreSQL {} nodes ÷ 1 node {x:.2}",
                self.cluster_nodes
            ));
        }
        if !ratios.is_empty() {
            lines.push(format!("- req/s: {}", ratios.join("; ")));
        }
        for r in &self.ingest {
            if let Some(f) = r.ok() {
                push_details(
                    &mut lines,
                    &r.label,
                    &f.ingest,
                    &f.nodes,
                    f.database.as_ref(),
                );
            }
        }
        push_failures(&mut lines, &self.ingest);
        lines.join("\n")
    }

    fn e2e_markdown(&self) -> String {
        let mut lines = vec![
            "## End to end (accepted → delivered to an in-process receiver)".to_owned(),
            String::new(),
            "| setup | ingest req/s | ingest p99 ms | errors | delivered/s | delivery p50 ms \
             | delivery p99 ms | delivery max ms | tail s | duplicates | never delivered \
             | delivered ÷ ingest-only | peak RSS MiB | load avg before |"
                .to_owned(),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
        ];
        for r in &self.e2e {
            lines.push(match r.ok() {
                None => format!(
                    "| {} | failed | | | | | | | | | | | | {} |",
                    r.label, r.loadavg_before
                ),
                Some(f) => {
                    let ratio = self
                        .row_by(r.setup)
                        .filter(|i| i.ingest.req_per_sec > 0.0)
                        .map_or_else(
                            || "n/a".to_owned(),
                            |i| format!("{:.2}", f.delivered_per_sec / i.ingest.req_per_sec),
                        );
                    format!(
                        "| {} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} \
                         | {} | {ratio} | {} | {} |",
                        r.label,
                        f.ingest.req_per_sec,
                        f.ingest.p99_ms,
                        f.ingest.errors(),
                        f.delivered_per_sec,
                        f.e2e_p50_ms,
                        f.e2e_p99_ms,
                        f.e2e_max_ms,
                        f.tail_secs,
                        f.receiver.duplicates,
                        f.never_delivered,
                        peak_rss(&f.nodes),
                        r.loadavg_before
                    )
                }
            });
        }
        lines.push(String::new());
        for r in &self.e2e {
            let Some(f) = r.ok() else { continue };
            lines.push(format!(
                "- {}: accepted {} ({} sent in the window{}), delivered {}, never delivered {} \
                 (target 0, waited up to the drain timeout) {}; first arrivals inside the \
                 window {:.0}/s",
                r.label,
                f.accepted,
                f.accepted_in_window,
                if f.per_node_req_per_sec.len() > 1 {
                    format!(
                        "; ingest req/s per node {}",
                        per_node_text(&f.per_node_req_per_sec)
                    )
                } else {
                    String::new()
                },
                f.delivered,
                f.never_delivered,
                pass_fail(f.accepted > 0 && f.never_delivered == 0),
                f.delivered_in_window_per_sec
            ));
            let rc = &f.receiver;
            if rc.unexpected_ids + rc.bad_signature + rc.bad_body + rc.missing_id > 0 {
                lines.push(format!(
                    "- {}: receiver saw {} unexpected ids, {} bad signatures, {} bad bodies, \
                     {} without webhook-id",
                    r.label, rc.unexpected_ids, rc.bad_signature, rc.bad_body, rc.missing_id
                ));
            }
            push_details(
                &mut lines,
                &r.label,
                &f.ingest,
                &f.nodes,
                f.database.as_ref(),
            );
            for l in &f.undelivered_lookups {
                lines.push(format!("- {}: undelivered: {l}", r.label));
            }
        }
        push_failures(&mut lines, &self.e2e);
        lines.join("\n")
    }

    fn failures(&self) -> usize {
        self.ingest.iter().filter(|r| r.error.is_some()).count()
            + self.e2e.iter().filter(|r| r.error.is_some()).count()
    }
}

fn row<F>(setup: Setup, nodes: usize, loadavg_before: String, result: Result<F>) -> Row<F> {
    let label = setup.label(nodes);
    let (figures, error) = match result {
        Ok(f) => (Some(f), None),
        Err(e) => {
            eprintln!("{label}: FAILED: {e:#}\n");
            (None, Some(format!("{e:#}")))
        }
    };
    Row {
        setup,
        label,
        nodes: setup.nodes(nodes),
        loadavg_before,
        figures,
        error,
    }
}

/// Runs every (phase, setup) asked for and prints the report.
pub async fn run(opts: ClusterOptions) -> Result<()> {
    let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let binary = crate::herald::resolve_binary(&opts.herald)?;
    let postgres = if opts.setups.iter().any(|s| s.postgres()) {
        let url = opts.postgres_url.as_deref().context(
            "the PostgreSQL setups need --postgres-url (or HERALD_BENCH_POSTGRES_URL); \
             `--setups redb` runs without",
        )?;
        check_loopback(url)?;
        with_database(url, "x")?;
        Some(server_description(url).await?)
    } else {
        None
    };
    let signer = Signer::from_secret(BENCH_SECRET)?;
    let loadavg_start = loadavg();
    let (setups, phases) = (opts.setups.clone(), opts.phases.clone());
    let ctx = Ctx {
        opts,
        binary,
        signer,
        nproc,
    };
    let n = ctx.opts.nodes;
    let total = setups.len() * phases.len();
    let mut step = 0;
    let mut ingest = Vec::new();
    let mut e2e = Vec::new();
    for phase in [Phase::Ingest, Phase::E2e] {
        if !phases.contains(&phase) {
            continue;
        }
        for &setup in &setups {
            step += 1;
            let before = loadavg();
            eprintln!(
                "[{step}/{total}] {} — {} (load average {before})…",
                match phase {
                    Phase::Ingest => "ingest",
                    Phase::E2e => "end to end",
                },
                setup.label(n)
            );
            match phase {
                Phase::Ingest => {
                    ingest.push(row(setup, n, before, ingest_run(&ctx, setup).await));
                }
                Phase::E2e => e2e.push(row(setup, n, before, e2e_run(&ctx, setup).await)),
            }
            eprintln!();
        }
    }
    let pass = ingest
        .iter()
        .find(|r| r.setup == Setup::Pg)
        .and_then(Row::ok)
        .map(|f| Verdicts {
            pg_req_per_sec: f.ingest.req_per_sec >= MIN_PG_REQ_PER_SEC,
            pg_p99: f.ingest.successes > 0 && f.ingest.p99_ms < MAX_PG_P99_MS,
        });
    let report = ClusterReport {
        nproc,
        connections: ctx.opts.connections,
        warmup_secs: ctx.opts.warmup.as_secs_f64(),
        duration_secs: ctx.opts.duration.as_secs_f64(),
        body_bytes: ctx.opts.body_bytes,
        cluster_nodes: n,
        postgres,
        loadavg_start,
        loadavg_end: loadavg(),
        ingest,
        e2e,
        pass,
    };
    let mut out = vec![report.header()];
    if phases.contains(&Phase::Ingest) {
        out.push(report.ingest_markdown());
    }
    if phases.contains(&Phase::E2e) {
        out.push(report.e2e_markdown());
    }
    println!("{}", out.join("\n\n"));
    if ctx.opts.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    match report.failures() {
        0 => Ok(()),
        n => bail!("{n} of {total} runs failed (see above)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced() -> Result<()> {
        assert_eq!(
            with_database("postgres://herald@127.0.0.1:55432/herald", "b1")?,
            "postgres://herald@127.0.0.1:55432/b1"
        );
        assert_eq!(
            with_database("postgresql://h:pw@127.0.0.1:1/x?sslmode=disable", "b2")?,
            "postgresql://h:pw@127.0.0.1:1/b2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h@127.0.0.1:1", "b3")?,
            "postgres://h@127.0.0.1:1/b3"
        );
        assert!(with_database("host=127.0.0.1 dbname=x", "b4").is_err());
        Ok(())
    }

    #[test]
    fn only_local_clusters_are_loaded() {
        for ok in [
            "postgres://herald@127.0.0.1:55432/herald",
            "postgres://herald@localhost/herald",
            "postgres://herald@[::1]:5432/herald",
            "postgres:///herald?host=/run/postgresql",
        ] {
            assert!(check_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "postgres://herald@10.0.0.5/herald",
            "postgres://herald@db.example.com/herald",
            "postgres://herald@127.0.0.1,10.0.0.5/herald",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn setups_are_labelled_with_their_nodes() {
        assert_eq!(Setup::Redb.label(3), "redb, 1 node");
        assert_eq!(Setup::Pg.nodes(3), 1);
        assert_eq!(Setup::PgCluster.label(3), "PostgreSQL, 3 nodes");
        assert_eq!(Setup::PgCluster.nodes(5), 5);
        assert!(!Setup::Redb.postgres() && Setup::PgCluster.postgres());
    }
}
