//! The `herald` binary's library half: configuration and the HTTP edge, plus [`start`], the
//! testable entry point that end-to-end tests and `main` share.
//!
//! `start` opens the store, starts the actors, binds both ports and serves; the returned
//! [`Running`] handle stops it all in order: stop accepting, let in-flight requests finish
//! within `server.shutdown_grace_ms`, stop the actors, commit and close the store.

pub mod config;
pub mod http;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use herald_actors::dispatcher::DeliverySettings;
use herald_actors::dispatcher::breaker::BreakerPolicy;
use herald_actors::dispatcher::retry::Backoff;
use herald_actors::verifier::schemes::encode_whsec;
use herald_actors::{Herald, Route, Settings, SourceSettings};
use herald_storage::{DestinationRecord, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::{Config, SourceFilter};
use http::server::{self, Limits};
use tls::ServerTls;

/// How long a client may take to send a body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a webhook may wait to be verified and committed before the edge answers 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The cache coordinator's bounds: entries, and how long an entry may be served.
const CACHE_CAPACITY: usize = 100_000;
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Invalid signatures are counted over this window (the contract's "within a minute").
const BLOCK_WINDOW: Duration = Duration::from_secs(60);

/// A running herald.
#[derive(Debug)]
pub struct Running {
    pub ingest_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Inbound TLS, when `server.tls_cert` and `server.tls_key` are set.
    tls: Option<ServerTls>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Reloads the inbound certificate and key from their files (what SIGHUP does): new
    /// handshakes use them, open connections are untouched. `Ok(false)` when TLS is off; on
    /// an error the previous certificate stays in use.
    pub fn reload_tls(&self) -> Result<bool, tls::TlsError> {
        match &self.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Shuts down gracefully and waits until the store is closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("the server task panicked")?
    }
}

/// Starts herald on `config` and returns once both ports are listening.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with(config, Store::open).await
}

/// [`start`], opening the store with `open`, given `storage.path` and the options herald needs
/// (its commit observer). Tests open it on a fault-injection backend.
pub async fn start_with<F>(config: Config, open: F) -> anyhow::Result<Running>
where
    F: FnOnce(&std::path::Path, herald_storage::Options) -> herald_storage::Result<Store>
        + Send
        + 'static,
{
    let metrics = Arc::new(herald_actors::metrics::Metrics::new(
        &config.server.node_name,
    ));
    let perf: herald_actors::PerfSink = Arc::default();
    let observed = Arc::clone(&metrics);
    let sink = Arc::clone(&perf);
    let options = herald_storage::Options {
        observer: Some(Arc::new(move |batch: herald_storage::BatchStats| {
            let took = batch.apply + batch.commit;
            herald_actors::emit(
                &sink,
                herald_actors::perf::monitor::PerfMsg::Event(
                    herald_actors::perf::monitor::PerfEvent::Commit {
                        took,
                        jobs: batch.jobs,
                    },
                ),
            );
            observed.commit_seconds.observe(took.as_secs_f64());
            observed
                .commit_batch_size
                .observe(f64::from(u32::try_from(batch.jobs).unwrap_or(u32::MAX)));
        })),
        ..herald_storage::Options::default()
    };
    let store = open_store(&config, options, open).await?;
    let tls = server_tls(&config)?;
    let extra_roots = match &config.delivery.ca_file {
        Some(path) => tls::load_roots(path).context("delivery.ca_file")?,
        None => Vec::new(),
    };
    let herald =
        Herald::start(settings(&config, extra_roots), store.clone(), metrics, perf).await?;

    let ingest = TcpListener::bind(config.server.ingest_listen)
        .await
        .with_context(|| {
            format!(
                "server.ingest_listen: binding {}",
                config.server.ingest_listen
            )
        })?;
    let api = TcpListener::bind(config.server.api_listen)
        .await
        .with_context(|| format!("server.api_listen: binding {}", config.server.api_listen))?;
    let ingest_addr = ingest.local_addr()?;
    let api_addr = api.local_addr()?;
    tracing::info!("ingest listening on {ingest_addr}");
    tracing::info!("api listening on {api_addr}");

    let app = Arc::new(http::App {
        herald,
        tokens: http::Tokens::new(&config.api.tokens),
        max_body_bytes: config.server.max_body_bytes,
        body_timeout: BODY_TIMEOUT,
        ingest_addr,
    });
    let limits = Limits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace: config.server.shutdown_grace,
    };
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(serve_until_stopped(
        app,
        store,
        [ingest, api],
        limits,
        tls.clone(),
        stopping,
    ));
    Ok(Running {
        ingest_addr,
        api_addr,
        tls,
        stop,
        task,
    })
}

