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
    /// The peer stopped talking TLS (closed, reset, or sent something else).
    Io(String),
    Protocol(String),
    Timeout(Duration),
    BadName,
}

impl Kind {
    fn from_io(e: &io::Error) -> Self {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(cert)) => Self::from_certificate(cert),
            Some(rustls::Error::AlertReceived(alert)) => Self::Alert(format!("{alert:?}")),
            Some(other) => Self::Protocol(other.to_string()),
            None if e.kind() == io::ErrorKind::UnexpectedEof => {
                Self::Io("the receiver closed the connection".to_owned())
            }
            None => Self::Io(e.to_string()),
        }
    }

    fn from_certificate(cert: &CertificateError) -> Self {
        match cert {
            CertificateError::UnknownIssuer => Self::UnknownIssuer,
            CertificateError::Expired => Self::Expired(None),
            CertificateError::ExpiredContext { time, not_after } => Self::Expired(Some(
                time.as_secs().saturating_sub(not_after.as_secs()),
            )),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotValidYet
            }
            CertificateError::NotValidForName => Self::WrongName(Vec::new()),
            CertificateError::NotValidForNameContext { presented, .. } => {
                Self::WrongName(presented.clone())
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
            Kind::Io(why) => write!(f, "handshake with {host} failed: {why}"),
            Kind::Protocol(why) => write!(f, "handshake with {host} failed: {why}"),
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
        assert!(
            unknown.to_string().contains("unknown issuer"),
            "{unknown}"
        );
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

    #[test]
    fn a_bad_extra_root_is_an_error() {
        assert!(client_config(&[]).is_ok());
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(client_config(&[junk]).is_err());
    }
}
