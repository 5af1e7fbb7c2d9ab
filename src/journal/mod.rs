//! The change journal: the one durable stream every replica reads.
//!
//! A journal is a directory of append-only segment files holding checksummed records
//! (docs/journal-format.md has the bytes). A delta is written as Begin, extents,
//! Commit, and becomes visible only once the fsync of its Commit returned; that is the
//! whole crash-safety argument: after a crash, anything behind the last durable Commit
//! or Bookmark is an unfinished tail, which readers ignore and the next writer cuts off
//! (tail.rs tells such a tail from damage: only evidence of a later transaction makes
//! it damage, which `journal repair` cuts away, see [`repair`]). Each Commit carries a
//! digest of the delta's record checksums, so a lost, repeated or reordered record
//! inside a committed delta is caught, not just flipped bytes.
//!
//! The index file is an accelerator (delta id, bookmark, time → position). It is
//! rebuilt from the segments whenever it lags or is torn, so its appends need no
//! fsync; a rewrite (after recovery, or by a prune) replaces it atomically. It is
//! appended only after a commit returned, which makes it, while a writer is live, the
//! readers' whole view (durable.rs): they never see a commit still being made durable.

mod apply;
mod copy;
pub mod cuts;
mod durable;
pub mod frame;
mod gap;
pub mod index;
mod point;
mod prune;
mod readers;
pub mod record;
pub mod repair;
mod scan;
pub mod start;
mod stored;
mod tail;
pub mod verify;
mod writer;

pub use apply::{zero_range, Applier, VolumeFile};
pub use copy::{journal_changes, READ_CHUNK};
pub use frame::Pos;
pub use index::{BookmarkEntry, DeltaEntry};
pub use point::Point;
pub use prune::PruneReport;
pub(crate) use scan::Scanner;
pub use tail::Before;
pub use writer::{DeltaWriter, JournalWriter};

use crate::error::{Error, Result};
use frame::{FrameCursor, Step};
use index::Index;
use record::{Begin, Record};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Bytes after the last committed record: an interrupted write, or damage.
#[derive(Debug, Clone, Serialize)]
pub struct Tail {
    /// Where the tail starts (the Begin of an unfinished delta, or the broken record).
    pub cut: Pos,
    /// Where the problem was found.
    pub found: Pos,
    pub reason: String,
    pub bytes: u64,
    /// What was committed before it: the last delta and the last bookmark number.
    #[serde(flatten)]
    pub before: tail::Before,
}

/// A journal opened for reading. Opening never modifies anything.
pub struct Journal {
    dir: PathBuf,
    id: Option<String>,
    index: Index,
    tail: Option<Tail>,
    cuts: Vec<cuts::Cut>,
    /// Held while the journal is open, so retention keeps the segments it may read.
    readers: Option<std::fs::File>,
}

/// Who opens a journal, which decides what it may believe past the index
/// ([`durable`] says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opener {
    /// Any reader: while a writer is live it sees the index alone.
    Reader,
    /// The writer, holding the lock: it catches up on what a crash left unindexed.
    Writer,
}

impl Journal {
    /// Opens the journal for reading: its deltas are the commits that returned (or
    /// that a crash left durable), never one whose fsync may still be running.
    pub fn open(dir: &Path) -> Result<Journal> {
        Journal::load(dir, Opener::Reader)
    }

