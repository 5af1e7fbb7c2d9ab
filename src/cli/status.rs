use super::{human_bytes, print_json};
use cascade::config::Config;
use cascade::schedule::{daemon_pid, group_report, CycleResult, GroupReport};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Show whether the daemon runs and, per consistency group: its schedule, the last
/// cycle (when, result, delta, duration, error) and the next one, the journal's span
/// after retention and its stored bytes, and per target the cursor and the lag in
/// deltas, bytes and time, with the last export error. A split group shows its
/// splitter instead of a schedule: where it serves, the last write acknowledged and
/// the last journalled, and the bytes queued between them. With a `grid:`
/// section: the grid's bookmarks from its counter store, each complete or not (and
/// which streams lack it).
///
/// The lag in time is the age of the oldest delta the target does not hold yet: how
/// far back a restore from that target would land. Cursors are as of each target's
/// last export. The next cycle is the daemon's plan when it runs (a tick or a
/// retry), otherwise the schedule's next tick.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file (the one the daemon runs with).
    #[arg(long, short)]
    config: PathBuf,
    /// One JSON object (per refresh with --watch).
    #[arg(long)]
    json: bool,
    /// Refresh every SECONDS (default 2) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let every = match a.watch {
        Some(s) if !(0.1..=86_400.0).contains(&s) => {
            return Err(cascade::Error::InvalidArgument(format!(
                "--watch {s}: give a refresh interval between 0.1 and 86400 seconds"
            ))
            .into())
        }
        w => w.map(Duration::from_secs_f64),
    };
    let clear = every.is_some() && !a.json && std::io::stdout().is_terminal();
    loop {
        // Read the config each time, so a watch follows the daemon's reloads.
        let cfg = Config::load(&a.config)?;
        let daemon = daemon_pid(&cfg.state_dir);
        let mut groups: Vec<GroupReport> = cfg
            .consistency_groups
            .iter()
            .map(|cg| group_report(&cfg, cg))
            .collect();
        if daemon.is_none() {
            // The plan of a daemon that is gone is no plan; next_tick says when.
            groups.iter_mut().for_each(|g| g.state.next = None);
        }
        let grid = grid_report(&cfg);
        if a.json {
            print_json(&serde_json::json!({
                "time": chrono::Utc::now(),
                "daemon_pid": daemon,
                "groups": groups,
                "grid": grid,
            }));
        } else {
            if clear {
                print!("\x1b[2J\x1b[H");
            }
            print_text(daemon, &groups);
            if let Some(g) = &grid {
                print_grid(g);
            }
        }
        match every {
            Some(d) => std::thread::sleep(d),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn print_text(daemon: Option<u32>, groups: &[GroupReport]) {
    let now = chrono::Utc::now();
    match daemon {
        Some(pid) => println!("daemon: running (pid {pid})"),
        None => println!("daemon: not running"),
    }
    for g in groups {
        let name = &g.cg;
        match g.last_delta {
            0 => println!("cg {name}: no committed delta yet"),
            last => println!(
                "cg {name}: last delta {last}; the journal holds deltas {}..={last} ({})",
                g.first_delta,
                human_bytes(g.journal_bytes),
            ),
        }
        if let Some(e) = &g.journal_error {
            println!("  journal: {e}");
        }
        let s = &g.state;
        match (&g.schedule, &g.splitter) {
            (_, Some(split)) => match &split.serving {
                Some(v) => {
                    println!(
                        "  splitter: serving at {} (pid {}): {}; write {} acknowledged, {} journalled{}",
                        v.uri,
                        v.pid,
                        split_state(v),
                        v.last_numbered,
                        v.last_journalled,
                        v.base_delta
                            .map_or(", base delta being journalled".to_string(), |d| format!(
                                "; base delta {d}"
                            ))
                    );
                    println!(
                        "    lag: {} queued, {} writes, RPO {:.1} s{}",
                        human_bytes(v.lag.queued_bytes),
                        v.last_numbered.saturating_sub(v.last_journalled),
                        v.lag.rpo_seconds,
                        match v.lag.gaps {
                            0 => String::new(),
                            n => format!(
                                "; {n} gap(s) so far, {} read back",
                                human_bytes(v.lag.resynced_bytes)
                            ),
                        }
                    );
                    if let Some(e) = &v.journal_error {
                        println!("    journal refuses writes: {e}");
                    }
                }
                None => println!(
                    "  splitter: not served (`cascade run` or `cascade split` serves it at {})",
                    split.listen
                ),
            },
            (None, None) => println!("  schedule: none (cycled only by `cascade cycle`)"),
            (Some(sched), None) => {
                println!("  schedule: {sched}");
                if let (Some(started), Some(result)) = (s.last_started, s.last_result) {
                    let took = s.last_duration_ms.map_or(String::new(), |ms| {
                        format!(" in {:.1} s", ms as f64 / 1000.0)
                    });
                    let delta = match (result, s.last_delta) {
                        (CycleResult::Ok, Some(d)) => format!(", delta {d}"),
                        _ => String::new(),
                    };
                    println!(
                        "  last cycle: {} ({} ago): {}{delta}{took}",
                        started.format("%Y-%m-%d %H:%M:%S UTC"),
                        ago(now - started),
                        result.as_str()
                    );
                }
                if let Some(e) = &s.last_error {
                    println!("  last error: {e} ({} failures in a row)", s.failures);
                }
                // Without a daemon its plan was cleared above.
                let next = s.next.or(g.next_tick);
                if let Some(n) = next {
                    let by = if daemon.is_some() {
                        ""
                    } else {
                        " (when the daemon runs)"
                    };
                    println!(
                        "  next cycle: {} (in {}){by}",
                        n.format("%Y-%m-%d %H:%M:%S UTC"),
                        ago(n - now)
                    );
                }
            }
        }
        for t in &g.targets {
            let error = t
                .last_error
                .as_ref()
                .map_or(String::new(), |e| format!("  last error: {e}"));
            let behind = if t.lag_deltas == 0 {
                "current".to_string()
            } else {
                format!(
                    "lag {} deltas, {}, {}",
                    t.lag_deltas,
                    human_bytes(t.lag_bytes),
                    ago(chrono::TimeDelta::milliseconds(
                        (t.lag_seconds * 1000.0) as i64
                    ))
                )
            };
            println!("  {:<16} cursor {:>6}  {behind}{error}", t.target, t.cursor);
            if let Some(l) = &t.live {
                println!("{}", live_line(l));
            }
        }
    }
}

/// A live target's window, where it is held, and why it is shorter than asked.
fn live_line(l: &cascade::export::live::LiveStatus) -> String {
    let w = &l.window;
    let mut line = format!(
        "    window: delta {} to delta {} ({} entries, {} of undo in {})",
        w.oldest,
        w.newest,
        w.entries,
        human_bytes(w.bytes),
        l.dir.display()
    );
    if let Some(m) = &l.moving_to {
        line += &format!(
            "\n    moving from {} to {} (cut short? `cascade rewind` finishes it)",
            l.held.as_deref().unwrap_or("?"),
            m
        );
    } else if let Some(h) = &l.held {
        line += &format!("\n    held at {h}: exports wait until `cascade rewind --latest`");
    }
    if let Some(s) = &l.served {
        line += &format!("\n    {s}: exports wait until it stops");
    }
    if let Some(lost) = &l.undo_lost {
        line += &format!(
            "\n    undo was dropped at delta {} ({}): the window cannot reach before it",
            lost.delta, lost.reason
        );
    }
    line
}

/// A duration for people: 42 s, 3 min, 5 h, 2 d.
fn ago(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// A served split group's state as an operator reads it.
fn split_state(v: &cascade::splitter::SplitStatus) -> String {
    use cascade::splitter::Mode;
    let gap = v.lag.gap_after.map_or(String::new(), |a| {
        format!(", write order lost after write {a}")
    });
    match v.lag.mode {
        Some(Mode::Marking) => format!(
            "MARKING (the journal fell behind; {} marked{gap})",
            human_bytes(v.lag.dirty_bytes)
        ),
        Some(Mode::Resyncing) => format!(
            "RESYNCING ({} read back, {} to go{gap})",
            human_bytes(v.lag.resynced_bytes),
            human_bytes(v.lag.dirty_bytes)
        ),
        _ => "active".to_string(),
    }
}

/// The grid's bookmarks as its counter store has them, or why they cannot be read.
fn grid_report(cfg: &Config) -> Option<serde_json::Value> {
    let g = cfg.grid.as_ref()?;
    let read = cascade::grid::Grid::open(cfg, None).and_then(|grid| {
        let rt = cascade::replica::runtime()?;
        rt.block_on(async { tokio::try_join!(grid.counter.bookmarks(), grid.counter.streams()) })
    });
    Some(match read {
        Ok((bookmarks, streams)) => serde_json::json!({
            "name": g.name, "stream": g.stream, "counter": g.counter,
            "streams": streams.iter().map(|s| &s.stream).collect::<Vec<_>>(),
            "bookmarks": bookmarks,
        }),
        Err(e) => serde_json::json!({
            "name": g.name, "stream": g.stream, "counter": g.counter, "error": e.to_string(),
        }),
    })
}

fn print_grid(g: &serde_json::Value) {
    let s = |k: &str| g[k].as_str().unwrap_or("").to_string();
    println!(
        "grid {}: stream {} of {} (counter {})",
        s("name"),
        s("stream"),
        g["streams"].as_array().map_or(0, |a| a.len()),
        s("counter")
    );
    if let Some(e) = g["error"].as_str() {
        println!("  cannot read the counter store: {e}");
        return;
    }
    for b in g["bookmarks"].as_array().into_iter().flatten() {
        let marks = b["marks"].as_array().map_or(0, |m| m.len());
        let state = if b["complete"].as_bool() == Some(true) {
            "complete".to_string()
        } else if b["duplicate"].as_bool() == Some(true) {
            "void (its name is another value's)".to_string()
        } else {
            let missing: Vec<&str> = b["missing"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str())
                .collect();
            format!("INCOMPLETE: not in {}", missing.join(", "))
        };
        let time = b["time-ns"]
            .as_i64()
            .map(cascade::clock::format_time)
            .unwrap_or_default();
        println!(
            "  {:>6} {:<24} {time}  {marks} marks  {state}",
            b["value"].as_u64().unwrap_or(0),
            b["name"].as_str().unwrap_or("")
        );
    }
}
