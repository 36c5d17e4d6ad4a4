//! Helpers shared by the integration tests.

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
