//! A thin pool's metadata snapshot, and the turns groups take at it.
//!
//! thin_delta reads a live pool's metadata through its one metadata snapshot,
//! reserved with a target message and released after. There is one per pool, so two
//! groups on a pool (two cascade processes, or two cycles of one daemon) would release
//! each other's snapshot half way through a read: every use is serialised by an flock
//! on `/run/cascade/thin-pool-DM_NAME.lock`, held from the reserve until the release.
//! A reservation found when the lock is ours was left by a cascade that died holding
//! it (a live one would hold the lock), so it is released then, and only then.
//!
//! The lock and the snapshot are held while the changes are journalled: thin_delta's
//! output is read as it comes (see `delta.rs`), so another group on the pool waits
//! for this one's incremental read, at most [`TURN_PATIENCE`].
use super::delta::DeltaRuns;
use super::{dm_name, lvm_command, LVM_TIMEOUT};
use crate::command::{self, Stream};
use crate::diff::Change;
use crate::error::{Error, Result};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the pools' lock files live: a runtime directory, emptied at boot, as the
/// reservations they guard are (a pool's metadata snapshot does not survive its
/// deactivation).
const LOCK_DIR: &str = "/run/cascade";

/// How long a group waits for another group's turn at the same pool.
pub(super) const TURN_PATIENCE: Duration = Duration::from_secs(600);

fn lock_path(vg: &str, pool: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("thin-pool-{}.lock", dm_name(vg, pool)))
}

/// This process's turn at a pool's metadata snapshot, reserved; released (and the
/// turn given up) when dropped, whatever happened in between.
struct MetadataSnap {
    tpool: String,
    // Dropped after the release in `drop`.
    _turn: File,
}

impl MetadataSnap {
    fn reserve(vg: &str, pool: &str) -> Result<MetadataSnap> {
        std::fs::create_dir_all(LOCK_DIR)
            .map_err(Error::io("cannot create lock directory", LOCK_DIR))?;
        let path = lock_path(vg, pool);
        let turn = crate::lock::lock_within(&path, &path, TURN_PATIENCE)?;
        let tpool = format!("{}-tpool", dm_name(vg, pool));
        let message = |m: &str| {
            crate::sys::dm_target_message(&tpool, m).map_err(|e| Error::Command {
                command: format!("dmsetup message {tpool} 0 {m}"),
                status: "failed".into(),
                stderr: e.to_string(),
            })
        };
        if message("reserve_metadata_snap").is_err() {
            // The turn is ours, so no live cascade uses this reservation.
            tracing::warn!(pool = %tpool, "releasing a metadata snapshot left reserved by a cascade that stopped");
            let _ = message("release_metadata_snap");
            message("reserve_metadata_snap")?;
        }
        Ok(MetadataSnap { tpool, _turn: turn })
    }
}

impl Drop for MetadataSnap {
    fn drop(&mut self) {
        if let Err(e) = crate::sys::dm_target_message(&self.tpool, "release_metadata_snap") {
            tracing::error!(pool = %self.tpool, error = %e, "could not release the thin pool's metadata snapshot");
        }
    }
}

/// The changes thin_delta reports between two thin devices of a pool, read as it
/// prints them, on a metadata snapshot held until the last one is read (or this is
/// dropped).
pub(super) struct ThinDelta {
    // Field order is drop order: thin_delta is killed before its snapshot goes.
    runs: Option<DeltaRuns<BufReader<Stream>>>,
    command: String,
    _snap: MetadataSnap,
}

impl ThinDelta {
    /// Starts `thin_delta` between thin ids `id1` and `id2` of `VG/POOL`; `size` clips
    /// the ranges to the volume.
    pub fn start(vg: &str, pool: &str, id1: &str, id2: &str, size: u64) -> Result<ThinDelta> {
        let snap = MetadataSnap::reserve(vg, pool)?;
        let tmeta = format!("/dev/mapper/{}_tmeta", dm_name(vg, pool));
        let argv = lvm_command(&["thin_delta", "-m", "--snap1", id1, "--snap2", id2, &tmeta]);
        let stream = match command::stream(&argv, super::ENV, LVM_TIMEOUT) {
            Err(Error::Command { status, .. }) if status == "could not start" => {
                return Err(Error::NotFound(
                    "thin_delta could not be run: the lvm-thin driver needs thin-provisioning-tools installed".into(),
                ))
            }
            r => r?,
        };
        Ok(ThinDelta {
            runs: Some(DeltaRuns::new(BufReader::new(stream), size)),
            command: argv.join(" "),
            _snap: snap,
        })
    }
}

impl Iterator for ThinDelta {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Result<Change>> {
        let runs = self.runs.as_mut()?;
        match runs.next() {
            Some(Ok(c)) => Some(Ok(c)),
            Some(Err(why)) => {
                self.runs = None;
                Some(Err(Error::Command {
                    command: self.command.clone(),
                    status: "unreadable output".into(),
                    stderr: why,
                }))
            }
            // The end of the output: how did thin_delta end?
            None => {
                let stream = self.runs.take()?.into_inner().into_inner();
                stream.finish(None).err().map(Err)
            }
        }
    }
}
