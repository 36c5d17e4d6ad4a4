//! `herald-bench`: how fast herald ingests signed webhooks, next to how fast a bare hyper server
//! on the same machine can answer the same requests.
//!
//! - `bare`: the ceiling server on its own.
//! - `load`: the load generator against any loopback URL.
//! - `ingest`: both, back to back, then a table of herald against the ceiling.
//! - `cluster`: ingest and end to end on redb, on `PostgreSQL` with one node and with several
//!   nodes sharing one database, each `PostgreSQL` run on a fresh database.
//! - `deliver`: end to end, through herald to an in-process receiver: steady-state throughput
//!   and latency, then a backlog built while the receiver is down and drained when it returns.
//! - `micro`: in-process costs of the suppression check, the perf layer and a cache hit.
//! - `isolation`: a healthy destination's delivery latency while slow, backlogged destinations
//!   hold their share of the in-flight budget.
//! - `soak`: minutes of mixed load, herald `SIGKILL`ed and restarted at random moments, then a
//!   check that every acknowledged message was delivered or is in the DLQ.
//!
//! Traffic only ever goes to loopback addresses, and every run stops by itself.

mod bare;
mod cluster;
mod deliver;
mod herald;
mod ingest;
mod isolation;
mod load;
mod micro;
mod receiver;
mod sign;
mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::load::{LoadConfig, Target};
use crate::sign::Signer;

#[derive(Debug, Parser)]
#[command(name = "herald-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve `202 {"id":"x","status":"accepted"}` to every request, reading each body in full.
    Bare {
        /// Loopback address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Stop by itself after this many seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        max_secs: u64,
    },
    /// Send signed webhooks over keep-alive connections and report throughput and latency.
    Load(LoadArgs),
    /// Compare herald against the bare server: same load, same machine, same run.
    Ingest(IngestArgs),
    /// Measure delivery end to end: steady state against an in-process receiver, then a backlog
    /// built while the receiver is down.
    Deliver(DeliverArgs),
    /// Compare storage backends, same load, same machine, same run: redb, `PostgreSQL` with one
    /// node, `PostgreSQL` with several nodes on one database; ingest and end to end.
    Cluster(ClusterArgs),
    /// Measure in-process: the suppression check with many suppressions stored, the perf
    /// layer per request, and a cache hit.
    Micro(MicroArgs),
    /// Minutes of mixed load with herald `SIGKILL`ed and restarted at random moments; then every
    /// acknowledged message must be delivered or in the DLQ (see `scripts/README.md`).
    Soak(soak::SoakArgs),
    /// A healthy destination's publish → receipt latency while slow destinations with backlogs
    /// hold their slots (in-process herald and receivers).
    Isolation(IsolationArgs),
}

#[derive(Debug, Args)]
struct IsolationArgs {
    /// Slow destinations.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    slow: u64,
    /// Messages queued for each slow destination.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    backlog: u64,
    /// How long a slow receiver takes to answer.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    slow_reply_ms: u64,
    /// Healthy messages measured, one after the other.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    samples: u64,
}

/// Shape of the load, shared by `load` and `ingest`.
#[derive(Debug, Args)]
struct Shape {
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration_secs: u64,
    /// Load sent before the measured window and not counted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=120))]
    warmup_secs: u64,
    /// Exact size of each JSON body.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    body_bytes: u64,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Target URL, e.g. `http://127.0.0.1:8080/webhooks/bench` (loopback only).
    #[arg(long)]
    url: String,
    /// Standard Webhooks secret (`whsec_<base64>`) to sign with.
    #[arg(long, default_value = sign::BENCH_SECRET)]
    secret: String,
    #[command(flatten)]
    shape: Shape,
    /// Also print the figures as JSON on the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// The herald binary to benchmark.
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    #[command(flatten)]
    shape: Shape,
    /// Also print the figures as JSON on the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DeliverArgs {
    /// The herald binary to benchmark.
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    #[command(flatten)]
    shape: Shape,
    /// Webhooks sent while the receiver is down, in the backlog phase.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    backlog: u64,
    /// How long the backlog may take to reach the receiver once it is up.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    drain_timeout_secs: u64,
    /// Make each body name a recipient `user{k}@example.com`, `k` pseudo-random in `0..N`, so
    /// herald runs its opt-out check before every delivery. Off by default.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    recipients: Option<u64>,
    /// Also run the steady state against an https receiver (a CA made at start, trusted
    /// through `delivery.ca_file`) and compare it with the http one.
    #[arg(long)]
    https: bool,
    /// Also print the figures as JSON on the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// The herald binary to benchmark.
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// A `PostgreSQL` cluster on this machine whose role may create databases, e.g.
    /// `postgres://herald@127.0.0.1:5432/herald`; every `PostgreSQL` run creates a database of
    /// its own there and drops it afterwards. Needed unless `--setups redb`.
    #[arg(long, env = "HERALD_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// herald processes sharing one database in the `pg-cluster` setup.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=8))]
    nodes: u64,
    /// Setups to run, comma-separated: redb, pg (`PostgreSQL`, 1 node), pg-cluster (`--nodes`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "redb,pg,pg-cluster"
    )]
    setups: Vec<cluster::Setup>,
    /// Phases to run, comma-separated: ingest (no destinations), e2e (to a receiver).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ingest,e2e")]
    phases: Vec<cluster::Phase>,
    /// How long an e2e run waits after the load for the last accepted message to arrive.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    drain_timeout_secs: u64,
    #[command(flatten)]
    shape: Shape,
    /// Also print the figures as JSON on the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct MicroArgs {
    /// Suppressions stored before the check is measured.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    suppressions: u64,
    /// End-to-end delivered/s to weigh the check against (`deliver`'s figure on the dev VM).
    #[arg(long, default_value_t = 8746.0)]
    delivered_per_sec: f64,
    /// Ingest req/s to weigh the perf layer against (`ingest`'s herald figure on the dev VM).
    #[arg(long, default_value_t = 17092.0)]
    ingest_per_sec: f64,
    /// Length of each timed window.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    window_secs: u64,
    /// Also print the figures as JSON on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// `u64` → `usize`; clap's ranges keep these far below either limit.
