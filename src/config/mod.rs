//! The YAML config: consistency groups, their volumes, and where state and journals
//! live. Parsing is strict (unknown fields are errors) because a misspelt key that is
//! silently ignored is how a volume ends up unprotected.
//!
//! The whole schema lives here, validated at load: the group file (this module), the
//! target files (`target`), schedules (`schedule`), retention policies
//! (`retention`), freeze/thaw hooks and their limits (`hooks`), a group's splitter
//! (`splitter`) and the daemon's own settings (`daemon`). Every layer above takes
//! these typed values; none parses YAML of its own.
mod daemon;
mod grid;
mod hooks;
mod retention;
mod schedule;
mod size;
mod splitter;
mod target;

pub use daemon::{parse_listen, DaemonConfig, DEFAULT_STOP_GRACE};
pub use grid::{GridConfig, DEFAULT_GRID_LISTEN, DEFAULT_HOLD_BUDGET};
pub use hooks::{Hooks, DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_FREEZE};
pub use retention::{Age, Retention};
pub use schedule::{CronSpec, Missed, Schedule, TimeZone};
pub use size::Size;
pub use splitter::{
    SplitterConfig, DEFAULT_COMMIT_EVERY, DEFAULT_DIRTY_GRANULARITY, DEFAULT_LISTEN, DEFAULT_QUEUE,
};
pub use target::{
    EncryptionConfig, KeySource, LockMode, ObjectLockConfig, ObjectOptions, ObjectPolicy, S3Policy,
    Secret, Sse, Target, TargetSpec, UndoConfig,
};

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Snapshots and per-CG state. Relative paths are taken from the config file's directory.
    pub state_dir: PathBuf,
    /// One journal directory per CG is made under it.
    pub journal_dir: PathBuf,
    pub consistency_groups: Vec<ConsistencyGroup>,
    /// One YAML file per replica target; default `cascade-targets` beside the config.
    #[serde(default = "default_targets_dir")]
    pub targets_dir: PathBuf,
    /// Settings of `cascade run`, the daemon.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// This host's stream of a distributed consistency group.
    #[serde(default)]
    pub grid: Option<GridConfig>,
    /// The targets the groups name, loaded and checked with the config.
    #[serde(skip)]
    pub targets: std::collections::BTreeMap<String, Target>,
}

