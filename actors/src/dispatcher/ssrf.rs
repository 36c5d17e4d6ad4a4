//! Keeping herald from being turned into an SSRF proxy.
//!
//! # The threat
//!
//! herald sends webhooks to URLs its users configure. Without a guard, anyone who may create a
//! destination could point it at `http://169.254.169.254/latest/meta-data` (cloud credentials),
//! `http://127.0.0.1:6379` (a local Redis), or an admin panel on the private network, and use
//! herald's network position to reach what they cannot reach themselves (server-side request
//! forgery). Checking the URL once is not enough: a name can resolve to a public address when
//! the destination is created and to `127.0.0.1` when the webhook is sent (DNS rebinding), and
//! the same address has many spellings (`2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`).
//!
//! # Two checkpoints
//!
//! 1. **At creation**, [`check_url`] parses the URL and refuses what is wrong on its face: a
//!    scheme other than `http`/`https`, credentials in the URL, a missing host or bad port, an
//!    IPv4 address in a non-canonical spelling, a refused IP literal, and names that are local by
//!    construction (`localhost`, `*.localhost`, `*.local`, `*.internal`, single-label names,
//!    which resolve through the host's search domains). The API answers 400
//!    `destination_not_allowed` ([`Refusal::CODE`]) with the [`Refusal`] as the reason. Names are
//!    not resolved here: whatever they resolve to now says nothing about later.
//! 2. **At connect time**, [`GuardedConnector`] resolves the name, drops every address that
//!    [`check_ip`] refuses, and connects to a remaining *address* (never to the name again, so
//!    there is no second lookup that could answer differently). This is the check that actually
//!    protects; the first one exists to give a clear error early. Every connection goes through
//!    it, so a redirect followed through the same client is checked too.
//!
//! # What is refused, and why
//!
//! [`check_ip`] refuses every address that is not ordinary public unicast: unspecified and
//! "this network", loopback, private (RFC 1918) and unique-local, shared CGNAT space, link-local
//! (where cloud metadata lives: `169.254.169.254`, `fd00:ec2::254`), IETF protocol assignments,
//! documentation, benchmarking, 6to4 relay, discard, site-local, multicast, broadcast and
//! reserved space, Teredo, and any IPv6 outside global unicast (`2000::/3`). IPv6 forms that
//! carry an IPv4 address (IPv4-mapped, IPv4-translated, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
//! are judged by the IPv4 address they carry, since that is where the packets end up.
//!
//! `allow_private_destinations` (for development, or a herald that delivers inside a private
//! network) turns the address and local-name checks off; the syntax checks (scheme, credentials,
//! host, port, IPv4 spelling) always apply.
//!
//! # TLS
//!
//! For `https` the connector runs the TLS handshake ([`super::tls`]) on top of the TCP stream
//! it connected to a checked address, so the guard sees every address before any TLS byte is
//! sent; the certificate is verified against the URL's host name, never the address.
//!
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;

use super::tls::{self, Stream, TlsFailure};

/// Why a destination (or a resolved address) is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// An address in a refused range, e.g. "loopback address 127.0.0.1".
    #[error("{class} {ip}")]
    Address { ip: IpAddr, class: AddressClass },
    /// An IPv6 address that carries a refused IPv4 address.
    #[error("{form} address {ip} embeds {class} {v4}")]
    Embedded {
        ip: Ipv6Addr,
        form: Embedding,
        v4: Ipv4Addr,
        class: AddressClass,
    },
    #[error("not an absolute http(s) URL: {0}")]
    Malformed(String),
    #[error("scheme {0:?} is not allowed (only http and https)")]
    Scheme(String),
    #[error("the URL has no host")]
    MissingHost,
    /// `user:pass@` in the URL: it hides the real host from a human reading it.
    #[error("credentials in the URL (user:pass@host) are not allowed")]
    UserInfo,
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// A host that resolvers read as an IPv4 address but is not written as a dotted quad.
    #[error("non-canonical IPv4 spelling {0:?} (write the address as a dotted quad)")]
    NonCanonicalIpv4(String),
    /// A name that is local by construction, e.g. "localhost name foo.localhost".
    #[error("{kind} {host}")]
    LocalName { host: String, kind: LocalNameKind },
}

impl Refusal {
    /// The error code the API answers with, for every refusal.
    pub const CODE: &'static str = "destination_not_allowed";
}

/// The refused range an address falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressClass {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    CloudMetadata,
    IetfProtocol,
    Documentation,
    Relay6to4,
    Benchmarking,
    Multicast,
    Reserved,
    Broadcast,
    UniqueLocal,
    SiteLocal,
    Discard,
    Teredo,
    Ipv4Compatible,
    LocalNat64,
    NotGlobalUnicast,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "unspecified address",
            Self::ThisNetwork => "this-network address",
            Self::Loopback => "loopback address",
            Self::Private => "private address",
            Self::SharedCgnat => "shared (CGNAT) address",
            Self::LinkLocal => "link-local address",
            Self::CloudMetadata => "cloud metadata address",
            Self::IetfProtocol => "IETF protocol assignment address",
            Self::Documentation => "documentation address",
            Self::Relay6to4 => "6to4 relay anycast address",
            Self::Benchmarking => "benchmarking address",
            Self::Multicast => "multicast address",
            Self::Reserved => "reserved address",
            Self::Broadcast => "broadcast address",
            Self::UniqueLocal => "unique-local (private) address",
            Self::SiteLocal => "site-local address",
            Self::Discard => "discard-only address",
            Self::Teredo => "Teredo address",
            Self::Ipv4Compatible => "deprecated IPv4-compatible address",
            Self::LocalNat64 => "local-use NAT64 address",
            Self::NotGlobalUnicast => "non-global-unicast address",
        })
    }
}

