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
//! Layout: snapshot `TAG` of `VG/LV` is the thin LV `VG/LV-cascade-TAG`, created with
//! activation skip off so it is readable at once, and `STATE/lvm-snapshots/TAG.json`
//! records the set. The JSON is written after every LV exists; LVs of a tag without
//! JSON are leftovers of an interrupted snapshot, removed before that tag is tried again.
use super::{SnapshotSet, SnapshotVolume, VolumeDriver};
use crate::clock::now_ns;
use crate::command;
use crate::config::ConsistencyGroup;
use crate::diff::{Change, ChangeKind, Changes, RunBuilder};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A pool whose metadata is fuller than this is refused a new snapshot: running out
/// of thin metadata stops every thin LV of the pool.
const METADATA_FULL_PERCENT: f64 = 80.0;

const ENV: &[(&str, &str)] = &[("LVM_SUPPRESS_FD_WARNINGS", "1")];

/// How long an lvm2 or thin-provisioning-tools command may run before it is killed:
/// far more than any of them takes on a healthy system; a device that hangs would
/// otherwise hang the cycle, and a frozen group with it.
const LVM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub struct LvmThinDriver {
    /// Volume id, VG, LV.
    volumes: Vec<(String, String, String)>,
    dir: PathBuf,
}

/// One row of `lvs --reportformat json`.
#[derive(Debug, Clone, Deserialize)]
struct Lv {
    lv_name: String,
    vg_name: String,
    #[serde(default)]
    segtype: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    thin_id: String,
    #[serde(default)]
    lv_size: String,
    #[serde(default)]
    metadata_percent: String,
}

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportLvs>,
}

#[derive(Deserialize)]
struct ReportLvs {
    lv: Vec<Lv>,
}

fn lvm(args: &[&str]) -> Result<String> {
    let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    command::output(&argv, ENV, LVM_TIMEOUT)
}

/// `lvs` rows for `names` (VG/LV or VG); names that do not exist are errors.
fn lvs(names: &[&str]) -> Result<Vec<Lv>> {
    let mut args = vec![
        "lvs",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "lv_name,vg_name,segtype,pool_lv,thin_id,lv_size,metadata_percent",
    ];
    args.extend_from_slice(names);
    let out = lvm(&args)?;
    let report: Report = serde_json::from_str(&out).map_err(|e| Error::Command {
        command: args.join(" "),
        status: "unreadable output".into(),
        stderr: format!("{e}: {}", out.chars().take(200).collect::<String>()),
    })?;
    Ok(report.report.into_iter().flat_map(|r| r.lv).collect())
}

fn snap_name(lv: &str, tag: u64) -> String {
    format!("{lv}-cascade-{tag}")
}

/// device-mapper doubles the hyphens inside VG and LV names.
fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
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

    /// Every LV of the group's VGs, in one `lvs` run: lvm2 commands are slow enough
    /// (locking, device scans) that a cycle asks as few as it can.
    fn all_lvs(&self) -> Result<Vec<Lv>> {
        lvs(&self.vgs())
    }

    /// Checks that every volume is a thin LV and its pool has metadata room; returns
    /// each volume's row.
    fn check_volumes(&self, rows: &[Lv]) -> Result<Vec<Lv>> {
        let mut out = Vec::new();
        for (id, vg, lv) in &self.volumes {
            let row = rows
                .iter()
                .find(|r| &r.vg_name == vg && &r.lv_name == lv)
                .ok_or_else(|| Error::NotFound(format!("volume `{id}`: no LV {vg}/{lv}")))?;
            if row.segtype != "thin" || row.pool_lv.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "volume `{id}`: {vg}/{lv} is not a thin LV (segment type `{}`); the lvm-thin driver \
                     snapshots thin LVs, whose changes the pool's metadata records",
                    row.segtype
                )));
            }
            let used: f64 = rows
                .iter()
                .find(|r| &r.vg_name == vg && r.lv_name == row.pool_lv)
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

    /// Removes the snapshot LVs of `tag` that exist (per `rows`), in one `lvremove`.
    fn remove_lvs_of(&self, tag: u64, rows: &[Lv]) -> Result<()> {
        let mut rows = rows.to_vec();
        let mut tries = 0;
        loop {
            let doomed: Vec<String> = self
                .volumes
                .iter()
                .filter(|(_, vg, lv)| {
                    rows.iter()
                        .any(|r| &r.vg_name == vg && r.lv_name == snap_name(lv, tag))
                })
                .map(|(_, vg, lv)| format!("{vg}/{}", snap_name(lv, tag)))
                .collect();
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
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    rows = self.all_lvs()?;
                }
                r => return r.map(|_| ()),
            }
        }
    }
}

