//! A fresh PostgreSQL database per test (feature `test-hooks`, never in a build of herald).
//!
//! The tests find a cluster through `POSTGRES_TEST_URL` (a role that may create
//! databases; `.ci/run` starts a private cluster and sets it, see `scripts/pg-cluster.sh`).
//! Outside CI a missing variable skips the PostgreSQL half of a test with a message; under
//! `CI=true` it fails the test, so CI can never pass without having run them.

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the test cluster. Not `HERALD_…`: herald takes every such variable for
/// a config key and refuses the unknown ones, and its test processes inherit the environment.
pub const URL_VAR: &str = "POSTGRES_TEST_URL";

/// An empty database of its own, dropped (with `FORCE`, closing its connections) when this is.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connects to this database only.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// A new database on the test cluster; `None` when there is none outside CI.
    ///
    /// # Panics
    /// Under `CI=true` without the cluster, or when the cluster refuses: the run must fail.
    pub async fn create() -> Option<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Ok(admin) = std::env::var(URL_VAR) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{URL_VAR} is not set under CI=true: the PostgreSQL tests must run (see .ci/run)"
            );
            eprintln!(
                "skipping the PostgreSQL half: set {URL_VAR} (scripts/pg-cluster.sh start DIR prints one)"
            );
            return None;
        };
        let name = format!(
            "herald_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{URL_VAR}: cannot connect: {e}"));
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating the test database: {e}"));
        let url = with_database(&admin, &name);
        Some(Self { url, admin, name })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop is not async and may run inside a runtime: a thread of its own, with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // postgres://user@host:port/db: the path after the authority is the database.
    let authority_end = base.find("://").map_or(0, |scheme| {
        scheme
            + 3
            + base[scheme + 3..]
                .find('/')
                .unwrap_or(base.len() - scheme - 3)
    });
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://herald@127.0.0.1:5432/herald", "t1"),
            "postgres://herald@127.0.0.1:5432/t1"
        );
        assert_eq!(
            super::with_database("postgres://h@127.0.0.1:1/x?sslmode=disable", "t2"),
            "postgres://h@127.0.0.1:1/t2?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://h@127.0.0.1:1", "t3"),
            "postgres://h@127.0.0.1:1/t3"
        );
    }
}