    fn load(dir: &Path, opener: Opener) -> Result<Journal> {
        check_journal_dir(dir)?;
        let readers = readers::share(dir)?;
        // The id before the index: a repair writes the index first and the new id
        // after it, so an id read first never names deltas the repair cut.
        let id = read_id(dir);
        let mut index = Index::load(dir)?;
        check_segments(dir, &index)?;
        let tail = catch_up(dir, &mut index, opener)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            id,
            index,
            tail,
            cuts: cuts::load(dir)?,
            readers,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A random name given to the journal when it was created, so a replica can tell
    /// the journal that fed it from another one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The repairs that cut this journal, oldest first.
    pub fn cuts(&self) -> &[cuts::Cut] {
        &self.cuts
    }

    /// Refuses a replica (target `target`, holding deltas up to `cursor` of the journal
    /// named `fed_by`) that this journal cannot go on feeding: one fed by another
    /// journal, or one holding deltas that a repair cut (new deltas took their ids).
    /// A replica that names no journal (its cursor predates journal ids) may have been
    /// fed before any of the cuts, so it is trusted only up to the lowest one.
    pub fn check_replica(&self, target: &str, fed_by: Option<&str>, cursor: u64) -> Result<()> {
        let Some(now) = self.id() else {
            return Ok(());
        };
        if cursor == 0 {
            return Ok(());
        }
        let Some(was) = fed_by else {
            return match self.cuts.iter().map(|c| c.kept).min() {
                Some(kept) if cursor > kept => Err(Error::InvalidArgument(format!(
                    "target `{target}` holds deltas up to {cursor} and does not record which journal fed it, \
                     but `cascade journal repair` cut {} after delta {kept}: its deltas past the cut may be the \
                     ones that are gone; {REBUILD}",
                    self.dir.display()
                ))),
                _ => Ok(()),
            };
        };
        match cuts::valid_up_to(&self.cuts, now, was) {
            Some(kept) if cursor <= kept => Ok(()),
            Some(kept) => Err(Error::InvalidArgument(format!(
                "target `{target}` holds deltas up to {cursor} of journal {was}, but `cascade journal repair` \
                 cut {} after delta {kept}: the deltas after it are gone, and new deltas take their numbers. \
                 The target cannot be fed from here; {REBUILD}",
                self.dir.display()
            ))),
            None => Err(Error::InvalidArgument(format!(
                "target `{target}` holds deltas 1..={cursor} of journal {was}, not of {} (journal {now})",
                self.dir.display()
            ))),
        }
    }

    pub fn deltas(&self) -> &[DeltaEntry] {
        &self.index.deltas
    }

    pub fn bookmarks(&self) -> &[BookmarkEntry] {
        &self.index.bookmarks
    }

    pub fn tail(&self) -> Option<&Tail> {
        self.tail.as_ref()
    }

    pub fn last_delta(&self) -> u64 {
        self.index.deltas.last().map_or(0, |d| d.delta)
    }

    pub(crate) fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    pub(crate) fn take_tail(&mut self) -> Option<Tail> {
        self.tail.take()
    }

    /// The first delta the journal holds: 1, or later once retention pruned it.
    pub fn first_delta(&self) -> u64 {
        // The index's own first entry wins: a reader that read `start` just before a
        // prune replaced it still finds its deltas.
        self.index
            .deltas
            .first()
            .map_or(self.index.start.delta, |d| d.delta)
    }

    pub fn start(&self) -> start::Start {
        self.index.start
    }

    /// The newest full delta at or before `until`: where a replay onto targets of
    /// unknown content starts.
    pub fn full_base(&self, until: u64) -> Result<u64> {
        self.delta(until)?;
        self.index
            .deltas
            .iter()
            .rev()
            .skip_while(|d| d.delta > until)
            .find(|d| d.flags & record::FLAG_FULL != 0)
            .map(|d| d.delta)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{} begins at delta {}, which is not a full delta (retention pruned the deltas before it), \
                     and no full delta lies between it and delta {until}: replaying onto a fresh target needs one; \
                     restore from an object replica instead",
                    self.dir.display(),
                    self.first_delta()
                ))
            })
    }

    pub fn delta(&self, id: u64) -> Result<&DeltaEntry> {
        // Delta ids are dense from the first, so the id gives the position.
        id.checked_sub(self.first_delta())
            .and_then(|i| self.index.deltas.get(i as usize))
            .filter(|d| d.delta == id)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "delta {id} does not exist in {} ({})",
                    self.dir.display(),
                    self.span()
                ))
            })
    }

    fn span(&self) -> String {
        match self.last_delta() {
            0 => "the journal has no committed deltas".into(),
            n => format!("committed deltas are {}..={n}", self.first_delta()),
        }
    }

    /// The newest delta included at `point` (for a write, the split delta holding
    /// it), consistent or not: what `journal show` shows.
    pub fn resolve(&self, point: &Point) -> Result<u64> {
        self.locate(point).map(|c| c.delta)
    }

    /// Where a replay to `point` stops: a delta, and inside a split delta the last
    /// write kept (docs/journal-format.md, "Split deltas"). A point inside a gap is
    /// refused (`Journal::consistent`).
    pub fn resolve_until(&self, point: &Point) -> Result<Until> {
        self.consistent(self.locate(point)?)
    }

    /// Where a replay to the newest point stops: the last delta, unless it leaves a
    /// gap open.
    pub fn latest(&self) -> Result<Until> {
        if self.last_delta() == 0 {
            return Err(Error::NotFound(format!(
                "journal {} has no committed deltas",
                self.dir.display()
            )));
        }
        self.consistent(self.last_delta().into())
    }

    fn locate(&self, point: &Point) -> Result<Until> {
        match point {
            Point::Write(n) => self.write_until(*n),
            Point::Time(t) => {
                let d = self.resolve_deltas(point)?;
                let entry = self.delta(d)?;
                let (until, at) = match entry.writes {
                    Some(w) => {
                        let (mut last, at, all) = self.last_write_at(d, *t)?;
                        if all && w.gap.is_some_and(|g| g.resumes) {
                            // Past its last record, a resuming delta is its resume point.
                            last = w.last_write;
                        }
                        let until = Until {
                            delta: d,
                            write: (last < w.last_write).then_some(last),
                        };
                        (until, at)
                    }
                    None => (d.into(), entry.time_ns),
                };
                self.time_before_gap(until, at, *t)
            }
            _ => self.resolve_deltas(point).map(Until::from),
        }
    }

    /// The split delta that holds write `n`, cut after it.
    fn write_until(&self, n: u64) -> Result<Until> {
        let mut split = self
            .index
            .deltas
            .iter()
            .filter_map(|d| d.writes.map(|w| (d.delta, w)));
        let (first, last) = (split.clone().next(), split.clone().next_back());
        let Some((delta, w)) = split.find(|(_, w)| w.first_write <= n && n <= w.last_write) else {
            // A write numbered just before a base was captured is in that base only.
            let after = self.index.deltas.iter().find(|d| {
                d.writes
                    .is_some_and(|w| w.first_write > n && w.exact_from >= n)
            });
            if let Some((d, w)) = after.and_then(|d| d.writes.map(|w| (d, w))) {
                let base = self
                    .index
                    .deltas
                    .iter()
                    .rev()
                    .find(|b| b.delta < d.delta && b.writes.is_none())
                    .map_or(0, |b| b.delta);
                if n == w.exact_from && base > 0 {
                    // Just after write exact_from is the base itself.
                    return Ok(base.into());
                }
                return Err(Error::NotFound(format!(
                    "write {n} is not in {} on its own: base delta {base} took it in, and holds the volumes as \
                     they were after write {}; name seq:{} or a later write",
                    self.dir.display(),
                    w.exact_from,
                    w.exact_from
                )));
            }
            return Err(Error::NotFound(match (first, last) {
                (Some((_, a)), Some((_, b))) => format!(
                    "write {n} is not in {}: it holds writes {}..={}",
                    self.dir.display(),
                    a.first_write,
                    b.last_write
                ),
                _ => format!(
                    "{} holds no writes: it has no split deltas (seq: points name the writes of a split group)",
                    self.dir.display()
                ),
            }));
        };
        Ok(Until {
            delta,
            write: (n < w.last_write).then_some(n),
        })
    }

    /// The newest write of split delta `d` acknowledged at or before `t` (the delta's
    /// time is that of its first write, so there is one), its time, and whether it is
    /// the delta's last record (every record is at or before `t`).
    fn last_write_at(&self, d: u64, t: i64) -> Result<(u64, i64, bool)> {
        let mut r = self.read_delta(d)?;
        let mut last = None;
        let mut all = true;
        while let Some(rec) = r.next_record()? {
            if let Some(s) = rec.stamp() {
                if s.time_ns > t {
                    all = false;
                    break;
                }
                last = Some((s.write, s.time_ns));
            }
        }
        let entry = self.delta(d)?;
        match (last, entry.writes) {
            (Some((n, at)), _) => Ok((n, at, all)),
            // A resuming delta with no record: its time is when the gap ended.
            (None, Some(w)) if entry.records == 0 => Ok((w.last_write, entry.time_ns, true)),
            _ => Err(r.corrupt("split delta's first write is later than the delta's time")),
        }
    }

    fn resolve_deltas(&self, point: &Point) -> Result<u64> {
        let deltas: Vec<(u64, i64)> = self
            .index
            .deltas
            .iter()
            .map(|d| (d.delta, d.time_ns))
            .collect();
        let bookmarks = self
            .index
            .bookmarks
            .iter()
            .map(|b| (b.name.as_str(), b.after_delta));
        point.resolve_in(&deltas, bookmarks, &self.dir.display().to_string())
    }

    /// The volumes (ids and sizes) as of delta `id`.
    pub fn volumes_at(&self, id: u64) -> Result<Vec<record::VolumeInfo>> {
        let mut r = self.read_delta(id)?;
        match r.next_record()? {
            Some(Record::Begin(b)) => Ok(b.volumes),
            _ => Err(self.corrupt(
                self.delta(id)?.begin,
                "delta does not start with a Begin record",
            )),
        }
    }

    /// Reads delta `id` record by record, checking each checksum and, at the end,
    /// the commit's counts and digest.
    pub fn read_delta(&self, id: u64) -> Result<DeltaReader<'_>> {
        let entry = self.delta(id)?.clone();
        Ok(DeltaReader {
            journal: self,
            cursor: FrameCursor::new(&self.dir, entry.begin),
            scanner: Scanner::expecting(id - 1, 0),
            at: entry.begin,
            entry,
            done: false,
        })
    }

    pub(crate) fn corrupt(&self, at: Pos, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            journal: self.dir.clone(),
            segment: at.segment,
            offset: at.offset,
            reason: reason.into(),
        }
    }
}

