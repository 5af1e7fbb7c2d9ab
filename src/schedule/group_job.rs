//! One consistency group's cycles under the daemon: wait for the next cron tick,
//! cycle, record the outcome, wake the group's exporters, repeat. A split group is
//! served instead ([`super::split_job`]).
//!
//! The tick is saved as `running` before the cycle starts (see [`GroupState`]), so a
//! daemon killed in the middle knows at its next start whether that tick was served.
//! At start-up, ticks that passed while no daemon ran are counted and, by the
//! schedule's `missed` policy, served by one cycle at once or skipped, with a log
//! line either way. A failed cycle is retried with backoff, but never later than the
//! next tick, which is a cycle anyway.
use super::backoff::backoff;
use super::daemon::{Ctx, GroupHandle};
use super::group_state::{CycleResult, GroupState};
use crate::config::Config;
use crate::config::Missed;
use crate::journal::Journal;
use crate::progress::StopWhen;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// What the loop will do next, and when.
enum Due {
    /// The cron tick at this time.
    Tick(DateTime<Utc>),
    /// A retry of the last tick's failed cycle, or the one catch-up cycle owed at
    /// start-up for ticks that passed unserved (`tick` is the newest of them).
    Owed {
        at: DateTime<Utc>,
        tick: DateTime<Utc>,
    },
}

pub async fn run(name: String, handle: Arc<GroupHandle>, mut ctx: Ctx) {
    let cfg = ctx.config.borrow().clone();
    // Reading the state and opening the journal (which checks an unfinished tail)
    // is blocking work: keep it off the workers that wake the other groups.
    let (c, n) = (cfg.clone(), name.clone());
    let Ok(Some((mut state, mut owed))) = tokio::task::spawn_blocking(move || {
        let cg = c.group(&n).ok()?;
        Some(start_up(&n, &c, cg))
    })
    .await
    else {
        return;
    };
    save(&state, &cfg, &name).await;
    if state.last_result == Some(CycleResult::Ok) {
        let t = state.last_finished.map_or(0, |t| t.timestamp_millis());
        ctx.metrics
            .group(&name, |m| m.last_success_timestamp = t as f64 / 1000.0);
    }

    loop {
        let cfg = ctx.config.borrow_and_update().clone();
        // A group dropped from the config by a reload ends its task.
        let Ok(cg) = cfg.group(&name) else { return };
        if cg.splitter.is_some() {
            if !super::split_job::serve(&name, &handle, &mut ctx).await {
                return;
            }
            continue;
        }
        let Some(schedule) = cg.schedule.clone() else {
            // Not cycled by the daemon; wait for a reload that gives it a schedule.
            tokio::select! {
                biased;
                _ = ctx.shutdown.changed() => return,
                _ = ctx.config.changed() => continue,
            }
        };
        let now = Utc::now();
        let after = state.last_tick.map_or(now, |t| t.max(now));
        let Some(tick) = schedule.next_after(after) else {
            tracing::warn!(cg = %name, schedule = %schedule.describe(), "the schedule never fires again");
            tokio::select! {
                biased;
                _ = ctx.shutdown.changed() => return,
                _ = ctx.config.changed() => continue,
            }
        };
        let due = match owed.take().or_else(|| retry(&state)) {
            Some(Due::Owed { at, tick: t }) if at < tick => Due::Owed { at, tick: t },
            _ => Due::Tick(tick),
        };
        let at = match &due {
            Due::Tick(t) => *t,
            Due::Owed { at, .. } => *at,
        };
        if state.next != Some(at) {
            state.next = Some(at);
            save(&state, &cfg, &name).await;
        }
        tokio::select! {
            // Shutdown first: a stopping daemon starts no cycle, even an overdue one.
            biased;
            _ = ctx.shutdown.changed() => return,
            // The schedule may have changed: work out the next tick again.
            _ = ctx.config.changed() => {
                if let Due::Owed { .. } = due {
                    owed = Some(due);
                }
                continue;
            }
            _ = sleep_until(at) => {}
        }
        let started = Utc::now();
        let (tick, delay) = match due {
            Due::Tick(t) => (t, Some(started - t)),
            Due::Owed { tick, .. } => (tick, None),
        };
        if !cycle(&name, &cfg, &handle, &mut state, tick, delay, &ctx).await {
            return;
        }
        // Ticks that came while this cycle ran are not made up for.
        let (skipped, _) = schedule.ticks_between(tick.max(started), Utc::now());
        if skipped > 0 {
            tracing::warn!(cg = %name, skipped, schedule = %schedule.describe(),
                "the cycle outlasted the schedule's interval; ticks that came meanwhile were skipped");
            ctx.metrics.group(&name, |m| m.ticks_skipped += skipped);
        }
    }
}

