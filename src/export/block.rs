//! The physical replica: every volume kept current on a block device or image file by
//! applying deltas in journal order. The cursor is a local file, advanced only after
//! the delta's writes are fsynced. Deltas are written in place, so before the first
//! write the cursor records the delta being applied: a crash or power cut part-way
//! leaves a replica whose cursor says it is between two deltas, never one that claims
//! a point it does not hold.
use super::cursor::FileCursor;
use super::live::{Live, LiveStatus, RewindReport, RewindTo};
use super::Exporter;
use crate::config::ConsistencyGroup;
use crate::config::Target;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::journal::{Applier, VolumeFile};
use crate::progress::NoProgress;
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
    /// The undo journal of a live target (one with `undo:`).
    live: Option<Live>,
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
        // A replica that is a source volume, or one file for two volumes, would be
        // overwritten by the export: refuse it before anything is written.
        let sources: Vec<(&String, Vec<String>)> = cg
            .volumes
            .iter()
            .map(|v| {
                (
                    &v.id,
                    v.device_paths().iter().flat_map(|p| names(p)).collect(),
                )
            })
            .collect();
        let mut seen: Vec<(&String, Vec<String>)> = Vec::new();
        for (id, path) in volumes {
            let me = names(path);
            let same = |other: &Vec<String>| other.iter().any(|n| me.contains(n));
            let bad = |reason: String| Error::Config {
                file: target.file.clone(),
                reason,
            };
            if let Some((src, _)) = sources.iter().find(|(_, s)| same(s)) {
                return Err(bad(format!(
                    "volumes.{id}: {} is the source volume `{src}` itself",
                    path.display()
                )));
            }
            if let Some((other, _)) = seen.iter().find(|(_, s)| same(s)) {
                return Err(bad(format!(
                    "volumes: `{other}` and `{id}` would both be written to {}",
                    path.display()
                )));
            }
            seen.push((id, me));
        }
        Ok(BlockExporter {
            name: target.name.clone(),
            paths: volumes.clone(),
            cursor: FileCursor::new(state.join(format!("{}.cursor", target.name))),
            applier: Applier::new()?,
            live: target.spec.undo().map(|u| Live::new(&target.name, u)),
        })
    }

    /// What the undo journal's entries made so far cost (None: not a live target).
    pub fn undo_made(&self) -> Option<super::undo::RecordStats> {
        self.live.as_ref().map(|l| l.made)
    }

    fn live_only(&mut self) -> Result<&mut Live> {
        let name = self.name.clone();
        self.live.as_mut().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "target `{name}` is not live: give it `undo:` (a directory and max-bytes or max-age) to rewind it or serve its past"
            ))
        })
    }

    /// Rewinds the replica to a point of its window, or rolls it forward to the
    /// newest exported point (`RewindTo::Latest`, which lets exports go on).
    pub fn rewind(
        &mut self,
        journal: &Journal,
        to: &RewindTo,
        progress: &dyn crate::progress::Progress,
    ) -> Result<RewindReport> {
        let mut state = self.cursor.get()?;
        let devices = self.open_all()?;
        let cursor = FileCursor::new(self.cursor.path().to_path_buf());
        self.live_only()?
            .rewind(&cursor, &mut state, journal, to, &devices, progress)
    }

    /// The replica's volumes as they were at `at`, served without changing it.
    pub fn serve_at(
        &mut self,
        journal: &Journal,
        at: &crate::journal::Point,
    ) -> Result<(
        crate::journal::Until,
        Vec<(String, super::undo::serve::PointExport)>,
    )> {
        let state = self.cursor.get()?;
        let paths: HashMap<String, PathBuf> = self
            .paths
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.live_only()?.serve_at(&state, journal, at, &paths)
    }

    /// Opens every volume's device or file as it is, for a rewind: its sizes come
    /// from the undo journal, and the journal may no longer hold the deltas.
    fn open_all(&self) -> Result<HashMap<String, VolumeFile>> {
        let mut out = HashMap::new();
        for (id, path) in &self.paths {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(Error::io("cannot open replica", path))?;
            let meta = file
                .metadata()
                .map_err(Error::io("cannot stat replica", path))?;
            out.insert(
                id.clone(),
                VolumeFile {
                    file,
                    device: meta.file_type().is_block_device(),
                    path: path.clone(),
                },
            );
        }
        Ok(out)
    }

    /// Opens every volume's device or file, refusing one that is missing or smaller
    /// than the volume at `delta` before anything is written.
    fn open(&self, journal: &Journal, delta: u64) -> Result<HashMap<String, VolumeFile>> {
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
            // Read too: a live target reads undo from it.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(missing)?;
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
                VolumeFile {
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
        Ok(self.cursor.get()?.delta)
    }

    fn fed_by(&mut self) -> Result<Option<String>> {
        Ok(self.cursor.get()?.journal)
    }

    fn run_end(
        &mut self,
        _journal: &Journal,
        next: u64,
        _flush: super::Flush,
    ) -> Result<Option<u64>> {
        // A rewound replica takes nothing until it is rolled forward.
        Ok(self.cursor.get()?.held.is_none().then_some(next))
    }

    /// A live target retires what is past its bounds after every export, also one
    /// that applied nothing (a crash may have come between an apply and its
    /// retirement).
    fn finish(&mut self, _journal: &Journal) -> Result<super::Upkeep> {
        let mut state = self.cursor.get()?;
        if let (Some(live), None, Some(_)) = (&mut self.live, state.held, state.undo_epoch) {
            let delta = state.delta;
            live.after_apply(&self.cursor, &mut state, delta)?;
        }
        Ok(super::Upkeep::default())
    }

    fn live(&mut self) -> Result<Option<LiveStatus>> {
        let state = self.cursor.get()?;
        Ok(self.live.as_mut().map(|l| l.status(&state)))
    }

    fn apply(&mut self, journal: &Journal, delta: u64) -> Result<u64> {
        let mut state = self.cursor.get()?;
        if let Some(h) = state.held {
            return Err(Error::InvalidArgument(format!(
                "target `{}` is rewound to {}: `cascade rewind --target {} --latest` rolls it forward, and exports then go on",
                self.name,
                super::undo::describe(h.at),
                self.name
            )));
        }
        super::check_next(&self.name, state.delta, delta)?;
        // A delta cut short counts as held: its bytes are partly on the replica.
        let held = state.applying.map_or(state.delta, |a| a.max(state.delta));
        journal.check_replica(&self.name, state.journal.as_deref(), held)?;
        let devices = self.open(journal, delta)?;
        for (id, d) in &devices {
            let now = crate::fsutil::file_identity(&d.path);
            // A cursor written before devices had stable ids names the node; while
            // the node is the same it is the same device, and the cursor learns the
            // stable id below.
            let node = crate::fsutil::node_identity(&d.path);
            match state.replicas.get(id) {
                Some(was) if state.delta > 0 && *was != now && *was != node => {
                    return Err(Error::InvalidArgument(format!(
                        "target `{}`: {} for volume `{id}` is not the file that received deltas up to {} (that was {was}; this is {now}); \
                         to rebuild it from the start of the journal, remove {}",
                        self.name,
                        d.path.display(),
                        state.delta,
                        self.cursor.path().display()
                    )))
                }
                _ => {
                    state.replicas.insert(id.clone(), now);
                }
            }
        }
        // Checked in full before the first write, like replay.
        journal.read_delta(delta)?.check_all(&NoProgress)?;
        // A live target's undo is durable before the replica changes.
        if let Some(live) = &mut self.live {
            live.before_apply(&self.cursor, &mut state, journal, delta, &devices)?;
        }
        // The marker names the journal too: a replica cut short in its first delta, or
        // in the first past a repair's cut, is then known as this journal's (it passed
        // the check above), not held to the cut as a replica of unknown origin.
        let fed_by = journal.id().map(String::from);
        if state.applying != Some(delta) || state.journal != fed_by {
            state.applying = Some(delta);
            state.journal = fed_by;
            self.cursor.set(&state)?;
        }
        self.applier.apply(journal, delta, &devices, &NoProgress)?;
        for d in devices.values() {
            d.file
                .sync_all()
                .map_err(Error::io("cannot sync replica", &d.path))?;
        }
        state.delta = delta;
        state.applying = None;
        self.cursor.set(&state)?;
        if let Some(live) = &mut self.live {
            live.after_apply(&self.cursor, &mut state, delta)?;
        }
        Ok(journal.delta(delta)?.stored_bytes)
    }
}

