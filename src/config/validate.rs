//! Stage 4: from the raw structs to a [`Config`], checking every value and cross-reference.
//!
//! Pure: no I/O (the files a config names are read in stage 5, [`super::files`]; the host name
//! is passed in). Every problem is collected, none stops the pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use herald_actors::dispatcher::headers::check_static_header;
use herald_actors::dispatcher::ssrf;

use super::raw::{
    RawAlerts, RawApi, RawBudget, RawCircuitBreaker, RawConfig, RawDelivery, RawDestination,
    RawIngest, RawLog, RawServer, RawSource, RawStorage, toml_key,
};
use super::{
    AlertsConfig, ApiConfig, ApiToken, BackendName, Budget, Channel, CircuitBreakerConfig, Config,
    ConfigError, DeliveryConfig, DestinationConfig, Encoding, IngestConfig, LogConfig, LogFormat,
    Metric, PolicyOverrides, PostgresUrl, SchemeConfig, SchemeName, Scope, Secret, ServerConfig,
    SourceConfig, SourceFilter, StorageBackend, StorageConfig, TlsFiles, UnknownKeyword,
};

const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
const TEN_MINUTES_MS: u64 = 10 * 60 * 1000;
const MIN_TOKEN_LEN: usize = 8;
const MAX_NAME_LEN: usize = 64;
const MAX_NODE_NAME_LEN: usize = 255;
const ALL_SOURCES: &str = "*";
/// `delivery.max_attempts`, and a destination's own.
const MAX_ATTEMPTS: RangeInclusive<u32> = 1..=100;
/// `delivery.timeout_ms`, and a destination's own: at most 5 minutes.
const TIMEOUT_MS: RangeInclusive<u64> = 1..=300_000;

/// Checks everything, reporting every problem. `host_name` is the default `server.node_name`.
pub(super) fn validate(raw: &RawConfig, host_name: &str) -> Result<Config, Vec<ConfigError>> {
    let mut p = Problems::default();
    let source_names: BTreeSet<&str> = raw
        .sources
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    let destination_names: BTreeSet<&str> = raw
        .destinations
        .iter()
        .filter_map(|d| d.name.as_deref())
        .collect();
    // Struct fields are evaluated in order, so problems come out in file order.
    let config = Config {
        server: raw.server.validate(host_name, &mut p),
        storage: raw.storage.validate(&mut p),
        api: raw.api.validate(&mut p),
        delivery: raw.delivery.validate(&mut p),
        circuit_breaker: raw.circuit_breaker.validate(&mut p),
        sources: {
            let mut names = BTreeMap::new();
            let sources = raw.sources.iter().enumerate();
            sources
                .map(|(i, source)| source.validate(&format!("sources[{i}]"), &mut names, &mut p))
                .collect()
        },
        ingest: raw.ingest.validate(&mut p),
        budgets: validate_budgets(raw.budgets.as_deref(), &mut p),
        alerts: raw.alerts.validate(&destination_names, &mut p),
        destinations: {
            let mut names = BTreeMap::new();
            let destinations = raw.destinations.iter().enumerate();
            destinations
                .map(|(i, destination)| {
                    let at = format!("destinations[{i}]");
                    destination.validate(&at, &mut names, &source_names, &raw.delivery, &mut p)
                })
                .collect()
        },
        log: raw.log.validate(&mut p),
    };
    p.finish(config)
}

