//! The accept loop shared by both ports.
//!
//! hyper 1 ships no server loop, so this is it: a bounded number of connections (a permit is
//! taken *before* `accept`, so overload waits in the kernel's backlog instead of in memory),
//! HTTP/1.1 with keep-alive, a header-read timeout against slowloris, bounded header count and
//! size, and graceful shutdown: on the signal, stop accepting, let in-flight requests finish
//! within the grace period, then drop what remains.
//!
//! With TLS configured, each accepted connection does its handshake inside its own task (the
//! loop never waits on a client), bounded by the header-read timeout like the request head
//! that follows; the connection permit is held from before `accept` to the end, handshake
//! included. The acceptor's certificate can be swapped at any time (see [`crate::tls`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::response::Resp;
use crate::tls::ServerTls;

/// Resolves once `stop` turns true (or its sender is gone). The borrow guard of
/// `wait_for` is dropped here, inside, so callers' futures stay `Send`.
pub async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

pub type BoxFuture = Pin<Box<dyn Future<Output = Resp> + Send>>;

/// Turns a request and the peer's address into a response.
pub type Handler = Arc<dyn Fn(Request<Incoming>, SocketAddr) -> BoxFuture + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `listener` (over TLS when `tls` is set) until `shutdown` turns true, then drains
/// within the grace period.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
    tls: Option<ServerTls>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(100)
        // hyper checks its read buffer's limit only between reads, so one large burst could
        // overshoot it; this bounds the request head itself.
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    // Connection tasks, so that what outlives the grace period can be aborted.
    let mut connections = tokio::task::JoinSet::new();

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = stop_requested(&mut shutdown) => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(port = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop_requested(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let service = service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        // Reap finished tasks as we go, so the set holds only live connections.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            match tls {
                None => serve_connection(&builder, watcher, stream, service, peer).await,
                Some(tls) => {
                    let accepting = tls.acceptor().accept(stream);
                    match tokio::time::timeout(handshake_timeout, accepting).await {
                        Ok(Ok(stream)) => {
                            serve_connection(&builder, watcher, stream, service, peer).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            port = name,
            "grace period over; closing remaining connections"
        );
    }
    // Whatever is still running (a request whose body never finishes, say) is dropped now,
    // closing its connection, rather than left to its own deadline.
    connections.shutdown().await;
}

/// Serves one connection (plain or TLS) until it closes or the graceful shutdown ends it.
async fn serve_connection<I, S>(
    builder: &http1::Builder,
    watcher: Watcher,
    io: I,
    service: S,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Resp> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Errors here are clients misbehaving (resets, malformed requests, timeouts): hyper has
    // already answered what could be answered.
    if let Err(e) = watcher
        .watch(builder.serve_connection(TokioIo::new(io), service))
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The most bytes a request line plus headers may take.
const MAX_HEAD_BYTES: usize = 64 * 1024;
