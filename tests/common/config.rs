//! The config file and the target files as typed values, so tests build their inputs
//! as data and serialize them instead of splicing YAML text. The structs mirror the
//! schema of src/config/ (mod.rs, target.rs, retention.rs, schedule.rs, splitter.rs, daemon.rs)
//! field for field (kebab-case, optional fields left out when unset);
//! values the library parses (cron, ages, time zones) are strings here, so a test can
//! write a bad one. Raw text stays only where a test's point is malformed YAML.
//!
//! ```ignore
//! let mut cfg = ConfigFile::group("cg", vec![Volume::file("v0", "v0.img")]);
//! cfg.groups[0].targets = vec!["vault".into()];
//! cfg.write(&dir);
//! TargetFile::object("../vault").write(&dir, "vault");
//! ```
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `cascade.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub state_dir: PathBuf,
    pub journal_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<Daemon>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<Grid>,
    #[serde(rename = "consistency-groups")]
    pub groups: Vec<GroupConfig>,
}

/// The `grid:` section (src/config/grid.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grid {
    pub name: String,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cg: Option<String>,
    pub counter: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    pub secret_file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_budget: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

/// One entry of `consistency-groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_size_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub journal_retention: Retention,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splitter: Option<Splitter>,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    pub volumes: Vec<Volume>,
}

/// The `splitter:` section of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Splitter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_every: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_granularity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Volume {
    pub id: String,
    pub driver: Driver,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    File,
    LvmThin,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thaw: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_freeze: Option<String>,
}

/// `journal-retention` of a group, `retention` of an object target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_deltas: Option<u64>,
    /// An age such as `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_age: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    pub cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `run-once` or `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<String>,
}

/// The `daemon:` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Daemon {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// An age such as `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace: Option<String>,
}

/// A file `cascade-targets/NAME.yaml`. (Written once per test: its size is no cost.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TargetFile {
    Block(BlockTarget),
    Object(ObjectTarget),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BlockTarget {
    /// Volume id → device or image file.
    pub volumes: BTreeMap<String, PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Undo>,
}

/// A live block target's `undo:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Undo {
    pub dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectTarget {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_full_every: Option<u64>,
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// `object-lock:` of an S3 target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectLock {
    pub mode: String,
    pub retain: String,
}

/// `encryption:` of an object target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Encryption {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

impl Encryption {
    /// The key in `path` (relative to the targets directory).
    pub fn file(path: &str) -> Encryption {
        Encryption {
            key_file: Some(path.into()),
            key_env: None,
        }
    }
}

impl ConfigFile {
    /// One group `name` of `volumes`, with state in `state/` and journals in
    /// `journals/` beside the config.
    pub fn group(name: &str, volumes: Vec<Volume>) -> ConfigFile {
        ConfigFile {
            state_dir: "state".into(),
            journal_dir: "journals".into(),
            targets_dir: None,
            daemon: None,
            grid: None,
            groups: vec![GroupConfig::new(name, volumes)],
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap()
    }

    /// Writes `dir/cascade.yaml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let file = dir.join("cascade.yaml");
        self.write_to(&file);
        file
    }

    pub fn write_to(&self, file: &Path) {
        std::fs::write(file, self.to_yaml()).unwrap();
    }

    pub fn read(file: &Path) -> ConfigFile {
        let text = std::fs::read_to_string(file).unwrap();
        serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a config file: {e}", file.display()))
    }
}

impl GroupConfig {
    pub fn new(name: &str, volumes: Vec<Volume>) -> GroupConfig {
        GroupConfig {
            name: name.into(),
            targets: Vec::new(),
            segment_size_mib: None,
            journal_retention: Retention::default(),
            schedule: None,
            splitter: None,
            hooks: Hooks::default(),
            volumes,
        }
    }
}

impl Volume {
    pub fn file(id: &str, path: impl Into<PathBuf>) -> Volume {
        Volume {
            id: id.into(),
            driver: Driver::File,
            path: Some(path.into()),
            lv: None,
        }
    }

    /// A thin LV, `lv` as `VG/LV`.
    pub fn lvm_thin(id: &str, lv: &str) -> Volume {
        Volume {
            id: id.into(),
            driver: Driver::LvmThin,
            path: None,
            lv: Some(lv.into()),
        }
    }
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.freeze.is_none() && self.thaw.is_none()
    }
}

/// A hook command: a program and its arguments.
pub fn command(args: &[&str]) -> Option<Vec<String>> {
    Some(args.iter().map(|a| a.to_string()).collect())
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        self.keep_deltas.is_none() && self.keep_age.is_none()
    }

    pub fn keep_deltas(n: u64) -> Retention {
        Retention {
            keep_deltas: Some(n),
            keep_age: None,
        }
    }

    pub fn keep_age(age: &str) -> Retention {
        Retention {
            keep_deltas: None,
            keep_age: Some(age.into()),
        }
    }
}

impl Schedule {
    /// `cron` in UTC, missed ticks run once (the defaults).
    pub fn cron(cron: &str) -> Schedule {
        Schedule {
            cron: cron.into(),
            timezone: None,
            missed: None,
        }
    }
}

impl TargetFile {
    /// A block target: volume id → device or image file.
    pub fn block<K: Into<String>, P: Into<PathBuf>>(
        volumes: impl IntoIterator<Item = (K, P)>,
    ) -> TargetFile {
        TargetFile::Block(BlockTarget {
            volumes: volumes
                .into_iter()
                .map(|(id, p)| (id.into(), p.into()))
                .collect(),
            undo: None,
        })
    }

    /// A live block target: `block`, with its undo journal in `dir` bounded by
    /// `max_bytes` (as `64KiB`).
    pub fn live<K: Into<String>, P: Into<PathBuf>>(
        volumes: impl IntoIterator<Item = (K, P)>,
        dir: impl Into<PathBuf>,
        max_bytes: &str,
    ) -> TargetFile {
        let TargetFile::Block(mut b) = TargetFile::block(volumes) else {
            unreachable!()
        };
        b.undo = Some(Undo {
            dir: dir.into(),
            max_bytes: Some(max_bytes.into()),
            max_age: None,
        });
        TargetFile::Block(b)
    }

    /// An object target at `url` with the defaults for everything else.
    pub fn object(url: impl Into<String>) -> TargetFile {
        TargetFile::Object(ObjectTarget::new(url))
    }

    /// Writes `dir/cascade-targets/NAME.yaml`, where `dir` holds the config.
    pub fn write(&self, dir: &Path, name: &str) {
        let targets = dir.join("cascade-targets");
        std::fs::create_dir_all(&targets).unwrap();
        let text = serde_yaml::to_string(self).unwrap();
        std::fs::write(targets.join(format!("{name}.yaml")), text).unwrap();
    }
}

impl ObjectTarget {
    pub fn new(url: impl Into<String>) -> ObjectTarget {
        ObjectTarget {
            url: url.into(),
            ..Default::default()
        }
    }
}

impl From<ObjectTarget> for TargetFile {
    fn from(t: ObjectTarget) -> TargetFile {
        TargetFile::Object(t)
    }
}
