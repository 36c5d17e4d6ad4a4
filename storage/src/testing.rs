//! Fault injection for tests of the store and of herald over it (feature `test-hooks`, never
//! in a build of herald): the database file on a backend whose writes, syncs and resizes fail
//! while a switch is on, as a full or failing disk does.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use crate::{Options, Result, Store};

/// Turns the failures on and off; counts the operations it failed.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    failing: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
}

impl FaultSwitch {
    /// From now on every write, sync and resize fails (`true`), or none does (`false`).
    pub fn fail_writes(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    /// How many operations failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ));
        }
        Ok(())
    }
}

/// A [`FileBackend`] failing its writes while its [`FaultSwitch`] is on.
#[derive(Debug)]
pub struct SwitchedBackend {
    inner: FileBackend,
    switch: FaultSwitch,
}

impl SwitchedBackend {
    pub fn open(path: &Path, switch: FaultSwitch) -> io::Result<Self> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Self { inner, switch })
    }
}

impl StorageBackend for SwitchedBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.switch.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.switch.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.switch.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
}

/// Opens the store on the file at `path` through a [`SwitchedBackend`]; the store reopens it
/// (through a new backend on the same switch) after a failed write, as one opened by path does.
pub fn open_switched(path: &Path, options: Options) -> Result<(Store, FaultSwitch)> {
    let switch = FaultSwitch::default();
    let (file, on): (PathBuf, FaultSwitch) = (path.to_owned(), switch.clone());
    let store =
        Store::open_with_backends(move || SwitchedBackend::open(&file, on.clone()), options)?;
    Ok((store, switch))
}
