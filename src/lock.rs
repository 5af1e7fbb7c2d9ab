//! Exclusive locks on files (flock), for the one writer of a journal and the one
//! exporter of a target, and the turns groups take at a thin pool's metadata snapshot.
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for a lock before reporting it held. Short: a lock held by a
/// running cycle is reported, not waited for; but a lock still shared for a moment
/// with a child process between its fork and exec is not mistaken for one.
const PATIENCE: Duration = Duration::from_millis(500);

/// Takes an exclusive lock on `path` (created if missing); held until the File drops.
/// `owner` names what is locked in the error (a journal directory, a target).
pub fn lock(path: &Path, owner: &Path) -> Result<File> {
    lock_within(path, owner, PATIENCE)
}

/// Like [`lock`], but waits up to `patience` for a holder to finish: for work that
/// takes turns (the metadata snapshot of a thin pool shared by several groups)
/// rather than work that another process already does.
pub fn lock_within(path: &Path, owner: &Path, patience: Duration) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io("cannot open lock", path))?;
    let started = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: owner.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock", path)(e)),
        }
    }
}
