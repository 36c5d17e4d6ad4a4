//! The HTTP edge: two ports, each a hyper accept loop over a router.
//!
//! - ingest (public): `POST /webhooks/{source}`, `POST /vitals`, `GET /healthz`
//! - api (private): the authenticated `/v1` API, probes, `/metrics`, `/openapi.json`, the console
//!
//! Every route of both is in one table, [`routes::Route`]: the routers, the scope check, the
//! latency labels and the OpenAPI document ([`openapi`]) all read it.
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
pub mod openapi;
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
use response::ApiError;
use routes::{Found, Params, Port, Route};

/// What the fuzz targets under `fuzz/` reach (feature `fuzzing`). Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use super::dlq::parse_time;
    pub use super::json_body::parse_request_bodies;
    pub use super::query::{MAX_LIMIT, Pagination, Query, segment};
    pub use super::response::rfc3339;

    /// What a loaded config becomes for the actors, as at startup (it cannot fail).
    pub fn settings(config: &crate::config::Config) -> herald_actors::Settings {
        crate::settings(config, Vec::new())
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
    port_handler(Port::Ingest, app, |app, req, peer, route, params| {
        Box::pin(ingest::route(app, req, peer, route, params))
    })
}

pub fn api_handler(app: &Arc<App>) -> server::Handler {
    port_handler(Port::Api, app, |app, req, peer, route, params| {
        Box::pin(api::route(app, req, peer, route, params))
    })
}

/// A port's router: gets the request once the route table has matched it.
type Router = fn(
    Arc<App>,
    hyper::Request<hyper::body::Incoming>,
    std::net::SocketAddr,
    Route,
    Params,
) -> server::BoxFuture;

/// A port: the request is matched against the route table once, answered 404 or 405 here when
/// it names no route, else handed to the port's router; its latency is recorded under the
/// route's label and status class.
fn port_handler(port: Port, app: &Arc<App>, router: Router) -> server::Handler {
    let app = Arc::clone(app);
    Arc::new(move |req, peer| {
        let app = Arc::clone(&app);
        let found = routes::find(port, req.method(), req.uri().path());
        let label = found.label();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let resp = match found {
                Found::Route(route, params) => {
                    router(Arc::clone(&app), req, peer, route, params).await
                }
                Found::WrongMethod(allowed) => method_not_allowed(&allowed),
                Found::NoRoute => {
                    ApiError::not_found(format_args!("route {}", req.uri().path())).into_response()
                }
            };
            let took = started.elapsed();
            app.herald
                .request_served(port.name(), label.to_owned(), resp.status().as_u16(), took);
            resp
        })
    })
}

/// 405 with the `Allow` header RFC 9110 asks for.
fn method_not_allowed(allowed: &[http::Method]) -> response::Resp {
    let mut resp = ApiError::method_not_allowed().into_response();
    let list = allowed
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = http::HeaderValue::from_str(&list) {
        resp.headers_mut().insert(http::header::ALLOW, value);
    }
    resp
}