/// How an IPv6 address carries an IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`
    Mapped,
    /// `::ffff:0:a.b.c.d` (SIIT)
    Translated,
    /// `64:ff9b::a.b.c.d`
    Nat64,
    /// `2002:aabb:ccdd::/48`
    SixToFour,
}

impl fmt::Display for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mapped => "IPv4-mapped",
            Self::Translated => "IPv4-translated",
            Self::Nat64 => "NAT64",
            Self::SixToFour => "6to4",
        })
    }
}

/// Why a name is local by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalNameKind {
    Localhost,
    /// `.local`: multicast DNS, answered by whoever is on the local link.
    Mdns,
    /// `.internal`: private-use TLD, used by clouds for their own services.
    Internal,
    /// No dot: completed with the host's search domains, i.e. an internal name.
    SingleLabel,
}

impl fmt::Display for LocalNameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Localhost => "localhost name",
            Self::Mdns => "mDNS (.local) name",
            Self::Internal => "internal (.internal) name",
            Self::SingleLabel => "single-label name",
        })
    }
}

/// Refused IPv4 ranges; the first match names the reason, so specific entries come first.
const V4_REFUSED: &[(Ipv4Addr, u32, AddressClass)] = &[
    (
        Ipv4Addr::new(169, 254, 169, 254),
        32,
        AddressClass::CloudMetadata,
    ),
    (Ipv4Addr::BROADCAST, 32, AddressClass::Broadcast),
    (Ipv4Addr::UNSPECIFIED, 32, AddressClass::Unspecified),
    (Ipv4Addr::UNSPECIFIED, 8, AddressClass::ThisNetwork),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressClass::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, AddressClass::SharedCgnat),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressClass::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddressClass::IetfProtocol),
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, AddressClass::Relay6to4),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressClass::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressClass::Benchmarking),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        AddressClass::Documentation,
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        AddressClass::Documentation,
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressClass::Multicast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressClass::Reserved),
];

/// Refused IPv6 ranges, after the IPv4-carrying forms have been handled; first match wins.
const V6_REFUSED: &[(Ipv6Addr, u32, AddressClass)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, AddressClass::Unspecified),
    (Ipv6Addr::LOCALHOST, 128, AddressClass::Loopback),
    // AWS's IPv6 instance metadata endpoint (inside fc00::/7; named for a clearer reason).
    (
        Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
        128,
        AddressClass::CloudMetadata,
    ),
    // `::a.b.c.d`, deprecated since RFC 4291 and never routed: refused whatever it carries.
    (Ipv6Addr::UNSPECIFIED, 96, AddressClass::Ipv4Compatible),
    // 64:ff9b:1::/48 (RFC 8215) is local-use by definition, and where the IPv4 address sits
    // depends on the operator's prefix length, so there is nothing reliable to check.
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        AddressClass::LocalNat64,
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        AddressClass::Discard,
    ),
    // Teredo tunnels to an obfuscated IPv4 address through a relay: refused outright.
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        AddressClass::Teredo,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        AddressClass::IetfProtocol,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        AddressClass::Documentation,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        AddressClass::Documentation,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        AddressClass::UniqueLocal,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::SiteLocal,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        AddressClass::Multicast,
    ),
];

/// Global unicast, `2000::/3`: every public IPv6 address lives here.
const V6_GLOBAL_UNICAST: (Ipv6Addr, u32) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

fn v4_in(ip: Ipv4Addr, net: Ipv4Addr, len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    V4_REFUSED
        .iter()
        .find(|(net, len, _)| v4_in(ip, *net, *len))
        .map(|(_, _, class)| *class)
}

/// The IPv4 address an IPv6 address delivers to, for the forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let bits = ip.to_bits();
    let low32 = Ipv4Addr::from_bits(bits as u32);
    if bits >> 32 == 0xffff {
        Some((Embedding::Mapped, low32))
    } else if bits >> 32 == 0xffff_0000 {
        Some((Embedding::Translated, low32))
    } else if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        Some((Embedding::Nat64, low32))
    } else if v6_in(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        // 2002:AABB:CCDD::/48 — the IPv4 address is bits 16..48.
        Some((
            Embedding::SixToFour,
            Ipv4Addr::from_bits((bits >> 80) as u32),
        ))
    } else {
        None
    }
}

