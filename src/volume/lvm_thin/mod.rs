//! The `lvm-thin` driver: volumes are LVM thin LVs; a snapshot is a thin snapshot of
//! each, and the diff comes from the thin pool's metadata (`thin_delta` on a reserved
//! metadata snapshot), so an incremental cycle reads only the blocks that changed.
//!
//! Every lvm2 and thin-provisioning-tools command runs through duct; a failure carries
//! its command line and stderr.
//!
//! **How atomic the group snapshot is.** lvm2 has no multi-LV snapshot: each
//! `lvcreate -s` suspends its own origin for the instant of the snapshot, one LV after
//! the other, so without hooks the set spans the few tens of milliseconds between the
//! first and the last. Each snapshot is crash-consistent; the set is consistent across
//! volumes only with the group's freeze/thaw hooks around it (the cycle runs them
//! around `snapshot`), e.g. `fsfreeze` of every file system on the group, or an
//! application's own quiesce.
//!
//! Layout: snapshot `TAG` of `VG/LV` is the thin LV `VG/LV-cascade-TAG`, read-only
//! (`-pr`) and with activation skip set, so nothing activates it at boot: it is
//! active only while a cycle reads it (created active, deactivated by `advance`, or
//! activated again by `open_volume` when something reads it later).
//! `STATE/lvm-snapshots/TAG.json` records the set; which snapshot LVs exist is
//! learnt from `lvs` (lvm2's metadata), never from `/dev`, where an inactive LV has
//! no node: after a reboot the snapshots are all inactive and still the next base.
//! The JSON is written after every LV exists; LVs of a tag without JSON are
//! leftovers of an interrupted snapshot, removed before that tag is tried again.
//!
//! **What a cycle costs.** lvm2 commands cost a device scan and lvm2's locks each
//! (about 0.1-0.3 s under emulation, more than an incremental cycle's data), so an
//! incremental cycle of N volumes runs 2N + 3: one `lvs` report (kept up to date by
//! the driver's own changes), `lvcreate` per volume, `thin_delta` per volume, one
//! `lvchange -an` and one `lvremove`. The pool's metadata-snapshot messages and the
//! new snapshots' thin ids go through device-mapper ioctls (`sys::dm_*`), not
//! `dmsetup`.
mod delta;
mod pool;
mod report;

use super::{SnapshotSet, SnapshotVolume, VolumeDriver};
use crate::clock::now_ns;
use crate::command;
use crate::config::{dm_name, ConsistencyGroup};
use crate::diff::{Change, ChangeKind, Changes};
use crate::error::{Error, Result};
use crate::progress::Progress;
use report::{Lv, Rows};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A pool whose metadata is fuller than this is refused a new snapshot: running out
/// of thin metadata stops every thin LV of the pool.
const METADATA_FULL_PERCENT: f64 = 80.0;

/// How long an lvm2 or thin-provisioning-tools command may run (cascade waiting on
/// it) before it is killed: far more than any of them takes on a healthy system; a
/// device that hangs would otherwise hang the cycle, and a frozen group with it.
const LVM_TIMEOUT: Duration = Duration::from_secs(120);

const ENV: &[(&str, &str)] = &[("LVM_SUPPRESS_FD_WARNINGS", "1")];

pub struct LvmThinDriver {
    /// Volume id, VG, LV.
    volumes: Vec<(String, String, String)>,
    dir: PathBuf,
    /// The `lvs` report of the group's VGs, fetched at the first need (a driver lives
    /// for one cycle) and updated by the driver's own lvcreate and lvremove.
    rows: Mutex<Option<Rows>>,
}

