//! The dispatcher: delivers accepted messages to their destinations, at least once.
//!
//! Work lives in storage, not in the mailbox: the `deliveries_due` queue holds every live
//! delivery per destination in due order. A scan (on a timer, and whenever new work is
//! committed) spawns, for each destination that may send, one task that reads its due
//! deliveries (up to its allowance) and checks their opt-outs; the task casts the result back
//! and the handler starts one task per attempt. The handler itself never awaits storage, so
//! outcomes and new work are handled while reads are under way. A delivery stays in the queue
//! while its attempt is in flight (the dispatcher remembers it is in flight, so it is not
//! started twice); its outcome is then written through the group commit, and only after that
//! commit is it released. So a crash at any point leaves every unfinished delivery in the
//! queue, to be attempted again after restart.
//!
//! Isolation: each destination's allowance is its fair share of the in-flight budget
//! ([`fairness`]), with a reserve that a quiet destination can always use, so slow, timing-out
//! or backlogged receivers never hold the slots another destination needs.
//!
//! Storage faults: an outcome that cannot be committed is kept in memory, its delivery still in
//! flight, and committed again later (with backoff): it is never re-sent meanwhile, and nothing
//! new is sent while the store refuses writes, so a failing disk cannot turn retries into a
//! storm.
//!
//! Per destination, as actor state: the circuit breaker (persisted on every transition), the
//! rate limiter and the attempts in flight. The signing secrets are chosen at every attempt
//! ([`rotation`]). While a circuit is open, or the destination is disabled (a 410), its
//! deliveries wait without spending attempts.

pub mod breaker;
pub mod fairness;
pub mod headers;
pub mod messages;
pub mod outbound;
pub mod policy;
pub mod retry;
pub mod rotation;
pub mod ssrf;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use herald_storage::{
    Attempt, AttemptUpdate, AuditEntry, CircuitRecord, DestinationRecord, DueDelivery, MessageId,
    Outcome, Recipient, StorageError,
};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::dlq::DlqMsg;
use crate::metrics::{DestinationLabels, Metrics};
use crate::perf::monitor::PerfEvent;
use crate::slot::Slot;
use crate::suppression::rules;
use crate::verifier::schemes::decode_whsec;
use crate::{Core, Route, unix_ms};
use breaker::{BreakerPolicy, Circuit, Transition};
use fairness::Budget;
pub use messages::DispatcherMsg;
use outbound::{AttemptResult, HttpClient, Outbound};
use retry::Backoff;

/// The in-flight budget and how it is shared between destinations.
pub const BUDGET: Budget = Budget::DEFAULT;
/// The scan timer: the precision of retry times and of circuits reopening.
const TICK: Duration = Duration::from_millis(200);
/// A destination found quiet is read again after this at the latest, new work or not: the
/// bound on the delay a lost wake-up (a notification from another node) can cause.
const QUIET_AT_MOST: Duration = Duration::from_secs(5);
/// A read of a destination's queue that has not answered by then is taken as lost (its task
/// failed), so the destination is read again; a late answer is ignored.
const READ_LOST_AFTER: Duration = Duration::from_secs(30);
/// An outcome that could not be committed is committed again after this, doubling per failure
/// up to [`RECORD_RETRY_MAX`].
const RECORD_RETRY_BASE: Duration = Duration::from_millis(500);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(30);

/// Delivery policy, from `[delivery]` and `[circuit_breaker]`.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout: Duration,
    pub auto_recover: bool,
    pub allow_private: bool,
    pub breaker: BreakerPolicy,
    /// Destinations defined in the config file, applied at every start.
    pub configured: Vec<(String, DestinationRecord)>,
    /// Trusted for `https` besides Mozilla's roots (`delivery.ca_file`).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl DeliverySettings {
    /// What a destination's own policy falls back on.
    pub fn defaults(&self) -> policy::Defaults {
        policy::Defaults {
            timeout: self.timeout,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
        }
    }
}

/// What a finished attempt means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// 410: the receiver says this endpoint is gone for good. Disable the destination.
    Gone,
    Failure,
}

pub fn classify(result: &AttemptResult) -> Verdict {
    match result.status {
        Some(200..=299) => Verdict::Success,
        Some(410) => Verdict::Gone,
        _ => Verdict::Failure,
    }
}

/// The outcome of a failed attempt: retry after backoff, or dead once `max_attempts` are spent.
/// `round_attempts` counts this attempt. `unit` is a uniform random number in `[0, 1)`.
pub fn after_failure(
    round_attempts: u32,
    max_attempts: u32,
    backoff: &Backoff,
    unit: f64,
    retry_after: Option<Duration>,
    now_ms: u64,
) -> Outcome {
    if round_attempts >= max_attempts {
        return Outcome::Dead;
    }
    let delay = backoff.delay(round_attempts, unit, retry_after);
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    Outcome::Retry {
        at_ms: now_ms.saturating_add(delay_ms),
    }
}