/// Where a replay stops: every delta up to `delta`; of `delta`, when `write` is set
/// (it is a split delta then), only the records of writes up to `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Until {
    pub delta: u64,
    pub write: Option<u64>,
}

impl From<u64> for Until {
    fn from(delta: u64) -> Until {
        Until { delta, write: None }
    }
}

/// Records of one committed delta, in order, Begin first and Commit last.
pub struct DeltaReader<'j> {
    journal: &'j Journal,
    cursor: FrameCursor,
    scanner: Scanner,
    entry: DeltaEntry,
    done: bool,
    at: Pos,
}

impl DeltaReader<'_> {
    /// A corruption error at the record `next` returned last.
    pub fn corrupt(&self, reason: impl Into<String>) -> Error {
        self.journal.corrupt(self.at, reason)
    }

    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        if self.done {
            return Ok(None);
        }
        match self.cursor.step()? {
            Step::Frame { at, end, kind, crc } => {
                self.at = at;
                if end > self.entry.end {
                    return Err(self
                        .journal
                        .corrupt(at, "record runs past the end of its delta"));
                }
                let done = self
                    .scanner
                    .feed(at, end, kind, crc, &self.cursor.payload)
                    .map_err(|r| self.journal.corrupt(at, r))?;
                if done.is_some() {
                    if end != self.entry.end {
                        return Err(self
                            .journal
                            .corrupt(at, "commit is not where the index says"));
                    }
                    self.done = true;
                }
                Record::decode(kind, &self.cursor.payload)
                    .map(Some)
                    .map_err(|r| self.journal.corrupt(at, r))
            }
            Step::Broken { at, reason } => Err(self.journal.corrupt(at, reason)),
            Step::End { at } => Err(self.journal.corrupt(
                at,
                format!("journal ends inside committed delta {}", self.entry.delta),
            )),
        }
    }

    /// Reads to the Commit, so every checksum and the digest of the delta are checked,
    /// telling `progress` of the volume bytes of each record ([`Record::extent_len`]).
    pub fn check_all(mut self, progress: &dyn crate::progress::Progress) -> Result<Begin> {
        let mut begin = None;
        while let Some(rec) = self.next_record()? {
            progress.inc(rec.extent_len());
            if let Record::Begin(b) = rec {
                begin = Some(b);
            }
        }
        begin.ok_or_else(|| {
            self.journal
                .corrupt(self.entry.begin, "delta has no Begin record")
        })
    }
}

