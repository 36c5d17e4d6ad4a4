//! Configuration: one TOML file, overridable from the environment, validated up front.
//!
//! Loading is a pipeline of stages, one module each, with one job each:
//!
//! 1. **Parse** the file into a [`toml::Table`] (here).
//! 2. **Override** ([`env`]) scalar keys of the top-level sections from
//!    `HERALD_<SECTION>_<KEY>` environment variables (`HERALD_SERVER_INGEST_LISTEN`,
//!    `HERALD_CIRCUIT_BREAKER_OPEN_MS`). A value takes the type of the key it replaces, so
//!    `HERALD_API_TOKEN=12345678` stays a string. A variable that names no such key is an
//!    error; [`CONFIG_PATH_ENV`] is the file's path, not an override.
//! 3. **Deserialize** ([`raw`]) each section into a raw serde struct mirroring the file, with
//!    `#[serde(deny_unknown_fields)]` and a default for every key but the secrets. A value
//!    that does not fit (an unknown key, a wrong type) is reported, taken out, and the section
//!    read again, so the rest of it still reaches validation: one run reports unknown keys and
//!    bad values together.
//! 4. **Validate** ([`validate`]): a pure function from the raw structs to a [`Config`] that
//!    checks every value and cross-reference, collecting *every* problem instead of stopping
//!    at the first. A problem at a key already reported in stage 3 (whose value was taken out,
//!    so validation saw a default) is not reported twice.
//! 5. **Check files** ([`files`]): the certificate, key and CA files the config names are
//!    read, so a typo in a path is found by `check-config`, not at the first TLS handshake.
//!
//! Each problem names its key (`sources[1].secret: ...`, `server.ingest_listen: ...`) and
//! [`ConfigErrors`] prints one per line. The rest of the program only sees a [`Config`] that
//! passed validation: addresses are [`SocketAddr`]s, keywords are enums, secrets are decoded
//! keys, and durations are [`Duration`]s named after their key minus the unit
//! (`open_ms` → `open`).
//!
//! The committed `config.toml` documents every key at its default; a unit test keeps it and
//! the defaults here in step.

mod env;
mod files;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_actors::perf::budgets::Budget;
use herald_actors::verifier::schemes::SourceRule;
use toml::Table;

/// The environment variable holding the config file's path. It is not an override.
pub const CONFIG_PATH_ENV: &str = "HERALD_CONFIG";

/// `server.node_name` when neither the file nor the machine names one.
const FALLBACK_NODE_NAME: &str = "herald";

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// Reads the config file at `path`, applies `HERALD_*` overrides from the process
/// environment, and validates the result.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors(vec![ConfigError::new(
            &origin,
            format!("cannot read the config file: {err}"),
        )])
    })?;
    let mut problems = Vec::new();
    let vars = env::herald_env_vars(&mut problems);
    load_text(&text, &origin, vars, problems)
}

/// Like [`load`], from a string and with the `HERALD_*` variables passed in. It still reads
/// the files the config names (certificates, CA bundle) and the machine's host name (the
/// default `server.node_name`).
pub fn load_from_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    load_text(text, "<config>", env, Vec::new())
}

fn load_text(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
    mut problems: Vec<ConfigError>,
) -> Result<Config, ConfigErrors> {
    let mut table = match text.parse::<Table>() {
        Ok(table) => table,
        Err(err) => {
            problems.push(syntax_error(origin, text, &err));
            return Err(ConfigErrors(problems));
        }
    };
    let overridden = env::apply_overrides(&mut table, env, &mut problems);
    let sections = raw::read_sections(table, &mut problems);
    if let Some(raw) = &sections.raw {
        let validated = validate::validate(raw, &host_name());
        let file_problems = files::check(raw);
        let found = match validated {
            Ok(config) if problems.is_empty() && file_problems.is_empty() => return Ok(config),
            Ok(_) => file_problems,
            Err(mut found) => {
                found.extend(file_problems);
                found
            }
        };
        // A key whose value stage 3 took out was validated at its default: its real problem
        // is already reported.
        problems.extend(
            found.into_iter().filter(|problem| {
                !(sections.replaced.iter()).any(|key| related(&problem.key, key))
            }),
        );
    }
    for problem in &mut problems {
        if let Some(var) = overridden.get(&problem.key) {
            problem.message = format!("{} (set by {var})", problem.message);
        }
    }
    Err(ConfigErrors(problems))
}