#[derive(Debug)]
pub struct Dispatcher;

/// A destination at run time.
struct Destination {
    record: DestinationRecord,
    circuit: Circuit,
    limiter: Option<DefaultDirectRateLimiter>,
    in_flight: HashSet<MessageId>,
    /// A read of its due queue is under way.
    reading: Option<Reading>,
    /// Its last read filled the allowance it asked for: more is waiting.
    backlog: bool,
    /// Nothing of it can be claimed before this time (Unix ms), as its last read found: the
    /// timer's scans leave its queue alone until then. New work clears it.
    quiet_until: Option<u64>,
}

/// A read of one destination's due queue, spawned by a scan.
#[derive(Debug)]
struct Reading {
    id: u64,
    started: std::time::Instant,
    /// Deliveries released (their outcome committed) since the read began: its snapshot may
    /// predate that commit and still show them as due.
    released: HashSet<MessageId>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("url", &self.record.url)
            .field("circuit", &self.circuit)
            .field("in_flight", &self.in_flight.len())
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}

/// This node's share of a destination's rate limit when `nodes` nodes share the store: each
/// enforces `ceil(rate / nodes)` locally (see `herald_storage::Store::nodes` for the
/// tolerance), at least one attempt a second.
fn rate_share(rate: Option<u32>, nodes: usize) -> Option<DefaultDirectRateLimiter> {
    let rate = rate.filter(|&rate| rate > 0)?;
    let nodes = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    let share = std::num::NonZeroU32::new(rate.div_ceil(nodes).max(1))?;
    Some(RateLimiter::direct(Quota::per_second(share)))
}

impl Destination {
    fn new(record: DestinationRecord, policy: &BreakerPolicy, now_ms: u64, nodes: usize) -> Self {
        let circuit = circuit_from_record(&record.circuit, policy, now_ms);
        let limiter = rate_share(record.rate_limit_per_sec, nodes);
        Self {
            record,
            circuit,
            limiter,
            in_flight: HashSet::new(),
            reading: None,
            backlog: false,
            quiet_until: None,
        }
    }

    fn snapshot(&self) -> DestinationRecord {
        let mut record = self.record.clone();
        record.circuit = circuit_to_record(&self.circuit);
        record
    }

    /// Has attempts in flight or work waiting: counts towards the fair share.
    fn busy(&self) -> bool {
        !self.in_flight.is_empty() || self.backlog
    }

    /// The keys that sign an attempt made now (see [`rotation`]).
    fn signing_keys(&self, now_ms: u64) -> Vec<Vec<u8>> {
        rotation::signing_at(&self.record, now_ms)
            .into_iter()
            .filter_map(|s| decode_whsec(s).ok())
            .collect()
    }
}

pub fn circuit_from_record(record: &CircuitRecord, policy: &BreakerPolicy, now_ms: u64) -> Circuit {
    match (record.open, record.opened_at_ms) {
        (true, Some(opened_at_ms)) => {
            let open = Circuit::Open {
                opened_at_ms,
                consecutive_failures: record.consecutive_failures,
            };
            // Past its open period an open circuit is half-open: ready for one probe.
            if open.reopens_at_ms(policy).is_some_and(|at| now_ms >= at) {
                Circuit::HalfOpen {
                    opened_at_ms,
                    consecutive_failures: record.consecutive_failures,
                    probing: false,
                }
            } else {
                open
            }
        }
        _ => Circuit::Closed {
            consecutive_failures: record.consecutive_failures,
        },
    }
}

pub fn circuit_to_record(circuit: &Circuit) -> CircuitRecord {
    CircuitRecord {
        open: !matches!(circuit, Circuit::Closed { .. }),
        consecutive_failures: circuit.consecutive_failures(),
        opened_at_ms: circuit.opened_at_ms(),
    }
}

#[derive(Debug)]
pub struct DispatcherArgs {
    pub core: Arc<Core>,
    /// Where auto-recover requests go.
    pub dlq: Slot<DlqMsg>,
}

pub struct DispatcherState {
    core: Arc<Core>,
    dlq: Slot<DlqMsg>,
    client: HttpClient,
    destinations: HashMap<String, Destination>,
    in_flight: usize,
    /// Numbers the reads, so that the answer of one taken as lost is ignored.
    reads: u64,
    /// Outcomes whose commit failed, to be committed again; their deliveries stay in flight.
    unrecorded: Vec<Unrecorded>,
    timers: Vec<JoinHandle<()>>,
    /// How many nodes shared the store when the rate limiters were last sized.
    nodes: usize,
    /// Counts the wake-ups for new work: a read that began before the last one cannot tell
    /// that its queue is quiet.
    work_seen: u64,
}

