//! One target's exports under the daemon: whenever its group's journal changes (a
//! commit by the group's task, or a cycle or bookmark made by the CLI, seen by a poll
//! of the journal index), bring the target up to date; then prune the journal by its
//! retention policy, which the slowest target bounds.
//!
//! A failed export is retried with backoff; the target's status file and the metrics
//! say why. Other targets and the cycles go on regardless.
use super::backoff::backoff;
use super::daemon::{Ctx, GroupHandle};
use crate::config::Config;
use crate::journal::Journal;
use crate::progress::StopWhen;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the journal index is looked at for changes the daemon did not make.
const POLL: Duration = Duration::from_secs(5);
/// How often a served split group's journal retention runs: each run ends one of the
/// splitter's batches early, so not at every commit.
const SPLIT_PRUNE_EVERY: Duration = Duration::from_secs(5);

/// What identifies one state of a journal's index: it changes with every commit,
/// bookmark and prune. Cheap to read, so the poll looks at it.
type Stamp = Option<(SystemTime, u64, u64)>;

/// What a target can be given: the newest delta and bookmark. A prune changes the
/// stamp but not this, so the exports that follow a prune skip their work.
type Content = (u64, u64);

fn content(journal: &Journal) -> Content {
    let bookmark = journal.bookmarks().last().map_or(0, |b| b.seq);
    (journal.last_delta(), bookmark)
}

fn stamp(cfg: &Config, name: &str) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let cg = cfg.group(name).ok()?;
    let m = std::fs::metadata(crate::journal::index::index_path(&cfg.journal_path(cg))).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

