use super::{human_bytes, print_json};
use cascade::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Take one cycle of a consistency group now: snapshot its volumes together, journal
/// what changed since the last cycle as one delta, retire the previous snapshots.
///
/// The first cycle of a group journals every allocated byte (a full delta); later ones
/// only what changed. A cycle either commits its delta or leaves the journal as it was.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// The consistency group to cycle.
    #[arg(long)]
    cg: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let cg = cfg.group(&a.cg)?;
    let r = cascade::cycle::run_cycle(&cfg, cg, super::progress::observer().as_ref())?;
    if a.json {
        print_json(&r);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(t) = &r.recovered_tail {
        println!(
            "recovered: cut off {} of an interrupted write at {} ({})",
            human_bytes(t.bytes),
            t.cut,
            t.reason
        );
    }
    println!(
        "cg {}: delta {} ({}) at {}: {} changed, {} in the journal, {} ms",
        r.cg,
        r.delta,
        if r.full { "full" } else { "incremental" },
        r.time,
        human_bytes(r.changed_bytes),
        human_bytes(r.stored_bytes),
        r.total_ms
    );
    for v in &r.volumes {
        println!(
            "  {:<16} size {:>10}  changed {:>10}  read {:>10}",
            v.id,
            human_bytes(v.size),
            human_bytes(v.changed_bytes),
            human_bytes(v.read_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
