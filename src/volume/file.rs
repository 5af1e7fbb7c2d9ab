//! The `file` driver: a volume is an image file (or a block device read as one).
//!
//! A snapshot is a reflink clone (FICLONE) where the file system shares blocks, else a
//! sparse-aware copy. Two reflink snapshots are diffed by their extent maps, anything
//! else by block comparison. Snapshots live in `STATE/snapshots/TAG/`; a snapshot
//! directory appears under its final name only when complete (built as `TAG.tmp`,
//! fsynced, renamed), so a crash never leaves a half snapshot that looks whole.
use super::{SnapshotSet, SnapshotVolume, VolumeDriver};
use crate::config::ConsistencyGroup;
use crate::diff::{self, BlockCompare, ChangeKind, Changes, ExtentMapDiff};
use crate::error::{Error, Result};
use crate::sys;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

const MANIFEST: &str = "snapshot.json";

pub struct FileDriver {
    volumes: Vec<(String, PathBuf)>,
    dir: PathBuf,
}

impl FileDriver {
    pub fn new(cg: &ConsistencyGroup, state_dir: &Path) -> FileDriver {
        FileDriver {
            volumes: cg
                .volumes
                .iter()
                .map(|v| {
                    (
                        v.id.clone(),
                        v.path.clone().expect("validated: file volumes have a path"),
                    )
                })
                .collect(),
            dir: state_dir.join("snapshots"),
        }
    }

    fn tag_dir(&self, tag: u64) -> PathBuf {
        self.dir.join(tag.to_string())
    }
}

impl VolumeDriver for FileDriver {
    fn name(&self) -> &'static str {
        "file"
    }

    fn snapshot(&self, tag: u64) -> Result<SnapshotSet> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io("cannot create snapshot directory", &self.dir))?;
        let tmp = self.dir.join(format!("{tag}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(Error::io("cannot remove unfinished snapshot", &tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(Error::io("cannot create snapshot directory", &tmp))?;
        let result = (|| {
            let time_ns = now_ns();
            let mut volumes = Vec::new();
            for (id, src) in &self.volumes {
                let dst = tmp.join(format!("{id}.img"));
                let (size, reflinked) = clone_or_copy(src, &dst)?;
                volumes.push(SnapshotVolume {
                    id: id.clone(),
                    size,
                    path: self.tag_dir(tag).join(format!("{id}.img")),
                    reflinked,
                });
            }
            let set = SnapshotSet {
                tag,
                time_ns,
                volumes,
            };
            let manifest = tmp.join(MANIFEST);
            let json = serde_json::to_vec_pretty(&set).expect("snapshot manifest serialises");
            std::fs::write(&manifest, json)
                .map_err(Error::io("cannot write snapshot manifest", &manifest))?;
            sync_path(&manifest)?;
            sync_path(&tmp)?;
            let done = self.tag_dir(tag);
            std::fs::rename(&tmp, &done).map_err(Error::io("cannot complete snapshot", &done))?;
            sync_path(&self.dir)?;
            Ok(set)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    fn snapshots(&self) -> Result<Vec<u64>> {
        let mut tags = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tags),
            Err(e) => return Err(Error::io("cannot list snapshots in", &self.dir)(e)),
        };
        for e in entries {
            let e = e.map_err(Error::io("cannot list snapshots in", &self.dir))?;
            if let Some(tag) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                tags.push(tag);
            }
        }
        tags.sort_unstable();
        Ok(tags)
    }

    fn open_snapshot(&self, tag: u64) -> Result<SnapshotSet> {
        let manifest = self.tag_dir(tag).join(MANIFEST);
        let bytes = std::fs::read(&manifest)
            .map_err(Error::io("cannot read snapshot manifest", &manifest))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            what: "snapshot manifest is damaged",
            path: manifest,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    fn changes<'a>(
        &'a self,
        old: Option<&'a SnapshotSet>,
        new: &'a SnapshotSet,
        volume: usize,
    ) -> Result<Changes<'a>> {
        let nv = &new.volumes[volume];
        let open = |p: &Path| File::open(p).map_err(Error::io("cannot open snapshot", p));
        let new_file = open(&nv.path)?;
        let Some(ov) = old.and_then(|o| o.volumes.iter().find(|v| v.id == nv.id)) else {
            return Ok(diff::allocated_ranges(new_file, nv.size, &nv.path));
        };
        let old_file = open(&ov.path)?;
        let same_fs = |a: &File, b: &File| -> Result<bool> {
            let (ma, mb) = (a.metadata(), b.metadata());
            Ok(ma.map_err(Error::io("cannot stat", &ov.path))?.dev()
                == mb.map_err(Error::io("cannot stat", &nv.path))?.dev())
        };
        if ov.reflinked && nv.reflinked && same_fs(&old_file, &new_file)? {
            let map = ExtentMapDiff::new(&old_file, ov.size, &new_file, nv.size, nv.path.clone());
            return Ok(Box::new(map));
        }
        Ok(Box::new(BlockCompare::new(
            old_file,
            ov.size,
            new_file,
            nv.size,
            nv.path.clone(),
        )))
    }

    fn retire(&self, tag: u64) -> Result<()> {
        let dir = self.tag_dir(tag);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("cannot remove snapshot", &dir)(e))
            }
            _ => Ok(()),
        }
    }
}

/// Copies `src` to `dst` as a reflink clone if the file system can, else sparsely.
/// Returns the size and whether it is a clone.
fn clone_or_copy(src: &Path, dst: &Path) -> Result<(u64, bool)> {
    let from = File::open(src).map_err(Error::io("cannot open volume", src))?;
    let size = sys::device_or_file_size(&from).map_err(Error::io("cannot size volume", src))?;
    let to = File::create(dst).map_err(Error::io("cannot create snapshot", dst))?;
    let is_file = from
        .metadata()
        .map_err(Error::io("cannot stat volume", src))?
        .is_file();
    let reflinked = is_file && sys::reflink(&from, &to).is_ok();
    if !reflinked {
        sparse_copy(&from, size, &to, src, dst)?;
    }
    to.sync_all()
        .map_err(Error::io("cannot sync snapshot", dst))?;
    Ok((size, reflinked))
}

fn sparse_copy(from: &File, size: u64, to: &File, src: &Path, dst: &Path) -> Result<()> {
    to.set_len(size)
        .map_err(Error::io("cannot size snapshot", dst))?;
    let mut buf = vec![0u8; 1 << 20];
    let probe = from
        .try_clone()
        .map_err(Error::io("cannot open volume", src))?;
    for run in diff::allocated_ranges(probe, size, src) {
        let run = run?;
        if run.kind != ChangeKind::Data {
            continue;
        }
        let mut at = run.offset;
        while at < run.end() {
            let n = (run.end() - at).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..n], at)
                .map_err(Error::io("cannot read volume", src))?;
            // Zeros stay holes in the snapshot, as they would in a clone.
            if !diff::is_zero(&buf[..n]) {
                to.write_all_at(&buf[..n], at)
                    .map_err(Error::io("cannot write snapshot", dst))?;
            }
            at += n as u64;
        }
    }
    Ok(())
}

fn sync_path(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("cannot sync", p))
}

pub(crate) fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}
