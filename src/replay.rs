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
use crate::journal::record::{Record, VolumeInfo, MAX_EXTENT};
use crate::journal::Journal;
use crate::progress::Progress;
use crate::sys;
use serde::Serialize;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// Where one volume goes: `ID=PATH`, or a bare `PATH` taken in journal volume order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayTarget {
    pub volume: Option<String>,
    pub path: PathBuf,
}

impl std::str::FromStr for ReplayTarget {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s.split_once('=') {
            Some((id, path)) if !id.is_empty() && !id.contains('/') => ReplayTarget {
                volume: Some(id.into()),
                path: path.into(),
            },
            _ => ReplayTarget {
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
    pub deltas: u64,
    pub data_bytes: u64,
    pub zero_bytes: u64,
    pub volumes: Vec<ReplayedVolume>,
}

/// An open replay target.
pub struct Target {
    pub file: File,
    /// A block device: zeroed with BLKZEROOUT rather than by punching holes.
    pub device: bool,
    pub path: PathBuf,
}

/// Applies single deltas to open targets, keyed by volume id. Volumes without a
/// target are skipped. Buffers are reused across deltas.
pub struct Applier {
    dec: zstd::bulk::Decompressor<'static>,
    raw: Vec<u8>,
    zeros: Vec<u8>,
    /// Bytes written since writeback was last started.
    unflushed: u64,
}

/// How much a replay writes before it asks the kernel to start writing it out: keeps
/// the disk busy while records are decompressed and dirty memory bounded.
const WRITEBACK_EVERY: u64 = 32 << 20;

impl Applier {
    pub fn new() -> Result<Applier> {
        let dec = zstd::bulk::Decompressor::new().map_err(|e| Error::Io {
            what: "cannot start zstd",
            path: PathBuf::new(),
            cause: e,
        })?;
        Ok(Applier {
            dec,
            raw: vec![0u8; MAX_EXTENT],
            zeros: vec![0u8; MAX_EXTENT],
            unflushed: 0,
        })
    }

    /// Writes delta `d` to the targets; returns the bytes written and zeroed. Each
    /// record's checksum is checked as it is read; applying a delta twice is harmless.
    /// `progress` hears of the volume bytes of each record applied
    /// ([`Record::extent_len`], whether or not its volume has a target).
    pub fn apply(
        &mut self,
        journal: &Journal,
        d: u64,
        targets: &HashMap<String, Target>,
        progress: &dyn Progress,
    ) -> Result<(u64, u64)> {
        let mut total = (0, 0);
        let mut reader = journal.read_delta(d)?;
        let mut slots = Vec::new();
        while let Some(rec) = reader.next_record()? {
            let len = rec.extent_len();
            let applied = self.record(rec, targets, &mut slots)?;
            progress.inc(len);
            match applied {
                Ok((data, zero)) => {
                    total.0 += data;
                    total.1 += zero;
                }
                Err(why) => return Err(reader.corrupt(why)),
            }
        }
        Ok(total)
    }