/// Problems found so far.
///
/// Validators return a value even from invalid input, with a placeholder where nothing else
/// fits, so that one pass finds every problem; [`Problems::finish`] discards that value if
/// anything was wrong, so no placeholder ever escapes.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<ConfigError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }

    fn range(&mut self, key: &str, value: u64, range: RangeInclusive<u64>) -> u64 {
        if !range.contains(&value) {
            let message = if *range.end() == u64::MAX {
                format!("must be at least {}, got {value}", range.start())
            } else {
                format!(
                    "must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                )
            };
            self.push(key, message);
        }
        value
    }

    fn range_u32(&mut self, key: &str, value: u64, range: RangeInclusive<u32>) -> u32 {
        let wide = u64::from(*range.start())..=u64::from(*range.end());
        u32::try_from(self.range(key, value, wide)).unwrap_or(*range.end())
    }

    fn millis(&mut self, key: &str, value: u64, range: RangeInclusive<u64>) -> Duration {
        Duration::from_millis(self.range(key, value, range))
    }

    fn secs(&mut self, key: &str, value: u64, range: RangeInclusive<u64>) -> Duration {
        Duration::from_secs(self.range(key, value, range))
    }

    /// A path key: empty means unset.
    fn optional_path(text: &str) -> Option<PathBuf> {
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    fn rate_limit(&mut self, key: &str, value: Option<u64>) -> Option<NonZeroU32> {
        let value = self.range_u32(key, value?, 1..=u32::MAX);
        Some(NonZeroU32::new(value).unwrap_or(NonZeroU32::MIN))
    }

    fn keyword<T: FromStr<Err = UnknownKeyword>>(&mut self, key: &str, text: &str) -> Option<T> {
        text.parse()
            .map_err(|err: UnknownKeyword| self.push(key, err.to_string()))
            .ok()
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.push(
                key,
                format!(
                    "expected an IP address and port such as 127.0.0.1:8080 \
                     (host names are not resolved), got `{text}`"
                ),
            );
        }
        parsed
    }

    /// Checks a source's or destination's name: present, URL-safe, unique among `seen`.
    fn name(
        &mut self,
        at: &str,
        name: Option<&str>,
        seen: &mut BTreeMap<String, String>,
    ) -> String {
        let key = format!("{at}.name");
        let Some(name) = name else {
            self.push(key, "required");
            return String::new();
        };
        if !is_valid_name(name) {
            self.push(
                &key,
                format!(
                    "expected 1 to {MAX_NAME_LEN} of a-z, 0-9, `_` and `-` \
                     (names appear in URLs), got `{name}`"
                ),
            );
        } else if let Some(first) = seen.get(name) {
            self.push(
                &key,
                format!("duplicate name `{name}`, already used by {first}"),
            );
        } else {
            seen.insert(name.to_owned(), at.to_owned());
        }
        name.to_owned()
    }

    /// Decodes a Standard Webhooks secret: `whsec_` followed by base64.
    fn whsec(&mut self, key: &str, text: &str) -> Secret {
        let decoded = match text.strip_prefix("whsec_") {
            None => Err("expected `whsec_` followed by base64".to_owned()),
            Some(encoded) => match BASE64.decode(encoded) {
                Ok(bytes) if bytes.is_empty() => Err("the key after `whsec_` is empty".to_owned()),
                Ok(bytes) => Ok(bytes),
                Err(err) => Err(format!("the key after `whsec_` is not valid base64: {err}")),
            },
        };
        Secret(decoded.unwrap_or_else(|message| {
            self.push(key, message);
            Vec::new()
        }))
    }

    /// Checks a bearer token's form and uniqueness (`seen` maps tokens to where they were set).
    fn token(&mut self, key: &str, token: &str, seen: &mut BTreeMap<String, String>) {
        if token.len() < MIN_TOKEN_LEN {
            self.push(
                key,
                format!("must be at least {MIN_TOKEN_LEN} characters long"),
            );
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            // It travels in an `Authorization` header.
            self.push(key, "must be visible ASCII characters, without spaces");
        } else if let Some(first) = seen.get(token) {
            self.push(
                key,
                format!("same token as {first}; each token must be distinct"),
            );
        } else {
            seen.insert(token.to_owned(), key.to_owned());
        }
    }

    /// Checks an HTTP header name; returns it lowercase.
    fn header_name(&mut self, key: &str, name: &str) -> String {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            self.push(key, format!("expected an HTTP header name, got `{name}`"));
        }
        name.to_ascii_lowercase()
    }
}

fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl RawServer {
    fn validate(&self, host_name: &str, p: &mut Problems) -> ServerConfig {
        let placeholder = SocketAddr::from(([0, 0, 0, 0], 0));
        let ingest_listen = p.socket_addr("server.ingest_listen", &self.ingest_listen);
        let api_listen = p.socket_addr("server.api_listen", &self.api_listen);
        if let (Some(ingest), Some(api)) = (ingest_listen, api_listen)
            && ports_collide(ingest, api)
        {
            p.push(
                "server.api_listen",
                format!("must not share a port with server.ingest_listen ({ingest})"),
            );
        }
        let max_body_bytes = p.range(
            "server.max_body_bytes",
            self.max_body_bytes,
            1..=MAX_BODY_BYTES,
        );
        let max_connections =
            p.range_u32("server.max_connections", self.max_connections, 1..=u32::MAX);
        ServerConfig {
            ingest_listen: ingest_listen.unwrap_or(placeholder),
            api_listen: api_listen.unwrap_or(placeholder),
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            shutdown_grace: p.millis(
                "server.shutdown_grace_ms",
                self.shutdown_grace_ms,
                0..=TEN_MINUTES_MS,
            ),
            header_read_timeout: p.millis(
                "server.header_read_timeout_ms",
                self.header_read_timeout_ms,
                1..=TEN_MINUTES_MS,
            ),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            tls: self.tls(p),
            node_name: self.node_name(host_name, p),
        }
    }

    fn tls(&self, p: &mut Problems) -> Option<TlsFiles> {
        let cert = Problems::optional_path(&self.tls_cert);
        let key = Problems::optional_path(&self.tls_key);
        match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                p.push("server.tls_key", "required when server.tls_cert is set");
                None
            }
            (None, Some(_)) => {
                p.push("server.tls_cert", "required when server.tls_key is set");
                None
            }
        }
    }

    fn node_name(&self, host_name: &str, p: &mut Problems) -> String {
        if self.node_name.is_empty() {
            return host_name.to_owned();
        }
        // It labels metrics and alerts: one visible word.
        let visible = !self
            .node_name
            .contains(|c: char| c.is_whitespace() || c.is_control());
        if !visible || self.node_name.len() > MAX_NODE_NAME_LEN {
            p.push(
                "server.node_name",
                format!(
                    "expected at most {MAX_NODE_NAME_LEN} bytes without spaces or control \
                     characters, got `{}`",
                    self.node_name.escape_debug()
                ),
            );
        }
        self.node_name.clone()
    }
}

/// Whether binding both addresses would fail. Port 0 picks a free port, so it never collides.
fn ports_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl RawStorage {
    fn validate(&self, p: &mut Problems) -> StorageConfig {
        let backend = match p.keyword::<BackendName>("storage.backend", &self.backend) {
            Some(BackendName::Postgres) => {
                if self.postgres_url.is_empty() {
                    p.push(
                        "storage.postgres_url",
                        "required when storage.backend = \"postgres\"",
                    );
                } else if let Err(problem) = check_postgres_url(&self.postgres_url) {
                    // Not echoed: the URL may hold a password.
                    p.push("storage.postgres_url", problem);
                }
                StorageBackend::Postgres {
                    url: PostgresUrl(self.postgres_url.clone()),
                }
            }
            Some(BackendName::Redb) | None => {
                if self.path.is_empty() {
                    p.push("storage.path", "must not be empty");
                }
                if !self.postgres_url.is_empty() {
                    p.push(
                        "storage.postgres_url",
                        "only applies to storage.backend = \"postgres\", not \"redb\"",
                    );
                }
                StorageBackend::Redb
            }
        };
        let interval = p.range(
            "storage.maintenance_interval_secs",
            self.maintenance_interval_secs,
            60..=31_536_000,
        );
        StorageConfig {
            backend,
            path: PathBuf::from(&self.path),
            maintenance_interval: Duration::from_secs(interval),
        }
    }
}

