//! What a reader may believe of the segments past the index. The writer appends a
//! delta's index entry only after the delta's fsync returned, and on open rewrites an
//! index that lags, so while a writer is live the index is exactly the set of commits
//! that returned: a Commit frame past it may be in the page cache only, its fdatasync
//! still running, and lost by a power cut after an export made it durable at a target.
//! A reader that finds the writer's lock held therefore trusts the index alone. With
//! no writer live (after a crash the index lags), committed records past the index are
//! believed only once the reader itself has fdatasynced the segments they lie in, so
//! nothing a reader passes on can vanish behind it.
use super::frame;
use crate::error::{Error, Result};
use std::fs::{File, TryLockError};
use std::io::ErrorKind;
use std::path::Path;

/// The writer's lock file, held (flock, exclusive) while a writer has the journal open.
pub(super) const LOCK_FILE: &str = "lock";

/// Whether a writer holds the journal open now. A shared try-lock on a file opened
/// for the purpose, released at once: it never waits, and a writer's open that meets
/// it retries its own lock (crate::lock) rather than failing.
pub(super) fn writer_live(dir: &Path) -> Result<bool> {
    let path = dir.join(LOCK_FILE);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot open the writer's lock of", &path)(e)),
    };
    match f.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(Error::io("cannot test the writer's lock of", &path)(e)),
    }
}

/// Makes segments `first..=last` and the journal directory durable (a record is only
/// as durable as the directory entry of its segment). fsync works on a read-only
/// descriptor; a read-only file system has nothing unwritten to flush.
pub(super) fn make_durable(dir: &Path, first: u64, last: u64) -> Result<()> {
    for n in first..=last {
        flush(&frame::segment_path(dir, n), false)?;
    }
    flush(dir, true)
}

fn flush(path: &Path, all: bool) -> Result<()> {
    let done = File::open(path).and_then(|f| if all { f.sync_all() } else { f.sync_data() });
    match done {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ReadOnlyFilesystem | ErrorKind::InvalidInput
            ) =>
        {
            Ok(())
        }
        r => r.map_err(Error::io("cannot make durable", path)),
    }
}