/// What identifies the file or device at `path` (see [`crate::fsutil::file_identity`]),
/// and its absolute path: a thin volume's node need not exist on this host while the
/// volume is inactive, and its names still say what it is.
fn names(path: &Path) -> Vec<String> {
    let mut out = vec![crate::fsutil::file_identity(path)];
    if let Ok(abs) = std::path::absolute(path) {
        out.push(abs.display().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TargetSpec};

    /// A block target onto a thin volume of the group, by either of the names LVM
    /// gives it, is the source itself; no LVM is needed to see that.
    #[test]
    fn a_thin_volume_of_the_group_is_no_replica() {
        let cfg = Config::parse(
            "state-dir: s\njournal-dir: j\nconsistency-groups:\n  - name: db\n    volumes:\n      - id: data\n        driver: lvm-thin\n        lv: vg-0/thin-1\n",
            Path::new("/etc/cascade/c.yaml"),
        )
        .unwrap();
        let cg = cfg.group("db").unwrap();
        let state = tempfile::tempdir().unwrap();
        let open = |replica: &str| {
            let volumes = BTreeMap::from([("data".to_string(), PathBuf::from(replica))]);
            let target = Target {
                name: "r".into(),
                file: "/etc/cascade/r.yaml".into(),
                spec: TargetSpec::Block {
                    volumes: volumes.clone(),
                    undo: None,
                },
            };
            BlockExporter::new(&target, cg, &volumes, state.path())
        };
        for name in ["/dev/vg-0/thin-1", "/dev/mapper/vg--0-thin--1"] {
            let err = open(name).err().expect(name).to_string();
            assert!(err.contains("is the source volume `data` itself"), "{err}");
        }
        assert!(open("/dev/mapper/vg--0-replica").is_ok());
    }
}
