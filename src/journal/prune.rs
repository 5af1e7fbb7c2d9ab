//! Retention: removing a journal's oldest deltas once nothing needs them. The caller
//! decides what is no longer needed (every target's cursor is past it, and the
//! policy lets it go); this file makes the cut crash-safe.
//!
//! Order of work: the new start is recorded first, then the index is rewritten, then
//! the pruned segments are removed and the pruned head of the first kept segment is
//! punched out. A crash at any point leaves a journal that opens at the new start;
//! segments left before it are ignored, and removed by the next prune.
//!
//! Files are removed only while no other reader holds the journal (readers.rs); the
//! next prune removes what a reader kept.
use super::frame::{self, Pos, HEADER_LEN};
use super::readers;
use super::start::Start;
use super::writer::JournalWriter;
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use serde::Serialize;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PruneReport {
    /// The first delta before and after pruning.
    pub first_before: u64,
    pub first_after: u64,
    pub deltas_removed: u64,
    pub bookmarks_removed: u64,
    pub segments_removed: u64,
    /// Bytes of segment files removed or punched out.
    pub bytes_freed: u64,
    /// Segments wholly before the new start that stay because another reader (a
    /// replay, an export) has the journal open; the next prune removes them.
    pub segments_kept_for_readers: u64,
}

impl JournalWriter {
    /// Removes every delta before `first` (and the bookmarks among them). The newest
    /// delta is never removed: the next cycle diffs against its snapshot.
    pub fn prune_before(&mut self, first: u64) -> Result<PruneReport> {
        let dir = self.dir().to_path_buf();
        let journal = &self.journal;
        let before = journal.first_delta();
        let last = journal.last_delta();
        if first > last {
            return Err(Error::InvalidArgument(format!(
                "cannot prune {} up to delta {first}: the newest delta, {last}, always stays",
                dir.display()
            )));
        }
        let mut report = PruneReport {
            first_before: before,
            first_after: before.max(first),
            deltas_removed: 0,
            bookmarks_removed: 0,
            segments_removed: 0,
            bytes_freed: 0,
            segments_kept_for_readers: 0,
        };
        let old = journal.start();
        if first <= before {
            // Segments left below the start by a prune that crashed, or kept for a
            // reader, go now.
            self.free_pruned(old.pos, &mut report)?;
            return Ok(report);
        }
        let pos = journal.delta(first)?.begin;
        let pruned_bookmarks: Vec<u64> = journal
            .bookmarks()
            .iter()
            .filter(|b| b.at < pos)
            .map(|b| b.seq)
            .collect();
        let start = Start {
            delta: first,
            seq: pruned_bookmarks.last().copied().unwrap_or(old.seq),
            pos,
        };
        start.store(&dir)?;
        let index = self.journal.index_mut();
        index.start = start;
        index.deltas.retain(|d| d.delta >= first);
        index.bookmarks.retain(|b| b.at >= pos);
        index.rewrite(&dir)?;
        report.deltas_removed = first - before;
        report.bookmarks_removed = pruned_bookmarks.len() as u64;
        self.free_pruned(pos, &mut report)?;
        sync_dir(&dir)?;
        Ok(report)
    }

    /// Gives back the space before `pos`, the start, unless another reader holds the
    /// journal.
    fn free_pruned(&self, pos: Pos, report: &mut PruneReport) -> Result<()> {
        let dir = self.dir();
        let lock = self.journal.readers.as_ref();
        if let Some(lock) = lock {
            if !readers::try_alone(lock, dir)? {
                report.segments_kept_for_readers = frame::list_segments(dir)?
                    .into_iter()
                    .filter(|n| *n < pos.segment)
                    .count() as u64;
                tracing::debug!(journal = %dir.display(), segments = report.segments_kept_for_readers,
                    "pruned segments kept while another reader has the journal open; the next prune removes them");
                return Ok(());
            }
        }
        let freed = self.remove_and_punch(pos, report);
        let unshared = lock.map_or(Ok(()), |lock| readers::unshare(lock, dir));
        freed.and(unshared)
    }

    fn remove_and_punch(&self, pos: Pos, report: &mut PruneReport) -> Result<()> {
        let dir = self.dir();
        self.remove_segments_below(pos.segment, report)?;
        if pos.offset == HEADER_LEN {
            return Ok(());
        }
        // The first kept segment may open with the end of a pruned delta; give its
        // blocks back to the file system (the header stays, readers check it). Punched
        // every time, since an earlier prune may have left it for a reader; what was
        // freed is what the file's allocation shrank by.
        let path = frame::segment_path(dir, pos.segment);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::io("cannot open journal segment", &path))?;
        let allocated = |f: &std::fs::File| {
            f.metadata()
                .map(|m| m.blocks() * 512)
                .map_err(Error::io("cannot stat journal segment", &path))
        };
        let before = allocated(&f)?;
        match crate::sys::punch_hole(&f, HEADER_LEN, pos.offset - HEADER_LEN) {
            Ok(()) => {}
            // A file system without hole punching keeps those bytes until the whole
            // segment goes; nothing reads them.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(Error::io("cannot free pruned bytes of", &path)(e)),
        }
        let freed = before.saturating_sub(allocated(&f)?);
        if freed > 0 {
            f.sync_all()
                .map_err(Error::io("cannot free pruned bytes of", &path))?;
            report.bytes_freed += freed;
        }
        Ok(())
    }

    fn remove_segments_below(&self, segment: u64, report: &mut PruneReport) -> Result<()> {
        let dir = self.dir();
        for n in frame::list_segments(dir)?
            .into_iter()
            .filter(|n| *n < segment)
        {
            let path = frame::segment_path(dir, n);
            // Allocated bytes, as for punching: a head punched before is not counted twice.
            let len = std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512);
            std::fs::remove_file(&path)
                .map_err(Error::io("cannot remove pruned journal segment", &path))?;
            report.segments_removed += 1;
            report.bytes_freed += len;
        }
        Ok(())
    }
}
