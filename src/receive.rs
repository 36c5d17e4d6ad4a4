//! `herald receive`: a demo receiver for trying herald out with nothing but its own binary.
//!
//! It listens on one address, prints one line per request (method, path, `webhook-id`,
//! whether the Standard Webhooks signature verifies, and the body) and answers a fixed status.
//! The signature is checked against `--secret`, or else against the secret of the config's
//! destination whose URL points at the listening address (the committed config's
//! `demo-receiver` at 127.0.0.1:9000), so a newcomer sees what a real receiver must check.
//! Not a production receiver: no TLS, no timestamp tolerance, no deduplication.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use herald::config::Config;
use herald_actors::verifier::schemes::{decode_whsec, sign_standard};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;

/// The largest body printed; the rest is counted, not shown.
const SHOWN_BYTES: usize = 2048;

#[derive(Debug)]
struct Receiver {
    /// Signing keys to verify against, with where each came from.
    keys: Vec<(Vec<u8>, String)>,
    status: StatusCode,
}

/// Serves until Ctrl-C. `secret` overrides the config's; `config` may be absent (no file).
pub async fn run(
    listen: SocketAddr,
    secret: Option<&str>,
    status: u16,
    config: Option<&Config>,
) -> ExitCode {
    let Ok(status) = StatusCode::from_u16(status) else {
        eprintln!("--status: {status} is not an HTTP status code");
        return ExitCode::from(2);
    };
    let keys = match secret {
        Some(secret) => match decode_whsec(secret) {
            Ok(key) => vec![(key, "--secret".to_owned())],
            Err(e) => {
                eprintln!("--secret: {e}");
                return ExitCode::from(2);
            }
        },
        None => config.map(|c| keys_for(c, listen)).unwrap_or_default(),
    };
    serve(listen, Arc::new(Receiver { keys, status })).await
}

/// The secrets of the config's destinations whose URL is on `listen`.
fn keys_for(config: &Config, listen: SocketAddr) -> Vec<(Vec<u8>, String)> {
    config
        .destinations
        .iter()
        .filter(|d| authority(&d.url).is_some_and(|a| a == listen.to_string()))
        .map(|d| {
            (
                d.secret.expose().to_vec(),
                format!("destination `{}`", d.name),
            )
        })
        .collect()
}

/// `127.0.0.1:9000` of `http://127.0.0.1:9000/hooks`.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

async fn serve(listen: SocketAddr, receiver: Arc<Receiver>) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("--listen {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match receiver.keys.as_slice() {
        [] => println!(
            "listening on http://{listen}; signatures not checked (no --secret, and no \
             destination in the config points here)"
        ),
        keys => {
            let from: Vec<&str> = keys.iter().map(|(_, from)| from.as_str()).collect();
            println!(
                "listening on http://{listen}; checking signatures with the secret of {}",
                from.join(", ")
            );
        }
    }
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        };
        let receiver = Arc::clone(&receiver);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let receiver = Arc::clone(&receiver);
                async move { Ok::<_, std::convert::Infallible>(receiver.handle(req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Receiver {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let id = header("webhook-id");
        let verdict = self.verify(
            id,
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
        );
        let shown = String::from_utf8_lossy(&body[..body.len().min(SHOWN_BYTES)]).into_owned();
        let more = body.len().saturating_sub(SHOWN_BYTES);
        let more = if more > 0 {
            format!(" (+{more} bytes)")
        } else {
            String::new()
        };
        println!(
            "{} {} webhook-id={} signature={verdict} -> {} | {shown}{more}",
            parts.method,
            parts.uri.path(),
            if id.is_empty() { "-" } else { id },
            self.status.as_u16(),
        );
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = self.status;
        resp
    }

    /// `valid`, `INVALID`, `missing` or `unchecked`.
    fn verify(&self, id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> &'static str {
        if self.keys.is_empty() {
            return "unchecked";
        }
        let Ok(timestamp) = timestamp.parse::<i64>() else {
            return "missing";
        };
        if id.is_empty() || signatures.is_empty() {
            return "missing";
        }
        // During a rotation herald signs with every live secret, space-separated: any may match.
        let valid = self.keys.iter().any(|(key, _)| {
            let expected = sign_standard(key, id, timestamp, body);
            signatures
                .split(' ')
                .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
        });
        if valid { "valid" } else { "INVALID" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_of_a_url() {
        assert_eq!(
            authority("http://127.0.0.1:9000/hooks"),
            Some("127.0.0.1:9000")
        );
        assert_eq!(authority("http://127.0.0.1:9000"), Some("127.0.0.1:9000"));
        assert_eq!(authority("https://example.com/x"), None);
    }
}
