//! TLS for `https` destinations: the client configuration, the handshake on top of a guarded
//! TCP stream, and failures told in plain words.
//!
//! # Design
//!
//! - **Trust**: Mozilla's roots (`webpki-roots`, compiled in, so the result does not depend on
//!   the host's CA bundle) plus the operator's extra roots from `delivery.ca_file`, for private
//!   CAs. Certificate and host-name verification are always on; there is deliberately no switch
//!   that turns them off.
//! - **Crypto**: rustls with the *ring* provider, chosen explicitly when the config is built
//!   (never a process-global default, so nothing else in the process can change it), TLS 1.2
//!   and 1.3.
//! - **Layering**: [`handshake`] runs on a stream the SSRF guard already connected, so every
//!   resolved address is checked before any byte of TLS is sent. SNI is the URL's host (an IP
//!   literal sends no SNI and must be in the certificate's IP SANs); ALPN offers `http/1.1`
//!   only, which is what the client speaks.
//! - **Failures** are a [`TlsFailure`] whose text says what went wrong (unknown issuer,
//!   expired, wrong name, handshake timeout…); it becomes the attempt's `error` as is, so it
//!   carries no inner error source for the outbound layer to dig past.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Builds the client configuration: Mozilla's roots plus `extra_roots`, the ring provider,
/// ALPN `http/1.1`. Fails only on an extra root that is not a usable CA certificate.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root.clone())?;
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a handshake may take: half the connection budget, so that a receiver that accepts
/// TCP but stalls the handshake is reported as such, not as a bare attempt timeout.
pub fn handshake_budget(connect_timeout: Duration) -> Duration {
    connect_timeout / 2
}

/// Runs the TLS handshake for `host` over an already guarded TCP connection.
pub async fn handshake(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
    budget: Duration,
) -> Result<TlsStream<TcpStream>, TlsFailure> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsFailure {
        host: host.to_owned(),
        kind: Kind::BadName,
    })?;
    let connecting = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(budget, connecting).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(TlsFailure {
            host: host.to_owned(),
            kind: Kind::from_io(&e),
        }),
        Err(_) => Err(TlsFailure {
            host: host.to_owned(),
            kind: Kind::Timeout(budget),
        }),
    }
}

/// Why a TLS connection to a destination failed, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS: {}", Described(self))]
pub struct TlsFailure {
    host: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    UnknownIssuer,
    /// Seconds since the certificate expired, when rustls says.
    Expired(Option<u64>),
    NotValidYet,
    /// The names the certificate is valid for, when rustls says.
    WrongName(Vec<String>),
    Revoked,
    BadSignature,
    NotForServers,
    OtherCertificate(String),
    /// The receiver sent a fatal alert (it refused our hello, or our protocol versions).
    Alert(String),
    /// Anything else: the peer closed or reset the connection, spoke something other than
    /// TLS, or offered nothing we accept.
    Failed(String),
    Timeout(Duration),
    BadName,
}

impl Kind {
    fn from_io(e: &io::Error) -> Self {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(cert)) => Self::from_certificate(cert),
            Some(rustls::Error::AlertReceived(alert)) => Self::Alert(format!("{alert:?}")),
            Some(other) => Self::Failed(other.to_string()),
            None if e.kind() == io::ErrorKind::UnexpectedEof => {
                Self::Failed("the receiver closed the connection".to_owned())
            }
            None => Self::Failed(e.to_string()),
        }
    }

    fn from_certificate(cert: &CertificateError) -> Self {
        match cert {
            CertificateError::UnknownIssuer => Self::UnknownIssuer,
            CertificateError::Expired => Self::Expired(None),
            CertificateError::ExpiredContext { time, not_after } => {
                Self::Expired(Some(time.as_secs().saturating_sub(not_after.as_secs())))
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotValidYet
            }
            CertificateError::NotValidForName => Self::WrongName(Vec::new()),
            CertificateError::NotValidForNameContext { presented, .. } => {
                Self::WrongName(presented.iter().map(|name| bare_name(name)).collect())
            }
            CertificateError::Revoked => Self::Revoked,
            CertificateError::BadSignature => Self::BadSignature,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Self::NotForServers
            }
            other => Self::OtherCertificate(other.to_string()),
        }
    }
}

/// `DnsName("a.example")` → `a.example`, `IpAddress(192.0.2.1)` → `192.0.2.1`: webpki
/// reports presented names in their debug form.
fn bare_name(presented: &str) -> String {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
        .to_owned()
}

struct Described<'a>(&'a TlsFailure);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.0.host;
        match &self.0.kind {
            Kind::UnknownIssuer => write!(
                f,
                "the certificate of {host} is not signed by a trusted CA (unknown issuer; \
                 a private CA belongs in delivery.ca_file)"
            ),
            Kind::Expired(Some(ago)) => write!(
                f,
                "the certificate of {host} has expired ({} ago)",
                Ago(*ago)
            ),
            Kind::Expired(None) => write!(f, "the certificate of {host} has expired"),
            Kind::NotValidYet => write!(f, "the certificate of {host} is not valid yet"),
            Kind::WrongName(names) if names.is_empty() => {
                write!(f, "the certificate is not valid for the host name {host}")
            }
            Kind::WrongName(names) => write!(
                f,
                "the certificate is not valid for the host name {host} (it is for {})",
                names.join(", ")
            ),
            Kind::Revoked => write!(f, "the certificate of {host} is revoked"),
            Kind::BadSignature => write!(f, "the certificate of {host} has a bad signature"),
            Kind::NotForServers => write!(
                f,
                "the certificate of {host} is not meant for server authentication"
            ),
            Kind::OtherCertificate(why) => {
                write!(f, "the certificate of {host} was refused: {why}")
            }
            Kind::Alert(alert) => write!(
                f,
                "{host} aborted the handshake (alert: {alert}); it may not support TLS 1.2+ \
                 or need another server name"
            ),
            Kind::Failed(why) => write!(f, "handshake with {host} failed: {why}"),
            Kind::Timeout(after) => write!(
                f,
                "handshake with {host} timed out after {} ms",
                after.as_millis()
            ),
            Kind::BadName => write!(f, "{host} is not a valid TLS server name"),
        }
    }
}

