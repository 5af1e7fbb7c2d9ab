//! The `file` driver: a volume is an image file (or a block device read as one).
//!
//! Where the file system shares blocks (XFS, btrfs), a snapshot is a reflink clone
//! (FICLONE) and two clones are diffed by their extent maps: the cycle costs the
//! change, not the volume. Elsewhere a fresh copy of the volume each cycle would cost a
//! full write, so the driver keeps one sparse **copy** per volume instead: the snapshot
//! is *live* (it reads the volume itself, with the group kept frozen by the hooks while
//! the delta is journalled), the diff is a block comparison of the volume against the
//! copy, and `advance` brings the copy forward by replaying the committed delta onto it.
//! The copy is therefore, byte for byte, what the journal replays to.
//!
//! Layout: `STATE/snapshots/TAG/` holds `snapshot.json` and `ID.img` per volume. A
//! directory appears under its final name only when complete (built as `TAG.tmp`,
//! fsynced, renamed). A manifest that still says `live` means `advance` has not
//! finished; it is idempotent, and the next cycle runs it again.
use super::{SnapshotSet, SnapshotVolume, VolumeDriver};
use crate::config::ConsistencyGroup;
use crate::diff::{self, BlockCompare, Changes, ExtentMapDiff};
use crate::error::{Error, Result};
use crate::fsutil::{rename_durable, sync_dir, write_atomic};
use crate::journal::Journal;
use crate::journal::{Applier, VolumeFile};
use crate::progress::Progress;
use crate::sys;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SNAPSHOT_MANIFEST: &str = "snapshot.json";

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

    fn source(&self, id: &str) -> Result<&Path> {
        self.volumes
            .iter()
            .find(|(v, _)| v == id)
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "volume `{id}` is no longer in the consistency group"
                ))
            })
    }

    /// Writes the manifest of `set` into `dir` atomically.
    fn write_manifest(dir: &Path, set: &SnapshotSet) -> Result<()> {
        let json = serde_json::to_vec_pretty(set).expect("snapshot manifest serialises");
        write_atomic(&dir.join(SNAPSHOT_MANIFEST), &json)
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
            let time_ns = crate::clock::now_ns();
            let mut volumes = Vec::new();
            for (id, src) in &self.volumes {
                let dst = tmp.join(format!("{id}.img"));
                let (size, reflinked) = try_clone(id, src, &dst)?;
                let path = self.tag_dir(tag).join(format!("{id}.img"));
                volumes.push(SnapshotVolume {
                    id: id.clone(),
                    size,
                    path,
                    reflinked,
                    live: !reflinked,
                });
            }
            let set = SnapshotSet {
                tag,
                time_ns,
                volumes,
            };
            Self::write_manifest(&tmp, &set)?;
            let done = self.tag_dir(tag);
            rename_durable(&tmp, &done)?;
            Ok(set)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    fn snapshots(&self) -> Result<Vec<u64>> {
        super::tags_in(&self.dir, "")
    }

    fn open_snapshot(&self, tag: u64) -> Result<SnapshotSet> {
        super::read_set(self.tag_dir(tag).join(SNAPSHOT_MANIFEST))
    }

    fn open_volume(&self, snap: &SnapshotSet, volume: usize) -> Result<File> {
        let v = &snap.volumes[volume];
        let path = if v.live {
            self.source(&v.id)?
        } else {
            v.path.as_path()
        };
        File::open(path).map_err(Error::io("cannot open snapshot", path))
    }

    fn changes<'a>(
        &'a self,
        old: Option<&'a SnapshotSet>,
        new: &'a SnapshotSet,
        volume: usize,
        stop: &'a dyn Progress,
    ) -> Result<Changes<'a>> {
        let nv = &new.volumes[volume];
        let new_file = self.open_volume(new, volume)?;
        let Some((i, ov)) =
            old.and_then(|o| o.volumes.iter().enumerate().find(|(_, v)| v.id == nv.id))
        else {
            return Ok(diff::allocated_ranges(new_file, nv.size, &nv.path));
        };
        let old_file = self.open_volume(old.expect("found above"), i)?;
        let dev = |f: &File, p: &Path| {
            f.metadata()
                .map(|m| m.dev())
                .map_err(Error::io("cannot stat", p))
        };
        if ov.reflinked && nv.reflinked && dev(&old_file, &ov.path)? == dev(&new_file, &nv.path)? {
            return Ok(Box::new(ExtentMapDiff::new(
                &old_file,
                ov.size,
                &new_file,
                nv.size,
                nv.path.clone(),
            )));
        }
        Ok(Box::new(BlockCompare::new(
            old_file,
            ov.size,
            new_file,
            nv.size,
            nv.path.clone(),
            stop,
        )))
    }

    /// Brings each live volume's copy forward to `new` by replaying `new`'s delta onto
    /// the base's copy (moved into `new`'s directory first, so a crash anywhere leaves
    /// exactly one copy to finish), then marks `new` complete and retires `base`.
    fn advance(
        &self,
        base: Option<&SnapshotSet>,
        new: &SnapshotSet,
        journal: &Journal,
    ) -> Result<()> {
        let dir = self.tag_dir(new.tag);
        let mut targets = HashMap::new();
        for v in new.volumes.iter().filter(|v| v.live) {
            if !v.path.exists() {
                let old = base.and_then(|b| {
                    b.volumes
                        .iter()
                        .find(|o| o.id == v.id && !o.live && o.path.exists())
                });
                match old {
                    Some(o) => std::fs::rename(&o.path, &v.path)
                        .map_err(Error::io("cannot move the volume copy to", &v.path))?,
                    None if journal.delta(new.tag)?.flags & crate::journal::record::FLAG_FULL
                        != 0 =>
                    {
                        File::create(&v.path)
                            .map_err(Error::io("cannot create volume copy", &v.path))?;
                    }
                    None => {
                        return Err(Error::NotFound(format!(
                        "the copy of volume `{}` for delta {} is gone; the next cycle must be full",
                        v.id, new.tag
                    )))
                    }
                }
                sync_dir(&dir)?;
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&v.path)
                .map_err(Error::io("cannot open volume copy", &v.path))?;
            file.set_len(v.size)
                .map_err(Error::io("cannot size volume copy", &v.path))?;
            targets.insert(
                v.id.clone(),
                VolumeFile {
                    file,
                    device: false,
                    path: v.path.clone(),
                },
            );
        }
        if !targets.is_empty() {
            Applier::new()?.apply(journal, new.tag, &targets, &crate::progress::NoProgress)?;
            for t in targets.values() {
                t.file
                    .sync_all()
                    .map_err(Error::io("cannot sync volume copy", &t.path))?;
            }
            let mut done = new.clone();
            done.volumes.iter_mut().for_each(|v| v.live = false);
            Self::write_manifest(&dir, &done)?;
        }
        match base {
            Some(b) if b.tag != new.tag => self.retire(b.tag),
            _ => Ok(()),
        }
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

/// Clones `src` to `dst` where the file system can; otherwise creates nothing and
/// the volume is snapshotted live. Returns the volume's size and whether it cloned.
fn try_clone(id: &str, src: &Path, dst: &Path) -> Result<(u64, bool)> {
    let from = File::open(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound(format!("volume `{id}`: {} does not exist", src.display()))
        }
        _ => Error::io("cannot open volume", src)(e),
    })?;
    let size = sys::device_or_file_size(&from).map_err(Error::io("cannot size volume", src))?;
    if !from
        .metadata()
        .map_err(Error::io("cannot stat volume", src))?
        .is_file()
    {
        return Ok((size, false));
    }
    let to = File::create(dst).map_err(Error::io("cannot create snapshot", dst))?;
    if sys::reflink(&from, &to).is_err() {
        drop(to);
        std::fs::remove_file(dst).map_err(Error::io("cannot remove", dst))?;
        return Ok((size, false));
    }
    to.sync_all()
        .map_err(Error::io("cannot sync snapshot", dst))?;
    Ok((size, true))
}