impl VolumeDriver for LvmThinDriver {
    fn name(&self) -> &'static str {
        "lvm-thin"
    }

    fn snapshot(&self, tag: u64) -> Result<SnapshotSet> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io("cannot create snapshot directory", &self.dir))?;
        let rows = self.all_lvs()?;
        self.check_volumes(&rows)?;
        self.remove_lvs_of(tag, &rows)?;
        let time_ns = now_ns();
        let result = (|| {
            for (_, vg, lv) in &self.volumes {
                lvm(&[
                    "lvcreate",
                    "-q",
                    "-s",
                    "--setactivationskip",
                    "n",
                    "-n",
                    &snap_name(lv, tag),
                    &format!("{vg}/{lv}"),
                ])?;
            }
            let rows = self.all_lvs()?;
            let mut volumes = Vec::new();
            for (id, vg, lv) in &self.volumes {
                let name = snap_name(lv, tag);
                let size = rows
                    .iter()
                    .find(|r| &r.vg_name == vg && r.lv_name == name)
                    .and_then(|r| r.lv_size.parse().ok())
                    .ok_or_else(|| Error::NotFound(format!("snapshot {vg}/{name} has no size")))?;
                volumes.push(SnapshotVolume {
                    id: id.clone(),
                    size,
                    path: PathBuf::from(format!("/dev/{vg}/{name}")),
                    reflinked: false,
                    live: false,
                });
            }
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
        })();
        if result.is_err() {
            if let Err(e) = self
                .all_lvs()
                .and_then(|rows| self.remove_lvs_of(tag, &rows))
            {
                tracing::warn!(tag, error = %e, "could not remove the snapshots of a failed group snapshot");
            }
        }
        result
    }

    fn snapshots(&self) -> Result<Vec<u64>> {
        // A set whose LVs are gone (removed by hand) is no snapshot.
        Ok(super::tags_in(&self.dir, ".json")?
            .into_iter()
            .filter(|tag| {
                self.open_snapshot(*tag)
                    .is_ok_and(|s| s.volumes.iter().all(|v| v.path.exists()))
            })
            .collect())
    }

    fn open_snapshot(&self, tag: u64) -> Result<SnapshotSet> {
        super::read_set(self.manifest(tag))
    }

    fn changes<'a>(
        &'a self,
        old: Option<&'a SnapshotSet>,
        new: &'a SnapshotSet,
        volume: usize,
        _stop: &'a dyn crate::progress::Progress,
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
        let rows = lvs(&[&format!("{vg}/{old_lv}"), &format!("{vg}/{new_lv}")])?;
        let row = |name: &str| {
            rows.iter()
                .find(|r| r.lv_name == name)
                .ok_or_else(|| Error::NotFound(format!("snapshot {vg}/{name} is gone")))
        };
        let (o, n) = (row(&old_lv)?, row(&new_lv)?);
        if o.pool_lv != n.pool_lv {
            return Err(Error::InvalidArgument(format!(
                "snapshots {vg}/{old_lv} and {vg}/{new_lv} are in different thin pools; their metadata cannot be diffed"
            )));
        }
        let xml = thin_delta(&vg, &n.pool_lv, &o.thin_id, &n.thin_id)?;
        let ranges = parse_thin_delta(&xml, nv.size).map_err(|why| Error::Command {
            command: format!("thin_delta -m --snap1 {} --snap2 {}", o.thin_id, n.thin_id),
            status: "unreadable output".into(),
            stderr: why,
        })?;
        Ok(Box::new(ranges.into_iter().map(Ok)))
    }

    fn retire(&self, tag: u64) -> Result<()> {
        self.remove_lvs_of(tag, &self.all_lvs()?)?;
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

/// A reserved metadata snapshot of a thin pool, released when dropped, whatever
/// happened in between (thin_delta reads the pool's metadata through it while the
/// pool stays in use).
struct MetadataSnap {
    tpool: String,
}

impl MetadataSnap {
    fn reserve(tpool: &str) -> Result<MetadataSnap> {
        let reserve = || lvm(&["dmsetup", "message", tpool, "0", "reserve_metadata_snap"]);
        if reserve().is_err() {
            // One left reserved by a process that died: release it and try again.
            let _ = lvm(&["dmsetup", "message", tpool, "0", "release_metadata_snap"]);
            reserve()?;
        }
        Ok(MetadataSnap {
            tpool: tpool.to_string(),
        })
    }
}

impl Drop for MetadataSnap {
    fn drop(&mut self) {
        if let Err(e) = lvm(&[
            "dmsetup",
            "message",
            &self.tpool,
            "0",
            "release_metadata_snap",
        ]) {
            tracing::error!(pool = %self.tpool, error = %e, "could not release the thin pool's metadata snapshot");
        }
    }
}

/// The XML `thin_delta` prints for two thin devices of `VG/POOL`.
fn thin_delta(vg: &str, pool: &str, id1: &str, id2: &str) -> Result<String> {
    let tpool = format!("{}-tpool", dm_name(vg, pool));
    let tmeta = format!("/dev/mapper/{}_tmeta", dm_name(vg, pool));
    let _snap = MetadataSnap::reserve(&tpool)?;
    match lvm(&["thin_delta", "-m", "--snap1", id1, "--snap2", id2, &tmeta]) {
        Err(Error::Command { status, .. }) if status == "could not start" => Err(Error::NotFound(
            "thin_delta could not be run: the lvm-thin driver needs thin-provisioning-tools installed".into(),
        )),
        r => r,
    }
}

/// Changed ranges from thin_delta's XML: `different` and `right_only` blocks hold new
/// data, `left_only` blocks are unmapped now and read as zeros, `same` is skipped.
/// Blocks are `data_block_size` sectors of 512 bytes; ranges are clipped to `size`.
fn parse_thin_delta(xml: &str, size: u64) -> std::result::Result<Vec<Change>, String> {
    let attr = |tag: &str, name: &str| -> Option<u64> {
        let key = format!("{name}=\"");
        let at = tag.find(&key)? + key.len();
        tag[at..].split('"').next()?.parse().ok()
    };
    let mut block = None;
    let mut runs = RunBuilder::default();
    let mut out = Vec::new();
    for tag in xml.split('<').map(str::trim).filter(|t| !t.is_empty()) {
        let kind = match tag.split_whitespace().next().unwrap_or("") {
            "superblock" => {
                block = Some(
                    attr(tag, "data_block_size").ok_or("superblock without data_block_size")? * 512,
                );
                continue;
            }
            "different" | "right_only" => ChangeKind::Data,
            "left_only" => ChangeKind::Zero,
            _ => continue,
        };
        let bs = block.ok_or("a range before the superblock")?;
        let (begin, length) = attr(tag, "begin")
            .zip(attr(tag, "length"))
            .ok_or_else(|| format!("range without begin and length: <{tag}"))?;
        let offset = begin * bs;
        if offset >= size {
            continue;
        }
        let len = (length * bs).min(size - offset);
        out.extend(runs.push(offset, len, kind));
    }
    out.extend(runs.finish());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_delta_xml_becomes_byte_ranges() {
        let xml = r#"<superblock uuid="" time="1" transaction="2" flags="0" version="2" data_block_size="128" nr_data_blocks="4096">
  <diff left="1" right="2">
    <same begin="0" length="4"/>
    <different begin="4" length="2"/>
    <right_only begin="6" length="1"/>
    <same begin="7" length="3"/>
    <left_only begin="10" length="2"/>
    <right_only begin="100" length="50"/>
  </diff>
</superblock>"#;
        let k = 64 << 10;
        let got = parse_thin_delta(xml, 120 * k).unwrap();
        let want = [
            (4 * k, 3 * k, ChangeKind::Data),
            (10 * k, 2 * k, ChangeKind::Zero),
            (100 * k, 20 * k, ChangeKind::Data),
        ];
        assert_eq!(
            got.iter()
                .map(|c| (c.offset, c.len, c.kind))
                .collect::<Vec<_>>(),
            want
        );
        assert!(parse_thin_delta("<different begin=\"1\" length=\"1\"/>", 1 << 30).is_err());
    }

    #[test]
    fn device_mapper_names_double_hyphens() {
        assert_eq!(dm_name("vg-a", "thin-pool"), "vg--a-thin--pool");
    }
}
