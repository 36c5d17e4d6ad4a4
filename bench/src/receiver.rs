//! The delivery receiver for `deliver`: a hyper HTTP/1.1 server standing in for a customer's
//! endpoint. It answers `200` to every request as soon as the body is read, and records, per
//! `webhook-id`, the instant the first copy arrived (taken when the request's head is parsed).
//!
//! Herald delivers at least once, so the same id may arrive more than once: every copy after the
//! first is counted as a duplicate. Each copy's signature is checked against the destination
//! secret (`v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`, any of the space-separated
//! signatures may match) and its body length against the size the bench sent; mismatches are
//! counted, not refused, so a signing bug shows up as a number rather than as endless retries.
//!
//! The bench registers the ids it is waiting for ([`Receiver::expect`]); they leave the pending
//! set as their first copy arrives, so "all delivered" is a length check, not a scan.
//!
//! Like the bare server, it runs on a runtime of its own on a dedicated thread, so it competes
//! for the cores the way a separate process would.
//!
//! With [`Receiver::start_tls`] it serves https instead, with a certificate for `127.0.0.1`
//! signed by a CA made at start ([`TestPki`]); herald trusts that CA through
//! `delivery.ca_file`, as an operator with a private CA would.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::sign::Signer;

/// What the receiver has seen so far.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// First arrival of each `webhook-id`.
    pub first: HashMap<String, Instant>,
    /// Registered ids whose first copy has not arrived yet.
    pending: HashSet<String>,
    /// Every request, duplicates included.
    pub requests: u64,
    /// Copies of an id that had already arrived.
    pub duplicates: u64,
    /// Requests without a usable `webhook-id` header.
    pub missing_id: u64,
    /// Requests whose `webhook-signature` did not match the destination secret.
    pub bad_signature: u64,
    /// Requests whose body was not the size the bench sent, or could not be read.
    pub bad_body: u64,
}

impl Arrivals {
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Up to `n` of the ids still pending.
    pub fn some_pending(&self, n: usize) -> Vec<String> {
        self.pending.iter().take(n).cloned().collect()
    }
}

/// State shared by the handlers and the bench.
#[derive(Debug)]
struct Shared {
    arrivals: Mutex<Arrivals>,
    verifier: Signer,
    body_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Arrivals> {
        // A handler cannot panic while holding the lock (it only does map operations), but a
        // poisoned lock still holds consistent counts: use them.
        self.arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn header<'a>(req: &'a hyper::http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Records one delivery and answers `200` (`400` only if the body could not be read).
async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let Ok(body) = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
    else {
        let mut a = shared.lock();
        a.requests += 1;
        a.bad_body += 1;
        drop(a);
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    };
    let id = header(&parts, "webhook-id").filter(|id| !id.is_empty());
    let signed_ok = match (id, header(&parts, "webhook-timestamp")) {
        (Some(id), Some(ts)) => {
            let expected = shared.verifier.sign(id, ts, &body);
            header(&parts, "webhook-signature")
                .is_some_and(|sigs| sigs.split(' ').any(|s| s == expected))
        }
        _ => false,
    };
    let body_ok = body.len() == shared.body_bytes;

    let mut a = shared.lock();
    a.requests += 1;
    if !signed_ok {
        a.bad_signature += 1;
    }
    if !body_ok {
        a.bad_body += 1;
    }
    match id {
        None => a.missing_id += 1,
        Some(id) if a.first.contains_key(id) => a.duplicates += 1,
        Some(id) => {
            a.first.insert(id.to_owned(), at);
            a.pending.remove(id);
        }
    }
    drop(a);
    Ok(Response::new(Full::new(Bytes::new())))
}

/// Accepts connections until `stopped` fires; open connections die with the runtime.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stopped: oneshot::Receiver<()>,
) {
    tokio::pin!(stopped);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("receiver: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, Arc::clone(&shared)));
            let builder = http1::Builder::new();
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Err(e) => eprintln!("receiver: TLS handshake failed: {e}"),
                },
            }
        });
    }
}

