//! Running herald as a child process for the benchmark.
//!
//! Herald is started exactly as an operator would start it (`herald serve --config FILE`) with a
//! throwaway config in a temp dir: ports 0, a fresh redb file (or, for `cluster`, a `PostgreSQL`
//! database and a node name: [`Node`]), one `standard-webhooks` source named `bench` whose
//! secret is the bench's, and for `deliver` one destination `sink` (every source) plus the
//! delivery settings that benchmark needs. Its bound ingest address is learned
//! from its log line `ingest listening on ADDR` (and the API's from `api listening on ADDR`),
//! read from stdout and stderr alike; both pipes keep being drained for the child's whole life
//! so herald never blocks writing a log line.
//!
//! Memory is read from `/proc/<pid>/status`: `VmRSS` sampled while the load runs and `VmHWM`
//! (the kernel's own peak-RSS mark) at the end, before herald is asked to stop with SIGTERM so
//! that its graceful shutdown path runs too.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long herald gets to log its ingest address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long herald gets to exit after SIGTERM before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept for the error message if herald fails.
const LOG_TAIL_LINES: usize = 40;
/// WARN/ERROR lines kept from the start of the run: the first ones are the evidence.
const FIRST_WARNINGS: usize = 20;
/// The line herald prints once its ingest listener is bound.
const INGEST_MARKER: &str = "ingest listening on ";
/// The line herald prints once its API listener is bound.
const API_MARKER: &str = "api listening on ";
/// The admin token written into the config.
pub const API_TOKEN: &str = "bench-token-123";

/// Counts and the tail of what herald logged.
#[derive(Debug, Default)]
struct LogState {
    tail: VecDeque<String>,
    lines: u64,
    warn_or_error_lines: u64,
    first_warnings: Vec<String>,
    api_addr: Option<SocketAddr>,
}

/// A destination for `deliver`: every message of every source goes to `url`.
#[derive(Debug, Clone)]
pub struct Sink {
    pub url: String,
    /// Outbound signing secret, `whsec_<base64>`.
    pub secret: String,
    /// For an https sink: the CA that signed its certificate (`delivery.ca_file`).
    pub ca_file: Option<PathBuf>,
}

/// Where a herald child keeps its data and what it calls itself. The default is what every
/// subcommand but `cluster` runs: redb in the child's temp dir, herald's own node name.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// `Some(url)`: `storage.backend = "postgres"` on that database instead of redb.
    pub postgres_url: Option<String>,
    /// `server.node_name`; `None` leaves herald's default (the host name).
    pub name: Option<String>,
}

/// A running herald child plus its temp dir (removed on drop).
#[derive(Debug)]
pub struct Herald {
    child: Child,
    pid: u32,
    ingest_addr: SocketAddr,
    log: Arc<Mutex<LogState>>,
    _dir: TempDir,
}

/// How herald's run ended.
#[derive(Debug)]
pub struct HeraldExit {
    /// `VmHWM` just before SIGTERM, in KiB.
    pub peak_rss_kib: Option<u64>,
    pub status: Option<ExitStatus>,
    /// True if herald had to be killed because it did not exit after SIGTERM in time.
    pub killed: bool,
    pub log_lines: u64,
    pub warn_or_error_lines: u64,
    /// The first WARN/ERROR lines of the run.
    pub first_warnings: Vec<String>,
    pub log_tail: Vec<String>,
}

/// Delivery settings written with a sink.
const DELIVERY_TOML: &str = r"
[delivery]
allow_private_destinations = true
max_attempts = 100
backoff_base_ms = 200
backoff_max_ms = 2000

[circuit_breaker]
failure_threshold = 1000000
";

