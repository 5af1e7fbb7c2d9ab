//! Retention: removing a journal's oldest deltas once nothing needs them. The caller
//! decides what is no longer needed (every target's cursor is past it, and the
//! policy lets it go); this file makes the cut crash-safe.
//!
//! Order of work: the new start is recorded first, then the index is rewritten, then
//! the pruned segments are removed and the pruned head of the first kept segment is
//! punched out. A crash at any point leaves a journal that opens at the new start;
//! segments left before it are ignored, and removed by the next prune.
use super::frame::{self, HEADER_LEN};
use super::start::Start;
use super::writer::{sync_dir, JournalWriter};
use crate::error::{Error, Result};
use serde::Serialize;
use std::fs::OpenOptions;

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
        };
        let old = journal.start();
        if first <= before {
            // Segments left below the start by a prune that crashed go now.
            self.remove_segments_below(old.pos.segment, &mut report)?;
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

        self.remove_segments_below(pos.segment, &mut report)?;
        // The first kept segment may open with the end of a pruned delta; give its
        // blocks back to the file system (the header stays, readers check it).
        let path = frame::segment_path(&dir, pos.segment);
        // Punching is idempotent; count only what the previous start had not freed.
        let head = pos.offset - HEADER_LEN;
        let already = if old.pos.segment == pos.segment {
            old.pos.offset - HEADER_LEN
        } else {
            0
        };
        if head > already {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(Error::io("cannot open journal segment", &path))?;
            match crate::sys::punch_hole(&f, HEADER_LEN, head).and_then(|_| f.sync_all()) {
                Ok(()) => report.bytes_freed += head - already,
                // A file system without hole punching keeps those bytes until the
                // whole segment goes; nothing reads them.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(Error::io("cannot free pruned bytes of", &path)(e)),
            }
        }
        sync_dir(&dir)?;
        Ok(report)
    }

    fn remove_segments_below(&self, segment: u64, report: &mut PruneReport) -> Result<()> {
        let dir = self.dir();
        for n in frame::list_segments(dir)?
            .into_iter()
            .filter(|n| *n < segment)
        {
            let path = frame::segment_path(dir, n);
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            std::fs::remove_file(&path)
                .map_err(Error::io("cannot remove pruned journal segment", &path))?;
            report.segments_removed += 1;
            report.bytes_freed += len;
        }
        Ok(())
    }
}