/// A CA made at start and a server certificate for `127.0.0.1` it signed.
pub struct TestPki {
    ca_pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    pub fn new() -> Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &*ca)?;
        Ok(Self {
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            leaf_key: key.serialize_der(),
        })
    }

    /// The CA certificate, PEM: what herald's `delivery.ca_file` holds.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// rustls on ring, as herald uses it; ALPN `http/1.1`.
    fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.clone()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![self.leaf.clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The receiver running on its own thread and runtime.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds `listen` (loopback only) and serves on `workers` runtime threads. Deliveries are
    /// checked against `verifier` (the destination secret) and `body_bytes`.
    pub fn start(
        listen: SocketAddr,
        workers: usize,
        verifier: Signer,
        body_bytes: usize,
    ) -> Result<Self> {
        Self::spawn(listen, workers, verifier, body_bytes, None)
    }

    /// [`Receiver::start`], serving https with `pki`'s certificate.
    pub fn start_tls(
        listen: SocketAddr,
        workers: usize,
        verifier: Signer,
        body_bytes: usize,
        pki: &TestPki,
    ) -> Result<Self> {
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        Self::spawn(listen, workers, verifier, body_bytes, Some(acceptor))
    }

    fn spawn(
        listen: SocketAddr,
        workers: usize,
        verifier: Signer,
        body_bytes: usize,
        tls: Option<TlsAcceptor>,
    ) -> Result<Self> {
        if !listen.ip().is_loopback() {
            return Err(anyhow!("refusing to listen on non-loopback {listen}"));
        }
        let std_listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("binding the receiver to {listen}"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Arrivals::default()),
            verifier,
            body_bytes,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        // Built before the thread starts so a failure is reported here, not lost in the thread.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("receiver-worker")
            .enable_all()
            .build()
            .context("building the receiver runtime")?;
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => serve(listener, serving, tls, stopped).await,
                        Err(e) => eprintln!("receiver: {e}"),
                    }
                });
                // The runtime (and every open connection) is dropped here, on this thread.
            })
            .context("spawning the receiver thread")?;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers ids to wait for; those that have arrived already are skipped. Returns how
    /// many are pending after the call.
    pub fn expect<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let mut a = self.shared.lock();
        for id in ids {
            if !a.first.contains_key(id) {
                a.pending.insert(id.to_owned());
            }
        }
        a.pending.len()
    }

    /// Runs `f` on the arrivals under the lock (keep it short: handlers wait meanwhile).
    pub fn with<T>(&self, f: impl FnOnce(&Arrivals) -> T) -> T {
        f(&self.shared.lock())
    }

    /// Stops accepting, drops open connections and joins the thread.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("joining the receiver thread")?
            .map_err(|_| anyhow!("the receiver thread panicked"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::BENCH_SECRET;
    use http_body_util::Full;
    use hyper::client::conn::http1 as client;
    use tokio::net::TcpStream;

    async fn post(addr: SocketAddr, id: &str, signer: &Signer, len: usize) -> Result<StatusCode> {
        let hook = signer.webhook(id.to_owned(), len)?;
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) = client::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::post("/hooks")
            .header("host", addr.to_string())
            .header("webhook-id", hook.id)
            .header("webhook-timestamp", hook.timestamp)
            .header("webhook-signature", format!("v1,bogus {}", hook.signature))
            .body(Full::new(hook.body))?;
        Ok(sender.send_request(req).await?.status())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_first_arrivals_duplicates_and_pending() -> Result<()> {
        let signer = Signer::from_secret(BENCH_SECRET)?;
        let rx = Receiver::start("127.0.0.1:0".parse()?, 1, signer.clone(), 128)?;
        assert_eq!(
            post(rx.addr(), "msg_a", &signer, 128).await?,
            StatusCode::OK
        );
        assert_eq!(rx.expect(["msg_a", "msg_b", "msg_c"]), 2);
        assert_eq!(
            post(rx.addr(), "msg_b", &signer, 128).await?,
            StatusCode::OK
        );
        assert_eq!(
            post(rx.addr(), "msg_a", &signer, 128).await?,
            StatusCode::OK
        );
        let wrong = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        assert_eq!(post(rx.addr(), "msg_d", &wrong, 100).await?, StatusCode::OK);
        rx.with(|a| {
            assert_eq!(a.requests, 4);
            assert_eq!(a.first.len(), 3);
            assert_eq!(a.duplicates, 1);
            assert_eq!(a.pending(), 1);
            assert_eq!(a.some_pending(5), vec!["msg_c".to_owned()]);
            assert_eq!(a.bad_signature, 1);
            assert_eq!(a.bad_body, 1);
            assert_eq!(a.missing_id, 0);
        });
        rx.stop().await
    }
}
