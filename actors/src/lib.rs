//! herald's actors and every rule of the product. No HTTP types live here: the edge in the
//! `herald` binary turns requests into calls on [`Herald`] and results into responses.
//!
//! # The supervision tree
//!
//! ```text
//! Supervisor (one-for-one restarts, budget 5 per minute, then stops herald)
//! ├── Ingress          admission state (blocklist); housekeeping of idempotency keys
//! └── …                cache, perf monitor, DLQ keeper, suppression registry, dispatcher
//! ```
//! Every child is spawned linked; callers reach a child through its [`Slot`], which the
//! supervisor updates on restart.
//!
//! # The path of a webhook
//!
//! ```text
//! edge: source known? client blocked? body within limit? rate limit?
//!   └─ verify, inline: headers, timestamp, signature (constant time); routing fields, fan-out
//!        ├─ invalid signature ─call─▶ Ingress: count towards a block ─▶ 401
//!        └─ genuine ─▶ storage writer: one transaction for every request waiting,
//!                      commit (Immediate, 2PC) ─▶ 202/200
//! ```
//! The writer answers the request's oneshot once the batch is durable, so the edge waits on
//! exactly one thing and no actor ever awaits a commit.

pub mod admin;
pub mod cache;
pub mod dispatcher;
pub mod dlq;
pub mod ingress;
pub mod metrics;
pub mod perf;
pub mod routing;
pub mod slot;
pub mod supervisor;
pub mod suppression;
pub mod time;
pub mod verifier;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use herald_storage::{
    DedupeKey, MessageId, MessageRecord, NewMessage, Recipient, StorageError, Store,
};
use ingress::IngressMsg;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};

pub use routing::Route;
pub use slot::Slot;
use supervisor::{Children, Supervisor, SupervisorMsg};
use verifier::schemes::{SourceRule, VerifyError};

/// What the binary's configuration becomes, once validated.
#[derive(Debug)]
pub struct Settings {
    /// `server.node_name`: which node's figures these are. It labels every alert (and the
    /// metrics, which are built before the actors with the same name).
    pub node_name: String,
    pub sources: Vec<SourceSettings>,
    pub routes: Vec<Route>,
    /// Invalid signatures from one client within `block_window` that block it.
    pub block_after_invalid: u32,
    pub block_window: Duration,
    pub block_for: Duration,
    /// How long idempotency keys are remembered, at least.
    pub dedupe_window: Duration,
    /// How long the edge waits for a request to be verified and committed.
    pub request_timeout: Duration,
    pub delivery: dispatcher::DeliverySettings,
    /// Budgets graded by the perf monitor (the defaults when the config lists none).
    pub budgets: Vec<perf::budgets::Budget>,
    /// Where alert transitions are delivered as messages, if anywhere.
    pub alerts_destination: Option<String>,
    pub cache: cache::CacheSettings,
    /// How often the perf monitor runs storage maintenance (index verification and repair).
    pub maintenance_interval: Duration,
}

#[derive(Debug)]
pub struct SourceSettings {
    pub name: String,
    pub rule: SourceRule,
    pub rate_limit_per_sec: Option<NonZeroU32>,
    /// Event type → suppression reason: the feedback loop (bounces, complaints).
    pub suppress_on: std::collections::BTreeMap<String, String>,
}

/// A configured source at run time.
pub struct Source {
    pub name: String,
    pub rule: SourceRule,
    pub suppress_on: std::collections::BTreeMap<String, String>,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("rule", &self.rule)
            .field("suppress_on", &self.suppress_on)
            .field("rate_limited", &self.limiter.is_some())
            .finish()
    }
}