/// A duration in seconds, in the largest whole unit that fits.
struct Ago(u64);

impl fmt::Display for Ago {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match self.0 {
            s if s >= 2 * 86_400 => (s / 86_400, "days"),
            s if s >= 2 * 3_600 => (s / 3_600, "hours"),
            s if s >= 2 * 60 => (s / 60, "minutes"),
            s => (s, "seconds"),
        };
        write!(f, "{n} {unit}")
    }
}

/// A connection to a destination: plain TCP for `http`, TLS over TCP for `https`.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.tcp().connected()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::dispatcher::outbound::{self, AttemptResult, Outbound};

    #[test]
    fn presented_names_lose_their_debug_wrapping() {
        assert_eq!(bare_name(r#"DnsName("a.example")"#), "a.example");
        assert_eq!(bare_name("IpAddress(192.0.2.1)"), "192.0.2.1");
        assert_eq!(bare_name("plain"), "plain");
    }

    #[test]
    fn ago_picks_a_readable_unit() {
        assert_eq!(Ago(5).to_string(), "5 seconds");
        assert_eq!(Ago(600).to_string(), "10 minutes");
        assert_eq!(Ago(3 * 3600).to_string(), "3 hours");
        assert_eq!(Ago(3 * 86_400 + 5).to_string(), "3 days");
    }

    #[test]
    fn failures_read_as_plain_words() {
        let failure = |kind| TlsFailure {
            host: "hooks.example.com".to_owned(),
            kind,
        };
        let unknown = failure(Kind::from_certificate(&CertificateError::UnknownIssuer));
        assert!(unknown.to_string().contains("unknown issuer"), "{unknown}");
        let name = failure(Kind::WrongName(vec!["other.example.com".to_owned()]));
        assert_eq!(
            name.to_string(),
            "TLS: the certificate is not valid for the host name hooks.example.com \
             (it is for other.example.com)"
        );
        let timeout = failure(Kind::Timeout(Duration::from_millis(1500)));
        assert_eq!(
            timeout.to_string(),
            "TLS: handshake with hooks.example.com timed out after 1500 ms"
        );
    }

    /// A one-shot https server on 127.0.0.1 presenting a leaf for `names` signed by a fresh
    /// CA: answers `204` to one request. Returns the CA certificate and the port.
    async fn https_server(names: &[&str]) -> (CertificateDer<'static>, u16) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &*ca)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0_u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed early");
                head.extend_from_slice(&buf[..n]);
            }
            tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            tls.flush().await.unwrap();
        });
        (ca.der().clone(), port)
    }

    async fn attempt(roots: &[CertificateDer<'static>], url: &str) -> AttemptResult {
        let client = outbound::client(true, Duration::from_secs(2), roots, 1).unwrap();
        let out = Outbound {
            url,
            message_id: "msg_1",
            content_type: None,
            body: bytes::Bytes::from_static(b"{}"),
            keys: &[b"key".to_vec()],
            headers: &[],
        };
        outbound::send(&client, out, Duration::from_secs(4)).await
    }

    #[tokio::test]
    async fn an_attempt_over_https_reaches_a_receiver_with_an_extra_root() {
        let (ca, port) = https_server(&["127.0.0.1"]).await;
        let result = attempt(&[ca], &format!("https://127.0.0.1:{port}/hook")).await;
        assert_eq!(result.status, Some(204), "{result:?}");
        assert_eq!(result.error, None);
    }

    #[tokio::test]
    async fn a_refused_certificate_is_the_attempt_error_in_words() {
        // Mozilla's roots alone do not know the test CA.
        let (_, port) = https_server(&["127.0.0.1"]).await;
        let result = attempt(&[], &format!("https://127.0.0.1:{port}/")).await;
        assert_eq!(result.status, None);
        assert_eq!(
            result.error.as_deref(),
            Some(
                "TLS: the certificate of 127.0.0.1 is not signed by a trusted CA (unknown \
                 issuer; a private CA belongs in delivery.ca_file)"
            )
        );
        // A certificate for another name, from a trusted CA.
        let (ca, port) = https_server(&["hooks.example.com"]).await;
        let result = attempt(&[ca], &format!("https://127.0.0.1:{port}/")).await;
        let error = result.error.unwrap();
        assert!(
            error.contains("not valid for the host name 127.0.0.1 (it is for hooks.example.com)"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_extra_root_is_an_error() {
        assert!(client_config(&[]).is_ok());
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(client_config(&[junk]).is_err());
    }
}