/// What a replica refused past a repair's cut must do.
const REBUILD: &str = "rebuild it from an empty one (for a block target, remove its cursor; \
                       for an object target, use a new prefix)";

/// The file holding the journal's id.
pub(crate) const ID_FILE: &str = "id";

/// The journal's id, if it has one (journals older than ids do not; an empty file
/// counts as none).
fn read_id(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(ID_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A journal is a directory; say which way a path is not one.
pub(crate) fn check_journal_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::InvalidArgument(format!(
            "{} is not a journal: a journal is a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(format!(
            "journal {} does not exist",
            dir.display()
        ))),
        Err(e) => Err(Error::io("cannot open journal", dir)(e)),
    }
}

/// A segment missing inside what the index lists is lost committed data: refused at
/// open, not at the read that meets it, so that no writer appends after the gap.
fn check_segments(dir: &Path, index: &Index) -> Result<()> {
    if index.is_empty() {
        return Ok(());
    }
    let have = frame::list_segments(dir)?;
    let (first, last) = (index.start.pos.segment, index.end().segment);
    let Some(missing) = (first..=last).find(|n| have.binary_search(n).is_err()) else {
        return Ok(());
    };
    let kept = index
        .deltas
        .iter()
        .take_while(|d| d.end.segment < missing)
        .last()
        .map_or(index.start.delta - 1, |d| d.delta);
    Err(Error::Corrupt {
        journal: dir.to_path_buf(),
        segment: missing,
        offset: 0,
        reason: format!(
            "segment {missing} is missing, but the index lists committed records up to segment {last}; \
             nothing was changed. To go on without what was lost: {}",
            repair::command(dir, kept)
        ),
    })
}

