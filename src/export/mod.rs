//! Exporters: the journal's readers that keep replicas current.
//!
//! Contract of [`Exporter`], which `tests/exporter_conformance.rs` checks for every
//! implementation:
//! - The **cursor** is the id of the newest delta the replica holds durably (0: none).
//!   It moves only forward, one delta at a time, and only after that delta's effect is
//!   durable at the target (fsynced writes, a completed upload).
//! - `apply(journal, d)` takes `d == cursor + 1`, makes the replica hold delta `d`, and
//!   then advances the cursor. A crash or error in between leaves the cursor at `d - 1`;
//!   applying `d` again is harmless (deltas carry absolute bytes), so an export resumes
//!   where it stopped. `apply_run(journal, first, last)` does the same for a run of
//!   deltas as one step (the cursor goes from `first - 1` to `last`), for the runs
//!   `run_end` offers: an object replica uploads a run of a split group's deltas as
//!   one object, so a busy group does not become millions of tiny objects.
//! - A target is checked before anything is written to it (sizes, reachability), and
//!   one target's failure never stops another's export.
mod block;
pub mod chain;
mod cursor;
mod journal_retention;
pub mod live;
pub mod object;
mod rewind;
pub mod undo;

pub use block::BlockExporter;
pub use chain::Upkeep;
pub use journal_retention::{prune_journal, prune_journal_with, JournalPrune};
pub use object::ObjectExporter;
pub use rewind::LiveTarget;

use crate::config::{Config, ConsistencyGroup, Target, TargetSpec};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub trait Exporter: Send {
    /// The newest delta the replica holds durably.
    fn cursor(&mut self) -> Result<u64>;

    /// Applies delta `delta` (= cursor + 1) and advances the cursor; returns the bytes
    /// of journal it carried.
    fn apply(&mut self, journal: &Journal, delta: u64) -> Result<u64>;

    /// The last delta of the run that begins at `next` (the cursor + 1) to apply now
    /// as one step, or None to leave the deltas from `next` on to a later export (with
    /// `Flush::All`, never None). By default each delta goes on its own, at once.
    fn run_end(&mut self, journal: &Journal, next: u64, flush: Flush) -> Result<Option<u64>> {
        let _ = (journal, flush);
        Ok(Some(next))
    }

    /// Applies the deltas `first..=last` that `run_end` offered, and advances the
    /// cursor to `last`; returns the bytes of journal carried. By default each in turn.
    fn apply_run(&mut self, journal: &Journal, first: u64, last: u64) -> Result<u64> {
        (first..=last).map(|d| self.apply(journal, d)).sum()
    }

    /// The id of the journal that fed the replica its deltas (None: none yet, or a
    /// replica from before ids were recorded), so a replica is fed only by the journal,
    /// and only past the cuts, that its deltas fit ([`Journal::check_replica`]).
    fn fed_by(&mut self) -> Result<Option<String>>;

    /// Called after every export, even one that applied nothing: records the
    /// journal's bookmarks up to the cursor (so a bookmark placed after the newest
    /// delta reaches the target without waiting for another delta), and keeps the
    /// replica's history (synthetic fulls, retention) where the target has one.
    fn finish(&mut self, journal: &Journal) -> Result<Upkeep> {
        let _ = journal;
        Ok(Upkeep::default())
    }

    /// A live target's window and moves (None for a target that only moves forward).
    fn live(&mut self) -> Result<Option<live::LiveStatus>> {
        Ok(None)
    }
}

/// Whether an export also carries the runs of split deltas that a target would
/// rather wait to make longer (`cascade export` does; the daemon leaves them for a
/// later export, which they reach by age, size, a bookmark or the stream's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    Due,
    All,
}

/// Deltas go to a target one after another: refuse a gap or a step back.
fn check_next(target: &str, cursor: u64, delta: u64) -> Result<()> {
    if delta == cursor + 1 {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "target `{target}` holds delta {cursor}; delta {delta} cannot be applied next"
    )))
}

/// Opens the exporter for `target` of `cg`, keeping any local state under `state`.
pub fn open_exporter(
    target: &Target,
    cg: &ConsistencyGroup,
    state: &Path,
) -> Result<Box<dyn Exporter>> {
    match &target.spec {
        TargetSpec::Block { volumes, .. } => {
            Ok(Box::new(BlockExporter::new(target, cg, volumes, state)?))
        }
        TargetSpec::Object { .. } => Ok(Box::new(ObjectExporter::new(target, state)?)),
    }
}

