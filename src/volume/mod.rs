//! Volume drivers: how a kind of volume is snapshotted, diffed and read.
//!
//! A driver is built for one consistency group (its volumes, its state directory).
//! Contract, which `tests/driver_conformance.rs` checks for every driver:
//! - `snapshot(tag)` captures every volume of the group as of one moment (as close as
//!   the volume manager allows; hooks around it make the moment consistent for
//!   applications) and is all or nothing: after an error no snapshot `tag` exists.
//!   A volume may be snapshotted *live*: it is read from the volume itself until
//!   `advance`, and the cycle keeps the group frozen until its delta is journalled.
//! - `advance(base, new, journal)` runs after `new`'s delta committed: from then on
//!   `new` is fixed and durable (the next cycle diffs against it, even after a crash)
//!   and `base` is retired. It is idempotent, so a cycle that finds the newest snapshot
//!   still live runs it again.
//! - `changes(old, new, v)` yields ascending, non-overlapping ranges of volume `v`
//!   covering every byte whose content differs between `old` and `new`; with no `old`
//!   it covers the whole volume (Data where allocated, Zero elsewhere). It may report
//!   unchanged bytes as changed (cost), never the reverse (loss). A diff that reads
//!   the volumes (a block comparison) asks `stop` between chunks and fails with
//!   `Error::Stopped` when it says so: a scan that finds nothing to yield may take
//!   as long as reading the whole volume.
//! - `retire(tag)` removes a snapshot; retiring one that does not exist is not an error.
mod file;
mod lvm_thin;

pub use file::FileDriver;
pub use lvm_thin::LvmThinDriver;

use crate::config::{ConsistencyGroup, DriverKind};
use crate::diff::Changes;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotVolume {
    pub id: String,
    pub size: u64,
    /// Where the snapshot's bytes can be read (an image file or a block device).
    pub path: PathBuf,
    /// Shares blocks with its volume (a reflink clone), so extent maps can be diffed.
    #[serde(default)]
    pub reflinked: bool,
    /// Read from the volume itself until `advance` makes `path` hold the snapshot.
    #[serde(default)]
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSet {
    pub tag: u64,
    /// When the group was captured (Unix nanoseconds).
    pub time_ns: i64,
    pub volumes: Vec<SnapshotVolume>,
}

pub trait VolumeDriver: Send + Sync {
    fn name(&self) -> &'static str;

    /// Snapshots every volume of the group together, as snapshot `tag`.
    fn snapshot(&self, tag: u64) -> Result<SnapshotSet>;

    /// Tags of the snapshots that exist, ascending.
    fn snapshots(&self) -> Result<Vec<u64>>;

    fn open_snapshot(&self, tag: u64) -> Result<SnapshotSet>;

    /// Changed ranges of `new.volumes[volume]` since `old` (see the module contract).
    fn changes<'a>(
        &'a self,
        old: Option<&'a SnapshotSet>,
        new: &'a SnapshotSet,
        volume: usize,
        stop: &'a dyn Progress,
    ) -> Result<Changes<'a>>;

    /// Opens a snapshot volume for positional reads.
    fn open_volume(&self, snap: &SnapshotSet, volume: usize) -> Result<File> {
        let v = &snap.volumes[volume];
        File::open(&v.path).map_err(Error::io("cannot open snapshot", &v.path))
    }

    /// Makes `new` (whose delta is committed in `journal`) the fixed base of the next
    /// cycle and retires `base`; see the module contract.
    fn advance(
        &self,
        base: Option<&SnapshotSet>,
        new: &SnapshotSet,
        journal: &Journal,
    ) -> Result<()> {
        let _ = (new, journal);
        base.map_or(Ok(()), |b| self.retire(b.tag))
    }

    fn retire(&self, tag: u64) -> Result<()>;
}

/// Snapshot tags named by the entries of `dir` (`TAG` followed by `suffix`), ascending;
/// none if `dir` does not exist.
fn tags_in(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let mut tags = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tags),
        Err(e) => return Err(Error::io("cannot list snapshots in", dir)(e)),
    };
    for e in entries {
        let e = e.map_err(Error::io("cannot list snapshots in", dir))?;
        if let Some(tag) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        {
            tags.push(tag);
        }
    }
    tags.sort_unstable();
    Ok(tags)
}

/// A snapshot set recorded as JSON at `path`.
fn read_set(path: PathBuf) -> Result<SnapshotSet> {
    let bytes = std::fs::read(&path).map_err(Error::io("cannot read snapshot manifest", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Io {
        what: "snapshot manifest is damaged",
        path,
        cause: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

impl SnapshotSet {
    /// Whether any volume still reads from the live volume.
    pub fn is_live(&self) -> bool {
        self.volumes.iter().any(|v| v.live)
    }
}

/// The driver for a consistency group, keeping its state under `state_dir`.
pub fn driver_for(cg: &ConsistencyGroup, state_dir: &Path) -> Result<Box<dyn VolumeDriver>> {
    match cg.volumes[0].driver {
        DriverKind::File => Ok(Box::new(FileDriver::new(cg, state_dir))),
        DriverKind::LvmThin => Ok(Box::new(LvmThinDriver::new(cg, state_dir))),
    }
}