/// The config herald is started with. The server rejects unknown keys, so this is exactly it.
///
/// With a sink, delivery is tuned for the benchmark: private destinations allowed (the
/// receiver is on loopback), 100 attempts with backoff 200 ms … 2 s so a receiver that is down
/// for a while loses nothing, and a circuit breaker that never opens in practice.
fn config_toml(db_path: &Path, secret: &str, sink: Option<&Sink>, node: &Node) -> String {
    let delivery = match sink {
        None => String::new(),
        Some(Sink {
            ca_file: Some(ca), ..
        }) => DELIVERY_TOML.replacen(
            "[delivery]\n",
            &format!(
                "[delivery]\nca_file = \"{}\"\n",
                toml_escape(&ca.to_string_lossy())
            ),
            1,
        ),
        Some(_) => DELIVERY_TOML.to_owned(),
    };
    let destinations = sink.map_or_else(String::new, |sink| {
        format!(
            r#"
[[destinations]]
name = "sink"
url = "{url}"
sources = ["*"]
secret = "{secret}"
"#,
            url = toml_escape(&sink.url),
            secret = toml_escape(&sink.secret),
        )
    });
    let node_name = node.name.as_deref().map_or_else(String::new, |name| {
        format!("node_name = \"{}\"\n", toml_escape(name))
    });
    let storage = match &node.postgres_url {
        None => format!("path = \"{}\"", toml_escape(&db_path.to_string_lossy())),
        Some(url) => format!(
            "backend = \"postgres\"\npostgres_url = \"{}\"",
            toml_escape(url)
        ),
    };
    format!(
        r#"[server]
ingest_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"
{node_name}
[storage]
{storage}

[api]
token = "{API_TOKEN}"

[log]
level = "warn,herald=info"
{delivery}
[[sources]]
name = "bench"
scheme = "standard-webhooks"
secret = "{secret}"
{destinations}"#,
        secret = toml_escape(secret),
    )
}

/// Escapes a string for a TOML basic (double-quoted) string.
fn toml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => {
                // Control characters are all in the BMP, so one `\uXXXX` each. Writing to a
                // String cannot fail.
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Removes ANSI escape sequences (`ESC [ … final-byte`) in case herald colours its logs.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds `ingest listening on ADDR` in a log line and parses `ADDR`.
fn parse_ingest_addr(line: &str) -> Option<SocketAddr> {
    parse_addr_after(line, INGEST_MARKER)
}

/// Finds `MARKER ADDR` in a log line and parses `ADDR`.
fn parse_addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let token = rest
        .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
        .find(|t| !t.is_empty())?;
    token.parse().ok()
}

/// Drains one of herald's pipes until EOF, counting lines, keeping the tail, and reporting the
/// first ingest address seen. Ends when herald closes the pipe (i.e. exits).
fn spawn_log_reader(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<LogState>>,
    found: mpsc::Sender<SocketAddr>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
            if let Some(addr) = parse_ingest_addr(&line) {
                let _ = found.try_send(addr);
            }
            let Ok(mut state) = log.lock() else { break };
            state.lines += 1;
            if state.api_addr.is_none() {
                state.api_addr = parse_addr_after(&line, API_MARKER);
            }
            if line.contains("WARN") || line.contains("ERROR") {
                state.warn_or_error_lines += 1;
                if state.first_warnings.len() < FIRST_WARNINGS {
                    state.first_warnings.push(line.clone());
                }
            }
            if state.tail.len() == LOG_TAIL_LINES {
                state.tail.pop_front();
            }
            state.tail.push_back(line);
        }
    })
}

fn tail_of(log: &Mutex<LogState>) -> Vec<String> {
    log.lock()
        .map(|s| s.tail.iter().cloned().collect())
        .unwrap_or_default()
}

/// Reads one `Key:   N kB` field of `/proc/<pid>/status`, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

impl Herald {
    /// Writes a config to a fresh temp dir, starts `binary serve --config …` and waits until it
    /// logs its ingest address (or exits, or 30 s pass). With `sink`, herald delivers there.
    pub async fn start(binary: &Path, secret: &str, sink: Option<&Sink>) -> Result<Self> {
        Self::start_node(binary, secret, sink, &Node::default()).await
    }

