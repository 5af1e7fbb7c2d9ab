//! One consistency group's state as `cascade status` shows it and the metrics
//! endpoint exports it: the journal's span and size, the schedule's last and next
//! cycle, and each target's lag. Both read it from here so they cannot disagree.
use super::group_state::GroupState;
use crate::config::{Config, ConsistencyGroup};
use crate::journal::Journal;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub cg: String,
    /// The cron expression and zone; None for a group the daemon does not cycle.
    pub schedule: Option<String>,
    #[serde(flatten)]
    pub state: GroupState,
    /// The next tick by the schedule alone, for when no daemon has said when.
    pub next_tick: Option<DateTime<Utc>>,
    pub first_delta: u64,
    pub last_delta: u64,
    pub journal_bytes: u64,
    pub journal_error: Option<String>,
    /// A split group's splitter: where it is to listen, and how it stands when it is
    /// served.
    pub splitter: Option<SplitterReport>,
    pub targets: Vec<TargetLag>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitterReport {
    /// The configured address.
    pub listen: String,
    /// None when no splitter answers on the group's control socket.
    pub serving: Option<crate::splitter::SplitStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetLag {
    pub target: String,
    /// The newest delta the target held at its last export.
    pub cursor: u64,
    pub lag_deltas: u64,
    /// Journal bytes of the deltas the target does not hold yet.
    pub lag_bytes: u64,
    /// Age of the oldest delta the target does not hold: how far back in time a
    /// restore from it would land (0 when it is current).
    pub lag_seconds: f64,
    pub last_export: Option<String>,
    pub last_error: Option<String>,
    /// A live block target's window, as its last export or rewind left it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::export::live::LiveStatus>,
}

pub fn group_report(cfg: &Config, cg: &ConsistencyGroup) -> GroupReport {
    let journal = Journal::open(&cfg.journal_path(cg));
    // A group that never cycled has no journal yet; that is not an error to show.
    let journal_error = match &journal {
        Err(crate::Error::NotFound(_)) | Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    let journal = journal.ok();
    let deltas = journal.as_ref().map_or(&[][..], |j| j.deltas());
    let last_delta = journal.as_ref().map_or(0, |j| j.last_delta());
    let now_ns = crate::clock::now_ns();
    let targets = cg
        .targets
        .iter()
        .map(|name| {
            let st = crate::export::load_status(cfg, cg, name);
            let cursor = st.as_ref().map_or(0, |s| s.cursor);
            let behind = || deltas.iter().filter(|d| d.delta > cursor);
            TargetLag {
                target: name.clone(),
                cursor,
                lag_deltas: last_delta.saturating_sub(cursor),
                lag_bytes: behind().map(|d| d.stored_bytes).sum(),
                lag_seconds: behind()
                    .next()
                    .map_or(0.0, |d| (now_ns - d.time_ns).max(0) as f64 / 1e9),
                last_export: st.as_ref().and_then(|s| s.last_export.clone()),
                last_error: st.as_ref().and_then(|s| s.last_error.clone()),
                live: st.and_then(|s| s.live).map(|l| {
                    l.with_cursor(
                        &crate::export::targets_state(cfg, cg).join(format!("{name}.cursor")),
                    )
                }),
            }
        })
        .collect();
    GroupReport {
        cg: cg.name.clone(),
        schedule: cg.schedule.as_ref().map(|s| s.describe()),
        state: GroupState::load(cfg, cg),
        next_tick: cg.schedule.as_ref().and_then(|s| s.next_after(Utc::now())),
        first_delta: journal.as_ref().map_or(0, |j| j.first_delta()),
        last_delta,
        journal_bytes: deltas.iter().map(|d| d.stored_bytes).sum(),
        journal_error,
        // A splitter that does not answer is not served; one that answers oddly is
        // not worth failing the report for.
        splitter: cg.splitter.as_ref().map(|s| SplitterReport {
            listen: s.listen().to_string(),
            serving: crate::splitter::request_status(&cfg.state_path(cg))
                .ok()
                .flatten(),
        }),
        targets,
    }
}
