//! `micro`: in-process measurements of three costs on herald's hot paths, each against a
//! target of its issue.
//!
//! 1. **The suppression check** the dispatcher runs before every delivery whose message names a
//!    recipient. A temp store is filled with `--suppressions` suppressions through
//!    `Store::add_suppressions`, in bulks of 10 000 (the API's bulk limit), timing each bulk.
//!    Then the check itself: straight from redb (`suppressions_of` + `preferences` + `verdict`),
//!    and through a `CacheCoordinator` as the dispatcher's `held_back` does it (two
//!    `get_or_load` calls, `supp:` and `prefs:` keys): with every lookup a miss (a fresh
//!    recipient each time), and over a warm working set of 10 000 recipients. Target: under 5 %
//!    of delivery, i.e. delivered/s × CPU per (warm) check < 5 % of one core.
//! 2. **The perf layer**, per HTTP request: the route template, the two clock reads, the
//!    prometheus observation (`Metrics::request`) and the cast to the perf monitor, whose
//!    handler records into `RouteLatencies`. Each piece alone, then the whole of it through a
//!    real `Herald` (`Herald::request_served`, the very call the edge makes) with its real
//!    perf monitor, as process CPU per request. Target: under 3 % of ingest, i.e.
//!    ingest req/s × CPU per request < 3 % of the machine's cores. herald has no switch to turn
//!    the layer off, so there is no direct A/B against a server without it.
//! 3. **A cache hit**: `get_or_load` on one warm key, with 1, 2 and 64 concurrent tasks.
//!
//! Timed runs have a warm-up (not counted) and a window; every task stops starting operations at
//! the window's end, and each loop also has an iteration cap. CPU figures are the process's
//! user + system time from `/proc/self/stat` over the window (10 ms resolution), so they count
//! every thread involved: the caller, the actor that answers it, and redb's reads on the
//! blocking pool.

use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use herald::http::routes::{self, Port};

/// What the perf layer runs per request: the route table's match, and its label as a `String`.
fn template(method: &Method, path: &str) -> String {
    routes::find(Port::Ingest, method, path).label().to_owned()
}
use herald_actors::cache::{self, CacheCoordinator, CacheMsg, CacheSettings};
use herald_actors::dispatcher::DeliverySettings;
use herald_actors::dispatcher::breaker::BreakerPolicy;
use herald_actors::dispatcher::retry::Backoff;
use herald_actors::metrics::Metrics;
use herald_actors::perf::latency::RouteLatencies;
use herald_actors::perf::monitor::PerfMsg;
use herald_actors::suppression::rules;
use herald_actors::{Herald, PerfSink, Settings, cache_keys, unix_ms};
use herald_storage::{AuditEntry, NewSuppression, Options, Preferences, Store, SuppressionRecord};
use hyper::Method;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;

use crate::load::to_f64;

/// Suppressions per `add_suppressions` call: the API's bulk limit.
const BULK: u64 = 10_000;
/// Recipients the cached check cycles over (half suppressed, half not).
const WORKING_SET: u64 = 10_000;
/// The dispatcher's wait for an opt-out lookup (`CACHE_WAIT` in the dispatcher).
const CACHE_WAIT: Duration = Duration::from_secs(10);
/// The cache's bounds in herald (`CACHE_CAPACITY`, `CACHE_TTL` in the root crate).
const CACHE: CacheSettings = CacheSettings {
    capacity: 100_000,
    ttl: Duration::from_secs(60),
};
/// The destination channel every suppression is stored on and checked against.
const CHANNEL: &str = "email";
/// Iteration cap per task in a timed run, on top of the time limit.
const MAX_OPS_PER_TASK: u64 = 100_000_000;
/// Iterations of each single-threaded piece of the perf layer.
const TIGHT_LOOP: u64 = 2_000_000;
/// Casts between two barriers (a call through the same mailbox) in the perf-layer runs.
const CAST_BATCH: u64 = 10_000;
/// Warm-up before each timed window.
const WARMUP: Duration = Duration::from_millis(500);
/// Row labels of the check table.
const UNCACHED: &str = "uncached (redb)";
const MISSED: &str = "cache, every lookup a miss";
const CACHED: &str = "cache (warm)";
/// Latencies are recorded in ns, up to a minute.
const HIST_MAX_NANOS: u64 = 60_000_000_000;

const TARGET_DELIVERY_SHARE: f64 = 0.05;
const TARGET_INGEST_SHARE: f64 = 0.03;

/// Options of the `micro` subcommand.
#[derive(Debug, Clone)]
pub struct MicroOptions {
    /// Suppressions stored before the checks run.
    pub suppressions: u64,
    /// The end-to-end delivery rate the check is weighed against (`deliver`'s delivered/s).
    pub delivered_per_sec: f64,
    /// The ingest rate the perf layer is weighed against (`ingest`'s herald req/s).
    pub ingest_per_sec: f64,
    /// Length of each timed window.
    pub window: Duration,
    pub json: bool,
}