/// Runs herald until `signal` resolves, then shuts down gracefully. SIGHUP reloads the
/// inbound TLS certificate and key.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    let reloads = tokio::spawn(reload_on_hangup(running.tls.clone()));
    let Running { stop, mut task, .. } = running;
    let finished = tokio::select! {
        () = signal => {
            let _ = stop.send(true);
            task.await
        }
        // The server ended without being asked: the actors exhausted their restart budget.
        finished = &mut task => finished,
    };
    reloads.abort();
    finished.context("the server task panicked")?
}

/// Opens the store `config` names: the redb file through `open` (on the blocking pool), or
/// the shared PostgreSQL database as this node. A PostgreSQL that cannot be reached or a URL
/// that does not parse is a [`BadSetting`] naming `storage.postgres_url`.
async fn open_store<F>(
    config: &Config,
    options: herald_storage::Options,
    open: F,
) -> anyhow::Result<Store>
where
    F: FnOnce(&std::path::Path, herald_storage::Options) -> herald_storage::Result<Store>
        + Send
        + 'static,
{
    match &config.storage.backend {
        config::StorageBackend::Redb => {
            let path = config.storage.path.clone();
            tokio::task::spawn_blocking(move || open(&path, options))
                .await
                .context("opening storage")?
                .with_context(|| format!("opening storage at {}", config.storage.path.display()))
        }
        config::StorageBackend::Postgres { url } => {
            let mut pg =
                herald_storage::PostgresOptions::new(url.as_str(), &config.server.node_name);
            pg.observer = options.observer;
            match Store::open_postgres(pg).await {
                Ok(store) => Ok(store),
                Err(e @ herald_storage::StorageError::BadUrl(_)) => Err(BadSetting {
                    key: "storage.postgres_url",
                    message: e.to_string(),
                }
                .into()),
                Err(e) => Err(anyhow::Error::new(e).context("opening the PostgreSQL database")),
            }
        }
    }
}

/// A setting that the configuration's checks could not judge (a database that cannot be
/// reached): found at start, reported like a config error (exit 2, naming the key).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BadSetting {
    pub key: &'static str,
    pub message: String,
}

/// The inbound TLS config, when both `server.tls_cert` and `server.tls_key` are set.
fn server_tls(config: &Config) -> anyhow::Result<Option<ServerTls>> {
    config
        .server
        .tls
        .as_ref()
        .map(|files| ServerTls::load(&files.cert, &files.key).context("server.tls_cert"))
        .transpose()
}

/// Reloads `tls` on every SIGHUP; a failed reload is logged and the old certificate kept.
/// Without TLS, SIGHUP is still caught (and only logged) rather than ending the process.
async fn reload_on_hangup(tls: Option<ServerTls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; TLS reload by signal is unavailable");
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: no TLS configured, nothing to reload");
                continue;
            };
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Err(e) => tracing::error!(
                    "SIGHUP: TLS reload failed, still serving the previous certificate: {e}"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    drop(tls);
}

async fn serve_until_stopped(
    app: Arc<http::App>,
    store: Store,
    [ingest, api]: [TcpListener; 2],
    limits: Limits,
    tls: Option<ServerTls>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ingest = tokio::spawn(server::serve(
        "ingest",
        ingest,
        http::ingest_handler(&app),
        limits,
        tls.clone(),
        stopping.clone(),
    ));
    let api = tokio::spawn(server::serve(
        "api",
        api,
        http::api_handler(&app),
        limits,
        tls,
        stopping.clone(),
    ));
    let mut stopping = stopping;
    let failed = tokio::select! {
        () = server::stop_requested(&mut stopping) => false,
        () = app.herald.stopped() => true,
    };
    if failed {
        tracing::error!("the actor system stopped; shutting down");
    }
    // Both loops watch the same signal; on an actor failure nobody sent it, so the loops are
    // aborted rather than drained (there is nothing left to serve their requests).
    if failed {
        ingest.abort();
        api.abort();
    }
    let _ = ingest.await;
    let _ = api.await;
    app.herald.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    if failed {
        anyhow::bail!("the actor system stopped after exhausting its restart budget");
    }
    Ok(())
}

