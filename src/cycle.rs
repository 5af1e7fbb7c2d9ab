//! One cycle of a consistency group: freeze, snapshot every volume, thaw, diff against
//! the previous snapshot set, journal the changes as one delta, advance the new set to
//! be the next base and retire the old one.
//!
//! Ordering for crash safety: the new snapshot exists before the delta commits, and
//! the old one is retired only by `advance`, after the commit; a cycle that fails
//! retires its new snapshot only when the journal shows its delta did not commit
//! (an index append can fail after the commit was durable). So at any crash the
//! snapshot tagged with the journal's last delta exists (it is the next base, finished
//! by `advance` again if the crash interrupted it); snapshots with other tags are
//! leftovers, removed at the start of the next cycle.
use crate::command;
use crate::config::{Config, ConsistencyGroup};
use crate::diff::ChangeKind;
use crate::error::Error;
use crate::error::Result;
use crate::journal::record::VolumeInfo;
use crate::journal::{journal_changes, Journal, JournalWriter, Tail, READ_CHUNK};
use crate::progress::{Progress, StopAlso};
use crate::splitter::Hold;
use crate::volume::{driver_for, SnapshotSet, VolumeDriver};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct VolumeReport {
    pub id: String,
    pub size: u64,
    /// Bytes the diff named as changed (data and zeroed).
    pub changed_bytes: u64,
    /// Bytes read from the snapshot to journal them.
    pub read_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct CycleReport {
    pub cg: String,
    pub delta: u64,
    pub full: bool,
    pub time: String,
    pub volumes: Vec<VolumeReport>,
    pub changed_bytes: u64,
    pub stored_bytes: u64,
    /// Freeze, snapshot, thaw.
    pub snapshot_ms: u64,
    /// Diff, read the changes, journal and commit them.
    pub diff_ms: u64,
    /// Make the new snapshot the next base and retire the previous one.
    pub advance_ms: u64,
    pub total_ms: u64,
    /// An unfinished tail from an interrupted earlier cycle, cut off before this one.
    pub recovered_tail: Option<Tail>,
}

/// Runs one cycle of `cg` now, telling `progress` the bytes read from the new snapshot
/// while they are journalled, in one phase, "cycle". Its total, the Data bytes the diff names, is
/// known up front for volumes journalled in full (a first cycle, the long one: their
/// allocated ranges, found from metadata); an incremental diff may cost as much as the
/// reads (a block comparison), so it is not run twice: its ranges add to the total as
/// they are read.
pub fn run_cycle(
    cfg: &Config,
    cg: &ConsistencyGroup,
    progress: &dyn Progress,
) -> Result<CycleReport> {
    let mut writer = JournalWriter::open(&cfg.journal_path(cg), cg.segment_size_mib << 20)?;
    run_cycle_held(cfg, cg, &mut writer, progress, None)
}

/// `run_cycle` on a journal the caller holds open, the base of a split group: the
/// splitter keeps the writer afterwards, so no other writer gets in between, and
/// `hold` keeps the group's writes back while the snapshot is captured (inside the
/// freeze hook, if any), as the freeze hook does for applications.
pub fn run_cycle_held(
    cfg: &Config,
    cg: &ConsistencyGroup,
    writer: &mut JournalWriter,
    progress: &dyn Progress,
    hold: Option<&dyn Hold>,
) -> Result<CycleReport> {
    let started = Instant::now();
    let driver = driver_for(cg, &cfg.state_path(cg))?;
    let base_tag = writer.journal().last_delta();
    let tag = writer.next_delta_id();
    let base = open_base(cg, driver.as_ref(), writer.journal())?;
    for leftover in driver.snapshots()?.into_iter().filter(|t| *t != base_tag) {
        tracing::info!(cg = %cg.name, tag = leftover, "removing a snapshot left by an interrupted cycle");
        driver.retire(leftover)?;
    }

    let snap_started = Instant::now();
    let mut frozen = Frozen::new(cg, hold)?;
    let abandoned = frozen.abandoned.clone();
    // The caller's progress, asking to stop also once max-freeze has passed.
    let progress = &StopAlso {
        progress,
        flag: &abandoned,
    };
    let new = driver.snapshot(tag);
    // A live snapshot reads the volumes themselves, so they stay frozen until the
    // delta is journalled; a captured one lets them go at once.
    let new = match new.and_then(|n| {
        if frozen.abandoned() {
            Err(frozen.too_long())
        } else if n.is_live() {
            Ok(n)
        } else {
            frozen.thaw().map(|_| n)
        }
    }) {
        Ok(n) => n,
        Err(e) => {
            drop(frozen);
            driver.retire(tag)?;
            return Err(e);
        }
    };
    let snapshot_ms = snap_started.elapsed().as_millis() as u64;

    let diff_started = Instant::now();
    let journalled = journal_delta(
        writer,
        driver.as_ref(),
        base.as_ref(),
        &new,
        &mut || frozen.thaw(),
        progress,
    )
    .map_err(|e| {
        if frozen.abandoned() {
            frozen.too_long()
        } else {
            e
        }
    });
    drop(frozen);
    let diff_ms = diff_started.elapsed().as_millis() as u64;
    let (entry, volumes) = match journalled {
        Ok(v) => v,
        Err(e) => {
            // The writer's own view: an index append that failed after the commit
            // leaves the delta in it; a commit that failed took its records away.
            if writer.journal().last_delta() >= tag {
                tracing::warn!(cg = %cg.name, delta = tag, error = %e,
                    "the delta is committed though the cycle failed after its commit; its snapshot stays the next base");
            } else if let Err(r) = driver.retire(tag) {
                tracing::warn!(error = %r, "could not remove the snapshot of a failed cycle; the next cycle will");
            }
            return Err(e);
        }
    };
    let advance_started = Instant::now();
    driver.advance(base.as_ref(), &new, writer.journal())?;
    let advance_ms = advance_started.elapsed().as_millis() as u64;
    Ok(CycleReport {
        cg: cg.name.clone(),
        delta: entry.delta,
        full: entry.flags & crate::journal::record::FLAG_FULL != 0,
        time: crate::clock::format_time(entry.time_ns),
        volumes,
        changed_bytes: entry.changed_bytes,
        stored_bytes: entry.stored_bytes,
        snapshot_ms,
        diff_ms,
        advance_ms,
        total_ms: started.elapsed().as_millis() as u64,
        recovered_tail: writer.recovered_tail().cloned(),
    })
}

/// The snapshot the last committed delta was taken from, finishing its `advance` if
/// a crash interrupted it. None means the next delta must be full: no delta yet, the
/// snapshot is gone, or the group's volumes changed.
fn open_base(
    cg: &ConsistencyGroup,
    driver: &dyn VolumeDriver,
    journal: &Journal,
) -> Result<Option<SnapshotSet>> {
    let last = journal.last_delta();
    let tags = driver.snapshots()?;
    if last == 0 {
        return Ok(None);
    }
    if journal.delta(last)?.writes.is_some() {
        // The snapshot before the writes does not know them: a diff against it could
        // miss a block written and then written back (docs/journal-format.md).
        tracing::info!(cg = %cg.name, delta = last, "split deltas follow the last snapshot; this cycle journals every volume in full");
        return Ok(None);
    }
    if !tags.contains(&last) {
        tracing::warn!(cg = %cg.name, delta = last, "the snapshot of the last delta is gone; this cycle journals every volume in full");
        return Ok(None);
    }
    let mut base = driver.open_snapshot(last)?;
    if base.is_live() {
        let prev = if tags.contains(&(last - 1)) {
            Some(driver.open_snapshot(last - 1)?)
        } else {
            None
        };
        tracing::info!(cg = %cg.name, delta = last, "finishing the snapshot of the last delta, interrupted after its commit");
        if let Err(e) = driver.advance(prev.as_ref(), &base, journal) {
            tracing::warn!(cg = %cg.name, delta = last, error = %e, "cannot finish the last snapshot; this cycle journals every volume in full");
            driver.retire(last)?;
            return Ok(None);
        }
        base = driver.open_snapshot(last)?;
    }
    // A volume added to or removed from the group since the base needs a full delta.
    let same = base
        .volumes
        .iter()
        .map(|v| &v.id)
        .eq(cg.volumes.iter().map(|v| &v.id));
    Ok(same.then_some(base))
}

/// A thaw hook not yet run. The cycle, its max-freeze watchdog and a daemon exiting on
/// a second signal share it; whoever takes it first runs it, once.
struct PendingThaw {
    argv: Mutex<Option<Vec<String>>>,
    timeout: Duration,
}

impl PendingThaw {
    fn run(&self) -> Result<()> {
        let argv = self.argv.lock().unwrap_or_else(|e| e.into_inner()).take();
        argv.map_or(Ok(()), |a| command::run(&a, self.timeout))
    }
}

/// Every group frozen now, in this process.
static FROZEN: Mutex<Vec<Weak<PendingThaw>>> = Mutex::new(Vec::new());

/// Runs the thaw hook of every group frozen now. For an exit that cannot wait for
/// the cycles (the daemon's second stop signal): nothing else unfreezes them.
pub fn thaw_frozen_groups() {
    let pending: Vec<_> = FROZEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for p in pending {
        if let Err(e) = p.run() {
            tracing::error!(error = %e, "thaw hook failed on exit");
        }
    }
}

/// The group's freeze hook has run and its thaw hook has not. Thaw runs at the latest
/// when this is dropped, whatever failed in between, or when the group has been
/// frozen for `hooks.max-freeze`: then a watchdog thread thaws it (whatever the cycle
/// is blocked in) and the cycle is abandoned at its next step.
struct Frozen<'h> {
    cg: String,
    /// A split group's writers, held after the freeze hook and released before thaw.
    hold: Option<&'h dyn Hold>,
    pending: Arc<PendingThaw>,
    limit: Duration,
    abandoned: Arc<AtomicBool>,
    watchdog: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl<'h> Frozen<'h> {
    /// Runs the freeze hook, then takes `hold`. If the hook fails, the thaw hook runs
    /// all the same (when the guard drops): a freeze that failed part way may have
    /// frozen something.
    fn new(cg: &ConsistencyGroup, hold: Option<&'h dyn Hold>) -> Result<Frozen<'h>> {
        let pending = Arc::new(PendingThaw {
            argv: Mutex::new(cg.hooks.thaw.clone()),
            timeout: cg.hooks.timeout(),
        });
        let mut frozen = Frozen {
            cg: cg.name.clone(),
            hold: None,
            pending,
            limit: cg.hooks.max_freeze(),
            abandoned: Arc::default(),
            watchdog: None,
        };
        let Some(freeze) = &cg.hooks.freeze else {
            frozen.take(hold)?;
            return Ok(frozen);
        };
        FROZEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&frozen.pending));
        let (tx, rx) = mpsc::channel::<()>();
        let (pending, abandoned, limit, name) = (
            frozen.pending.clone(),
            frozen.abandoned.clone(),
            frozen.limit,
            cg.name.clone(),
        );
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                abandoned.store(true, Ordering::Relaxed);
                tracing::error!(cg = %name, max_freeze_s = limit.as_secs_f64(),
                    "the group stayed frozen past max-freeze: thawing it and abandoning the cycle");
                if let Err(e) = pending.run() {
                    tracing::error!(cg = %name, error = %e, "thaw hook failed after max-freeze");
                }
            }
        });
        frozen.watchdog = Some((tx, thread));
        command::run(freeze, cg.hooks.timeout())?;
        frozen.take(hold)?;
        Ok(frozen)
    }

    fn take(&mut self, hold: Option<&'h dyn Hold>) -> Result<()> {
        if let Some(h) = hold {
            // Held from the first step, so a failing hold is released on drop too.
            self.hold = Some(h);
            h.hold()?;
        }
        Ok(())
    }

    /// Whether max-freeze has passed: the group is thawed and the cycle must stop.
    fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// The error of a cycle abandoned for max-freeze.
    fn too_long(&self) -> Error {
        Error::FrozenTooLong {
            cg: self.cg.clone(),
            limit: self.limit,
        }
    }

    /// Runs the thaw hook now. Without a successful thaw the capture cannot be called
    /// consistent, so its error fails the cycle, as does a max-freeze that passed.
    fn thaw(&mut self) -> Result<()> {
        if let Some(h) = self.hold.take() {
            h.release();
        }
        if let Some((tx, thread)) = self.watchdog.take() {
            drop(tx);
            let _ = thread.join();
        }
        self.pending.run()?;
        if self.abandoned() {
            return Err(self.too_long());
        }
        Ok(())
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.thaw() {
            if !self.abandoned() {
                tracing::error!(error = %e, "thaw hook failed after an earlier error");
            }
        }
        FROZEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| {
                w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.pending))
            });
    }
}

