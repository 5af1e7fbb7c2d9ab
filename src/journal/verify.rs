//! `journal verify`: reads every byte of a journal and checks it against the format,
//! without changing anything.
use super::frame::{self, FrameCursor, Pos, Step};
use super::index::{Entry, Index};
use super::record::Record;
use super::scan::Scanner;
use super::Tail;
use crate::error::{Error, Result};
use crate::progress::Progress;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Problem {
    pub segment: u64,
    pub offset: u64,
    pub reason: String,
    /// The last delta committed before the problem: where `journal repair --cut-at`
    /// would cut the journal to go on without the damage.
    pub last_good_delta: u64,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub journal: String,
    pub ok: bool,
    pub segments: usize,
    pub deltas: u64,
    pub bookmarks: u64,
    pub records: u64,
    pub changed_bytes: u64,
    pub stored_bytes: u64,
    /// The first problem found in committed data: the journal is damaged.
    pub problem: Option<Problem>,
    /// An unfinished tail after the last commit: harmless, the next writer cuts it.
    pub tail: Option<Tail>,
}

/// Checks the journal in `dir`. `progress` is told one phase, "verify", over the bytes
/// of the segments from the journal's start; it ends short of the total when a tail or
/// damage stops the check.
pub fn verify(dir: &Path, progress: &dyn Progress) -> Result<VerifyReport> {
    let report = check(dir, progress);
    // A tail or damage ends the check early, but it ended all the same.
    progress.finish();
    report
}

fn check(dir: &Path, progress: &dyn Progress) -> Result<VerifyReport> {
    super::check_journal_dir(dir)?;
    // Held to the end, so a prune leaves the segments listed here in place.
    let _reader = super::readers::share(dir)?;
    let segments = frame::list_segments(dir)?;
    let index = Index::load(dir)?;
    let indexed = index.entries();
    let indexed_end = index.end();
    let mut report = VerifyReport {
        journal: dir.display().to_string(),
        ok: false,
        segments: segments.len(),
        deltas: 0,
        bookmarks: 0,
        records: 0,
        changed_bytes: 0,
        stored_bytes: 0,
        problem: None,
        tail: None,
    };
    let problem = |at: Pos, reason: String, scanner: &Scanner| {
        Some(Problem {
            segment: at.segment,
            offset: at.offset,
            reason,
            last_good_delta: scanner.before().last_delta,
        })
    };
    // Segments before the start hold only pruned deltas; a crash during pruning may
    // have left some behind. A missing one after it is a break the walk meets.
    let start = index.start;
    let first = start.pos.segment;
    let mut total = 0;
    for n in segments.iter().filter(|n| **n >= first) {
        let path = frame::segment_path(dir, *n);
        let len = std::fs::metadata(&path)
            .map_err(Error::io("cannot read segment", &path))?
            .len();
        let from = if *n == first {
            start.pos.offset
        } else {
            frame::HEADER_LEN
        };
        total += len.saturating_sub(from);
    }
    progress.start("verify", total);
    let mut scanner = Scanner::expecting(start.delta - 1, start.seq);
    let mut cursor = FrameCursor::new(dir, start.pos);
    let mut decompressor =
        zstd::bulk::Decompressor::new().map_err(Error::io("cannot start zstd for", dir))?;
    let mut raw = Vec::new();
    let mut seen = 0usize;
    loop {
        let (at, reason) = match cursor.step()? {
            Step::Frame { at, end, kind, crc } => {
                report.records += 1;
                progress.inc(end.offset - at.offset);
                let fed = scanner.feed(at, end, kind, crc, &cursor.payload);
                let fed = fed.and_then(|e| {
                    check_data(kind, &cursor.payload, &mut decompressor, &mut raw).map(|_| e)
                });
                match fed {
                    Ok(None) => continue,
                    Ok(Some(entry)) => {
                        if let Some(want) = indexed.get(seen) {
                            if *want != entry {
                                report.problem = problem(
                                    at,
                                    format!(
                                        "the index disagrees with the segments at entry {}",
                                        seen + 1
                                    ),
                                    &scanner,
                                );
                                return Ok(report);
                            }
                        }
                        seen += 1;
                        match entry {
                            Entry::Delta(d) => {
                                report.deltas += 1;
                                report.changed_bytes += d.changed_bytes;
                                report.stored_bytes += d.stored_bytes;
                            }
                            Entry::Bookmark(_) => report.bookmarks += 1,
                        }
                        continue;
                    }
                    Err(reason) => (at, reason),
                }
            }
            Step::Broken { at, reason } => (at, reason),
            Step::End { at } => match scanner.open_delta() {
                Some((d, _)) => (at, format!("delta {d} has no commit record")),
                None => break,
            },
        };
        // Past the index, a live writer's records are its transaction in flight:
        // neither damage nor a tail, so the check ends at the last returned commit.
        if at >= indexed_end && super::durable::writer_live(dir)? {
            break;
        }
        // The writer's recovery applies the same rule ([`super::tail::damage`]).
        if let Some(why) = super::tail::damage(dir, at, scanner.before(), indexed_end)? {
            report.problem = problem(at, format!("{reason}; {why}"), &scanner);
            return Ok(report);
        }
        let cut = scanner.open_delta().map_or(at, |(_, begin)| begin);
        report.tail = Some(Tail {
            cut,
            found: at,
            reason,
            bytes: super::bytes_from(dir, cut)?,
            before: scanner.before(),
        });
        break;
    }
    if seen < indexed.len() {
        report.problem = problem(
            indexed_end,
            format!(
                "the index lists {} entries but the segments hold {seen}",
                indexed.len()
            ),
            &scanner,
        );
        return Ok(report);
    }
    report.ok = true;
    Ok(report)
}

/// A Data record must decompress to exactly its stated length.
pub fn check_data(
    kind: u8,
    payload: &[u8],
    d: &mut zstd::bulk::Decompressor<'_>,
    raw: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    if let Ok(Record::Data {
        length, compressed, ..
    }) = Record::decode(kind, payload)
    {
        raw.resize(length as usize, 0);
        match d.decompress_to_buffer(compressed, raw) {
            Ok(n) if n == length as usize => {}
            Ok(n) => {
                return Err(format!(
                    "data record decompresses to {n} bytes, not {length}"
                ))
            }
            Err(e) => return Err(format!("data record does not decompress: {e}")),
        }
    }
    Ok(())
}
