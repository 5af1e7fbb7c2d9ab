//! `cascade rewind` and `cascade serve --at` on a live block target: found by name
//! in the group that names it, locked as an export locks it (so no export runs
//! meanwhile, and while a point is served the exports wait), and its status saved
//! after a rewind so `cascade status` shows where it is held.
use super::live::{RewindReport, RewindTo};
use super::undo::serve::PointExport;
use super::{load_status, save_status, targets_state, BlockExporter};
use crate::config::{Config, ConsistencyGroup, Target, TargetSpec};
use crate::error::{Error, Result};
use crate::journal::{Journal, Point, Until};
use crate::progress::Progress;
use std::fs::File;

/// How a serving `cascade serve` names itself in the target's lock file.
const SERVING: &str = "served by `cascade serve` at ";

/// What the `cascade serve` holding the lock at `lock` serves, if one does.
pub(super) fn served(lock: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    text.starts_with(SERVING).then_some(text)
}

/// A live target opened for a rewind or a serve, holding its lock.
pub struct LiveTarget<'c> {
    pub cg: &'c ConsistencyGroup,
    pub target: &'c Target,
    pub journal: Journal,
    exporter: BlockExporter,
    _lock: File,
}

impl<'c> LiveTarget<'c> {
    /// Opens target `name` of the group that names it (`cg` when several do).
    pub fn open(cfg: &'c Config, name: &str, cg: Option<&str>) -> Result<LiveTarget<'c>> {
        LiveTarget::open_as(cfg, name, cg, None)
    }

    /// [`LiveTarget::open`], saying in the target's lock file, while it holds it,
    /// that it serves `point` (so an export that finds the lock taken waits, and
    /// status says why).
    pub fn open_serving(
        cfg: &'c Config,
        name: &str,
        cg: Option<&str>,
        point: &str,
    ) -> Result<LiveTarget<'c>> {
        LiveTarget::open_as(cfg, name, cg, Some(point))
    }

    fn open_as(
        cfg: &'c Config,
        name: &str,
        cg: Option<&str>,
        serving: Option<&str>,
    ) -> Result<LiveTarget<'c>> {
        let target = cfg.target(name)?;
        let TargetSpec::Block { volumes, undo } = &target.spec else {
            return Err(Error::InvalidArgument(format!(
                "target `{name}` is an object replica: only a live block target (with `undo:`) is rewound or served at a point; \
                 restore an object replica with `cascade restore`"
            )));
        };
        if undo.is_none() {
            return Err(Error::InvalidArgument(format!(
                "target `{name}` is not live: give it `undo:` (a directory and max-bytes or max-age) to rewind it or serve its past"
            )));
        }
        let groups: Vec<&ConsistencyGroup> = cfg
            .consistency_groups
            .iter()
            .filter(|g| g.targets.iter().any(|t| t == name))
            .filter(|g| cg.is_none_or(|c| g.name == c))
            .collect();
        let cg = match groups.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::NotFound(format!(
                    "no consistency group{} names target `{name}` in its targets",
                    cg.map_or(String::new(), |c| format!(" `{c}`"))
                )))
            }
            many => {
                let names: Vec<&str> = many.iter().map(|g| g.name.as_str()).collect();
                return Err(Error::InvalidArgument(format!(
                    "target `{name}` is named by groups {}: say which with --cg",
                    names.join(", ")
                )));
            }
        };
        let state = targets_state(cfg, cg);
        std::fs::create_dir_all(&state)
            .map_err(Error::io("cannot create target state directory", &state))?;
        let lock_path = state.join(format!("{name}.lock"));
        let mut lock = crate::lock::lock(&lock_path, &target.file)?;
        if let Some(point) = serving {
            use std::io::Write;
            let said = format!("{SERVING}{point} (pid {})", std::process::id());
            lock.set_len(0)
                .and_then(|()| lock.write_all(said.as_bytes()))
                .map_err(Error::io("cannot write", &lock_path))?;
        }
        let journal = Journal::open(&cfg.journal_path(cg))?;
        let exporter = BlockExporter::new(target, cg, volumes, &state)?;
        Ok(LiveTarget {
            cg,
            target,
            journal,
            exporter,
            _lock: lock,
        })
    }

    /// Moves the replica (see [`super::live::Live::rewind`]), then saves the
    /// target's status with its new place.
    pub fn rewind(
        &mut self,
        cfg: &Config,
        to: &RewindTo,
        progress: &dyn Progress,
    ) -> Result<RewindReport> {
        let report = self.exporter.rewind(&self.journal, to, progress);
        self.save(cfg)?;
        report
    }

    /// The replica's volumes as they were at `at`, one export per volume id.
    pub fn serve_at(&mut self, at: &Point) -> Result<(Until, Vec<(String, PointExport)>)> {
        self.exporter.serve_at(&self.journal, at)
    }

    fn save(&mut self, cfg: &Config) -> Result<()> {
        use super::Exporter;
        let Some(mut status) = load_status(cfg, self.cg, &self.target.name) else {
            return Ok(());
        };
        status.live = self.exporter.live()?;
        save_status(&targets_state(cfg, self.cg), &status)
    }
}
