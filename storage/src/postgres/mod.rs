//! The PostgreSQL backend: several herald nodes over one database.
//!
//! # Design
//! - The same operations as the redb backend ([`crate::embedded`]), answering only after the
//!   PostgreSQL commit; every connection that writes what is acknowledged runs with
//!   `synchronous_commit = on`, so a commit has reached the server's WAL on disk before it
//!   returns, whatever the server's default. Claims alone commit without their own flush
//!   ([`CLAIM_SESSION_OPTIONS`] says why that loses nothing).
//! - **Grouped writes.** Accepting messages and recording attempt outcomes, herald's two
//!   high-rate writes, go through this node's [`writer`] (two transactions in flight, so one
//!   is applied while the other's WAL flush runs): whatever is waiting is applied in one
//!   transaction with a few array statements and one commit, as the redb writer does. The
//!   API's writes (rare) each run in their own transaction from the pool.
//! - **Leases.** [`crate::Store::due_deliveries`] claims what it returns: `FOR UPDATE SKIP
//!   LOCKED` over the due rows, then `lease_until_ms = now + lease` under this node's name, so
//!   each delivery is in flight on one node at a time. Recording the outcome clears the lease.
//!   A killed node's claims are taken by any node once their lease ends; a node may take its
//!   own claims back at once (what it claimed but did not start, or claimed before a restart).
//! - **Changes.** A write that other nodes keep a copy of, or wait for, sends a `NOTIFY` in its
//!   transaction (delivered at commit, dropped on rollback); every node `LISTEN`s on one
//!   connection of its own and hands what others sent to [`crate::Store::changes`] ([`notify`]).
//! - **Health.** A failed connection marks the store unavailable ([`crate::Health`]); a probe
//!   reconnects every second and marks it healthy again. Meanwhile ingest answers 503 and
//!   nothing is sent, exactly as when the redb file fails.
//! - Shared by every node: everything in [`schema`]. Per node: its writer, its pool, its
//!   listener, the leases it holds.

mod deliveries;
mod destinations;
mod maintenance;
mod messages;
mod nodes;
mod notify;
pub(crate) mod schema;
mod subjects;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{broadcast, oneshot, watch};

use crate::{
    Accepted, AttemptUpdate, AuditEntry, AuditView, Change, CommitObserver, Completion, DeadCursor,
    DeadFilter, DeadLetter, DeliveryKey, DestinationRecord, DueDelivery, Erasure, Health,
    IndexHealth, MaintenanceReport, MessageFilter, MessageId, MessageView, NewMessage,
    NewSuppression, Page, Preferences, Pseudonyms, Recipient, Result, StorageError, StorageStats,
    SubjectExport, SuppressionRecord, SuppressionView,
};

/// How to reach the database, and this node's part.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `storage.postgres_url`: a libpq-style URL or key/value string.
    pub url: String,
    /// `server.node_name`: whose leases these are, and whose changes to ignore when heard.
    pub node: String,
    /// Connections in this node's pool (the writer and the listener have their own).
    pub pool_size: usize,
    /// How much longer than its attempt's timeout a claim lasts (see
    /// [`crate::Store::due_deliveries`]): the time an outcome may take to be recorded once the
    /// attempt ended, so that only a dead node's claims are ever taken over.
    pub lease_margin: Duration,
    /// Connecting (at start, and each reconnection attempt) gives up after this.
    pub connect_timeout: Duration,
    /// Called after every grouped commit, as with redb.
    pub observer: Option<CommitObserver>,
}

impl PostgresOptions {
    pub const DEFAULT_POOL_SIZE: usize = 16;
    pub const DEFAULT_LEASE_MARGIN: Duration = Duration::from_secs(10);

