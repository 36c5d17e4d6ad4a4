//! The config loader (`herald::config::load_from_str`) on arbitrary TOML text and an
//! arbitrary list of `HERALD_*` overrides: never a panic, every error formats, and a config
//! that loads also becomes the actors' settings (an infallible conversion now: validation
//! produces the actors' types).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

/// Real override names (every scalar key the loader knows), plus near misses.
const VARS: &[&str] = &[
    "HERALD_SERVER_INGEST_LISTEN",
    "HERALD_SERVER_API_LISTEN",
    "HERALD_SERVER_MAX_BODY_BYTES",
    "HERALD_SERVER_SHUTDOWN_GRACE_MS",
    "HERALD_SERVER_HEADER_READ_TIMEOUT_MS",
    "HERALD_SERVER_MAX_CONNECTIONS",
    "HERALD_STORAGE_PATH",
    "HERALD_STORAGE_MAINTENANCE_INTERVAL_SECS",
    "HERALD_API_TOKEN",
    "HERALD_API_TOKENS",
    "HERALD_DELIVERY_MAX_ATTEMPTS",
    "HERALD_DELIVERY_BACKOFF_BASE_MS",
    "HERALD_DELIVERY_BACKOFF_MAX_MS",
    "HERALD_DELIVERY_TIMEOUT_MS",
    "HERALD_DELIVERY_AUTO_RECOVER",
    "HERALD_DELIVERY_ALLOW_PRIVATE_DESTINATIONS",
    "HERALD_CIRCUIT_BREAKER_FAILURE_THRESHOLD",
    "HERALD_CIRCUIT_BREAKER_OPEN_MS",
    "HERALD_INGEST_BLOCK_AFTER_INVALID",
    "HERALD_INGEST_BLOCK_SECS",
    "HERALD_INGEST_DEDUPE_WINDOW_SECS",
    "HERALD_ALERTS_DESTINATION",
    "HERALD_LOG_FORMAT",
    "HERALD_LOG_LEVEL",
    "HERALD_SOURCES_NAME",
    "HERALD_CIRCUIT_OPEN_MS",
    "HERALD_CONFIG",
    "HERALD_",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    env: Vec<(Var<'a>, &'a str)>,
    /// Last, so that a seed is one byte (`\0`: no overrides) followed by a config file.
    text: &'a str,
}

#[derive(Arbitrary, Debug)]
enum Var<'a> {
    Known(u8),
    /// `HERALD_` followed by this.
    Other(&'a str),
}

fuzz_target!(|input: Input<'_>| {
    let env = input.env.iter().map(|(var, value)| {
        let var = match var {
            Var::Known(i) => VARS[usize::from(*i) % VARS.len()].to_owned(),
            Var::Other(rest) => format!("HERALD_{rest}"),
        };
        (var, (*value).to_owned())
    });
    match herald::config::load_from_str(input.text, env) {
        Ok(config) => {
            // Infallible by type since validation produces the actors' own types; still
            // run, so a panic in the conversion would be found.
            let _settings = herald::http::fuzzing::settings(&config);
        }
        Err(errors) => {
            assert!(!errors.as_slice().is_empty());
            assert!(!errors.to_string().is_empty());
        }
    }
});
