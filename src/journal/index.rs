//! The index: one entry per committed delta and bookmark, so a reader seeks by delta
//! id, bookmark or time without scanning segments. It is rebuildable from the
//! segments, so it is appended without fsync and a torn tail is simply dropped.
use super::frame::{self, FrameRead, Pos};
use super::record::{Dec, Enc, GridMark, Writes, FLAG_SPLIT};
use super::start::Start;
use crate::error::{Error, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

const DELTA: u8 = 1;
const BOOKMARK: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaEntry {
    pub delta: u64,
    pub time_ns: i64,
    pub flags: u32,
    /// A split delta's writes (`FLAG_SPLIT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes: Option<Writes>,
    pub begin: Pos,
    pub end: Pos,
    pub records: u64,
    pub changed_bytes: u64,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BookmarkEntry {
    pub seq: u64,
    pub after_delta: u64,
    pub time_ns: i64,
    pub at: Pos,
    pub end: Pos,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<GridMark>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Delta(DeltaEntry),
    Bookmark(BookmarkEntry),
}

impl Entry {
    /// Where the entry's first record starts.
    pub fn begin(&self) -> Pos {
        match self {
            Entry::Delta(d) => d.begin,
            Entry::Bookmark(b) => b.at,
        }
    }

    pub fn end(&self) -> Pos {
        match self {
            Entry::Delta(d) => d.end,
            Entry::Bookmark(b) => b.end,
        }
    }

    fn encode(&self) -> (u8, Vec<u8>) {
        let mut e = Enc::default();
        match self {
            Entry::Delta(d) => {
                e.u64(d.delta).i64(d.time_ns).u32(d.flags);
                e.u64(d.begin.segment)
                    .u64(d.begin.offset)
                    .u64(d.end.segment)
                    .u64(d.end.offset);
                e.u64(d.records).u64(d.changed_bytes).u64(d.stored_bytes);
                if let Some(w) = &d.writes {
                    w.encode(&mut e);
                }
                (DELTA, e.0)
            }
            Entry::Bookmark(b) => {
                e.u64(b.seq).u64(b.after_delta).i64(b.time_ns);
                e.u64(b.at.segment)
                    .u64(b.at.offset)
                    .u64(b.end.segment)
                    .u64(b.end.offset);
                e.str(&b.name);
                GridMark::encode(&b.grid, &mut e);
                (BOOKMARK, e.0)
            }
        }
    }

    fn decode(kind: u8, payload: &[u8]) -> std::result::Result<Entry, String> {
        let mut d = Dec::new(payload);
        let entry = match kind {
            DELTA => {
                let mut e = DeltaEntry {
                    delta: d.u64()?,
                    time_ns: d.i64()?,
                    flags: d.u32()?,
                    writes: None,
                    begin: Pos {
                        segment: d.u64()?,
                        offset: d.u64()?,
                    },
                    end: Pos {
                        segment: d.u64()?,
                        offset: d.u64()?,
                    },
                    records: d.u64()?,
                    changed_bytes: d.u64()?,
                    stored_bytes: d.u64()?,
                };
                if e.flags & FLAG_SPLIT != 0 {
                    e.writes = Some(Writes::decode(&mut d, e.flags)?);
                }
                Entry::Delta(e)
            }
            BOOKMARK => Entry::Bookmark(BookmarkEntry {
                seq: d.u64()?,
                after_delta: d.u64()?,
                time_ns: d.i64()?,
                at: Pos {
                    segment: d.u64()?,
                    offset: d.u64()?,
                },
                end: Pos {
                    segment: d.u64()?,
                    offset: d.u64()?,
                },
                name: d.str()?,
                grid: GridMark::decode(&mut d)?,
            }),
            k => return Err(format!("unknown index entry kind {k}")),
        };
        d.end()?;
        Ok(entry)
    }
}

pub fn index_path(dir: &Path) -> PathBuf {
    dir.join("index.cji")
}

/// The in-memory index and how much of the file on disk was sound.
#[derive(Debug, Default, Clone)]
pub struct Index {
    pub deltas: Vec<DeltaEntry>,
    pub bookmarks: Vec<BookmarkEntry>,
    /// Entries read from the file (the rest were found by scanning segments).
    pub on_disk: usize,
    /// The file holds bytes after its last sound entry, or entries retention pruned:
    /// it needs rewriting.
    pub torn: bool,
    /// Where the journal begins; entries before it were pruned.
    pub start: Start,
}

impl Index {
    pub fn load(dir: &Path) -> Result<Index> {
        let path = index_path(dir);
        let mut index = Index {
            start: Start::load(dir)?,
            ..Index::default()
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(index),
            Err(e) => return Err(Error::io("cannot open journal index", path)(e)),
        };
        let mut r = BufReader::new(file);
        let mut payload = Vec::new();
        loop {
            match frame::read_frame(&mut r, &mut payload)
                .map_err(Error::io("cannot read journal index", &path))?
            {
                FrameRead::End => break,
                FrameRead::Broken(_) => {
                    index.torn = true;
                    break;
                }
                FrameRead::Frame { kind, .. } => match Entry::decode(kind, &payload) {
                    // Pruned, but the index was not rewritten before a crash.
                    Ok(e) if e.end() <= index.start.pos => index.torn = true,
                    // Not the next append: bytes a crash left there (a freed block
                    // of an older index file, under data=writeback).
                    Ok(e) if !index.follows(&e) => {
                        index.torn = true;
                        break;
                    }
                    Ok(e) => {
                        index.push(e);
                        index.on_disk += 1;
                    }
                    Err(_) => {
                        index.torn = true;
                        break;
                    }
                },
            }
        }
        Ok(index)
    }

    /// Whether `e` can be the entry after the last one: ids dense from the start,
    /// and records that lie after the last entry's.
    fn follows(&self, e: &Entry) -> bool {
        let last_delta = self
            .deltas
            .last()
            .map_or(self.start.delta.saturating_sub(1), |d| d.delta);
        let last_seq = self.bookmarks.last().map_or(self.start.seq, |b| b.seq);
        match e {
            Entry::Delta(d) => d.delta == last_delta + 1 && d.begin >= self.end(),
            Entry::Bookmark(b) => {
                b.seq == last_seq + 1 && b.after_delta == last_delta && b.at >= self.end()
            }
        }
    }

    pub fn push(&mut self, e: Entry) {
        match e {
            Entry::Delta(d) => self.deltas.push(d),
            Entry::Bookmark(b) => self.bookmarks.push(b),
        }
    }

    pub fn len(&self) -> usize {
        self.deltas.len() + self.bookmarks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the journal goes on after the last indexed record.
    pub fn end(&self) -> Pos {
        let d = self.deltas.last().map(|d| d.end);
        let b = self.bookmarks.last().map(|b| b.end);
        d.max(b).unwrap_or(self.start.pos)
    }

    /// Every entry in journal order.
    pub fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.deltas.iter().cloned().map(Entry::Delta).collect();
        all.extend(self.bookmarks.iter().cloned().map(Entry::Bookmark));
        all.sort_by_key(|e| e.end());
        all
    }

    /// Rewrites the index file from memory, atomically ([`crate::fsutil::write_atomic`]).
    pub fn rewrite(&mut self, dir: &Path) -> Result<()> {
        let path = index_path(dir);
        let mut buf = Vec::new();
        for e in self.entries() {
            let (kind, payload) = e.encode();
            let (f, _) = frame::frame(kind, &payload);
            buf.extend_from_slice(&f);
            buf.extend_from_slice(&payload);
        }
        crate::fsutil::write_atomic(&path, &buf)?;
        self.on_disk = self.len();
        self.torn = false;
        Ok(())
    }

    /// Adds one entry to memory and to the file: appended, or the whole file rewritten
    /// when it lacks earlier entries (an append that failed before), so the file never
    /// skips one. On error the entry stays in memory, and the next append or open
    /// writes it.
    pub fn append(&mut self, dir: &Path, e: Entry) -> Result<()> {
        let behind = self.torn || self.on_disk < self.len();
        self.push(e.clone());
        if behind {
            return self.rewrite(dir);
        }
        let path = index_path(dir);
        let (kind, payload) = e.encode();
        let (f, _) = frame::frame(kind, &payload);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("cannot open journal index", &path))?;
        let mut buf = f.to_vec();
        buf.extend_from_slice(&payload);
        file.write_all(&buf)
            .map_err(Error::io("cannot append to journal index", &path))?;
        self.on_disk += 1;
        Ok(())
    }
}
