//! Making an entry, before its delta is applied: the delta's redo copied from the
//! change journal, and its undo from what the replica holds now, read only where no
//! held entry wrote the bytes last (elsewhere a reference to that entry).
use super::map::{Blob, EntryMap, Extent, Redo, Source, VolumeSizes};
use super::{FileKind, UndoStore};
use crate::diff::RangeMap;
use crate::error::{Error, Result};
use crate::journal::record::{Record, MAX_EXTENT};
use crate::journal::{Journal, VolumeFile};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// What making entries cost: the replica bytes their undo covers, how many of
/// those were read from the replica, how many refer to an earlier entry's redo
/// instead (the reads the algorithm saves against reading undo for every write),
/// and how many lay in holes of a file replica (zeros, known without a read).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordStats {
    pub undo_bytes: u64,
    pub read_bytes: u64,
    pub referred_bytes: u64,
    pub hole_bytes: u64,
    /// Bytes written to the undo journal (maps and data).
    pub stored_bytes: u64,
}

impl std::ops::AddAssign for RecordStats {
    fn add_assign(&mut self, o: RecordStats) {
        self.undo_bytes += o.undo_bytes;
        self.read_bytes += o.read_bytes;
        self.referred_bytes += o.referred_bytes;
        self.hole_bytes += o.hole_bytes;
        self.stored_bytes += o.stored_bytes;
    }
}

/// An entry's data file while it is written: blobs appended in turn.
pub(super) struct DataFile {
    file: File,
    path: PathBuf,
    at: u64,
    comp: zstd::bulk::Compressor<'static>,
    packed: Vec<u8>,
}

impl DataFile {
    /// Opens an entry's data file for appending from `at` (bytes past it, left by an
    /// attempt a crash cut short, are dropped).
    pub(super) fn open(path: PathBuf, at: u64) -> Result<DataFile> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("cannot create undo data", &path))?;
        file.set_len(at)
            .map_err(Error::io("cannot size undo data", &path))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at))
            .map_err(Error::io("cannot seek undo data", &path))?;
        Ok(DataFile {
            file,
            comp: zstd::bulk::Compressor::new(1).map_err(Error::io("cannot start zstd", &path))?,
            path,
            at,
            packed: Vec::new(),
        })
    }

    /// Makes what was appended durable; returns the file's length.
    pub(super) fn sync(self) -> Result<u64> {
        self.file
            .sync_all()
            .map_err(Error::io("cannot sync undo data", &self.path))?;
        Ok(self.at)
    }

    /// Appends an already compressed blob.
    fn put_packed(&mut self, packed: &[u8]) -> Result<Blob> {
        self.file
            .write_all(packed)
            .map_err(Error::io("cannot write undo data", &self.path))?;
        let blob = Blob {
            at: self.at,
            len: packed.len() as u32,
            crc: crc32c::crc32c(packed),
        };
        self.at += packed.len() as u64;
        Ok(blob)
    }

    /// Appends `bytes`, compressed; all zeros become a Zero source instead.
    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<Source> {
        if crate::diff::is_zero(bytes) {
            return Ok(Source::Zero);
        }
        self.packed
            .resize(zstd::zstd_safe::compress_bound(bytes.len()), 0);
        let n = self
            .comp
            .compress_to_buffer(bytes, &mut self.packed)
            .map_err(Error::io("cannot compress undo data for", &self.path))?;
        let packed = std::mem::take(&mut self.packed);
        let blob = self.put_packed(&packed[..n]);
        self.packed = packed;
        Ok(Source::Data(blob?))
    }
}

/// One volume of the delta being recorded, with a replica.
struct Slot<'r> {
    index: u16,
    replica: &'r VolumeFile,
    /// What the replica holds now: its size before the delta.
    before: u64,
}

