//! A split group under the daemon: served over NBD by its splitter
//! ([`crate::splitter`]) from the daemon's start to its stop. Its base delta and every
//! split delta wake the group's exporters as a cycle's commit does, and its journal
//! retention runs on the splitter's writer ([`GroupHandle::splitter`]).
//!
//! Serving that fails (the address is taken, a volume is missing, the journal cannot
//! be written) is retried with backoff; a reload that changes how the group is served
//! (its volumes, `splitter:`, hooks, journal) restarts it with the new settings, and
//! one that changes only its targets or retention does not touch it.
use super::backoff::backoff;
use super::daemon::{Ctx, GroupHandle};
use crate::config::{Config, ConsistencyGroup};
use crate::nbd::Listener;
use crate::progress::{StopAlso, StopWhen};
use crate::splitter::{self, Hooks};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How serving ended.
enum Served {
    /// The daemon is stopping.
    Stopped,
    /// A reload changed or removed the group, or it is no longer a split group.
    Changed,
    Failed(String),
}

/// Serves split group `name` until the daemon stops (false) or a reload changes the
/// group (true: the caller reads the config again).
pub(super) async fn serve(name: &str, handle: &Arc<GroupHandle>, ctx: &mut Ctx) -> bool {
    let mut failures = 0u32;
    loop {
        if *ctx.shutdown.borrow() {
            return false;
        }
        let cfg = ctx.config.borrow_and_update().clone();
        let Ok(cg) = cfg.group(name) else { return true };
        if cg.splitter.is_none() {
            return true;
        }
        let cg = cg.clone();
        let served = serve_once(&cfg, &cg, handle, ctx).await;
        *handle.splitter.lock().expect("never poisoned") = None;
        let why = match served {
            Served::Stopped => return false,
            Served::Changed => return true,
            Served::Failed(why) => why,
        };
        failures += 1;
        let wait = backoff(failures);
        tracing::error!(cg = %name, error = %why, failures, retry_in_s = wait.as_secs(),
            "the split group is not served; retrying with backoff");
        ctx.metrics.group(name, |m| m.split_failures += 1);
        tokio::select! {
            biased;
            _ = ctx.shutdown.changed() => return false,
            _ = ctx.config.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn serve_once(
    cfg: &Arc<Config>,
    cg: &ConsistencyGroup,
    handle: &Arc<GroupHandle>,
    ctx: &mut Ctx,
) -> Served {
    let addr = cg.splitter.as_ref().expect("a split group").listen();
    let listener = match Listener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => return Served::Failed(format!("cannot listen on {addr}: {e}")),
    };
    let bound = listener.local_addr().unwrap_or(addr);
    for v in &cg.volumes {
        tracing::info!(cg = %cg.name, volume = %v.id, uri = %crate::nbd::uri(&bound, &v.id), "serving");
    }
    let (jobs, jobs_rx) = tokio::sync::mpsc::unbounded_channel();
    *handle.splitter.lock().expect("never poisoned") = Some(jobs);
    let (h, n) = (handle.clone(), cg.name.clone());
    let metrics = ctx.metrics.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // A grid's split stream takes the grid's bookmarks while it serves.
    let shipping = match crate::grid::Grid::for_group(cfg, cg).await {
        Ok(Some((grid, l))) => {
            Some(grid.on_shipping(l, (**cfg).clone(), cg.clone(), stopped.clone()))
        }
        Ok(None) => None,
        Err(e) => return Served::Failed(e.to_string()),
    };
    let hooks = Hooks {
        committed: Some(Box::new(move |delta| {
            h.committed.send_replace(delta);
            metrics.group(&n, |m| m.split_deltas += 1);
        })),
        jobs: Some(jobs_rx),
        shipping,
    };
    // The base is a cycle: on a stop it may finish within the stop grace, as a
    // scheduled one may; a reload that changes the group abandons it at once.
    let (c, g, grace_over) = (cfg.clone(), cg.clone(), ctx.abandon.clone());
    let changed = Arc::new(AtomicBool::new(false));
    let base_changed = changed.clone();
    let span = tracing::info_span!("split", cg = %cg.name);
    let base = move |writer: &mut crate::journal::JournalWriter, hold: &dyn splitter::Hold| {
        span.in_scope(|| {
            let progress = StopAlso {
                progress: &StopWhen(&grace_over),
                flag: &base_changed,
            };
            crate::cycle::run_cycle_held(&c, &g, writer, &progress, Some(hold)).map(|r| r.delta)
        })
    };
    let run = splitter::run(cfg, cg, listener, base, stopped, hooks);
    tokio::pin!(run);
    let mut ending = None;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = ctx.shutdown.changed(), if ending.is_none() => {
                ending = Some(Served::Stopped);
                let _ = stop.send(true);
            }
            _ = ctx.config.changed(), if ending.is_none() => {
                let new = ctx.config.borrow_and_update().clone();
                if !new.group(&cg.name).is_ok_and(|n| serves_alike(cfg, cg, &new, n)) {
                    tracing::info!(cg = %cg.name, "the reload changed how the group is served: serving it again");
                    ending = Some(Served::Changed);
                    changed.store(true, Ordering::Relaxed);
                    let _ = stop.send(true);
                }
            }
        }
    };
    match (result, ending) {
        (Ok(r), ending) => {
            tracing::info!(cg = %cg.name, base_delta = ?r.base_delta, writes = r.shipped.writes,
                deltas = r.shipped.deltas, last_write = r.shipped.last_write, "split group stopped");
            ending.unwrap_or(Served::Failed("the splitter stopped by itself".into()))
        }
        // Stopped while the base was read: it kept nothing, the next start begins again.
        (Err(crate::Error::Stopped(why)), Some(ending)) => {
            tracing::info!(cg = %cg.name, %why, "stopped before the base was journalled");
            ending
        }
        // Stopping: whatever the splitter ended with, this task ends.
        (Err(e), Some(Served::Stopped)) => {
            tracing::warn!(cg = %cg.name, error = %e, "the split group stopped with an error");
            Served::Stopped
        }
        (Err(e), _) => Served::Failed(e.to_string()),
    }
}

/// Whether group `b` of `cb` is served as `a` of `ca` is: the same volumes, splitter,
/// hooks and journal. Targets and retention may differ.
fn serves_alike(ca: &Config, a: &ConsistencyGroup, cb: &Config, b: &ConsistencyGroup) -> bool {
    a.volumes == b.volumes
        && a.splitter == b.splitter
        && a.hooks == b.hooks
        && a.segment_size_mib == b.segment_size_mib
        && ca.journal_path(a) == cb.journal_path(b)
}
