//! The daemon, `cascade run`: every consistency group cycles on its own cron
//! schedule, every target is kept caught up with its group's journal, and retention
//! prunes by policy.
//!
//! Shape:
//! - one task per group runs its cycles ([`group_job`]); at most one cycle of a group
//!   runs at a time, because the task runs them one after another, and a tick that
//!   comes while a cycle still runs is skipped and counted. Groups run concurrently.
//! - one task per target runs its exports ([`target_job`]), woken by its group's
//!   commits (and by a poll of the journal index, for cycles and bookmarks made by the
//!   CLI), so a slow or failing target never holds up a cycle or another target.
//! - the journal's writers inside the daemon (a cycle, a prune) take the group's
//!   writer mutex, so they queue instead of refusing each other with "locked".
//! - blocking work (cycles, exports) runs on tokio's blocking pool, inside a tracing
//!   span naming the group and target; a panic there fails that one job.
//! - a group with a `splitter:` section is served over NBD instead of cycled
//!   ([`split_job`]), from the daemon's start to its stop; each delta its splitter
//!   journals wakes the exporters as a cycle's commit does, and retention prunes on
//!   the splitter's writer, between its commits.
//! - failures are retried with exponential backoff ([`backoff`]), and reported in
//!   `STATE/CG/schedule.json`, the targets' status files and the metrics.
//!
//! Stopping (SIGTERM, Ctrl-C): no new cycle or export starts; a running cycle may
//! finish within the stop grace (it commits), after which it is abandoned between
//! chunks and keeps nothing; a running export stops at the next delta boundary. A second signal exits at once; the journal's own crash
//! safety then applies. SIGHUP reloads the config and keeps the running one if the
//! new one does not load.
mod backoff;
mod daemon;
mod group_job;
pub mod group_state;
mod http;
pub mod metrics;
pub mod report;
mod split_job;
mod target_job;

pub use daemon::{daemon_pid, run_daemon, DaemonOptions};
pub use group_state::{CycleResult, GroupState};
pub use report::{group_report, GroupReport};