/// Filling the store.
#[derive(Debug, Serialize)]
struct LoadStats {
    suppressions: u64,
    bulks: usize,
    bulk_p50_ms: f64,
    bulk_p90_ms: f64,
    bulk_max_ms: f64,
    first_10_bulks_mean_ms: f64,
    last_10_bulks_mean_ms: f64,
    /// Sum of the `add_suppressions` awaits.
    apply_secs: f64,
    /// Including building the items.
    wall_secs: f64,
    items_per_sec: f64,
    file_mib: Option<f64>,
}

/// One timed run.
#[derive(Debug, Clone, Serialize)]
struct Rate {
    what: &'static str,
    tasks: usize,
    ops: u64,
    secs: f64,
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Process CPU (every thread) over the window ÷ operations.
    cpu_us_per_op: Option<f64>,
    /// Process CPU over the window ÷ its length.
    cores_busy: Option<f64>,
}

/// The perf layer's pieces, ns per request.
#[derive(Debug, Serialize)]
struct PerfLayer {
    template_ns: f64,
    two_clock_reads_ns: f64,
    route_clone_ns: f64,
    metrics_request_ns: f64,
    route_latencies_record_ns: f64,
    cast_sender_ns: f64,
    cast_trivial_cpu_ns: Option<f64>,
    cast_recording_cpu_ns: Option<f64>,
    /// `Herald::request_served` with the real perf monitor, plus template and clock reads:
    /// process CPU per request, minus the idle herald's own CPU over the same time.
    full_cpu_ns: Option<f64>,
    full_cpu_ns_raw: Option<f64>,
    full_requests: u64,
    /// Requests per second one sender pushed through the whole layer (monitor included).
    full_per_sec: f64,
    idle_cores: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Verdicts {
    suppression_check_under_5pct_of_delivery: bool,
    monitoring_under_3pct_of_ingest: bool,
}

#[derive(Debug, Serialize)]
struct MicroReport {
    nproc: usize,
    window_secs: f64,
    load: LoadStats,
    checks: Vec<Rate>,
    /// Misses ÷ lookups over the whole miss run (warm-up included).
    miss_rate_in_miss_run: f64,
    cache_hits: Vec<Rate>,
    cache_hit_rate_in_windows: f64,
    perf_layer: PerfLayer,
    delivered_per_sec: f64,
    /// delivered/s × CPU per cached check (warm, 1 task), as a share of one core.
    check_share_of_one_core: Option<f64>,
    /// The same if every check missed the cache.
    miss_check_share_of_one_core: Option<f64>,
    /// delivered/s ÷ checks/s of one task checking sequentially (warm cache): the share of the
    /// dispatcher's time spent awaiting checks (it awaits them one after the other, in its own
    /// handler, before launching each attempt).
    dispatcher_wait_share: Option<f64>,
    /// The same if every check missed the cache.
    miss_dispatcher_wait_share: Option<f64>,
    ingest_per_sec: f64,
    /// ingest req/s × perf layer CPU per request ÷ (nproc cores).
    monitoring_share_of_cpu: Option<f64>,
    monitoring_share_of_one_core: Option<f64>,
    pass: Verdicts,
}

// ---- helpers ---------------------------------------------------------------------------------

/// splitmix64's finaliser: a bijection on u64, so distinct inputs give distinct recipients.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Recipient number `i`: `0..n` are stored, `n..2n` are not. Hashed, so bulks land all over
/// the key space as real ones would, not in key order.
/// A recipient as storage keys it.
fn canonical(who: &str) -> Result<herald_storage::Recipient> {
    herald_storage::Recipient::parse(who).map_err(|e| anyhow::anyhow!("recipient {who}: {e}"))
}

fn recipient(i: u64) -> String {
    format!("u{:016x}@example.com", mix(i))
}

/// A small deterministic generator per task.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0 ^ 0x5151_5151_0000_0000)
    }
}

/// The process's CPU time, user + system, over every thread (exited ones included).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted after the `(comm)` field; in USER_HZ = 100 ticks.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(before?))
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_NANOS, 3).context("creating a histogram")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Average ns per call of `f` over `n` calls, after `n / 10` unmeasured ones.
fn per_call_ns(n: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_secs_f64() * 1e9 / to_f64(n)
}

