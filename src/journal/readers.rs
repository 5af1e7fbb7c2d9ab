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

/// Takes the shared lock. `None` where the file can be neither opened nor created:
/// a journal on a read-only file system (nothing prunes it), or one a user without
/// write access opens before any writer made the file.
pub(crate) fn share(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(READERS_FILE);
    let cannot_write = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied
        )
    };
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if cannot_write(&e) => match File::open(&path) {
            Ok(f) => f,
            Err(again) if cannot_write(&again) || again.kind() == ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(again) => return Err(Error::io("cannot open the readers' lock of", &path)(again)),
        },
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