/// An outcome not committed yet, and when to try again.
#[derive(Debug)]
struct Unrecorded {
    update: AttemptUpdate,
    failures: u32,
    retry_at: std::time::Instant,
}

impl std::fmt::Debug for DispatcherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherState")
            .field("destinations", &self.destinations)
            .field("in_flight", &self.in_flight)
            .field("unrecorded", &self.unrecorded.len())
            .finish_non_exhaustive()
    }
}

impl Actor for Dispatcher {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = DispatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        DispatcherArgs { core, dlq }: DispatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let settings = &core.settings.delivery;
        let now = now_ms();
        let mut stored: HashMap<String, DestinationRecord> =
            core.store.destinations().await?.into_iter().collect();
        apply_config(&core, &mut stored, now).await?;
        let destinations: HashMap<String, Destination> = stored
            .into_iter()
            .map(|(name, record)| {
                let dest = Destination::new(record, &settings.breaker, now, core.store.nodes());
                (name, dest)
            })
            .collect();
        publish_routes(&core, &destinations);

        let client = outbound::client(
            settings.allow_private,
            settings.timeout,
            &settings.extra_roots,
            BUDGET.per_destination,
        )?;

        let ticker = myself.send_interval(TICK, || DispatcherMsg::Scan);
        // New work is signalled through a `Notify` by whoever committed it (the ingress, the
        // API), so they need no reference to this actor.
        let work = Arc::clone(&core.work);
        let me = myself.clone();
        let waker = tokio::spawn(async move {
            loop {
                work.notified().await;
                if me.cast(DispatcherMsg::Work).is_err() {
                    break;
                }
            }
        });
        let follower = tokio::spawn(follow_other_nodes(core.store.changes(), myself.clone()));
        let nodes = core.store.nodes();
        Ok(DispatcherState {
            core,
            dlq,
            client,
            destinations,
            in_flight: 0,
            reads: 0,
            unrecorded: Vec::new(),
            timers: vec![ticker, waker, follower],
            nodes,
            work_seen: 0,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for timer in state.timers.drain(..) {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DispatcherMsg::Scan => scan(&myself, state),
            DispatcherMsg::Work => {
                // New work may be due anywhere: every quiet queue is worth reading again.
                state.work_seen += 1;
                for dest in state.destinations.values_mut() {
                    dest.quiet_until = None;
                }
                scan(&myself, state);
            }
            DispatcherMsg::Due {
                destination,
                read,
                asked,
                due,
                quiet_until,
            } => start_due(&myself, state, &destination, read, asked, due, quiet_until),
            DispatcherMsg::AttemptDone(delivery, result) => {
                finish(&myself, state, &delivery, &result);
            }
            DispatcherMsg::Recorded(key) => {
                if let Some(dest) = state.destinations.get_mut(&key.destination)
                    && dest.in_flight.remove(&key.message)
                {
                    state.in_flight = state.in_flight.saturating_sub(1);
                    if let Some(reading) = &mut dest.reading {
                        reading.released.insert(key.message);
                    }
                }
                // A slot is free: there may be more to send.
                state.core.work.notify_one();
            }
            DispatcherMsg::NotRecorded(update, failures) => {
                let wait = RECORD_RETRY_BASE
                    .saturating_mul(1 << failures.saturating_sub(1).min(16))
                    .min(RECORD_RETRY_MAX);
                state.unrecorded.push(Unrecorded {
                    update: *update,
                    failures,
                    retry_at: std::time::Instant::now() + wait,
                });
            }
            DispatcherMsg::Reload(name) => reload(state, &name).await?,
            DispatcherMsg::ReloadAll => {
                let mut names: HashSet<String> = state.destinations.keys().cloned().collect();
                names.extend(
                    state
                        .core
                        .store
                        .destinations()
                        .await?
                        .into_iter()
                        .map(|(n, _)| n),
                );
                for name in names {
                    reload(state, &name).await?;
                }
            }
        }
        Ok(())
    }
}

/// Follows what other nodes sharing the database commit (PostgreSQL; never on redb): their new
/// work wakes this node's scan, and a destination they changed (created, deleted, its circuit
/// opened or closed, disabled by a 410) is reloaded, so routing and circuits agree across
/// nodes. After a gap in what was heard, everything is reloaded.
async fn follow_other_nodes(
    mut changes: tokio::sync::broadcast::Receiver<herald_storage::Change>,
    me: ActorRef<DispatcherMsg>,
) {
    use herald_storage::Change;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let msg = match changes.recv().await {
            Ok(Change::Work) => DispatcherMsg::Work,
            Ok(Change::Destination(name)) => DispatcherMsg::Reload(name),
            Ok(Change::Subject(_)) => continue,
            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => DispatcherMsg::ReloadAll,
            Err(RecvError::Closed) => return,
        };
        if me.cast(msg).is_err() {
            return;
        }
    }
}