impl RawApi {
    fn validate(&self, p: &mut Problems) -> ApiConfig {
        let mut tokens = Vec::new();
        // Name → where it was configured, for duplicate reports; likewise token → where.
        let mut names = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        if self.token.is_empty() {
            if self.tokens.is_empty() {
                p.push(
                    "api.token",
                    "no API token configured: set [api] token or add [[api.tokens]]",
                );
            }
        } else {
            p.token("api.token", &self.token, &mut secrets);
            names.insert("admin".to_owned(), "api.token".to_owned());
            tokens.push(ApiToken {
                name: "admin".to_owned(),
                token: Secret::from(self.token.as_str()),
                scopes: Scope::ALL.to_vec(),
            });
        }
        for (i, raw) in self.tokens.iter().enumerate() {
            let at = format!("api.tokens[{i}]");
            let name = match raw.name.as_deref() {
                None | Some("") => {
                    p.push(format!("{at}.name"), "required");
                    String::new()
                }
                Some(name) => {
                    if let Some(first) = names.get(name) {
                        let message =
                            format!("duplicate token name `{name}`, already used by {first}");
                        p.push(format!("{at}.name"), message);
                    } else {
                        names.insert(name.to_owned(), at.clone());
                    }
                    name.to_owned()
                }
            };
            let token = if let Some(token) = raw.token.as_deref() {
                p.token(&format!("{at}.token"), token, &mut secrets);
                token
            } else {
                p.push(format!("{at}.token"), "required");
                ""
            };
            if raw.scopes.is_empty() {
                let message = format!("must list at least one of: {}", Scope::NAMES.join(", "));
                p.push(format!("{at}.scopes"), message);
            }
            let mut scopes: Vec<Scope> = raw
                .scopes
                .iter()
                .enumerate()
                .filter_map(|(j, scope)| p.keyword(&format!("{at}.scopes[{j}]"), scope))
                .collect();
            scopes.sort_unstable();
            scopes.dedup();
            tokens.push(ApiToken {
                name,
                token: Secret::from(token),
                scopes,
            });
        }
        ApiConfig { tokens }
    }
}

impl RawDelivery {
    fn validate(&self, p: &mut Problems) -> DeliveryConfig {
        let max_attempts = p.range_u32("delivery.max_attempts", self.max_attempts, MAX_ATTEMPTS);
        let backoff_base = p.millis(
            "delivery.backoff_base_ms",
            self.backoff_base_ms,
            1..=u64::MAX,
        );
        let backoff_max = p.millis("delivery.backoff_max_ms", self.backoff_max_ms, 1..=u64::MAX);
        if backoff_base > backoff_max {
            p.push(
                "delivery.backoff_base_ms",
                format!(
                    "must not exceed delivery.backoff_max_ms ({})",
                    self.backoff_max_ms
                ),
            );
        }
        DeliveryConfig {
            max_attempts,
            backoff_base,
            backoff_max,
            timeout: p.millis("delivery.timeout_ms", self.timeout_ms, TIMEOUT_MS),
            auto_recover: self.auto_recover,
            allow_private_destinations: self.allow_private_destinations,
            ca_file: Problems::optional_path(&self.ca_file),
        }
    }
}

impl RawCircuitBreaker {
    fn validate(&self, p: &mut Problems) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: p.range_u32(
                "circuit_breaker.failure_threshold",
                self.failure_threshold,
                1..=u32::MAX,
            ),
            open: p.millis("circuit_breaker.open_ms", self.open_ms, 1..=u64::MAX),
        }
    }
}

