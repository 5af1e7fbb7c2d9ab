//! Reading an entry's bytes back: blobs out of data files (checked against their
//! CRC-32C, decompressed to their stated length), and the bytes an extent stands for
//! whatever its source, a reference followed to the redo it names. The last blob
//! read is kept, so the pieces of one extent cost one decompression.
use super::map::{Blob, EntryMap, Extent, Source};
use super::{file_name, FileKind};
use crate::diff::RangeMap;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of a volume, as a run of one source: the blob of an entry whose first
/// uncompressed byte is at `base`, or zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bytes {
    Blob { entry: u64, blob: Blob, base: u64 },
    Zero,
}

pub struct Reader {
    dir: PathBuf,
    target: String,
    epoch: u64,
    files: HashMap<u64, File>,
    dec: zstd::bulk::Decompressor<'static>,
    packed: Vec<u8>,
    /// The last blob decompressed, and its bytes.
    last: Option<(u64, u64)>,
    raw: Vec<u8>,
    /// Per entry and volume id: which of its redo extents wrote each byte last.
    finals: HashMap<(u64, String), RangeMap<usize>>,
}

impl Reader {
    pub fn new(dir: &Path, target: &str, epoch: u64) -> Result<Reader> {
        Ok(Reader {
            dir: dir.to_path_buf(),
            target: target.to_string(),
            epoch,
            files: HashMap::new(),
            dec: zstd::bulk::Decompressor::new().map_err(Error::io("cannot start zstd", dir))?,
            packed: Vec::new(),
            last: None,
            raw: Vec::new(),
            finals: HashMap::new(),
        })
    }

    /// Forgets what it knows of `entry` (retired, or rewritten by a retirement).
    pub fn forget(&mut self, entry: u64) {
        self.files.remove(&entry);
        self.finals.retain(|(e, _), _| *e != entry);
        if self.last.is_some_and(|(e, _)| e == entry) {
            self.last = None;
        }
    }

    fn path(&self, entry: u64) -> PathBuf {
        self.dir
            .join(file_name(&self.target, self.epoch, entry, FileKind::Data))
    }

    /// The compressed bytes of `blob` in `entry`'s data file, checked.
    pub fn packed(&mut self, entry: u64, blob: Blob) -> Result<&[u8]> {
        let path = self.path(entry);
        let file = match self.files.entry(entry) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(File::open(&path).map_err(Error::io("cannot open undo data", &path))?)
            }
        };
        self.packed.resize(blob.len as usize, 0);
        file.read_exact_at(&mut self.packed, blob.at)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::CorruptUndo {
                    file: path.clone(),
                    reason: format!("the blob at {} is cut short", blob.at),
                },
                _ => Error::io("cannot read undo data", &path)(e),
            })?;
        if crc32c::crc32c(&self.packed) != blob.crc {
            return Err(Error::CorruptUndo {
                file: path,
                reason: format!("the blob at {} fails its checksum", blob.at),
            });
        }
        Ok(&self.packed)
    }

    /// The `len` uncompressed bytes of `blob` (checked, decompressed once).
    pub fn blob(&mut self, entry: u64, blob: Blob, len: u64) -> Result<&[u8]> {
        if self.last != Some((entry, blob.at)) {
            self.last = None;
            self.packed(entry, blob)?;
            self.raw.resize(len as usize, 0);
            let n = self
                .dec
                .decompress_to_buffer(&self.packed, &mut self.raw)
                .map_err(|e| Error::CorruptUndo {
                    file: self.path(entry),
                    reason: format!("the blob at {} does not decompress: {e}", blob.at),
                })?;
            if n as u64 != len {
                return Err(Error::CorruptUndo {
                    file: self.path(entry),
                    reason: format!("the blob at {} holds {n} bytes, not {len}", blob.at),
                });
            }
            self.last = Some((entry, blob.at));
        }
        Ok(&self.raw)
    }

    /// Fills `out` with the volume's bytes from `at` on, as `bytes` holds them.
    pub fn fill(&mut self, bytes: Bytes, at: u64, out: &mut [u8], len_of: u64) -> Result<()> {
        match bytes {
            Bytes::Zero => out.fill(0),
            Bytes::Blob { entry, blob, base } => {
                let raw = self.blob(entry, blob, len_of)?;
                let from = (at - base) as usize;
                out.copy_from_slice(&raw[from..from + out.len()]);
            }
        }
        Ok(())
    }

    /// What the extent `x` of entry `map` stands for over `[start, end)` (inside the
    /// extent), in runs; a reference is followed to the redo of the entry it names,
    /// found in `entries`. Each run comes with the length of the blob it is in.
    pub fn resolve(
        &mut self,
        entries: &BTreeMap<u64, EntryMap>,
        map: &EntryMap,
        x: &Extent,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, u64, Bytes, u64)>> {
        match x.source {
            Source::Zero => Ok(vec![(start, end, Bytes::Zero, 0)]),
            Source::Data(blob) => Ok(vec![(
                start,
                end,
                Bytes::Blob {
                    entry: map.delta,
                    blob,
                    base: x.offset,
                },
                x.length,
            )]),
            Source::Ref(j) => {
                let id = &map.volumes[x.volume as usize].id;
                let target = entries.get(&j).ok_or_else(|| Error::CorruptUndo {
                    file: self.dir.join(file_name(
                        &self.target,
                        self.epoch,
                        map.delta,
                        FileKind::Map,
                    )),
                    reason: format!(
                        "its undo refers to entry {j}, which the journal no longer holds"
                    ),
                })?;
                self.redo_runs(target, id, start, end, map.delta)
            }
        }
    }

    /// What entry `target`'s redo wrote last over `[start, end)` of volume `id`.
    fn redo_runs(
        &mut self,
        target: &EntryMap,
        id: &str,
        start: u64,
        end: u64,
        from: u64,
    ) -> Result<Vec<(u64, u64, Bytes, u64)>> {
        let key = (target.delta, id.to_string());
        if !self.finals.contains_key(&key) {
            let mut m = RangeMap::default();
            if let Some(v) = target.volume(id) {
                for (i, r) in target.redo.iter().enumerate() {
                    if r.extent.volume == v {
                        m.insert(r.extent.offset, r.extent.end(), i);
                    }
                }
            }
            self.finals.insert(key.clone(), m);
        }
        let mut out = Vec::new();
        for p in self.finals[&key].pieces(start, end) {
            let Some(i) = p.value else {
                return Err(Error::CorruptUndo {
                    file: self.dir.join(file_name(&self.target, self.epoch, from, FileKind::Map)),
                    reason: format!(
                        "its undo refers to entry {} for bytes {}..{} of `{id}`, which that entry did not write",
                        target.delta, p.start, p.end
                    ),
                });
            };
            let r = &target.redo[i].extent;
            out.push(match r.source {
                Source::Data(blob) => (
                    p.start,
                    p.end,
                    Bytes::Blob {
                        entry: target.delta,
                        blob,
                        base: r.offset,
                    },
                    r.length,
                ),
                _ => (p.start, p.end, Bytes::Zero, 0),
            });
        }
        Ok(out)
    }
}