/// Config destinations are declarative: each start re-applies their settings (keeping run-time
/// state: enabled, circuit, and the secrets by [`rotation::apply_config_secret`]); ones removed
/// from the file go.
async fn apply_config(
    core: &Core,
    stored: &mut HashMap<String, DestinationRecord>,
    now: u64,
) -> Result<(), ActorProcessingErr> {
    let configured = &core.settings.delivery.configured;
    for (name, wanted) in configured {
        let record = configured_record(stored.get(name), wanted, now);
        if stored.get(name) != Some(&record) {
            core.store
                .put_destination(name.clone(), record.clone())
                .await?;
        }
        stored.insert(name.clone(), record);
    }
    let removed: Vec<String> = stored
        .iter()
        .filter(|(name, r)| r.from_config && !configured.iter().any(|(n, _)| n == *name))
        .map(|(name, _)| name.clone())
        .collect();
    for name in removed {
        tracing::info!(destination = %name, "removed from the config: deleting it");
        let subject = name.clone();
        core.store
            .delete_destination(name.clone(), now, move |before| AuditEntry {
                at_ms: now,
                actor: "config".into(),
                action: "destination.delete".into(),
                subject: subject.clone(),
                before: Some(serde_json::json!({"url": before.url, "from_config": true})),
                after: None,
            })
            .await?;
        stored.remove(&name);
    }
    Ok(())
}

/// What a config destination's stored record becomes at a start: the file's settings, the
/// stored run-time state, and the secrets by [`rotation::apply_config_secret`].
pub fn configured_record(
    existing: Option<&DestinationRecord>,
    wanted: &DestinationRecord,
    now: u64,
) -> DestinationRecord {
    let Some(existing) = existing else {
        let mut fresh = wanted.clone();
        rotation::apply_config_secret(&mut fresh, &wanted.secret, now);
        return fresh;
    };
    let mut record = DestinationRecord {
        enabled: existing.enabled,
        disabled_reason: existing.disabled_reason.clone(),
        circuit: existing.circuit,
        secret: existing.secret.clone(),
        previous_secrets: existing.previous_secrets.clone(),
        config_secret_sha256: existing.config_secret_sha256.clone(),
        created_at_ms: existing.created_at_ms,
        updated_at_ms: existing.updated_at_ms,
        ..wanted.clone()
    };
    if rotation::apply_config_secret(&mut record, &wanted.secret, now)
        == rotation::ConfigSecret::Rotated
    {
        tracing::info!(
            "a config destination's secret changed: rotated, the old one signs for a day"
        );
    }
    if record != *existing {
        record.updated_at_ms = now;
    }
    record
}

fn publish_routes(core: &Core, destinations: &HashMap<String, Destination>) {
    let mut routes: Vec<Route> = destinations
        .iter()
        .map(|(name, d)| Route {
            destination: name.clone(),
            sources: d.record.sources.clone(),
            event_types: d.record.event_types.clone(),
        })
        .collect();
    routes.sort_by(|a, b| a.destination.cmp(&b.destination));
    core.set_routes(routes);
}

async fn reload(state: &mut DispatcherState, name: &str) -> Result<(), ActorProcessingErr> {
    let now = now_ms();
    match state.core.store.destination(name.to_owned()).await? {
        Some(record) => {
            let policy = state.core.settings.delivery.breaker;
            let old = state.destinations.remove(name);
            if record.enabled {
                // Re-enabled (or never disabled): any 410 alert for it is over.
                state.core.perf_event(PerfEvent::DestinationEnabled {
                    destination: name.to_owned(),
                });
            }
            let mut dest = Destination::new(record, &policy, now, state.nodes);
            if let Some(old) = old {
                dest.in_flight = old.in_flight;
                dest.reading = old.reading;
                dest.backlog = old.backlog;
            }
            state.destinations.insert(name.to_owned(), dest);
        }
        None => {
            if let Some(gone) = state.destinations.remove(name) {
                state.in_flight = state.in_flight.saturating_sub(gone.in_flight.len());
            }
        }
    }
    publish_routes(&state.core, &state.destinations);
    state.core.work.notify_one();
    Ok(())
}

