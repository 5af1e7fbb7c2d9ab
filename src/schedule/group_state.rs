//! What the daemon last did for each consistency group, kept in
//! `STATE/CG/schedule.json` so that a restarted daemon knows which tick it served
//! last: it neither repeats a cycle nor skips one without saying so.
//!
//! The tick is recorded as `running` before the cycle starts and settled after it.
//! A file still saying `running` at start-up means the daemon died inside a cycle;
//! the journal then tells whether that cycle committed (its newest delta is newer
//! than the start) or left nothing, and in the second case the tick counts as missed.
use crate::config::{Config, ConsistencyGroup};
use crate::error::Result;
use crate::journal::Journal;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CycleResult {
    Running,
    Ok,
    Failed,
    /// The daemon stopped (or died) inside the cycle and the cycle left nothing.
    Interrupted,
}

impl CycleResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CycleResult::Running => "running",
            CycleResult::Ok => "ok",
            CycleResult::Failed => "failed",
            CycleResult::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupState {
    /// The newest cron tick a cycle was started for.
    pub last_tick: Option<DateTime<Utc>>,
    pub last_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    pub last_result: Option<CycleResult>,
    /// The delta the last successful cycle committed.
    pub last_delta: Option<u64>,
    pub last_duration_ms: Option<u64>,
    pub last_changed_bytes: Option<u64>,
    /// How late the last cycle started against its tick.
    pub last_delay_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub failures: u32,
    /// When the daemon means to start the next cycle (a tick or a retry).
    pub next: Option<DateTime<Utc>>,
}

pub fn state_file(cfg: &Config, cg: &ConsistencyGroup) -> PathBuf {
    cfg.state_path(cg).join("schedule.json")
}

impl GroupState {
    /// The saved state of `cg`; a missing file is a group the daemon never ran.
    /// An unreadable one is reported and treated the same, so the daemon starts.
    pub fn load(cfg: &Config, cg: &ConsistencyGroup) -> GroupState {
        let path = state_file(cfg, cg);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(cg = %cg.name, file = %path.display(), error = %e,
                    "unreadable schedule state; starting as if the group never ran");
                GroupState::default()
            }),
            Err(_) => GroupState::default(),
        }
    }

    pub fn save(&self, cfg: &Config, cg: &ConsistencyGroup) -> Result<()> {
        let dir = cfg.state_path(cg);
        std::fs::create_dir_all(&dir)
            .map_err(crate::Error::io("cannot create state directory", &dir))?;
        crate::fsutil::write_atomic(
            &state_file(cfg, cg),
            &serde_json::to_vec_pretty(self).expect("state serialises"),
        )
    }

    /// Settles a cycle that was running when the daemon died: committed if the
    /// journal's newest delta was stamped after the cycle started, interrupted if not.
    pub fn settle_after_crash(&mut self, journal: Option<&Journal>) {
        if self.last_result != Some(CycleResult::Running) {
            return;
        }
        let started_ns = self
            .last_started
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(i64::MAX);
        let committed = journal
            .and_then(|j| j.deltas().last())
            .filter(|d| d.time_ns >= started_ns);
        match committed {
            Some(d) => {
                self.last_result = Some(CycleResult::Ok);
                self.last_delta = Some(d.delta);
                self.failures = 0;
                self.last_error = None;
            }
            None => {
                self.last_result = Some(CycleResult::Interrupted);
                self.last_error = Some("the daemon stopped during this cycle".into());
            }
        }
    }
}
