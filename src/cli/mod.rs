//! Command-line parsing, one file per verb. Each verb fills an options struct and calls
//! the library; output is human text, or JSON with `--json` for scripts.
mod bookmark;
mod cycle;
mod export;
mod journal;
mod key;
pub mod progress;
mod replay;
mod restore;
mod rewind;
mod run;
mod serve;
mod split;
mod status;
mod target;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cascade",
    version,
    about = "Snapshot-diff journal cascader: snapshots a consistency group of volumes, journals the changes, replays them anywhere",
    long_about = "cascade snapshots a consistency group (CG) of volumes together, diffs each snapshot set \
against the previous one, and writes the changed extents to one checksummed, zstd-compressed change journal. \
Replicas are rebuilt from the journal at any committed point: a delta id, a bookmark or a time.\n\n\
Exit codes: 0 ok, 1 I/O or other failure, 2 bad config or arguments, 3 something named does not exist, \
4 corrupt journal, 5 target too small, 6 locked by another cascade process."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines for people (human) or one JSON object per line (json), on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// How to show the progress of long work: cycle, export, replay, restore, journal verify.
    ///
    /// Progress goes to stderr, so stdout keeps the command's report, `--json` or not.
    /// It counts bytes: read from snapshots by a cycle; of volume checked, then
    /// written, by a replay or a restore (a restore onto existing targets first
    /// downloads the objects); of journal carried to each target by `export`; of
    /// segments read by `journal verify`. Each phase starts from zero.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t)]
    pub progress: progress::ProgressMode,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Cycle(cycle::Args),
    Replay(replay::Args),
    #[command(subcommand)]
    Journal(journal::Command),
    Bookmark(bookmark::Args),
    Export(export::Args),
    #[command(subcommand)]
    Key(key::Command),
    Restore(restore::Args),
    Rewind(rewind::Args),
    Serve(serve::Args),
    Status(status::Args),
    #[command(subcommand)]
    Target(target::Command),
    Run(run::Args),
    Split(split::Args),
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Cycle(a) => cycle::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Journal(c) => journal::run(c),
        Command::Bookmark(a) => bookmark::run(a),
        Command::Export(a) => export::run(a),
        Command::Key(c) => key::run(c),
        Command::Restore(a) => restore::run(a),
        Command::Rewind(a) => rewind::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Status(a) => status::run(a),
        Command::Target(c) => target::run(c),
        Command::Run(a) => run::run(a),
        Command::Split(a) => split::run(a),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Logs go to stderr. The daemon logs at info by default (its log is its record);
/// other verbs only warn, since their report is on stdout.
pub fn init_logging(verbose: u8, format: LogFormat, daemon: bool) {
    let default = match verbose {
        0 if !daemon => "warn",
        0 | 1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => fmt.init(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The one place exit codes are decided.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    use cascade::Error;
    let code = match e.downcast_ref::<Error>() {
        Some(
            Error::Config { .. }
            | Error::InvalidArgument(_)
            | Error::AlreadyExists(_)
            | Error::Key { .. },
        ) => 2,
        Some(Error::NotFound(_)) => 3,
        Some(
            Error::Corrupt { .. }
            | Error::CorruptObject { .. }
            | Error::CorruptUndo { .. }
            | Error::UnsupportedVersion { .. },
        ) => 4,
        Some(Error::TargetTooSmall { .. }) => 5,
        Some(Error::Locked { .. } | Error::DaemonRunning { .. } | Error::OtherWriter { .. }) => 6,
        _ => 1,
    };
    ExitCode::from(code)
}

/// Prints `value` as one line of JSON.
fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("reports serialise")
    );
}

/// Bytes for people: 1.5 GiB, 12.0 MiB, 512 B.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The report of a replay or a restore, for people or as JSON. `what` says what was
/// done ("replayed", "restored from URL").
fn print_replay_report(r: &cascade::replay::ReplayReport, what: &str, json: bool) {
    if json {
        print_json(r);
        return;
    }
    let until_write = r
        .until_write
        .map_or(String::new(), |w| format!(" (to write {w})"));
    println!(
        "{what}: deltas {}..={}{until_write}, {} written, {} zeroed",
        r.from,
        r.until,
        human_bytes(r.data_bytes),
        human_bytes(r.zero_bytes)
    );
    for v in &r.volumes {
        println!(
            "  {:<16} -> {} ({})",
            v.id,
            v.path.display(),
            human_bytes(v.size)
        );
    }
}