/// Whether one dotted key is the other, or contains it (`a.b` and `a.b[2]`, `a` and `a.b`).
fn related(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long.strip_prefix(short)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The machine's host name, for the default `server.node_name`: the kernel's, else
/// `$HOSTNAME`, else [`FALLBACK_NODE_NAME`].
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| FALLBACK_NODE_NAME.to_owned())
}

fn syntax_error(origin: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    let key = match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
            let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
            format!("{origin}:{line}:{column}")
        }
        None => origin.to_owned(),
    };
    ConfigError::new(key, format!("invalid TOML: {}", err.message()))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The dotted key concerned (`sources[1].secret`), an environment variable's name, or for
    /// problems with the file as a whole, its path (with `:line:column` for syntax errors).
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Every problem found, in file order; never empty. Displays as one `key: message` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    pub fn as_slice(&self) -> &[ConfigError] {
        &self.0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

// ---------------------------------------------------------------------------------------------
// The validated configuration
// ---------------------------------------------------------------------------------------------

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub api: ApiConfig,
    pub delivery: DeliveryConfig,
    pub circuit_breaker: CircuitBreakerConfig,
    pub sources: Vec<SourceConfig>,
    pub ingest: IngestConfig,
    /// Performance budgets; the LCP/INP/CLS defaults when the file lists none, none at all
    /// for `budgets = []`.
    pub budgets: Vec<Budget>,
    pub alerts: AlertsConfig,
    pub destinations: Vec<DestinationConfig>,
    pub log: LogConfig,
}

impl Config {
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|source| source.name == name)
    }

    pub fn destination(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations
            .iter()
            .find(|destination| destination.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Public: partner webhooks and web-vitals beacons.
    pub ingest_listen: SocketAddr,
    /// Private: publish and admin API, `/metrics`. Never the same port as `ingest_listen`.
    pub api_listen: SocketAddr,
    /// At most 64 MiB.
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// Time a client has to send its request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Per port; connections beyond it are shed.
    pub max_connections: usize,
    /// Both ports serve TLS with these, when set.
    pub tls: Option<TlsFiles>,
    /// Labels this node's metrics and alerts: as configured, else the host name, else
    /// `herald`. Never empty.
    pub node_name: String,
}

/// A certificate chain and its private key, PEM files (both readable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// The redb database file, as written (relative paths are relative to the working
    /// directory). Only used by [`StorageBackend::Redb`].
    pub path: PathBuf,
    /// How often every secondary index is verified (and rebuilt if wrong).
    pub maintenance_interval: Duration,
}

/// Where herald keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// The embedded database at [`StorageConfig::path`]: one node.
    Redb,
    /// A `PostgreSQL` database that several nodes may share.
    Postgres { url: PostgresUrl },
}

/// A `postgres://` or `postgresql://` URL with a host or socket path. It may hold a
/// password, so `Debug` hides everything after the scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split_once("://").map_or("", |(scheme, _)| scheme);
        write!(f, "PostgresUrl({scheme}://<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Never empty. `[api] token` comes first, as the token named `admin` with every scope.
    pub tokens: Vec<ApiToken>,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Unique among the tokens.
    pub name: String,
    /// The bearer token: at least 8 visible ASCII characters, unique among the tokens.
    pub token: Secret,
    /// Sorted, deduplicated, never empty.
    pub scopes: Vec<Scope>,
}

