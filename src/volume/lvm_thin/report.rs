//! What lvm2 says about the group's LVs: one `lvs` report of the group's volume
//! groups, taken once a cycle and kept up to date by the driver's own changes
//! (snapshots created, removed), because every lvm2 command costs a device scan and
//! locking, more than an incremental cycle's data under emulation.
use super::{lvm, snap_name};
use crate::error::{Error, Result};
use serde::Deserialize;

/// One row of `lvs --reportformat json`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Lv {
    pub lv_name: String,
    pub vg_name: String,
    #[serde(default)]
    pub segtype: String,
    #[serde(default)]
    pub pool_lv: String,
    #[serde(default)]
    pub thin_id: String,
    #[serde(default)]
    pub lv_size: String,
    #[serde(default)]
    pub metadata_percent: String,
}

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportLvs>,
}

#[derive(Deserialize)]
struct ReportLvs {
    lv: Vec<Lv>,
}

/// `lvs` rows for `names` (VG/LV or VG); names that do not exist are errors. It
/// reads lvm2's metadata, so inactive LVs (every snapshot after a reboot) are there.
pub(super) fn lvs(names: &[&str]) -> Result<Vec<Lv>> {
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

/// The rows of the group's VGs as the driver last knew them.
#[derive(Default)]
pub(super) struct Rows(Vec<Lv>);

impl Rows {
    pub fn fetch(vgs: &[&str]) -> Result<Rows> {
        lvs(vgs).map(Rows)
    }

    pub fn find(&self, vg: &str, lv: &str) -> Option<&Lv> {
        self.0.iter().find(|r| r.vg_name == vg && r.lv_name == lv)
    }

    /// Whether snapshot `tag` of `VG/LV` exists.
    pub fn has_snapshot(&self, vg: &str, lv: &str, tag: u64) -> bool {
        self.find(vg, &snap_name(lv, tag)).is_some()
    }

    pub fn add(&mut self, row: Lv) {
        self.0.push(row);
    }

    pub fn remove(&mut self, vg: &str, lv: &str) {
        self.0.retain(|r| !(r.vg_name == vg && r.lv_name == lv));
    }
}