impl Source {
    /// Takes one unit of the source's rate limit, or says how long until one is free.
    pub fn check_rate(&self) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// State shared by the actors and the edge; read-mostly.
#[derive(Debug)]
pub struct Core {
    pub settings: Settings,
    pub store: Store,
    sources: HashMap<String, Source>,
    routes: ArcSwap<Vec<Route>>,
    /// Blocked clients and when each block ends. Written only by the ingress.
    blocked: ArcSwap<HashMap<IpAddr, Instant>>,
    /// Signalled whenever deliveries become due (a commit, a re-queue): wakes the dispatcher.
    pub work: Arc<tokio::sync::Notify>,
    pub metrics: Arc<metrics::Metrics>,
    /// The perf monitor, once started: anything may report an event to it.
    perf: PerfSink,
    /// The cache coordinator, once started.
    cache: OnceLock<Slot<cache::CacheMsg>>,
    /// The last storage maintenance report (periodic or asked for), for `GET /v1/storage`.
    last_maintenance: arc_swap::ArcSwapOption<herald_storage::MaintenanceReport>,
}

/// Where events for the perf monitor go; set by the supervisor when it starts the monitor.
/// Created before the store opens, so the store's commit observer can report too.
pub type PerfSink = Arc<OnceLock<Slot<perf::monitor::PerfMsg>>>;

impl Core {
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }

    pub fn destinations_for(&self, source: Option<&str>, event_type: Option<&str>) -> Vec<String> {
        routing::destinations_for(&self.routes.load(), source, event_type)
    }

    /// Reports an event to the perf monitor (dropped if it is not running).
    pub fn perf_event(&self, event: perf::monitor::PerfEvent) {
        emit(&self.perf, perf::monitor::PerfMsg::Event(event));
    }

    /// The cache coordinator's current incarnation.
    pub fn cache(&self) -> Option<Arc<ActorRef<cache::CacheMsg>>> {
        self.cache.get().map(Slot::get)
    }

    /// Invalidates cache keys matching `pattern` without waiting (for sync contexts).
    pub fn invalidate(&self, pattern: &str) {
        if let Some(cache) = self.cache() {
            cache::invalidate_now(&cache, pattern);
        }
    }

    /// A recipient's preferences, through the cache (key [`cache_keys::preferences`]).
    pub async fn cached_preferences(
        &self,
        recipient: &Recipient,
    ) -> Result<Arc<Option<herald_storage::Preferences>>, cache::CacheError> {
        let (store, who) = (self.store.clone(), recipient.clone());
        self.cached(
            cache_keys::preferences(recipient.as_str()),
            move || async move { store.preferences(who).await },
        )
        .await
    }

    /// A recipient's suppressions by channel, through the cache (key [`cache_keys::suppressions`]).
    pub async fn cached_suppressions(
        &self,
        recipient: &Recipient,
    ) -> Result<Arc<Vec<(String, herald_storage::SuppressionRecord)>>, cache::CacheError> {
        let (store, who) = (self.store.clone(), recipient.clone());
        self.cached(
            cache_keys::suppressions(recipient.as_str()),
            move || async move { store.suppressions_of(who).await },
        )
        .await
    }

    /// A destination, through the cache (key [`cache_keys::destination`]).
    pub async fn cached_destination(
        &self,
        name: &str,
    ) -> Result<Arc<Option<herald_storage::DestinationRecord>>, cache::CacheError> {
        let (store, wanted) = (self.store.clone(), name.to_owned());
        self.cached(cache_keys::destination(name), move || async move {
            store.destination(wanted).await
        })
        .await
    }

