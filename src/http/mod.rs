//! The HTTP edge: two ports, each a hyper accept loop over a router.
//!
//! - ingest (public): `POST /webhooks/{source}`, `GET /healthz`
//! - api (private): the authenticated `/v1` API, `/healthz`, `/readyz`
//!
//! Handlers translate between HTTP and [`herald_actors::Herald`]; no business rule lives here.

mod api;
mod audit;
pub mod auth;
mod body;
pub mod console;
mod destinations;
mod dlq;
mod ingest;
mod json_body;
mod messages;
mod monitoring;
mod preferences;
mod query;
pub mod response;
pub mod routes;
pub mod server;
mod subjects;
mod suppressions;
mod vitals;

use std::sync::Arc;
use std::time::Duration;

use herald_actors::Herald;

pub use auth::Tokens;

/// What the fuzz targets under `fuzz/` reach (feature `fuzzing`). Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use super::dlq::parse_time;
    pub use super::json_body::parse_request_bodies;
    pub use super::query::{MAX_LIMIT, Pagination, Query, segment};
    pub use super::response::rfc3339;

    /// What a loaded config becomes for the actors, as at startup.
    pub fn settings(config: &crate::config::Config) -> anyhow::Result<herald_actors::Settings> {
        crate::settings(config)
    }
}

/// What every handler can reach.
#[derive(Debug)]
pub struct App {
    pub herald: Herald,
    pub tokens: Tokens,
    pub max_body_bytes: usize,
    /// How long a client may take to send its body once the headers are in.
    pub body_timeout: Duration,
    /// The ingest port's address: the console sends its web vitals there.
    pub ingest_addr: std::net::SocketAddr,
}

pub fn ingest_handler(app: &Arc<App>) -> server::Handler {
    timed("ingest", app, |app, req, peer| {
        Box::pin(ingest::route(app, req, peer))
    })
}

pub fn api_handler(app: &Arc<App>) -> server::Handler {
    timed("api", app, |app, req, peer| {
        Box::pin(api::route(app, req, peer))
    })
}

/// Wraps a port's router with the perf layer: every request's latency is recorded under its
/// route template and status class.
fn timed(
    port: &'static str,
    app: &Arc<App>,
    route: fn(
        Arc<App>,
        hyper::Request<hyper::body::Incoming>,
        std::net::SocketAddr,
    ) -> server::BoxFuture,
) -> server::Handler {
    let app = Arc::clone(app);
    Arc::new(move |req, peer| {
        let app = Arc::clone(&app);
        let template = routes::template(req.method(), req.uri().path());
        Box::pin(async move {
            let started = std::time::Instant::now();
            let resp = route(Arc::clone(&app), req, peer).await;
            let took = started.elapsed();
            app.herald
                .request_served(port, template, resp.status().as_u16(), took);
            resp
        })
    })
}
