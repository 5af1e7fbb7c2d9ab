//! The single writer of a journal: recovery on open, appending deltas and bookmarks,
//! and the commit protocol (records, then fdatasync, then the index entry).
use super::frame::{self, Pos, HEADER_LEN};
use super::index::{BookmarkEntry, DeltaEntry, Entry};
use super::record::{self, Begin, Bookmark, Commit, Stamp, VolumeInfo, Writes, MAX_EXTENT};
use super::scan::fold_digest;
use super::{Journal, Tail};
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

/// zstd level 1: the journal is written on every cycle and read once per replica, so
/// compression speed matters more than the last few percent of ratio.
const ZSTD_LEVEL: i32 = 1;

pub(super) struct Segment {
    pub(super) n: u64,
    file: BufWriter<File>,
    len: u64,
    /// The format version in its header: a split delta is never begun in a
    /// version-1 segment.
    version: u32,
}

pub struct JournalWriter {
    pub(super) journal: Journal,
    _lock: File,
    pub(super) seg: Option<Segment>,
    segment_limit: u64,
    dir_dirty: bool,
    recovered: Option<Tail>,
    compressor: zstd::bulk::Compressor<'static>,
    payload: Vec<u8>,
}

impl JournalWriter {
    /// Opens (creating if needed) the journal at `dir` for writing. Takes the writer
    /// lock, cuts off an unfinished tail and brings the index up to date.
    pub fn open(dir: &Path, segment_limit: u64) -> Result<JournalWriter> {
        crate::fsutil::create_dir_durable(dir)?;
        let lock = crate::lock::lock(&dir.join(super::durable::LOCK_FILE), dir)?;
        if super::read_id(dir).is_none() {
            write_new_id(dir)?;
        }
        super::readers::create(dir)?;
        let journal = Journal::load(dir, super::Opener::Writer)?;
        let compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(Error::io("cannot start zstd", dir))?;
        let mut w = JournalWriter {
            journal,
            _lock: lock,
            seg: None,
            segment_limit,
            dir_dirty: false,
            recovered: None,
            compressor,
            payload: Vec::new(),
        };
        if let Some(tail) = w.journal.take_tail() {
            let indexed_end = w.journal.index_mut().end();
            if let Some(why) = super::tail::damage(dir, tail.found, tail.before, indexed_end)? {
                return Err(w.journal.corrupt(
                    tail.found,
                    format!(
                        "{}; {why}: this is damage rather than an interrupted write. Nothing was changed: \
                         check with `cascade journal verify {}`; to go on without what follows delta {}: {}",
                        tail.reason,
                        dir.display(),
                        tail.before.last_delta,
                        super::repair::command(dir, tail.before.last_delta)
                    ),
                ));
            }
            tracing::warn!(journal = %dir.display(), at = %tail.cut, bytes = tail.bytes, reason = %tail.reason,
                "cutting off the unfinished tail of the journal");
            w.truncate_to(tail.cut)?;
            w.recovered = Some(tail);
        }
        let index = w.journal.index_mut();
        if index.torn || index.on_disk < index.len() {
            index.rewrite(dir)?;
        }
        w.open_last_segment()?;
        Ok(w)
    }

