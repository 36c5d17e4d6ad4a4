//! A real HTTP receiver on 127.0.0.1 that records every request and answers from a script;
//! over TLS with [`Receiver::start_tls`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// Whether `webhook-signature` holds a valid Standard Webhooks signature of this request
    /// under `secret` (`whsec_…`), checked the way a receiver does, independently of herald.
    pub fn signed_with(&self, secret: &str) -> bool {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(id), Some(ts), Some(signatures)) = (
            header("webhook-id"),
            header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
            header("webhook-signature"),
        ) else {
            return false;
        };
        let expected = super::std_headers_with(secret, id, ts, &self.body)[2]
            .1
            .clone();
        signatures.split(' ').any(|sig| sig == expected)
    }
}

/// An answer: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'static str,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: "",
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

#[derive(Default)]
struct Script {
    /// Answers to use in order; when empty, `default`.
    queue: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    /// `http`, or `https` when serving TLS.
    scheme: &'static str,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver that answers 200 unless scripted otherwise.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on a given address (to come back on the same port after a stop).
    pub async fn start_on(addr: &str) -> Self {
        Self::spawn(addr, None).await
    }

    /// Starts an https receiver presenting `config`'s certificate. Handshakes that fail
    /// (herald refusing the certificate) are not requests and are not recorded.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::spawn("127.0.0.1:0", Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn spawn(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Mutex<Script>> = Arc::default();
        let (rec, scr) = (received.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rec, scr, tls) = (rec.clone(), scr.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (rec, scr) = (rec.clone(), scr.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                                .unwrap_or_default();
                            rec.lock().unwrap().push(Received {
                                at: Instant::now(),
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                body,
                            });
                            let reply = {
                                let mut s = scr.lock().unwrap();
                                s.queue.pop_front().or_else(|| s.default.clone())
                            }
                            .unwrap_or_else(|| Reply::status(200));
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(reply.body.as_bytes())));
                            *resp.status_mut() = http::StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in reply.headers {
                                resp.headers_mut().insert(k, v.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let builder = http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            scheme,
            received,
            script,
            task: Arc::new(task),
        }
    }

    /// The URL of `path` on this receiver, by address.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// The URL of `path` under a host name (which resolves to 127.0.0.1), for certificates
    /// issued to names.
    pub fn url_named(&self, host: &str, path: &str) -> String {
        format!("{}://{host}:{}{path}", self.scheme, self.addr.port())
    }

    /// Answer these, in order, before falling back to the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().queue.extend(replies);
    }

    /// The answer once the script is used up (200 if never set).
    pub fn default_reply(&self, reply: Reply) {
        self.script.lock().unwrap().default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {n} requests in {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops accepting (existing connections end with the task).
    pub fn stop(&self) {
        self.task.abort();
    }
}
