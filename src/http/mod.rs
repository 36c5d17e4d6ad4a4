//! The HTTP edge: two ports, each a hyper accept loop over a router.
//!
//! - ingest (public): `POST /webhooks/{source}`, `GET /healthz`
//! - api (private): the authenticated `/v1` API, `/healthz`, `/readyz`
//!
//! Handlers translate between HTTP and [`herald_actors::Herald`]; no business rule lives here.

mod api;
pub mod auth;
mod body;
mod destinations;
mod dlq;
mod ingest;
mod json_body;
mod messages;
mod query;
pub mod response;
pub mod server;
mod subjects;

use std::sync::Arc;
use std::time::Duration;

use herald_actors::Herald;

pub use auth::Tokens;

/// What every handler can reach.
#[derive(Debug)]
pub struct App {
    pub herald: Herald,
    pub tokens: Tokens,
    pub max_body_bytes: usize,
    /// How long a client may take to send its body once the headers are in.
    pub body_timeout: Duration,
}

pub fn ingest_handler(app: &Arc<App>) -> server::Handler {
    let app = Arc::clone(app);
    Arc::new(move |req, peer| Box::pin(ingest::route(Arc::clone(&app), req, peer)))
}

pub fn api_handler(app: &Arc<App>) -> server::Handler {
    let app = Arc::clone(app);
    Arc::new(move |req, peer| Box::pin(api::route(Arc::clone(&app), req, peer)))
}
