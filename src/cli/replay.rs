use super::human_bytes;
use cascade::journal::{Journal, Point};
use cascade::replay::{replay, Destination};
use std::path::PathBuf;
use std::process::ExitCode;

/// Rebuild volumes from a journal at a committed point.
///
/// Applies deltas in order to the targets, from the newest full delta at or before N
/// (delta 1 unless retention pruned the journal) to N. A target is a file or block device;
/// a file that does not exist is created. Everything is checked before anything is
/// written: every record checksum up to the point, and that each target can hold its
/// volume (a smaller one is refused).
#[derive(clap::Args)]
pub struct Args {
    /// The journal directory (JOURNAL-DIR/CG in the config).
    journal: PathBuf,
    /// Targets, one per volume: `ID=PATH`, or bare paths in the journal's volume order.
    #[arg(long, num_args = 1.., required = true, value_name = "[ID=]PATH")]
    to: Vec<Destination>,
    /// Stop at this point: a delta id, a bookmark name, a write of a split group
    /// (seq:N, the state just after write N), or a time (RFC 3339 or @UNIX-SECONDS;
    /// the newest delta at or before it, or in a split group the newest write).
    /// Prefixes delta:, bookmark:, seq:, time: remove any doubt. Default: the newest
    /// committed delta.
    #[arg(long, value_name = "DELTA|BOOKMARK|TIME")]
    until: Option<Point>,
    /// Print the report (deltas replayed, bytes written and zeroed, per volume) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let journal = Journal::open(&a.journal)?;
    if let Some(t) = journal.tail() {
        eprintln!(
            "warning: ignoring an unfinished tail at {} ({}, {})",
            t.cut,
            t.reason,
            human_bytes(t.bytes)
        );
    }
    let until = match &a.until {
        Some(p) => journal.resolve_until(p)?,
        None => journal.latest()?,
    };
    let r = replay(&journal, until, &a.to, super::progress::observer().as_ref())?;
    super::print_replay_report(&r, "replayed", a.json);
    Ok(ExitCode::SUCCESS)
}