/// Runs `op` in `tasks` concurrent loops: a warm-up, then the window. Each call gets a fresh
/// pseudo-random number. Latency is one call, start to end.
async fn timed<F, Fut>(what: &'static str, tasks: usize, window: Duration, op: F) -> Result<Rate>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let measure_start = Instant::now() + WARMUP;
    let end = measure_start + window;
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut rng = Rng((task as u64) << 40);
                let mut latency = histogram()?;
                let mut ops = 0u64;
                for _ in 0..MAX_OPS_PER_TASK {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    op(rng.next()).await?;
                    if began >= measure_start {
                        latency.saturating_record(nanos(began.elapsed()).max(1));
                        ops += 1;
                    }
                }
                Ok::<_, anyhow::Error>((latency, ops))
            })
        })
        .collect();
    tokio::time::sleep_until(measure_start.into()).await;
    let cpu_before = process_cpu();
    let mut latency = histogram()?;
    let mut ops = 0;
    let hard_deadline = end + Duration::from_secs(30);
    for worker in workers {
        let (h, n) = tokio::time::timeout_at(hard_deadline.into(), worker)
            .await
            .context("a task did not finish within 30 s of the window's end")?
            .context("a task panicked")??;
        latency.add(&h).context("merging histograms")?;
        ops += n;
    }
    let secs = measure_start.elapsed().as_secs_f64();
    let cpu = cpu_since(cpu_before);
    let us = |ns: u64| to_f64(ns) / 1e3;
    Ok(Rate {
        what,
        tasks,
        ops,
        secs,
        per_sec: to_f64(ops) / secs,
        p50_us: us(latency.value_at_quantile(0.50)),
        p99_us: us(latency.value_at_quantile(0.99)),
        max_us: us(latency.max()),
        cpu_us_per_op: cpu
            .filter(|_| ops > 0)
            .map(|c| c.as_secs_f64() * 1e6 / to_f64(ops)),
        cores_busy: cpu.map(|c| c.as_secs_f64() / secs),
    })
}

async fn open_store(path: std::path::PathBuf) -> Result<Store> {
    tokio::task::spawn_blocking(move || Store::open(&path, Options::default()))
        .await
        .context("the open task panicked")?
        .context("opening the store")
}

// ---- 1. suppressions -------------------------------------------------------------------------

async fn fill(store: &Store, n: u64, path: &std::path::Path) -> Result<LoadStats> {
    let now = unix_ms(SystemTime::now());
    let started = Instant::now();
    let mut times = Vec::new();
    let mut next = 0;
    let mut reported = 0;
    while next < n {
        let end = (next + BULK).min(n);
        let items: Vec<NewSuppression> = (next..end)
            .map(|i| {
                Ok(NewSuppression {
                    recipient: canonical(&recipient(i))?,
                    channel: CHANNEL.into(),
                    record: SuppressionRecord {
                        reason: "bounce".into(),
                        expires_at_ms: None,
                        note: None,
                        created_by: "bench".into(),
                        created_at_ms: now,
                    },
                })
            })
            .collect::<Result<_>>()?;
        let audit = vec![AuditEntry {
            at_ms: now,
            actor: "bench".into(),
            action: "suppression.bulk_create".into(),
            subject: "*".into(),
            before: None,
            after: Some(serde_json::json!({ "count": items.len() })),
        }];
        let t = Instant::now();
        store
            .add_suppressions(items, audit)
            .await
            .with_context(|| format!("bulk {}", times.len()))?;
        times.push(t.elapsed());
        next = end;
        if next * 10 / n > reported {
            reported = next * 10 / n;
            eprintln!(
                "  {next} stored, {:.1} s, last bulk {:.0} ms",
                started.elapsed().as_secs_f64(),
                ms(t.elapsed())
            );
        }
    }
    let wall = started.elapsed();
    let apply: Duration = times.iter().sum();
    let mean_ms = |s: &[Duration]| {
        if s.is_empty() {
            0.0
        } else {
            ms(s.iter().sum::<Duration>()) / to_f64(s.len() as u64)
        }
    };
    let first = mean_ms(&times[..times.len().min(10)]);
    let last = mean_ms(&times[times.len().saturating_sub(10)..]);
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let at = |permille: usize| {
        // Nearest rank.
        let rank = (sorted.len() * permille).div_ceil(1000);
        sorted
            .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
            .map_or(0.0, |d| ms(*d))
    };
    Ok(LoadStats {
        suppressions: n,
        bulks: times.len(),
        bulk_p50_ms: at(500),
        bulk_p90_ms: at(900),
        bulk_max_ms: sorted.last().map_or(0.0, |d| ms(*d)),
        first_10_bulks_mean_ms: first,
        last_10_bulks_mean_ms: last,
        apply_secs: apply.as_secs_f64(),
        wall_secs: wall.as_secs_f64(),
        items_per_sec: to_f64(n) / wall.as_secs_f64(),
        file_mib: std::fs::metadata(path)
            .ok()
            .map(|m| to_f64(m.len()) / 1_048_576.0),
    })
}

/// The check on a cache miss: both reads from redb, then the rule.
async fn check_uncached(store: &Store, who: &str, now: u64) -> Result<Option<String>> {
    let suppressions = store.suppressions_of(canonical(who)?).await?;
    let preferences = store.preferences(canonical(who)?).await?;
    Ok(rules::verdict(
        &suppressions,
        preferences.as_ref(),
        CHANNEL,
        None,
        now,
    ))
}

