//! TLS material from PEM files: the inbound certificate (`server.tls_cert` + `server.tls_key`),
//! reloadable while herald runs, and extra outbound roots (`delivery.ca_file`).
//!
//! Both ports share one [`ServerTls`]: one rustls `ServerConfig` (ring provider, chosen
//! explicitly; ALPN `http/1.1`) whose certificate resolver hands out whatever
//! [`ServerTls::reload`] last loaded. A reload swaps the certificate atomically: handshakes
//! that start afterwards get the new one, connections already open keep theirs, and a reload
//! that fails (unreadable file, bad PEM, key not matching the certificate) changes nothing.
//!
//! [`check_pair`] is what `check-config` runs: the files are readable and the key is the
//! certificate's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no PEM private key", .0.display())]
    NoKey(PathBuf),
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{} cannot be used: {source}", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The crypto provider of every TLS config herald builds.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, in order (for a server: the leaf first, then its chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_owned()),
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

/// Loads extra trusted roots (`delivery.ca_file`) and checks each is a usable CA certificate.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let roots = load_certs(path)?;
    let mut store = rustls::RootCertStore::empty();
    for root in &roots {
        store
            .add(root.clone())
            .map_err(|source| TlsError::Unusable {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(roots)
}

/// Loads a certificate chain and its key, and checks that the key is the certificate's.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let private = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|source| TlsError::Unusable {
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        Err(source) => Err(TlsError::Unusable {
            path: cert.to_owned(),
            source,
        }),
    }
}

/// `check-config`'s check of `server.tls_cert` + `server.tls_key`.
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), TlsError> {
    certified_key(cert, key).map(drop)
}

/// Inbound TLS for both ports, reloadable (see the module docs).
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

/// The resolver: always the last certificate loaded.
struct Current {
    key: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `cert` and `key` and builds the server config around them.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let current = Arc::new(Current {
            key: ArcSwap::from_pointee(certified_key(cert, key)?),
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Unusable {
                path: cert.to_owned(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; on success new handshakes use them, on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified_key(&self.current.cert_path, &self.current.key_path)?;
        self.current.key.store(Arc::new(fresh));
        Ok(())
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_matching_pair_passes_and_a_foreign_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        check_pair(&cert, &key).unwrap();
        let err = check_pair(&cert, &other_key).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn unreadable_and_empty_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            check_pair(&missing, &key),
            Err(TlsError::Read { .. })
        ));
        // A key file where the certificate should be, and the other way round.
        assert!(matches!(
            check_pair(&key, &key),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(check_pair(&cert, &cert), Err(TlsError::NoKey(_))));
        assert!(matches!(load_roots(&key), Err(TlsError::NoCertificate(_))));
        assert_eq!(load_roots(&cert).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let tls = ServerTls::load(&cert, &key).unwrap();
        let before = tls.current.key.load_full();
        std::fs::write(&cert, "not pem").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current.key.load_full()));

        let (new_cert, new_key) = pair(dir.path(), "b");
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        tls.reload().unwrap();
        let after = tls.current.key.load_full();
        assert_ne!(before.cert, after.cert);
    }
}