impl RawSource {
    fn validate(
        &self,
        at: &str,
        names: &mut BTreeMap<String, String>,
        p: &mut Problems,
    ) -> SourceConfig {
        let name = p.name(at, self.name.as_deref(), names);
        let scheme_name = p.keyword::<SchemeName>(&format!("{at}.scheme"), &self.scheme);
        let scheme = scheme_name.map_or(SchemeConfig::StandardWebhooks, |scheme_name| {
            self.scheme(at, scheme_name, p)
        });
        let texts: Vec<(String, &str)> = match (&self.secret, &self.secrets) {
            (Some(_), Some(_)) => {
                p.push(
                    format!("{at}.secrets"),
                    "set either `secret` or `secrets` (for rotation), not both",
                );
                Vec::new()
            }
            (None, None) => {
                p.push(
                    format!("{at}.secret"),
                    "required (or `secrets = [...]` to rotate several)",
                );
                Vec::new()
            }
            (Some(secret), None) => vec![(format!("{at}.secret"), secret.as_str())],
            (None, Some(secrets)) => {
                if secrets.is_empty() {
                    p.push(format!("{at}.secrets"), "must list at least one secret");
                }
                let secrets = secrets.iter().enumerate();
                secrets
                    .map(|(j, secret)| (format!("{at}.secrets[{j}]"), secret.as_str()))
                    .collect()
            }
        };
        let secrets = texts
            .into_iter()
            .map(|(key, text)| {
                if scheme_name == Some(SchemeName::StandardWebhooks) {
                    p.whsec(&key, text)
                } else {
                    if text.is_empty() {
                        p.push(key, "must not be empty");
                    }
                    Secret::from(text)
                }
            })
            .collect();
        let tolerance = p.secs(
            &format!("{at}.tolerance_secs"),
            self.tolerance_secs,
            1..=86_400,
        );
        let rate_limit_per_sec =
            p.rate_limit(&format!("{at}.rate_limit_per_sec"), self.rate_limit_per_sec);
        let suppress_on = (self.suppress_on.iter())
            .filter_map(|(event_type, reason)| {
                let key = format!("{at}.suppress_on.{}", toml_key(event_type));
                if event_type.is_empty() {
                    p.push(&key, "the event type must not be empty");
                }
                Some((event_type.clone(), p.keyword(&key, reason)?))
            })
            .collect();
        SourceConfig {
            name,
            scheme,
            secrets,
            tolerance,
            rate_limit_per_sec,
            suppress_on,
        }
    }

    fn scheme(&self, at: &str, name: SchemeName, p: &mut Problems) -> SchemeConfig {
        let scheme = match name {
            SchemeName::StandardWebhooks => SchemeConfig::StandardWebhooks,
            SchemeName::Stripe => SchemeConfig::Stripe,
            SchemeName::Github => SchemeConfig::Github,
            SchemeName::Shopify => SchemeConfig::Shopify,
            SchemeName::Slack => SchemeConfig::Slack,
            SchemeName::HmacSha256 => return self.hmac_sha256(at, p),
        };
        let hmac_keys = [
            ("id_header", self.id_header.is_some()),
            ("timestamp_header", self.timestamp_header.is_some()),
            ("signature_header", self.signature_header.is_some()),
            ("encoding", self.encoding.is_some()),
            ("prefix", self.prefix.is_some()),
        ];
        for (key, _) in hmac_keys.iter().filter(|(_, set)| *set) {
            p.push(
                format!("{at}.{key}"),
                format!("only applies to scheme \"hmac-sha256\", not \"{name}\""),
            );
        }
        scheme
    }

    fn hmac_sha256(&self, at: &str, p: &mut Problems) -> SchemeConfig {
        let mut required_header = |field: &str, value: Option<&str>| {
            let key = format!("{at}.{field}");
            if let Some(name) = value {
                p.header_name(&key, name)
            } else {
                p.push(key, "required for scheme \"hmac-sha256\"");
                String::new()
            }
        };
        let id_header = required_header("id_header", self.id_header.as_deref());
        let signature_header =
            required_header("signature_header", self.signature_header.as_deref());
        let timestamp_header = (self.timestamp_header.as_deref())
            .map(|name| p.header_name(&format!("{at}.timestamp_header"), name));
        let encoding = (self.encoding.as_deref())
            .and_then(|encoding| p.keyword(&format!("{at}.encoding"), encoding))
            .unwrap_or(Encoding::Hex);
        if self.prefix.as_deref() == Some("") {
            p.push(
                format!("{at}.prefix"),
                "must not be empty; omit it for no prefix",
            );
        }
        SchemeConfig::HmacSha256 {
            id_header,
            timestamp_header,
            signature_header,
            encoding,
            prefix: self.prefix.clone(),
        }
    }
}