/// The check as the dispatcher's `opt_out` + `held_back` run it: through the cache.
async fn check_cached(
    cache: &ActorRef<CacheMsg>,
    store: &Store,
    who: &str,
    now: u64,
) -> Result<Option<String>> {
    let s = store.clone();
    let r = canonical(who)?;
    let suppressions: Arc<Vec<(String, SuppressionRecord)>> = cache::get_or_load(
        cache,
        cache_keys::suppressions(who),
        CACHE_WAIT,
        move || async move { s.suppressions_of(r).await.map_err(|e| e.to_string()) },
    )
    .await?;
    let s = store.clone();
    let r = canonical(who)?;
    let preferences: Arc<Option<Preferences>> = cache::get_or_load(
        cache,
        cache_keys::preferences(who),
        CACHE_WAIT,
        move || async move { s.preferences(r).await.map_err(|e| e.to_string()) },
    )
    .await?;
    Ok(rules::verdict(
        &suppressions,
        preferences.as_ref().as_ref(),
        CHANNEL,
        None,
        now,
    ))
}

/// A stored recipient must be held back, an unknown one must not.
fn expect(verdict: Option<&String>, stored: bool, who: &str) -> Result<()> {
    if verdict.is_some() != stored {
        bail!("wrong verdict for {who} (stored: {stored}): {verdict:?}");
    }
    Ok(())
}

async fn uncached_runs(store: &Store, n: u64, window: Duration) -> Result<Vec<Rate>> {
    let now = unix_ms(SystemTime::now());
    let mut out = Vec::new();
    for tasks in [2, 64] {
        eprintln!("  uncached, {tasks} tasks…");
        let store = store.clone();
        out.push(
            timed(UNCACHED, tasks, window, move |r| {
                let store = store.clone();
                async move {
                    // Even: a stored recipient; odd: one never stored.
                    let stored = r & 1 == 0;
                    let i = (r >> 1) % n + if stored { 0 } else { n };
                    let who = recipient(i);
                    let verdict = check_uncached(&store, &who, now).await?;
                    expect(verdict.as_ref(), stored, &who)
                }
            })
            .await?,
        );
    }
    Ok(out)
}

async fn cached_runs(
    cache: &ActorRef<CacheMsg>,
    store: &Store,
    n: u64,
    window: Duration,
) -> Result<Vec<Rate>> {
    let now = unix_ms(SystemTime::now());
    let mut rng = Rng(0xCAC4E);
    let set: Arc<Vec<(String, bool)>> = Arc::new(
        (0..WORKING_SET.min(2 * n))
            .map(|j| {
                let stored = j % 2 == 0;
                let i = rng.next() % n + if stored { 0 } else { n };
                (recipient(i), stored)
            })
            .collect(),
    );
    eprintln!("  warming the cache with {} recipients…", set.len());
    for (who, stored) in set.iter() {
        let verdict = check_cached(cache, store, who, now).await?;
        expect(verdict.as_ref(), *stored, who)?;
    }
    let mut out = Vec::new();
    for tasks in [1, 2, 64] {
        eprintln!("  {CACHED}, {tasks} tasks…");
        let (cache, store, set) = (cache.clone(), store.clone(), Arc::clone(&set));
        out.push(
            timed(CACHED, tasks, window, move |r| {
                let (cache, store, set) = (cache.clone(), store.clone(), Arc::clone(&set));
                async move {
                    let (who, stored) = &set[(r % set.len() as u64) as usize];
                    let verdict = check_cached(&cache, &store, who, now).await?;
                    expect(verdict.as_ref(), *stored, who)
                }
            })
            .await?,
        );
    }
    Ok(out)
}

/// The dispatcher's path when the recipient is not cached: each check a fresh recipient out of
/// 2 × `n`, so (but for the odd repeat) both lookups miss and load from redb through the cache.
async fn missed_run(
    cache: &ActorRef<CacheMsg>,
    store: &Store,
    n: u64,
    window: Duration,
) -> Result<Rate> {
    let now = unix_ms(SystemTime::now());
    eprintln!("  {MISSED}, 1 task…");
    let (cache, store) = (cache.clone(), store.clone());
    timed(MISSED, 1, window, move |r| {
        let (cache, store) = (cache.clone(), store.clone());
        async move {
            let stored = r & 1 == 0;
            let i = (r >> 1) % n + if stored { 0 } else { n };
            let who = recipient(i);
            let verdict = check_cached(&cache, &store, &who, now).await?;
            expect(verdict.as_ref(), stored, &who)
        }
    })
    .await
}

// ---- 3. cache hits ---------------------------------------------------------------------------

async fn hit(cache: &ActorRef<CacheMsg>) -> Result<()> {
    let value: Arc<u64> =
        cache::get_or_load(cache, "prefs:bench-hit".to_owned(), CACHE_WAIT, || async {
            Ok(1)
        })
        .await?;
    black_box(value);
    Ok(())
}

async fn hit_runs(cache: &ActorRef<CacheMsg>, window: Duration) -> Result<Vec<Rate>> {
    hit(cache).await?;
    let mut out = Vec::new();
    for tasks in [1, 2, 64] {
        eprintln!("  cache hits, {tasks} tasks…");
        let cache = cache.clone();
        out.push(
            timed("cache hit", tasks, window, move |_| {
                let cache = cache.clone();
                async move { hit(&cache).await }
            })
            .await?,
        );
    }
    Ok(out)
}

