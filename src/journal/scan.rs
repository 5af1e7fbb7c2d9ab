//! The journal's grammar, checked record by record: Begin, extents of that delta,
//! Commit; bookmarks between deltas; ids that go up by one. The writer's recovery,
//! the reader's catch-up and `verify` all walk records through this one checker.
use super::frame::Pos;
use super::index::{BookmarkEntry, DeltaEntry, Entry, Index};
use super::record::{Begin, Record, Stamp, Writes};
use super::tail::Before;

pub struct Scanner {
    last_delta: u64,
    last_seq: u64,
    /// The writes of the last split delta seen (or indexed), to check the next one
    /// against.
    last_split: Option<Writes>,
    open: Option<Open>,
}

struct Open {
    begin: Begin,
    /// The write of the last extent of a split delta.
    last_write: Option<u64>,
    at: Pos,
    digest: u32,
    records: u64,
    changed: u64,
    stored: u64,
}

/// Folds one record's checksum into a delta's digest.
pub fn fold_digest(digest: u32, crc: u32) -> u32 {
    crc32c::crc32c_append(digest, &crc.to_le_bytes())
}

impl Scanner {
    /// A scanner that expects what follows the entries of `index`.
    pub fn after(index: &Index) -> Scanner {
        let mut s = Scanner::expecting(
            index
                .deltas
                .last()
                .map_or(index.start.delta - 1, |d| d.delta),
            index.bookmarks.last().map_or(index.start.seq, |b| b.seq),
        );
        s.last_split = index.deltas.iter().rev().find_map(|d| d.writes);
        s
    }

    /// A scanner that expects delta `last_delta + 1` or bookmark `last_seq + 1` next.
    pub fn expecting(last_delta: u64, last_seq: u64) -> Scanner {
        Scanner {
            last_delta,
            last_seq,
            last_split: None,
            open: None,
        }
    }

    /// What is committed so far: the last delta and bookmark number fed.
    pub fn before(&self) -> Before {
        Before {
            last_delta: self.last_delta,
            last_seq: self.last_seq,
        }
    }

    /// The delta whose commit has not been seen yet, if any.
    pub fn open_delta(&self) -> Option<(u64, Pos)> {
        self.open.as_ref().map(|o| (o.begin.delta, o.at))
    }

