//! One cycle of a consistency group: freeze, snapshot every volume, thaw, diff against
//! the previous snapshot set, journal the changes as one delta, retire the old set.
//!
//! Ordering for crash safety: the new snapshot is durable before the delta commits,
//! and the old snapshot is retired only after. So at any crash the snapshot tagged
//! with the journal's last delta exists (it is the next base); snapshots with other
//! tags are leftovers, removed at the start of the next cycle.
use crate::config::{Config, ConsistencyGroup};
use crate::diff::ChangeKind;
use crate::error::{Error, Result};
use crate::hooks;
use crate::journal::record::VolumeInfo;
use crate::journal::{JournalWriter, Tail};
use crate::volume::{driver_for, SnapshotSet, VolumeDriver};
use serde::Serialize;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const READ_CHUNK: usize = 1 << 20;

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
    pub snapshot_ms: u64,
    pub total_ms: u64,
    /// An unfinished tail from an interrupted earlier cycle, cut off before this one.
    pub recovered_tail: Option<Tail>,
}

/// Runs one cycle of `cg` now.
pub fn run_cycle(cfg: &Config, cg: &ConsistencyGroup) -> Result<CycleReport> {
    let started = Instant::now();
    let mut writer = JournalWriter::open(&cfg.journal_path(cg), cg.segment_size_mib << 20)?;
    let driver = driver_for(cg, &cfg.state_path(cg))?;
    let base_tag = writer.journal().last_delta();
    let tag = writer.next_delta_id();
    for leftover in driver.snapshots()?.into_iter().filter(|t| *t != base_tag) {
        tracing::info!(cg = %cg.name, tag = leftover, "removing a snapshot left by an interrupted cycle");
        driver.retire(leftover)?;
    }
    let base = match base_tag {
        0 => None,
        t if driver.snapshots()?.contains(&t) => Some(driver.open_snapshot(t)?),
        t => {
            tracing::warn!(cg = %cg.name, delta = t, "the snapshot of the last delta is gone; this cycle journals every volume in full");
            None
        }
    };
    // A volume added to or removed from the group since the base also needs a full delta.
    let base = base.filter(|b| {
        b.volumes
            .iter()
            .map(|v| &v.id)
            .eq(cg.volumes.iter().map(|v| &v.id))
    });

    let snap_started = Instant::now();
    let new = snapshot_group(cg, driver.as_ref(), tag)?;
    let snapshot_ms = snap_started.elapsed().as_millis() as u64;

    let journalled = journal_delta(&mut writer, driver.as_ref(), base.as_ref(), &new);
    let (entry, volumes) = match journalled {
        Ok(v) => v,
        Err(e) => {
            if let Err(r) = driver.retire(tag) {
                tracing::warn!(error = %r, "could not remove the snapshot of a failed cycle; the next cycle will");
            }
            return Err(e);
        }
    };
    if let Some(b) = base {
        driver.retire(b.tag)?;
    }
    Ok(CycleReport {
        cg: cg.name.clone(),
        delta: entry.delta,
        full: entry.flags & crate::journal::record::FLAG_FULL != 0,
        time: crate::journal::format_time(entry.time_ns),
        volumes,
        changed_bytes: entry.changed_bytes,
        stored_bytes: entry.stored_bytes,
        snapshot_ms,
        total_ms: started.elapsed().as_millis() as u64,
        recovered_tail: writer.recovered_tail().cloned(),
    })
}

/// Freeze, snapshot, thaw; thaw runs even when the snapshot fails.
fn snapshot_group(
    cg: &ConsistencyGroup,
    driver: &dyn VolumeDriver,
    tag: u64,
) -> Result<SnapshotSet> {
    if let Some(freeze) = &cg.hooks.freeze {
        hooks::run(freeze)?;
    }
    let snap = driver.snapshot(tag);
    let thawed = cg.hooks.thaw.as_ref().map_or(Ok(()), |t| hooks::run(t));
    match (snap, thawed) {
        (Ok(s), Ok(())) => Ok(s),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => {
            // Without a successful thaw we cannot say the snapshot is consistent.
            driver.retire(tag)?;
            Err(e)
        }
    }
}

fn journal_delta(
    writer: &mut JournalWriter,
    driver: &dyn VolumeDriver,
    base: Option<&SnapshotSet>,
    new: &SnapshotSet,
) -> Result<(crate::journal::DeltaEntry, Vec<VolumeReport>)> {
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
        for change in driver.changes(base, new, i)? {
            let change = change?;
            report.changed_bytes += change.len;
            match change.kind {
                ChangeKind::Zero => delta.zero(i as u16, change.offset, change.len)?,
                ChangeKind::Data => {
                    let mut at = change.offset;
                    while at < change.end() {
                        let n = (change.end() - at).min(READ_CHUNK as u64) as usize;
                        file.read_exact_at(&mut buf[..n], at)
                            .map_err(Error::io("cannot read snapshot", &v.path))?;
                        report.read_bytes += n as u64;
                        delta.data(i as u16, at, &buf[..n])?;
                        at += n as u64;
                    }
                }
            }
        }
        reports.push(report);
    }
    Ok((delta.commit()?, reports))
}