/// Spawns a read of the due queue of every destination that may send now, up to its
/// allowance; each read answers with [`DispatcherMsg::Due`]. Also commits again the outcomes
/// whose commit failed, once they are due. Sends nothing while the store refuses writes: the
/// outcomes could not be recorded, and each would be sent again and again.
fn scan(myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState) {
    let now = now_ms();
    if !state.core.store.accepts_writes() {
        return;
    }
    record_again(myself, state);
    let nodes = state.core.store.nodes();
    if nodes != state.nodes {
        // Nodes joined or left: each destination's rate limit is shared anew.
        state.nodes = nodes;
        for dest in state.destinations.values_mut() {
            dest.limiter = rate_share(dest.record.rate_limit_per_sec, nodes);
        }
    }
    let policy = state.core.settings.delivery.breaker;
    let busy = state.destinations.values().filter(|d| d.busy()).count();
    for (name, dest) in &mut state.destinations {
        if dest
            .reading
            .as_ref()
            .is_some_and(|r| r.started.elapsed() < READ_LOST_AFTER)
        {
            continue;
        }
        if dest.quiet_until.is_some_and(|until| now < until) {
            continue;
        }
        let busy = busy - usize::from(dest.busy()) + 1;
        let allowance = BUDGET.allowance(dest.in_flight.len(), busy, state.in_flight);
        let limit = sendable(dest, allowance, &policy, now);
        if limit == 0 {
            continue;
        }
        state.reads += 1;
        dest.reading = Some(Reading {
            id: state.reads,
            started: std::time::Instant::now(),
            released: HashSet::new(),
        });
        let read = Read {
            destination: name.clone(),
            id: state.reads,
            channel: dest.record.channel.clone(),
            limit,
            skip: dest.in_flight.clone(),
            now,
            work_seen: state.work_seen,
            timeout: policy::timeout(
                &dest.record.policy,
                &state.core.settings.delivery.defaults(),
            ),
        };
        tokio::spawn(read.run(Arc::clone(&state.core), myself.clone()));
    }
}

/// One destination's read, off the actor: due deliveries, then their opt-out checks.
struct Read {
    destination: String,
    id: u64,
    channel: String,
    limit: usize,
    skip: HashSet<MessageId>,
    now: u64,
    work_seen: u64,
    /// The destination's attempt timeout: how long the claim must last.
    timeout: Duration,
}

impl Read {
    async fn run(self, core: Arc<Core>, me: ActorRef<DispatcherMsg>) {
        let Self {
            destination,
            id,
            channel,
            limit,
            skip,
            now,
            work_seen,
            timeout,
        } = self;
        let mut quiet_until = None;
        let due = match core
            .store
            .due_deliveries(destination.clone(), now, limit, skip, timeout)
            .await
        {
            Ok(due) => {
                if due.len() < limit {
                    // All that can be claimed now was: until the next delivery becomes due
                    // (or its claim by another node expires), the timer need not read again.
                    quiet_until = quiet(&core, &destination, now).await;
                }
                // Every opt-out check at once: each is one or two cache lookups, and a miss is
                // a storage read.
                let verdicts = check_all(&core, &channel, &due, now).await;
                Ok(due.into_iter().zip(verdicts).collect())
            }
            Err(e) => Err(e),
        };
        let _ = me.cast(DispatcherMsg::Due {
            destination,
            read: id,
            asked: limit,
            due,
            quiet_until: quiet_until.map(|until| (until, work_seen)),
        });
    }
}

/// When the next delivery of `destination` can be claimed, at most [`QUIET_AT_MOST`] from
/// `now`; `None` if that cannot be read.
async fn quiet(core: &Core, destination: &str, now: u64) -> Option<u64> {
    let latest = now.saturating_add(u64::try_from(QUIET_AT_MOST.as_millis()).unwrap_or(0));
    let next = core
        .store
        .next_due(vec![destination.to_owned()])
        .await
        .ok()?;
    let next = next.into_iter().next().and_then(|(_, at)| at);
    Some(next.map_or(latest, |at| at.min(latest)))
}