/// The group's saved state, settled after a crash, and the catch-up cycle owed for
/// ticks that passed while no daemon ran.
fn start_up(
    name: &str,
    cfg: &Config,
    cg: &crate::config::ConsistencyGroup,
) -> (GroupState, Option<Due>) {
    let mut state = GroupState::load(cfg, cg);
    let journal = Journal::open(&cfg.journal_path(cg)).ok();
    state.settle_after_crash(journal.as_ref());
    let interrupted = state.last_result == Some(CycleResult::Interrupted);
    if interrupted {
        tracing::warn!(cg = %name, started = ?state.last_started,
            "the last cycle was interrupted by a stop or crash; it left nothing in the journal");
    }
    let owed = cg
        .schedule
        .as_ref()
        .and_then(|s| missed_at_start(name, s, &mut state, interrupted));
    (state, owed)
}

/// A retry of the last tick's cycle, if that cycle failed. A failure that belongs
/// to an older tick (the daemon skipped ticks since, by policy) is not retried.
fn retry(state: &GroupState) -> Option<Due> {
    let (tick, started, finished) = (state.last_tick?, state.last_started?, state.last_finished?);
    (state.last_result == Some(CycleResult::Failed) && started >= tick).then(|| Due::Owed {
        at: finished + backoff(state.failures),
        tick,
    })
}

/// Sleeps until the wall clock reads `at`. The wait is taken in steps of at most a
/// minute and measured again after each, so a suspended machine or a stepped clock
/// moves the wake-up with the wall clock instead of adding to it.
async fn sleep_until(at: DateTime<Utc>) {
    const STEP: std::time::Duration = std::time::Duration::from_secs(60);
    while let Ok(left) = (at - Utc::now()).to_std() {
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(STEP)).await;
    }
}

/// At start-up: the ticks that passed since the last one served, and what the
/// `missed` policy makes of them.
fn missed_at_start(
    name: &str,
    schedule: &crate::config::Schedule,
    state: &mut GroupState,
    interrupted: bool,
) -> Option<Due> {
    let last = state.last_tick?;
    let now = Utc::now();
    let (passed, newest) = schedule.ticks_between(last, now);
    let missed = passed + u64::from(interrupted);
    if missed == 0 {
        return None;
    }
    let newest = newest.unwrap_or(last);
    match schedule.missed {
        Missed::RunOnce => {
            tracing::info!(cg = %name, missed, since = %last,
                "scheduled cycles were missed while the daemon was not running; running one now (missed: run-once)");
            Some(Due::Owed {
                at: now,
                tick: newest,
            })
        }
        Missed::Skip => {
            tracing::warn!(cg = %name, missed, since = %last,
                "scheduled cycles were missed while the daemon was not running; skipping them (missed: skip)");
            state.last_tick = Some(newest);
            None
        }
    }
}