/// What one target's export did, and its state afterwards (also kept on disk for
/// `status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    pub kind: String,
    pub cursor: u64,
    /// Deltas applied by the last export.
    pub applied: u64,
    /// Journal bytes carried by the last export.
    pub bytes: u64,
    pub last_export: Option<String>,
    pub last_error: Option<String>,
    /// Synthetic full and retention work of the last export.
    #[serde(default)]
    pub upkeep: Upkeep,
    /// The export was asked to stop and ended at a delta boundary: before the
    /// journal's end, or before the upkeep of the replica's history, which the next
    /// export does.
    #[serde(default)]
    pub stopped: bool,
    /// Deltas left for a later export: a run of split deltas not due yet, or all of
    /// them while a live target is rewound.
    #[serde(default)]
    pub waiting: u64,
    /// A live target's window of reachable points, and where a rewind holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<live::LiveStatus>,
}

/// Per-target state files live here: cursors of local targets, last status, locks.
pub fn targets_state(cfg: &Config, cg: &ConsistencyGroup) -> PathBuf {
    cfg.state_path(cg).join("targets")
}

/// Brings every target of `cg` (or only `only`) up to the newest committed delta.
/// Errors of one target are recorded in its status and do not stop the others.
pub fn export(
    cfg: &Config,
    cg: &ConsistencyGroup,
    only: Option<&str>,
    flush: Flush,
    progress: &dyn Progress,
) -> Result<Vec<TargetStatus>> {
    let journal = Journal::open(&cfg.journal_path(cg))?;
    let names: Vec<&String> = match only {
        Some(n) => vec![cg.targets.iter().find(|t| *t == n).ok_or_else(|| {
            Error::NotFound(format!(
                "consistency group `{}` has no target `{n}` (it has: {})",
                cg.name,
                cg.targets.join(", ")
            ))
        })?],
        None => cg.targets.iter().collect(),
    };
    names
        .into_iter()
        .map(|name| export_target(cfg, cg, name, &journal, flush, progress))
        .collect()
}

/// Brings one target of `cg` up to the newest delta of `journal`, and saves its
/// status. The target's own failure is recorded in the status, not returned. The
/// status is written under the target's lock, like its cursor: an export refused
/// because another holds the target reports that in the status it returns, but
/// leaves the file to the export that holds it (both wrote `NAME.status.json.tmp`
/// at once, and the refused one's stale cursor could land last). When
/// `progress` asks to stop, the export ends at the next delta boundary, skipping the
/// upkeep of the replica's history; the cursor then names the last delta applied.
pub fn export_target(
    cfg: &Config,
    cg: &ConsistencyGroup,
    name: &str,
    journal: &Journal,
    flush: Flush,
    progress: &dyn Progress,
) -> Result<TargetStatus> {
    let target = cfg.target(name)?;
    let state = targets_state(cfg, cg);
    std::fs::create_dir_all(&state)
        .map_err(Error::io("cannot create target state directory", &state))?;
    let mut status = TargetStatus {
        target: name.to_string(),
        kind: match target.spec {
            TargetSpec::Block { .. } => "block".into(),
            TargetSpec::Object { .. } => "object".into(),
        },
        // Until the target answers, what it held after the last export.
        cursor: load_status(cfg, cg, name).map_or(0, |s| s.cursor),
        applied: 0,
        bytes: 0,
        last_export: None,
        last_error: None,
        upkeep: Upkeep::default(),
        stopped: false,
        waiting: 0,
        live: None,
    };
    let lock_path = state.join(format!("{name}.lock"));
    let (lock, result) = match crate::lock::lock(&lock_path, &target.file) {
        Ok(lock) => {
            // What a `cascade serve` killed while it held the lock said of itself.
            let _ = lock.set_len(0);
            let result = export_one(target, cg, &state, journal, flush, &mut status, progress);
            (Some(lock), result)
        }
        // A point of a live target is being served: the export waits for it.
        Err(Error::Locked { .. }) if rewind::served(&lock_path).is_some() => {
            status.waiting = journal.last_delta().saturating_sub(status.cursor);
            status.live = load_status(cfg, cg, name)
                .and_then(|s| s.live)
                .map(|mut l| {
                    l.served = rewind::served(&lock_path);
                    l
                });
            (None, Ok(()))
        }
        Err(e) => (None, Err(e)),
    };
    status.last_export = Some(crate::clock::format_time(crate::clock::now_ns()));
    if let Err(e) = result {
        tracing::warn!(cg = %cg.name, target = %name, error = %e, "export failed");
        status.last_error = Some(e.to_string());
    }
    if lock.is_some() {
        save_status(&state, &status)?;
    }
    Ok(status)
}

