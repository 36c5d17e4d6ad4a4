//! The private API port's router: one arm per [`Route`] of the port.
//!
//! The route, its parameters, the 404 and the 405 come from the route table
//! ([`super::routes`]); so does the scope check, made here once, before any handler runs, from
//! [`Route::access`]. The `match` in [`dispatch`] has no wildcard: a route added to the table
//! without a handler does not compile.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::json;

use super::App;
use super::auth::Caller;
use super::query::Query;
use super::response::{ApiError, Resp, json};
use super::routes::{Access, Params, Route};
use super::{
    audit, console, destinations, dlq, messages, monitoring, openapi, preferences, subjects,
    suppressions,
};

pub async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    _peer: SocketAddr,
    route: Route,
    params: Params,
) -> Resp {
    handle(&app, req, route, params)
        .await
        .unwrap_or_else(ApiError::into_response)
}

/// What a handler gets: the caller (for routes that need a token), the path parameters, the
/// query, and the request's headers and body.
struct Call<'a> {
    app: &'a App,
    caller: Option<Caller>,
    params: Params,
    query: Query,
    headers: HeaderMap,
    body: Incoming,
    /// `GET` or `HEAD` for the console; every other route has one method.
    method: Method,
    /// The request path as sent, for the console.
    path: String,
}

async fn handle(
    app: &App,
    req: Request<Incoming>,
    route: Route,
    params: Params,
) -> Result<Resp, ApiError> {
    let caller = match route.access() {
        Access::Public => None,
        Access::Authenticated => Some(app.tokens.authenticate(req.headers())?),
        Access::Token(scope) => {
            let caller = app.tokens.authenticate(req.headers())?;
            caller.require(scope)?;
            Some(caller)
        }
    };
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let (parts, body) = req.into_parts();
    let call = Call {
        app,
        caller,
        params,
        query,
        method: parts.method,
        headers: parts.headers,
        body,
        path,
    };
    dispatch(route, call).await
}

#[allow(clippy::too_many_lines, reason = "one arm per route, flat on purpose")]
async fn dispatch(route: Route, call: Call<'_>) -> Result<Resp, ApiError> {
    let Call {
        app,
        caller,
        params: p,
        query,
        method,
        headers,
        body,
        path,
    } = call;
    // Every route that takes a caller needs a token, so it was authenticated above.
    let caller = || {
        caller.as_ref().ok_or_else(|| {
            tracing::error!(route = route.label(), "a public route asked for its caller");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })
    };
    match route {
        Route::Healthz => Ok(healthz()),
        Route::Readyz => Ok(readiness(app).await),
        Route::Metrics => monitoring::metrics(app).await,
        Route::OpenApi => Ok(openapi::serve()),
        // The console answers `/` and `/console` with a redirect to `/console/`, and its files
        // with their own security headers.
        Route::Root | Route::ConsoleAsset => {
            console::asset(&method, &path, &headers, app.ingest_addr.port())
                .ok_or_else(|| ApiError::not_found(format_args!("console file {path}")))
        }
        Route::WhoAmI => Ok(console::whoami(caller()?)),

        Route::ListMessages => messages::list(app, &query).await,
        Route::PublishMessage => messages::publish(app, &headers, body).await,
        Route::GetMessage => messages::get(app, p.get("id")).await,
        Route::ResendMessage => messages::resend(app, caller()?, p.get("id"), &headers, body).await,

        Route::ListDestinations => destinations::list(app).await,
        Route::CreateDestination => destinations::create(app, caller()?, &headers, body).await,
        Route::GetDestination => destinations::get(app, p.get("name")).await,
        Route::UpdateDestination => {
            destinations::patch(app, caller()?, p.get("name"), &headers, body).await
        }
        Route::DeleteDestination => destinations::delete(app, caller()?, p.get("name")).await,
        Route::RotateSecret => {
            destinations::rotate(app, caller()?, p.get("name"), &headers, body).await
        }

        Route::ListDeadLetters => dlq::list(app, &query).await,
        Route::RetryDeadLetters => dlq::bulk_retry(app, caller()?, &headers, body).await,
        Route::GetDeadLetter => dlq::get(app, p.get("id")).await,
        Route::DiscardDeadLetter => dlq::discard(app, caller()?, p.get("id")).await,
        Route::RetryDeadLetter => dlq::retry(app, caller()?, p.get("id")).await,

        Route::ListSuppressions => suppressions::list(app, &query).await,
        Route::CreateSuppression => suppressions::create(app, caller()?, &headers, body).await,
        Route::BulkSuppress => suppressions::bulk(app, caller()?, &headers, body).await,
        Route::DeleteSuppression => {
            let (recipient, channel) = (p.get("recipient"), p.get("channel"));
            suppressions::delete(app, caller()?, recipient, channel).await
        }
        Route::GetPreferences => preferences::get(app, p.get("recipient")).await,
        Route::PutPreferences => {
            preferences::put(app, caller()?, p.get("recipient"), &headers, body).await
        }
        Route::ResetPreferences => preferences::reset(app, caller()?, p.get("recipient")).await,
        Route::OptOut => {
            preferences::opt(app, caller()?, p.get("recipient"), false, &headers, body).await
        }
        Route::OptIn => {
            preferences::opt(app, caller()?, p.get("recipient"), true, &headers, body).await
        }

        Route::ExportSubject => subjects::export(app, p.get("recipient")).await,
        Route::EraseSubject => subjects::erase(app, caller()?, p.get("recipient")).await,
        Route::ListAudit => audit::list(app, &query).await,

        Route::CacheStats => monitoring::cache_stats(app).await,
        Route::InvalidateCache => monitoring::cache_invalidate(app, &headers, body).await,
        Route::Perf => monitoring::perf(app).await,
        Route::ListAlerts => monitoring::alerts(app, &query).await,
        Route::Storage => monitoring::storage(app).await,
        Route::RunMaintenance => monitoring::maintenance(app).await,

        // The ingest port's own routes: `find` never yields them for this port.
        Route::Webhook | Route::Vitals | Route::VitalsPreflight => {
            Err(ApiError::not_found(format_args!("route {path}")))
        }
    }
}

/// `GET /healthz`, on both ports.
pub(super) fn healthz() -> Resp {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

async fn readiness(app: &App) -> Resp {
    if app.herald.store().is_ready().await {
        json(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "storage is not ready",
        )
        .into_response()
    }
}