/// Starts the attempts of a read's due deliveries, as far as the destination's allowance goes
/// now (other reads may have started attempts since this one was spawned). What is not started
/// stays queued for a later scan.
fn start_due(
    myself: &ActorRef<DispatcherMsg>,
    state: &mut DispatcherState,
    name: &str,
    read: u64,
    asked: usize,
    due: Result<Vec<(DueDelivery, OptOut)>, StorageError>,
    quiet_until: Option<(u64, u64)>,
) {
    let now = now_ms();
    let policy = state.core.settings.delivery.breaker;
    let others_busy = state
        .destinations
        .iter()
        .filter(|(n, d)| n.as_str() != name && d.busy())
        .count();
    let Some(dest) = state.destinations.get_mut(name) else {
        return; // deleted meanwhile
    };
    let released = match dest.reading.take() {
        Some(reading) if reading.id == read => reading.released,
        other => {
            dest.reading = other; // the answer of a read taken as lost
            return;
        }
    };
    let due = match due {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(destination = %name, error = %e, "reading due deliveries");
            return;
        }
    };
    dest.backlog = due.len() >= asked;
    // Quiet only if no new work was announced since the read began: it may not have seen it.
    dest.quiet_until = quiet_until
        .filter(|&(_, seen)| seen == state.work_seen)
        .map(|(until, _)| until);
    if !state.core.store.accepts_writes() {
        return;
    }
    for (delivery, verdict) in due {
        let id = delivery.key.message;
        if released.contains(&id) || dest.in_flight.contains(&id) {
            continue;
        }
        // Opted out or suppressed: recorded, never sent, costs no attempt. If the check
        // itself failed, the delivery waits for the next scan: never send unchecked.
        let verdict = match verdict {
            Ok(verdict) => verdict,
            Err(e) => {
                tracing::warn!(error = %e, "opt-out check failed; delivery deferred");
                continue;
            }
        };
        state.core.perf_event(PerfEvent::Delivery {
            suppressed: verdict.is_some(),
        });
        if let Some(reason) = verdict {
            dest.in_flight.insert(id);
            state.in_flight += 1;
            state.core.metrics.delivery(name, "suppressed");
            let update = AttemptUpdate {
                key: delivery.key,
                attempt: None,
                outcome: Outcome::Suppressed { reason },
                destination: None,
                now_ms: now,
            };
            record(myself, &state.core, update, 0);
            continue;
        }
        let allowance = BUDGET.allowance(dest.in_flight.len(), others_busy + 1, state.in_flight);
        if sendable(dest, allowance, &policy, now) == 0 {
            break;
        }
        if dest.limiter.as_ref().is_some_and(|l| l.check().is_err()) {
            break; // over its rate: the rest wait for the next scan
        }
        if !dest.circuit.admit(&policy, now) {
            break;
        }
        dest.in_flight.insert(id);
        state.in_flight += 1;
        launch(
            myself,
            &state.client,
            dest,
            delivery,
            &state.core.settings.delivery.defaults(),
            now,
        );
    }
}

/// Commits again the outcomes whose commit failed and whose wait is over.
fn record_again(myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState) {
    if state.unrecorded.is_empty() {
        return;
    }
    let now = std::time::Instant::now();
    let (due, waiting): (Vec<Unrecorded>, Vec<Unrecorded>) = std::mem::take(&mut state.unrecorded)
        .into_iter()
        .partition(|u| u.retry_at <= now);
    state.unrecorded = waiting;
    for Unrecorded {
        update, failures, ..
    } in due
    {
        record(myself, &state.core, update, failures);
    }
}

/// How many attempts `dest` may start now, given its fair-share `allowance`: none while
/// disabled; closed, the allowance; open, none until its period is over, then one probe.
fn sendable(dest: &Destination, allowance: usize, policy: &BreakerPolicy, now: u64) -> usize {
    if !dest.record.enabled {
        return 0;
    }
    match dest.circuit {
        Circuit::Closed { .. } => allowance,
        Circuit::Open { .. }
            if dest
                .circuit
                .reopens_at_ms(policy)
                .is_some_and(|at| now < at) =>
        {
            0
        }
        Circuit::HalfOpen { probing: true, .. } => 0,
        Circuit::Open { .. } | Circuit::HalfOpen { .. } => allowance.min(1),
    }
}

fn launch(
    myself: &ActorRef<DispatcherMsg>,
    client: &HttpClient,
    dest: &Destination,
    delivery: DueDelivery,
    defaults: &policy::Defaults,
    now_ms: u64,
) {
    let client = client.clone();
    let url = dest.record.url.clone();
    // Chosen now, at the attempt: a previous secret whose grace has ended no longer signs, and
    // the destination's own policy applies as it is now.
    let keys = dest.signing_keys(now_ms);
    let timeout = policy::timeout(&dest.record.policy, defaults);
    let headers = policy::headers(&dest.record.policy);
    let me = myself.clone();
    tokio::spawn(async move {
        let id = delivery.key.message.to_string();
        let result = outbound::send(
            &client,
            Outbound {
                url: &url,
                message_id: &id,
                content_type: delivery.message.content_type.as_deref(),
                body: delivery.body.clone(),
                keys: &keys,
                headers: &headers,
            },
            timeout,
        )
        .await;
        // If the dispatcher is gone (shutdown, restart) the outcome is lost, but the delivery
        // is still queued: it will be attempted again.
        let _ = me.cast(DispatcherMsg::AttemptDone(Box::new(delivery), result));
    });
}