    /// Checks one record; returns an index entry when it completes a delta or is a bookmark.
    pub fn feed(
        &mut self,
        at: Pos,
        end: Pos,
        kind: u8,
        crc: u32,
        payload: &[u8],
    ) -> Result<Option<Entry>, String> {
        let rec = Record::decode(kind, payload)?;
        match (rec, &mut self.open) {
            (Record::Begin(b), None) => {
                if b.delta != self.last_delta + 1 {
                    return Err(format!(
                        "delta {} begins where delta {} was expected",
                        b.delta,
                        self.last_delta + 1
                    ));
                }
                if self.last_delta == 0 && !b.is_full() {
                    return Err("the first delta of a journal must be a full one".into());
                }
                if b.is_full() && b.writes.is_some() {
                    return Err(format!("delta {} is both full and split", b.delta));
                }
                if let (Some(w), Some(prev)) = (b.writes, self.last_split) {
                    if !w.may_follow(&prev) {
                        return Err(format!(
                            "split delta {} holds writes {}..={} exact from {}, which cannot follow writes {}..={} exact from {}",
                            b.delta, w.first_write, w.last_write, w.exact_from,
                            prev.first_write, prev.last_write, prev.exact_from
                        ));
                    }
                }
                self.open = Some(Open {
                    begin: b,
                    last_write: None,
                    at,
                    digest: fold_digest(0, crc),
                    records: 0,
                    changed: 0,
                    stored: 0,
                });
                Ok(None)
            }
            (
                Record::Data {
                    delta,
                    volume,
                    offset,
                    length,
                    stamp,
                    ..
                },
                Some(o),
            ) => {
                o.extent(delta, stamp, volume, offset, length as u64)?;
                o.stored += payload.len() as u64;
                o.digest = fold_digest(o.digest, crc);
                Ok(None)
            }
            (
                Record::Zero {
                    delta,
                    volume,
                    offset,
                    length,
                    stamp,
                },
                Some(o),
            ) => {
                o.extent(delta, stamp, volume, offset, length)?;
                o.stored += payload.len() as u64;
                o.digest = fold_digest(o.digest, crc);
                Ok(None)
            }
            (Record::Commit(c), Some(o)) => {
                let want = (o.begin.delta, o.records, o.changed, o.stored, o.digest);
                let got = (
                    c.delta,
                    c.records,
                    c.changed_bytes,
                    c.stored_bytes,
                    c.digest,
                );
                if want != got {
                    return Err(format!(
                        "commit of delta {} does not match its records (delta, records, bytes, stored, digest: expected {want:?}, recorded {got:?})",
                        o.begin.delta
                    ));
                }
                if let Some(w) = o.begin.writes.filter(|w| !w.may_end(o.last_write)) {
                    return Err(format!(
                        "split delta {} ends at write {:?}, its Begin says {}",
                        o.begin.delta, o.last_write, w.last_write
                    ));
                }
                let entry = DeltaEntry {
                    delta: c.delta,
                    time_ns: o.begin.time_ns,
                    flags: o.begin.flags,
                    writes: o.begin.writes,
                    begin: o.at,
                    end,
                    records: c.records,
                    changed_bytes: c.changed_bytes,
                    stored_bytes: c.stored_bytes,
                };
                self.last_delta = c.delta;
                self.last_split = o.begin.writes.or(self.last_split);
                self.open = None;
                Ok(Some(Entry::Delta(entry)))
            }
            (Record::Bookmark(b), None) => {
                if b.seq != self.last_seq + 1 || b.after_delta != self.last_delta {
                    return Err(format!(
                        "bookmark {} (seq {}, after delta {}) is out of order: expected seq {} after delta {}",
                        b.name,
                        b.seq,
                        b.after_delta,
                        self.last_seq + 1,
                        self.last_delta
                    ));
                }
                self.last_seq = b.seq;
                Ok(Some(Entry::Bookmark(BookmarkEntry {
                    seq: b.seq,
                    after_delta: b.after_delta,
                    time_ns: b.time_ns,
                    at,
                    end,
                    name: b.name,
                    grid: b.grid,
                })))
            }
            (Record::Begin(b), Some(o)) => Err(format!(
                "delta {} begins before delta {} committed",
                b.delta, o.begin.delta
            )),
            (Record::Bookmark(b), Some(o)) => Err(format!(
                "bookmark {} inside delta {}",
                b.name, o.begin.delta
            )),
            (_, None) => Err("extent or commit record outside a delta".into()),
        }
    }
}

impl Open {
    fn extent(
        &mut self,
        delta: u64,
        stamp: Option<Stamp>,
        volume: u16,
        offset: u64,
        length: u64,
    ) -> Result<(), String> {
        if delta != self.begin.delta {
            return Err(format!(
                "record of delta {delta} inside delta {}",
                self.begin.delta
            ));
        }
        match (self.begin.writes, stamp) {
            (None, None) => {}
            (Some(w), Some(s)) => {
                if !w.may_come(self.last_write, s.write) {
                    return Err(format!(
                        "write {} out of order in split delta {} (writes {}..={}, last seen {:?})",
                        s.write, self.begin.delta, w.first_write, w.last_write, self.last_write
                    ));
                }
                self.last_write = Some(s.write);
            }
            (None, Some(s)) => {
                return Err(format!(
                    "write {} in delta {}, which is not a split delta",
                    s.write, self.begin.delta
                ))
            }
            (Some(_), None) => {
                return Err(format!(
                    "snapshot extent in split delta {}, which holds only writes",
                    self.begin.delta
                ))
            }
        }
        let vol = self.begin.volumes.get(volume as usize).ok_or_else(|| {
            format!(
                "extent names volume #{volume}, the delta has {}",
                self.begin.volumes.len()
            )
        })?;
        if offset.checked_add(length).is_none_or(|e| e > vol.size) {
            return Err(format!(
                "extent {offset}+{length} lies outside volume {} of {} bytes",
                vol.id, vol.size
            ));
        }
        self.records += 1;
        self.changed += length;
        Ok(())
    }
}