fn lvm_command(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn lvm(args: &[&str]) -> Result<String> {
    command::output(&lvm_command(args), ENV, LVM_TIMEOUT)
}

fn snap_name(lv: &str, tag: u64) -> String {
    format!("{lv}-cascade-{tag}")
}

impl LvmThinDriver {
    pub fn new(cg: &ConsistencyGroup, state_dir: &Path) -> LvmThinDriver {
        LvmThinDriver {
            volumes: cg
                .volumes
                .iter()
                .map(|v| {
                    let lv =
                        v.lv.as_deref()
                            .expect("validated: lvm-thin volumes have lv");
                    let (vg, name) = lv.split_once('/').expect("validated: VG/LV");
                    (v.id.clone(), vg.to_string(), name.to_string())
                })
                .collect(),
            dir: state_dir.join("lvm-snapshots"),
            rows: Mutex::new(None),
        }
    }

    fn manifest(&self, tag: u64) -> PathBuf {
        self.dir.join(format!("{tag}.json"))
    }

    fn vgs(&self) -> Vec<&str> {
        let mut vgs: Vec<&str> = self.volumes.iter().map(|(_, vg, _)| vg.as_str()).collect();
        vgs.sort_unstable();
        vgs.dedup();
        vgs
    }

    /// Runs `f` on the group's `lvs` rows, fetched first if this driver has none
    /// (or `fresh` asks for a new report).
    fn with_rows<T>(&self, fresh: bool, f: impl FnOnce(&mut Rows) -> Result<T>) -> Result<T> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if fresh || rows.is_none() {
            *rows = Some(Rows::fetch(&self.vgs())?);
        }
        f(rows.as_mut().expect("fetched above"))
    }

    /// Checks that every volume is a thin LV and its pool has metadata room; returns
    /// each volume's row.
    fn check_volumes(&self, rows: &Rows) -> Result<Vec<Lv>> {
        let mut out = Vec::new();
        for (id, vg, lv) in &self.volumes {
            let row = rows
                .find(vg, lv)
                .ok_or_else(|| Error::NotFound(format!("volume `{id}`: no LV {vg}/{lv}")))?;
            if row.segtype != "thin" || row.pool_lv.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "volume `{id}`: {vg}/{lv} is not a thin LV (segment type `{}`); the lvm-thin driver \
                     snapshots thin LVs, whose changes the pool's metadata records",
                    row.segtype
                )));
            }
            let used: f64 = rows
                .find(vg, &row.pool_lv)
                .and_then(|p| p.metadata_percent.parse().ok())
                .unwrap_or(0.0);
            if used >= METADATA_FULL_PERCENT {
                return Err(Error::InvalidArgument(format!(
                    "volume `{id}`: the metadata of thin pool {vg}/{} is {used:.1}% full; a snapshot \
                     could exhaust it and stop every LV of the pool. Extend it first \
                     (lvextend --poolmetadatasize +SIZE {vg}/{})",
                    row.pool_lv, row.pool_lv
                )));
            }
            out.push(row.clone());
        }
        Ok(out)
    }

    /// `VG/LV-cascade-TAG` of every volume whose snapshot `tag` exists per the rows.
    fn snapshots_of(&self, tag: u64, rows: &Rows) -> Vec<String> {
        self.volumes
            .iter()
            .filter(|(_, vg, lv)| rows.has_snapshot(vg, lv, tag))
            .map(|(_, vg, lv)| format!("{vg}/{}", snap_name(lv, tag)))
            .collect()
    }

    /// Removes the snapshot LVs of `tag` that exist, in one `lvremove`.
    fn remove_lvs_of(&self, tag: u64) -> Result<()> {
        let mut tries = 0;
        loop {
            let doomed = self.with_rows(tries > 0, |rows| Ok(self.snapshots_of(tag, rows)))?;
            if doomed.is_empty() {
                return Ok(());
            }
            let mut args = vec!["lvremove", "-q", "-y"];
            args.extend(doomed.iter().map(String::as_str));
            match lvm(&args) {
                // udev probes a new device for a moment after it appears; an LV held
                // open that way refuses removal, so look again and retry briefly.
                Err(Error::Command { stderr, .. })
                    if tries < 5 && (stderr.contains("in use") || stderr.contains("open")) =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    return self.with_rows(false, |rows| {
                        for (_, vg, lv) in &self.volumes {
                            rows.remove(vg, &snap_name(lv, tag));
                        }
                        Ok(())
                    })
                }
            }
        }
    }

    /// Creates snapshot `tag` of every volume, active for the cycle's read, and
    /// records the new LVs in the rows (their thin ids from the kernel's table).
    fn create(&self, tag: u64, origins: &[Lv]) -> Result<Vec<SnapshotVolume>> {
        let mut volumes = Vec::new();
        for ((id, vg, lv), origin) in self.volumes.iter().zip(origins) {
            let name = snap_name(lv, tag);
            lvm(&[
                "lvcreate",
                "-q",
                "-s",
                "-pr",
                "--setactivationskip",
                "y",
                "--ignoreactivationskip",
                "-n",
                &name,
                &format!("{vg}/{lv}"),
            ])?;
            let mut row = origin.clone();
            row.lv_name = name.clone();
            row.thin_id = thin_id(vg, &name)?;
            self.with_rows(false, |rows| {
                rows.add(row);
                Ok(())
            })?;
            volumes.push(SnapshotVolume {
                id: id.clone(),
                // A thin snapshot has its origin's size.
                size: origin.lv_size.parse().map_err(|_| {
                    Error::NotFound(format!("{vg}/{lv} has no size in the lvs report"))
                })?,
                path: PathBuf::from(format!("/dev/{vg}/{name}")),
                reflinked: false,
                live: false,
            });
        }
        Ok(volumes)
    }
}

/// The thin device id of active thin LV `VG/LV`, from its device-mapper table
/// (`thin POOL_DEV ID`).
fn thin_id(vg: &str, lv: &str) -> Result<String> {
    let dm = dm_name(vg, lv);
    let bad = |why: String| Error::Command {
        command: format!("dmsetup table {dm}"),
        status: "failed".into(),
        stderr: why,
    };
    let table = crate::sys::dm_table(&dm).map_err(|e| bad(e.to_string()))?;
    table
        .iter()
        .find(|(kind, _)| kind == "thin")
        .and_then(|(_, params)| params.split_whitespace().nth(1))
        .filter(|id| id.parse::<u32>().is_ok())
        .map(String::from)
        .ok_or_else(|| bad(format!("not a thin device: {table:?}")))
}

