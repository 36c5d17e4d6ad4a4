//! Unit tests of the whole pipeline, through [`load_from_str`] as a caller sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use toml::Table;

use super::raw::RawConfig;
use super::validate::{check_url, default_budgets};
use super::*;

const TOKEN: &str = "[api]\ntoken = \"test-token\"\n";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_from_str(text, [])
}

fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    load_from_str(
        text,
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

fn ok(text: &str) -> Config {
    load(text).unwrap_or_else(|errors| panic!("expected a valid config, got:\n{errors}"))
}

/// The problems, as `(key, message)`.
fn problems(result: Result<Config, ConfigErrors>) -> Vec<(String, String)> {
    match result {
        Ok(_) => panic!("expected problems, got a valid config"),
        Err(errors) => errors.into_iter().map(|e| (e.key, e.message)).collect(),
    }
}

fn keys(result: Result<Config, ConfigErrors>) -> Vec<String> {
    problems(result).into_iter().map(|(key, _)| key).collect()
}

/// The single problem, which must be at `key`; returns its message.
fn only_problem(result: Result<Config, ConfigErrors>, key: &str) -> String {
    let problems = problems(result);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, key, "{problems:?}");
    problems[0].1.clone()
}

fn with_source(source: &str) -> String {
    format!("{TOKEN}[[sources]]\nname = \"s\"\n{source}\n")
}

#[test]
fn defaults() {
    let config = ok(TOKEN);
    assert_eq!(
        config.server,
        ServerConfig {
            ingest_listen: "127.0.0.1:8080".parse().unwrap(),
            api_listen: "127.0.0.1:8081".parse().unwrap(),
            max_body_bytes: 1_048_576,
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            tls: None,
            node_name: host_name(),
        }
    );
    assert_eq!(config.storage.path, Path::new("data/herald.redb"));
    assert_eq!(
        config.delivery,
        DeliveryConfig {
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            auto_recover: true,
            allow_private_destinations: false,
            ca_file: None,
        }
    );
    assert_eq!(
        config.circuit_breaker,
        CircuitBreakerConfig {
            failure_threshold: 5,
            open: Duration::from_secs(30)
        }
    );
    assert_eq!(
        config.ingest,
        IngestConfig {
            block_after_invalid: 20,
            block: Duration::from_secs(600),
            dedupe_window: Duration::from_secs(604_800),
        }
    );
    assert_eq!(config.budgets, default_budgets());
    assert_eq!(config.alerts, AlertsConfig { destination: None });
    assert_eq!(
        config.log,
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_owned()
        }
    );
    assert!(config.sources.is_empty());
    assert!(config.destinations.is_empty());
    let [admin] = config.api.tokens.as_slice() else {
        panic!("{:?}", config.api.tokens)
    };
    assert_eq!(admin.name, "admin");
    assert_eq!(admin.token.expose(), b"test-token");
    assert_eq!(admin.scopes, Scope::ALL);
}

#[test]
fn committed_config_validates_and_documents_the_defaults() {
    let committed = ok(include_str!("../../config.toml"));
    let defaults = ok(TOKEN);
    assert_eq!(committed.server, defaults.server);
    assert_eq!(committed.storage, defaults.storage);
    // The one deliberate difference: the demo delivers to a receiver on this machine.
    assert!(committed.delivery.allow_private_destinations);
    assert!(!defaults.delivery.allow_private_destinations);
    let delivery = DeliveryConfig {
        allow_private_destinations: false,
        ..committed.delivery.clone()
    };
    assert_eq!(delivery, defaults.delivery);
    assert_eq!(committed.circuit_breaker, defaults.circuit_breaker);
    assert_eq!(committed.ingest, defaults.ingest);
    assert_eq!(committed.budgets, defaults.budgets);
    assert_eq!(committed.alerts, defaults.alerts);
    assert_eq!(committed.log, defaults.log);

    let [source] = committed.sources.as_slice() else {
        panic!()
    };
    assert_eq!(source.name, "demo");
    assert_eq!(source.scheme, SchemeConfig::StandardWebhooks);
    assert_eq!(source.secrets[0].expose().len(), 24);
    assert_eq!(source.tolerance, Duration::from_secs(300));
    let [destination] = committed.destinations.as_slice() else {
        panic!()
    };
    assert_eq!(destination.name, "demo-receiver");
    assert_eq!(destination.sources, SourceFilter::Any);
    assert_eq!(destination.channel, Channel::Webhook);
    assert_eq!(destination.secret.expose().len(), 24);
}

#[test]
fn unknown_top_level_key_is_named() {
    let message = only_problem(load(&format!("{TOKEN}[serverr]\n")), "serverr");
    assert!(message.starts_with("unknown key"), "{message}");
    assert!(message.contains("server"), "{message}");
}

