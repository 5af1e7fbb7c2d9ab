//! Applying a delta: its records written to open files or block devices, in order.
//! One implementation for every reader that changes bytes (replay, restore, the
//! block exporter, the file driver's copy), so each checks records the same way:
//! every record's checksum is checked as it is read, data that does not decompress
//! to its stated length is refused, and applying a delta twice is harmless (records
//! carry absolute bytes). Memory is two buffers of the largest extent.
use super::record::{Record, MAX_EXTENT};
use super::Journal;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::sys;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// An open file or block device that receives one volume's bytes: a replay's or
/// restore's output, a block replica, the file driver's copy.
pub struct VolumeFile {
    pub file: File,
    /// A block device: zeroed with BLKZEROOUT rather than by punching holes.
    pub device: bool,
    pub path: PathBuf,
}

/// Applies single deltas to open volume files, keyed by volume id. Volumes without
/// a file are skipped. Buffers are reused across deltas.
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
        targets: &HashMap<String, VolumeFile>,
        progress: &dyn Progress,
    ) -> Result<(u64, u64)> {
        self.apply_until(journal, d, None, targets, progress)
    }

    /// `apply`, but of a split delta only the records of writes up to `until_write`
    /// when it is set (the delta is read to its end all the same, so its commit is
    /// checked before the replay is called done).
    pub fn apply_until(
        &mut self,
        journal: &Journal,
        d: u64,
        until_write: Option<u64>,
        targets: &HashMap<String, VolumeFile>,
        progress: &dyn Progress,
    ) -> Result<(u64, u64)> {
        let mut total = (0, 0);
        let mut reader = journal.read_delta(d)?;
        let mut slots = Vec::new();
        while let Some(rec) = reader.next_record()? {
            let len = rec.extent_len();
            let past = |w: u64| until_write.is_some_and(|u| w > u);
            if rec.stamp().is_some_and(|s| past(s.write)) {
                progress.inc(len);
                continue;
            }
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
        targets: &'t HashMap<String, VolumeFile>,
        slots: &mut Vec<Option<&'t VolumeFile>>,
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
                            .map_err(Error::io("cannot size", &t.path))?;
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
                    .map_err(Error::io("cannot write", &t.path))?;
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

/// Makes a range read as zeros: a hole in a file, a zeroed range on a device, and
/// written zeros where neither is supported.
pub fn zero_range(t: &VolumeFile, offset: u64, length: u64, zeros: &[u8]) -> Result<()> {
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
            .map_err(Error::io("cannot write", &t.path))?;
        at += n as u64;
    }
    Ok(())
}
