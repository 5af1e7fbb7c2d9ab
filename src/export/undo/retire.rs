//! Retiring entries, oldest first: the bytes later entries' undo refers to in the
//! retiring entry's redo are copied into those entries (durably, map last), and only
//! then does the retiring entry go (map first: an entry without its map is none).
use super::map::{Extent, Source};
use super::reader::Bytes;
use super::record::DataFile;
use super::{FileKind, Limits, UndoStore};
use crate::error::{Error, Result};

impl UndoStore {
    /// Retires entries while the journal is over `limits` at time `now_ns`; returns
    /// how many retired.
    pub fn retire(&mut self, limits: Limits, now_ns: i64) -> Result<u64> {
        let mut n = 0;
        while let Some((&oldest, map)) = self.entries.first_key_value() {
            let over_bytes = limits.max_bytes.is_some_and(|m| self.bytes > m);
            // Retiring the oldest leaves the window starting at its delta: still at
            // least `max_age` back when that delta is that old.
            let over_age = limits
                .max_age
                .is_some_and(|age| map.time_ns <= now_ns.saturating_sub(age.as_nanos() as i64));
            if !over_bytes && !over_age {
                break;
            }
            self.retire_oldest(oldest)?;
            n += 1;
        }
        Ok(n)
    }

    /// Drops every entry: the window closes to the newest point.
    pub fn clear(&mut self) -> Result<()> {
        while let Some((&oldest, _)) = self.entries.first_key_value() {
            self.drop_entry(oldest)?;
        }
        Ok(())
    }

    fn retire_oldest(&mut self, oldest: u64) -> Result<()> {
        let referrers = self.referrers.remove(&oldest).unwrap_or_default();
        for k in referrers {
            self.copy_referred(k, oldest)?;
        }
        self.drop_entry(oldest)
    }

    /// Removes entry `delta` from disk (map first) and from the in-memory view.
    pub(super) fn drop_entry(&mut self, delta: u64) -> Result<()> {
        let map_path = self.file(delta, FileKind::Map);
        let data_path = self.file(delta, FileKind::Data);
        for p in [&map_path, &data_path] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("cannot remove undo file", p)(e))
                }
                _ => {}
            }
            if p == &map_path {
                crate::fsutil::sync_dir(&self.dir)?;
            }
        }
        self.reader.forget(delta);
        let map = self.entries.remove(&delta).expect("held");
        for r in &map.redo {
            let id = &map.volumes[r.extent.volume as usize].id;
            if let Some(w) = self.writers.get_mut(id) {
                w.remove_if(r.extent.offset, r.extent.end(), |e| *e == delta);
            }
        }
        self.referrers.remove(&delta);
        for set in self.referrers.values_mut() {
            set.remove(&delta);
        }
        self.bytes -= self.sizes.remove(&delta).unwrap_or(0);
        Ok(())
    }

    /// Makes entry `k`'s undo that refers to `oldest` its own: the bytes copied from
    /// `oldest`'s redo into `k`'s data file, then `k`'s map replaced.
    fn copy_referred(&mut self, k: u64, oldest: u64) -> Result<()> {
        let mut map = self.entries[&k].clone();
        let mut data = DataFile::open(self.file(k, FileKind::Data), map.data_len)?;
        let mut undo = Vec::with_capacity(map.undo.len());
        let mut buf = Vec::new();
        for x in &map.undo {
            if x.source != Source::Ref(oldest) {
                undo.push(*x);
                continue;
            }
            let runs = self
                .reader
                .resolve(&self.entries, &map, x, x.offset, x.end())?;
            for (start, end, bytes, len_of) in runs {
                let source = match bytes {
                    Bytes::Zero => Source::Zero,
                    Bytes::Blob { .. } => {
                        // Inside one redo extent, so at most MAX_EXTENT.
                        buf.resize((end - start) as usize, 0);
                        self.reader.fill(bytes, start, &mut buf, len_of)?;
                        data.put(&buf)?
                    }
                };
                undo.push(Extent {
                    volume: x.volume,
                    offset: start,
                    length: end - start,
                    source,
                });
            }
        }
        let grown = data.sync()? - map.data_len;
        map.data_len += grown;
        map.undo = undo;
        let bytes = map.encode();
        crate::fsutil::write_atomic(&self.file(k, FileKind::Map), &bytes)?;
        // A map can shrink (a reference to zeros becomes a shorter Zero extent).
        let size = self.sizes.get_mut(&k).expect("held");
        self.bytes = self.bytes - *size + map.data_len + bytes.len() as u64;
        *size = map.data_len + bytes.len() as u64;
        self.reader.forget(k);
        self.entries.insert(k, map);
        Ok(())
    }
}
