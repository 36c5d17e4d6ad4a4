//! The perf monitor actor: route latencies, Core Web Vitals, budgets, storage timings, alerts.
//!
//! Everything arrives as a cast (requests served, beacons, events from other actors) and is
//! folded into the pure structures of this module's siblings; a tick every [`TICK`] grades the
//! budgets and the rate-based conditions and opens or resolves alerts. An alert opens once and
//! resolves when its condition clears; with `[alerts] destination` every transition is also
//! stored as a message of type `alert.<kind>` for that destination, so herald's own alerts are
//! delivered like any other webhook.
//!
//! The monitor judges this node only (`server.node_name`): its latencies, vitals and alerts are
//! what this process saw, and every alert, in the API and in a published message, names the
//! node.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald_storage::{MessageId, MessageRecord, NewMessage};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use super::alerts::{Alert, AlertBook, AlertKind, Severity, Transition};
use super::budgets::{Budget, BudgetReport, BudgetState, report};
use super::latency::{RouteLatencies, RouteStats};
use super::vitals::{Beacon, Metric};
use super::window::VitalsWindow;
use crate::{Core, unix_ms};

pub const TICK: Duration = Duration::from_secs(5);
/// The window over which vitals p75 is computed, and the samples needed before judging.
pub const VITALS_WINDOW: Duration = Duration::from_secs(3600);
pub const VITALS_MIN_SAMPLES: usize = 5;

/// Alert thresholds. Fixed for now; each is documented where it is checked.
pub mod thresholds {
    /// DLQ entries: warning from this many, critical from ten times as many.
    pub const DLQ_DEPTH: u64 = 100;
    /// Stale or future timestamps from one source within a minute (replay attempts).
    pub const STALE_PER_MINUTE: usize = 10;
    /// Cache misses per lookup over a tick, once there were enough lookups.
    pub const CACHE_MISS_RATE: f64 = 0.5;
    pub const CACHE_MIN_LOOKUPS: u64 = 100;
    /// Share of delivery decisions that were suppressions, over a tick.
    pub const SUPPRESSION_RATE: f64 = 0.2;
    pub const SUPPRESSION_MIN_DECISIONS: u64 = 100;
    /// A commit slower than this is a slow storage operation.
    pub const SLOW_COMMIT_MS: u64 = 250;
    /// Bulk operations of at least this many items raise an (informational) alert.
    pub const BULK_ITEMS: usize = 1000;
}

/// Something another part of herald reports.
#[derive(Debug, Clone)]
pub enum PerfEvent {
    CircuitOpened {
        destination: String,
        failures: u32,
    },
    CircuitClosed {
        destination: String,
    },
    /// A 410 Gone disabled the destination.
    DestinationDisabled {
        destination: String,
    },
    /// The destination is enabled (again), through the API.
    DestinationEnabled {
        destination: String,
    },
    ClientBlocked {
        client: String,
        until_ms: u64,
    },
    StaleTimestamp {
        source: String,
    },
    BulkOperation {
        what: String,
        count: usize,
    },
    /// A delivery decision: sent (`false`) or held back by an opt-out (`true`).
    Delivery {
        suppressed: bool,
    },
    /// A storage commit and how long it took.
    Commit {
        took: Duration,
        jobs: usize,
    },
    /// The store's health changed (see `herald_storage::health`): `unavailable` says why it
    /// refuses writes, `None` once it takes them again.
    StorageHealth {
        unavailable: Option<String>,
    },
}

#[derive(Debug)]
pub enum PerfMsg {
    Request {
        port: &'static str,
        route: String,
        status: u16,
        took: Duration,
    },
    Beacons(Vec<Beacon>),
    Event(PerfEvent),
    Tick,
    /// What a tick's background task read (the cache's counters, the DLQ depth), cast back
    /// so that the handler never awaits another actor or a read.
    Gauges(Gauges),
    Report(RpcReplyPort<PerfReport>),
    Alerts(bool, RpcReplyPort<Vec<Alert>>),
}

/// Readings taken off the actor for one tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// The cache's (lookups, misses) so far, if it answered.
    cache: Option<(u64, u64)>,
    /// Dead deliveries, if storage answered.
    dlq_depth: Option<u64>,
}

/// What `GET /v1/perf` shows.
#[derive(Debug, Clone, Serialize)]
pub struct PerfReport {
    /// `server.node_name`: the figures are this node's only.
    pub node: String,
    pub routes: Vec<RouteStats>,
    pub vitals: Vec<VitalP75>,
    pub budgets: Vec<BudgetReport>,
    pub storage: StorageTimings,
}