    /// Creates a journal whose first delta is `first` (a synthetic full, or a
    /// scratch copy of part of another journal) in the empty or missing directory `dir`.
    pub fn create_starting_at(dir: &Path, first: u64, segment_limit: u64) -> Result<JournalWriter> {
        crate::fsutil::create_dir_durable(dir)?;
        if !frame::list_segments(dir)?.is_empty() {
            return Err(Error::AlreadyExists(format!(
                "{} already holds a journal",
                dir.display()
            )));
        }
        super::start::Start {
            delta: first,
            ..Default::default()
        }
        .store(dir)?;
        JournalWriter::open(dir, segment_limit)
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The tail cut off when this writer opened the journal, if there was one.
    pub fn recovered_tail(&self) -> Option<&Tail> {
        self.recovered.as_ref()
    }

    pub fn next_delta_id(&self) -> u64 {
        match self.journal.last_delta() {
            0 => self.journal.first_delta(),
            n => n + 1,
        }
    }

    pub(super) fn dir(&self) -> &Path {
        self.journal.dir()
    }

    fn open_last_segment(&mut self) -> Result<()> {
        self.seg = None;
        if let Some(&n) = frame::list_segments(self.dir())?.last() {
            let path = frame::segment_path(self.dir(), n);
            // Read too: the header says which version the segment is.
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(Error::io("cannot open journal segment", &path))?;
            let len = file
                .metadata()
                .map_err(Error::io("cannot stat journal segment", &path))?
                .len();
            let mut header = [0u8; 12];
            let version = match std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0) {
                Ok(()) => frame::header_version(&header).unwrap_or(frame::VERSION),
                // Recovery leaves no torn header behind; a segment this short has none.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => frame::VERSION,
                Err(e) => return Err(Error::io("cannot read journal segment", &path)(e)),
            };
            self.seg = Some(Segment {
                n,
                file: BufWriter::with_capacity(1 << 20, file),
                len,
                version,
            });
        }
        Ok(())
    }

    /// Removes everything from `pos` on and fsyncs what was shortened.
    fn truncate_to(&mut self, pos: Pos) -> Result<()> {
        if let Some(mut s) = self.seg.take() {
            let _ = s.file.flush();
        }
        cut_segments(self.dir(), pos)?;
        self.open_last_segment()
    }

    /// Appends one record, starting a new segment first when the current one is full.
    fn append(&mut self, kind: u8, payload: &[u8]) -> Result<(Pos, Pos, u32)> {
        if self
            .seg
            .as_ref()
            .is_none_or(|s| s.len >= self.segment_limit)
        {
            self.roll()?;
        }
        let dir = self.journal.dir.clone();
        let seg = self.seg.as_mut().expect("rolled above");
        let (f, crc) = frame::frame(kind, payload);
        let at = Pos {
            segment: seg.n,
            offset: seg.len,
        };
        seg.file
            .write_all(&f)
            .and_then(|_| seg.file.write_all(payload))
            .map_err(Error::io(
                "cannot write journal segment",
                frame::segment_path(&dir, seg.n),
            ))?;
        seg.len += frame::FRAME_LEN + payload.len() as u64;
        Ok((
            at,
            Pos {
                segment: seg.n,
                offset: seg.len,
            },
            crc,
        ))
    }

