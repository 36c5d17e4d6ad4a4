//! Operators' routes: `/metrics` (Prometheus text format, unauthenticated like the probes),
//! perf, alerts, the cache, storage.

use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::json_body;
use super::query::Query;
use super::response::{ApiError, Resp, json, rfc3339, with_body};

/// The Prometheus exposition: everything recorded as it happened, plus what is read now
/// (queue and DLQ depth). Every series is labelled with `node`, `server.node_name`.
pub async fn metrics(app: &App) -> Result<Resp, ApiError> {
    let store = app.herald.store();
    let metrics = &app.herald.core().metrics;
    // The recorded metrics' prefix and `node` label, for what is read now too.
    let mut scrape = metrics.scrape_registry();

    let queue = prometheus_client::metrics::family::Family::<
        herald_actors::metrics::DestinationLabels,
        Gauge,
    >::default();
    for (name, _) in store.destinations().await? {
        let depth = store.queued(name.clone()).await?;
        queue
            .get_or_create(&herald_actors::metrics::DestinationLabels { destination: name })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    scrape.register("queue_depth", "Deliveries waiting, per destination", queue);

    let dlq = Gauge::<i64>::default();
    // The table's entry count, from its B-tree header: no scan.
    let dead = store.stats().await?.entries("dead_letters").unwrap_or(0);
    dlq.set(i64::try_from(dead).unwrap_or(i64::MAX));
    scrape.register("dlq_depth", "Dead deliveries in the DLQ", dlq);

    let text = metrics.encode(&scrape).map_err(|e| {
        tracing::error!(error = %e, "encoding metrics");
        ApiError::unavailable()
    })?;
    Ok(with_body(
        StatusCode::OK,
        text,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    ))
}

/// `GET /v1/perf`: route latencies, vitals p75 per page and metric, budgets, storage timings.
pub async fn perf(app: &App) -> Result<Resp, ApiError> {
    let report = app.herald.perf_report().await?;
    Ok(json(StatusCode::OK, &report))
}

/// `GET /v1/alerts[?state=active]`.
pub async fn alerts(app: &App, query: &Query) -> Result<Resp, ApiError> {
    let active_only = match query.get("state") {
        None => false,
        Some("active") => true,
        Some(_) => return Err(ApiError::invalid("state", "the only filter is `active`")),
    };
    let items: Vec<Value> = app
        .herald
        .alerts(active_only)
        .await?
        .iter()
        .map(|a| {
            json!({
                "kind": a.kind.as_str(),
                "severity": a.severity.as_str(),
                "subject": a.subject,
                "started_at": rfc3339(a.started_at_ms),
                "resolved_at": a.resolved_at_ms.map(rfc3339),
                "detail": a.detail,
                "node": a.node,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &json!({"items": items, "next": null})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Invalidate {
    pattern: String,
}

/// `GET /v1/cache/stats`.
pub async fn cache_stats(app: &App) -> Result<Resp, ApiError> {
    let cache = app
        .herald
        .core()
        .cache()
        .ok_or_else(ApiError::unavailable)?;
    let stats = herald_actors::cache::stats(&cache, CACHE_WAIT)
        .await
        .map_err(|_| ApiError::unavailable())?;
    Ok(json(StatusCode::OK, &stats))
}

/// `POST /v1/cache/invalidate {pattern}`: a glob over cache keys, `*` for all.
pub async fn cache_invalidate(
    app: &App,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let req: Invalidate = json_body::read(app, headers, body).await?;
    let removed = app.herald.admin().invalidate_cache(&req.pattern).await?;
    Ok(json(
        StatusCode::OK,
        &json!({"pattern": req.pattern, "invalidated": removed}),
    ))
}

/// `GET /v1/storage`: tables, entry counts, file size, index health, commit timings.
pub async fn storage(app: &App) -> Result<Resp, ApiError> {
    let stats = app.herald.store().stats().await?;
    // The last maintenance run's findings: verifying on the request path would scan every
    // index on each call. `POST /v1/storage/maintenance` runs one now.
    let last = app.herald.core().last_maintenance();
    let timings = app.herald.perf_report().await.ok().map(|r| r.storage);
    Ok(json(
        StatusCode::OK,
        &json!({
            "stats": stats,
            "indexes": last.as_ref().map(|r| &r.indexes),
            "last_maintenance": last.as_deref(),
            "commits": timings,
        }),
    ))
}

/// `POST /v1/storage/maintenance`: verify every secondary index, rebuild what is wrong.
pub async fn maintenance(app: &App) -> Result<Resp, ApiError> {
    let report = app.herald.core().maintenance().await?;
    Ok(json(StatusCode::OK, &report))
}

/// How long an operator's cache call may wait.
const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