    async fn cached<T, F, Fut>(&self, key: String, load: F) -> Result<Arc<T>, cache::CacheError>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        let cache = self.cache().ok_or(cache::CacheError::Unavailable)?;
        cache::get_or_load(&cache, key, CACHE_WAIT, move || async move {
            load().await.map_err(|e| e.to_string())
        })
        .await
    }

    /// Verifies every secondary index and rebuilds the broken ones; the report is kept as the
    /// last one ([`Self::last_maintenance`]).
    pub async fn maintenance(&self) -> Result<herald_storage::MaintenanceReport, StorageError> {
        let report = self.store.maintenance(true).await?;
        self.last_maintenance.store(Some(Arc::new(report.clone())));
        Ok(report)
    }

    /// The report of the last maintenance run since this herald started, if any: what
    /// `GET /v1/storage` shows, so that reading it never scans the database.
    pub fn last_maintenance(&self) -> Option<Arc<herald_storage::MaintenanceReport>> {
        self.last_maintenance.load_full()
    }

    /// Puts one destination's routing in effect now (`None`: it is gone), so that a message
    /// accepted right after an admin change is routed by what the API answered. The dispatcher
    /// republishes the same table once it has reloaded the destination.
    pub(crate) fn set_route(&self, name: &str, record: Option<&herald_storage::DestinationRecord>) {
        self.routes.rcu(|routes| {
            let mut next: Vec<Route> = routes
                .iter()
                .filter(|r| r.destination != name)
                .cloned()
                .collect();
            if let Some(record) = record {
                next.push(Route {
                    destination: name.to_owned(),
                    sources: record.sources.clone(),
                    event_types: record.event_types.clone(),
                });
                next.sort_by(|a, b| a.destination.cmp(&b.destination));
            }
            next
        });
    }

    /// Replaces the routing table; the dispatcher, which owns destinations, calls this.
    pub(crate) fn set_routes(&self, routes: Vec<Route>) {
        self.routes.store(Arc::new(routes));
    }
}

/// How long a cached read may wait for its value.
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// The cache's keys: defined once, so reads and the invalidations after writes agree.
pub mod cache_keys {
    pub fn preferences(recipient: &str) -> String {
        format!("prefs:{recipient}")
    }

    pub fn suppressions(recipient: &str) -> String {
        format!("supp:{recipient}")
    }

    pub fn destination(name: &str) -> String {
        format!("dest:{name}")
    }

    /// Every suppression entry (after a bulk change).
    pub const ALL_SUPPRESSIONS: &str = "supp:*";
}

