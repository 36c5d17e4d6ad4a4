//! The `herald` binary's library half: configuration and the HTTP edge, plus [`start`], the
//! testable entry point that end-to-end tests and `main` share.
//!
//! `start` opens the store, starts the actors, binds both ports and serves; the returned
//! [`Running`] handle stops it all in order: stop accepting, let in-flight requests finish
//! within `server.shutdown_grace_ms`, stop the actors, commit and close the store.

pub mod config;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use herald_actors::dispatcher::DeliverySettings;
use herald_actors::dispatcher::breaker::BreakerPolicy;
use herald_actors::dispatcher::retry::Backoff;
use herald_actors::verifier::schemes::{Encoding, HmacHeaders, Scheme, SourceRule, encode_whsec};
use herald_actors::{Herald, Route, Settings, SourceSettings};
use herald_storage::{DestinationRecord, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::{Config, SchemeConfig, SourceFilter};
use http::server::{self, Limits};

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
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Shuts down gracefully and waits until the store is closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("the server task panicked")?
    }
}

/// Starts herald on `config` and returns once both ports are listening.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(herald_actors::metrics::Metrics::new());
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
    let path = config.storage.path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&path, options))
        .await
        .context("opening storage")?
        .with_context(|| format!("opening storage at {}", config.storage.path.display()))?;
    let herald = Herald::start(settings(&config)?, store.clone(), metrics, perf).await?;

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
        app, store, ingest, api, limits, stopping,
    ));
    Ok(Running {
        ingest_addr,
        api_addr,
        stop,
        task,
    })
}

/// Runs herald until `signal` resolves, then shuts down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let Running { stop, mut task, .. } = start(config).await?;
    let finished = tokio::select! {
        () = signal => {
            let _ = stop.send(true);
            task.await
        }
        // The server ended without being asked: the actors exhausted their restart budget.
        finished = &mut task => finished,
    };
    finished.context("the server task panicked")?
}

async fn serve_until_stopped(
    app: Arc<http::App>,
    store: Store,
    ingest: TcpListener,
    api: TcpListener,
    limits: Limits,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ingest = tokio::spawn(server::serve(
        "ingest",
        ingest,
        http::ingest_handler(&app),
        limits,
        stopping.clone(),
    ));
    let api = tokio::spawn(server::serve(
        "api",
        api,
        http::api_handler(&app),
        limits,
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

/// The actors' view of the configuration.
fn settings(config: &Config) -> anyhow::Result<Settings> {
    let sources = config
        .sources
        .iter()
        .map(|s| {
            // The config holds keys already decoded for the source's scheme.
            let keys = s.secrets.iter().map(|k| k.expose().to_vec()).collect();
            let rule = SourceRule::from_keys(scheme(&s.scheme), keys, s.tolerance.as_secs())
                .with_context(|| format!("sources.{}: secret", s.name))?;
            Ok(SourceSettings {
                name: s.name.clone(),
                rule,
                rate_limit_per_sec: s.rate_limit_per_sec,
                suppress_on: s
                    .suppress_on
                    .iter()
                    .map(|(event_type, reason)| (event_type.clone(), reason.as_str().to_owned()))
                    .collect(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
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
    };
    let budgets = config
        .budgets
        .iter()
        .map(|b| {
            // Route templates are recorded as `/v1/messages/:id`; accept `{id}` in the config too.
            let metric = b.metric.to_string().replace('{', ":").replace('}', "");
            herald_actors::perf::budgets::Budget::parse(&metric, b.p75_max)
                .map_err(|e| anyhow::anyhow!("budgets: {e:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Settings {
        sources,
        routes,
        delivery,
        budgets: if budgets.is_empty() {
            herald_actors::perf::budgets::default_budgets()
        } else {
            budgets
        },
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
        verifier_workers: std::thread::available_parallelism().map_or(2, usize::from),
        request_timeout: REQUEST_TIMEOUT,
    })
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
        previous_secret: None,
        rate_limit_per_sec: d.rate_limit_per_sec.map(std::num::NonZeroU32::get),
        enabled: true,
        disabled_reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        from_config: true,
        circuit: herald_storage::CircuitRecord::default(),
    }
}

fn scheme(config: &SchemeConfig) -> Scheme {
    match config {
        SchemeConfig::StandardWebhooks => Scheme::StandardWebhooks,
        SchemeConfig::Stripe => Scheme::Stripe,
        SchemeConfig::Github => Scheme::Github,
        SchemeConfig::Shopify => Scheme::Shopify,
        SchemeConfig::Slack => Scheme::Slack,
        SchemeConfig::HmacSha256 {
            id_header,
            timestamp_header,
            signature_header,
            encoding,
            prefix,
        } => Scheme::HmacSha256(HmacHeaders {
            id_header: id_header.clone(),
            timestamp_header: timestamp_header.clone(),
            signature_header: signature_header.clone(),
            encoding: match encoding {
                config::Encoding::Hex => Encoding::Hex,
                config::Encoding::Base64 => Encoding::Base64,
            },
            prefix: prefix.clone(),
        }),
    }
}