    /// [`Herald::start`] with `node`'s storage and name.
    pub async fn start_node(
        binary: &Path,
        secret: &str,
        sink: Option<&Sink>,
        node: &Node,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("herald-bench-")
            .tempdir()
            .context("creating temp dir")?;
        let config_path = dir.path().join("config.toml");
        std::fs::write(
            &config_path,
            config_toml(&dir.path().join("herald.redb"), secret, sink, node),
        )
        .with_context(|| format!("writing {}", config_path.display()))?;

        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("herald exited immediately")?;

        let log = Arc::new(Mutex::new(LogState::default()));
        let (found_tx, mut found_rx) = mpsc::channel(4);
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        spawn_log_reader(stdout, Arc::clone(&log), found_tx.clone());
        spawn_log_reader(stderr, Arc::clone(&log), found_tx);

        let failure = tokio::select! {
            addr = found_rx.recv() => match addr {
                Some(addr) => Ok(addr),
                // Both readers hit EOF without seeing the line: herald is exiting.
                None => Err(format!("closed its output without logging `{INGEST_MARKER}ADDR`")),
            },
            // The exit status is read again (it is cached) below.
            _ = child.wait() => Err("exited during startup".to_owned()),
            () = tokio::time::sleep(STARTUP_TIMEOUT) => Err(format!(
                "did not log `{INGEST_MARKER}ADDR` within {}s",
                STARTUP_TIMEOUT.as_secs()
            )),
        };
        let ingest_addr = match failure {
            Ok(addr) => addr,
            Err(what) => {
                let _ = child.start_kill();
                let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                // Give the readers a moment to collect the last lines for the message.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let status = match status {
                    Ok(Ok(s)) => s.to_string(),
                    _ => "exit status unknown".to_owned(),
                };
                bail!(
                    "herald {what} [{status}]; last log lines:\n{}",
                    tail_of(&log).join("\n")
                );
            }
        };
        if !ingest_addr.ip().is_loopback() {
            let _ = child.kill().await;
            bail!("herald bound ingest to non-loopback {ingest_addr}; refusing to load it");
        }
        Ok(Self {
            child,
            pid,
            ingest_addr,
            log,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn ingest_addr(&self) -> SocketAddr {
        self.ingest_addr
    }

    /// The API address, once herald has logged it (right after the ingest one).
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.log
            .lock()
            .ok()?
            .api_addr
            .filter(|a| a.ip().is_loopback())
    }

    /// WARN/ERROR lines so far, and the first of them.
    pub fn warnings(&self) -> (u64, Vec<String>) {
        self.log
            .lock()
            .map(|s| (s.warn_or_error_lines, s.first_warnings.clone()))
            .unwrap_or_default()
    }

    /// Whether herald has exited already (it should not have, mid-benchmark).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Samples `VmRSS` every `every` until told to stop (or `max_samples` are taken); the
    /// returned task yields the highest sample in KiB.
    pub fn sample_rss(
        &self,
        every: Duration,
        max_samples: u32,
    ) -> (oneshot::Sender<()>, JoinHandle<Option<u64>>) {
        let pid = self.pid;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut peak = None;
            let mut tick = tokio::time::interval(every);
            for _ in 0..max_samples {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                if let Ok(kib) = proc_status_kib(pid, "VmRSS") {
                    peak = peak.max(Some(kib));
                }
            }
            peak
        });
        (stop, task)
    }

    /// Reads `VmHWM`, sends SIGTERM, waits up to 10 s for a graceful exit, then kills.
    pub async fn stop(mut self) -> Result<HeraldExit> {
        let peak_rss_kib = proc_status_kib(self.pid, "VmHWM").ok();
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if !matches!(term, Ok(s) if s.success()) {
            eprintln!("warning: `kill -TERM {}` failed: {term:?}", self.pid);
        }
        let graceful = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.child.wait()).await;
        let (status, killed) = if let Ok(status) = graceful {
            (Some(status?), false)
        } else {
            self.child.kill().await.context("killing herald")?;
            (self.child.wait().await.ok(), true)
        };
        // Let the log readers see EOF and record the shutdown lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = self.log.lock().map_err(|_| anyhow!("log state poisoned"))?;
        Ok(HeraldExit {
            peak_rss_kib,
            status,
            killed,
            log_lines: state.lines,
            warn_or_error_lines: state.warn_or_error_lines,
            first_warnings: state.first_warnings.clone(),
            log_tail: state.tail.iter().cloned().collect(),
        })
    }
}