impl ApiToken {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// 1 ..= 100.
    pub max_attempts: u32,
    /// At most `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Per attempt, at most 5 minutes.
    pub timeout: Duration,
    pub auto_recover: bool,
    pub allow_private_destinations: bool,
    /// Extra trusted roots for https destinations: a readable PEM file with at least one
    /// certificate, added to Mozilla's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    pub failure_threshold: u32,
    /// How long a circuit stays open.
    pub open: Duration,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique, `[a-z0-9_-]{1,64}`: it appears in URLs.
    pub name: String,
    /// The scheme, the HMAC keys (in configured order; rotation: any verifies) and the
    /// accepted skew of signed timestamps. For `standard-webhooks` a key is the
    /// base64-decoded payload of a `whsec_` secret; for every other scheme the secret's
    /// bytes as written. `hmac-sha256` header names are lowercase.
    pub rule: SourceRule,
    pub rate_limit_per_sec: Option<NonZeroU32>,
    /// Event type → why a message of that type suppresses its recipient.
    pub suppress_on: BTreeMap<String, Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// Invalid signatures from one client before it is blocked.
    pub block_after_invalid: u32,
    /// How long a block lasts.
    pub block: Duration,
    /// Message ids are remembered at least this long.
    pub dedupe_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// The destination that receives herald's own alerts; it exists.
    pub destination: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Unique, `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// An `http://` or `https://` URL with a host (checked lightly: parse it before use).
    pub url: String,
    pub sources: SourceFilter,
    /// Glob patterns over event types; empty means every event type.
    pub event_types: Vec<String>,
    pub channel: Channel,
    /// The outbound signing key: the base64-decoded payload of its `whsec_` secret.
    pub secret: Secret,
    pub rate_limit_per_sec: Option<NonZeroU32>,
    /// Overrides of `[delivery]` for this destination, within the same bounds.
    pub policy: PolicyOverrides,
    /// Static headers sent with every attempt, names lowercase, in name order; none of them
    /// is one herald sets itself (see [`herald_actors::headers::check_static_header`]).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// A destination's own delivery policy; `None` takes the `[delivery]` value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyOverrides {
    pub timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub backoff_base: Option<Duration>,
    pub backoff_max: Option<Duration>,
}

/// Which messages a destination takes, by origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFilter {
    /// `"*"`: every source, and messages published through the API.
    Any,
    /// These configured sources only (published messages excluded). Sorted, deduplicated.
    Only(Vec<String>),
}

impl SourceFilter {
    /// Whether a message received from the source named `source` qualifies.
    pub fn matches(&self, source: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(names) => names.iter().any(|name| name == source),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` `EnvFilter` directive, checked to parse as one.
    pub level: String,
}

/// Key material. `Debug` never shows it; compare it in constant time.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

// One vocabulary everywhere: the channels and suppression reasons herald stores are parsed by
// `herald_storage`'s types, here as in the API and in webhook bodies.
pub use herald_storage::{Channel, Reason, UnknownKeyword};

use herald_storage::keyword_enum;

keyword_enum! {
    /// What an API token may do.
    pub enum Scope {
        Read = "read",
        Write = "write",
        Publish = "publish",
        Admin = "admin",
    }
}

keyword_enum! {
    /// `storage.backend`, before its URL is attached.
    enum BackendName {
        Redb = "redb",
        Postgres = "postgres",
    }
}

keyword_enum! {
    pub enum LogFormat {
        Human = "human",
        Json = "json",
    }
}

keyword_enum! {
    /// How an `hmac-sha256` signature is written.
    enum EncodingName {
        Hex = "hex",
        Base64 = "base64",
    }
}

keyword_enum! {
    enum SchemeName {
        StandardWebhooks = "standard-webhooks",
        Stripe = "stripe",
        Github = "github",
        Shopify = "shopify",
        Slack = "slack",
        HmacSha256 = "hmac-sha256",
    }
}
