use super::print_json;
use cascade::clock::format_time;
use cascade::config::Config;
use cascade::journal::JournalWriter;
use std::path::PathBuf;
use std::process::ExitCode;

/// Place a named bookmark in a consistency group's journal, or across every stream
/// of a grid.
///
/// With --cg: after the group's newest committed delta; `cascade replay --until NAME`
/// then rebuilds the volumes as of it. For a split group (one with a `splitter:`
/// section) its running splitter places it, after every write acknowledged so far:
/// one point across all its volumes.
///
/// With --grid (the config's `grid:` section): takes the next value of the grid's
/// counter in its object store, holds every stream's writes (at most the grid's
/// hold-budget, default 50ms, for all to answer), and has each stream place a
/// bookmark of this name, carrying that value, at its cut; then lets the writes go.
/// A snapshot stream takes a cycle of its own, frozen across the hold. The bookmark
/// is complete once every registered stream's journal holds it and the store has
/// its mark: only then does `cascade restore --grid` offer it. A stream that does not
/// hold in time makes it incomplete (exit 1, naming the stream); its name stays
/// used. Runs on any host of the grid; the streams must be served (`cascade split`
/// or `cascade run`).
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// The consistency group whose journal gets the bookmark.
    #[arg(long, required_unless_present = "grid", conflicts_with = "grid")]
    cg: Option<String>,
    /// The grid (the config's `grid.name`) whose streams all get the bookmark.
    #[arg(long)]
    grid: Option<String>,
    /// The bookmark's name, unique in the journal (in the grid, with --grid).
    #[arg(long)]
    name: String,
    /// Print the bookmark placed (name, number, delta, time; with --grid: the
    /// value, each stream's cut and whether it is complete) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    if let Some(grid) = &a.grid {
        return grid_bookmark(&cfg, grid, &a.name, a.json);
    }
    let cg = cfg.group(a.cg.as_deref().expect("clap requires --cg or --grid"))?;
    let b = if cg.splitter.is_some() {
        // The running splitter holds the journal; it places the bookmark after every
        // write acknowledged so far.
        cascade::splitter::request_bookmark(&cfg.state_path(cg), &a.name)?
    } else {
        let mut w = JournalWriter::open(&cfg.journal_path(cg), cg.segment_size_mib << 20)?;
        w.add_bookmark(&a.name, cascade::clock::now_ns(), None)?
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

fn grid_bookmark(cfg: &Config, grid: &str, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let g = cascade::grid::Grid::open(cfg, Some(grid))?;
    let o = tokio::runtime::Handle::current()
        .block_on(cascade::grid::bookmark::bookmark(&g.asker(), name))?;
    if json {
        print_json(&o);
    } else {
        for s in &o.streams {
            let who = s.stream.as_deref().unwrap_or(&s.peer);
            match (&s.bookmark, &s.error) {
                (Some(b), _) => println!(
                    "  {who}: after delta {}{}{}",
                    b.after_delta,
                    s.held_at
                        .filter(|w| *w > 0)
                        .map_or(String::new(), |w| format!(" (write {w})")),
                    if s.recorded {
                        ""
                    } else {
                        "; its mark is not in the store yet"
                    }
                ),
                (None, Some(e)) => println!("  {who}: {e}"),
                (None, None) => println!("  {who}: released"),
            }
        }
        println!(
            "grid bookmark {} (value {}) {} across {} streams; writes held {:.1} ms, {:.1} ms in all",
            o.name,
            o.value,
            if o.complete { "complete" } else { "INCOMPLETE" },
            o.streams.len(),
            o.hold_ms,
            o.total_ms
        );
    }
    if o.complete {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(cascade::grid::bookmark::incomplete(&o).into())
    }
}
