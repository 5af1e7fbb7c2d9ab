//! The physical replica: every volume kept current on a block device or image file by
//! applying deltas in journal order. The cursor is a local file, advanced only after
//! the delta's writes are fsynced.
use super::cursor::FileCursor;
use super::{Exporter, Target};
use crate::config::ConsistencyGroup;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::replay::{Applier, Target as Device};
use crate::sys;
use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

pub struct BlockExporter {
    name: String,
    paths: BTreeMap<String, PathBuf>,
    cursor: FileCursor,
    applier: Applier,
}

impl BlockExporter {
    pub fn new(
        target: &Target,
        cg: &ConsistencyGroup,
        volumes: &BTreeMap<String, PathBuf>,
        state: &Path,
    ) -> Result<BlockExporter> {
        for v in &cg.volumes {
            if !volumes.contains_key(&v.id) {
                return Err(Error::Config {
                    file: target.file.clone(),
                    reason: format!(
                        "volumes: no device or image file for volume `{}` of `{}`",
                        v.id, cg.name
                    ),
                });
            }
        }
        if let Some(extra) = volumes
            .keys()
            .find(|k| !cg.volumes.iter().any(|v| &&v.id == k))
        {
            return Err(Error::Config {
                file: target.file.clone(),
                reason: format!("volumes: `{extra}` is not a volume of `{}`", cg.name),
            });
        }
        Ok(BlockExporter {
            name: target.name.clone(),
            paths: volumes.clone(),
            cursor: FileCursor::new(state.join(format!("{}.cursor", target.name))),
            applier: Applier::new()?,
        })
    }

    /// Opens every volume's device or file, refusing one that is missing or smaller
    /// than the volume at `delta` before anything is written.
    fn open(&self, journal: &Journal, delta: u64) -> Result<HashMap<String, Device>> {
        let mut out = HashMap::new();
        for v in journal.volumes_at(delta)? {
            let Some(path) = self.paths.get(&v.id) else {
                continue;
            };
            let missing = |e: std::io::Error| {
                match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound(format!(
                    "target `{}`: {} for volume `{}` does not exist; create the image file or attach the device",
                    self.name,
                    path.display(),
                    v.id
                )),
                _ => Error::io("cannot open replica", path)(e),
            }
            };
            let file = OpenOptions::new().write(true).open(path).map_err(missing)?;
            let meta = file
                .metadata()
                .map_err(Error::io("cannot stat replica", path))?;
            let actual =
                sys::device_or_file_size(&file).map_err(Error::io("cannot size replica", path))?;
            if actual < v.size {
                return Err(Error::TargetTooSmall {
                    target: path.clone(),
                    volume: v.id.clone(),
                    actual,
                    needed: v.size,
                });
            }
            out.insert(
                v.id,
                Device {
                    file,
                    device: meta.file_type().is_block_device(),
                    path: path.clone(),
                },
            );
        }
        Ok(out)
    }
}

impl Exporter for BlockExporter {
    fn cursor(&mut self) -> Result<u64> {
        self.cursor.get()
    }

    fn apply(&mut self, journal: &Journal, delta: u64) -> Result<u64> {
        super::check_next(&self.name, self.cursor.get()?, delta)?;
        let devices = self.open(journal, delta)?;
        // Checked in full before the first write, like replay.
        journal.read_delta(delta)?.check_all()?;
        self.applier.apply(journal, delta, &devices)?;
        for d in devices.values() {
            d.file
                .sync_all()
                .map_err(Error::io("cannot sync replica", &d.path))?;
        }
        self.cursor.set(delta)?;
        Ok(journal.delta(delta)?.stored_bytes)
    }
}