/// Runs one cycle for `tick` and records how it went. Returns false, having done
/// nothing, when the daemon began stopping while the cycle waited for the journal.
async fn cycle(
    name: &str,
    cfg: &Arc<Config>,
    handle: &GroupHandle,
    state: &mut GroupState,
    tick: DateTime<Utc>,
    delay: Option<chrono::TimeDelta>,
    ctx: &Ctx,
) -> bool {
    // Cycles and prunes of this journal take turns inside the daemon; a daemon that
    // began stopping while this one waited its turn starts nothing.
    let writer = handle.writer.lock().await;
    if *ctx.shutdown.borrow() {
        return false;
    }
    let started = Utc::now();
    let delay_ms = delay.map(|d| d.num_microseconds().unwrap_or(0).max(0) as f64 / 1000.0);
    state.last_tick = Some(tick);
    state.last_started = Some(started);
    state.last_result = Some(CycleResult::Running);
    state.last_delay_ms = delay_ms.map(|d| d as u64);
    state.next = None;
    save(state, cfg, name).await;
    let span = tracing::info_span!("cycle", cg = %name);
    tracing::info!(parent: &span, tick = %tick, delay_ms, "cycle started");
    if let Some(d) = delay_ms {
        ctx.metrics
            .group(name, |m| m.last_start_delay_seconds = d / 1000.0);
    }

    let (c, n, s) = (cfg.clone(), name.to_string(), span.clone());
    let abandon = ctx.abandon.clone();
    let result = tokio::task::spawn_blocking(move || {
        s.in_scope(|| {
            let cg = c.group(&n)?;
            let report = crate::cycle::run_cycle(&c, cg, &StopWhen(&abandon))?;
            // A group without targets is pruned here; one with targets after exports.
            if cg.targets.is_empty() && cg.journal_retention.prunes() {
                crate::export::prune_journal(&c, cg, false)?;
            }
            Ok::<_, crate::Error>(report)
        })
    })
    .await;
    drop(writer);
    let finished = Utc::now();
    let seconds = (finished - started).num_milliseconds().max(0) as f64 / 1000.0;
    state.last_finished = Some(finished);
    state.last_duration_ms = Some((seconds * 1000.0) as u64);
    let failure = match result {
        Ok(Ok(r)) => {
            tracing::info!(parent: &span, delta = r.delta, full = r.full, changed_bytes = r.changed_bytes,
                stored_bytes = r.stored_bytes, ms = r.total_ms, "cycle committed");
            state.last_result = Some(CycleResult::Ok);
            state.last_delta = Some(r.delta);
            state.last_changed_bytes = Some(r.changed_bytes);
            state.last_error = None;
            state.failures = 0;
            ctx.metrics.group(name, |m| {
                m.cycles_ok += 1;
                m.changed_bytes_total += r.changed_bytes;
                m.last_success_timestamp = finished.timestamp_millis() as f64 / 1000.0;
            });
            handle.committed.send_replace(r.delta);
            None
        }
        Ok(Err(e @ crate::Error::Stopped(_))) => {
            tracing::warn!(parent: &span, error = %e, "cycle abandoned for the stop");
            state.last_result = Some(CycleResult::Interrupted);
            state.last_error = Some(e.to_string());
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!("the cycle panicked: {panic}")),
    };
    if let Some(e) = failure {
        state.last_result = Some(CycleResult::Failed);
        state.last_error = Some(e.clone());
        state.failures += 1;
        let retry_in = backoff(state.failures);
        tracing::error!(parent: &span, error = %e, failures = state.failures,
            retry_in_s = retry_in.as_secs(), "cycle failed; it is retried with backoff or at the next tick");
        ctx.metrics.group(name, |m| m.cycles_failed += 1);
    }
    ctx.metrics.group(name, |m| {
        m.cycle_seconds_total += seconds;
        m.last_cycle_seconds = seconds;
    });
    save(state, cfg, name).await;
    true
}

/// Saves the group's state, off the async workers (it fsyncs). A state that cannot be
/// saved is logged, not fatal: the cycle itself is in the journal, and the next save
/// may work.
async fn save(state: &GroupState, cfg: &Arc<Config>, name: &str) {
    let (st, c, n) = (state.clone(), cfg.clone(), name.to_string());
    let saved = tokio::task::spawn_blocking(move || match c.group(&n) {
        Ok(cg) => st.save(&c, cg),
        Err(_) => Ok(()),
    })
    .await;
    if let Ok(Err(e)) = saved {
        tracing::error!(cg = %name, error = %e, "cannot save the schedule state");
    }
}