    /// Applies one record; `slots` maps the delta's volumes to targets (set by its
    /// Begin). Returns the bytes written and zeroed, or why the record is corrupt
    /// (the caller knows where it is).
    pub(crate) fn record<'t>(
        &mut self,
        rec: Record<'_>,
        targets: &'t HashMap<String, Target>,
        slots: &mut Vec<Option<&'t Target>>,
    ) -> Result<std::result::Result<(u64, u64), String>> {
        match rec {
            Record::Begin(b) => {
                *slots = b.volumes.iter().map(|v| targets.get(&v.id)).collect();
                // A file target takes each delta's volume size, so bytes past a
                // shrunken end do not come back when the volume grows again.
                for (v, t) in b.volumes.iter().zip(slots.iter()) {
                    if let Some(t) = t.filter(|t| !t.device) {
                        t.file
                            .set_len(v.size)
                            .map_err(Error::io("cannot size replay target", &t.path))?;
                    }
                }
            }
            Record::Data {
                volume,
                offset,
                length,
                compressed,
                ..
            } => {
                let Some(t) = slots[volume as usize] else {
                    return Ok(Ok((0, 0)));
                };
                let out = &mut self.raw[..length as usize];
                match self.dec.decompress_to_buffer(compressed, out) {
                    Ok(n) if n == length as usize => {}
                    Ok(n) => {
                        return Ok(Err(format!("data decompresses to {n} bytes, not {length}")))
                    }
                    Err(e) => return Ok(Err(format!("data does not decompress: {e}"))),
                }
                t.file
                    .write_all_at(out, offset)
                    .map_err(Error::io("cannot write replay target", &t.path))?;
                self.unflushed += length as u64;
                if self.unflushed >= WRITEBACK_EVERY {
                    // Only a hint: the final fsync is what makes the target durable.
                    let _ = sys::start_writeback(&t.file);
                    self.unflushed = 0;
                }
                return Ok(Ok((length as u64, 0)));
            }
            Record::Zero {
                volume,
                offset,
                length,
                ..
            } => {
                let Some(t) = slots[volume as usize] else {
                    return Ok(Ok((0, 0)));
                };
                zero_range(t, offset, length, &self.zeros)?;
                return Ok(Ok((0, length)));
            }
            Record::Commit(_) | Record::Bookmark(_) => {}
        }
        Ok(Ok((0, 0)))
    }
}

/// Replays deltas up to `until` onto `targets`. `progress` is told two phases over
/// the same total, the volume bytes the deltas set (their `changed_bytes`): "check",
/// reading every record before anything is written, then "replay".
pub fn replay(
    journal: &Journal,
    until: u64,
    targets: &[ReplayTarget],
    progress: &dyn Progress,
) -> Result<ReplayReport> {
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
    let mut open: HashMap<String, Target> = HashMap::new();
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
                    Target {
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
                    Target {
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
        deltas: until - from + 1,
        data_bytes: 0,
        zero_bytes: 0,
        volumes: Vec::new(),
    };
    let mut applier = Applier::new()?;
    progress.start("replay", total);
    for d in from..=until {
        let (data, zero) = applier.apply(journal, d, &open, progress)?;
        report.data_bytes += data;
        report.zero_bytes += zero;
    }
    report.volumes = sync_targets(&chosen, &open, &final_volumes)?;
    progress.finish();
    Ok(report)
}

/// Makes every chosen target durable; describes each with its volume's size at the
/// point (`volumes`, which holds every chosen id).
pub(crate) fn sync_targets(
    chosen: &[(String, PathBuf)],
    open: &HashMap<String, Target>,
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

/// What makes two paths the same file: device, inode and birth time when it exists
/// (an inode number alone is reused as soon as a file is deleted), else the absolute
/// path.
pub(crate) fn file_identity(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => {
            let born = m
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("inode {}:{} born {born}", m.dev(), m.ino())
        }
        Err(_) => std::path::absolute(p)
            .map_or_else(|_| p.display().to_string(), |a| a.display().to_string()),
    }
}

/// Two volumes replayed into one file would leave neither right: refuse targets that
/// are the same file (by device and inode) or the same path.
pub(crate) fn refuse_shared_targets(chosen: &[(String, PathBuf)]) -> Result<()> {
    let ids: Vec<String> = chosen.iter().map(|(_, p)| file_identity(p)).collect();
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
pub(crate) fn assign(targets: &[ReplayTarget], ids: &[&str]) -> Result<Vec<(String, PathBuf)>> {
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

/// Makes a range read as zeros: a hole in a file, a zeroed range on a device, and
/// written zeros where neither is supported.
fn zero_range(t: &Target, offset: u64, length: u64, zeros: &[u8]) -> Result<()> {
    let fast = if t.device {
        sys::zero_device_range(&t.file, offset, length)
    } else {
        sys::punch_hole(&t.file, offset, length)
    };
    if fast.is_ok() {
        return Ok(());
    }
    let mut at = offset;
    while at < offset + length {
        let n = (offset + length - at).min(zeros.len() as u64) as usize;
        t.file
            .write_all_at(&zeros[..n], at)
            .map_err(Error::io("cannot write replay target", &t.path))?;
        at += n as u64;
    }
    Ok(())
}