pub async fn run(cg_name: String, target: String, handle: Arc<GroupHandle>, mut ctx: Ctx) {
    let mut committed = handle.committed.subscribe();
    let mut exported: Stamp = None;
    let mut carried: Option<Content> = None;
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    // Deltas the target left for later (a run of split deltas not due yet): looked at
    // again after a poll's time even if nothing new is committed.
    let mut waiting_since: Option<Instant> = None;
    loop {
        let cfg = ctx.config.borrow_and_update().clone();
        let in_group = cfg
            .group(&cg_name)
            .is_ok_and(|cg| cg.targets.contains(&target));
        if !in_group {
            return;
        }
        let now_stamp = stamp(&cfg, &cg_name);
        if *ctx.shutdown.borrow() {
            return;
        }
        let retry_due = retry_at.is_none_or(|t| t <= Instant::now());
        // A target waiting for a run to grow is looked at again after a poll's time,
        // not at each commit: the commits are what it waits for.
        let waited = waiting_since.is_some_and(|t| t.elapsed() >= POLL);
        let changed = now_stamp != exported && waiting_since.is_none();
        if now_stamp.is_some() && (changed || failures > 0 || waited) && retry_due {
            // After a failure everything is tried again, even with nothing new.
            let skip_if = carried.filter(|_| failures == 0 && waiting_since.is_none());
            match export(&cfg, &cg_name, &target, &handle, &ctx, skip_if).await {
                ExportEnd::Done(c, waiting) => {
                    exported = now_stamp;
                    carried = Some(c);
                    failures = 0;
                    retry_at = None;
                    waiting_since = waiting.then(Instant::now);
                }
                ExportEnd::Failed => {
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::warn!(cg = %cg_name, target = %target, failures,
                        retry_in_s = wait.as_secs(), "export failed; retrying with backoff");
                    retry_at = Some(Instant::now() + wait);
                }
                ExportEnd::Stopped => return,
            }
            continue;
        }
        let wait = retry_at.filter(|_| failures > 0).map_or(POLL, |t| {
            t.saturating_duration_since(Instant::now()).min(POLL)
        });
        let wait = waiting_since.map_or(wait, |t| wait.min(POLL.saturating_sub(t.elapsed())));
        tokio::select! {
            biased;
            _ = ctx.shutdown.changed() => return,
            _ = committed.changed() => {}
            _ = ctx.config.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How one export of the daemon ended, for its loop to decide what comes next.
enum ExportEnd {
    /// The target holds this content of the journal, or (true) some of it, the rest
    /// left for a later export.
    Done(Content, bool),
    Failed,
    Stopped,
}

/// One export of `target`, then the group's journal retention; nothing when the
/// journal's content is still `skip_if`, what the last export carried.
async fn export(
    cfg: &Arc<Config>,
    cg_name: &str,
    target: &str,
    handle: &GroupHandle,
    ctx: &Ctx,
    skip_if: Option<Content>,
) -> ExportEnd {
    let span = tracing::info_span!("export", cg = %cg_name, target = %target);
    let (c, n, t, s, stop) = (
        cfg.clone(),
        cg_name.to_string(),
        target.to_string(),
        span.clone(),
        ctx.stop.clone(),
    );
    let result = tokio::task::spawn_blocking(move || {
        s.in_scope(
            || -> crate::Result<(Content, Option<crate::export::TargetStatus>)> {
                let cg = c.group(&n)?;
                let journal = Journal::open(&c.journal_path(cg))?;
                let now = content(&journal);
                if skip_if == Some(now) {
                    return Ok((now, None));
                }
                let status = crate::export::export_target(
                    &c,
                    cg,
                    &t,
                    &journal,
                    crate::export::Flush::Due,
                    &StopWhen(&stop),
                )?;
                Ok((now, Some(status)))
            },
        )
    })
    .await;
    let (now, status) = match result {
        Ok(Ok((now, Some(st)))) => (now, st),
        Ok(Ok((now, None))) => return ExportEnd::Done(now, false),
        Ok(Err(e)) => {
            tracing::error!(parent: &span, error = %e, "export failed");
            ctx.metrics.target(cg_name, target, |m| m.errors += 1);
            return ExportEnd::Failed;
        }
        Err(panic) => {
            tracing::error!(parent: &span, error = %panic, "the export panicked");
            ctx.metrics.target(cg_name, target, |m| m.errors += 1);
            return ExportEnd::Failed;
        }
    };
    ctx.metrics.target(cg_name, target, |m| {
        m.exported_deltas += status.applied;
        m.exported_bytes += status.bytes;
        m.errors += u64::from(status.last_error.is_some());
    });
    if let Some(e) = &status.last_error {
        tracing::error!(parent: &span, cursor = status.cursor, error = %e, "export failed");
        return ExportEnd::Failed;
    }
    if status.stopped {
        tracing::info!(parent: &span, cursor = status.cursor, applied = status.applied,
            "export stopped at a delta boundary for shutdown");
        return ExportEnd::Stopped;
    }
    if status.applied > 0 || status.upkeep.synthetic_full.is_some() {
        tracing::info!(parent: &span, cursor = status.cursor, applied = status.applied,
            bytes = status.bytes, synthetic_full = ?status.upkeep.synthetic_full,
            deleted_objects = status.upkeep.deleted_objects,
            locked_objects = status.upkeep.locked_objects, "export done");
    }
    prune(cfg, cg_name, handle, ctx, &span).await;
    ExportEnd::Done(now, status.waiting > 0)
}

/// Journal retention after an export; skipped quietly when there is no policy.
async fn prune(
    cfg: &Arc<Config>,
    cg_name: &str,
    handle: &GroupHandle,
    ctx: &Ctx,
    span: &tracing::Span,
) {
    if !cfg
        .group(cg_name)
        .is_ok_and(|cg| cg.journal_retention.prunes())
    {
        return;
    }
    // A served split group's splitter holds the writer: it prunes between commits,
    // at most once a SPLIT_PRUNE_EVERY (each prune ends a batch of its early).
    let splitter = handle.splitter.lock().expect("never poisoned").clone();
    if let Some(jobs) = splitter {
        {
            let mut last = handle.last_split_prune.lock().expect("never poisoned");
            if last.is_some_and(|t| t.elapsed() < SPLIT_PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (c, n, s) = (cfg.clone(), cg_name.to_string(), span.clone());
        let job: crate::splitter::WriterJob = Box::new(move |w| {
            let pruned = s.in_scope(|| crate::export::prune_journal_with(&c, c.group(&n)?, w));
            let _ = tx.send(pruned);
        });
        let sent = jobs.send(job).is_ok();
        // Only the splitter's own sender may keep the channel open: once it stops,
        // the job is dropped and the wait below ends.
        drop(jobs);
        if sent {
            let mut shutdown = ctx.shutdown.clone();
            tokio::select! {
                r = rx => if let Ok(Err(e)) = r {
                    tracing::error!(parent: span, error = %e, "journal retention failed");
                },
                _ = shutdown.wait_for(|s| *s) => {}
            }
        }
        return;
    }
    let _writer = handle.writer.lock().await;
    let (c, n, s) = (cfg.clone(), cg_name.to_string(), span.clone());
    let result = tokio::task::spawn_blocking(move || {
        s.in_scope(|| crate::export::prune_journal(&c, c.group(&n)?, false))
    })
    .await;
    match result {
        Ok(Ok(_)) => {}
        // A cycle run from the CLI holds the journal; the next export prunes.
        Ok(Err(crate::Error::Locked { .. })) => {}
        Ok(Err(e)) => tracing::error!(parent: span, error = %e, "journal retention failed"),
        Err(panic) => tracing::error!(parent: span, error = %panic, "journal retention panicked"),
    }
}
