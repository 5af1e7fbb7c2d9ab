use super::print_json;
use cascade::clock::format_time;
use cascade::config::Config;
use cascade::journal::JournalWriter;
use std::path::PathBuf;
use std::process::ExitCode;

/// Place a named bookmark in a consistency group's journal, after its newest committed
/// delta. `cascade replay --until NAME` then rebuilds the volumes as of that delta.
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
    let mut w = JournalWriter::open(&cfg.journal_path(cg), cg.segment_size_mib << 20)?;
    let b = w.add_bookmark(&a.name, cascade::clock::now_ns())?;
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