/// Resolves the herald binary path and checks that it exists, with a hint if it does not.
pub fn resolve_binary(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "herald binary not found at {} (build it with `cargo build --release -p herald`, \
             or pass --herald PATH)",
            path.display()
        );
    }
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ingest_addr_in_log_lines() -> Result<()> {
        let plain =
            "2026-01-01T00:00:00Z  INFO herald::server: ingest listening on 127.0.0.1:41234";
        assert_eq!(parse_ingest_addr(plain), Some("127.0.0.1:41234".parse()?));
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ingest listening on 127.0.0.1:5, tls=false";
        assert_eq!(
            parse_ingest_addr(&strip_ansi(coloured)).map(|a| a.port()),
            Some(5)
        );
        assert_eq!(parse_ingest_addr("api listening on 127.0.0.1:9"), None);
        assert_eq!(parse_ingest_addr("ingest listening on soon"), None);
        Ok(())
    }

    #[test]
    fn config_is_the_documented_one() {
        let cfg = config_toml(
            Path::new("/tmp/x\"y/herald.redb"),
            "whsec_abc",
            None,
            &Node::default(),
        );
        assert!(cfg.contains(r#"path = "/tmp/x\"y/herald.redb""#));
        assert!(cfg.contains(r#"secret = "whsec_abc""#));
        assert!(cfg.contains(r#"token = "bench-token-123""#));
        assert!(cfg.contains("[[sources]]\nname = \"bench\"\nscheme = \"standard-webhooks\""));
        assert!(!cfg.contains("rate_limit"));
        assert!(!cfg.contains("[delivery]"));
        assert!(!cfg.contains("[[destinations]]"));
        assert!(!cfg.contains("node_name") && !cfg.contains("backend"));
    }

    #[test]
    fn config_on_postgres_names_the_database_and_the_node() {
        let node = Node {
            postgres_url: Some("postgres://herald@127.0.0.1:55432/herald_bench_1".to_owned()),
            name: Some("bench-2".to_owned()),
        };
        let cfg = config_toml(Path::new("/tmp/h.redb"), "whsec_in", None, &node);
        assert!(cfg.contains(
            "[storage]\nbackend = \"postgres\"\n\
             postgres_url = \"postgres://herald@127.0.0.1:55432/herald_bench_1\"\n"
        ));
        assert!(cfg.contains("api_listen = \"127.0.0.1:0\"\nnode_name = \"bench-2\"\n"));
        assert!(!cfg.contains("path ="));
    }

    #[test]
    fn config_with_a_sink_delivers_everything_there() {
        let sink = Sink {
            ca_file: None,
            url: "http://127.0.0.1:4321/hooks".to_owned(),
            secret: "whsec_out".to_owned(),
        };
        let cfg = config_toml(
            Path::new("/tmp/h.redb"),
            "whsec_in",
            Some(&sink),
            &Node::default(),
        );
        for needle in [
            "[delivery]\nallow_private_destinations = true\nmax_attempts = 100\n\
             backoff_base_ms = 200\nbackoff_max_ms = 2000\n",
            "[circuit_breaker]\nfailure_threshold = 1000000\n",
            "[[destinations]]\nname = \"sink\"\nurl = \"http://127.0.0.1:4321/hooks\"\n\
             sources = [\"*\"]\nsecret = \"whsec_out\"\n",
            "[[sources]]\nname = \"bench\"\nscheme = \"standard-webhooks\"\nsecret = \"whsec_in\"\n",
        ] {
            assert!(cfg.contains(needle), "missing {needle:?} in\n{cfg}");
        }
        // Tables come before the arrays of tables, each key once.
        assert!(cfg.find("[delivery]") < cfg.find("[[sources]]"));
        assert_eq!(cfg.matches("max_attempts").count(), 1);
    }

    #[test]
    fn finds_api_addr_in_log_lines() -> Result<()> {
        let line = "2026-01-01T00:00:00Z  INFO herald: api listening on 127.0.0.1:40001";
        assert_eq!(
            parse_addr_after(line, API_MARKER),
            Some("127.0.0.1:40001".parse()?)
        );
        assert_eq!(parse_addr_after(line, INGEST_MARKER), None);
        Ok(())
    }

    #[test]
    fn reads_own_proc_status() -> Result<()> {
        let pid = std::process::id();
        assert!(proc_status_kib(pid, "VmHWM")? > 0);
        assert!(proc_status_kib(pid, "VmRSS")? > 0);
        assert!(proc_status_kib(pid, "NoSuchKey").is_err());
        Ok(())
    }
}