#[derive(Debug, Clone, Serialize)]
pub struct VitalP75 {
    pub page: String,
    pub metric: Metric,
    pub p75: f64,
    pub samples: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageTimings {
    pub commits: u64,
    pub slow_commits: u64,
    pub slow_threshold_ms: u64,
    /// The most recent slow commits, newest first: `(at_ms, took_ms, jobs)`.
    pub recent_slow: Vec<(u64, u64, usize)>,
}

#[derive(Debug)]
pub struct PerfMonitor;

pub struct PerfArgs {
    pub core: Arc<Core>,
    pub budgets: Vec<Budget>,
}

impl std::fmt::Debug for PerfArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfArgs")
            .field("budgets", &self.budgets.len())
            .finish_non_exhaustive()
    }
}

pub struct PerfState {
    core: Arc<Core>,
    budgets: Vec<Budget>,
    routes: RouteLatencies,
    vitals: VitalsWindow,
    alerts: AlertBook,
    storage: StorageTimings,
    slow_at: VecDeque<u64>,
    stale: HashMap<String, VecDeque<u64>>,
    blocked: HashMap<String, u64>,
    bulk_open: Vec<String>,
    decisions: (u64, u64),
    cache_seen: (u64, u64),
    /// When storage maintenance last ran (or the monitor started).
    maintained_at_ms: u64,
    ticker: Option<JoinHandle<()>>,
    /// Forwards the store's health changes as [`PerfEvent::StorageHealth`].
    health: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PerfState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfState")
            .field("alerts", &self.alerts.active_count())
            .finish_non_exhaustive()
    }
}