/// The actors' view of the configuration. Validation already produced the actors' types,
/// so this cannot fail.
/// What a validated config becomes for the actors; `extra_roots` are `delivery.ca_file`'s
/// certificates, read (and checked by `check-config`) before.
fn settings(
    config: &Config,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Settings {
    let sources = config
        .sources
        .iter()
        .map(|s| SourceSettings {
            name: s.name.clone(),
            rule: s.rule.clone(),
            rate_limit_per_sec: s.rate_limit_per_sec,
            suppress_on: s
                .suppress_on
                .iter()
                .map(|(event_type, reason)| (event_type.clone(), reason.as_str().to_owned()))
                .collect(),
        })
        .collect();
    let routes = config
        .destinations
        .iter()
        .map(|d| Route {
            destination: d.name.clone(),
            sources: match &d.sources {
                SourceFilter::Any => vec!["*".to_owned()],
                SourceFilter::Only(names) => names.clone(),
            },
            event_types: d.event_types.clone(),
        })
        .collect();
    let delivery = DeliverySettings {
        max_attempts: config.delivery.max_attempts,
        backoff: Backoff {
            base: config.delivery.backoff_base,
            max: config.delivery.backoff_max,
        },
        timeout: config.delivery.timeout,
        auto_recover: config.delivery.auto_recover,
        allow_private: config.delivery.allow_private_destinations,
        breaker: BreakerPolicy {
            failure_threshold: config.circuit_breaker.failure_threshold,
            open_for: config.circuit_breaker.open,
        },
        configured: config
            .destinations
            .iter()
            .map(|d| (d.name.clone(), destination_record(d)))
            .collect(),
        extra_roots,
    };
    Settings {
        node_name: config.server.node_name.clone(),
        sources,
        routes,
        delivery,
        // As configured: `budgets = []` means none.
        budgets: config.budgets.clone(),
        alerts_destination: config.alerts.destination.clone(),
        cache: herald_actors::cache::CacheSettings {
            capacity: CACHE_CAPACITY,
            ttl: CACHE_TTL,
        },
        maintenance_interval: config.storage.maintenance_interval,
        block_after_invalid: config.ingest.block_after_invalid,
        block_window: BLOCK_WINDOW,
        block_for: config.ingest.block,
        dedupe_window: config.ingest.dedupe_window,
        request_timeout: REQUEST_TIMEOUT,
    }
}

/// A config destination as stored, before any run-time state.
fn destination_record(d: &config::DestinationConfig) -> DestinationRecord {
    let now = herald_actors::unix_ms(std::time::SystemTime::now());
    DestinationRecord {
        url: d.url.clone(),
        sources: match &d.sources {
            SourceFilter::Any => vec!["*".to_owned()],
            SourceFilter::Only(names) => names.clone(),
        },
        event_types: d.event_types.clone(),
        channel: d.channel.as_str().to_owned(),
        secret: encode_whsec(d.secret.expose()),
        previous_secrets: Vec::new(),
        config_secret_sha256: None,
        rate_limit_per_sec: d.rate_limit_per_sec.map(std::num::NonZeroU32::get),
        enabled: true,
        disabled_reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        from_config: true,
        circuit: herald_storage::CircuitRecord::default(),
        policy: herald_storage::DestinationPolicy {
            timeout_ms: d.policy.timeout.map(millis),
            max_attempts: d.policy.max_attempts,
            backoff_base_ms: d.policy.backoff_base.map(millis),
            backoff_max_ms: d.policy.backoff_max.map(millis),
            headers: d
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect(),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
