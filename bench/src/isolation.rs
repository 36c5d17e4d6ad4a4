//! `herald-bench isolation`: does one destination's slowness delay another's deliveries?
//!
//! The scenario of issue 10: `--slow` destinations (default 5) whose receivers answer after
//! `--slow-reply-ms` (4 s), each with `--backlog` (200) queued messages, and one healthy
//! destination answering at once. Once the slow receivers hold their slots, `--samples` (50)
//! messages are published to the healthy destination one after the other and each one's
//! publish → receipt latency is measured: from sending `POST /v1/messages` to the healthy
//! receiver reading the delivery. Target: p90 under 250 ms (it was 1.9–3.2 s when the in-flight
//! slots were shared first come, first served).
//!
//! herald runs in this process (`herald::start` on a temp dir, ports 0) with the receivers;
//! everything stays on 127.0.0.1 and stops by itself.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "bench-token-123";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The most a healthy sample may take before the run gives up on it.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct IsolationOptions {
    pub slow: usize,
    pub backlog: usize,
    pub slow_reply: Duration,
    pub samples: usize,
}

/// When each healthy delivery arrived, by `webhook-id`.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A receiver on 127.0.0.1 answering 200 after `delay`; counts requests and records arrivals.
async fn receiver(delay: Duration) -> Result<(SocketAddr, Arc<AtomicUsize>, Arrivals)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicUsize::new(0));
    let arrivals: Arrivals = Arc::default();
    let (seen, arrived) = (Arc::clone(&count), Arc::clone(&arrivals));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, arrived) = (Arc::clone(&seen), Arc::clone(&arrived));
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let at = Instant::now();
                        seen.fetch_add(1, Ordering::Relaxed);
                        if let Some(id) = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            && let Ok(mut arrivals) = arrived.lock()
                        {
                            arrivals.insert(id.to_owned(), at);
                        }
                        async move {
                            let _ = req.into_body().collect().await;
                            tokio::time::sleep(delay).await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, count, arrivals))
}

fn config(dir: &std::path::Path, destinations: &[(String, SocketAddr, &str)]) -> String {
    let mut text = format!(
        "[server]\ningest_listen = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n\n\
         [storage]\npath = {:?}\n\n[api]\ntoken = \"{TOKEN}\"\n\n[log]\nlevel = \"error\"\n\n\
         [delivery]\nallow_private_destinations = true\ntimeout_ms = 30000\n",
        dir.join("herald.redb").display().to_string()
    );
    for (name, addr, event_type) in destinations {
        let _ = write!(
            text,
            "\n[[destinations]]\nname = \"{name}\"\nurl = \"http://{addr}/\"\nsources = [\"*\"]\n\
             event_types = [\"{event_type}\"]\nsecret = \"{SECRET}\"\n"
        );
    }
    text
}

/// A client keeping one connection to the API open.
struct Api {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Api {
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { addr, sender })
    }

    /// Publishes one message; returns its id. The server may close a kept-alive connection
    /// (an idle timeout): then once more, on a new one.
    async fn publish(&mut self, event_type: &str) -> Result<String> {
        if let Ok(id) = self.publish_once(event_type).await {
            return Ok(id);
        }
        *self = Self::connect(self.addr).await?;
        self.publish_once(event_type).await
    }

    async fn publish_once(&mut self, event_type: &str) -> Result<String> {
        let body = format!(r#"{{"event_type":"{event_type}","payload":{{"n":1}}}}"#);
        let req = Request::post("/v1/messages")
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::from(body)))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != hyper::StatusCode::ACCEPTED {
            bail!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        json["id"]
            .as_str()
            .map(str::to_owned)
            .context("publish answered no id")
    }
}

/// The nearest-rank `percent`-th percentile of `sorted`.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (percent * sorted.len())
        .div_ceil(100)
        .clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::too_many_lines)]
pub async fn run(opts: IsolationOptions) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("herald-bench-isolation-")
        .tempdir()?;
    let mut destinations = Vec::new();
    let mut slow_counts = Vec::new();
    for i in 0..opts.slow {
        let (addr, count, _) = receiver(opts.slow_reply).await?;
        destinations.push((format!("slow{i}"), addr, "slow.*"));
        slow_counts.push(count);
    }
    let (healthy_addr, _, arrivals) = receiver(Duration::ZERO).await?;
    destinations.push(("healthy".to_owned(), healthy_addr, "healthy.*"));
    let text = config(dir.path(), &destinations);
    let config = herald::config::load_from_str(&text, std::iter::empty())
        .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    let running = herald::start(config).await?;
    let mut api = Api::connect(running.api_addr).await?;

    // Every slow message goes to all the slow destinations.
    for _ in 0..opts.backlog {
        api.publish("slow.tick").await?;
    }
    let wanted = (opts.slow * 30).min(opts.slow * opts.backlog);
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow_counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum::<usize>()
        < wanted
    {
        if Instant::now() > deadline {
            bail!("the slow receivers got fewer than {wanted} attempts in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut latencies = Vec::with_capacity(opts.samples);
    for _ in 0..opts.samples {
        let sent = Instant::now();
        let id = api.publish("healthy.ping").await?;
        loop {
            let arrived = arrivals.lock().ok().and_then(|a| a.get(&id).copied());
            if let Some(at) = arrived {
                latencies.push(at.saturating_duration_since(sent));
                break;
            }
            if sent.elapsed() > SAMPLE_TIMEOUT {
                bail!("a healthy message took over {SAMPLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Spread the samples over the slow receivers' reply period.
        tokio::time::sleep(opts.slow_reply / u32::try_from(opts.samples.max(1)).unwrap_or(1)).await;
    }
    let slow_attempts: usize = slow_counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    drop(api);
    // The slow attempts still in flight are cut short: the figures are taken.
    let _ = tokio::time::timeout(Duration::from_secs(1), running.shutdown()).await;

    latencies.sort();
    let (p50, p90, p99, max) = (
        percentile(&latencies, 50),
        percentile(&latencies, 90),
        percentile(&latencies, 99),
        latencies.last().copied().unwrap_or_default(),
    );
    println!(
        "isolation: {} slow destinations (reply after {} ms, {} queued each) + 1 healthy; {} samples",
        opts.slow,
        opts.slow_reply.as_millis(),
        opts.backlog,
        latencies.len()
    );
    println!("| healthy publish → receipt | p50 ms | p90 ms | p99 ms | max ms | target p90 |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    println!(
        "| {} | {:.1} | {:.1} | {:.1} | {:.1} | < 250 ms: {} |",
        latencies.len(),
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max),
        if p90 < Duration::from_millis(250) {
            "met"
        } else {
            "MISSED"
        }
    );
    println!("slow receivers meanwhile: {slow_attempts} attempts received");
    Ok(())
}