    fn roll(&mut self) -> Result<()> {
        let next = match self.seg.take() {
            Some(old) => {
                let path = frame::segment_path(self.dir(), old.n);
                let file = old.file.into_inner().map_err(|e| {
                    Error::io("cannot write journal segment", &path)(e.into_error())
                })?;
                file.sync_data()
                    .map_err(Error::io("cannot sync journal segment", &path))?;
                old.n + 1
            }
            None => self.journal.start().pos.segment,
        };
        let path = frame::segment_path(self.dir(), next);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("cannot create journal segment", &path))?;
        file.write_all(&frame::segment_header(next))
            .map_err(Error::io("cannot write journal segment", &path))?;
        self.dir_dirty = true;
        self.seg = Some(Segment {
            n: next,
            file: BufWriter::with_capacity(1 << 20, file),
            len: HEADER_LEN,
            version: frame::VERSION,
        });
        Ok(())
    }

    /// Makes everything appended so far durable.
    fn sync(&mut self) -> Result<()> {
        let dir = self.dir().to_path_buf();
        if let Some(seg) = self.seg.as_mut() {
            let path = frame::segment_path(&dir, seg.n);
            seg.file
                .flush()
                .map_err(Error::io("cannot write journal segment", &path))?;
            seg.file
                .get_ref()
                .sync_data()
                .map_err(Error::io("cannot sync journal segment", &path))?;
        }
        if self.dir_dirty {
            sync_dir(&dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Starts the next delta. Dropping the returned writer without `commit` removes
    /// everything it wrote.
    pub fn begin_delta(
        &mut self,
        time_ns: i64,
        volumes: Vec<VolumeInfo>,
        full: bool,
    ) -> Result<DeltaWriter<'_>> {
        if self.journal.deltas().is_empty() && !full {
            return Err(Error::InvalidArgument(
                "the first delta of a journal must be full".into(),
            ));
        }
        let flags = if full { record::FLAG_FULL } else { 0 };
        self.begin(time_ns, volumes, flags, None)
    }

    /// Starts the next split delta, to hold `writes` (docs/journal-format.md, "Split
    /// deltas"): extents go in with `DeltaWriter::write_data` and `write_zero`, in
    /// write order. A journal cannot begin with one.
    pub fn begin_split_delta(
        &mut self,
        time_ns: i64,
        volumes: Vec<VolumeInfo>,
        writes: Writes,
    ) -> Result<DeltaWriter<'_>> {
        if self.journal.deltas().is_empty() {
            return Err(Error::InvalidArgument(
                "a split delta cannot be a journal's first: it needs a full delta before it".into(),
            ));
        }
        writes.check().map_err(Error::InvalidArgument)?;
        let needs = if writes.gap.is_some() { 3 } else { 2 };
        if self.seg.as_ref().is_some_and(|s| s.version < needs) {
            // Older readers must meet a version they refuse, not a record kind or a
            // flag they do not know.
            self.roll()?;
        }
        self.begin(time_ns, volumes, writes.flags(), Some(writes))
    }

    fn begin(
        &mut self,
        time_ns: i64,
        volumes: Vec<VolumeInfo>,
        flags: u32,
        writes: Option<Writes>,
    ) -> Result<DeltaWriter<'_>> {
        let delta = self.next_delta_id();
        let sizes = volumes.iter().map(|v| v.size).collect();
        let begin = Begin {
            delta,
            time_ns,
            flags,
            volumes,
            writes,
        };
        let (at, _, crc) = self.append(record::BEGIN, &begin.encode())?;
        Ok(DeltaWriter {
            w: self,
            begin: at,
            time_ns,
            flags,
            writes,
            last_write: None,
            delta,
            sizes,
            digest: fold_digest(0, crc),
            records: 0,
            changed: 0,
            stored: 0,
            finished: false,
            compress: true,
        })
    }

    /// Places a bookmark after the newest committed delta; a grid's bookmark carries
    /// the grid's counter value.
    pub fn add_bookmark(
        &mut self,
        name: &str,
        time_ns: i64,
        grid: Option<record::GridMark>,
    ) -> Result<BookmarkEntry> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "bookmark name `{name}` must be 1-255 printable characters"
            )));
        }
        if self.journal.bookmarks().iter().any(|b| b.name == name) {
            return Err(Error::AlreadyExists(format!(
                "bookmark `{name}` already exists in {}",
                self.dir().display()
            )));
        }
        let b = Bookmark {
            seq: self
                .journal
                .bookmarks()
                .last()
                .map_or(self.journal.start().seq, |b| b.seq)
                + 1,
            after_delta: self.next_delta_id() - 1,
            time_ns,
            name: name.to_string(),
            grid,
        };
        let (at, end, _) = self.append(record::BOOKMARK, &b.encode())?;
        self.sync()?;
        let entry = BookmarkEntry {
            seq: b.seq,
            after_delta: b.after_delta,
            time_ns,
            at,
            end,
            name: b.name,
            grid: b.grid,
        };
        let dir = self.dir().to_path_buf();
        self.journal
            .index_mut()
            .append(&dir, Entry::Bookmark(entry.clone()))
            .map_err(|e| Error::Unindexed {
                journal: dir,
                delta: None,
                what: format!("bookmark `{}`", entry.name),
                reason: e.to_string(),
            })?;
        Ok(entry)
    }
}

/// An open delta. Extents go in with `data` and `zero`; `commit` makes it durable.
pub struct DeltaWriter<'w> {
    w: &'w mut JournalWriter,
    begin: Pos,
    time_ns: i64,
    flags: u32,
    writes: Option<Writes>,
    /// The write of the last record of a split delta.
    last_write: Option<u64>,
    delta: u64,
    sizes: Vec<u64>,
    digest: u32,
    records: u64,
    changed: u64,
    stored: u64,
    finished: bool,
    /// Off: extents are stored as they are (in raw zstd blocks), for a writer that
    /// has no time to compress.
    compress: bool,
}

