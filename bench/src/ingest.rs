//! The orchestrated comparison behind `herald-bench ingest`.
//!
//! Two runs of the same load on the same machine, one after the other:
//! 1. the bare hyper server (in-process, own runtime): the ceiling for this HTTP stack here;
//! 2. a herald child process with a fresh store, loaded at `/webhooks/bench`, so every 2xx is a
//!    verified webhook durably committed before the answer.
//!
//! In both runs the load generator shares the machine's cores with the server, so the ratio
//! compares like with like. The result is a markdown table on stdout (progress goes to stderr),
//! checked against the targets herald is judged on, and with `--json` the same figures as one
//! JSON object on stdout's last line.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bare::BareServer;
use crate::herald::Herald;
use crate::load::{self, LoadConfig, LoadReport, Target};
use crate::sign::{BENCH_SECRET, Signer};

/// Targets herald is judged on (issue 13).
const MIN_THROUGHPUT_RATIO: f64 = 0.35;
const MAX_P99_MS: f64 = 10.0;
const MAX_PEAK_RSS_MIB: f64 = 64.0;

/// The path herald's ingest endpoint serves the bench source at.
const INGEST_PATH: &str = "/webhooks/bench";

/// Options of the `ingest` subcommand.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub body_bytes: usize,
    pub herald: PathBuf,
    pub json: bool,
}

/// Pass/fail against each target.
#[derive(Debug, Serialize)]
struct Verdicts {
    throughput_ratio: bool,
    p99: bool,
    peak_rss: bool,
}

/// Everything the comparison measured; also the `--json` output.
#[derive(Debug, Serialize)]
struct Comparison {
    nproc: usize,
    connections: usize,
    warmup_secs: f64,
    duration_secs: f64,
    body_bytes: usize,
    bare: LoadReport,
    herald: LoadReport,
    /// `VmHWM` of the herald process, read at the end of the run.
    herald_peak_rss_mib: Option<f64>,
    /// Highest `VmRSS` sampled during the run.
    herald_sampled_rss_mib: Option<f64>,
    /// herald req/s ÷ bare req/s.
    throughput_ratio: f64,
    herald_log_lines: u64,
    herald_exit: String,
    pass: Verdicts,
}

fn kib_to_mib(kib: u64) -> f64 {
    load::to_f64(kib) / 1024.0
}