fn to_usize(v: u64) -> Result<usize> {
    Ok(usize::try_from(v)?)
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Bare { listen, max_secs } => {
            if !listen.ip().is_loopback() {
                bail!("refusing to listen on non-loopback {listen}");
            }
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("listening on {}", listener.local_addr()?);
            bare::serve(listener, async move {
                tokio::time::sleep(Duration::from_secs(max_secs)).await;
            })
            .await
        }
        Command::Load(args) => {
            let report = load::run(LoadConfig {
                target: Target::parse(&args.url)?,
                extra_targets: Vec::new(),
                connections: to_usize(args.shape.connections)?,
                warmup: Duration::from_secs(args.shape.warmup_secs),
                duration: Duration::from_secs(args.shape.duration_secs),
                body_bytes: to_usize(args.shape.body_bytes)?,
                signer: Signer::from_secret(&args.secret)?,
                max_requests: None,
                record_accepted: false,
            })
            .await?;
            println!("{}", report.summary());
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }
        Command::Ingest(args) => {
            ingest::run(ingest::IngestOptions {
                connections: to_usize(args.shape.connections)?,
                duration: Duration::from_secs(args.shape.duration_secs),
                warmup: Duration::from_secs(args.shape.warmup_secs),
                body_bytes: to_usize(args.shape.body_bytes)?,
                herald: args.herald,
                json: args.json,
            })
            .await
        }
        Command::Deliver(args) => {
            deliver::run(deliver::DeliverOptions {
                connections: to_usize(args.shape.connections)?,
                duration: Duration::from_secs(args.shape.duration_secs),
                warmup: Duration::from_secs(args.shape.warmup_secs),
                body_bytes: to_usize(args.shape.body_bytes)?,
                recipients: args.recipients,
                https: args.https,
                backlog: args.backlog,
                drain_timeout: Duration::from_secs(args.drain_timeout_secs),
                herald: args.herald,
                json: args.json,
            })
            .await
        }
        Command::Cluster(args) => {
            cluster::run(cluster::ClusterOptions {
                connections: to_usize(args.shape.connections)?,
                duration: Duration::from_secs(args.shape.duration_secs),
                warmup: Duration::from_secs(args.shape.warmup_secs),
                body_bytes: to_usize(args.shape.body_bytes)?,
                herald: args.herald,
                postgres_url: args.postgres_url,
                nodes: to_usize(args.nodes)?,
                setups: args.setups,
                phases: args.phases,
                drain_timeout: Duration::from_secs(args.drain_timeout_secs),
                json: args.json,
            })
            .await
        }
        Command::Micro(args) => {
            micro::run(micro::MicroOptions {
                suppressions: args.suppressions,
                delivered_per_sec: args.delivered_per_sec,
                ingest_per_sec: args.ingest_per_sec,
                window: Duration::from_secs(args.window_secs),
                json: args.json,
            })
            .await
        }
        Command::Soak(args) => soak::run(args).await,
        Command::Isolation(args) => {
            isolation::run(isolation::IsolationOptions {
                slow: to_usize(args.slow)?,
                backlog: to_usize(args.backlog)?,
                slow_reply: Duration::from_millis(args.slow_reply_ms),
                samples: to_usize(args.samples)?,
            })
            .await
        }
    }
}