/// Scans from the end of the index to the end of the journal for committed records
/// the index lacks (a crash can leave it lagging) and adds them once they are durable;
/// returns the tail, if any. A reader does not look past the index while a writer is
/// live ([`durable`]).
fn catch_up(dir: &Path, index: &mut Index, opener: Opener) -> Result<Option<Tail>> {
    let reader = opener == Opener::Reader;
    if reader && durable::writer_live(dir)? {
        return Ok(None);
    }
    let mut found = Vec::new();
    let mut scanner = Scanner::after(index);
    let mut cursor = FrameCursor::new(dir, index.end());
    let broke = loop {
        match cursor.step()? {
            Step::Frame { at, end, kind, crc } => {
                match scanner.feed(at, end, kind, crc, &cursor.payload) {
                    Ok(Some(e)) => found.push(e),
                    Ok(None) => {}
                    Err(reason) => break Some((at, reason)),
                }
            }
            Step::Broken { at, reason } => break Some((at, reason)),
            Step::End { at } => {
                break scanner
                    .open_delta()
                    .map(|(d, _)| (at, format!("delta {d} has no commit record")))
            }
        }
    };
    if let (Some(first), Some(last)) = (found.first(), found.last()) {
        durable::make_durable(dir, first.begin().segment, last.end().segment)?;
        // A writer that opened during the scan may have appended what it saw.
        if reader && durable::writer_live(dir)? {
            return Ok(None);
        }
        found.into_iter().for_each(|e| index.push(e));
    }
    let Some((found, reason)) = broke else {
        return Ok(None);
    };
    let cut = scanner.open_delta().map_or(found, |(_, begin)| begin);
    let bytes = bytes_from(dir, cut)?;
    Ok(Some(Tail {
        cut,
        found,
        reason,
        bytes,
        before: scanner.before(),
    }))
}

/// Bytes in the segments from `pos` to the end of the journal.
fn bytes_from(dir: &Path, pos: Pos) -> Result<u64> {
    let mut total = 0;
    for n in frame::list_segments(dir)?
        .into_iter()
        .filter(|n| *n >= pos.segment)
    {
        let path = frame::segment_path(dir, n);
        let len = std::fs::metadata(&path)
            .map_err(Error::io("cannot stat journal segment", &path))?
            .len();
        total += if n == pos.segment {
            len.saturating_sub(pos.offset)
        } else {
            len
        };
    }
    Ok(total)
}
