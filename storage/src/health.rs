//! Whether the store can take writes, and how it gets back to it by itself.
//!
//! Three states ([`Health`]), kept by the writer thread and watched by the rest of herald
//! ([`crate::Store::health`]):
//! - **Healthy**: commits succeed.
//! - **Reopening**: a transaction could not be begun or committed (a full disk, an I/O error).
//!   redb refuses every write after an I/O error until the database is opened again, so the
//!   writer closes it (new reads fail fast, the ones under way finish first) and opens it again,
//!   with backoff from [`REOPEN_BACKOFF_MIN`] to [`REOPEN_BACKOFF_MAX`]. Opening includes a
//!   commit (the schema check), so the store is healthy again exactly when writes work again.
//!   Meanwhile every write is answered at once with [`StorageError::Unavailable`].
//! - **Lost**: the database file was removed or replaced under the running process: the path
//!   no longer names the file that is open (device and inode compared, at least every
//!   [`IDENTITY_CHECK_EVERY`] and before any write batch is acknowledged). Commits would go to
//!   a file nobody will ever open again, so writes are refused; reads still see the open file.
//!   Nothing is reopened (that would start an empty database); if the same file comes back at
//!   the path (moved back), the store is healthy again, otherwise an operator must restore it
//!   and restart herald.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::watch;

use crate::error::{Result, StorageError};

/// How often, at least, the file's identity is checked when nothing is written.
pub const IDENTITY_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The first and the longest wait between two attempts to reopen the database.
pub const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whether the store takes writes; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    Healthy,
    /// Writes failed with `error`; the database is being reopened.
    Reopening {
        error: String,
    },
    /// The database file was removed or replaced.
    Lost {
        reason: String,
    },
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }
}

/// Opens the database again after a failure (the file, or a test's backend).
pub(crate) type Reopen = Box<dyn Fn() -> Result<Database> + Send>;

/// The open database, shared by readers and the writer; empty while it is being reopened.
#[derive(Debug)]
pub(crate) struct DbCell {
    db: RwLock<Option<Arc<Database>>>,
    writable: AtomicBool,
    health: watch::Sender<Health>,
}

impl DbCell {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self {
            db: RwLock::new(Some(db)),
            writable: AtomicBool::new(true),
            health: watch::Sender::new(Health::Healthy),
        }
    }

    /// The open database, for a read.
    pub(crate) fn get(&self) -> Result<Arc<Database>> {
        self.db
            .read()
            .ok()
            .and_then(|db| db.clone())
            .ok_or_else(|| StorageError::Unavailable("the database is being reopened".into()))
    }

    fn set(&self, db: Option<Arc<Database>>) {
        if let Ok(mut slot) = self.db.write() {
            *slot = db;
        }
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    pub(crate) fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    fn set_health(&self, health: Health) {
        self.writable.store(health.is_healthy(), Ordering::Release);
        self.health.send_if_modified(|current| {
            if *current == health {
                return false;
            }
            match &health {
                Health::Healthy => tracing::info!("storage takes writes again"),
                Health::Reopening { error } => {
                    tracing::error!(%error, "storage refuses writes; reopening it");
                }
                Health::Lost { reason } => {
                    tracing::error!(%reason, "the database file is gone; writes are refused");
                }
            }
            *current = health;
            true
        });
    }
}

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path)?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).map(|_| FileId { dev: 0, ino: 0 })
    }
}

/// The writer's side: the file's identity, the reopening, the state transitions.
pub(crate) struct Guard {
    cell: Arc<DbCell>,
    reopen: Option<Reopen>,
    /// The database file and the identity it had when opened; `None` over a custom backend.
    file: Option<(PathBuf, FileId)>,
    checked: Instant,
    backoff: Duration,
    next_reopen: Instant,
    /// The database being closed for a reopen: it can be opened again once no read holds it.
    closing: Weak<Database>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("file", &self.file)
            .field("reopens", &self.reopen.is_some())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Records the identity of the file at `path`, if any, as the open one.
    pub(crate) fn new(
        cell: Arc<DbCell>,
        path: Option<&Path>,
        reopen: Option<Reopen>,
    ) -> Result<Self> {
        let file = match path {
            Some(path) => Some((path.to_owned(), file_id(path).map_err(io_error)?)),
            None => None,
        };
        Ok(Self {
            cell,
            reopen,
            file,
            checked: Instant::now(),
            backoff: REOPEN_BACKOFF_MIN,
            next_reopen: Instant::now(),
            closing: Weak::new(),
        })
    }