#[test]
fn unknown_nested_keys_are_named_in_full() {
    let message = only_problem(
        load(&format!("{TOKEN}[server]\ningest_listn = \"0.0.0.0:80\"\n")),
        "server.ingest_listn",
    );
    assert!(message.starts_with("unknown key"), "{message}");
    assert!(message.contains("ingest_listen"), "{message}");

    let text = format!("{TOKEN}[[sources]]\nname = \"a\"\nsecret = \"{SECRET}\"\ncolour = 1\n");
    only_problem(load(&text), "sources[0].colour");
    only_problem(
        load(&format!(
            "{TOKEN}[[api.tokens]]\nname = \"ro\"\ntoken = \"read-only-token\"\n\
             scopes = [\"read\"]\nnam = \"x\"\n"
        )),
        "api.tokens[0].nam",
    );
}

#[test]
fn wrong_type_is_named() {
    let message = only_problem(
        load(&format!("{TOKEN}[server]\nmax_body_bytes = \"big\"\n")),
        "server.max_body_bytes",
    );
    assert!(message.contains("invalid type"), "{message}");
    let message = only_problem(load(&format!("server = 5\n{TOKEN}")), "server");
    assert!(message.contains("expected a table"), "{message}");
    only_problem(
        load(&format!("{TOKEN}[delivery]\nmax_attempts = -1\n")),
        "delivery.max_attempts",
    );
}

#[test]
fn syntax_errors_name_the_position() {
    let message = only_problem(load("[server]\ningest_listen = \n"), "<config>:2:17");
    assert!(message.starts_with("invalid TOML"), "{message}");
}

#[test]
fn several_problems_are_reported_at_once() {
    // Deserialization problems in different sections.
    let text = format!(
        "{TOKEN}[server]\nmax_body_bytes = \"big\"\n[[sources]]\nname = \"a\"\nbogus = 1\n[log]\nformat = 1\n"
    );
    // A section that failed to deserialize is still validated: the source's missing secret
    // comes out in the same run.
    assert_eq!(
        keys(load(&text)),
        [
            "server.max_body_bytes",
            "sources[0].bogus",
            "log.format",
            "sources[0].secret"
        ]
    );

    // Validation problems, in file order.
    let text = "[server]\ningest_listen = \"nope\"\nmax_body_bytes = 0\n\
                [api]\ntoken = \"short\"\n\
                [delivery]\nmax_attempts = 0\nbackoff_base_ms = 10\nbackoff_max_ms = 5\n\
                [[sources]]\nname = \"Bad Name\"\nsecret = \"nope\"\ntolerance_secs = 0\n\
                [log]\nformat = \"xml\"\n";
    assert_eq!(
        keys(load(text)),
        [
            "server.ingest_listen",
            "server.max_body_bytes",
            "api.token",
            "delivery.max_attempts",
            "delivery.backoff_base_ms",
            "sources[0].name",
            "sources[0].secret",
            "sources[0].tolerance_secs",
            "log.format",
        ]
    );
}

#[test]
fn unknown_keys_and_bad_values_come_out_in_one_run() {
    // Before, the bad values were only reported once the unknown keys were fixed.
    let text = format!(
        "{TOKEN}[server]\ningest_listn = \"0.0.0.0:80\"\nmax_body_bytes = 0\n\
         [delivery]\nmax_attemps = 3\nmax_attempts = 0\n\
         [log]\nlevel = \"info,=\"\n"
    );
    assert_eq!(
        keys(load(&text)),
        [
            "server.ingest_listn",
            "delivery.max_attemps",
            "server.max_body_bytes",
            "delivery.max_attempts",
            "log.level",
        ]
    );
}

#[test]
fn a_value_of_the_wrong_type_is_reported_once() {
    // Taken out, the name reads as absent; "required" would repeat the same problem.
    let text = format!("{TOKEN}[[sources]]\nname = 5\nsecret = \"{SECRET}\"\n");
    let message = only_problem(load(&text), "sources[0].name");
    assert!(message.contains("invalid type"), "{message}");

    // An array-of-tables element that is not a table: the others still validate.
    let text = format!("sources = [5, {{ name = \"b\", secret = \"nope\" }}]\n{TOKEN}");
    assert_eq!(keys(load(&text)), ["sources[0]", "sources[1].secret"]);

    // A bad element of a list of strings: the list is reported once, at the element.
    let text = "[api]\ntoken = \"\"\n[[api.tokens]]\nname = \"ro\"\ntoken = \"read-only-token\"\n\
                scopes = [\"read\", 7]\n";
    assert_eq!(keys(load(text)), ["api.tokens[0].scopes[1]"]);

    // A section of the wrong type reads as absent, and the others are still checked.
    let text = format!("server = 5\n{TOKEN}[delivery]\nmax_attempts = 0\n");
    assert_eq!(keys(load(&text)), ["server", "delivery.max_attempts"]);
}

#[test]
fn display_is_one_line_per_problem() {
    let errors = load("[delivery]\nmax_attempts = 0\n").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "api.token: no API token configured: set [api] token or add [[api.tokens]]\n\
         delivery.max_attempts: must be between 1 and 100, got 0"
    );
}