/// Whether herald may connect to `ip`. Pure; refuses everything that is not public unicast
/// (see the module documentation for the list and the reasons).
pub fn check_ip(ip: IpAddr) -> Result<(), Refusal> {
    match ip {
        IpAddr::V4(v4) => match classify_v4(v4) {
            Some(class) => Err(Refusal::Address { ip, class }),
            None => Ok(()),
        },
        IpAddr::V6(v6) => {
            if let Some((form, v4)) = embedded_v4(v6) {
                // Judged by where the packets end up.
                return match classify_v4(v4) {
                    Some(class) => Err(Refusal::Embedded {
                        ip: v6,
                        form,
                        v4,
                        class,
                    }),
                    None => Ok(()),
                };
            }
            let (global, global_len) = V6_GLOBAL_UNICAST;
            let class = V6_REFUSED
                .iter()
                .find(|(net, len, _)| v6_in(v6, *net, *len))
                .map(|(_, _, class)| *class)
                .or((!v6_in(v6, global, global_len)).then_some(AddressClass::NotGlobalUnicast));
            match class {
                Some(class) => Err(Refusal::Address { ip, class }),
                None => Ok(()),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// A destination URL that passed [`check_url`], in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower-case name, or an IP literal in its canonical form (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, `/` at least; the fragment is dropped (it is never sent).
    pub path_and_query: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path_and_query)
    }
}

/// Echoes user input in a refusal, cut short so a huge URL does not become a huge error.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Checks a destination URL when it is created. Names are returned unresolved: what they
/// resolve to is checked on every connection by [`GuardedConnector`].
pub fn check_url(url: &str, allow_private: bool) -> Result<Target, Refusal> {
    // The scheme first, by hand, so `file:///…` or `javascript:…` get a clear reason rather
    // than a parser error.
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(Refusal::Malformed(clip(url)));
    };
    let scheme_syntax = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_syntax {
        return Err(Refusal::Malformed(clip(url)));
    }
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(Refusal::Scheme(clip(other))),
    };
    let Some(after) = rest.strip_prefix("//") else {
        return Err(Refusal::Malformed(clip(url)));
    };
    let raw_authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    if raw_authority.is_empty() {
        return Err(Refusal::MissingHost);
    }
    if raw_authority.contains('@') {
        return Err(Refusal::UserInfo);
    }

    // Then the same parser hyper uses to send, so what is checked is what is sent.
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| Refusal::Malformed(e.to_string()))?;
    let (host, port) = host_and_port(&uri)?;
    let port = port.unwrap_or(scheme.default_port());

    let (host, literal) = classify_host(host)?;
    if !allow_private {
        match literal {
            Some(ip) => check_ip(ip)?,
            None => {
                if let Some(kind) = local_name(&host) {
                    return Err(Refusal::LocalName { host, kind });
                }
            }
        }
    }
    Ok(Target {
        scheme,
        host,
        port,
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
    })
}

/// The host as the URI spells it, and the explicit port if any. The `http` crate silently
/// reads an out-of-range port as "no port", which would send `:99999` to port 80; refuse it.
fn host_and_port(uri: &Uri) -> Result<(&str, Option<u16>), Refusal> {
    let authority = uri.authority().ok_or(Refusal::MissingHost)?;
    let host = authority.host();
    if host.is_empty() {
        return Err(Refusal::MissingHost);
    }
    let rest = authority.as_str().strip_prefix(host).unwrap_or_default();
    if rest.is_empty() {
        return Ok((host, None));
    }
    let digits = rest.strip_prefix(':').unwrap_or(rest);
    let port = (rest.starts_with(':')
        && (1..=5).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit()))
    .then(|| digits.parse::<u16>().ok())
    .flatten()
    .filter(|p| *p != 0)
    .ok_or_else(|| Refusal::InvalidPort(clip(digits)))?;
    Ok((host, Some(port)))
}

/// Normal form of a host, and the address if it is an IP literal.
fn classify_host(host: &str) -> Result<(String, Option<IpAddr>), Refusal> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // Zone ids (`%25eth0`) and IPv4 in brackets do not parse: refused as invalid.
        let v6: Ipv6Addr = inner
            .parse()
            .map_err(|_| Refusal::InvalidHost(clip(host)))?;
        return Ok((v6.to_string(), Some(IpAddr::V6(v6))));
    }
    let lower = host.to_ascii_lowercase();
    // std accepts only the canonical dotted quad (no leading zeros, four parts).
    if let Ok(v4) = lower.parse::<Ipv4Addr>() {
        return Ok((v4.to_string(), Some(IpAddr::V4(v4))));
    }
    // Resolvers (inet_aton) and browsers read `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`
    // as IPv4 addresses, each in their own way. As in the WHATWG URL rules, a host whose last
    // label is a number is an IPv4 address; not being a dotted quad, it is refused.
    let last = lower.strip_suffix('.').unwrap_or(&lower).rsplit('.').next();
    if last.is_some_and(is_numeric_label) {
        return Err(Refusal::NonCanonicalIpv4(clip(host)));
    }
    if !is_dns_name(&lower) {
        return Err(Refusal::InvalidHost(clip(host)));
    }
    Ok((lower, None))
}

fn is_numeric_label(label: &str) -> bool {
    let decimal = !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit());
    let hex = label
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    decimal || hex
}

/// LDH labels (plus `_`, which exists in the wild), one optional trailing dot. Internationalised
/// names must be written in their `xn--` form.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn local_name(lower: &str) -> Option<LocalNameKind> {
    let name = lower.strip_suffix('.').unwrap_or(lower);
    let Some((_, tld)) = name.rsplit_once('.') else {
        return Some(if name == "localhost" {
            LocalNameKind::Localhost
        } else {
            LocalNameKind::SingleLabel
        });
    };
    match tld {
        "localhost" => Some(LocalNameKind::Localhost),
        "local" => Some(LocalNameKind::Mdns),
        "internal" => Some(LocalNameKind::Internal),
        _ => None,
    }
}

/// Why a guarded connection was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Every address the host resolved to is refused (or the URI itself is).
    #[error("destination_not_allowed: {0}")]
    NotAllowed(Refusal),
    /// The TLS handshake failed or the certificate was refused; the text says which.
    #[error(transparent)]
    Tls(TlsFailure),
    #[error("could not resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("resolving {host} timed out after {after:?}")]
    ResolveTimeout { host: String, after: Duration },
    #[error("{0} resolved to no address")]
    NoAddress(String),
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
}