/// Decides what an attempt means for its delivery and its destination, and records it.
fn finish(
    myself: &ActorRef<DispatcherMsg>,
    state: &mut DispatcherState,
    delivery: &DueDelivery,
    result: &AttemptResult,
) {
    let now = now_ms();
    let settings = &state.core.settings.delivery;
    let key = delivery.key.clone();
    let attempt = Attempt {
        at_ms: now.saturating_sub(u64::try_from(result.duration.as_millis()).unwrap_or(0)),
        status_code: result.status,
        error: result.error.clone(),
        duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        response_body: result.response_body.clone(),
    };
    let Some(dest) = state.destinations.get_mut(&key.destination) else {
        // Deleted while the attempt ran: its deliveries are already in the DLQ, and `reload`
        // already took its attempts off the in-flight count.
        return;
    };
    let metrics = &state.core.metrics;
    metrics
        .attempt_seconds
        .get_or_create(&DestinationLabels {
            destination: key.destination.clone(),
        })
        .observe(result.duration.as_secs_f64());
    let mut changed = false;
    let outcome = match classify(result) {
        Verdict::Success => {
            if dest.circuit.on_success() == Transition::Closed {
                changed = true;
                tracing::info!(destination = %key.destination, "circuit closed");
                state.core.perf_event(PerfEvent::CircuitClosed {
                    destination: key.destination.clone(),
                });
                if settings.auto_recover {
                    let _ = state
                        .dlq
                        .get()
                        .cast(DlqMsg::AutoRecover(key.destination.clone()));
                }
            }
            changed |=
                dest.circuit.consecutive_failures() != dest.record.circuit.consecutive_failures;
            Outcome::Succeeded
        }
        Verdict::Gone => {
            dest.record.enabled = false;
            dest.record.disabled_reason = Some("the receiver answered 410 Gone".into());
            dest.record.updated_at_ms = now;
            changed = true;
            tracing::warn!(destination = %key.destination, "410 Gone: destination disabled; its deliveries wait");
            state.core.perf_event(PerfEvent::DestinationDisabled {
                destination: key.destination.clone(),
            });
            Outcome::Wait { until_ms: now }
        }
        Verdict::Failure => {
            let transition = dest.circuit.on_failure(&settings.breaker, now);
            if transition == Transition::Opened {
                tracing::warn!(destination = %key.destination, "circuit opened");
                state.core.perf_event(PerfEvent::CircuitOpened {
                    destination: key.destination.clone(),
                    failures: dest.circuit.consecutive_failures(),
                });
            }
            changed = true;
            let defaults = settings.defaults();
            after_failure(
                delivery.round_attempts.saturating_add(1),
                policy::max_attempts(&dest.record.policy, &defaults),
                &policy::backoff(&dest.record.policy, &defaults),
                rand::random::<f64>(),
                result.retry_after,
                now,
            )
        }
    };
    if matches!(outcome, Outcome::Dead) {
        tracing::warn!(
            message_id = %key.message,
            destination = %key.destination,
            error = attempt.error.as_deref().unwrap_or("-"),
            status = ?attempt.status_code,
            "delivery dead after its last attempt: it is in the DLQ"
        );
    }
    metrics.delivery(&key.destination, outcome_label(&outcome, classify(result)));
    set_circuit_gauge(metrics, &key.destination, &dest.circuit);
    let destination = changed.then(|| {
        let snapshot = dest.snapshot();
        dest.record.circuit = snapshot.circuit;
        (key.destination.clone(), snapshot)
    });
    record(
        myself,
        &state.core,
        AttemptUpdate {
            key,
            attempt: Some(attempt),
            outcome,
            destination,
            now_ms: now,
        },
        0,
    );
}

fn outcome_label(outcome: &Outcome, verdict: Verdict) -> &'static str {
    match (outcome, verdict) {
        (_, Verdict::Gone) => "gone",
        (Outcome::Succeeded, _) => "succeeded",
        (Outcome::Retry { .. } | Outcome::Wait { .. }, _) => "retrying",
        (Outcome::Dead, _) => "dead",
        (Outcome::Suppressed { .. }, _) => "suppressed",
    }
}

fn set_circuit_gauge(metrics: &Metrics, destination: &str, circuit: &Circuit) {
    let value = match circuit {
        Circuit::Closed { .. } => 0,
        Circuit::HalfOpen { .. } => 1,
        Circuit::Open { .. } => 2,
    };
    metrics
        .circuit_state
        .get_or_create(&DestinationLabels {
            destination: destination.to_owned(),
        })
        .set(value);
}

/// An opt-out check: why a delivery is held back (`Some`), or that it may go (`None`).
pub type OptOut = Result<Option<String>, crate::cache::CacheError>;

/// The opt-out verdict of every delivery in `due`, in order, checked concurrently. A check
/// that could not be made (the cache is restarting, a task failed) is an error: the delivery
/// then waits for the next scan rather than go out unchecked.
async fn check_all(core: &Arc<Core>, channel: &str, due: &[DueDelivery], now: u64) -> Vec<OptOut> {
    let mut verdicts: Vec<OptOut> = vec![Ok(None); due.len()];
    let mut checks = tokio::task::JoinSet::new();
    for (i, delivery) in due.iter().enumerate() {
        let Some(recipient) = delivery.message.recipient.clone() else {
            continue; // nobody to opt out
        };
        verdicts[i] = Err(crate::cache::CacheError::Unavailable);
        let (core, channel) = (Arc::clone(core), channel.to_owned());
        let category = delivery.message.category.clone();
        checks.spawn(async move {
            let verdict = held_back(&core, &channel, &recipient, category.as_deref(), now).await;
            (i, verdict)
        });
    }
    while let Some(done) = checks.join_next().await {
        if let Ok((i, verdict)) = done
            && let Some(slot) = verdicts.get_mut(i)
        {
            *slot = verdict;
        }
    }
    verdicts
}