    /// The defaults for `url`, as node `node`.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node: node.into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            lease_margin: Self::DEFAULT_LEASE_MARGIN,
            connect_timeout: Duration::from_secs(5),
            observer: None,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresOptions")
            .field("node", &self.node)
            .field("pool_size", &self.pool_size)
            .field("lease_margin", &self.lease_margin)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The backend's handle. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Connections for claims alone, which need no flush of their own (see
    /// [`CLAIM_SESSION_OPTIONS`]).
    claims: Pool,
    /// For the listener's and the writer's own connections.
    config: tokio_postgres::Config,
    node: String,
    lease_margin: Duration,
    pseudonyms: Pseudonyms,
    writer: writer::Writer,
    health: watch::Sender<Health>,
    changes: broadcast::Sender<Change>,
    /// Set by [`Shared::close`]: later writes fail with [`StorageError::Closed`].
    closed: AtomicBool,
    /// How many nodes share the database now, this one included ([`nodes`]).
    alive: Arc<AtomicUsize>,
    /// When this node last announced new work from ingest, in ms since `started`.
    last_work_notice: AtomicU64,
    started: std::time::Instant,
}

/// New work from ingest is announced to the other nodes at most this often. The notice is a
/// hint: this node's dispatcher delivers what it accepted in any case, the others only help,
/// and a node that missed a notice reads its quiet queues within seconds anyway. Announcing
/// every batch would cost more than the help is worth: PostgreSQL serialises the commits of
/// all transactions that `NOTIFY`, across every session of the cluster (a global lock held
/// through the WAL flush), so each node's ingest would wait for the others' commits.
const WORK_NOTICE_EVERY: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("postgres::Shared")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// A statement PostgreSQL runs at the start of every connection: commits wait for the WAL
/// flush whatever the server or database default says.
const SESSION_OPTIONS: &str = "-c synchronous_commit=on";

/// Claims commit without waiting for their WAL flush. A claim only stamps a lease: one lost
/// in a database crash makes its deliveries claimable again at once, which at least once
/// allows (they are attempted again), and an outcome recorded after it is flushed durably,
/// taking the claim's WAL record with it (the WAL is written in order). So a claim's commit
/// costs no disk flush of its own.
const CLAIM_SESSION_OPTIONS: &str = "-c synchronous_commit=off";

/// Claims are short and one per destination read.
const CLAIM_POOL_SIZE: usize = 4;