impl RawIngest {
    fn validate(&self, p: &mut Problems) -> IngestConfig {
        IngestConfig {
            block_after_invalid: p.range_u32(
                "ingest.block_after_invalid",
                self.block_after_invalid,
                1..=u32::MAX,
            ),
            block: p.secs("ingest.block_secs", self.block_secs, 1..=u64::MAX),
            dedupe_window: p.secs(
                "ingest.dedupe_window_secs",
                self.dedupe_window_secs,
                1..=u64::MAX,
            ),
        }
    }
}

pub(super) fn default_budgets() -> Vec<Budget> {
    vec![
        Budget {
            metric: Metric::Lcp,
            p75_max: 2500.0,
        },
        Budget {
            metric: Metric::Inp,
            p75_max: 200.0,
        },
        Budget {
            metric: Metric::Cls,
            p75_max: 0.1,
        },
    ]
}

fn validate_budgets(raw: Option<&[RawBudget]>, p: &mut Problems) -> Vec<Budget> {
    let Some(raw) = raw else {
        return default_budgets();
    };
    let mut seen = BTreeMap::new();
    let mut budgets = Vec::new();
    for (i, budget) in raw.iter().enumerate() {
        let at = format!("budgets[{i}]");
        let metric = match budget.metric.as_deref() {
            None => {
                p.push(format!("{at}.metric"), "required");
                None
            }
            Some(text) => text
                .parse::<Metric>()
                .map_err(|err| p.push(format!("{at}.metric"), format!("{err}, got `{text}`")))
                .ok(),
        };
        let p75_max = match budget.p75_max {
            None => {
                p.push(format!("{at}.p75_max"), "required");
                0.0
            }
            Some(max) => {
                if !(max.is_finite() && max > 0.0) {
                    p.push(
                        format!("{at}.p75_max"),
                        format!("must be greater than 0, got {max}"),
                    );
                }
                max
            }
        };
        let Some(metric) = metric else { continue };
        if let Some(first) = seen.get(&metric) {
            p.push(
                format!("{at}.metric"),
                format!("duplicate metric `{metric}`, already in {first}"),
            );
        } else {
            seen.insert(metric.clone(), at);
        }
        budgets.push(Budget { metric, p75_max });
    }
    budgets
}

impl RawAlerts {
    fn validate(&self, destinations: &BTreeSet<&str>, p: &mut Problems) -> AlertsConfig {
        if self.destination.is_empty() {
            return AlertsConfig { destination: None };
        }
        if !destinations.contains(self.destination.as_str()) {
            p.push(
                "alerts.destination",
                format!("`{}` is not a configured destination", self.destination),
            );
        }
        AlertsConfig {
            destination: Some(self.destination.clone()),
        }
    }
}