/// A hyper-util connector that connects only to allowed addresses: it resolves the host,
/// drops refused addresses, connects to the remaining ones in order, by address, and for
/// `https` runs the TLS handshake on that connection.
///
/// ```text
/// let tls = tls::client_config(&[])?;
/// let client = Client::builder(TokioExecutor::new())
///     .build::<_, String>(GuardedConnector::new(false, Duration::from_secs(5), tls));
/// ```
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    allow_private: bool,
    /// Bounds the lookup, each connection attempt, and (halved) the TLS handshake.
    connect_timeout: Duration,
    tls: Arc<ClientConfig>,
}

/// The future of [`GuardedConnector`]'s `call`.
pub type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, ConnectError>> + Send>>;

impl GuardedConnector {
    pub fn new(allow_private: bool, connect_timeout: Duration, tls: Arc<ClientConfig>) -> Self {
        Self {
            allow_private,
            connect_timeout,
            tls,
        }
    }

    /// Connects to `dst`, with `TCP_NODELAY` set; for `https`, completes the TLS handshake.
    pub async fn connect(self, dst: Uri) -> Result<TokioIo<Stream>, ConnectError> {
        let scheme = match dst.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            other => {
                let scheme = other.unwrap_or_default();
                return Err(ConnectError::NotAllowed(Refusal::Scheme(clip(scheme))));
            }
        };
        let (host, port) = host_and_port(&dst).map_err(ConnectError::NotAllowed)?;
        let port = port.unwrap_or(scheme.default_port());
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);

        let after = self.connect_timeout;
        let resolved = tokio::time::timeout(after, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| ConnectError::ResolveTimeout {
                host: host.to_owned(),
                after,
            })?
            .map_err(|source| ConnectError::Resolve {
                host: host.to_owned(),
                source,
            })?;
        // From here on only addresses are used: no second lookup can answer differently.
        let allowed = screen(resolved, self.allow_private, host)?;
        let stream = connect_first(&allowed, after, host).await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        let stream = match scheme {
            Scheme::Http => Stream::Plain(stream),
            Scheme::Https => {
                let budget = tls::handshake_budget(after);
                let tls = tls::handshake(self.tls, host, stream, budget)
                    .await
                    .map_err(ConnectError::Tls)?;
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(TokioIo::new(stream))
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Box::pin(self.clone().connect(dst))
    }
}

/// The resolved addresses herald may connect to, in resolver order. Refused ones are dropped;
/// if none is left, the first refusal is the error.
fn screen(
    resolved: impl IntoIterator<Item = SocketAddr>,
    allow_private: bool,
    host: &str,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let mut allowed = Vec::new();
    let mut refused = None;
    for addr in resolved {
        if allow_private {
            allowed.push(addr);
            continue;
        }
        match check_ip(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(refusal) => {
                tracing::debug!(host, %addr, reason = %refusal, "dropped a resolved address");
                refused.get_or_insert(refusal);
            }
        }
    }
    if allowed.is_empty() {
        return Err(match refused {
            Some(refusal) => ConnectError::NotAllowed(refusal),
            None => ConnectError::NoAddress(host.to_owned()),
        });
    }
    Ok(allowed)
}

