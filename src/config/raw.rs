//! Stage 3: the file as written, section by section, into serde structs.
//!
//! Every struct denies unknown fields and gives every key but the secrets a default. A value
//! that does not deserialize (an unknown key, a wrong type, a negative count) is reported at
//! its dotted key, taken out of the section, and the section read again; so the section's
//! other values still reach validation, and one run reports every problem. Each retry removes
//! one value, so reading ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::{BackendName, Channel, ConfigError, LogFormat, SchemeName};

// `Serialize` is only for `RawConfig::default()`, which doubles as the schema of the
// environment overrides: which keys exist and of which type. Every section key therefore has
// a non-`None` default, else it could not be overridden.
#[derive(Debug, Default, Serialize)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) storage: RawStorage,
    pub(super) api: RawApi,
    pub(super) delivery: RawDelivery,
    pub(super) circuit_breaker: RawCircuitBreaker,
    pub(super) sources: Vec<RawSource>,
    pub(super) ingest: RawIngest,
    /// `None` (absent) means the default budgets; `Some(vec![])` means none.
    pub(super) budgets: Option<Vec<RawBudget>>,
    pub(super) alerts: RawAlerts,
    pub(super) destinations: Vec<RawDestination>,
    pub(super) log: RawLog,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawServer {
    pub(super) ingest_listen: String,
    pub(super) api_listen: String,
    pub(super) max_body_bytes: u64,
    pub(super) shutdown_grace_ms: u64,
    pub(super) header_read_timeout_ms: u64,
    pub(super) max_connections: u64,
    /// Empty: no TLS. With `tls_key`, or neither.
    pub(super) tls_cert: String,
    pub(super) tls_key: String,
    /// Empty: the host name.
    pub(super) node_name: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            ingest_listen: "127.0.0.1:8080".to_owned(),
            api_listen: "127.0.0.1:8081".to_owned(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            header_read_timeout_ms: 5_000,
            max_connections: 10_000,
            tls_cert: String::new(),
            tls_key: String::new(),
            node_name: String::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawStorage {
    pub(super) backend: String,
    pub(super) path: String,
    /// Empty: none; required for the `postgres` backend.
    pub(super) postgres_url: String,
    pub(super) maintenance_interval_secs: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            backend: BackendName::Redb.as_str().to_owned(),
            path: "data/herald.redb".to_owned(),
            postgres_url: String::new(),
            maintenance_interval_secs: 604_800,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawApi {
    /// Empty: no `admin` token.
    pub(super) token: String,
    pub(super) tokens: Vec<RawApiToken>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawApiToken {
    pub(super) name: Option<String>,
    pub(super) token: Option<String>,
    pub(super) scopes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawDelivery {
    pub(super) max_attempts: u64,
    pub(super) backoff_base_ms: u64,
    pub(super) backoff_max_ms: u64,
    pub(super) timeout_ms: u64,
    pub(super) auto_recover: bool,
    pub(super) allow_private_destinations: bool,
    /// Empty: Mozilla's roots only.
    pub(super) ca_file: String,
}

impl Default for RawDelivery {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 3_600_000,
            timeout_ms: 10_000,
            auto_recover: true,
            allow_private_destinations: false,
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCircuitBreaker {
    pub(super) failure_threshold: u64,
    pub(super) open_ms: u64,
}

impl Default for RawCircuitBreaker {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSource {
    pub(super) name: Option<String>,
    pub(super) scheme: String,
    pub(super) secret: Option<String>,
    pub(super) secrets: Option<Vec<String>>,
    pub(super) tolerance_secs: u64,
    pub(super) rate_limit_per_sec: Option<u64>,
    pub(super) suppress_on: BTreeMap<String, String>,
    pub(super) id_header: Option<String>,
    pub(super) timestamp_header: Option<String>,
    pub(super) signature_header: Option<String>,
    pub(super) encoding: Option<String>,
    pub(super) prefix: Option<String>,
}

impl Default for RawSource {
    fn default() -> Self {
        Self {
            name: None,
            scheme: SchemeName::StandardWebhooks.as_str().to_owned(),
            secret: None,
            secrets: None,
            tolerance_secs: 300,
            rate_limit_per_sec: None,
            suppress_on: BTreeMap::new(),
            id_header: None,
            timestamp_header: None,
            signature_header: None,
            encoding: None,
            prefix: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawIngest {
    pub(super) block_after_invalid: u64,
    pub(super) block_secs: u64,
    pub(super) dedupe_window_secs: u64,
}

impl Default for RawIngest {
    fn default() -> Self {
        Self {
            block_after_invalid: 20,
            block_secs: 600,
            dedupe_window_secs: 7 * 24 * 60 * 60,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawBudget {
    pub(super) metric: Option<String>,
    pub(super) p75_max: Option<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAlerts {
    /// Empty: no alerts.
    pub(super) destination: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawDestination {
    pub(super) name: Option<String>,
    pub(super) url: Option<String>,
    pub(super) sources: Vec<String>,
    pub(super) event_types: Option<Vec<String>>,
    pub(super) channel: String,
    pub(super) secret: Option<String>,
    pub(super) rate_limit_per_sec: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) max_attempts: Option<u64>,
    pub(super) backoff_base_ms: Option<u64>,
    pub(super) backoff_max_ms: Option<u64>,
    pub(super) headers: BTreeMap<String, String>,
}

impl Default for RawDestination {
    fn default() -> Self {
        Self {
            name: None,
            url: None,
            sources: Vec::new(),
            event_types: None,
            channel: Channel::Webhook.as_str().to_owned(),
            secret: None,
            rate_limit_per_sec: None,
            timeout_ms: None,
            max_attempts: None,
            backoff_base_ms: None,
            backoff_max_ms: None,
            headers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawLog {
    pub(super) format: String,
    pub(super) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Human.as_str().to_owned(),
            level: "info".to_owned(),
        }
    }
}

/// What stage 3 produced.
pub(super) struct Sections {
    /// `None` when a value could not be taken out to read the rest (reported).
    pub(super) raw: Option<RawConfig>,
    /// The keys whose values were taken out: validation saw defaults there.
    pub(super) replaced: Vec<String>,
}

/// Deserializes each section on its own, reporting each value that does not fit.
pub(super) fn read_sections(table: Table, problems: &mut Vec<ConfigError>) -> Sections {
    let mut reader = SectionReader {
        table,
        known: Vec::new(),
        problems,
        replaced: Vec::new(),
        failed: false,
    };
    let raw = RawConfig {
        server: reader.read("server"),
        storage: reader.read("storage"),
        api: reader.read("api"),
        delivery: reader.read("delivery"),
        circuit_breaker: reader.read("circuit_breaker"),
        sources: reader.read("sources"),
        ingest: reader.read("ingest"),
        budgets: reader.read("budgets"),
        alerts: reader.read("alerts"),
        destinations: reader.read("destinations"),
        log: reader.read("log"),
    };
    let (ok, replaced) = reader.finish();
    Sections {
        raw: ok.then_some(raw),
        replaced,
    }
}

struct SectionReader<'p> {
    /// What is left of the file: unread sections.
    table: Table,
    known: Vec<&'static str>,
    problems: &'p mut Vec<ConfigError>,
    replaced: Vec<String>,
    failed: bool,
}

/// One step of a path into a TOML value.
enum Step {
    Key(String),
    Index(usize),
}

impl SectionReader<'_> {
    fn read<T: DeserializeOwned + Default>(&mut self, name: &'static str) -> T {
        self.known.push(name);
        let Some(mut value) = self.table.remove(name) else {
            return T::default();
        };
        loop {
            let err = match serde_path_to_error::deserialize(value.clone()) {
                Ok(section) => return section,
                Err(err) => err,
            };
            let (problem, steps, unknown) = deserialize_error(name, &err);
            let key = problem.key.clone();
            self.problems.push(problem);
            if !unknown {
                self.replaced.push(key);
            }
            match steps.as_deref() {
                // The section itself has the wrong type: read it as absent.
                Some([]) => return T::default(),
                Some(steps) if take_out(&mut value, steps) => {}
                // Not seen with the paths serde reports; give up on validation rather than
                // loop or validate around a value that is still wrong.
                _ => {
                    self.failed = true;
                    return T::default();
                }
            }
        }
    }

    /// Reports the keys no section claimed; whether validation can run, and the keys whose
    /// values were taken out.
    fn finish(self) -> (bool, Vec<String>) {
        let expected = self.known.join("`, `");
        for name in self.table.keys() {
            self.problems.push(ConfigError::new(
                toml_key(name),
                format!("unknown key, expected one of `{expected}`"),
            ));
        }
        (!self.failed, self.replaced)
    }
}

/// Takes the value at `steps` out of `value`, so the rest can be read without it: a table
/// entry is removed (its key then reads as absent); a bad element of an array of tables
/// becomes an empty table (indices stay as written); any other bad element takes its whole
/// array with it. Whether anything changed.
fn take_out(value: &mut Value, steps: &[Step]) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let Some(parent) = descend(value, parents) else {
        return false;
    };
    match (last, parent) {
        (Step::Key(key), Value::Table(table)) => table.remove(key).is_some(),
        (Step::Index(index), Value::Array(items)) => {
            let of_tables = items.iter().any(Value::is_table);
            match items.get_mut(*index) {
                Some(item) if of_tables && !item.is_table() => {
                    *item = Value::Table(Table::new());
                    true
                }
                Some(_) => take_out(value, parents),
                None => false,
            }
        }
        _ => false,
    }
}

fn descend<'v>(value: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    steps
        .iter()
        .try_fold(value, |value, step| match (step, value) {
            (Step::Key(key), Value::Table(table)) => table.get_mut(key),
            (Step::Index(index), Value::Array(items)) => items.get_mut(*index),
            _ => None,
        })
}

/// The problem, the path of the value to take out within the section (`None` if serde lost
/// track of it), and whether it is an unknown key (taking it out changes no value validation
/// sees).
fn deserialize_error(
    section: &str,
    err: &serde_path_to_error::Error<toml::de::Error>,
) -> (ConfigError, Option<Vec<Step>>, bool) {
    let mut steps = Some(Vec::new());
    let mut key = toml_key(section);
    for segment in err.path() {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(key, "[{index}]");
                if let Some(steps) = &mut steps {
                    steps.push(Step::Index(*index));
                }
            }
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                key.push('.');
                key.push_str(&toml_key(name));
                if let Some(steps) = &mut steps {
                    steps.push(Step::Key(name.clone()));
                }
            }
            Segment::Unknown => {
                key.push_str(".?");
                steps = None;
            }
        }
    }
    let message = err.inner().message();
    // serde words `deny_unknown_fields` rejections for programmers; say "key", and make sure
    // the key itself is named, not just its table.
    if let Some((field, expected)) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        let named = format!(".{}", toml_key(field));
        let already_named = key.ends_with(&named);
        if !already_named {
            key.push_str(&named);
        }
        if let Some(steps) = &mut steps {
            if already_named {
                steps.pop();
            }
            steps.push(Step::Key(field.to_owned()));
        }
        return (
            ConfigError::new(key, format!("unknown key{expected}")),
            steps,
            true,
        );
    }
    (ConfigError::new(key, message), steps, false)
}

/// `key` as written in a TOML dotted key: bare if it can be, else quoted.
pub(super) fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}
