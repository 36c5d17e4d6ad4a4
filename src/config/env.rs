//! Stage 2: `HERALD_<SECTION>_<KEY>` environment variables override scalar keys.
//!
//! Which keys exist, and their types, come from the default raw config serialized to a table
//! (so every section key has a non-`None` default). A value is parsed as the type of the key it
//! replaces, so `HERALD_API_TOKEN=12345678` stays a string.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::raw::RawConfig;
use super::{CONFIG_PATH_ENV, ConfigError};

const ENV_PREFIX: &str = "HERALD_";

/// The process's `HERALD_*` variables. `std::env::vars` would panic on a non-UTF-8 one.
pub(super) fn herald_env_vars(problems: &mut Vec<ConfigError>) -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name
                .into_string()
                .ok()
                .filter(|n| n.starts_with(ENV_PREFIX))?;
            let value = value.into_string().map_err(|_| {
                problems.push(ConfigError::new(&name, "the value is not valid UTF-8"));
            });
            Some((name, value.ok()?))
        })
        .collect()
}

/// Applies the `HERALD_<SECTION>_<KEY>` variables among `env` to `table`. Returns which
/// variable set which dotted key, so later problems with that key can name the variable.
pub(super) fn apply_overrides(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<ConfigError>,
) -> BTreeMap<String, String> {
    let mut overridden = BTreeMap::new();
    // Sorted, so problems come out in the same order whatever the environment's order.
    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(var, _)| var.starts_with(ENV_PREFIX) && var != CONFIG_PATH_ENV)
        .collect();
    if env.is_empty() {
        return overridden;
    }
    let schema = match Table::try_from(RawConfig::default()) {
        Ok(schema) => schema,
        Err(err) => {
            problems.push(ConfigError::new(
                format!("{ENV_PREFIX}*"),
                format!("internal error: cannot list the overridable keys: {err}"),
            ));
            return overridden;
        }
    };
    for (var, text) in env {
        match env_override(&schema, &var, &text) {
            Ok((section, key, value)) => {
                // A section that is not a table is reported when it is deserialized.
                let entry = table
                    .entry(section)
                    .or_insert_with(|| Value::Table(Table::new()));
                if let Value::Table(entries) = entry {
                    entries.insert(key.to_owned(), value);
                }
                overridden.insert(format!("{section}.{key}"), var);
            }
            Err(problem) => problems.push(problem),
        }
    }
    overridden
}

/// Resolves one variable against `schema` (the default config as a table) into its section,
/// key, and value typed like the key's default.
fn env_override<'s>(
    schema: &'s Table,
    var: &str,
    text: &str,
) -> Result<(&'s str, &'s str, Value), ConfigError> {
    let lowercase = var
        .get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let sections: Vec<(&str, &Table)> = schema
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.as_table()?)))
        .collect();
    // Section names contain underscores (`circuit_breaker`), so match them whole; the longest
    // wins should one ever be a prefix of another.
    let Some((section, keys, key)) = (sections.iter())
        .filter_map(|&(name, keys)| {
            let key = lowercase.strip_prefix(name)?.strip_prefix('_')?;
            Some((name, keys, key))
        })
        .max_by_key(|(name, _, _)| name.len())
    else {
        let names: Vec<&str> = sections.iter().map(|&(name, _)| name).collect();
        return Err(ConfigError::new(
            var,
            format!(
                "names no config key: expected HERALD_<SECTION>_<KEY> with a section among {}",
                names.join(", ")
            ),
        ));
    };
    let Some((key, default)) = keys.get_key_value(key) else {
        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
        return Err(ConfigError::new(
            var,
            format!(
                "names no config key: [{section}] has no key `{key}`; its keys are {}",
                names.join(", ")
            ),
        ));
    };
    let parsed = match default {
        Value::String(_) => Ok(Value::String(text.to_owned())),
        Value::Integer(_) => text.parse().map(Value::Integer).map_err(|_| "an integer"),
        Value::Float(_) => text.parse().map(Value::Float).map_err(|_| "a number"),
        Value::Boolean(_) => text
            .parse()
            .map(Value::Boolean)
            .map_err(|_| "true or false"),
        Value::Datetime(_) => text.parse().map(Value::Datetime).map_err(|_| "a date-time"),
        Value::Array(_) | Value::Table(_) => {
            return Err(ConfigError::new(
                var,
                format!("`{section}.{key}` is not a scalar key; set it in the config file"),
            ));
        }
    };
    match parsed {
        Ok(value) => Ok((section, key.as_str(), value)),
        Err(expected) => Err(ConfigError::new(
            format!("{section}.{key}"),
            format!("expected {expected}, got `{text}` (set by {var})"),
        )),
    }
}
