//! The real `herald` binary as a child process, for what only a process can show (signals,
//! `SIGKILL`, exit codes).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const HERALD: &str = env!("CARGO_BIN_EXE_herald");

pub struct Process {
    pub child: Child,
    pub ingest: SocketAddr,
    pub api: SocketAddr,
    /// Every line the child wrote to stderr after startup.
    pub log: std::sync::mpsc::Receiver<String>,
}

/// Starts `herald serve --config <config>` and waits until it reports both ports.
pub fn spawn(config: &std::path::Path) -> Process {
    spawn_with_env(config, &[])
}

/// [`spawn`] with `HERALD_*` overrides in the child's environment.
pub fn spawn_with_env(config: &std::path::Path, env: &[(&str, &str)]) -> Process {
    let mut child = Command::new(HERALD)
        .args(["serve", "--config"])
        .arg(config)
        .env("HERALD_LOG_FORMAT", "human")
        .env("HERALD_LOG_LEVEL", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (log_tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after startup so the child never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for (port, marker) in [
                ("ingest", "ingest listening on "),
                ("api", "api listening on "),
            ] {
                if let Some(at) = line.find(marker) {
                    let addr: SocketAddr = line[at + marker.len()..].trim().parse().unwrap();
                    let _ = tx.send((port, addr));
                }
            }
            let _ = log_tx.send(line);
        }
    });
    let mut ports = HashMap::new();
    while ports.len() < 2 {
        let Ok((port, addr)) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("herald did not report its ports");
        };
        ports.insert(port, addr);
    }
    Process {
        child,
        ingest: ports["ingest"],
        api: ports["api"],
        log,
    }
}

impl Process {
    /// Sends `signal` (`"HUP"`, `"TERM"`…) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits until a log line contains `needle` (panics after `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line containing {needle:?} within {timeout:?}: {e}"),
            }
        }
    }
}
