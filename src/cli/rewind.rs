use super::{human_bytes, print_json};
use cascade::config::Config;
use cascade::export::live::RewindTo;
use cascade::export::LiveTarget;
use cascade::journal::Point;
use std::path::PathBuf;
use std::process::ExitCode;

/// Move a live block replica back to an earlier point, or forward to the newest.
///
/// A live target (a block target with `undo:`) keeps undo data for every delta it
/// applies, up to its `max-bytes` or `max-age`. `--to POINT` rolls the replica back
/// to any point inside that window: a delta id, a bookmark, a time, or `seq:N` of a
/// split group (the state just after write N). The work follows the change since the
/// point, not the volume's size. While a replica is rewound its exports wait
/// (`cascade status` says "held at"); `--latest` rolls it forward to the newest
/// exported point and the exports go on.
///
/// Everything the move writes is read and checked first: a point outside the window
/// is refused naming the window, damaged undo data before the replica changes. A
/// crash part way leaves the replica's cursor naming the move; running `cascade
/// rewind` again finishes it first, to the exact point.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("whither").required(true).args(["to", "latest"])))]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// The live block target.
    #[arg(long)]
    target: String,
    /// The consistency group, when several name the target.
    #[arg(long)]
    cg: Option<String>,
    /// The point to go back (or forward) to: delta id, bookmark, time or seq:N.
    #[arg(long, value_name = "POINT")]
    to: Option<Point>,
    /// Roll forward to the newest exported point; exports resume.
    #[arg(long)]
    latest: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let to = match a.to {
        Some(p) => RewindTo::Point(p),
        None => RewindTo::Latest,
    };
    let mut target = LiveTarget::open(&cfg, &a.target, a.cg.as_deref())?;
    let r = target.rewind(&cfg, &to, super::progress::observer().as_ref())?;
    if a.json {
        print_json(&r);
    } else {
        println!(
            "{}: from {} to {}: {} entries, {} written; {}",
            r.target,
            r.from,
            r.to,
            r.steps,
            human_bytes(r.bytes),
            if r.held {
                "held there: exports wait until `cascade rewind --latest`"
            } else {
                "live again: exports go on"
            }
        );
        println!(
            "  window: delta {} to delta {} ({} of undo)",
            r.window.oldest,
            r.window.newest,
            human_bytes(r.window.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
