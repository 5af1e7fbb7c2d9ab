use super::{human_bytes, print_json};
use cascade::config::Config;
use cascade::journal::Journal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show each consistency group's journal (its first and last delta, after retention,
/// and its stored bytes) and, per target, the cursor, the lag in deltas and bytes, and
/// the last error. Cursors are as of each target's last export.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let mut groups = Vec::new();
    for cg in &cfg.consistency_groups {
        let journal = Journal::open(&cfg.journal_path(cg)).ok();
        let last = journal.as_ref().map_or(0, |j| j.last_delta());
        let first = journal.as_ref().map_or(0, |j| j.first_delta());
        let journal_bytes: u64 = journal
            .as_ref()
            .map_or(0, |j| j.deltas().iter().map(|d| d.stored_bytes).sum());
        let mut targets = Vec::new();
        for name in &cg.targets {
            let st = cascade::export::load_status(&cfg, cg, name);
            let cursor = st.as_ref().map_or(0, |s| s.cursor);
            let lag_bytes: u64 = journal.as_ref().map_or(0, |j| {
                j.deltas()
                    .iter()
                    .filter(|d| d.delta > cursor)
                    .map(|d| d.stored_bytes)
                    .sum()
            });
            targets.push(serde_json::json!({
                "target": name,
                "cursor": cursor,
                "lag_deltas": last.saturating_sub(cursor),
                "lag_bytes": lag_bytes,
                "last_export": st.as_ref().and_then(|s| s.last_export.clone()),
                "last_error": st.as_ref().and_then(|s| s.last_error.clone()),
            }));
        }
        groups.push(serde_json::json!({
            "cg": cg.name,
            "first_delta": first,
            "last_delta": last,
            "journal_bytes": journal_bytes,
            "targets": targets,
        }));
    }
    if a.json {
        print_json(&serde_json::json!({ "groups": groups }));
        return Ok(ExitCode::SUCCESS);
    }
    for g in &groups {
        let name = g["cg"].as_str().unwrap_or("");
        match g["last_delta"].as_u64().unwrap_or(0) {
            0 => println!("cg {name}: no committed delta yet"),
            last => println!(
                "cg {name}: last delta {last}; the journal holds deltas {}..={last} ({})",
                g["first_delta"],
                human_bytes(g["journal_bytes"].as_u64().unwrap_or(0)),
            ),
        }
        for t in g["targets"].as_array().into_iter().flatten() {
            let error = t["last_error"]
                .as_str()
                .map_or(String::new(), |e| format!("  last error: {e}"));
            println!(
                "  {:<16} cursor {:>6}  lag {} deltas, {}{error}",
                t["target"].as_str().unwrap_or(""),
                t["cursor"],
                t["lag_deltas"],
                human_bytes(t["lag_bytes"].as_u64().unwrap_or(0)),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