fn default_targets_dir() -> PathBuf {
    PathBuf::from("cascade-targets")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsistencyGroup {
    pub name: String,
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub hooks: Hooks,
    /// Size at which the journal starts a new segment file.
    #[serde(default = "default_segment_mib")]
    pub segment_size_mib: u64,
    /// Replica targets fed from this group's journal, by name (files in targets-dir).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Which deltas the journal keeps; beyond the policy, a delta stays until every
    /// target holds it. Without a policy the journal keeps everything.
    #[serde(default)]
    pub journal_retention: Retention,
    /// When `cascade run` cycles this group; without one the daemon only exports
    /// and prunes what other cycles journal.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Serve the group over NBD and journal every write (instead of a schedule).
    #[serde(default)]
    pub splitter: Option<SplitterConfig>,
}

fn default_segment_mib() -> u64 {
    64
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Volume {
    /// The name records in the journal use for this volume.
    pub id: String,
    pub driver: DriverKind,
    /// `file` driver: the image file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `lvm-thin` driver: the thin logical volume, as `VG/LV`.
    #[serde(default)]
    pub lv: Option<String>,
}

impl Volume {
    /// The names the source's data can be reached by: a file volume's image file; a
    /// thin volume's `/dev/VG/LV` and `/dev/mapper/VG-LV` (both links to one
    /// `/dev/dm-N`), so a replica named by either is seen to be the source.
    pub fn device_paths(&self) -> Vec<PathBuf> {
        match (
            &self.path,
            self.lv.as_deref().and_then(|lv| lv.split_once('/')),
        ) {
            (Some(p), _) => vec![p.clone()],
            (None, Some((vg, lv))) => vec![
                PathBuf::from(format!("/dev/{vg}/{lv}")),
                PathBuf::from(format!("/dev/mapper/{}", dm_name(vg, lv))),
            ],
            (None, None) => Vec::new(),
        }
    }
}

/// The device-mapper name of LV `lv` of VG `vg`: device-mapper doubles the hyphens
/// inside VG and LV names.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    File,
    LvmThin,
}

impl Config {
    pub fn load(file: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::Config {
            file: file.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, file)
    }

    /// Parses `text` as if it were the contents of `file`; relative paths in it are
    /// resolved against `file`'s directory.
    pub fn parse(text: &str, file: &Path) -> Result<Config> {
        let err = |reason: String| Error::Config {
            file: file.to_path_buf(),
            reason,
        };
        let mut cfg: Config = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        cfg.state_dir = base.join(&cfg.state_dir);
        cfg.journal_dir = base.join(&cfg.journal_dir);
        cfg.targets_dir = base.join(&cfg.targets_dir);
        if let Some(g) = &mut cfg.grid {
            g.secret_file = base.join(&g.secret_file);
        }
        for cg in &cfg.consistency_groups {
            for name in &cg.targets {
                if !cfg.targets.contains_key(name) {
                    let t = Target::load(&cfg.targets_dir, name)?;
                    cfg.targets.insert(name.clone(), t);
                }
            }
        }
        for cg in &mut cfg.consistency_groups {
            for v in &mut cg.volumes {
                if let Some(p) = &v.path {
                    v.path = Some(base.join(p));
                }
            }
        }
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.consistency_groups.is_empty() {
            return Err("consistency-groups: at least one consistency group is required".into());
        }
        self.daemon.check()?;
        if let Some(g) = &self.grid {
            g.check(&self.consistency_groups)?;
        }
        let mut names = std::collections::HashSet::new();
        // A target holds one journal's deltas; two groups feeding it would interleave.
        let mut fed: std::collections::HashMap<&String, &String> = std::collections::HashMap::new();
        for cg in &self.consistency_groups {
            for t in &cg.targets {
                if let Some(other) = fed.insert(t, &cg.name).filter(|o| **o != cg.name) {
                    return Err(format!("target `{t}` is named by `{other}` and `{}`; a target replicates one consistency group", cg.name));
                }
            }
        }
        for (i, cg) in self.consistency_groups.iter().enumerate() {
            let at = format!("consistency-groups[{i}]");
            check_name(&cg.name).map_err(|r| format!("{at}.name: {r}"))?;
            if !names.insert(&cg.name) {
                return Err(format!(
                    "{at}.name: `{}` is used by another consistency group",
                    cg.name
                ));
            }
            if cg.volumes.is_empty() {
                return Err(format!(
                    "{at}.volumes: a consistency group needs at least one volume"
                ));
            }
            if cg.volumes.len() > u16::MAX as usize {
                return Err(format!("{at}.volumes: at most {} volumes", u16::MAX));
            }
            cg.journal_retention
                .check(&format!("{at}.journal-retention"))?;
            if let Some(s) = &cg.schedule {
                s.check(&format!("{at}.schedule"))?;
            }
            if let Some(s) = &cg.splitter {
                s.check(&format!("{at}.splitter"))?;
                if cg.schedule.is_some() {
                    return Err(format!(
                        "{at}: a group with a splitter journals every write; it takes no schedule of snapshot cycles"
                    ));
                }
            }
            if !(1..=4096).contains(&cg.segment_size_mib) {
                return Err(format!(
                    "{at}.segment-size-mib: {} is outside 1..=4096",
                    cg.segment_size_mib
                ));
            }
            cg.hooks.check(&format!("{at}.hooks"))?;
            let mut seen = std::collections::HashSet::new();
            for (j, t) in cg.targets.iter().enumerate() {
                check_name(t).map_err(|r| format!("{at}.targets[{j}]: {r}"))?;
                if !seen.insert(t) {
                    return Err(format!("{at}.targets[{j}]: `{t}` is named twice"));
                }
            }
            let mut ids = std::collections::HashSet::new();
            for (j, v) in cg.volumes.iter().enumerate() {
                let at = format!("{at}.volumes[{j}]");
                check_name(&v.id).map_err(|r| format!("{at}.id: {r}"))?;
                if !ids.insert(&v.id) {
                    return Err(format!(
                        "{at}.id: `{}` is used by another volume of `{}`",
                        v.id, cg.name
                    ));
                }
                if v.driver != cg.volumes[0].driver {
                    return Err(format!("{at}.driver: all volumes of a consistency group use one driver, so they can be snapshotted together"));
                }
                match v.driver {
                    DriverKind::File if v.path.is_none() => {
                        return Err(format!(
                            "{at}.path: the file driver needs the path of the image file"
                        ))
                    }
                    DriverKind::File if v.lv.is_some() => {
                        return Err(format!("{at}.lv: the file driver takes a path, not an LV"))
                    }
                    DriverKind::File => {}
                    DriverKind::LvmThin => {
                        let lv = v.lv.as_deref().ok_or_else(|| {
                            format!("{at}.lv: the lvm-thin driver needs the thin LV as VG/LV")
                        })?;
                        let ok = lv.split_once('/').is_some_and(|(vg, name)| {
                            [vg, name].iter().all(|p| {
                                !p.is_empty()
                                    && p.chars()
                                        .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
                            })
                        });
                        if !ok {
                            return Err(format!(
                                "{at}.lv: `{lv}` is not VG/LV (letters, digits, + _ . - on each side)"
                            ));
                        }
                        if v.path.is_some() {
                            return Err(format!(
                                "{at}.path: the lvm-thin driver takes lv: VG/LV, not a path"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn group(&self, name: &str) -> Result<&ConsistencyGroup> {
        self.consistency_groups
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let known: Vec<_> = self
                    .consistency_groups
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                Error::NotFound(format!(
                    "no consistency group `{name}` in the config (it has: {})",
                    known.join(", ")
                ))
            })
    }

    pub fn target(&self, name: &str) -> Result<&Target> {
        self.targets.get(name).ok_or_else(|| {
            Error::NotFound(format!(
                "no consistency group names a target `{name}` (targets are files in {})",
                self.targets_dir.display()
            ))
        })
    }

    pub fn journal_path(&self, cg: &ConsistencyGroup) -> PathBuf {
        self.journal_dir.join(&cg.name)
    }

    pub fn state_path(&self, cg: &ConsistencyGroup) -> PathBuf {
        self.state_dir.join(&cg.name)
    }
}

/// Names become directory names and journal strings, so keep them plain.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1-128 characters of A-Z a-z 0-9 - _ . and not start with a dot"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/cascade/test.yaml"))
    }

    #[test]
    fn device_mapper_names_double_hyphens() {
        assert_eq!(dm_name("vg-a", "thin-pool"), "vg--a-thin--pool");
    }

    const GOOD: &str = "state-dir: state\njournal-dir: /j\nconsistency-groups:\n  - name: db\n    volumes:\n      - id: data\n        driver: file\n        path: data.img\n";

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/cascade/state"));
        assert_eq!(c.journal_dir, Path::new("/j"));
        assert_eq!(
            c.consistency_groups[0].volumes[0].path.as_deref(),
            Some(Path::new("/etc/cascade/data.img"))
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse(&GOOD.replace("path:", "pth:"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.yaml") && e.contains("unknown field `pth`"),
            "{e}"
        );
    }

    #[test]
    fn a_target_replicates_one_group() {
        let two = format!("{GOOD}    targets: [vault]\n  - name: web\n    targets: [vault]\n    volumes:\n      - {{ id: w, driver: file, path: w.img }}\n");
        let e = parse(&two).unwrap_err().to_string();
        assert!(
            e.contains("target `vault` is named by `db` and `web`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&GOOD.replace("driver: file", "driver: zfs"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("zfs"), "{e}");
        let e = parse(&GOOD.replace("id: data", "id: ../x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("consistency-groups[0].volumes[0].id"), "{e}");
        let e = parse(&GOOD.replace("        path: data.img\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("volumes[0].path"), "{e}");
    }
}