impl DeltaWriter<'_> {
    pub fn delta(&self) -> u64 {
        self.delta
    }

    /// Whether the extents written from now on are compressed (the default) or stored
    /// as they are, which costs a copy instead of the compressor's time: a split
    /// group's shipper that falls behind its writers stores, so the journal keeps up.
    pub fn compress(&mut self, on: bool) {
        self.compress = on;
    }

    fn check_range(&self, volume: u16, offset: u64, len: u64) -> Result<()> {
        let size = *self
            .sizes
            .get(volume as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("no volume #{volume} in this delta")))?;
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(Error::InvalidArgument(format!(
                "extent {offset}+{len} is outside volume #{volume} of {size} bytes"
            )));
        }
        Ok(())
    }

    /// Checks that `stamp` may come next: a split delta takes only stamped extents,
    /// in write order, inside its range; any other delta takes none.
    fn check_stamp(&self, stamp: Option<Stamp>) -> Result<()> {
        let ok = match (self.writes, stamp) {
            (None, None) => true,
            (Some(w), Some(s)) => w.may_come(self.last_write, s.write),
            _ => false,
        };
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "delta {}: extent of write {:?} out of order (range {:?}, last {:?})",
                self.delta,
                stamp.map(|s| s.write),
                self.writes,
                self.last_write
            )));
        }
        Ok(())
    }

    fn record(&mut self, kind: u8, len: u64) -> Result<()> {
        let payload = std::mem::take(&mut self.w.payload);
        let result = self.w.append(kind, &payload);
        self.stored += payload.len() as u64;
        self.w.payload = payload;
        let (_, _, crc) = result?;
        self.digest = fold_digest(self.digest, crc);
        self.records += 1;
        self.changed += len;
        Ok(())
    }

    /// Journals `bytes` as the contents of `volume` at `offset`. Runs of zeros become
    /// Zero records, so a replica gets holes where the source has them.
    pub fn data(&mut self, volume: u16, offset: u64, bytes: &[u8]) -> Result<()> {
        self.extent_data(None, volume, offset, bytes)
    }

    /// Journals `bytes` written by write `stamp` to `volume` at `offset`, in a split
    /// delta (zeros become a WriteZero, as in `data`).
    pub fn write_data(
        &mut self,
        stamp: Stamp,
        volume: u16,
        offset: u64,
        bytes: &[u8],
    ) -> Result<()> {
        self.extent_data(Some(stamp), volume, offset, bytes)
    }

    /// Journals that write `stamp` made `volume` read as zeros over `offset..+len`.
    pub fn write_zero(&mut self, stamp: Stamp, volume: u16, offset: u64, len: u64) -> Result<()> {
        self.extent_zero(Some(stamp), volume, offset, len)
    }

    fn extent_data(
        &mut self,
        stamp: Option<Stamp>,
        volume: u16,
        offset: u64,
        bytes: &[u8],
    ) -> Result<()> {
        self.check_range(volume, offset, bytes.len() as u64)?;
        self.check_stamp(stamp)?;
        for (i, chunk) in bytes.chunks(MAX_EXTENT).enumerate() {
            let at = offset + (i * MAX_EXTENT) as u64;
            if crate::diff::is_zero(chunk) {
                self.extent_zero(stamp, volume, at, chunk.len() as u64)?;
                continue;
            }
            let mut payload = std::mem::take(&mut self.w.payload);
            payload.clear();
            let kind = record::encode_data_head(
                &mut payload,
                self.delta,
                stamp,
                volume,
                at,
                chunk.len() as u32,
            );
            if self.compress {
                let head = payload.len();
                payload.resize(head + zstd::zstd_safe::compress_bound(chunk.len()), 0);
                let n = self
                    .w
                    .compressor
                    .compress_to_buffer(chunk, &mut payload[head..]);
                payload.truncate(head + n.as_ref().copied().unwrap_or(0));
                self.w.payload = payload;
                n.map_err(Error::io(
                    "cannot compress extent for",
                    self.w.journal.dir.clone(),
                ))?;
            } else {
                super::stored::append_frame(&mut payload, chunk);
                self.w.payload = payload;
            }
            self.record(kind, chunk.len() as u64)?;
            self.last_write = stamp.map(|s| s.write);
        }
        Ok(())
    }

    /// Journals that `volume` reads as zeros over `offset..offset+len`.
    pub fn zero(&mut self, volume: u16, offset: u64, len: u64) -> Result<()> {
        self.extent_zero(None, volume, offset, len)
    }

    fn extent_zero(
        &mut self,
        stamp: Option<Stamp>,
        volume: u16,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.check_range(volume, offset, len)?;
        self.check_stamp(stamp)?;
        let (kind, payload) = record::encode_zero(self.delta, stamp, volume, offset, len);
        self.w.payload = payload;
        self.record(kind, len)?;
        self.last_write = stamp.map(|s| s.write);
        Ok(())
    }

    /// Writes the Commit record and makes the delta durable; only then is it visible.
    /// An error other than [`Error::Unindexed`] means the delta is not in the journal;
    /// `Unindexed` means it is committed and durable, only its index entry is missing
    /// (the writer keeps it in memory and writes the index whole at the next append;
    /// the next open rebuilds it from the segments).
    pub fn commit(mut self) -> Result<DeltaEntry> {
        if let Some(w) = self.writes.filter(|w| !w.may_end(self.last_write)) {
            return Err(Error::InvalidArgument(format!(
                "split delta {} ends at write {:?}, its Begin says {}",
                self.delta, self.last_write, w.last_write
            )));
        }
        let c = Commit {
            delta: self.delta,
            records: self.records,
            changed_bytes: self.changed,
            stored_bytes: self.stored,
            digest: self.digest,
        };
        let (_, end, _) = self.w.append(record::COMMIT, &c.encode())?;
        self.w.sync()?;
        self.finished = true;
        let entry = DeltaEntry {
            delta: self.delta,
            time_ns: self.time_ns,
            flags: self.flags,
            writes: self.writes,
            begin: self.begin,
            end,
            records: self.records,
            changed_bytes: self.changed,
            stored_bytes: self.stored,
        };
        let dir = self.w.dir().to_path_buf();
        self.w
            .journal
            .index_mut()
            .append(&dir, Entry::Delta(entry.clone()))
            .map_err(|e| Error::Unindexed {
                journal: dir,
                delta: Some(entry.delta),
                what: format!("delta {}", entry.delta),
                reason: e.to_string(),
            })?;
        Ok(entry)
    }
}

