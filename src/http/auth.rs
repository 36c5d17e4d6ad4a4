//! Bearer tokens with scopes.
//!
//! Tokens are kept as SHA-256 digests and a presented token is compared against every one of
//! them in constant time, so neither the comparison nor the number of tokens checked before a
//! match leaks anything. `admin` implies every other scope.

use http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::response::ApiError;
use crate::config::{ApiToken, Scope};

/// Who made a request: the token's name, recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    scopes: Vec<Scope>,
}

impl Caller {
    /// The token's scopes as configured (`admin` implies the others).
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token lacks the `{}` scope", scope.as_str()),
            ))
        }
    }
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
}

#[derive(Debug)]
pub struct Tokens(Vec<Entry>);

impl Tokens {
    pub fn new(tokens: &[ApiToken]) -> Self {
        Self(
            tokens
                .iter()
                .map(|t| Entry {
                    digest: Sha256::digest(t.token.expose()).into(),
                    caller: Caller {
                        name: t.name.clone(),
                        scopes: t.scopes.clone(),
                    },
                })
                .collect(),
        )
    }

    /// The caller behind the request's `Authorization: Bearer` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required",
            )
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for entry in &self.0 {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(&entry.caller);
            }
        }
        found.cloned().ok_or_else(unauthorized)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn tokens_and_scopes() {
        let tokens = Tokens::new(&[
            ApiToken {
                name: "admin".into(),
                token: "admin-secret".into(),
                scopes: vec![Scope::Admin],
            },
            ApiToken {
                name: "ro".into(),
                token: "read-only-secret".into(),
                scopes: vec![Scope::Read],
            },
        ]);
        let ro = tokens
            .authenticate(&headers("Bearer read-only-secret"))
            .unwrap();
        assert_eq!(ro.name, "ro");
        assert!(ro.require(Scope::Read).is_ok());
        assert_eq!(ro.require(Scope::Write).unwrap_err().code, "forbidden");
        let admin = tokens
            .authenticate(&headers("Bearer admin-secret"))
            .unwrap();
        assert!(
            admin.require(Scope::Publish).is_ok(),
            "admin implies every scope"
        );
        for bad in [
            "Bearer nope",
            "Basic admin-secret",
            "admin-secret",
            "Bearer ",
        ] {
            assert_eq!(
                tokens.authenticate(&headers(bad)).unwrap_err().code,
                "unauthorized",
                "{bad}"
            );
        }
        assert_eq!(
            tokens.authenticate(&HeaderMap::new()).unwrap_err().status,
            401
        );
    }
}
