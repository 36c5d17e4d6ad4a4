//! Helpers shared by the integration tests.

// Every test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;

/// A directory for test databases: in memory (`/dev/shm`) where there is one. Every commit on
/// a real disk pays a real `fsync` (a few ms here), which the tests that commit thousands of
/// times (fault injection, the model) gain nothing from: what they check does not depend on
/// the disk's cache.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// One backend a conformance test runs on: redb in a scratch directory, or a fresh PostgreSQL
/// database. [`Backend::open`] may be called again to reopen the same data (a restart).
pub struct Backend {
    pub name: &'static str,
    place: Place,
}

enum Place {
    Redb(tempfile::TempDir),
    Postgres(herald_storage::test_postgres::TestDatabase),
}

impl Backend {
    /// Opens (or reopens) the store on this backend. `options` are the redb options; on
    /// PostgreSQL only the observer is taken from them.
    pub async fn open(&self, options: herald_storage::Options) -> herald_storage::Store {
        self.try_open(options).await.expect("the store opens")
    }

    pub async fn try_open(
        &self,
        options: herald_storage::Options,
    ) -> herald_storage::Result<herald_storage::Store> {
        match &self.place {
            Place::Redb(dir) => {
                let path = dir.path().join("herald.redb");
                tokio::task::spawn_blocking(move || herald_storage::Store::open(&path, options))
                    .await
                    .expect("opening does not panic")
            }
            Place::Postgres(db) => {
                let mut pg = herald_storage::PostgresOptions::new(db.url.clone(), "test-node");
                pg.observer = options.observer;
                herald_storage::Store::open_postgres(pg).await
            }
        }
    }

    /// The PostgreSQL URL of this backend's database, if it is one.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.place {
            Place::Redb(_) => None,
            Place::Postgres(db) => Some(&db.url),
        }
    }
}

/// redb, and PostgreSQL when the test cluster is there (see `herald_storage::test_postgres`).
pub async fn backends() -> Vec<Backend> {
    let mut all = vec![Backend {
        name: "redb",
        place: Place::Redb(scratch_dir()),
    }];
    if let Some(db) = herald_storage::test_postgres::TestDatabase::create().await {
        all.push(Backend {
            name: "postgres",
            place: Place::Postgres(db),
        });
    }
    all
}