#[test]
fn env_overrides_scalars_typed_like_their_key() {
    let config = load_env(
        TOKEN,
        &[
            ("HERALD_SERVER_INGEST_LISTEN", "0.0.0.0:9999"),
            ("HERALD_SERVER_MAX_BODY_BYTES", "2048"),
            ("HERALD_DELIVERY_AUTO_RECOVER", "false"),
            ("HERALD_CIRCUIT_BREAKER_OPEN_MS", "1234"),
            // Digits, yet the key is a string: stays a string.
            ("HERALD_API_TOKEN", "12345678"),
            ("HERALD_CONFIG", "/elsewhere/config.toml"),
            ("PATH", "/usr/bin"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.ingest_listen, "0.0.0.0:9999".parse().unwrap());
    assert_eq!(config.server.max_body_bytes, 2048);
    assert!(!config.delivery.auto_recover);
    assert_eq!(config.circuit_breaker.open, Duration::from_millis(1234));
    assert_eq!(config.api.tokens[0].token.expose(), b"12345678");
}

#[test]
fn env_overrides_beat_the_file_and_create_sections() {
    let text = format!("{TOKEN}[log]\nlevel = \"debug\"\n");
    let config = load_env(
        &text,
        &[
            ("HERALD_LOG_LEVEL", "warn"),
            ("HERALD_STORAGE_PATH", "x.redb"),
        ],
    );
    let config = config.unwrap();
    assert_eq!(config.log.level, "warn");
    assert_eq!(config.storage.path, Path::new("x.redb"));
}

#[test]
fn bad_env_overrides_name_the_variable() {
    let message = only_problem(
        load_env(TOKEN, &[("HERALD_SERVER_NOPE", "1")]),
        "HERALD_SERVER_NOPE",
    );
    assert!(
        message.contains("server.nope") || message.contains("`nope`"),
        "{message}"
    );
    only_problem(
        load_env(TOKEN, &[("HERALD_NOPE_KEY", "1")]),
        "HERALD_NOPE_KEY",
    );
    only_problem(
        load_env(TOKEN, &[("HERALD_SOURCES_0_NAME", "x")]),
        "HERALD_SOURCES_0_NAME",
    );
    only_problem(
        load_env(TOKEN, &[("HERALD_API_TOKENS", "x")]),
        "HERALD_API_TOKENS",
    );

    let message = only_problem(
        load_env(TOKEN, &[("HERALD_DELIVERY_MAX_ATTEMPTS", "many")]),
        "delivery.max_attempts",
    );
    assert!(
        message.contains("HERALD_DELIVERY_MAX_ATTEMPTS"),
        "{message}"
    );

    // A well-typed but invalid value: the validation problem names the variable too.
    let message = only_problem(
        load_env(TOKEN, &[("HERALD_DELIVERY_MAX_ATTEMPTS", "0")]),
        "delivery.max_attempts",
    );
    assert!(
        message.ends_with("(set by HERALD_DELIVERY_MAX_ATTEMPTS)"),
        "{message}"
    );
}

#[test]
fn secret_or_secrets() {
    let config = ok(&with_source(&format!("secret = \"{SECRET}\"")));
    assert_eq!(config.sources[0].secrets.len(), 1);

    let other = "whsec_AAAA";
    let config = ok(&with_source(&format!(
        "secrets = [\"{SECRET}\", \"{other}\"]"
    )));
    let decoded: Vec<&[u8]> = config.sources[0]
        .secrets
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(
        decoded,
        [BASE64.decode(&SECRET[6..]).unwrap().as_slice(), &[0, 0, 0]]
    );

    let both = format!("secret = \"{SECRET}\"\nsecrets = [\"{SECRET}\"]");
    only_problem(load(&with_source(&both)), "sources[0].secrets");
    only_problem(load(&with_source("")), "sources[0].secret");
    only_problem(load(&with_source("secrets = []")), "sources[0].secrets");

    let bad = format!("secrets = [\"{SECRET}\", \"whsec_!!\", \"plain\", \"whsec_\"]");
    assert_eq!(
        keys(load(&with_source(&bad))),
        [
            "sources[0].secrets[1]",
            "sources[0].secrets[2]",
            "sources[0].secrets[3]"
        ]
    );

    // Other schemes use the secret as written.
    let config = ok(&with_source(
        "scheme = \"stripe\"\nsecret = \"whsec_not-base64!\"",
    ));
    assert_eq!(config.sources[0].secrets[0].expose(), b"whsec_not-base64!");
    only_problem(
        load(&with_source("scheme = \"github\"\nsecret = \"\"")),
        "sources[0].secret",
    );
}

#[test]
fn hmac_sha256_requirements() {
    let bare = "scheme = \"hmac-sha256\"\nsecret = \"k\"";
    assert_eq!(
        keys(load(&with_source(bare))),
        ["sources[0].id_header", "sources[0].signature_header"]
    );

    let config = ok(&with_source(
        "scheme = \"hmac-sha256\"\nsecret = \"k\"\nid_header = \"X-Id\"\nsignature_header = \"X-Sig\"",
    ));
    assert_eq!(
        config.sources[0].scheme,
        SchemeConfig::HmacSha256 {
            id_header: "x-id".to_owned(),
            timestamp_header: None,
            signature_header: "x-sig".to_owned(),
            encoding: Encoding::Hex,
            prefix: None,
        }
    );

    let config = ok(&with_source(
        "scheme = \"hmac-sha256\"\nsecret = \"k\"\nid_header = \"x-id\"\nsignature_header = \"x-sig\"\n\
         timestamp_header = \"x-ts\"\nencoding = \"base64\"\nprefix = \"sha256=\"",
    ));
    let SchemeConfig::HmacSha256 {
        timestamp_header,
        encoding,
        prefix,
        ..
    } = &config.sources[0].scheme
    else {
        panic!()
    };
    assert_eq!(timestamp_header.as_deref(), Some("x-ts"));
    assert_eq!(*encoding, Encoding::Base64);
    assert_eq!(prefix.as_deref(), Some("sha256="));

    let bad = "scheme = \"hmac-sha256\"\nsecret = \"k\"\nid_header = \"x id\"\nsignature_header = \"x-sig\"\nencoding = \"base32\"";
    assert_eq!(
        keys(load(&with_source(bad))),
        ["sources[0].id_header", "sources[0].encoding"]
    );

    let message = only_problem(
        load(&with_source(
            "scheme = \"github\"\nsecret = \"k\"\nsignature_header = \"x-sig\"",
        )),
        "sources[0].signature_header",
    );
    assert!(message.contains("hmac-sha256"), "{message}");
    only_problem(
        load(&with_source("scheme = \"paypal\"\nsecret = \"k\"")),
        "sources[0].scheme",
    );
}

#[test]
fn source_names_are_url_safe_and_unique() {
    let text = format!(
        "{TOKEN}[[sources]]\nname = \"a\"\nsecret = \"{SECRET}\"\n\
         [[sources]]\nname = \"a\"\nsecret = \"{SECRET}\"\n\
         [[sources]]\nname = \"A/b\"\nsecret = \"{SECRET}\"\n\
         [[sources]]\nsecret = \"{SECRET}\"\n"
    );
    let problems = problems(load(&text));
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        ["sources[1].name", "sources[2].name", "sources[3].name"]
    );
    assert!(problems[0].1.contains("sources[0]"), "{problems:?}");
}

#[test]
fn source_options() {
    let text = format!(
        "secret = \"{SECRET}\"\nrate_limit_per_sec = 7\ntolerance_secs = 60\n\
         suppress_on = {{ \"email.bounced\" = \"bounce\" }}"
    );
    let source = ok(&with_source(&text)).sources.remove(0);
    assert_eq!(source.rate_limit_per_sec, NonZeroU32::new(7));
    assert_eq!(source.tolerance, Duration::from_secs(60));
    assert_eq!(
        source.suppress_on,
        BTreeMap::from([("email.bounced".to_owned(), Reason::Bounce)])
    );

    let text = format!(
        "secret = \"{SECRET}\"\nrate_limit_per_sec = 0\nsuppress_on = {{ \"email.bounced\" = \"angry\" }}"
    );
    assert_eq!(
        keys(load(&with_source(&text))),
        [
            "sources[0].rate_limit_per_sec",
            "sources[0].suppress_on.\"email.bounced\""
        ]
    );
}

fn destination(body: &str) -> String {
    format!(
        "{TOKEN}[[sources]]\nname = \"payments\"\nsecret = \"{SECRET}\"\n\
         [[destinations]]\nname = \"orders\"\nsecret = \"{SECRET}\"\n{body}\n"
    )
}

#[test]
fn destinations_reference_configured_sources() {
    let config = ok(&destination(
        "url = \"https://example.com/hooks\"\nsources = [\"payments\"]",
    ));
    let orders = config.destination("orders").unwrap();
    assert_eq!(
        orders.sources,
        SourceFilter::Only(vec!["payments".to_owned()])
    );
    assert!(orders.sources.matches("payments"));
    assert!(!orders.sources.matches("other"));
    assert!(orders.event_types.is_empty());
    assert_eq!(orders.channel, Channel::Webhook);

    let message = only_problem(
        load(&destination(
            "url = \"http://example.com\"\nsources = [\"payments\", \"nope\"]",
        )),
        "destinations[0].sources[1]",
    );
    assert!(message.contains("nope"), "{message}");
    only_problem(
        load(&destination("url = \"http://example.com\"")),
        "destinations[0].sources",
    );

    let config = ok(&destination(
        "url = \"http://example.com\"\nsources = [\"*\"]\nchannel = \"in_app\"",
    ));
    assert_eq!(config.destinations[0].sources, SourceFilter::Any);
    assert_eq!(config.destinations[0].channel, Channel::InApp);
}

#[test]
fn destination_problems() {
    let text = destination(
        "url = \"ftp://x\"\nsources = [\"*\"]\nchannel = \"fax\"\nevent_types = []\nrate_limit_per_sec = 0",
    );
    assert_eq!(
        keys(load(&text)),
        [
            "destinations[0].url",
            "destinations[0].event_types",
            "destinations[0].channel",
            "destinations[0].rate_limit_per_sec",
        ]
    );
    let text = format!(
        "{TOKEN}[[destinations]]\nname = \"d\"\nurl = \"http://example.com\"\nsources = [\"*\"]\n"
    );
    only_problem(load(&text), "destinations[0].secret");
    let text =
        format!("{TOKEN}[[destinations]]\nname = \"d\"\nsources = [\"*\"]\nsecret = \"x\"\n");
    assert_eq!(
        keys(load(&text)),
        ["destinations[0].url", "destinations[0].secret"]
    );
}

#[test]
fn private_destination_urls_need_the_opt_in() {
    let base = |url: &str| destination(&format!("url = \"{url}\"\nsources = [\"*\"]"));
    let refused = load(&base("http://169.254.169.254/latest"));
    only_problem(refused, "destinations[0].url");
    let message = load(&base("http://127.0.0.1:9000/"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("destination_not_allowed"), "{message}");
    ok(&format!(
        "[delivery]\nallow_private_destinations = true\n{}",
        base("http://127.0.0.1:9000/")
    ));
    ok(&base("http://example.com/hooks"));
}

#[test]
fn urls_are_checked_lightly() {
    for good in [
        "http://127.0.0.1:9000/hooks",
        "HTTPS://example.com",
        "https://user:pw@example.com:443/a?b#c",
        "http://[::1]:8080/x",
    ] {
        assert_eq!(check_url(good), Ok(()), "{good}");
    }
    for bad in [
        "example.com",
        "ftp://example.com",
        "http://",
        "http:///path",
        "http://host:port/",
        "http://host:99999",
        "http://[::1",
        "http://exa mple.com",
    ] {
        assert!(check_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn alerts_name_a_destination() {
    let base = destination("url = \"http://example.com\"\nsources = [\"*\"]");
    let config = ok(&format!("{base}[alerts]\ndestination = \"orders\"\n"));
    assert_eq!(config.alerts.destination.as_deref(), Some("orders"));
    only_problem(
        load(&format!("{base}[alerts]\ndestination = \"ops\"\n")),
        "alerts.destination",
    );
}

#[test]
fn listen_addresses() {
    let message = only_problem(
        load(&format!(
            "{TOKEN}[server]\ningest_listen = \"localhost:8080\"\n"
        )),
        "server.ingest_listen",
    );
    assert!(message.contains("localhost:8080"), "{message}");

    let same = "[server]\ningest_listen = \"127.0.0.1:8080\"\napi_listen = \"127.0.0.1:8080\"\n";
    only_problem(load(&format!("{TOKEN}{same}")), "server.api_listen");
    let wildcard = "[server]\ningest_listen = \"0.0.0.0:8080\"\napi_listen = \"127.0.0.1:8080\"\n";
    only_problem(load(&format!("{TOKEN}{wildcard}")), "server.api_listen");

    let config = ok(&format!(
        "{TOKEN}[server]\ningest_listen = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n"
    ));
    assert_eq!(config.server.ingest_listen.port(), 0);
    ok(&format!(
        "{TOKEN}[server]\ningest_listen = \"[::1]:8080\"\napi_listen = \"127.0.0.1:8080\"\n"
    ));
}

#[test]
fn api_tokens() {
    let text = "[api]\ntoken = \"\"\n[[api.tokens]]\nname = \"ro\"\ntoken = \"read-only-token\"\nscopes = [\"read\", \"read\"]\n";
    let config = ok(text);
    let [ro] = config.api.tokens.as_slice() else {
        panic!()
    };
    assert_eq!(ro.name, "ro");
    assert_eq!(ro.scopes, [Scope::Read]);
    assert!(ro.allows(Scope::Read));
    assert!(!ro.allows(Scope::Admin));

    only_problem(load("[api]\ntoken = \"\"\n"), "api.token");
    let message = only_problem(load("[api]\ntoken = \"1234567\"\n"), "api.token");
    assert!(message.contains("8 characters"), "{message}");
    ok("[api]\ntoken = \"12345678\"\n");
    only_problem(load("[api]\ntoken = \"has spaces in it\"\n"), "api.token");

    let text = "[api]\ntoken = \"admin-token\"\n\
                [[api.tokens]]\nname = \"admin\"\ntoken = \"admin-token\"\nscopes = [\"root\"]\n\
                [[api.tokens]]\ntoken = \"other-token\"\nscopes = []\n";
    assert_eq!(
        keys(load(text)),
        [
            "api.tokens[0].name",
            "api.tokens[0].token",
            "api.tokens[0].scopes[0]",
            "api.tokens[1].name",
            "api.tokens[1].scopes",
        ]
    );
}

#[test]
fn budgets() {
    let text = format!(
        "{TOKEN}[[budgets]]\nmetric = \"route:GET /orders/{{id}}\"\np75_max = 300\n\
         [[budgets]]\nmetric = \"TTFB\"\np75_max = 800.5\n"
    );
    let config = ok(&text);
    assert_eq!(
        config.budgets,
        [
            Budget {
                metric: Metric::Route {
                    method: "GET".to_owned(),
                    path: "/orders/{id}".to_owned()
                },
                p75_max: 300.0,
            },
            Budget {
                metric: Metric::Ttfb,
                p75_max: 800.5
            },
        ]
    );
    assert_eq!(
        config.budgets[0].metric.to_string(),
        "route:GET /orders/{id}"
    );
    assert!(ok(&format!("budgets = []\n{TOKEN}")).budgets.is_empty());

    let text = format!(
        "{TOKEN}[[budgets]]\nmetric = \"LCP\"\np75_max = 0\n\
         [[budgets]]\nmetric = \"route:get /x\"\np75_max = 1\n\
         [[budgets]]\nmetric = \"LCP\"\np75_max = 1\n\
         [[budgets]]\np75_max = 1\n"
    );
    assert_eq!(
        keys(load(&text)),
        [
            "budgets[0].p75_max",
            "budgets[1].metric",
            "budgets[2].metric",
            "budgets[3].metric"
        ]
    );
}

#[test]
fn a_route_budget_the_perf_monitor_would_refuse_does_not_load() {
    // Found with the `config` fuzz target's property (a config that loads also starts):
    // a control character passed validation, then `herald serve` failed on it.
    let text = format!("{TOKEN}[[budgets]]\nmetric = \"route:GET /a\\u0001b\"\np75_max = 1\n");
    assert_eq!(keys(load(&text)), ["budgets[0].metric"]);
    let text = format!("{TOKEN}[[budgets]]\nmetric = \"route:GET /caf\\u00e9\"\np75_max = 1\n");
    let config = ok(&text);
    assert!(crate::settings(&config).is_ok());
}

#[test]
fn ingest_circuit_breaker_and_log_bounds() {
    let text = format!(
        "{TOKEN}[circuit_breaker]\nfailure_threshold = 0\nopen_ms = 0\n\
         [ingest]\nblock_after_invalid = 0\nblock_secs = 0\ndedupe_window_secs = 0\n\
         [log]\nlevel = \" \"\n[storage]\npath = \"\"\n"
    );
    assert_eq!(
        keys(load(&text)),
        [
            "storage.path",
            "circuit_breaker.failure_threshold",
            "circuit_breaker.open_ms",
            "ingest.block_after_invalid",
            "ingest.block_secs",
            "ingest.dedupe_window_secs",
            "log.level",
        ]
    );
}

#[test]
fn missing_file_names_the_path() {
    let path = Path::new("/nonexistent/herald/config.toml");
    let errors = super::load(path).unwrap_err();
    let [error] = errors.as_slice() else {
        panic!("{errors}")
    };
    assert_eq!(error.key, "/nonexistent/herald/config.toml");
}

#[test]
fn keywords_are_spelled_alike_everywhere() {
    for channel in Channel::ALL {
        let json = serde_json::to_string(channel).unwrap();
        assert_eq!(json, format!("\"{channel}\""));
        assert_eq!(channel.as_str().parse::<Channel>().unwrap(), *channel);
    }
    assert_eq!(
        serde_json::to_string(&Reason::AdminAction).unwrap(),
        "\"admin_action\""
    );
    let err = "fax".parse::<Channel>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown value `fax`; expected one of: webhook, email, sms, push, in_app"
    );
    assert_eq!(
        SchemeConfig::HmacSha256 {
            id_header: String::new(),
            timestamp_header: None,
            signature_header: String::new(),
            encoding: Encoding::Hex,
            prefix: None,
        }
        .as_str(),
        "hmac-sha256"
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let config = ok(&with_source(&format!("secret = \"{SECRET}\"")));
    let debug = format!("{config:?}");
    assert!(!debug.contains("test-token"), "{debug}");
    assert!(!debug.contains(&SECRET[6..]), "{debug}");
}

#[test]
fn every_section_key_is_overridable() {
    let schema = Table::try_from(RawConfig::default()).unwrap();
    let sections: Vec<&str> = schema
        .iter()
        .filter(|(_, v)| v.is_table())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        sections,
        [
            "alerts",
            "api",
            "circuit_breaker",
            "delivery",
            "ingest",
            "log",
            "server",
            "storage"
        ]
    );
    assert!(
        schema["alerts"]
            .as_table()
            .unwrap()
            .contains_key("destination")
    );
    assert!(schema["api"].as_table().unwrap().contains_key("token"));
}

#[test]
fn log_level_is_a_tracing_filter() {
    for good in [
        "info",
        "warn,herald=debug",
        "herald_actors::dispatcher=trace",
    ] {
        let config = ok(&format!("{TOKEN}[log]\nlevel = \"{good}\"\n"));
        assert_eq!(config.log.level, good);
    }
    // `serve` used to exit 2 on these after `check-config` had passed them.
    for bad in [
        "nonsense",
        "nonsense=loud",
        "info,=",
        "herald=[",
        "herald[{x}]=info=",
    ] {
        let message = only_problem(
            load(&format!("{TOKEN}[log]\nlevel = \"{bad}\"\n")),
            "log.level",
        );
        assert!(message.contains("tracing filter"), "{bad}: {message}");
    }
}

/// A file in a fresh temp dir; the dir lives as long as the returned guard.
fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

const CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";

#[test]
fn tls_files_come_in_pairs_and_must_be_readable_pem() {
    let (_cert_dir, cert) = temp_file("cert.pem", CERT_PEM);
    let (_key_dir, key) = temp_file("key.pem", KEY_PEM);
    let config = ok(&format!(
        "{TOKEN}[server]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"
    ));
    assert_eq!(
        config.server.tls,
        Some(TlsFiles {
            cert: cert.clone().into(),
            key: key.clone().into()
        })
    );

    only_problem(
        load(&format!("{TOKEN}[server]\ntls_cert = \"{cert}\"\n")),
        "server.tls_key",
    );
    only_problem(
        load(&format!("{TOKEN}[server]\ntls_key = \"{key}\"\n")),
        "server.tls_cert",
    );
    let message = only_problem(
        load(&format!(
            "{TOKEN}[server]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"{key}\"\n"
        )),
        "server.tls_cert",
    );
    assert!(message.contains("cannot read"), "{message}");
    assert!(message.contains("/nonexistent/cert.pem"), "{message}");
    // Swapped: each file lacks what its key names.
    assert_eq!(
        keys(load(&format!(
            "{TOKEN}[server]\ntls_cert = \"{key}\"\ntls_key = \"{cert}\"\n"
        ))),
        ["server.tls_cert", "server.tls_key"]
    );
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let (_dir, ca) = temp_file("ca.pem", &format!("# a comment\n{CERT_PEM}{CERT_PEM}"));
    let config = ok(&format!("{TOKEN}[delivery]\nca_file = \"{ca}\"\n"));
    assert_eq!(config.delivery.ca_file, Some(ca.into()));

    let (_dir, empty) = temp_file("empty.pem", "not a certificate\n");
    let message = only_problem(
        load(&format!("{TOKEN}[delivery]\nca_file = \"{empty}\"\n")),
        "delivery.ca_file",
    );
    assert!(message.contains("no PEM certificate"), "{message}");
    let (_dir, cut) = temp_file("cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    only_problem(
        load(&format!("{TOKEN}[delivery]\nca_file = \"{cut}\"\n")),
        "delivery.ca_file",
    );
    let (_dir, garbled) = temp_file(
        "garbled.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    only_problem(
        load(&format!("{TOKEN}[delivery]\nca_file = \"{garbled}\"\n")),
        "delivery.ca_file",
    );
    only_problem(
        load(&format!(
            "{TOKEN}[delivery]\nca_file = \"/nonexistent/ca.pem\"\n"
        )),
        "delivery.ca_file",
    );
}

#[test]
fn node_name_defaults_to_the_host_name() {
    let host = host_name();
    assert!(!host.is_empty());
    assert_eq!(ok(TOKEN).server.node_name, host);
    let config = ok(&format!("{TOKEN}[server]\nnode_name = \"node-a\"\n"));
    assert_eq!(config.server.node_name, "node-a");
    let config = load_env(TOKEN, &[("HERALD_SERVER_NODE_NAME", "node-b")]).unwrap();
    assert_eq!(config.server.node_name, "node-b");
    only_problem(
        load(&format!("{TOKEN}[server]\nnode_name = \"two words\"\n")),
        "server.node_name",
    );
}

#[test]
fn storage_backends() {
    let config = ok(TOKEN);
    assert_eq!(config.storage.backend, StorageBackend::Redb);

    let url = "postgres://herald:hunter2@127.0.0.1:5432/herald";
    let config = ok(&format!(
        "{TOKEN}[storage]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n"
    ));
    let StorageBackend::Postgres { url: parsed } = &config.storage.backend else {
        panic!("{:?}", config.storage.backend)
    };
    assert_eq!(parsed.as_str(), url);
    assert!(!format!("{config:?}").contains("hunter2"));
    for good in [
        "postgresql://db.internal/herald",
        "postgres://a:5432,b:5433/herald?target_session_attrs=read-write",
        "postgres:///herald?host=/run/postgresql",
        "postgres://[::1]:5432/herald",
    ] {
        ok(&format!(
            "{TOKEN}[storage]\nbackend = \"postgres\"\npostgres_url = \"{good}\"\n"
        ));
    }
    let config = load_env(
        TOKEN,
        &[
            ("HERALD_STORAGE_BACKEND", "postgres"),
            ("HERALD_STORAGE_POSTGRES_URL", url),
        ],
    )
    .unwrap();
    assert!(matches!(
        config.storage.backend,
        StorageBackend::Postgres { .. }
    ));

    only_problem(
        load(&format!("{TOKEN}[storage]\nbackend = \"postgres\"\n")),
        "storage.postgres_url",
    );
    for bad in [
        "mysql://x/y",
        "postgres://",
        "postgres://host:port/db",
        "postgres://ho st/db",
    ] {
        let message = only_problem(
            load(&format!(
                "{TOKEN}[storage]\nbackend = \"postgres\"\npostgres_url = \"{bad}\"\n"
            )),
            "storage.postgres_url",
        );
        assert!(
            !message.contains(bad),
            "the URL may hold a password: {message}"
        );
    }
    only_problem(
        load(&format!("{TOKEN}[storage]\npostgres_url = \"{url}\"\n")),
        "storage.postgres_url",
    );
    only_problem(
        load(&format!("{TOKEN}[storage]\nbackend = \"sqlite\"\n")),
        "storage.backend",
    );
    // With postgres, the redb path does not matter.
    ok(&format!(
        "{TOKEN}[storage]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\npath = \"\"\n"
    ));
}

#[test]
fn destination_policy_overrides() {
    let config = ok(&destination(
        "url = \"http://example.com\"\nsources = [\"*\"]\n\
         timeout_ms = 2500\nmax_attempts = 9\nbackoff_base_ms = 50\nbackoff_max_ms = 5000",
    ));
    assert_eq!(
        config.destinations[0].policy,
        PolicyOverrides {
            timeout: Some(Duration::from_millis(2500)),
            max_attempts: Some(9),
            backoff_base: Some(Duration::from_millis(50)),
            backoff_max: Some(Duration::from_secs(5)),
        }
    );
    let config = ok(&destination(
        "url = \"http://example.com\"\nsources = [\"*\"]",
    ));
    assert_eq!(config.destinations[0].policy, PolicyOverrides::default());

    let bad = destination(
        "url = \"http://example.com\"\nsources = [\"*\"]\n\
         timeout_ms = 0\nmax_attempts = 101\nbackoff_base_ms = 0\nbackoff_max_ms = -5",
    );
    assert_eq!(
        keys(load(&bad)),
        [
            "destinations[0].backoff_max_ms",
            "destinations[0].timeout_ms",
            "destinations[0].max_attempts",
            "destinations[0].backoff_base_ms",
        ]
    );
    // The base is compared with the maximum that applies: its own, else [delivery]'s.
    let message = only_problem(
        load(&destination(
            "url = \"http://example.com\"\nsources = [\"*\"]\nbackoff_base_ms = 4000000",
        )),
        "destinations[0].backoff_base_ms",
    );
    assert!(message.contains("delivery.backoff_max_ms"), "{message}");
    let message = only_problem(
        load(&destination(
            "url = \"http://example.com\"\nsources = [\"*\"]\nbackoff_max_ms = 10",
        )),
        "destinations[0].backoff_max_ms",
    );
    assert!(message.contains("delivery.backoff_base_ms"), "{message}");
}

#[test]
fn destination_headers() {
    let config = ok(&destination(
        "url = \"http://example.com\"\nsources = [\"*\"]\n\
         headers = { \"X-Team\" = \"orders\", authorization = \"Bearer abc\" }",
    ));
    let headers: Vec<(&str, &[u8])> = config.destinations[0]
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    assert_eq!(
        headers,
        [
            ("authorization", b"Bearer abc".as_slice()),
            ("x-team", b"orders".as_slice())
        ]
    );

    let bad = destination(
        "url = \"http://example.com\"\nsources = [\"*\"]\n\
         headers = { \"Content-Type\" = \"text/plain\", \"x team\" = \"a\", \"Webhook-Id\" = \"1\", \
         host = \"h\", \"x-ok\" = \"line\\nbreak\", \"X-Dup\" = \"1\", \"x-dup\" = \"2\" }",
    );
    let problems = problems(load(&bad));
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "destinations[0].headers.Content-Type",
            "destinations[0].headers.Webhook-Id",
            "destinations[0].headers.host",
            "destinations[0].headers.\"x team\"",
            "destinations[0].headers.x-dup",
            "destinations[0].headers.x-ok",
        ]
    );
    assert!(problems[0].1.contains("set by herald"), "{problems:?}");
    assert!(problems[4].1.contains("X-Dup"), "{problems:?}");
    only_problem(
        load(&destination(
            "url = \"http://example.com\"\nsources = [\"*\"]\nheaders = { \"x-n\" = 5 }",
        )),
        "destinations[0].headers.x-n",
    );
}