impl UndoStore {
    /// Makes the entry of delta `delta` of `journal`, whose replica files (by volume
    /// id) still hold the delta before; durable when this returns. Does nothing when
    /// the entry exists: it was made before a crash, and the replica may since hold
    /// part of the delta, so reading it again would give wrong undo.
    pub fn record(
        &mut self,
        journal: &Journal,
        delta: u64,
        replicas: &HashMap<String, VolumeFile>,
    ) -> Result<RecordStats> {
        if let Some(map) = self.entry(delta) {
            if map.time_ns == journal.delta(delta)?.time_ns {
                return Ok(RecordStats::default());
            }
            // Made for another delta of that number (one a repair cut away before it
            // was applied): its replica still holds the delta before, so make it anew.
            self.drop_entry(delta)?;
        }
        let path = self.file(delta, FileKind::Data);
        let mut data = DataFile::open(path.clone(), 0)?;
        let result = self.make(journal, delta, replicas, &mut data);
        let (map, mut stats) = match result {
            Ok(r) => r,
            Err(e) => {
                drop(data);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        data.sync()?;
        let bytes = map.encode();
        crate::fsutil::write_atomic(&self.file(delta, FileKind::Map), &bytes)?;
        stats.stored_bytes = bytes.len() as u64 + map.data_len;
        self.bytes += stats.stored_bytes;
        self.sizes.insert(delta, stats.stored_bytes);
        self.insert(map);
        Ok(stats)
    }

    fn make(
        &self,
        journal: &Journal,
        delta: u64,
        replicas: &HashMap<String, VolumeFile>,
        data: &mut DataFile,
    ) -> Result<(EntryMap, RecordStats)> {
        let entry = journal.delta(delta)?;
        let mut map = EntryMap {
            delta,
            time_ns: entry.time_ns,
            last_write: entry.writes.map_or(0, |w| w.last_write),
            volumes: Vec::new(),
            redo: Vec::new(),
            undo: Vec::new(),
            data_len: 0,
        };
        let mut stats = RecordStats::default();
        // The bytes this delta wrote already, per volume: their undo was taken at
        // the first write (the replica is untouched until the entry is made).
        let mut mine: HashMap<String, RangeMap<()>> = HashMap::new();
        let mut slots: Vec<Option<Slot>> = Vec::new();
        let mut buf = vec![0u8; MAX_EXTENT];
        let mut reader = journal.read_delta(delta)?;
        while let Some(rec) = reader.next_record()? {
            let (volume, offset, length, source, write) = match rec {
                Record::Begin(b) => {
                    for v in &b.volumes {
                        let Some(replica) = replicas.get(&v.id) else {
                            slots.push(None);
                            continue;
                        };
                        let before = if replica.device {
                            // A device keeps its size; the volume's was the previous
                            // delta's (this one's when the journal no longer has it).
                            journal
                                .volumes_at(delta - 1)
                                .ok()
                                .and_then(|vs| vs.into_iter().find(|p| p.id == v.id))
                                .map_or(v.size, |p| p.size)
                        } else {
                            crate::sys::device_or_file_size(&replica.file)
                                .map_err(Error::io("cannot size replica", &replica.path))?
                        };
                        let index = map.volumes.len() as u16;
                        map.volumes.push(VolumeSizes {
                            id: v.id.clone(),
                            before: Some(before),
                            after: v.size,
                        });
                        slots.push(Some(Slot {
                            index,
                            replica,
                            before,
                        }));
                        // A file cut shorter: the bytes past its new end are written
                        // too (as zeros, should it grow again).
                        if v.size < before {
                            let tail = Extent {
                                volume: index,
                                offset: v.size,
                                length: before - v.size,
                                source: Source::Zero,
                            };
                            self.undo_for(
                                &v.id, &tail, before, replica, &mut mine, data, &mut buf, &mut map,
                                &mut stats,
                            )?;
                            map.redo.push(Redo {
                                extent: tail,
                                write: 0,
                            });
                        }
                    }
                    continue;
                }
                Record::Data {
                    volume,
                    offset,
                    length,
                    compressed,
                    stamp,
                    ..
                } => {
                    if slots.get(volume as usize).is_none_or(|s| s.is_none()) {
                        continue;
                    }
                    let blob = data.put_packed(compressed)?;
                    (volume, offset, length as u64, Source::Data(blob), stamp)
                }
                Record::Zero { length: 0, .. } => continue,
                Record::Zero {
                    volume,
                    offset,
                    length,
                    stamp,
                    ..
                } => (volume, offset, length, Source::Zero, stamp),
                Record::Commit(_) | Record::Bookmark(_) => continue,
            };
            let Some(Some(slot)) = slots.get(volume as usize) else {
                continue;
            };
            let extent = Extent {
                volume: slot.index,
                offset,
                length,
                source,
            };
            let id = map.volumes[slot.index as usize].id.clone();
            self.undo_for(
                &id,
                &extent,
                slot.before,
                slot.replica,
                &mut mine,
                data,
                &mut buf,
                &mut map,
                &mut stats,
            )?;
            map.redo.push(Redo {
                extent,
                write: write.map_or(0, |s| s.write),
            });
        }
        map.data_len = data.at;
        Ok((map, stats))
    }

    /// The undo of one redo extent of volume `id`: for each byte that existed before
    /// the delta and that the delta has not written yet, a reference to the held
    /// entry that wrote it last, or the replica's bytes.
    #[allow(clippy::too_many_arguments)]
    fn undo_for(
        &self,
        id: &str,
        x: &Extent,
        before: u64,
        replica: &VolumeFile,
        mine: &mut HashMap<String, RangeMap<()>>,
        data: &mut DataFile,
        buf: &mut [u8],
        map: &mut EntryMap,
        stats: &mut RecordStats,
    ) -> Result<()> {
        let end = x.end().min(before);
        let written = mine.entry(id.to_string()).or_default();
        let empty = RangeMap::default();
        let writers = self.writers.get(id).unwrap_or(&empty);
        for p in writers.pieces(x.offset, end.max(x.offset)) {
            for q in written.pieces(p.start, p.end) {
                if q.value.is_some() {
                    continue;
                }
                let len = q.end - q.start;
                stats.undo_bytes += len;
                if let Some(j) = p.value {
                    stats.referred_bytes += len;
                    map.undo.push(Extent {
                        volume: x.volume,
                        offset: q.start,
                        length: len,
                        source: Source::Ref(j),
                    });
                    continue;
                }
                let mut at = q.start;
                while at < q.end {
                    // A hole of a file replica reads as zeros: no need to read it.
                    // (The replica was fsynced after its last delta: its holes are
                    // what its file system says.)
                    let data_at = crate::sys::next_data(&replica.file, at)
                        .map_err(Error::io("cannot find data in replica", &replica.path))?
                        .unwrap_or(q.end);
                    if data_at > at {
                        let n = data_at.min(q.end) - at;
                        stats.hole_bytes += n;
                        push_undo(&mut map.undo, x.volume, at, n, Source::Zero);
                        at += n;
                        continue;
                    }
                    let hole = crate::sys::next_hole(&replica.file, at)
                        .map_err(Error::io("cannot find data in replica", &replica.path))?;
                    let n = (q.end.min(hole.max(at + 1)) - at).min(buf.len() as u64) as usize;
                    stats.read_bytes += n as u64;
                    replica
                        .file
                        .read_exact_at(&mut buf[..n], at)
                        .map_err(Error::io("cannot read replica for undo", &replica.path))?;
                    let source = data.put(&buf[..n])?;
                    push_undo(&mut map.undo, x.volume, at, n as u64, source);
                    at += n as u64;
                }
            }
        }
        written.insert(x.offset, x.end(), ());
        Ok(())
    }
}

/// Appends an undo extent, merged into the last one when both are zeros and meet
/// (a large TRIM over unwritten bytes stays one extent, not one per MiB).
fn push_undo(undo: &mut Vec<Extent>, volume: u16, offset: u64, length: u64, source: Source) {
    if let Some(last) = undo.last_mut() {
        if source == Source::Zero
            && last.source == Source::Zero
            && last.volume == volume
            && last.end() == offset
        {
            last.length += length;
            return;
        }
    }
    undo.push(Extent {
        volume,
        offset,
        length,
        source,
    });
}