impl Actor for PerfMonitor {
    type Msg = PerfMsg;
    type State = PerfState;
    type Arguments = PerfArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PerfArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let window_ms = u64::try_from(VITALS_WINDOW.as_millis()).unwrap_or(u64::MAX);
        let health = Some(watch_storage(&args.core, myself.clone()));
        let alerts = AlertBook::new(args.core.settings.node_name.clone());
        Ok(PerfState {
            core: args.core,
            budgets: args.budgets,
            routes: RouteLatencies::new(),
            vitals: VitalsWindow::new(window_ms, VITALS_MIN_SAMPLES),
            alerts,
            storage: StorageTimings {
                slow_threshold_ms: thresholds::SLOW_COMMIT_MS,
                ..StorageTimings::default()
            },
            slow_at: VecDeque::new(),
            stale: HashMap::new(),
            blocked: HashMap::new(),
            bulk_open: Vec::new(),
            decisions: (0, 0),
            cache_seen: (0, 0),
            maintained_at_ms: now_ms(),
            ticker: Some(myself.send_interval(TICK, || PerfMsg::Tick)),
            health,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in [state.ticker.take(), state.health.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        Ok(())
    }

    /// Nothing here awaits: storage reads and other actors' answers are gathered by spawned
    /// tasks that cast them back, and alert messages are handed to the writer with a callback.
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        match msg {
            PerfMsg::Request {
                port,
                route,
                status,
                took,
            } => {
                state.routes.record(port, &route, status, took);
            }
            PerfMsg::Beacons(beacons) => {
                for beacon in &beacons {
                    state.vitals.record(beacon, now);
                }
            }
            PerfMsg::Event(event) => {
                let transitions = on_event(state, event, now);
                publish(&state.core, transitions);
            }
            PerfMsg::Tick => {
                let transitions = tick(state, now);
                publish(&state.core, transitions);
                read_gauges(&state.core, myself);
            }
            PerfMsg::Gauges(gauges) => {
                let mut transitions = Vec::new();
                transitions.extend(cache_miss_rate(state, gauges, now));
                transitions.extend(dlq_depth(state, gauges, now));
                publish(&state.core, transitions);
            }
            PerfMsg::Report(reply) => {
                let _ = reply.send(perf_report(state, now));
            }
            PerfMsg::Alerts(active_only, reply) => {
                let _ = reply.send(state.alerts.list(active_only));
            }
        }
        Ok(())
    }
}

/// Opens the `storage_unavailable` alert while the store refuses writes; resolves it after.
fn storage_health(
    book: &mut AlertBook,
    unavailable: Option<String>,
    now: u64,
) -> Option<Transition> {
    match unavailable {
        Some(why) => book.raise(
            AlertKind::StorageUnavailable,
            "storage",
            Severity::Critical,
            format!("storage refuses writes: {why}"),
            now,
        ),
        None => book.clear(AlertKind::StorageUnavailable, "storage", now),
    }
}

/// A task casting the store's current health, then every change of it, to the monitor.
fn watch_storage(core: &Core, me: ActorRef<PerfMsg>) -> JoinHandle<()> {
    let mut health = core.store.watch_health();
    tokio::spawn(async move {
        loop {
            let unavailable = match &*health.borrow_and_update() {
                herald_storage::Health::Healthy => None,
                herald_storage::Health::Reopening { error } => {
                    Some(format!("reopening the database after: {error}"))
                }
                herald_storage::Health::Lost { reason } => Some(reason.clone()),
                other => Some(format!("{other:?}")),
            };
            let event = PerfEvent::StorageHealth { unavailable };
            if me.cast(PerfMsg::Event(event)).is_err() || health.changed().await.is_err() {
                return;
            }
        }
    })
}

fn on_event(state: &mut PerfState, event: PerfEvent, now: u64) -> Vec<Transition> {
    let book = &mut state.alerts;
    let transition = match event {
        PerfEvent::CircuitOpened {
            destination,
            failures,
        } => book.raise(
            AlertKind::CircuitOpen,
            &destination,
            Severity::Warning,
            format!("circuit opened after {failures} consecutive failures"),
            now,
        ),
        PerfEvent::CircuitClosed { destination } => {
            book.clear(AlertKind::CircuitOpen, &destination, now)
        }
        PerfEvent::DestinationDisabled { destination } => book.raise(
            AlertKind::DestinationDisabled,
            &destination,
            Severity::Critical,
            "the receiver answered 410 Gone; deliveries wait until it is re-enabled",
            now,
        ),
        PerfEvent::DestinationEnabled { destination } => {
            book.clear(AlertKind::DestinationDisabled, &destination, now)
        }
        PerfEvent::ClientBlocked { client, until_ms } => {
            state.blocked.insert(client.clone(), until_ms);
            book.raise(
                AlertKind::ClientBlocked,
                &client,
                Severity::Warning,
                "blocked after repeated invalid signatures",
                now,
            )
        }
        PerfEvent::StaleTimestamp { source } => {
            let times = state.stale.entry(source.clone()).or_default();
            times.push_back(now);
            while times
                .front()
                .is_some_and(|&t| now.saturating_sub(t) > 60_000)
            {
                times.pop_front();
            }
            if times.len() >= thresholds::STALE_PER_MINUTE {
                book.raise(
                    AlertKind::StaleTimestamps,
                    &source,
                    Severity::Warning,
                    format!(
                        "{} stale or future timestamps in the last minute: replay attempts?",
                        times.len()
                    ),
                    now,
                )
            } else {
                None
            }
        }
        PerfEvent::BulkOperation { what, count } => {
            if count >= thresholds::BULK_ITEMS {
                state.bulk_open.push(what.clone());
                book.raise(
                    AlertKind::BulkOperation,
                    &what,
                    Severity::Info,
                    format!("{count} items"),
                    now,
                )
            } else {
                None
            }
        }
        PerfEvent::Delivery { suppressed } => {
            state.decisions.0 += u64::from(suppressed);
            state.decisions.1 += 1;
            None
        }
        PerfEvent::StorageHealth { unavailable } => storage_health(book, unavailable, now),
        PerfEvent::Commit { took, jobs } => {
            state.storage.commits += 1;
            let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
            if took_ms >= thresholds::SLOW_COMMIT_MS {
                state.storage.slow_commits += 1;
                state.storage.recent_slow.insert(0, (now, took_ms, jobs));
                state.storage.recent_slow.truncate(20);
                state.slow_at.push_back(now);
            }
            None
        }
    };
    transition.into_iter().collect()
}

/// Grades everything that is judged over time from what the monitor holds; what must be read
/// elsewhere arrives as [`PerfMsg::Gauges`].
fn tick(state: &mut PerfState, now: u64) -> Vec<Transition> {
    state.vitals.prune(now);
    let mut out = grade_budgets(state, now);
    out.extend(expire_events(state, now));
    out.extend(slow_storage(state, now));
    out.extend(suppression_rate(state, now));
    maintain_storage(state, now);
    out
}

/// Reads the cache's counters and the DLQ depth in a task of its own and casts them back.
fn read_gauges(core: &Arc<Core>, monitor: ActorRef<PerfMsg>) {
    let core = Arc::clone(core);
    tokio::spawn(async move {
        let cache = match core.cache() {
            Some(cache) => crate::cache::stats(&cache, Duration::from_secs(2))
                .await
                .ok()
                .map(|c| (c.hits + c.misses, c.misses)),
            None => None,
        };
        let dlq_depth = match core.store.stats().await {
            Ok(tables) => Some(tables.entries("dead_letters").unwrap_or(0)),
            Err(e) => {
                tracing::warn!(error = %e, "reading the DLQ depth");
                None
            }
        };
        let _ = monitor.cast(PerfMsg::Gauges(Gauges { cache, dlq_depth }));
    });
}

/// Verifies every secondary index on the configured interval and rebuilds what is wrong, in
/// the background (a full scan; the writer is busy only while a broken index is rebuilt).
fn maintain_storage(state: &mut PerfState, now: u64) {
    let every =
        u64::try_from(state.core.settings.maintenance_interval.as_millis()).unwrap_or(u64::MAX);
    if now.saturating_sub(state.maintained_at_ms) < every {
        return;
    }
    state.maintained_at_ms = now;
    let core = Arc::clone(&state.core);
    tokio::spawn(async move {
        match core.maintenance().await {
            Ok(report) => {
                let rebuilt: Vec<&str> = report
                    .indexes
                    .iter()
                    .filter(|i| i.rebuilt)
                    .map(|i| i.index)
                    .collect();
                if rebuilt.is_empty() {
                    tracing::info!(
                        took_ms = report.took_ms,
                        "storage maintenance: every index healthy"
                    );
                } else {
                    tracing::warn!(?rebuilt, "storage maintenance rebuilt indexes");
                }
            }
            Err(e) => tracing::error!(error = %e, "storage maintenance failed"),
        }
    });
}

fn grade_budgets(state: &mut PerfState, now: u64) -> Vec<Transition> {
    let reports = report(&state.budgets, &state.vitals, &state.routes, now);
    reports
        .into_iter()
        .filter_map(|budget| {
            let subject = budget.subject();
            if budget.state == BudgetState::Violated {
                let detail = format!(
                    "p75 {:.3} over {} ({} samples)",
                    budget.p75.unwrap_or_default(),
                    budget.p75_max,
                    budget.samples
                );
                state.alerts.raise(
                    AlertKind::BudgetViolated,
                    &subject,
                    Severity::Warning,
                    detail,
                    now,
                )
            } else {
                state.alerts.clear(AlertKind::BudgetViolated, &subject, now)
            }
        })
        .collect()
}

/// Conditions that end with time: blocks that ran out, bulk operations (events: resolved on
/// the next tick), replays that stopped.
fn expire_events(state: &mut PerfState, now: u64) -> Vec<Transition> {
    let mut out = Vec::new();
    let ended: Vec<String> = state
        .blocked
        .iter()
        .filter(|(_, until)| **until <= now)
        .map(|(client, _)| client.clone())
        .collect();
    for client in ended {
        state.blocked.remove(&client);
        out.extend(state.alerts.clear(AlertKind::ClientBlocked, &client, now));
    }
    for what in std::mem::take(&mut state.bulk_open) {
        out.extend(state.alerts.clear(AlertKind::BulkOperation, &what, now));
    }
    for (source, times) in &mut state.stale {
        while times
            .front()
            .is_some_and(|&t| now.saturating_sub(t) > 60_000)
        {
            times.pop_front();
        }
        if times.len() < thresholds::STALE_PER_MINUTE {
            out.extend(state.alerts.clear(AlertKind::StaleTimestamps, source, now));
        }
    }
    out
}

fn slow_storage(state: &mut PerfState, now: u64) -> Option<Transition> {
    while state
        .slow_at
        .front()
        .is_some_and(|&t| now.saturating_sub(t) > 60_000)
    {
        state.slow_at.pop_front();
    }
    if state.slow_at.is_empty() {
        return state.alerts.clear(AlertKind::SlowStorage, "storage", now);
    }
    let detail = format!(
        "{} commits over {} ms in the last minute",
        state.slow_at.len(),
        thresholds::SLOW_COMMIT_MS
    );
    state.alerts.raise(
        AlertKind::SlowStorage,
        "storage",
        Severity::Warning,
        detail,
        now,
    )
}

fn suppression_rate(state: &mut PerfState, now: u64) -> Option<Transition> {
    let (suppressed, decisions) = std::mem::take(&mut state.decisions);
    if decisions < thresholds::SUPPRESSION_MIN_DECISIONS {
        return None;
    }
    let (threshold, min) = (
        thresholds::SUPPRESSION_RATE,
        thresholds::SUPPRESSION_MIN_DECISIONS,
    );
    if super::alerts::rate_exceeds(suppressed, decisions, threshold, min) {
        let detail = format!("{suppressed} of {decisions} deliveries suppressed");
        state.alerts.raise(
            AlertKind::SuppressionRate,
            "deliveries",
            Severity::Warning,
            detail,
            now,
        )
    } else {
        state
            .alerts
            .clear(AlertKind::SuppressionRate, "deliveries", now)
    }
}

fn cache_miss_rate(state: &mut PerfState, gauges: Gauges, now: u64) -> Option<Transition> {
    let (total, total_misses) = gauges.cache?;
    let lookups = total.saturating_sub(state.cache_seen.0);
    let misses = total_misses.saturating_sub(state.cache_seen.1);
    state.cache_seen = (total, total_misses);
    if lookups < thresholds::CACHE_MIN_LOOKUPS {
        return None;
    }
    let (threshold, min) = (thresholds::CACHE_MISS_RATE, thresholds::CACHE_MIN_LOOKUPS);
    if super::alerts::rate_exceeds(misses, lookups, threshold, min) {
        let detail = format!("{misses} misses in {lookups} lookups");
        state.alerts.raise(
            AlertKind::CacheMissRate,
            "cache",
            Severity::Info,
            detail,
            now,
        )
    } else {
        state.alerts.clear(AlertKind::CacheMissRate, "cache", now)
    }
}

fn dlq_depth(state: &mut PerfState, gauges: Gauges, now: u64) -> Option<Transition> {
    let depth = gauges.dlq_depth?;
    if depth < thresholds::DLQ_DEPTH {
        return state.alerts.clear(AlertKind::DlqDepth, "dlq", now);
    }
    let severity = if depth >= thresholds::DLQ_DEPTH * 10 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let detail = format!("{depth} dead deliveries");
    state
        .alerts
        .raise(AlertKind::DlqDepth, "dlq", severity, detail, now)
}

fn perf_report(state: &PerfState, now: u64) -> PerfReport {
    PerfReport {
        node: state.core.settings.node_name.clone(),
        routes: state.routes.snapshot(),
        vitals: state
            .vitals
            .pages(now)
            .into_iter()
            .map(|(page, metric, p75, samples)| VitalP75 {
                page,
                metric,
                p75,
                samples,
            })
            .collect(),
        budgets: report(&state.budgets, &state.vitals, &state.routes, now),
        storage: state.storage.clone(),
    }
}

/// Logs every transition and, with `[alerts] destination`, stores it as a message for it:
/// handed to the writer in order, with a callback that wakes the dispatcher after the commit.
fn publish(core: &Arc<Core>, transitions: Vec<Transition>) {
    for transition in transitions {
        let (state, alert) = match &transition {
            Transition::Opened(a) => ("opened", a),
            Transition::Resolved(a) => ("resolved", a),
        };
        tracing::warn!(kind = alert.kind.as_str(), subject = %alert.subject, state, detail = %alert.detail, "alert");
        let Some(destination) = core.settings.alerts_destination.clone() else {
            continue;
        };
        let now = now_ms();
        let body = serde_json::to_vec(&alert_body(state, alert)).unwrap_or_default();
        let message = NewMessage {
            id: MessageId::generate(now),
            record: MessageRecord {
                source: None,
                external_id: None,
                event_type: Some(format!("alert.{}", alert.kind.as_str())),
                content_type: Some("application/json".into()),
                recipient: None,
                channel: None,
                category: None,
                received_at_ms: now,
                body_len: body.len() as u64,
            },
            body: body.into(),
            dedupe_key: None,
            destinations: vec![destination],
            suppress: None,
        };
        let work = Arc::clone(&core.work);
        core.store.insert_message(
            message,
            Box::new(move |outcome| match outcome {
                Ok(_) => work.notify_one(),
                Err(e) => tracing::error!(error = %e, "alert message not stored"),
            }),
        );
    }
}

/// The payload of an alert's message: `{type: "alert.<kind>", state: opened|resolved, alert}`,
/// the alert with its `node`, so a receiver fed by several nodes knows which one raised it.
fn alert_body(state: &str, alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "type": format!("alert.{}", alert.kind.as_str()),
        "state": state,
        "alert": alert,
    })
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_alerts_message_names_the_node_that_raised_it() {
        let mut book = AlertBook::new("node-a");
        let Some(Transition::Opened(alert)) = book.raise(
            AlertKind::CircuitOpen,
            "billing",
            Severity::Warning,
            "circuit opened after 5 consecutive failures",
            7,
        ) else {
            panic!("not opened");
        };
        assert_eq!(
            alert_body("opened", &alert),
            serde_json::json!({
                "type": "alert.circuit_open",
                "state": "opened",
                "alert": {
                    "kind": "circuit_open", "severity": "warning", "subject": "billing",
                    "started_at_ms": 7, "detail": "circuit opened after 5 consecutive failures",
                    "node": "node-a"
                }
            })
        );
    }
}
