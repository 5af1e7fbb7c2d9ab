use super::print_json;
use cascade::clock::format_time;
use cascade::config::Config;
use cascade::journal::JournalWriter;
use std::path::PathBuf;
use std::process::ExitCode;

/// Place a named bookmark in a consistency group's journal, after its newest committed
/// delta. `cascade replay --until NAME` then rebuilds the volumes as of that delta.
///
/// For a split group (one with a `splitter:` section) its running splitter places it,
/// after every write acknowledged so far: one point across all its volumes.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// The consistency group whose journal gets the bookmark.
    #[arg(long)]
    cg: String,
    /// The bookmark's name, unique in the journal.
    #[arg(long)]
    name: String,
    /// Print the bookmark placed (name, number, delta, time) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let cg = cfg.group(&a.cg)?;
    let b = if cg.splitter.is_some() {
        // The running splitter holds the journal; it places the bookmark after every
        // write acknowledged so far.
        cascade::splitter::request_bookmark(&cfg.state_path(cg), &a.name)?
    } else {
        let mut w = JournalWriter::open(&cfg.journal_path(cg), cg.segment_size_mib << 20)?;
        w.add_bookmark(&a.name, cascade::clock::now_ns())?
    };
    if a.json {
        print_json(&b);
    } else {
        println!(
            "bookmark {} (#{}) after delta {} at {}",
            b.name,
            b.seq,
            b.after_delta,
            format_time(b.time_ns)
        );
    }
    Ok(ExitCode::SUCCESS)
}