fn pass_fail(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

impl Comparison {
    fn markdown(&self) -> String {
        let row = |name: &str, r: &LoadReport, rss: &str| {
            format!(
                "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {rss} |",
                r.req_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.errors()
            )
        };
        let rss = self
            .herald_peak_rss_mib
            .map_or_else(|| "?".to_owned(), |m| format!("{m:.1}"));
        let mut lines = vec![
            format!(
                "{} connections, {} B signed bodies, {:.0} s warm-up + {:.0} s measured, nproc {}",
                self.connections, self.body_bytes, self.warmup_secs, self.duration_secs, self.nproc
            ),
            String::new(),
            "| target | req/s | p50 ms | p99 ms | max ms | errors | peak RSS MiB |".to_owned(),
            "|---|---:|---:|---:|---:|---:|---:|".to_owned(),
            row("bare hyper", &self.bare, "n/a (in-process)"),
            row("herald", &self.herald, &rss),
            String::new(),
            format!(
                "- herald/bare throughput: {:.2} (target ≥ {MIN_THROUGHPUT_RATIO:.2}) {}",
                self.throughput_ratio,
                pass_fail(self.pass.throughput_ratio)
            ),
            format!(
                "- herald p99: {:.2} ms (target < {MAX_P99_MS:.0} ms) {}",
                self.herald.p99_ms,
                pass_fail(self.pass.p99)
            ),
            format!(
                "- herald peak RSS (VmHWM): {rss} MiB (target ≤ {MAX_PEAK_RSS_MIB:.0} MiB) {}",
                pass_fail(self.pass.peak_rss)
            ),
        ];
        if let Some(sampled) = self.herald_sampled_rss_mib {
            lines.push(format!("- herald VmRSS, highest sample: {sampled:.1} MiB"));
        }
        lines.push(format!(
            "- herald duplicates (200): {}; exit after SIGTERM: {}; log lines: {}",
            self.herald.duplicates, self.herald_exit, self.herald_log_lines
        ));
        for (name, r) in [("bare", &self.bare), ("herald", &self.herald)] {
            for (status, n) in &r.non_2xx {
                lines.push(format!("- {name}: HTTP {status} × {n}"));
            }
            for (kind, n) in &r.transport_errors {
                lines.push(format!("- {name}: {kind} × {n}"));
            }
        }
        lines.join("\n")
    }
}

/// Runs both loads and prints the comparison.
pub async fn run(opts: IngestOptions) -> Result<()> {
    let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Check the binary first: no point loading the bare server if herald cannot run after it.
    let binary = crate::herald::resolve_binary(&opts.herald)?;
    let signer = Signer::from_secret(BENCH_SECRET)?;
    let load_config = |addr: SocketAddr| -> Result<LoadConfig> {
        Ok(LoadConfig {
            target: Target::parse(&format!("http://{addr}{INGEST_PATH}"))?,
            extra_targets: Vec::new(),
            connections: opts.connections,
            warmup: opts.warmup,
            duration: opts.duration,
            body_bytes: opts.body_bytes,
            signer: signer.clone(),
            max_requests: None,
            record_accepted: false,
        })
    };

    eprintln!("[1/2] bare hyper ceiling ({nproc} server threads, in-process)…");
    let bare_server = BareServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), nproc)?;
    let bare = load::run(load_config(bare_server.addr())?).await;
    bare_server.stop().await?;
    let bare = bare.context("loading the bare server")?;
    eprintln!("{}\n", bare.summary());

    eprintln!("[2/2] herald ({})…", binary.display());
    let mut herald = Herald::start(&binary, BENCH_SECRET, None).await?;
    eprintln!(
        "herald pid {} ingest on {}",
        herald.pid(),
        herald.ingest_addr()
    );
    let sample_every = Duration::from_millis(250);
    let max_samples =
        u32::try_from((opts.warmup + opts.duration).as_millis() / 250 + 200).unwrap_or(u32::MAX);
    let (stop_sampler, sampler) = herald.sample_rss(sample_every, max_samples);
    let loaded = load::run(load_config(herald.ingest_addr())?).await;
    let _ = stop_sampler.send(());
    let sampled_kib = sampler.await.ok().flatten();
    let died = herald.exited()?;
    let exit = herald.stop().await?;
    if let Some(status) = died {
        bail!(
            "herald exited during the load ({status}); last log lines:\n{}",
            exit.log_tail.join("\n")
        );
    }
    let herald_report = loaded.context("loading herald")?;
    eprintln!("{}\n", herald_report.summary());
    if exit.warn_or_error_lines > 0 {
        eprintln!(
            "herald logged {} WARN/ERROR lines; last lines:\n{}\n",
            exit.warn_or_error_lines,
            exit.log_tail.join("\n")
        );
    }

    let throughput_ratio = if bare.req_per_sec > 0.0 {
        herald_report.req_per_sec / bare.req_per_sec
    } else {
        0.0
    };
    let herald_peak_rss_mib = exit.peak_rss_kib.map(kib_to_mib);
    let herald_exit = match (&exit.status, exit.killed) {
        (_, true) => "killed after timeout".to_owned(),
        (Some(s), false) => s.to_string(),
        (None, false) => "unknown".to_owned(),
    };
    let pass = Verdicts {
        throughput_ratio: throughput_ratio >= MIN_THROUGHPUT_RATIO,
        p99: herald_report.successes > 0 && herald_report.p99_ms < MAX_P99_MS,
        peak_rss: herald_peak_rss_mib.is_some_and(|m| m <= MAX_PEAK_RSS_MIB),
    };
    let comparison = Comparison {
        nproc,
        connections: opts.connections,
        warmup_secs: opts.warmup.as_secs_f64(),
        duration_secs: opts.duration.as_secs_f64(),
        body_bytes: opts.body_bytes,
        bare,
        herald: herald_report,
        herald_peak_rss_mib,
        herald_sampled_rss_mib: sampled_kib.map(kib_to_mib),
        throughput_ratio,
        herald_log_lines: exit.log_lines,
        herald_exit,
        pass,
    };
    println!("{}", comparison.markdown());
    if opts.json {
        println!("{}", serde_json::to_string(&comparison)?);
    }
    Ok(())
}
