//! Stage 5: the files the config names are read, so `check-config` finds an unreadable or
//! empty certificate file before `serve` needs it.
//!
//! First what can be told from each file alone: readable, and PEM holding what the key says.
//! Files that pass are then loaded the way `serve` loads them ([`crate::tls`]): the
//! certificate and key must be usable by rustls and the key must be the certificate's, and
//! every certificate in `delivery.ca_file` must be a usable root.

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
    let mut problems: Vec<ConfigError> = files
        .into_iter()
        .filter(|(_, path, _)| !path.is_empty())
        .filter_map(|(key, path, kind)| {
            check_pem(Path::new(path), kind)
                .err()
                .map(|message| ConfigError::new(key, format!("{message}: `{path}`")))
        })
        .collect();
    let fine = |key: &str, path: &str| {
        !path.is_empty() && !problems.iter().any(|problem| problem.key == key)
    };
    let (cert, key) = (raw.server.tls_cert.as_str(), raw.server.tls_key.as_str());
    let pair = (fine("server.tls_cert", cert) && fine("server.tls_key", key))
        .then(|| crate::tls::check_pair(Path::new(cert), Path::new(key)).err())
        .flatten();
    let ca = raw.delivery.ca_file.as_str();
    let roots = fine("delivery.ca_file", ca)
        .then(|| crate::tls::load_roots(Path::new(ca)).err())
        .flatten();
    problems.extend(pair.map(|e| ConfigError::new(tls_key_of(&e, Path::new(key)), e.to_string())));
    problems.extend(roots.map(|e| ConfigError::new("delivery.ca_file", e.to_string())));
    problems
}

/// Which of the two TLS keys a loading error is about.
fn tls_key_of(error: &crate::tls::TlsError, key: &Path) -> &'static str {
    use crate::tls::TlsError;
    match error {
        TlsError::NoKey(_) | TlsError::KeyMismatch { .. } => "server.tls_key",
        TlsError::Read { path, .. }
        | TlsError::Pem { path, .. }
        | TlsError::Unusable { path, .. }
            if path == key =>
        {
            "server.tls_key"
        }
        _ => "server.tls_cert",
    }
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
