//! `journal repair`: the way out of real damage. It cuts the journal after the last
//! delta to keep (its bookmarks after it go too), so that cycles can go on, and keeps
//! what it cut in a directory beside the journal. The journal gets a new id and the
//! cut is recorded in `cuts` ([`super::cuts`]) before any byte is removed, so a
//! replica holding deltas past the cut is refused from then on, even if the repair
//! is interrupted and run again.
//!
//! Order, for crashes and for readers: save the cut bytes (fsynced), record the cut
//! under the old id, rewrite the index without the cut entries, write the new id, then
//! remove the bytes (highest segment first). A crash at any step leaves a journal that
//! a second run of the same repair finishes; a reader that opens meanwhile (it trusts
//! the index alone while the repair holds the writer's lock) pairs the old id with any
//! delta past the cut, which `cuts` already refuses, and the new id only with the new
//! index.
use super::frame::{self, FrameCursor, Pos, Step};
use super::index::{Entry, Index};
use super::scan::Scanner;
use super::start::Start;
use crate::error::{Error, Result};
use crate::fsutil::{parent_dir, sync_dir, sync_path};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The command that cuts the journal in `dir` after delta `kept`, as error messages
/// name it.
pub fn command(dir: &Path, kept: u64) -> String {
    format!(
        "`cascade journal repair {} --cut-at {kept}` (cuts everything after delta {kept}, keeping the cut bytes beside the journal)",
        dir.display()
    )
}

#[derive(Debug, Serialize)]
pub struct RepairReport {
    pub journal: PathBuf,
    /// The last delta kept.
    pub cut_at: u64,
    /// Where the cut begins: just past delta `cut_at`'s commit.
    pub cut: Pos,
    /// Bytes of segments removed (or that would be).
    pub bytes: u64,
    /// Deltas and bookmarks the index listed past the cut.
    pub deltas_removed: Vec<u64>,
    pub bookmarks_removed: Vec<String>,
    /// Where the cut bytes are kept: `NAME.cut-after-DELTA-TIME` beside the journal.
    pub saved_to: PathBuf,
    pub old_id: Option<String>,
    pub new_id: Option<String>,
    pub dry_run: bool,
    /// The journal already ended at the cut: nothing was (or would be) changed.
    pub nothing_to_cut: bool,
}

/// Cuts the journal in `dir` after delta `cut_at` (the journal's first delta minus one
/// empties it). Every record up to the cut is checked first (checksums, grammar,
/// commit digests); a damaged one before it is refused, naming the delta to cut at
/// instead. `dry_run` reports the same and changes nothing.
pub fn repair(dir: &Path, cut_at: u64, dry_run: bool) -> Result<RepairReport> {
    super::check_journal_dir(dir)?;
    // The writer's lock: no cycle appends while the journal is cut.
    let _lock = match dry_run {
        true => None,
        false => Some(crate::lock::lock(
            &dir.join(super::durable::LOCK_FILE),
            dir,
        )?),
    };
    let start = Start::load(dir)?;
    if cut_at + 1 < start.delta {
        return Err(Error::InvalidArgument(format!(
            "--cut-at {cut_at}: {} begins at delta {} (retention pruned the deltas before it); cut at {} or later",
            dir.display(),
            start.delta,
            start.delta - 1
        )));
    }
    let old = Index::load(dir)?;
    let (kept, cut) = intact_up_to(dir, start, cut_at)?;
    let bytes = super::bytes_from(dir, cut)?;
    let deltas_removed: Vec<u64> = old
        .deltas
        .iter()
        .filter(|d| d.delta > cut_at)
        .map(|d| d.delta)
        .collect();
    let bookmarks_removed: Vec<String> = old
        .bookmarks
        .iter()
        .filter(|b| b.end > cut)
        .map(|b| b.name.clone())
        .collect();
    let old_id = super::read_id(dir);
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let saved_to = parent_dir(dir).join(format!("{name}.cut-after-{cut_at}-{stamp}"));
    let nothing_to_cut = bytes == 0
        && deltas_removed.is_empty()
        && bookmarks_removed.is_empty()
        && old.len() == kept.len();
    let mut report = RepairReport {
        journal: dir.to_path_buf(),
        cut_at,
        cut,
        bytes,
        deltas_removed,
        bookmarks_removed,
        saved_to,
        old_id,
        new_id: None,
        dry_run,
        nothing_to_cut,
    };
    if dry_run || nothing_to_cut {
        return Ok(report);
    }
    save(dir, cut, &report.saved_to)?;
    // A journal older than journal ids is recorded as `-`: no replica names that id,
    // but replicas that name no journal are held to the cut.
    let cuts = super::cuts::load(dir)?;
    let id = report.old_id.clone().unwrap_or_else(|| "-".to_string());
    super::cuts::record(dir, &cuts, super::cuts::Cut { id, kept: cut_at })?;
    // The index before the id: a reader never finds the new id beside entries of
    // cut deltas (readers trust the index alone while this holds the writer's lock).
    let mut index = Index {
        start,
        ..Index::default()
    };
    kept.into_iter().for_each(|e| index.push(e));
    index.rewrite(dir)?;
    report.new_id = Some(super::writer::write_new_id(dir)?);
    super::writer::cut_segments(dir, cut)?;
    Ok(report)
}