impl RawDestination {
    fn validate(
        &self,
        at: &str,
        names: &mut BTreeMap<String, String>,
        sources: &BTreeSet<&str>,
        delivery: &RawDelivery,
        p: &mut Problems,
    ) -> DestinationConfig {
        let allow_private = delivery.allow_private_destinations;
        let name = p.name(at, self.name.as_deref(), names);
        let url = match self.url.as_deref() {
            None => {
                p.push(format!("{at}.url"), "required");
                String::new()
            }
            Some(url) => {
                if let Err(problem) = check_url(url) {
                    p.push(format!("{at}.url"), format!("{problem}, got `{url}`"));
                } else if let Err(refusal) = ssrf::check_url(url, allow_private) {
                    // The same guard the API applies at creation (the dispatcher applies it
                    // again to every resolved address at connect time).
                    p.push(
                        format!("{at}.url"),
                        format!(
                            "{}: {refusal} (set delivery.allow_private_destinations = true to allow)",
                            ssrf::Refusal::CODE
                        ),
                    );
                }
                url.to_owned()
            }
        };
        if self.sources.is_empty() {
            p.push(
                format!("{at}.sources"),
                "must list source names, or \"*\" for every source and published messages",
            );
        }
        for (j, source) in self.sources.iter().enumerate() {
            if source != ALL_SOURCES && !sources.contains(source.as_str()) {
                p.push(
                    format!("{at}.sources[{j}]"),
                    format!("`{source}` is not a configured source"),
                );
            }
        }
        let source_filter = if self.sources.iter().any(|source| source == ALL_SOURCES) {
            SourceFilter::Any
        } else {
            let names: BTreeSet<&String> = self.sources.iter().collect();
            SourceFilter::Only(names.into_iter().cloned().collect())
        };
        let event_types = self.event_types.clone().unwrap_or_default();
        if self.event_types.as_ref().is_some_and(Vec::is_empty) {
            p.push(
                format!("{at}.event_types"),
                "must not be empty; omit it to accept every event type",
            );
        }
        for (j, pattern) in event_types.iter().enumerate() {
            if pattern.is_empty() || pattern.contains(char::is_whitespace) {
                p.push(
                    format!("{at}.event_types[{j}]"),
                    format!("expected a non-empty pattern without spaces, got `{pattern}`"),
                );
            }
        }
        let secret = match self.secret.as_deref() {
            None => {
                p.push(
                    format!("{at}.secret"),
                    "required: the outbound signing secret, `whsec_` + base64",
                );
                Secret::from(Vec::new())
            }
            Some(secret) => p.whsec(&format!("{at}.secret"), secret),
        };
        DestinationConfig {
            name,
            url,
            sources: source_filter,
            event_types,
            channel: p
                .keyword(&format!("{at}.channel"), &self.channel)
                .unwrap_or(Channel::Webhook),
            secret,
            rate_limit_per_sec: p
                .rate_limit(&format!("{at}.rate_limit_per_sec"), self.rate_limit_per_sec),
            policy: self.policy(at, delivery, p),
            headers: self.headers(at, p),
        }
    }

    /// The `[delivery]` overrides, within `[delivery]`'s bounds; the base delay must not exceed
    /// the maximum that applies to this destination, its own or `[delivery]`'s.
    fn policy(&self, at: &str, delivery: &RawDelivery, p: &mut Problems) -> PolicyOverrides {
        let key = |field: &str| format!("{at}.{field}");
        let overrides = PolicyOverrides {
            timeout: (self.timeout_ms).map(|ms| p.millis(&key("timeout_ms"), ms, TIMEOUT_MS)),
            max_attempts: (self.max_attempts)
                .map(|n| p.range_u32(&key("max_attempts"), n, MAX_ATTEMPTS)),
            backoff_base: (self.backoff_base_ms)
                .map(|ms| p.millis(&key("backoff_base_ms"), ms, 1..=u64::MAX)),
            backoff_max: (self.backoff_max_ms)
                .map(|ms| p.millis(&key("backoff_max_ms"), ms, 1..=u64::MAX)),
        };
        if self.backoff_base_ms.is_some() || self.backoff_max_ms.is_some() {
            let base = self.backoff_base_ms.unwrap_or(delivery.backoff_base_ms);
            let max = self.backoff_max_ms.unwrap_or(delivery.backoff_max_ms);
            // Zero is already reported; a comparison with it would only repeat that.
            if base > max && max > 0 {
                let (at_key, other) = if self.backoff_base_ms.is_some() {
                    let other = if self.backoff_max_ms.is_some() {
                        key("backoff_max_ms")
                    } else {
                        "delivery.backoff_max_ms".to_owned()
                    };
                    (key("backoff_base_ms"), other)
                } else {
                    (key("backoff_max_ms"), "delivery.backoff_base_ms".to_owned())
                };
                let message = if self.backoff_base_ms.is_some() {
                    format!("must not exceed {other} ({max})")
                } else {
                    format!("must not be below {other} ({base})")
                };
                p.push(at_key, message);
            }
        }
        overrides
    }

