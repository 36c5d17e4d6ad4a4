//! The ceiling: a bare hyper HTTP/1.1 server that reads each request body in full and answers
//! `202 {"id":"x","status":"accepted"}`, with no verification and no storage.
//!
//! Herald's throughput is reported as a fraction of this server's, measured on the same machine
//! in the same run with the same load, so the ratio says what verification, durable commit and
//! herald's own plumbing cost on top of the HTTP stack both of them share.
//!
//! [`BareServer::start`] runs it in-process on a runtime of its own (its own worker threads, as a
//! separate process would have), so the load generator competes with it for the cores exactly as
//! it competes with a herald child process.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ACCEPTED_BODY: &[u8] = br#"{"id":"x","status":"accepted"}"#;

/// Answers one request: drain the body, then 202 (400 if the body could not be read).
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.into_body().collect().await {
        Ok(_) => (StatusCode::ACCEPTED, Bytes::from_static(ACCEPTED_BODY)),
        Err(_) => (StatusCode::BAD_REQUEST, Bytes::new()),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Accepts connections on `listener` and serves each on its own task until `shutdown` resolves.
///
/// Connections still open at shutdown are dropped with the runtime that runs them.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Transient accept errors (e.g. EMFILE) must not end the server.
                Err(e) => {
                    eprintln!("bare: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Latency matters more than packet count for a 1 KiB request/response ping-pong.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // A client hanging up mid-request is not the server's problem; ignore the error.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

/// The bare server running on a dedicated thread with its own multi-threaded runtime.
#[derive(Debug)]
pub struct BareServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl BareServer {
    /// Binds `listen` and starts serving on `workers` runtime worker threads.
    pub fn start(listen: SocketAddr, workers: usize) -> Result<Self> {
        let std_listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("binding bare server to {listen}"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bare-server".into())
            .spawn(move || -> Result<()> {
                // Built and dropped on this thread: a runtime cannot be dropped from async code.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers.max(1))
                    .thread_name("bare-worker")
                    .enable_all()
                    .build()
                    .context("building the bare server runtime")?;
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener)?;
                    serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            })
            .context("spawning the bare server thread")?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops open connections and joins the server thread.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("joining the bare server thread")?
            .map_err(|_| anyhow!("the bare server thread panicked"))?
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        // If `stop` was never called, at least tell the thread to finish; don't block on it.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