/// Why a delivery to `recipient` must not be sent on `channel`, if it must not: its
/// suppressions and preferences, both looked up at once through the cache.
async fn held_back(
    core: &Core,
    channel: &str,
    recipient: &Recipient,
    category: Option<&str>,
    now: u64,
) -> OptOut {
    let (suppressions, preferences) = tokio::join!(
        core.cached_suppressions(recipient),
        core.cached_preferences(recipient)
    );
    let (suppressions, preferences) = (suppressions?, preferences?);
    Ok(rules::verdict(
        &suppressions,
        preferences.as_ref().as_ref(),
        channel,
        category,
        now,
    ))
}

/// Writes an outcome through the group commit; the delivery is released after the commit. If
/// the commit fails the outcome comes back as [`DispatcherMsg::NotRecorded`] (`failures` + 1)
/// and the delivery stays in flight: it is not sent again before its outcome is committed.
fn record(
    myself: &ActorRef<DispatcherMsg>,
    core: &Arc<Core>,
    update: AttemptUpdate,
    failures: u32,
) {
    let me = myself.clone();
    let kept = update.clone();
    // The destination's stored state changed (circuit, disabled): drop its cached copy once
    // the change is committed.
    let changed = update.destination.as_ref().map(|(name, _)| name.clone());
    let cache = Arc::clone(core);
    core.store.record_attempt(
        update,
        Box::new(move |result| {
            if let Err(e) = result {
                tracing::error!(error = %e, delivery = %kept.key, "recording an outcome failed; kept to record again");
                let _ = me.cast(DispatcherMsg::NotRecorded(
                    Box::new(kept),
                    failures.saturating_add(1),
                ));
                return;
            }
            if let Some(name) = &changed {
                cache.invalidate(&crate::cache_keys::destination(name));
            }
            let _ = me.cast(DispatcherMsg::Recorded(kept.key));
        }),
    );
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Option<u16>) -> AttemptResult {
        AttemptResult {
            status,
            error: None,
            retry_after: None,
            duration: Duration::ZERO,
            response_body: None,
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&result(Some(200))), Verdict::Success);
        assert_eq!(classify(&result(Some(204))), Verdict::Success);
        assert_eq!(
            classify(&result(Some(301))),
            Verdict::Failure,
            "redirects are failures"
        );
        assert_eq!(classify(&result(Some(410))), Verdict::Gone);
        assert_eq!(classify(&result(Some(500))), Verdict::Failure);
        assert_eq!(classify(&result(None)), Verdict::Failure);
    }

    #[test]
    fn failures_retry_until_max_attempts_then_die() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        match after_failure(1, 5, &backoff, 0.5, None, 1_000) {
            Outcome::Retry { at_ms } => assert_eq!(at_ms, 1_500),
            other => panic!("{other:?}"),
        }
        match after_failure(3, 5, &backoff, 0.5, Some(Duration::from_secs(10)), 1_000) {
            Outcome::Retry { at_ms } => assert_eq!(at_ms, 11_000, "Retry-After wins"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_failure(5, 5, &backoff, 0.5, None, 0),
            Outcome::Dead
        ));
    }

    #[test]
    fn a_rate_limit_is_shared_between_the_nodes() {
        let burst = |rate, nodes| {
            let limiter = rate_share(rate, nodes)?;
            Some((0..1000).take_while(|_| limiter.check().is_ok()).count())
        };
        assert_eq!(burst(None, 3), None);
        assert_eq!(burst(Some(0), 3), None, "0 is no limit, as on one node");
        assert_eq!(burst(Some(30), 1), Some(30));
        assert_eq!(burst(Some(30), 3), Some(10));
        assert_eq!(
            burst(Some(10), 3),
            Some(4),
            "rounded up: never below the limit"
        );
        assert_eq!(burst(Some(2), 5), Some(1), "at least one a second");
    }

    #[test]
    fn circuit_round_trips_through_its_record() {
        let policy = BreakerPolicy {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        };
        let open = Circuit::Open {
            opened_at_ms: 1_000,
            consecutive_failures: 5,
        };
        let record = circuit_to_record(&open);
        assert_eq!(circuit_from_record(&record, &policy, 2_000), open);
        assert_eq!(
            circuit_from_record(&record, &policy, 31_000).name(),
            "half_open",
            "restored after its open period, it admits a probe"
        );
        let closed = Circuit::Closed {
            consecutive_failures: 2,
        };
        assert_eq!(
            circuit_from_record(&circuit_to_record(&closed), &policy, 0),
            closed
        );
    }
}