// ---- 2. the perf layer -----------------------------------------------------------------------

/// Stands in for the perf monitor: takes the same message; records it like the monitor does,
/// or drops it. Answers `Alerts` (with nothing) as a barrier.
#[derive(Debug)]
struct StandIn;

impl Actor for StandIn {
    type Msg = PerfMsg;
    type State = Option<RouteLatencies>;
    type Arguments = bool;

    async fn pre_start(
        &self,
        _myself: ActorRef<PerfMsg>,
        record: bool,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(record.then(RouteLatencies::new))
    }

    async fn handle(
        &self,
        _myself: ActorRef<PerfMsg>,
        msg: PerfMsg,
        routes: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PerfMsg::Request {
                port,
                route,
                status,
                took,
            } => {
                if let Some(routes) = routes {
                    routes.record(port, &route, status, took);
                }
            }
            PerfMsg::Alerts(_, reply) => {
                let _ = reply.send(Vec::new());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Casts `Request`s to a stand-in for `window`, with a barrier every [`CAST_BATCH`]: sender ns
/// per cast, and process CPU per request (sender and handler).
async fn casts(record: bool, window: Duration) -> Result<(f64, Option<f64>)> {
    let (actor, handle) = Actor::spawn(None, StandIn, record)
        .await
        .context("spawning the stand-in")?;
    let route = template(&Method::POST, "/webhooks/bench");
    let took = Duration::from_micros(500);
    let started = Instant::now();
    let cpu_before = process_cpu();
    let mut sending = Duration::ZERO;
    let mut sent = 0u64;
    while started.elapsed() < window && sent < MAX_OPS_PER_TASK {
        let t = Instant::now();
        for _ in 0..CAST_BATCH {
            actor
                .cast(PerfMsg::Request {
                    port: "ingest",
                    route: route.clone(),
                    status: 202,
                    took,
                })
                .context("cast")?;
        }
        sending += t.elapsed();
        sent += CAST_BATCH;
        match actor
            .call(|reply| PerfMsg::Alerts(false, reply), Some(CACHE_WAIT))
            .await
        {
            Ok(CallResult::Success(_)) => {}
            _ => bail!("the stand-in did not answer the barrier"),
        }
    }
    let cpu = cpu_since(cpu_before);
    actor.stop(None);
    let _ = handle.await;
    let sender_ns = sending.as_secs_f64() * 1e9 / to_f64(sent);
    Ok((sender_ns, cpu.map(|c| c.as_secs_f64() * 1e9 / to_f64(sent))))
}

/// What herald's actors need to start, with no sources and no destinations.
fn idle_settings() -> Settings {
    Settings {
        node_name: "bench".into(),
        sources: Vec::new(),
        routes: Vec::new(),
        block_after_invalid: 10,
        block_window: Duration::from_secs(60),
        block_for: Duration::from_secs(300),
        dedupe_window: Duration::from_secs(86_400),
        request_timeout: Duration::from_secs(30),
        delivery: DeliverySettings {
            max_attempts: 5,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            timeout: Duration::from_secs(10),
            auto_recover: false,
            allow_private: false,
            breaker: BreakerPolicy {
                failure_threshold: 5,
                open_for: Duration::from_secs(30),
            },
            configured: Vec::new(),
            extra_roots: Vec::new(),
        },
        budgets: herald_actors::perf::budgets::default_budgets(),
        alerts_destination: None,
        cache: CACHE,
        maintenance_interval: Duration::from_secs(3600),
    }
}

/// The whole layer through a real `Herald`: what the edge's `timed` wrapper does per request.
async fn full_layer(window: Duration, layer: &mut PerfLayer) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let store = open_store(dir.path().join("herald.redb")).await?;
    let herald = Herald::start(
        idle_settings(),
        store.clone(),
        Arc::new(Metrics::new("bench")),
        PerfSink::default(),
    )
    .await?;
    // What the idle actors cost on their own, to take out of the figure.
    let idle = Duration::from_secs(2);
    let cpu_before = process_cpu();
    tokio::time::sleep(idle).await;
    let idle_cores = cpu_since(cpu_before).map(|c| c.as_secs_f64() / idle.as_secs_f64());

    let started = Instant::now();
    let cpu_before = process_cpu();
    let mut sent = 0u64;
    while started.elapsed() < window && sent < MAX_OPS_PER_TASK {
        for _ in 0..CAST_BATCH {
            let template = template(&Method::POST, "/webhooks/bench");
            let began = Instant::now();
            let took = began.elapsed();
            herald.request_served("ingest", template, 202, took);
        }
        sent += CAST_BATCH;
        // The monitor handles its mailbox in order: once this answers, every cast is handled.
        herald.perf_report().await.context("perf report")?;
    }
    let wall = started.elapsed();
    let cpu = cpu_since(cpu_before);
    herald.shutdown().await;
    store.close().await;

    let per = |c: f64| c * 1e9 / to_f64(sent);
    layer.full_requests = sent;
    layer.full_per_sec = to_f64(sent) / wall.as_secs_f64();
    layer.idle_cores = idle_cores;
    layer.full_cpu_ns_raw = cpu.map(|c| per(c.as_secs_f64()));
    layer.full_cpu_ns = cpu.map(|c| {
        let idle = idle_cores.unwrap_or(0.0) * wall.as_secs_f64();
        per((c.as_secs_f64() - idle).max(0.0))
    });
    Ok(())
}

async fn perf_layer(window: Duration) -> Result<PerfLayer> {
    let method = Method::POST;
    let template_ns = per_call_ns(TIGHT_LOOP, || {
        black_box(template(black_box(&method), black_box("/webhooks/bench")));
    });
    let two_clock_reads_ns = per_call_ns(TIGHT_LOOP, || {
        black_box(black_box(Instant::now()).elapsed());
    });
    let route = template(&method, "/webhooks/bench");
    let route_clone_ns = per_call_ns(TIGHT_LOOP, || {
        black_box(black_box(&route).clone());
    });
    let metrics = Metrics::new("bench");
    let took = Duration::from_micros(500);
    let metrics_request_ns = per_call_ns(TIGHT_LOOP, || {
        metrics.request("ingest", route.clone(), 202, black_box(took));
    });
    let mut routes = RouteLatencies::new();
    let route_latencies_record_ns = per_call_ns(TIGHT_LOOP, || {
        routes.record("ingest", black_box(&route), 202, black_box(took));
    });
    eprintln!("  casts to a stand-in that drops them…");
    let (cast_sender_ns, cast_trivial_cpu_ns) = casts(false, window).await?;
    eprintln!("  casts to a stand-in that records them…");
    let (_, cast_recording_cpu_ns) = casts(true, window).await?;
    let mut layer = PerfLayer {
        template_ns,
        two_clock_reads_ns,
        route_clone_ns,
        metrics_request_ns,
        route_latencies_record_ns,
        cast_sender_ns,
        cast_trivial_cpu_ns,
        cast_recording_cpu_ns,
        full_cpu_ns: None,
        full_cpu_ns_raw: None,
        full_requests: 0,
        full_per_sec: 0.0,
        idle_cores: None,
    };
    eprintln!("  Herald::request_served with the real perf monitor…");
    full_layer(window, &mut layer).await?;
    Ok(layer)
}

// ---- the run ---------------------------------------------------------------------------------

pub async fn run(opts: MicroOptions) -> Result<()> {
    let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if opts.suppressions == 0 {
        bail!("--suppressions must be at least 1");
    }
    eprintln!(
        "micro: {} suppressions, {:.1} s windows, nproc {nproc}",
        opts.suppressions,
        opts.window.as_secs_f64()
    );
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let path = dir.path().join("herald.redb");
    let store = open_store(path.clone()).await?;

    eprintln!("[1/4] storing {} suppressions…", opts.suppressions);
    let load = fill(&store, opts.suppressions, &path).await?;

    eprintln!("[2/4] the suppression check…");
    let mut checks = uncached_runs(&store, opts.suppressions, opts.window).await?;
    let (cache, cache_handle) = Actor::spawn(None, CacheCoordinator, CACHE)
        .await
        .context("spawning the cache")?;
    let before = cache::stats(&cache, CACHE_WAIT).await?;
    checks.push(missed_run(&cache, &store, opts.suppressions, opts.window).await?);
    let after = cache::stats(&cache, CACHE_WAIT).await?;
    let miss_rate_in_miss_run = to_f64(after.misses - before.misses)
        / to_f64((after.hits + after.misses - before.hits - before.misses).max(1));
    checks.extend(cached_runs(&cache, &store, opts.suppressions, opts.window).await?);

    eprintln!("[3/4] cache hits…");
    let before = cache::stats(&cache, CACHE_WAIT).await?;
    let cache_hits = hit_runs(&cache, opts.window).await?;
    let after = cache::stats(&cache, CACHE_WAIT).await?;
    let lookups = (after.hits + after.misses).saturating_sub(before.hits + before.misses);
    // One miss is the first lookup of the hit key.
    let cache_hit_rate_in_windows = to_f64(after.hits - before.hits) / to_f64(lookups.max(1));
    cache.stop(None);
    let _ = cache_handle.await;
    store.close().await;
    drop(dir);

    eprintln!("[4/4] the perf layer…");
    let perf_layer = perf_layer(opts.window).await?;

    let sequential = checks.iter().find(|r| r.what == CACHED && r.tasks == 1);
    let missed = checks.iter().find(|r| r.what == MISSED && r.tasks == 1);
    let share = |r: Option<&Rate>| {
        r.and_then(|r| r.cpu_us_per_op)
            .map(|us| opts.delivered_per_sec * us / 1e6)
    };
    let check_share_of_one_core = share(sequential);
    let miss_check_share_of_one_core = share(missed);
    // One task checks one recipient after the other, as the dispatcher does: its checks/s is
    // the inverse of the mean time one check keeps the dispatcher waiting.
    let wait_share = |r: Option<&Rate>| {
        r.filter(|r| r.per_sec > 0.0)
            .map(|r| opts.delivered_per_sec / r.per_sec)
    };
    let dispatcher_wait_share = wait_share(sequential);
    let miss_dispatcher_wait_share = wait_share(missed);
    let monitoring_share_of_one_core = perf_layer
        .full_cpu_ns
        .map(|ns| opts.ingest_per_sec * ns / 1e9);
    let monitoring_share_of_cpu = monitoring_share_of_one_core.map(|s| s / to_f64(nproc as u64));
    let pass = Verdicts {
        suppression_check_under_5pct_of_delivery: check_share_of_one_core
            .is_some_and(|s| s < TARGET_DELIVERY_SHARE),
        monitoring_under_3pct_of_ingest: monitoring_share_of_cpu
            .is_some_and(|s| s < TARGET_INGEST_SHARE),
    };
    let report = MicroReport {
        nproc,
        window_secs: opts.window.as_secs_f64(),
        load,
        checks,
        miss_rate_in_miss_run,
        cache_hits,
        cache_hit_rate_in_windows,
        perf_layer,
        delivered_per_sec: opts.delivered_per_sec,
        check_share_of_one_core,
        miss_check_share_of_one_core,
        dispatcher_wait_share,
        miss_dispatcher_wait_share,
        ingest_per_sec: opts.ingest_per_sec,
        monitoring_share_of_cpu,
        monitoring_share_of_one_core,
        pass,
    };
    println!("{}", markdown(&report));
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

// ---- the report ------------------------------------------------------------------------------

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.2} %", v * 100.0))
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn rate_rows(out: &mut String, rates: &[Rate]) {
    for r in rates {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {} | {} |",
            r.what,
            r.tasks,
            r.per_sec,
            r.p50_us,
            r.p99_us,
            r.max_us,
            opt(r.cpu_us_per_op, 2),
            opt(r.cores_busy, 2),
        );
    }
}

fn markdown(r: &MicroReport) -> String {
    let mut s = String::new();
    markdown_load(&mut s, &r.load);
    markdown_rates(&mut s, r);
    markdown_perf(&mut s, &r.perf_layer);
    markdown_targets(&mut s, r);
    s
}

fn markdown_load(s: &mut String, l: &LoadStats) {
    let _ = writeln!(
        s,
        "## Storing {} suppressions in bulks of {BULK}\n",
        l.suppressions
    );
    let _ = writeln!(
        s,
        "| bulks | bulk p50 ms | bulk p90 ms | bulk max ms | first 10 mean ms | last 10 mean ms \
         | apply total s | wall s | items/s | file MiB |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} |\n",
        l.bulks,
        l.bulk_p50_ms,
        l.bulk_p90_ms,
        l.bulk_max_ms,
        l.first_10_bulks_mean_ms,
        l.last_10_bulks_mean_ms,
        l.apply_secs,
        l.wall_secs,
        l.items_per_sec,
        opt(l.file_mib, 1)
    );
}

fn markdown_rates(s: &mut String, r: &MicroReport) {
    let header = "| path | tasks | ops/s | p50 µs | p99 µs | max µs | CPU µs/op | cores busy |\n\
                  |---|---|---|---|---|---|---|---|";
    let _ = writeln!(
        s,
        "## Suppression check (suppressions_of + preferences + verdict; half the recipients \
         suppressed)\n\n{header}"
    );
    rate_rows(s, &r.checks);
    let _ = writeln!(
        s,
        "\nmiss rate over the miss run: {:.4}",
        r.miss_rate_in_miss_run
    );
    let _ = writeln!(s, "\n## Cache hit (get_or_load, one warm key)\n\n{header}");
    rate_rows(s, &r.cache_hits);
    let _ = writeln!(
        s,
        "\nhit rate over the hit windows: {:.4}\n",
        r.cache_hit_rate_in_windows
    );
}

fn markdown_perf(s: &mut String, p: &PerfLayer) {
    let _ = writeln!(s, "## Perf layer, per request\n");
    let _ = writeln!(s, "| piece | ns/request |\n|---|---|");
    let rows: [(&str, String); 9] = [
        (
            "route match and label (herald::http::routes::find)",
            format!("{:.0}", p.template_ns),
        ),
        (
            "Instant::now + elapsed",
            format!("{:.0}", p.two_clock_reads_ns),
        ),
        ("route String clone", format!("{:.0}", p.route_clone_ns)),
        (
            "Metrics::request (label clone + histogram observe)",
            format!("{:.0}", p.metrics_request_ns),
        ),
        (
            "RouteLatencies::record (the monitor's work per request)",
            format!("{:.0}", p.route_latencies_record_ns),
        ),
        (
            "cast to an actor, sender side",
            format!("{:.0}", p.cast_sender_ns),
        ),
        (
            "cast + handler that drops it, process CPU",
            opt(p.cast_trivial_cpu_ns, 0),
        ),
        (
            "cast + handler that records it, process CPU",
            opt(p.cast_recording_cpu_ns, 0),
        ),
        (
            "**whole layer: template + clock + Herald::request_served with the real perf \
             monitor, process CPU net of idle**",
            format!(
                "**{}** (raw {}; {} requests at {:.0}/s from one sender; idle herald {} cores)",
                opt(p.full_cpu_ns, 0),
                opt(p.full_cpu_ns_raw, 0),
                p.full_requests,
                p.full_per_sec,
                opt(p.idle_cores, 3)
            ),
        ),
    ];
    for (piece, ns) in rows {
        let _ = writeln!(s, "| {piece} | {ns} |");
    }
    let _ = writeln!(
        s,
        "\nherald has no switch that turns the perf layer off, so there is no direct A/B of \
         ingest with and without it: the share below is the measured CPU per request weighed \
         against the ingest rate.\n"
    );
}

fn markdown_targets(s: &mut String, r: &MicroReport) {
    let seq = r.checks.iter().find(|c| c.what == CACHED && c.tasks == 1);
    let miss = r.checks.iter().find(|c| c.what == MISSED && c.tasks == 1);
    let cpu = |c: Option<&Rate>| opt(c.and_then(|c| c.cpu_us_per_op), 2);
    let per_sec =
        |c: Option<&Rate>| c.map_or_else(|| "n/a".to_owned(), |c| format!("{:.0}", c.per_sec));
    let _ = writeln!(s, "## Against the targets\n");
    let _ = writeln!(
        s,
        "| target | estimate | formula | verdict |\n|---|---|---|---|"
    );
    let _ = writeln!(
        s,
        "| suppression check < 5 % of delivery | {} of one core | {:.0} delivered/s × {} µs \
         CPU per check, warm cache (1 task) ÷ 10⁶ | {} |",
        pct(r.check_share_of_one_core),
        r.delivered_per_sec,
        cpu(seq),
        verdict(r.pass.suppression_check_under_5pct_of_delivery)
    );
    let _ = writeln!(
        s,
        "| (every check a cache miss) | {} of one core | {:.0} delivered/s × {} µs CPU per \
         check that misses (1 task) ÷ 10⁶ | info |",
        pct(r.miss_check_share_of_one_core),
        r.delivered_per_sec,
        cpu(miss)
    );
    let _ = writeln!(
        s,
        "| (dispatcher time awaiting checks, warm) | {} | {:.0} delivered/s ÷ {} sequential \
         checks/s | info |",
        pct(r.dispatcher_wait_share),
        r.delivered_per_sec,
        per_sec(seq)
    );
    let _ = writeln!(
        s,
        "| (dispatcher time awaiting checks, all misses) | {} | {:.0} delivered/s ÷ {} \
         sequential checks/s | info |",
        pct(r.miss_dispatcher_wait_share),
        r.delivered_per_sec,
        per_sec(miss)
    );
    let _ = writeln!(
        s,
        "| monitoring layer < 3 % of ingest | {} of {} cores ({} of one) | {:.0} req/s × {} \
         ns CPU per request ÷ ({} × 10⁹) | {} |",
        pct(r.monitoring_share_of_cpu),
        r.nproc,
        pct(r.monitoring_share_of_one_core),
        r.ingest_per_sec,
        opt(r.perf_layer.full_cpu_ns, 0),
        r.nproc,
        verdict(r.pass.monitoring_under_3pct_of_ingest)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_distinct_and_json_safe() {
        let a: std::collections::HashSet<String> = (0..10_000).map(recipient).collect();
        assert_eq!(a.len(), 10_000);
        assert!(a.iter().all(|r| {
            r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"@.".contains(&b))
        }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_agree_with_and_without_the_cache() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.redb");
        let store = open_store(path.clone()).await?;
        let load = fill(&store, 100, &path).await?;
        assert_eq!((load.suppressions, load.bulks), (100, 1));
        let (cache, handle) = Actor::spawn(None, CacheCoordinator, CACHE).await?;
        let now = unix_ms(SystemTime::now());
        for (i, stored) in [(0, true), (99, true), (100, false), (150, false)] {
            let who = recipient(i);
            let plain = check_uncached(&store, &who, now).await?;
            expect(plain.as_ref(), stored, &who)?;
            for _ in 0..2 {
                let cached = check_cached(&cache, &store, &who, now).await?;
                assert_eq!(cached, plain);
            }
        }
        let rate = timed("cache hit", 2, Duration::from_millis(100), {
            let cache = cache.clone();
            move |_| {
                let cache = cache.clone();
                async move { hit(&cache).await }
            }
        })
        .await?;
        assert!(rate.ops > 0 && rate.p50_us <= rate.p99_us);
        cache.stop(None);
        let _ = handle.await;
        store.close().await;
        Ok(())
    }
}