/// Journals the changes from `base` to `new` as one delta and commits it;
/// `before_commit` runs after the last extent (the cycle thaws the group there).
/// `progress` hears of the bytes read from `new` (see [`run_cycle`]).
pub fn journal_delta(
    writer: &mut JournalWriter,
    driver: &dyn VolumeDriver,
    base: Option<&SnapshotSet>,
    new: &SnapshotSet,
    before_commit: &mut dyn FnMut() -> Result<()>,
    progress: &dyn Progress,
) -> Result<(crate::journal::DeltaEntry, Vec<VolumeReport>)> {
    let full = |v: &crate::volume::SnapshotVolume| {
        base.is_none_or(|b| b.volumes.iter().all(|o| o.id != v.id))
    };
    // A metadata pass over the volumes read in full, only to know the total up front.
    let mut total = 0;
    if progress.watched() {
        for (i, _) in new.volumes.iter().enumerate().filter(|(_, v)| full(v)) {
            for change in driver.changes(base, new, i, progress)? {
                let change = change?;
                if change.kind == ChangeKind::Data {
                    total += change.len;
                }
            }
        }
    }
    progress.start("cycle", total);
    let infos = new
        .volumes
        .iter()
        .map(|v| VolumeInfo {
            id: v.id.clone(),
            size: v.size,
        })
        .collect();
    let mut delta = writer.begin_delta(new.time_ns, infos, base.is_none())?;
    let mut reports = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    for (i, v) in new.volumes.iter().enumerate() {
        let file = driver.open_volume(new, i)?;
        let mut report = VolumeReport {
            id: v.id.clone(),
            size: v.size,
            changed_bytes: 0,
            read_bytes: 0,
        };
        // Bytes past the old end read as zeros now; a target may still hold whatever
        // it had there (a device, a file that was longer), so say so explicitly.
        if let Some(old) = base
            .and_then(|b| b.volumes.iter().find(|o| o.id == v.id))
            .filter(|o| o.size < v.size)
        {
            delta.zero(i as u16, old.size, v.size - old.size)?;
            report.changed_bytes += v.size - old.size;
        }
        let found = Found(progress);
        let (changed, read) = journal_changes(
            &mut delta,
            i as u16,
            &file,
            &v.path,
            driver.changes(base, new, i, progress)?,
            &mut buf,
            if full(v) { progress } else { &found },
        )?;
        report.changed_bytes += changed;
        report.read_bytes += read;
        reports.push(report);
    }
    before_commit()?;
    let entry = delta.commit()?;
    progress.finish();
    Ok((entry, reports))
}

/// Progress of reads whose total was not known up front: each read adds to the total
/// as it adds to what is done.
struct Found<'a>(&'a dyn Progress);

impl Progress for Found<'_> {
    fn start(&self, phase: &str, total_bytes: u64) {
        self.0.start(phase, total_bytes)
    }
    fn add_total(&self, bytes: u64) {
        self.0.add_total(bytes)
    }
    fn inc(&self, bytes: u64) {
        self.0.add_total(bytes);
        self.0.inc(bytes)
    }
    fn finish(&self) {
        self.0.finish()
    }
    fn stop_requested(&self) -> bool {
        self.0.stop_requested()
    }
}