impl Drop for DeltaWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // An abandoned delta must not linger as a tail; if this fails, the next
            // writer's recovery cuts it off instead.
            if let Err(e) = self.w.truncate_to(self.begin) {
                tracing::warn!(error = %e, "could not remove an unfinished delta; the next open will");
            }
        }
    }
}

/// Removes everything in the segments of `dir` from `pos` on, durably.
pub(super) fn cut_segments(dir: &Path, pos: Pos) -> Result<()> {
    // Highest first: a crash part-way leaves a shorter journal, never one with a gap.
    for n in frame::list_segments(dir)?
        .into_iter()
        .rev()
        .filter(|n| *n > pos.segment)
    {
        let path = frame::segment_path(dir, n);
        std::fs::remove_file(&path).map_err(Error::io("cannot remove journal segment", &path))?;
    }
    let path = frame::segment_path(dir, pos.segment);
    if pos.offset < HEADER_LEN {
        // The segment's own header is broken: the segment holds nothing committed.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("cannot remove journal segment", &path)(e))
            }
            _ => {}
        }
    } else if path.exists() {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::io("cannot open journal segment", &path))?;
        f.set_len(pos.offset)
            .and_then(|_| f.sync_all())
            .map_err(Error::io("cannot truncate journal segment", &path))?;
    }
    sync_dir(dir)
}

/// Gives the journal in `dir` a new random id, durably; returns it.
pub(super) fn write_new_id(dir: &Path) -> Result<String> {
    let mut raw = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .map_err(Error::io("cannot read", "/dev/urandom"))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    crate::fsutil::write_atomic(&dir.join(super::ID_FILE), format!("{id}\n").as_bytes())?;
    Ok(id)
}