impl VolumeDriver for LvmThinDriver {
    fn name(&self) -> &'static str {
        "lvm-thin"
    }

    fn snapshot(&self, tag: u64) -> Result<SnapshotSet> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io("cannot create snapshot directory", &self.dir))?;
        let origins = self.with_rows(false, |rows| self.check_volumes(rows))?;
        self.remove_lvs_of(tag)?;
        let time_ns = now_ns();
        let result = self.create(tag, &origins).and_then(|volumes| {
            let set = SnapshotSet {
                tag,
                time_ns,
                volumes,
            };
            crate::fsutil::write_atomic(
                &self.manifest(tag),
                &serde_json::to_vec_pretty(&set).expect("snapshot set serialises"),
            )?;
            Ok(set)
        });
        if result.is_err() {
            // Look again: an lvcreate that failed may still have made its LV.
            let removed = self
                .with_rows(true, |_| Ok(()))
                .and_then(|_| self.remove_lvs_of(tag));
            if let Err(e) = removed {
                tracing::warn!(tag, error = %e, "could not remove the snapshots of a failed group snapshot");
            }
        }
        result
    }

    fn snapshots(&self) -> Result<Vec<u64>> {
        // A set whose LVs are gone (removed by hand) is no snapshot; an inactive one
        // (every one after a reboot) is.
        let tags = super::tags_in(&self.dir, ".json")?;
        self.with_rows(false, |rows| {
            Ok(tags
                .into_iter()
                .filter(|tag| self.snapshots_of(*tag, rows).len() == self.volumes.len())
                .collect())
        })
    }

    fn open_snapshot(&self, tag: u64) -> Result<SnapshotSet> {
        super::read_set(self.manifest(tag))
    }

    /// Activates the snapshot LV first if it is not (one read after a reboot, or
    /// after `advance` deactivated it).
    fn open_volume(&self, snap: &SnapshotSet, volume: usize) -> Result<std::fs::File> {
        let v = &snap.volumes[volume];
        if !v.path.exists() {
            let lv = format!("{}/{}", vg_of(&v.path)?, lv_of(&v.path)?);
            lvm(&["lvchange", "-q", "-ay", "--ignoreactivationskip", &lv])?;
        }
        std::fs::File::open(&v.path).map_err(Error::io("cannot open snapshot", &v.path))
    }

    fn changes<'a>(
        &'a self,
        old: Option<&'a SnapshotSet>,
        new: &'a SnapshotSet,
        volume: usize,
        _stop: &'a dyn Progress,
    ) -> Result<Changes<'a>> {
        let nv = &new.volumes[volume];
        let Some(ov) = old.and_then(|o| o.volumes.iter().find(|v| v.id == nv.id)) else {
            // No base: the whole volume. Zero chunks become Zero records as they are read.
            let whole = Change {
                offset: 0,
                len: nv.size,
                kind: ChangeKind::Data,
            };
            return Ok(Box::new((nv.size > 0).then_some(Ok(whole)).into_iter()));
        };
        let (vg, old_lv, new_lv) = (vg_of(&ov.path)?, lv_of(&ov.path)?, lv_of(&nv.path)?);
        let (o, n) = self.with_rows(false, |rows| {
            let row = |name: &str| {
                rows.find(&vg, name)
                    .cloned()
                    .ok_or_else(|| Error::NotFound(format!("snapshot {vg}/{name} is gone")))
            };
            Ok((row(&old_lv)?, row(&new_lv)?))
        })?;
        if o.pool_lv != n.pool_lv {
            return Err(Error::InvalidArgument(format!(
                "snapshots {vg}/{old_lv} and {vg}/{new_lv} are in different thin pools; their metadata cannot be diffed"
            )));
        }
        Ok(Box::new(pool::ThinDelta::start(
            &vg, &n.pool_lv, &o.thin_id, &n.thin_id, nv.size,
        )?))
    }

    /// Deactivates `new` (read for its delta; nothing reads it again unless asked)
    /// and retires `base`.
    fn advance(
        &self,
        base: Option<&SnapshotSet>,
        new: &SnapshotSet,
        _journal: &crate::journal::Journal,
    ) -> Result<()> {
        let lvs: Vec<String> = new
            .volumes
            .iter()
            .map(|v| Ok(format!("{}/{}", vg_of(&v.path)?, lv_of(&v.path)?)))
            .collect::<Result<_>>()?;
        let mut args = vec!["lvchange", "-q", "-an"];
        args.extend(lvs.iter().map(String::as_str));
        lvm(&args)?;
        base.map_or(Ok(()), |b| self.retire(b.tag))
    }

    fn retire(&self, tag: u64) -> Result<()> {
        self.remove_lvs_of(tag)?;
        match std::fs::remove_file(self.manifest(tag)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
                "cannot remove snapshot manifest",
                self.manifest(tag),
            )(e)),
            _ => Ok(()),
        }
    }
}

/// `/dev/VG/LV` → VG.
fn vg_of(path: &Path) -> Result<String> {
    path.parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not /dev/VG/LV", path.display())))
}

fn lv_of(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not /dev/VG/LV", path.display())))
}
