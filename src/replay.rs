//! Replay: rebuilds volumes at a committed point N by applying deltas in order to
//! target files or block devices, starting at the newest full delta at or before N
//! (delta 1, a later full one, or the synthetic full a restore begins with): a full
//! delta sets every byte, so nothing before it matters.
//!
//! Every delta up to N is read and checked (checksums, grammar, commit digest) before
//! the first byte is written, and every target is checked for size before any is
//! touched, so bad input fails without leaving half-written replicas. Memory is two
//! 1 MiB buffers whatever the volume size.
use crate::error::{Error, Result};
use crate::journal::record::VolumeInfo;
use crate::journal::{Applier, Journal, Until, VolumeFile};
use crate::progress::Progress;
use crate::sys;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Where one volume is replayed or restored to (`--to`): `ID=PATH`, or a bare `PATH`
/// taken in journal volume order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub volume: Option<String>,
    pub path: PathBuf,
}

impl std::str::FromStr for Destination {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s.split_once('=') {
            Some((id, path)) if !id.is_empty() && !id.contains('/') => Destination {
                volume: Some(id.into()),
                path: path.into(),
            },
            _ => Destination {
                volume: None,
                path: s.into(),
            },
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ReplayedVolume {
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    /// The full delta the replay started from.
    pub from: u64,
    pub until: u64,
    /// The last write replayed of delta `until`, a split delta cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_write: Option<u64>,
    pub deltas: u64,
    pub data_bytes: u64,
    pub zero_bytes: u64,
    pub volumes: Vec<ReplayedVolume>,
}

/// Replays deltas up to `until` (a delta id, or a delta and the last of its writes)
/// onto `targets`. `progress` is told two phases over the same total, the volume
/// bytes the deltas set (their `changed_bytes`): "check", reading every record before
/// anything is written, then "replay".
pub fn replay(
    journal: &Journal,
    until: impl Into<Until>,
    targets: &[Destination],
    progress: &dyn Progress,
) -> Result<ReplayReport> {
    let Until {
        delta: until,
        write: until_write,
    } = until.into();
    let from = journal.full_base(until)?;
    let final_volumes = journal.volumes_at(until)?;
    let ids: Vec<&str> = final_volumes.iter().map(|v| v.id.as_str()).collect();
    let chosen = assign(targets, &ids)?;
    refuse_shared_targets(&chosen)?;

    // Check everything before writing anything: every record of every delta, and the
    // largest size each volume reaches.
    let mut needed: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for d in from..=until {
        total += journal.delta(d)?.changed_bytes;
    }
    progress.start("check", total);
    for d in from..=until {
        let begin = journal.read_delta(d)?.check_all(progress)?;
        for v in begin.volumes {
            let n = needed.entry(v.id).or_default();
            *n = (*n).max(v.size);
        }
    }
    progress.finish();
    let mut open: HashMap<String, VolumeFile> = HashMap::new();
    let mut to_create = Vec::new();
    for (id, path) in &chosen {
        let need = needed[id];
        match std::fs::metadata(path) {
            Ok(m) => {
                let device = m.file_type().is_block_device();
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(Error::io("cannot open replay target", path))?;
                let actual = sys::device_or_file_size(&file)
                    .map_err(Error::io("cannot size replay target", path))?;
                if actual < need {
                    return Err(Error::TargetTooSmall {
                        target: path.clone(),
                        volume: id.clone(),
                        actual,
                        needed: need,
                    });
                }
                open.insert(
                    id.clone(),
                    VolumeFile {
                        file,
                        device,
                        path: path.clone(),
                    },
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                to_create.push((id.clone(), path.clone()))
            }
            Err(e) => return Err(Error::io("cannot stat replay target", path)(e)),
        }
    }
    // Create every new target, or none: a failure removes those made so far.
    let mut created: Vec<PathBuf> = Vec::new();
    for (id, path) in to_create {
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io("cannot create replay target", &path))
            .and_then(|file| {
                created.push(path.clone());
                file.set_len(needed[&id])
                    .map_err(Error::io("cannot size replay target", &path))?;
                Ok(file)
            });
        match made {
            Ok(file) => {
                open.insert(
                    id,
                    VolumeFile {
                        file,
                        device: false,
                        path,
                    },
                );
            }
            Err(e) => {
                created.iter().for_each(|p| {
                    let _ = std::fs::remove_file(p);
                });
                return Err(e);
            }
        }
    }

    let mut report = ReplayReport {
        from,
        until,
        until_write,
        deltas: until - from + 1,
        data_bytes: 0,
        zero_bytes: 0,
        volumes: Vec::new(),
    };
    let mut applier = Applier::new()?;
    progress.start("replay", total);
    for d in from..=until {
        let cut = if d == until { until_write } else { None };
        let (data, zero) = applier.apply_until(journal, d, cut, &open, progress)?;
        report.data_bytes += data;
        report.zero_bytes += zero;
    }
    report.volumes = sync_targets(&chosen, &open, &final_volumes)?;
    // A new file's bytes are durable only with its name: fsync each directory that
    // gained a target, or a power cut can leave the replay reported done and the
    // file gone.
    let dirs: BTreeSet<&Path> = created
        .iter()
        .map(|p| crate::fsutil::parent_dir(p))
        .collect();
    for dir in dirs {
        crate::fsutil::sync_dir(dir)?;
    }
    progress.finish();
    Ok(report)
}

/// Makes every chosen target durable; describes each with its volume's size at the
/// point (`volumes`, which holds every chosen id).
pub(crate) fn sync_targets(
    chosen: &[(String, PathBuf)],
    open: &HashMap<String, VolumeFile>,
    volumes: &[VolumeInfo],
) -> Result<Vec<ReplayedVolume>> {
    let mut out = Vec::new();
    for (id, path) in chosen {
        let t = &open[id];
        t.file
            .sync_all()
            .map_err(Error::io("cannot sync replay target", &t.path))?;
        out.push(ReplayedVolume {
            id: id.clone(),
            path: path.clone(),
            size: volumes.iter().find(|v| &v.id == id).map_or(0, |v| v.size),
        });
    }
    Ok(out)
}

/// Two volumes replayed into one file would leave neither right: refuse targets that
/// are the same file (by device and inode) or the same path.
pub(crate) fn refuse_shared_targets(chosen: &[(String, PathBuf)]) -> Result<()> {
    let ids: Vec<String> = chosen
        .iter()
        .map(|(_, p)| crate::fsutil::file_identity(p))
        .collect();
    for (i, a) in ids.iter().enumerate() {
        if let Some(j) = ids[..i].iter().position(|b| b == a) {
            return Err(Error::InvalidArgument(format!(
                "volumes `{}` and `{}` would both be replayed into {}",
                chosen[j].0,
                chosen[i].0,
                chosen[i].1.display()
            )));
        }
    }
    Ok(())
}

/// Pairs targets with journal volumes: all by id, or all by position.
pub(crate) fn assign(targets: &[Destination], ids: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    if targets.is_empty() {
        return Err(Error::InvalidArgument(
            "give at least one --to target".into(),
        ));
    }
    let named = targets.iter().filter(|t| t.volume.is_some()).count();
    if named == 0 {
        if targets.len() != ids.len() {
            return Err(Error::InvalidArgument(format!(
                "{} targets for {} volumes ({}); give one per volume, or name them as ID=PATH",
                targets.len(),
                ids.len(),
                ids.join(", ")
            )));
        }
        return Ok(ids
            .iter()
            .zip(targets)
            .map(|(id, t)| (id.to_string(), t.path.clone()))
            .collect());
    }
    if named != targets.len() {
        return Err(Error::InvalidArgument(
            "name every target as ID=PATH, or none".into(),
        ));
    }
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for t in targets {
        let id = t.volume.clone().expect("counted above");
        if !ids.contains(&id.as_str()) {
            return Err(Error::NotFound(format!(
                "volume `{id}` is not in the journal (it has: {})",
                ids.join(", ")
            )));
        }
        if out.iter().any(|(o, _)| *o == id) {
            return Err(Error::InvalidArgument(format!(
                "volume `{id}` is given two targets"
            )));
        }
        out.push((id, t.path.clone()));
    }
    Ok(out)
}