/// A pool of connections made with `config`.
fn new_pool(config: &tokio_postgres::Config, size: usize, timeout: Duration) -> Result<Pool> {
    let manager = Manager::from_config(
        config.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .build()
        .map_err(|e| StorageError::BadUrl(e.to_string()))
}

impl Shared {
    /// Connects, migrates, and starts the writer, the listener and the health probe.
    pub async fn open(options: PostgresOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StorageError::BadUrl(format!("not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(options.connect_timeout);
        let session = match config.get_options() {
            Some(given) => format!("{given} {SESSION_OPTIONS}"),
            None => SESSION_OPTIONS.to_owned(),
        };
        config.application_name(format!("herald {}", options.node));
        let mut claiming = config.clone();
        claiming.options(match config.get_options() {
            Some(given) => format!("{given} {CLAIM_SESSION_OPTIONS}"),
            None => CLAIM_SESSION_OPTIONS.to_owned(),
        });
        config.options(session);
        let pool = new_pool(&config, options.pool_size.max(2), options.connect_timeout)?;
        let claims = new_pool(&claiming, CLAIM_POOL_SIZE, options.connect_timeout)?;
        let mut client = pool.get().await.map_err(|e| {
            StorageError::BadUrl(format!("cannot connect to PostgreSQL: {}", pool_cause(&e)))
        })?;
        let key = schema::migrate(&mut client).await?;
        drop(client);
        let (health, _) = watch::channel(Health::Healthy);
        let (changes, _) = broadcast::channel(1024);
        let observer = options.observer;
        let connect_timeout = options.connect_timeout;
        let shared = Self {
            inner: Arc::new_cyclic(|store| Inner {
                pool,
                claims,
                config,
                node: options.node,
                lease_margin: options.lease_margin,
                pseudonyms: Pseudonyms::new(key),
                writer: writer::Writer::spawn(store, observer.as_ref()),
                health,
                changes,
                closed: AtomicBool::new(false),
                alive: Arc::new(AtomicUsize::new(1)),
                last_work_notice: AtomicU64::new(0),
                started: std::time::Instant::now(),
            }),
        };
        // Whatever this node reads once `open` returns (its destinations, to build its copies)
        // is then never older than the changes it will hear of: none falls in between.
        let listening = notify::spawn_listener(&shared);
        if tokio::time::timeout(connect_timeout, listening)
            .await
            .is_err()
        {
            tracing::warn!("not yet listening for the other nodes' changes");
        }
        nodes::spawn_heartbeat(
            Arc::downgrade(&shared.inner),
            Arc::clone(&shared.inner.alive),
        );
        Ok(shared)
    }

    pub(crate) fn node(&self) -> &str {
        &self.inner.node
    }

    /// How long a claim for an attempt of `timeout` lasts, in ms.
    fn lease_ms(&self, timeout: Duration) -> u64 {
        u64::try_from(timeout.saturating_add(self.inner.lease_margin).as_millis())
            .unwrap_or(u64::MAX)
    }

    /// A pooled connection; a failure marks the store unavailable.
    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.client_of(&self.inner.pool).await
    }

    async fn client_of(&self, pool: &Pool) -> Result<deadpool_postgres::Client> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        match pool.get().await {
            Ok(client) => Ok(client),
            Err(e) => {
                let error = StorageError::from(e);
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Marks the store unavailable if `error` says the database cannot be reached (a lost
    /// connection, a server shutting down), and starts the probe that marks it healthy again.
    /// A refused statement leaves it healthy.
    pub(crate) fn failed(&self, error: &StorageError) {
        if !is_connection_error(error) {
            return;
        }
        let was_healthy = self.inner.health.send_if_modified(|health| {
            let healthy = health.is_healthy();
            *health = Health::Reopening {
                error: error.to_string(),
            };
            healthy
        });
        if was_healthy {
            tracing::error!(%error, "PostgreSQL unavailable; reconnecting");
            tokio::spawn(probe(self.clone()));
        }
    }

    /// `outcome`, once the store is marked unavailable if it says the database could not be
    /// reached: a connection lost under a claim or an API write starts the probe at once, as
    /// one lost under the writer does.
    fn checked<T>(&self, outcome: Result<T>) -> Result<T> {
        if let Err(e) = &outcome {
            self.failed(e);
        }
        outcome
    }

    /// Runs `op` on the writer's next grouped commit and waits for it.
    async fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(Completion<T>) -> writer::Job,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner.writer.send(job(Box::new(move |outcome| {
            let _ = tx.send(outcome);
        })));
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Tells the other nodes about `change` when `tx` commits.
    pub(crate) async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        change: &Change,
    ) -> Result<()> {
        notify::send(tx, &self.inner.node, change).await
    }

    /// [`Self::notify`] for many changes, in one statement.
    pub(crate) async fn notify_all(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        changes: &[Change],
    ) -> Result<()> {
        notify::send_all(tx, &self.inner.node, changes).await
    }

    /// Whether the work an ingest batch queued should be announced (see
    /// [`WORK_NOTICE_EVERY`]); true at most once per period.
    pub(crate) fn work_notice_due(&self) -> bool {
        let every = u64::try_from(WORK_NOTICE_EVERY.as_millis()).unwrap_or(u64::MAX);
        // Offset by one period, so that the first batch is announced too.
        let now = u64::try_from(self.inner.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(every);
        let last = self.inner.last_work_notice.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every
            && self
                .inner
                .last_work_notice
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// How many nodes share the database now, this one included (see [`nodes`]).
    pub fn nodes(&self) -> usize {
        self.inner.alive.load(Ordering::Relaxed)
    }

    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    // ---- messages ---------------------------------------------------------------------------

    pub fn insert_message(&self, msg: NewMessage, done: Completion<Accepted>) {
        self.inner
            .writer
            .send(writer::Job::Insert(Box::new(msg), done));
    }

    pub async fn insert_message_async(&self, msg: NewMessage) -> Result<Accepted> {
        self.submit(|done| writer::Job::Insert(Box::new(msg), done))
            .await
    }

    pub async fn sweep_idempotency(&self, before_ms: u64) -> Result<usize> {
        messages::sweep_idempotency(&self.client().await?, before_ms).await
    }

    pub async fn message(&self, id: MessageId) -> Result<Option<MessageView>> {
        messages::get(&self.client().await?, id).await
    }

    pub async fn list_messages(
        &self,
        filter: MessageFilter,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<MessageView>> {
        messages::list(&self.client().await?, &filter, after, limit).await
    }

    // ---- deliveries ---------------------------------------------------------------------------

    pub fn record_attempt(&self, update: AttemptUpdate, done: Completion<bool>) {
        self.inner
            .writer
            .send(writer::Job::Attempt(Box::new(update), done));
    }

    /// Claims (leases to this node) up to `limit` due deliveries of `destination`.
    pub async fn due_deliveries(
        &self,
        destination: String,
        now_ms: u64,
        limit: usize,
        skip: HashSet<MessageId>,
        timeout: Duration,
    ) -> Result<Vec<DueDelivery>> {
        let mut client = self.client_of(&self.inner.claims).await?;
        let lease_ms = self.lease_ms(timeout);
        self.checked(
            deliveries::claim_due(
                self,
                &mut client,
                &destination,
                now_ms,
                limit,
                &skip,
                lease_ms,
            )
            .await,
        )
    }

    pub async fn next_due(&self, destinations: Vec<String>) -> Result<Vec<(String, Option<u64>)>> {
        let client = self.client().await?;
        self.checked(deliveries::next_due(&client, self.node(), destinations).await)
    }

    pub async fn queued(&self, destination: String) -> Result<u64> {
        self.checked(deliveries::queued(&self.client().await?, &destination).await)
    }

    pub async fn list_dead(
        &self,
        filter: DeadFilter,
        after: Option<DeadCursor>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<DeadCursor>)> {
        self.checked(
            deliveries::list_dead(&self.client().await?, &filter, after.as_ref(), limit).await,
        )
    }

    pub async fn dead(&self, key: DeliveryKey) -> Result<Option<DeadLetter>> {
        self.checked(deliveries::get_dead(&self.client().await?, &key).await)
    }

    pub async fn dead_keys(&self, filter: DeadFilter) -> Result<Vec<DeliveryKey>> {
        self.checked(deliveries::dead_keys(&self.client().await?, &filter).await)
    }

    pub async fn requeue<A>(&self, keys: Vec<DeliveryKey>, now_ms: u64, audit: A) -> Result<usize>
    where
        A: Fn(usize) -> Option<AuditEntry> + Send + 'static,
    {
        let mut client = self.client().await?;
        self.checked(deliveries::requeue(self, &mut client, &keys, now_ms, audit).await)
    }

    pub async fn resend<A>(
        &self,
        message: MessageId,
        destination: Option<String>,
        now_ms: u64,
        audit: A,
    ) -> Result<Option<usize>>
    where
        A: Fn(usize) -> AuditEntry + Send + 'static,
    {
        let mut client = self.client().await?;
        let resent = deliveries::resend(
            self,
            &mut client,
            message,
            destination.as_deref(),
            now_ms,
            audit,
        )
        .await;
        self.checked(resent)
    }

    pub async fn discard(&self, key: DeliveryKey, audit: AuditEntry) -> Result<bool> {
        let mut client = self.client().await?;
        self.checked(deliveries::discard(&mut client, &key, &audit).await)
    }

    // ---- destinations -------------------------------------------------------------------------

    pub async fn destination(&self, name: String) -> Result<Option<DestinationRecord>> {
        self.checked(destinations::get(&self.client().await?, &name).await)
    }

    pub async fn destinations(&self) -> Result<Vec<(String, DestinationRecord)>> {
        self.checked(destinations::list(&self.client().await?).await)
    }

    pub async fn put_destination(&self, name: String, record: DestinationRecord) -> Result<()> {
        let mut client = self.client().await?;
        self.checked(destinations::put(self, &mut client, &name, &record).await)
    }

    pub async fn create_destination(
        &self,
        name: String,
        record: DestinationRecord,
        audit: AuditEntry,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        self.checked(destinations::create(self, &mut client, &name, &record, &audit).await)
    }

    pub async fn update_destination<F, A>(
        &self,
        name: String,
        change: F,
        audit: Option<A>,
    ) -> Result<Option<DestinationRecord>>
    where
        F: Fn(&mut DestinationRecord) + Send + 'static,
        A: Fn(&DestinationRecord, &DestinationRecord) -> AuditEntry + Send + 'static,
    {
        let mut client = self.client().await?;
        self.checked(destinations::update(self, &mut client, &name, change, audit).await)
    }

    pub async fn delete_destination<A>(
        &self,
        name: String,
        now_ms: u64,
        audit: A,
    ) -> Result<Option<DestinationRecord>>
    where
        A: Fn(&DestinationRecord) -> AuditEntry + Send + 'static,
    {
        let mut client = self.client().await?;
        self.checked(destinations::delete(self, &mut client, &name, now_ms, audit).await)
    }

    // ---- subjects -------------------------------------------------------------------------------

    pub async fn add_suppressions(
        &self,
        items: Vec<NewSuppression>,
        audit: Vec<AuditEntry>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        subjects::add_suppressions(self, &mut client, &items, &audit).await
    }

    pub async fn remove_suppression<A>(
        &self,
        recipient: Recipient,
        channel: String,
        audit: A,
    ) -> Result<Option<SuppressionRecord>>
    where
        A: Fn(&SuppressionRecord) -> AuditEntry + Send + 'static,
    {
        let mut client = self.client().await?;
        subjects::remove_suppression(self, &mut client, &recipient, &channel, audit).await
    }

    pub async fn update_preferences<C, A>(
        &self,
        recipient: Recipient,
        change: C,
        audit: A,
    ) -> Result<Option<Preferences>>
    where
        C: Fn(Option<Preferences>) -> Option<Preferences> + Send + 'static,
        A: Fn(Option<&Preferences>, Option<&Preferences>) -> AuditEntry + Send + 'static,
    {
        let mut client = self.client().await?;
        subjects::update_preferences(self, &mut client, &recipient, change, audit).await
    }

    pub async fn sweep_suppressions(&self, now_ms: u64, max: usize) -> Result<usize> {
        let mut client = self.client().await?;
        subjects::sweep_suppressions(self, &mut client, now_ms, max).await
    }

    pub fn pseudonym(&self, recipient: &Recipient) -> Recipient {
        self.inner.pseudonyms.of(recipient)
    }

    pub async fn erase_subject<A>(&self, recipient: Recipient, audit: A) -> Result<Erasure>
    where
        A: Fn(&Recipient) -> AuditEntry + Send + 'static,
    {
        let alias = self.inner.pseudonyms.of(&recipient);
        let mut client = self.client().await?;
        subjects::erase(self, &mut client, &alias, &recipient, audit).await
    }

    pub async fn suppressions_of(
        &self,
        recipient: Recipient,
    ) -> Result<Vec<(String, SuppressionRecord)>> {
        let client = self.client().await?;
        subjects::suppressions_of(&client, &self.inner.pseudonyms, &recipient).await
    }

    pub async fn list_suppressions(
        &self,
        recipient: Option<Recipient>,
        channel: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<(Vec<SuppressionView>, bool)> {
        let client = self.client().await?;
        subjects::list_suppressions(
            &client,
            recipient.as_ref(),
            channel.as_deref(),
            after.as_ref().map(|(r, c)| (r.as_str(), c.as_str())),
            limit,
        )
        .await
    }

    pub async fn preferences(&self, recipient: Recipient) -> Result<Option<Preferences>> {
        let client = self.client().await?;
        subjects::preferences_of(&client, &self.inner.pseudonyms, &recipient).await
    }

    pub async fn list_audit(
        &self,
        subject: Option<String>,
        actor: Option<String>,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<AuditView>, bool)> {
        let client = self.client().await?;
        subjects::list_audit(&client, subject.as_deref(), actor.as_deref(), after, limit).await
    }

    pub async fn export_subject(&self, recipient: Recipient) -> Result<SubjectExport> {
        let mut client = self.client().await?;
        subjects::export(&mut client, &self.inner.pseudonyms, &recipient).await
    }

    // ---- maintenance and health -------------------------------------------------------------

    pub async fn stats(&self) -> Result<StorageStats> {
        maintenance::stats(&self.client().await?).await
    }

    /// PostgreSQL keeps its indexes in step with their tables itself: nothing to compare.
    #[allow(clippy::unused_async)] // the same signature as the redb backend's
    pub async fn verify_indexes(&self) -> Result<Vec<IndexHealth>> {
        Ok(Vec::new())
    }

    pub async fn maintenance(&self, repair: bool) -> Result<MaintenanceReport> {
        maintenance::report(&self.client().await?, repair).await
    }

    /// True while the database answers and writes are taken.
    pub async fn is_ready(&self) -> bool {
        if !self.accepts_writes() {
            return false;
        }
        match self.client().await {
            Ok(client) => {
                let answered = client.simple_query("SELECT 1").await;
                if let Err(e) = &answered {
                    self.failed(&StorageError::Unavailable(e.to_string()));
                }
                answered.is_ok()
            }
            Err(_) => false,
        }
    }

    pub fn accepts_writes(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire) && self.inner.health.borrow().is_healthy()
    }

    pub fn health(&self) -> Health {
        self.inner.health.borrow().clone()
    }

    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.inner.health.subscribe()
    }

    /// Commits everything queued so far, then refuses further work.
    pub async fn close(&self) {
        self.inner.writer.stop().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.pool.close();
        self.inner.claims.close();
    }
}

/// Now, in Unix ms.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether `error` means the database could not be reached, rather than a refused statement.
fn is_connection_error(error: &StorageError) -> bool {
    match error {
        StorageError::Unavailable(_) => true,
        StorageError::Postgres(e) => {
            e.is_closed()
                || e.code().is_none()
                || e.code().is_some_and(|code| {
                    // Class 08 (connection exception) and 57P (operator intervention: the server
                    // is shutting down or restarting).
                    let code = code.code();
                    code.starts_with("08") || code.starts_with("57P")
                })
        }
        _ => false,
    }
}

/// What a pool error comes down to, for the startup error.
fn pool_cause(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            use std::error::Error as _;
            e.source()
                .map_or_else(|| e.to_string(), ToString::to_string)
        }
        other => other.to_string(),
    }
}

/// Every second, until a connection answers: then the store is healthy again.
async fn probe(shared: Shared) {
    let mut delay = Duration::from_millis(250);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        if shared.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = shared.inner.pool.get().await else {
            continue;
        };
        if client.simple_query("SELECT 1").await.is_ok() {
            tracing::info!("PostgreSQL reachable again");
            shared.inner.health.send_replace(Health::Healthy);
            // Whatever was claimed or changed meanwhile is worth reading again.
            let _ = shared.inner.changes.send(Change::Resync);
            return;
        }
    }
}