/// Connects to the first address that answers, each attempt bounded by `after`.
async fn connect_first(
    addrs: &[SocketAddr],
    after: Duration,
    host: &str,
) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for &addr in addrs {
        match tokio::time::timeout(after, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(source)) => last = Some(ConnectError::Connect { addr, source }),
            Err(_) => last = Some(ConnectError::ConnectTimeout { addr, after }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::NoAddress(host.to_owned())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower_service::Service;

    enum Expect {
        /// Allowed, with this normal-form host and port.
        Allow(&'static str, u16),
        /// Refused, and the reason contains this.
        Refuse(&'static str),
    }
    use Expect::{Allow, Refuse};

    const STRICT: &[(&str, Expect)] = &[
        // Public destinations.
        ("http://example.com/hook", Allow("example.com", 80)),
        ("https://93.184.216.34:8443/x", Allow("93.184.216.34", 8443)),
        ("http://[2606:4700::1111]/", Allow("2606:4700::1111", 80)),
        ("http://8.8.8.8", Allow("8.8.8.8", 80)),
        ("https://example.com", Allow("example.com", 443)),
        ("HTTPS://Example.COM/Path?q=1", Allow("example.com", 443)),
        (
            "http://hooks.example.com:8080/a/b?c=d",
            Allow("hooks.example.com", 8080),
        ),
        ("http://example.com./", Allow("example.com.", 80)),
        ("http://a_b.example.com/", Allow("a_b.example.com", 80)),
        (
            "http://xn--bcher-kva.example/",
            Allow("xn--bcher-kva.example", 80),
        ),
        ("http://local.example.com/", Allow("local.example.com", 80)),
        (
            "http://internal.example.com/",
            Allow("internal.example.com", 80),
        ),
        (
            "http://localhost.example.com/",
            Allow("localhost.example.com", 80),
        ),
        ("http://1.1.1.1:65535/", Allow("1.1.1.1", 65535)),
        ("http://172.15.255.255/", Allow("172.15.255.255", 80)),
        ("http://172.32.0.0/", Allow("172.32.0.0", 80)),
        ("http://100.63.255.255/", Allow("100.63.255.255", 80)),
        ("http://100.128.0.0/", Allow("100.128.0.0", 80)),
        ("http://192.169.0.1/", Allow("192.169.0.1", 80)),
        ("http://[::ffff:8.8.8.8]/", Allow("::ffff:8.8.8.8", 80)),
        ("http://[64:ff9b::808:808]/", Allow("64:ff9b::808:808", 80)),
        ("http://[2002:808:808::1]/", Allow("2002:808:808::1", 80)),
        // Schemes.
        ("ftp://example.com", Refuse("scheme \"ftp\"")),
        ("file:///etc/passwd", Refuse("scheme \"file\"")),
        ("gopher://x", Refuse("scheme \"gopher\"")),
        ("ws://example.com/", Refuse("scheme \"ws\"")),
        ("javascript:alert(1)", Refuse("scheme \"javascript\"")),
        ("data:text/plain,hi", Refuse("scheme \"data\"")),
        // Credentials.
        ("http://user:pass@example.com", Refuse("credentials")),
        ("http://user@example.com/", Refuse("credentials")),
        ("http://@example.com/", Refuse("credentials")),
        ("http://example.com@127.0.0.1/", Refuse("credentials")),
        // Names that are local by construction.
        ("http://localhost:8080", Refuse("localhost name localhost")),
        ("http://LOCALHOST/", Refuse("localhost name")),
        ("http://localhost./", Refuse("localhost name")),
        (
            "http://foo.localhost",
            Refuse("localhost name foo.localhost"),
        ),
        (
            "http://metadata.google.internal/",
            Refuse("internal (.internal) name"),
        ),
        ("http://printer.local/", Refuse("mDNS")),
        ("http://intranet/", Refuse("single-label name intranet")),
        // IPv4 literals.
        ("http://127.0.0.1/", Refuse("loopback address 127.0.0.1")),
        ("http://127.255.255.254:9000/", Refuse("loopback address")),
        ("http://0.0.0.0/", Refuse("unspecified address 0.0.0.0")),
        ("http://0.1.2.3/", Refuse("this-network address")),
        ("http://10.0.0.1/", Refuse("private address 10.0.0.1")),
        ("http://172.16.0.1/", Refuse("private address")),
        ("http://172.31.255.255/", Refuse("private address")),
        ("http://192.168.1.1/", Refuse("private address")),
        ("http://100.64.0.1/", Refuse("CGNAT")),
        (
            "http://169.254.169.254/latest/meta-data",
            Refuse("cloud metadata address"),
        ),
        ("http://169.254.1.1/", Refuse("link-local address")),
        ("http://192.0.0.8/", Refuse("IETF protocol")),
        ("http://192.0.2.1/", Refuse("documentation address")),
        ("http://198.51.100.7/", Refuse("documentation address")),
        ("http://203.0.113.9/", Refuse("documentation address")),
        ("http://192.88.99.1/", Refuse("6to4 relay")),
        ("http://198.18.0.1/", Refuse("benchmarking address")),
        ("http://198.19.255.255/", Refuse("benchmarking address")),
        ("http://224.0.0.1/", Refuse("multicast address")),
        ("http://239.255.255.250/", Refuse("multicast address")),
        ("http://240.0.0.1/", Refuse("reserved address")),
        ("http://255.255.255.255/", Refuse("broadcast address")),
        // IPv6 literals.
        ("http://[::1]/", Refuse("loopback address ::1")),
        ("http://[::]/", Refuse("unspecified address")),
        ("http://[fe80::1]/", Refuse("link-local address")),
        ("http://[fc00::1]/", Refuse("unique-local")),
        ("http://[fd12:3456::1]/", Refuse("unique-local")),
        (
            "http://[fd00:ec2::254]/",
            Refuse("cloud metadata address fd00:ec2::254"),
        ),
        ("http://[ff02::1]/", Refuse("multicast address")),
        ("http://[2001:db8::1]/", Refuse("documentation address")),
        ("http://[100::1]/", Refuse("discard-only address")),
        ("http://[fec0::1]/", Refuse("site-local address")),
        ("http://[4000::1]/", Refuse("non-global-unicast")),
        (
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            Refuse("Teredo"),
        ),
        // IPv6 carrying IPv4.
        (
            "http://[::ffff:127.0.0.1]/",
            Refuse("IPv4-mapped address ::ffff:127.0.0.1 embeds loopback address 127.0.0.1"),
        ),
        (
            "http://[::ffff:7f00:1]/",
            Refuse("embeds loopback address 127.0.0.1"),
        ),
        (
            "http://[::ffff:169.254.169.254]/",
            Refuse("embeds cloud metadata"),
        ),
        ("http://[::ffff:0:a00:1]/", Refuse("IPv4-translated")),
        (
            "http://[::127.0.0.1]/",
            Refuse("deprecated IPv4-compatible"),
        ),
        (
            "http://[64:ff9b::a00:1]/",
            Refuse("NAT64 address 64:ff9b::a00:1 embeds private"),
        ),
        ("http://[64:ff9b:1::808:808]/", Refuse("local-use NAT64")),
        (
            "http://[2002:c0a8:0101::1]/",
            Refuse("6to4 address 2002:c0a8:101::1 embeds private"),
        ),
        ("http://[2002:7f00:1::]/", Refuse("embeds loopback")),
        // IPv4 spelled otherwise, refused before any resolver sees it.
        ("http://2130706433/", Refuse("non-canonical IPv4")),
        ("http://0177.0.0.1/", Refuse("non-canonical IPv4")),
        ("http://0x7f000001/", Refuse("non-canonical IPv4")),
        ("http://0x7f.1/", Refuse("non-canonical IPv4")),
        ("http://127.1/", Refuse("non-canonical IPv4")),
        ("http://10.1/", Refuse("non-canonical IPv4")),
        ("http://017700000001/", Refuse("non-canonical IPv4")),
        ("http://127.0.0.1./", Refuse("non-canonical IPv4")),
        ("http://1572395042/", Refuse("non-canonical IPv4")),
        ("http://8.8.8.08/", Refuse("non-canonical IPv4")),
        ("http://1.2.3.4.5/", Refuse("non-canonical IPv4")),
        ("http://0X7F.0.0.1/", Refuse("non-canonical IPv4")),
        // Structure.
        ("http:///nohost", Refuse("no host")),
        ("http://", Refuse("no host")),
        ("http://?x", Refuse("no host")),
        ("", Refuse("not an absolute")),
        ("garbage", Refuse("not an absolute")),
        ("//example.com/", Refuse("not an absolute")),
        ("http:example.com", Refuse("not an absolute")),
        ("http://exa mple.com/", Refuse("not an absolute")),
        ("http://%31%32%37.0.0.1/", Refuse("not an absolute")),
        (
            "http://example.com:99999/",
            Refuse("invalid port \"99999\""),
        ),
        ("http://example.com:0/", Refuse("invalid port")),
        ("http://example.com:/", Refuse("invalid port")),
        ("http://exa!mple.com/", Refuse("invalid host")),
        ("http://a..b/", Refuse("invalid host")),
        ("http://[fe80::1%25eth0]/", Refuse("invalid host")),
        ("http://[1.2.3.4]/", Refuse("invalid host")),
    ];

    fn run_table(table: &[(&str, Expect)], allow_private: bool) {
        let mut failures = Vec::new();
        for (url, expect) in table {
            match (check_url(url, allow_private), expect) {
                (Ok(t), Allow(host, port)) if t.host == *host && t.port == *port => {}
                (Err(r), Refuse(reason)) if r.to_string().contains(reason) => {}
                (got, _) => failures.push(format!("{url:?}: got {got:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn check_url_strict_table() {
        assert!(STRICT.len() >= 60);
        run_table(STRICT, false);
    }

    #[test]
    fn check_url_allow_private_table() {
        run_table(
            &[
                ("http://127.0.0.1:8080/", Allow("127.0.0.1", 8080)),
                ("http://localhost:3000/x", Allow("localhost", 3000)),
                ("http://[::1]/", Allow("::1", 80)),
                ("http://10.0.0.5/", Allow("10.0.0.5", 80)),
                ("http://192.168.1.1/", Allow("192.168.1.1", 80)),
                ("http://[::ffff:127.0.0.1]/", Allow("::ffff:127.0.0.1", 80)),
                ("http://receiver/hook", Allow("receiver", 80)),
                (
                    "http://metadata.google.internal/",
                    Allow("metadata.google.internal", 80),
                ),
                ("http://printer.local/", Allow("printer.local", 80)),
                // Syntax is still checked.
                ("ftp://127.0.0.1/", Refuse("scheme \"ftp\"")),
                ("file:///etc/passwd", Refuse("scheme \"file\"")),
                ("http://user:pass@127.0.0.1/", Refuse("credentials")),
                ("http://user:pass@localhost/", Refuse("credentials")),
                ("http://127.1/", Refuse("non-canonical IPv4")),
                ("http://2130706433/", Refuse("non-canonical IPv4")),
                ("http://", Refuse("no host")),
                ("http://localhost:99999/", Refuse("invalid port")),
            ],
            true,
        );
    }

    #[test]
    fn target_normal_form() {
        let t = check_url("HTTP://Hooks.Example.COM:80/a?b=c#frag", false).unwrap();
        assert_eq!(
            t,
            Target {
                scheme: Scheme::Http,
                host: "hooks.example.com".into(),
                port: 80,
                path_and_query: "/a?b=c".into(),
            }
        );
        assert_eq!(t.to_string(), "http://hooks.example.com/a?b=c");
        let t = check_url("https://[2606:4700:0::1111]:8443", false).unwrap();
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.to_string(), "https://[2606:4700::1111]:8443/");
    }

    #[test]
    fn long_input_is_clipped_in_the_reason() {
        let url = format!("{}://x", "a".repeat(10_000));
        let reason = check_url(&url, false).unwrap_err().to_string();
        assert!(reason.len() < 200, "{reason}");
    }

    fn refused(ip: &str) -> Option<String> {
        check_ip(ip.parse().unwrap()).err().map(|r| r.to_string())
    }

    #[test]
    fn check_ip_v4_boundaries() {
        // (address, refused?) at both edges of every range.
        let cases = [
            ("0.0.0.0", true),
            ("0.255.255.255", true),
            ("1.0.0.0", false),
            ("9.255.255.255", false),
            ("10.0.0.0", true),
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("100.63.255.255", false),
            ("100.64.0.0", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            ("126.255.255.255", false),
            ("127.0.0.0", true),
            ("127.255.255.255", true),
            ("128.0.0.0", false),
            ("169.253.255.255", false),
            ("169.254.0.0", true),
            ("169.254.255.255", true),
            ("169.255.0.0", false),
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("191.255.255.255", false),
            ("192.0.0.0", true),
            ("192.0.0.255", true),
            ("192.0.1.0", false),
            ("192.0.1.255", false),
            ("192.0.2.0", true),
            ("192.0.2.255", true),
            ("192.0.3.0", false),
            ("192.88.98.255", false),
            ("192.88.99.0", true),
            ("192.88.99.255", true),
            ("192.88.100.0", false),
            ("192.167.255.255", false),
            ("192.168.0.0", true),
            ("192.168.255.255", true),
            ("192.169.0.0", false),
            ("198.17.255.255", false),
            ("198.18.0.0", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("198.51.99.255", false),
            ("198.51.100.0", true),
            ("198.51.100.255", true),
            ("198.51.101.0", false),
            ("203.0.112.255", false),
            ("203.0.113.0", true),
            ("203.0.113.255", true),
            ("203.0.114.0", false),
            ("223.255.255.255", false),
            ("224.0.0.0", true),
            ("239.255.255.255", true),
            ("240.0.0.0", true),
            ("255.255.255.254", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("93.184.216.34", false),
        ];
        for (ip, want) in cases {
            assert_eq!(refused(ip).is_some(), want, "{ip}: {:?}", refused(ip));
        }
    }

    /// IPv6 addresses and the reason each is refused for (`None`: allowed).
    const V6_CASES: &[(&str, Option<&str>)] = &[
        ("::", Some("unspecified address ::")),
        ("::1", Some("loopback address ::1")),
        ("::2", Some("deprecated IPv4-compatible")),
        (
            "::ffff:0:0",
            Some("IPv4-mapped address ::ffff:0.0.0.0 embeds unspecified"),
        ),
        ("::ffff:8.8.8.8", None),
        ("::ffff:10.0.0.1", Some("embeds private address 10.0.0.1")),
        ("::ffff:0:8.8.8.8", None),
        ("::ffff:0:127.0.0.1", Some("IPv4-translated")),
        ("64:ff9b::8.8.8.8", None),
        (
            "64:ff9b::127.0.0.1",
            Some("NAT64 address 64:ff9b::7f00:1 embeds loopback"),
        ),
        ("64:ff9b::1:0:0:1", Some("non-global-unicast")),
        ("64:ff9b:1::8.8.8.8", Some("local-use NAT64")),
        (
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            Some("local-use NAT64"),
        ),
        ("64:ff9b:2::1", Some("non-global-unicast")),
        ("100::", Some("discard-only")),
        ("100::ffff:ffff:ffff:ffff", Some("discard-only")),
        ("100:0:0:1::", Some("non-global-unicast")),
        (
            "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("non-global-unicast"),
        ),
        ("2000::", None),
        ("2001::", Some("Teredo")),
        ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some("Teredo")),
        ("2001:1::1", Some("IETF protocol")),
        (
            "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("IETF protocol"),
        ),
        ("2001:200::", None),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("2001:db8::", Some("documentation")),
        (
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("documentation"),
        ),
        ("2001:db9::", None),
        (
            "2002::",
            Some("6to4 address 2002:: embeds unspecified address 0.0.0.0"),
        ),
        (
            "2002:c0a8:101::1",
            Some("embeds private address 192.168.1.1"),
        ),
        (
            "2002:a9fe:a9fe::",
            Some("embeds cloud metadata address 169.254.169.254"),
        ),
        ("2002:808:808::", None),
        (
            "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("embeds broadcast"),
        ),
        ("2003::", None),
        ("2606:4700::1111", None),
        ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("3fff::", Some("documentation")),
        (
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("documentation"),
        ),
        ("3fff:1000::", None),
        ("4000::", Some("non-global-unicast")),
        (
            "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("non-global-unicast"),
        ),
        ("fc00::", Some("unique-local")),
        (
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("unique-local"),
        ),
        (
            "fd00:ec2::254",
            Some("cloud metadata address fd00:ec2::254"),
        ),
        ("fd00:ec2::253", Some("unique-local")),
        ("fe80::", Some("link-local")),
        (
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("link-local"),
        ),
        ("fec0::", Some("site-local")),
        (
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("site-local"),
        ),
        ("ff00::", Some("multicast")),
        ("ff02::1", Some("multicast")),
    ];

    #[test]
    fn check_ip_v6_boundaries() {
        for &(ip, want) in V6_CASES {
            let got = refused(ip);
            match want {
                None => assert_eq!(got, None, "{ip}"),
                Some(reason) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(reason)),
                    "{ip}: want {reason:?}, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn reasons_read_well() {
        let r = check_ip("127.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(r.to_string(), "loopback address 127.0.0.1");
        let r = check_ip("172.20.1.2".parse().unwrap()).unwrap_err();
        assert_eq!(r.to_string(), "private address 172.20.1.2");
        let e = ConnectError::NotAllowed(r);
        assert_eq!(
            e.to_string(),
            "destination_not_allowed: private address 172.20.1.2"
        );
        assert!(e.to_string().starts_with(Refusal::CODE));
    }

    #[test]
    fn screen_drops_refused_addresses() {
        let addrs: Vec<SocketAddr> = [
            "127.0.0.1:80",
            "8.8.8.8:80",
            "[::1]:80",
            "[2606:4700::1111]:80",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let kept = screen(addrs.clone(), false, "h").unwrap();
        assert_eq!(kept, vec![addrs[1], addrs[3]]);
        assert_eq!(screen(addrs.clone(), true, "h").unwrap(), addrs);

        let err = screen(vec![addrs[0], addrs[2]], false, "h").unwrap_err();
        assert!(
            matches!(
                &err,
                ConnectError::NotAllowed(Refusal::Address {
                    class: AddressClass::Loopback,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(matches!(
            screen(Vec::new(), false, "h").unwrap_err(),
            ConnectError::NoAddress(_)
        ));
    }

    /// Asserts the listener receives no connection within 200 ms.
    async fn assert_no_connection(listener: &TcpListener) {
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection reached the listener");
    }

    async fn listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn connector(allow_private: bool) -> GuardedConnector {
        GuardedConnector::new(allow_private, TIMEOUT, tls::client_config(&[]).unwrap())
    }

    #[tokio::test]
    async fn connector_refuses_loopback_literal_without_connecting() {
        let (listener, port) = listener().await;
        let mut connector = connector(false);
        let err = connector
            .call(uri(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("destination_not_allowed"), "{msg}");
        assert!(msg.contains("loopback address 127.0.0.1"), "{msg}");
        assert_no_connection(&listener).await;
    }

    #[tokio::test]
    async fn connector_refuses_a_name_that_resolves_to_loopback() {
        // The DNS rebinding defence: the name passes no literal check, its answer is refused.
        let (listener, port) = listener().await;
        let mut connector = connector(false);
        let err = connector
            .call(uri(&format!("http://localhost:{port}/")))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::NotAllowed(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("destination_not_allowed"), "{msg}");
        assert!(msg.contains("loopback address"), "{msg}");
        assert_no_connection(&listener).await;
    }

    #[tokio::test]
    async fn connector_refuses_mapped_loopback_literal() {
        let (listener, port) = listener().await;
        let mut connector = connector(false);
        let err = connector
            .call(uri(&format!("http://[::ffff:127.0.0.1]:{port}/")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("destination_not_allowed"), "{err}");
        assert_no_connection(&listener).await;
    }

    #[tokio::test]
    async fn connector_connects_when_private_is_allowed() {
        let (listener, port) = listener().await;
        let mut connector = connector(true);
        let io = connector
            .call(uri(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap();
        let (server_side, _) = tokio::time::timeout(TIMEOUT, listener.accept())
            .await
            .expect("the connection reached the listener")
            .unwrap();
        assert_eq!(
            server_side.peer_addr().unwrap(),
            io.inner().tcp().local_addr().unwrap()
        );
        assert!(io.inner().tcp().nodelay().unwrap());
    }

    #[tokio::test]
    async fn connector_refuses_other_schemes_and_bad_ports() {
        let (listener, port) = listener().await;
        let mut connector = connector(true);
        let err = connector
            .call(uri(&format!("ftp://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("destination_not_allowed"), "{err}");
        let err = connector
            .call(uri("http://127.0.0.1:99999/"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid port"), "{err}");
        assert_no_connection(&listener).await;
    }

    #[tokio::test]
    async fn https_is_guarded_before_any_tls() {
        // The address check comes first: no TCP connection, so no handshake either.
        let (listener, port) = listener().await;
        let err = connector(false)
            .call(uri(&format!("https://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::NotAllowed(_)), "{err:?}");
        assert_no_connection(&listener).await;
    }

    #[tokio::test]
    async fn a_stalled_handshake_is_reported_as_such() {
        // The listener accepts TCP and never answers the ClientHello.
        let (listener, port) = listener().await;
        let held = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let connector = GuardedConnector::new(
            true,
            Duration::from_millis(400),
            tls::client_config(&[]).unwrap(),
        );
        let err = connector
            .connect(uri(&format!("https://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "TLS: handshake with 127.0.0.1 timed out after 200 ms"
        );
        drop(held);
    }

    #[tokio::test]
    async fn connect_first_falls_back_to_the_next_address() {
        let closed = {
            let (l, _) = listener().await;
            l.local_addr().unwrap()
        };
        let (listener, port) = listener().await;
        let open: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let stream = connect_first(&[closed, open], TIMEOUT, "h").await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open);
        tokio::time::timeout(TIMEOUT, listener.accept())
            .await
            .unwrap()
            .unwrap();

        let err = connect_first(&[closed], TIMEOUT, "h").await.unwrap_err();
        assert!(
            matches!(err, ConnectError::Connect { addr, .. } if addr == closed),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn plugs_into_the_hyper_client() {
        // Refused: the error surfaces through the client, nothing reaches the listener.
        let (listener, port) = listener().await;
        let client = Client::builder(TokioExecutor::new()).build::<_, String>(connector(false));
        let request = http::Request::get(format!("http://127.0.0.1:{port}/hook"))
            .body(String::new())
            .unwrap();
        // Bounded: if the guard let the connection through, nobody answers and this would hang.
        let err = tokio::time::timeout(TIMEOUT, client.request(request))
            .await
            .expect("the request must fail at once, not reach the listener")
            .unwrap_err();
        let mut chain = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        assert!(
            chain.iter().any(|m| m.contains("destination_not_allowed")),
            "{chain:?}"
        );
        assert_no_connection(&listener).await;

        // Allowed: a real request and response over the guarded connection.
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0_u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed early");
                request.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            request
        });
        let client = Client::builder(TokioExecutor::new()).build::<_, String>(connector(true));
        let request = http::Request::get(format!("http://127.0.0.1:{port}/hook"))
            .body(String::new())
            .unwrap();
        let response = tokio::time::timeout(TIMEOUT, client.request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
        let request = tokio::time::timeout(TIMEOUT, server)
            .await
            .unwrap()
            .unwrap();
        assert!(request.starts_with(b"GET /hook HTTP/1.1\r\n"));
    }
}