/// Walks the journal from its start to the commit of delta `cut_at`, checking every
/// record; returns the entries up to it and where the cut goes.
fn intact_up_to(dir: &Path, start: Start, cut_at: u64) -> Result<(Vec<Entry>, Pos)> {
    let mut entries = Vec::new();
    if cut_at + 1 == start.delta {
        return Ok((entries, start.pos));
    }
    let mut scanner = Scanner::expecting(start.delta - 1, start.seq);
    let mut cursor = FrameCursor::new(dir, start.pos);
    let (at, reason) = loop {
        match cursor.step()? {
            Step::Frame { at, end, kind, crc } => {
                match scanner.feed(at, end, kind, crc, &cursor.payload) {
                    Ok(Some(e)) => {
                        let done = matches!(&e, Entry::Delta(d) if d.delta == cut_at);
                        entries.push(e);
                        if done {
                            return Ok((entries, end));
                        }
                    }
                    Ok(None) => {}
                    Err(reason) => break (at, reason),
                }
            }
            Step::Broken { at, reason } => break (at, reason),
            Step::End { at } => break (at, "the journal ends".to_string()),
        }
    };
    let last = scanner.before().last_delta;
    Err(Error::Corrupt {
        journal: dir.to_path_buf(),
        segment: at.segment,
        offset: at.offset,
        reason: format!(
            "{reason}, before delta {cut_at} is complete: the last intact delta is {last}; \
             nothing was changed. Cut there: {}",
            command(dir, last)
        ),
    })
}

/// Copies everything from `cut` on into a new directory `to`: the part of the cut's
/// segment as `seg-….cjs.from-OFFSET`, later segments whole (`.from-0`), and the
/// index as it was; all fsynced before anything is removed.
fn save(dir: &Path, cut: Pos, to: &Path) -> Result<()> {
    std::fs::create_dir(to).map_err(Error::io("cannot create", to))?;
    for n in frame::list_segments(dir)?
        .into_iter()
        .filter(|n| *n >= cut.segment)
    {
        let from = frame::segment_path(dir, n);
        let offset = if n == cut.segment { cut.offset } else { 0 };
        let name = from.file_name().unwrap_or_default().to_string_lossy();
        copy_from(&from, offset, &to.join(format!("{name}.from-{offset}")))?;
    }
    let index = super::index::index_path(dir);
    if index.exists() {
        copy_from(&index, 0, &to.join("index.cji"))?;
    }
    sync_dir(to)?;
    sync_dir(parent_dir(to))
}

fn copy_from(from: &Path, offset: u64, to: &Path) -> Result<()> {
    let mut src = std::fs::File::open(from).map_err(Error::io("cannot read", from))?;
    src.seek(SeekFrom::Start(offset))
        .map_err(Error::io("cannot read", from))?;
    let mut dst = std::fs::File::create(to).map_err(Error::io("cannot write", to))?;
    std::io::copy(&mut src.by_ref(), &mut dst).map_err(Error::io("cannot copy to", to))?;
    drop(dst);
    sync_path(to)
}