fn export_one(
    target: &Target,
    cg: &ConsistencyGroup,
    state: &Path,
    journal: &Journal,
    flush: Flush,
    status: &mut TargetStatus,
    progress: &dyn Progress,
) -> Result<()> {
    let mut exporter = open_exporter(target, cg, state)?;
    let result = export_with(&mut *exporter, target, journal, flush, status, progress);
    // Whatever the export did, status shows the window it left.
    match exporter.live() {
        Ok(live) => status.live = live,
        Err(e) => {
            tracing::warn!(target = %target.name, error = %e, "cannot read the live target's window")
        }
    }
    result
}

fn export_with(
    exporter: &mut dyn Exporter,
    target: &Target,
    journal: &Journal,
    flush: Flush,
    status: &mut TargetStatus,
    progress: &dyn Progress,
) -> Result<()> {
    let last = journal.last_delta();
    status.cursor = exporter.cursor()?;
    journal.check_replica(&target.name, exporter.fed_by()?.as_deref(), status.cursor)?;
    if status.cursor > last {
        return Err(Error::InvalidArgument(format!(
            "target `{}` holds delta {} but the journal ends at {last}: it was fed by another journal",
            target.name, status.cursor
        )));
    }
    if status.cursor < last && status.cursor + 1 < journal.first_delta() {
        return Err(Error::NotFound(format!(
            "target `{}` holds delta {} but the journal now begins at delta {}: the deltas it needs were pruned \
             before it was named in the group, so this journal cannot bring it up to date",
            target.name,
            status.cursor,
            journal.first_delta()
        )));
    }
    // Each delta to carry, with its journal bytes: what progress counts.
    let todo = (status.cursor + 1..=last)
        .map(|d| journal.delta(d).map(|e| (d, e.stored_bytes)))
        .collect::<Result<Vec<_>>>()?;
    if !todo.is_empty() {
        progress.start(
            &format!("export {}", target.name),
            todo.iter().map(|(_, bytes)| bytes).sum(),
        );
    }
    let from = status.cursor + 1;
    let mut next = from;
    while next <= last && !progress.stop_requested() {
        let Some(end) = exporter.run_end(journal, next, flush)? else {
            status.waiting = last - next + 1;
            break;
        };
        let end = end.clamp(next, last);
        status.bytes += exporter.apply_run(journal, next, end)?;
        status.cursor = end;
        status.applied += end - next + 1;
        let run = (next - from) as usize..=(end - from) as usize;
        progress.inc(todo[run].iter().map(|(_, bytes)| bytes).sum());
        next = end + 1;
    }
    if !todo.is_empty() {
        progress.finish();
    }
    // A stop ends the export at a delta boundary, and the upkeep (a synthetic full
    // image can take long) waits for the next export.
    if progress.stop_requested() {
        status.stopped = true;
        return Ok(());
    }
    // Nothing applied, a run still growing: the upkeep waits for the run.
    if status.applied == 0 && status.waiting > 0 {
        return Ok(());
    }
    status.upkeep = exporter.finish(journal)?;
    Ok(())
}

/// The status saved by the last export of each target of `cg`.
pub fn load_status(cfg: &Config, cg: &ConsistencyGroup, target: &str) -> Option<TargetStatus> {
    let path = targets_state(cfg, cg).join(format!("{target}.status.json"));
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save_status(dir: &Path, status: &TargetStatus) -> Result<()> {
    let path = dir.join(format!("{}.status.json", status.target));
    crate::fsutil::write_atomic(
        &path,
        &serde_json::to_vec_pretty(status).expect("status serialises"),
    )
}