    /// Checks that the path still names the open file; marks the store lost if not, healthy
    /// again if a lost file came back.
    pub(crate) fn check_file(&mut self) -> Result<()> {
        self.checked = Instant::now();
        let Some((path, opened)) = &self.file else {
            return Ok(());
        };
        let lost = match file_id(path) {
            Ok(id) if id == *opened => None,
            Ok(_) => Some(format!("{} was replaced by another file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(format!("{} was removed", path.display()))
            }
            Err(e) => Some(format!("{}: {e}", path.display())),
        };
        if let Some(reason) = lost {
            self.cell.set_health(Health::Lost {
                reason: reason.clone(),
            });
            return Err(StorageError::Unavailable(reason));
        }
        if matches!(self.cell.health(), Health::Lost { .. }) {
            self.cell.set_health(Health::Healthy);
        }
        Ok(())
    }

    /// The periodic work: the identity check when it is due, a reopen attempt when due.
    pub(crate) fn maintain(&mut self, db: &mut Option<Arc<Database>>) {
        if self.checked.elapsed() >= IDENTITY_CHECK_EVERY {
            let _ = self.check_file();
        }
        self.try_reopen(db);
    }

    /// How long the writer may wait for work before the next check or reopen attempt.
    pub(crate) fn wait(&self) -> Duration {
        if matches!(self.cell.health(), Health::Reopening { .. }) {
            return self.next_reopen.saturating_duration_since(Instant::now());
        }
        IDENTITY_CHECK_EVERY.saturating_sub(self.checked.elapsed())
    }

    /// Why writes are refused now, if they are.
    pub(crate) fn refusal(&self) -> Option<StorageError> {
        match self.cell.health() {
            Health::Healthy => None,
            Health::Reopening { error } => Some(StorageError::Unavailable(format!(
                "storage refused writes ({error}); reopening it"
            ))),
            Health::Lost { reason } => Some(StorageError::Unavailable(reason)),
        }
    }

    /// A transaction could not be begun or committed: close the database and reopen it. Only
    /// a store that can be reopened (opened by path, or by a test's reopener) leaves the
    /// healthy state for this; the others just report the failed commit, as before.
    pub(crate) fn write_failed(&mut self, db: &mut Option<Arc<Database>>, error: &StorageError) {
        if self.reopen.is_none() {
            self.cell.writable.store(false, Ordering::Release);
            return;
        }
        if matches!(self.cell.health(), Health::Lost { .. }) {
            return;
        }
        self.cell.set_health(Health::Reopening {
            error: error.to_string(),
        });
        self.cell.set(None);
        if let Some(closed) = db.take() {
            self.closing = Arc::downgrade(&closed);
        }
        self.backoff = REOPEN_BACKOFF_MIN;
        self.next_reopen = Instant::now();
    }

    /// A commit succeeded (on a store that cannot reopen, the flag a failure cleared).
    pub(crate) fn write_succeeded(&self) {
        if self.reopen.is_none() {
            self.cell.writable.store(true, Ordering::Release);
        }
    }

    /// If reopening is due, tries it once: waits for the reads on the old database to finish,
    /// opens it again (which commits the schema check) and checks it is still the same file.
    pub(crate) fn try_reopen(&mut self, db: &mut Option<Arc<Database>>) {
        if !matches!(self.cell.health(), Health::Reopening { .. })
            || Instant::now() < self.next_reopen
        {
            return;
        }
        self.next_reopen = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF_MAX);
        if self.closing.strong_count() > 0 {
            return; // a read still holds the old database open; redb allows one open per file
        }
        if let Err(reason) = self.check_file() {
            tracing::error!(error = %reason, "not reopening the database");
            return;
        }
        let Some(reopen) = &self.reopen else {
            return;
        };
        match reopen().and_then(|opened| {
            crate::embedded::prepare_reopened(&opened)?;
            Ok(opened)
        }) {
            Ok(opened) => {
                let opened = Arc::new(opened);
                self.cell.set(Some(Arc::clone(&opened)));
                *db = Some(opened);
                self.cell.set_health(Health::Healthy);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = self.backoff.as_millis(), "reopening the database failed");
                if let Health::Reopening { .. } = self.cell.health() {
                    self.cell.set_health(Health::Reopening {
                        error: e.to_string(),
                    });
                }
            }
        }
    }
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageError::Redb(Arc::new(e.into()))
}