    fn headers(&self, at: &str, p: &mut Problems) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let key = format!("{at}.headers.{}", toml_key(name));
            match check_static_header(name, value) {
                Ok((name, value)) => {
                    // TOML keys are case-sensitive, header names are not.
                    if let Some(first) = seen.get(name.as_str()) {
                        p.push(&key, format!("same header name as {first}"));
                    } else {
                        seen.insert(name.as_str().to_owned(), key);
                        headers.push((name, value));
                    }
                }
                Err(refusal) => p.push(key, refusal.to_string()),
            }
        }
        headers.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        headers
    }
}

/// A light check of a `postgres://` or `postgresql://` URL: the driver parses it fully when it
/// connects. Hosts may be listed comma-separated, or given as `?host=` (a socket directory).
fn check_postgres_url(url: &str) -> Result<(), &'static str> {
    let rest = ["postgresql://", "postgres://"]
        .into_iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or("expected a postgres:// or postgresql:// URL")?;
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let (authority, after) = rest
        .find(['/', '?'])
        .map_or((rest, ""), |at| rest.split_at(at));
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    if hosts.is_empty() && !after.contains("host=") {
        return Err("has no host (name one, or a socket directory with `?host=`)");
    }
    for host_port in hosts.split(',').filter(|host| !host.is_empty()) {
        let port = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (_, after) = bracketed.split_once(']').ok_or("unclosed `[` in a host")?;
            after.strip_prefix(':')
        } else {
            host_port.split_once(':').map(|(_, port)| port)
        };
        if port.is_some_and(|port| port.parse::<u16>().is_err()) {
            return Err("has an invalid port");
        }
    }
    Ok(())
}

/// A light check that `url` is absolute `http(s)` with a host (and a valid port if any).
pub(super) fn check_url(url: &str) -> Result<(), &'static str> {
    let scheme_len = ["http://", "https://"]
        .into_iter()
        .find(|scheme| {
            url.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        })
        .map(str::len)
        .ok_or("expected an http:// or https:// URL")?;
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let rest = url.get(scheme_len..).unwrap_or_default();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        // An IPv6 literal: `[::1]:9000`.
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("unclosed `[` in the host")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("unexpected text after the host")?,
            ),
        };
        (host, port)
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err("has an invalid port");
    }
    Ok(())
}

/// The `tracing` levels, as `EnvFilter` spells them.
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `tracing` `EnvFilter` directive list as `serve` will parse it, and more strictly:
/// a bare word must be a level. `EnvFilter` would read `nonsense` as "everything in a target
/// named `nonsense`", which logs nothing and is always a typo; a target is written
/// `target=level`.
fn check_log_filter(filter: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|err| err.to_string())?;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare
            && !LOG_LEVELS
                .iter()
                .any(|level| directive.eq_ignore_ascii_case(level))
        {
            return Err(format!(
                "`{directive}` is not a level ({}); enable a target with `{directive}=<level>`",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

impl RawLog {
    fn validate(&self, p: &mut Problems) -> LogConfig {
        if self.level.trim().is_empty() {
            p.push("log.level", "must not be empty (e.g. \"info\")");
        } else if let Err(problem) = check_log_filter(&self.level) {
            p.push(
                "log.level",
                format!(
                    "expected a tracing filter such as \"info\" or \"info,herald=debug\": {problem}"
                ),
            );
        }
        LogConfig {
            format: p
                .keyword("log.format", &self.format)
                .unwrap_or(LogFormat::Human),
            level: self.level.clone(),
        }
    }
}
