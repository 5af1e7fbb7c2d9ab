//! Readers against retention. A reader (an open [`Journal`](super::Journal), a
//! verify) holds a shared flock on the journal's `readers` file for as long as it
//! reads; a prune removes segment files (and
//! punches out pruned bytes) only when it can take that lock alone, and otherwise
//! leaves them to the next prune. The new start and index are written either way, so
//! retention still advances; only the freeing of space waits.
//!
//! The lock is taken before the index is read. A reader therefore either read the
//! index after the prune (and never looks below the new start) or holds the lock
//! that keeps the segments it may still read.
//!
//! flock is per open file, so readers in the pruning process (the daemon's other
//! exports, a metrics scrape) count too. On network file systems that emulate flock
//! with per-process POSIX locks they would not: keep journals on local storage.
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::Path;

const READERS_FILE: &str = "readers";

/// Made by the writer when it opens the journal, so that opening for reading
/// changes nothing.
pub(super) fn create(dir: &Path) -> Result<()> {
    let path = dir.join(READERS_FILE);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map(drop)
        .map_err(Error::io("cannot create the readers' lock of", &path))
}

/// Takes the shared lock. `None` for a journal without the file, which no writer
/// has opened since readers took locks (or a copy of one): it is read unguarded.
pub(crate) fn share(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(READERS_FILE);
    // flock needs no write access: read-only mounts and other users lock too.
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot open the readers' lock of", &path)(e)),
    };
    // Blocks only while a prune removes files: milliseconds.
    f.lock_shared()
        .map_err(Error::io("cannot lock the readers' lock of", &path))?;
    Ok(Some(f))
}

/// Turns the writer's own shared lock exclusive if no other reader holds the journal.
/// The caller gives it back with [`unshare`] once the files are gone.
pub(super) fn try_alone(lock: &File, dir: &Path) -> Result<bool> {
    match lock.try_lock() {
        Ok(()) => Ok(true),
        // A failed conversion has dropped the shared lock; take it again (nothing
        // else takes the lock exclusively, so this does not wait).
        Err(TryLockError::WouldBlock) => unshare(lock, dir).map(|()| false),
        Err(TryLockError::Error(e)) => Err(Error::io(
            "cannot lock the readers' lock of",
            dir.join(READERS_FILE),
        )(e)),
    }
}

/// Turns the exclusive lock back into a shared one (the writer stays a reader).
pub(super) fn unshare(lock: &File, dir: &Path) -> Result<()> {
    lock.lock_shared().map_err(Error::io(
        "cannot lock the readers' lock of",
        dir.join(READERS_FILE),
    ))
}
