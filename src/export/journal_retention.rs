//! Journal retention: a group's journal drops its oldest deltas when its policy lets
//! them go *and* every target of the group holds them. The slowest target's cursor
//! bounds the cut, so nothing a target still needs is removed; a target that has
//! never exported holds delta 0 and keeps the whole journal.
//!
//! Cursors come from the status each export saves (`targets/NAME.status.json`): it is
//! written after the deltas it names are durable at the target, so it never runs
//! ahead of the target, and pruning needs no network round trip.
use super::load_status;
use crate::config::{Config, ConsistencyGroup};
use crate::error::Result;
use crate::journal::{Journal, JournalWriter, PruneReport};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct JournalPrune {
    pub cg: String,
    /// Whether the group has a journal-retention policy.
    pub policy: bool,
    /// The oldest delta the policy keeps (None: no policy, or no deltas yet).
    pub policy_keeps_from: Option<u64>,
    /// The target holding the oldest delta, and that delta.
    pub slowest_target: Option<(String, u64)>,
    /// The first delta of the journal after pruning (or, with --dry-run, it would be).
    pub first_delta: u64,
    pub dry_run: bool,
    /// What was removed; None when nothing was (or with --dry-run).
    pub pruned: Option<PruneReport>,
}

/// The first delta `journal` may keep under `cg`'s policy and its targets' cursors.
fn plan(cfg: &Config, cg: &ConsistencyGroup, journal: &Journal) -> JournalPrune {
    let points: Vec<(u64, i64)> = journal
        .deltas()
        .iter()
        .map(|d| (d.delta, d.time_ns))
        .collect();
    let policy_keeps_from = cg
        .journal_retention
        .prunes()
        .then(|| {
            cg.journal_retention
                .oldest_kept(&points, crate::clock::now_ns())
        })
        .flatten();
    let slowest_target = cg
        .targets
        .iter()
        .map(|t| (t.clone(), load_status(cfg, cg, t).map_or(0, |s| s.cursor)))
        .min_by_key(|(_, c)| *c);
    let first = journal.first_delta();
    let keep_from = match policy_keeps_from {
        None => first,
        Some(p) => p
            .min(slowest_target.as_ref().map_or(u64::MAX, |(_, c)| c + 1))
            .min(journal.last_delta())
            .max(first),
    };
    JournalPrune {
        cg: cg.name.clone(),
        policy: cg.journal_retention.prunes(),
        policy_keeps_from,
        slowest_target,
        first_delta: keep_from,
        dry_run: false,
        pruned: None,
    }
}

/// Prunes `cg`'s journal by its policy, bounded by its slowest target. With `dry_run`
/// only says what would go.
pub fn prune_journal(cfg: &Config, cg: &ConsistencyGroup, dry_run: bool) -> Result<JournalPrune> {
    let dir = cfg.journal_path(cg);
    crate::journal::check_journal_dir(&dir)?;
    if dry_run {
        let mut p = plan(cfg, cg, &Journal::open(&dir)?);
        p.dry_run = true;
        return Ok(p);
    }
    prune_journal_with(
        cfg,
        cg,
        &mut JournalWriter::open(&dir, cg.segment_size_mib << 20)?,
    )
}

/// [`prune_journal`] on a writer the caller holds (a running splitter's).
pub fn prune_journal_with(
    cfg: &Config,
    cg: &ConsistencyGroup,
    writer: &mut JournalWriter,
) -> Result<JournalPrune> {
    let mut p = plan(cfg, cg, writer.journal());
    if writer.journal().last_delta() == 0 {
        return Ok(p);
    }
    // Called even when the start stays, to remove segments an earlier prune kept
    // for a reader.
    let report = writer.prune_before(p.first_delta)?;
    let freed = report.deltas_removed + report.segments_removed + report.bytes_freed;
    // A prune that only found segments still kept for a reader is said by the CLI,
    // but not logged at every export while the reader stays.
    if freed > 0 {
        tracing::info!(cg = %cg.name, first = report.first_after, deltas = report.deltas_removed,
            bytes = report.bytes_freed, kept_for_readers = report.segments_kept_for_readers,
            "journal pruned");
    }
    if freed + report.segments_kept_for_readers > 0 {
        p.pruned = Some(report);
    }
    Ok(p)
}