/// Drops the cached copies of what another node changed in the shared database (PostgreSQL;
/// never on redb): a recipient's suppressions and preferences, a destination. After a gap in
/// what was heard, the whole cache. Ends with the store or with herald.
async fn forget_what_other_nodes_changed(
    mut changes: tokio::sync::broadcast::Receiver<herald_storage::Change>,
    core: std::sync::Weak<Core>,
) {
    use herald_storage::Change;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let change = changes.recv().await;
        let Some(core) = core.upgrade() else { return };
        match change {
            Ok(Change::Subject(recipient)) => {
                core.invalidate(&cache_keys::suppressions(&recipient));
                core.invalidate(&cache_keys::preferences(&recipient));
            }
            Ok(Change::Destination(name)) => core.invalidate(&cache_keys::destination(&name)),
            Ok(Change::Work) => {}
            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => core.invalidate("*"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Casts `msg` to the perf monitor behind `sink`, if it runs.
pub fn emit(sink: &PerfSink, msg: perf::monitor::PerfMsg) {
    if let Some(slot) = sink.get() {
        let _ = slot.get().cast(msg);
    }
}

/// A partner's webhook as the edge received it.
#[derive(Debug)]
pub struct InboundWebhook {
    pub source: String,
    pub client: IpAddr,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub received_at: SystemTime,
}

/// A message published through the API.
#[derive(Debug, Clone)]
pub struct Publish {
    pub event_type: String,
    /// The payload, serialised: these exact bytes are delivered.
    pub body: Bytes,
    pub recipient: Option<Recipient>,
    pub channel: Option<String>,
    pub category: Option<String>,
    pub idempotency_key: Option<String>,
}

/// The idempotency scope of published messages. Source names cannot contain `@`.
const PUBLISH_SCOPE: &str = "@api";

/// A webhook that is now durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub id: MessageId,
    /// True when the same webhook id had already been accepted; nothing new was stored.
    pub duplicate: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The request failed verification; nothing was stored.
    #[error(transparent)]
    Rejected(#[from] VerifyError),
    /// The commit failed; nothing was stored.
    #[error("storage: {0}")]
    Storage(#[source] StorageError),
    /// An actor was restarting, or the request timed out. It may or may not have been stored:
    /// a retry is safe, since it would be recognised as a duplicate.
    #[error("temporarily unavailable")]
    Unavailable,
}

pub type IngestResult = Result<Ingested, IngestError>;

#[derive(Debug, thiserror::Error)]
#[error("could not start the actors: {0}")]
pub struct StartError(String);

/// The running actor system: what the HTTP edge talks to.
#[derive(Debug)]
pub struct Herald {
    core: Arc<Core>,
    children: Children,
    admin: admin::Admin,
    supervisor: ActorRef<SupervisorMsg>,
    /// Turns true once the supervisor has stopped, for whatever reason.
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl Herald {
    /// Starts the supervision tree over an open store.
    pub async fn start(
        settings: Settings,
        store: Store,
        metrics: Arc<metrics::Metrics>,
        perf: PerfSink,
    ) -> Result<Self, StartError> {
        let sources = settings
            .sources
            .iter()
            .map(|s| {
                let source = Source {
                    name: s.name.clone(),
                    rule: s.rule.clone(),
                    suppress_on: s.suppress_on.clone(),
                    limiter: s
                        .rate_limit_per_sec
                        .map(|rate| RateLimiter::direct(Quota::per_second(rate))),
                };
                (s.name.clone(), source)
            })
            .collect();
        let routes = ArcSwap::from_pointee(settings.routes.clone());
        let core = Arc::new(Core {
            settings,
            store,
            sources,
            routes,
            blocked: ArcSwap::default(),
            work: Arc::default(),
            metrics,
            perf,
            cache: OnceLock::new(),
            last_maintenance: arc_swap::ArcSwapOption::empty(),
        });
        tokio::spawn(forget_what_other_nodes_changed(
            core.store.changes(),
            Arc::downgrade(&core),
        ));
        let (ready, children) = tokio::sync::oneshot::channel();
        let (supervisor, handle) = Actor::spawn(None, Supervisor, (Arc::clone(&core), ready))
            .await
            .map_err(|e| StartError(e.to_string()))?;
        let children = children
            .await
            .map_err(|_| StartError("the supervisor stopped while starting".into()))?;
        let (done, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = handle.await;
            let _ = done.send(true);
        });
        Ok(Self {
            admin: admin::Admin::new(Arc::clone(&core), children.clone()),
            core,
            children,
            supervisor,
            stopped,
        })
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Every admin operation (destinations, DLQ, suppressions, preferences, subjects, resend).
    pub fn admin(&self) -> &admin::Admin {
        &self.admin
    }

    pub fn store(&self) -> &Store {
        &self.core.store
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.core.source(name)
    }

    /// Whether `client` is blocked for repeated invalid signatures.
    pub fn is_blocked(&self, client: IpAddr) -> bool {
        self.core
            .blocked
            .load()
            .get(&client)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Verifies a webhook and stores it durably; resolves after the commit.
    ///
    /// Verification runs inline on the caller's task: it is pure CPU (about a microsecond of
    /// HMAC for 1 KiB) and needs no actor's state, so a pool of verifier actors only added two
    /// mailbox hops and two task wake-ups per request (measured: README, Performance). A genuine
    /// webhook goes straight to the group commit; only a bad signature visits the ingress, which
    /// owns the blocklist, so the client's next request already sees its block.
    pub async fn ingest(&self, webhook: InboundWebhook) -> IngestResult {
        let timeout = self.core.settings.request_timeout;
        let message = match verifier::verify(&self.core, &webhook) {
            Ok(message) => message,
            Err(VerifyError::InvalidSignature) => {
                let client = webhook.client;
                return match self
                    .children
                    .ingress
                    .get()
                    .call(
                        |reply| IngressMsg::InvalidSignature(client, reply),
                        Some(timeout),
                    )
                    .await
                {
                    Ok(CallResult::Success(result)) => result,
                    Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => {
                        Err(IngestError::Unavailable)
                    }
                };
            }
            Err(e) => {
                if e == VerifyError::StaleTimestamp {
                    self.core
                        .perf_event(perf::monitor::PerfEvent::StaleTimestamp {
                            source: webhook.source,
                        });
                }
                return Err(IngestError::Rejected(e));
            }
        };
        self.commit(message).await
    }

    /// Hands `message` to the group commit and waits, at most the request timeout, for it to
    /// be durable. After a timeout it may still be stored: a retry is then a duplicate.
    async fn commit(&self, message: NewMessage) -> IngestResult {
        let (reply, answer) = tokio::sync::oneshot::channel();
        ingress::accept(&self.core, message, move |result| {
            let _ = reply.send(result);
        });
        match tokio::time::timeout(self.core.settings.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(IngestError::Unavailable),
        }
    }

    /// Stores a published message durably, fanned out to the matching `"*"` destinations.
    pub async fn publish(&self, message: Publish) -> IngestResult {
        let now = unix_ms(SystemTime::now());
        let destinations = self.core.destinations_for(None, Some(&message.event_type));
        let new = NewMessage {
            id: MessageId::generate(now),
            dedupe_key: message
                .idempotency_key
                .as_deref()
                .map(|key| DedupeKey::new(PUBLISH_SCOPE, key)),
            record: MessageRecord {
                source: None,
                external_id: message.idempotency_key,
                event_type: Some(message.event_type),
                content_type: Some("application/json".into()),
                recipient: message.recipient,
                channel: message.channel,
                category: message.category,
                received_at_ms: now,
                body_len: message.body.len() as u64,
            },
            body: message.body,
            destinations,
            suppress: None,
        };
        self.commit(new).await
    }

    /// The perf layer's record of one HTTP request.
    pub fn request_served(&self, port: &'static str, route: String, status: u16, took: Duration) {
        self.core.metrics.request(port, route.clone(), status, took);
        emit(
            &self.core.perf,
            perf::monitor::PerfMsg::Request {
                port,
                route,
                status,
                took,
            },
        );
    }

    /// Hands validated web-vitals beacons to the perf monitor.
    pub fn vitals(&self, beacons: Vec<perf::vitals::Beacon>) {
        self.core.metrics.vitals.inc_by(beacons.len() as u64);
        emit(&self.core.perf, perf::monitor::PerfMsg::Beacons(beacons));
    }

    /// What `GET /v1/perf` shows.
    pub async fn perf_report(&self) -> Result<perf::monitor::PerfReport, IngestError> {
        self.perf_call(perf::monitor::PerfMsg::Report).await
    }

    /// The alerts, newest first; only the active ones if asked.
    pub async fn alerts(&self, active_only: bool) -> Result<Vec<perf::alerts::Alert>, IngestError> {
        self.perf_call(|reply| perf::monitor::PerfMsg::Alerts(active_only, reply))
            .await
    }

    async fn perf_call<T: Send + 'static>(
        &self,
        message: impl FnOnce(ractor::RpcReplyPort<T>) -> perf::monitor::PerfMsg,
    ) -> Result<T, IngestError> {
        let timeout = self.core.settings.request_timeout;
        match self.children.perf.get().call(message, Some(timeout)).await {
            Ok(CallResult::Success(value)) => Ok(value),
            Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => {
                Err(IngestError::Unavailable)
            }
        }
    }

    /// Tells the dispatcher a destination was created, changed or deleted in storage.
    pub fn destination_changed(&self, name: &str) {
        let _ = self
            .children
            .dispatcher
            .get()
            .cast(dispatcher::DispatcherMsg::Reload(name.to_owned()));
    }

    /// Tells the dispatcher that deliveries became due (a publish, a DLQ re-queue).
    pub fn work_available(&self) {
        self.core.work.notify_one();
    }

    /// Resolves when the supervision tree has stopped: after [`Self::shutdown`], or on its own
    /// when a child exhausted the restart budget (then herald must exit).
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|done| *done).await;
    }

    /// Stops every actor. Writes already handed to the store are still committed by
    /// [`Store::close`], which the caller runs afterwards.
    pub async fn shutdown(&self) {
        let _ = self
            .supervisor
            .call(SupervisorMsg::Shutdown, Some(Duration::from_secs(15)))
            .await;
        self.stopped().await;
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
