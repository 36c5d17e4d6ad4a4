//! Stage 5: the files the config names are read, so `check-config` finds an unreadable or
//! empty certificate file before `serve` needs it.
//!
//! Only what can be told from the file alone is checked here: readable, and PEM holding what
//! the key says. Whether a key matches its certificate belongs next to the TLS setup that
//! loads them.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::ConfigError;
use super::raw::RawConfig;

/// The problems with the files named by `raw`; keys that are unset name no file.
pub(super) fn check(raw: &RawConfig) -> Vec<ConfigError> {
    let files = [
        (
            "server.tls_cert",
            raw.server.tls_cert.as_str(),
            Pem::Certificate,
        ),
        (
            "server.tls_key",
            raw.server.tls_key.as_str(),
            Pem::PrivateKey,
        ),
        (
            "delivery.ca_file",
            raw.delivery.ca_file.as_str(),
            Pem::Certificate,
        ),
    ];
    files
        .into_iter()
        .filter(|(_, path, _)| !path.is_empty())
        .filter_map(|(key, path, kind)| {
            check_pem(Path::new(path), kind)
                .err()
                .map(|message| ConfigError::new(key, format!("{message}: `{path}`")))
        })
        .collect()
}

/// What a PEM file must hold at least one of.
#[derive(Clone, Copy)]
enum Pem {
    Certificate,
    PrivateKey,
}

impl Pem {
    fn matches(self, label: &str) -> bool {
        match self {
            Self::Certificate => label == "CERTIFICATE",
            // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys, as rustls reads them.
            Self::PrivateKey => {
                matches!(label, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY")
            }
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Certificate => "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            Self::PrivateKey => "no PEM private key (-----BEGIN PRIVATE KEY-----) in the file",
        }
    }
}

fn check_pem(path: &Path, kind: Pem) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|err| format!("cannot read the file: {err}"))?;
    let text = String::from_utf8_lossy(&text);
    let mut found = false;
    for (label, body) in pem_blocks(&text) {
        let body = body?;
        if kind.matches(label) {
            if BASE64.decode(&body).map_or(true, |der| der.is_empty()) {
                return Err(format!("the {label} block is not valid base64"));
            }
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err(kind.expected().to_owned())
    }
}

/// The PEM blocks of `text` (RFC 7468): each label, with its base64 body without line breaks
/// or an error if the block never ends.
fn pem_blocks(text: &str) -> impl Iterator<Item = (&str, Result<String, String>)> {
    let mut lines = text.lines().map(str::trim);
    std::iter::from_fn(move || {
        let label = lines.by_ref().find_map(|line| {
            line.strip_prefix("-----BEGIN ")
                .and_then(|rest| rest.strip_suffix("-----"))
        })?;
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        for line in lines.by_ref() {
            if line == end {
                return Some((label, Ok(body)));
            }
            body.push_str(line);
        }
        Some((label, Err(format!("the {label} block has no END line"))))
    })
}
