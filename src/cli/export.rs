use super::{human_bytes, print_json};
use cascade::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Bring replica targets up to the newest committed delta, then exit.
///
/// Every target keeps its own durable cursor (the newest delta it holds), so a target
/// that was offline catches up from where it stopped, and one that fails does not
/// hold up the others. Exits 1 if any target failed; `cascade status` shows why.
///
/// Object targets take a split group's deltas in runs, one object per run; this
/// command uploads every run at once (the daemon lets a run grow for the target's
/// `batch`, default 30s).
///
/// After exporting, object targets build a synthetic full image when
/// `synthetic-full-every` delta objects have gone up since the last one and apply their
/// `retention`; then each group's journal is pruned by its `journal-retention`,
/// never past what its slowest target holds (see `cascade journal prune`).
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Only this consistency group (default: all that name targets).
    #[arg(long)]
    cg: Option<String>,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// Print one JSON line per target.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let groups: Vec<_> = match &a.cg {
        Some(name) => vec![cfg.group(name)?],
        None => cfg
            .consistency_groups
            .iter()
            .filter(|g| a.target.as_ref().is_none_or(|t| g.targets.contains(t)))
            .collect(),
    };
    if let Some(t) = &a.target {
        cfg.target(t)?;
    }
    let progress = super::progress::observer();
    let mut failed = false;
    for cg in groups {
        // One group that cannot export (no journal yet, say) does not stop the others.
        let results = match cascade::export::export(
            &cfg,
            cg,
            a.target.as_deref(),
            cascade::export::Flush::All,
            &*progress,
        ) {
            Ok(r) => r,
            Err(e) if a.cg.is_none() => {
                failed = true;
                println!("{}: FAILED: {e}", cg.name);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for r in results {
            failed |= r.last_error.is_some();
            if a.json {
                print_json(&serde_json::json!({ "cg": cg.name, "status": r }));
                continue;
            }
            match &r.last_error {
                None => println!(
                    "{}/{} ({}): at delta {}, {} applied, {}{}",
                    cg.name,
                    r.target,
                    r.kind,
                    r.cursor,
                    r.applied,
                    human_bytes(r.bytes),
                    upkeep(&r.upkeep)
                ),
                Some(e) => println!(
                    "{}/{} ({}): FAILED after delta {}: {e}",
                    cg.name, r.target, r.kind, r.cursor
                ),
            }
        }
        if cg.journal_retention.prunes() {
            match cascade::export::prune_journal(&cfg, cg, false) {
                Ok(p) if a.json => print_json(&serde_json::json!({ "cg": cg.name, "journal": p })),
                Ok(p) => super::journal::print_prune(&p),
                // A cycle holds the journal: this export's work is done, and the next
                // export prunes.
                Err(e @ cascade::error::Error::Locked { .. }) => {
                    println!("{}: journal retention skipped this time: {e}", cg.name)
                }
                Err(e) => {
                    failed = true;
                    println!("{}: journal retention FAILED: {e}", cg.name);
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What an export did to a replica's history, for the one-line summary.
fn upkeep(u: &cascade::export::Upkeep) -> String {
    let mut s = String::new();
    if let Some(d) = u.synthetic_full {
        s += &format!("; synthetic full image at delta {d}");
    }
    if u.deleted_objects > 0 {
        s += &format!(
            "; retention deleted {} objects ({})",
            u.deleted_objects,
            human_bytes(u.deleted_bytes)
        );
    }
    if let Some(at) = u.deletable_at_ns {
        s += &format!(
            "; {} objects retention lets go are still under object lock, the first deletable at {}",
            u.locked_objects,
            chrono::DateTime::from_timestamp_nanos(at)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    s
}
