//! The storage crate's one error type.
//!
//! redb reports failures through a family of error types (one per operation kind). They are
//! folded into [`StorageError::Redb`] behind an `Arc`, so that one commit failure can be handed
//! to every request of the batch that shared the commit.

use std::sync::Arc;

/// Everything that can go wrong below the storage API.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// redb failed: I/O, a full disk, a corrupted file.
    #[error("database: {0}")]
    Redb(#[source] Arc<redb::Error>),
    /// PostgreSQL refused a statement or the connection failed.
    #[error("postgresql: {0}")]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    /// `storage.postgres_url` does not parse, or names no reachable database.
    #[error("{0}")]
    BadUrl(String),
    /// A stored record did not decode: a bug or a corrupted value, never user input.
    #[error("corrupt record in table `{table}`: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The file was written by a newer herald; opening it could lose data.
    #[error("schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: u64, supported: u64 },
    /// The writer thread has stopped (shutdown, or it could not start).
    #[error("the storage writer is not running")]
    Closed,
    /// Writes are refused for now: the database is being reopened after an I/O error, or its
    /// file was removed (see [`crate::health`]).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A write job panicked. The batch it was in was rolled back and retried without it.
    #[error("a write operation panicked: {0}")]
    Panicked(String),
}

impl StorageError {
    pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            table,
            detail: detail.to_string(),
        }
    }
}

macro_rules! from_redb {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for StorageError {
            fn from(err: $ty) -> Self {
                Self::Redb(Arc::new(err.into()))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::CompactionError,
);

impl From<tokio_postgres::Error> for StorageError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Postgres(Arc::new(err))
    }
}

/// No connection could be had from the pool: the database is down or unreachable.
impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(format!("no connection to PostgreSQL: {err}"))
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
