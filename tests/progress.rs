//! `--progress`: long work (a first full cycle, export, replay, restore, journal verify) tells
//! its progress on stderr as JSON lines when asked, and nothing when not on a terminal
//! or told `none`; stdout keeps the command's report either way.
mod common;

use common::config::TargetFile;
use common::group::{noise, Group};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

/// One progress line: phase, bytes done, bytes in all, whether it ends its phase.
#[derive(Debug)]
struct Line {
    phase: String,
    done: u64,
    total: u64,
    last: bool,
}

/// The progress lines of `stderr`; anything else there (warnings) is left out.
fn progress_lines(stderr: &[u8]) -> Vec<Line> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("progress").is_some())
        .map(|v| Line {
            phase: v["progress"].as_str().unwrap().to_string(),
            done: v["done_bytes"].as_u64().unwrap(),
            total: v["total_bytes"].as_u64().unwrap(),
            last: v["final"].as_bool().unwrap(),
        })
        .collect()
}

/// Checks that a successful command told exactly `phases`, in order, each counting up
/// to its total and ending on one final line with done == total > 0; returns each
/// phase's total.
fn phases((o, took): &(Output, Duration), phases: &[&str]) -> Vec<u64> {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let lines = progress_lines(&o.stderr);
    // At most about one line a second, besides each phase's final one.
    let most = phases.len() as u64 + took.as_secs() + 1;
    assert!(
        lines.len() as u64 <= most,
        "{} lines in {took:?}: {stderr}",
        lines.len()
    );
    let mut told: Vec<&str> = lines.iter().map(|l| l.phase.as_str()).collect();
    told.dedup();
    assert_eq!(told, phases, "{stderr}");
    let mut totals = Vec::new();
    for phase in phases {
        let mine: Vec<&Line> = lines.iter().filter(|l| l.phase == *phase).collect();
        for pair in mine.windows(2) {
            assert!(pair[0].done <= pair[1].done, "done went back: {stderr}");
            assert!(!pair[0].last, "a line after the final one: {stderr}");
        }
        for l in &mine {
            assert!(l.done <= l.total, "done past the total: {stderr}");
        }
        let last = mine.last().unwrap();
        assert!(last.last, "no final line for {phase}: {stderr}");
        assert!(
            last.done == last.total && last.total > 0,
            "{phase} ended at {} of {}: {stderr}",
            last.done,
            last.total
        );
        totals.push(last.total);
    }
    totals
}

/// Runs the binary in the group's directory, timed.
fn run(g: &Group, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let o = g.cascade(args);
    (o, started.elapsed())
}

fn json((o, _): &(Output, Duration)) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON report ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// Two volumes of a few MiB with data, holes and a gap, in journal segments of 1 MiB
/// so a verify crosses several.
fn group(dir: &std::path::Path) -> Group {
    let g = Group::new(dir, &[6 << 20, 3 << 20]);
    g.configure(|c| {
        c.groups[0].segment_size_mib = Some(1);
        c.groups[0].targets = vec!["vault".into()];
    });
    g.write(0, 0, &noise(1, 4 << 20));
    g.write(0, 5 << 20, &noise(2, 512 << 10));
    g.write(1, 1 << 20, &noise(3, 1 << 20));
    g.write_target("vault", &TargetFile::object("../vault"));
    g
}

fn cycle(g: &Group, progress: &str) -> (Output, Duration) {
    run(
        g,
        &[
            "--progress",
            progress,
            "cycle",
            "-c",
            "cascade.yaml",
            "--cg",
            "cg",
            "--json",
        ],
    )
}

/// The bytes a cycle read, from its report.
fn read_bytes(report: &Value) -> u64 {
    report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["read_bytes"].as_u64().unwrap())
        .sum()
}

/// The volume bytes a replay or restore set, from its report.
fn set_bytes(report: &Value) -> u64 {
    report["data_bytes"].as_u64().unwrap() + report["zero_bytes"].as_u64().unwrap()
}

#[test]
fn json_progress_counts_every_long_command_to_its_total() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());

    // The first cycle reads every allocated byte; its total is known before it reads.
    let o = cycle(&g, "json");
    let totals = phases(&o, &["cycle"]);
    let report = json(&o);
    assert_eq!(report["full"], true);
    assert_eq!(totals, [read_bytes(&report)]);
    assert!(totals[0] >= 5 << 20, "{totals:?}");

    // An incremental cycle finds its total as it goes, and still ends on it.
    g.write(1, 0, &noise(4, 256 << 10));
    let o = cycle(&g, "json");
    let totals = phases(&o, &["cycle"]);
    assert_eq!(totals, [read_bytes(&json(&o))]);

    // Replay checks everything, then writes: two phases over the same bytes.
    let o = run(
        &g,
        &[
            "replay",
            "journals/cg",
            "--to",
            "r0.img",
            "r1.img",
            "--json",
            "--progress",
            "json",
        ],
    );
    let totals = phases(&o, &["check", "replay"]);
    let report = json(&o);
    assert_eq!(totals, [set_bytes(&report), set_bytes(&report)]);
    assert_eq!(
        g.contents()[0],
        std::fs::read(g.dir.join("r0.img")).unwrap()
    );

    // Verify reads every segment.
    let o = run(
        &g,
        &[
            "--progress",
            "json",
            "journal",
            "verify",
            "journals/cg",
            "--json",
        ],
    );
    let totals = phases(&o, &["verify"]);
    let report = json(&o);
    assert_eq!(report["ok"], true);
    assert!(report["segments"].as_u64().unwrap() > 3, "{report}");
    assert!(totals[0] > report["stored_bytes"].as_u64().unwrap());

    // Restore from a directory replica: into new files it streams, in one phase.
    // Export counts the journal bytes it carries, one phase a target.
    let o = run(
        &g,
        &[
            "--progress",
            "json",
            "export",
            "-c",
            "cascade.yaml",
            "--json",
        ],
    );
    let totals = phases(&o, &["export vault"]);
    let status = &json(&o)["status"];
    assert_eq!(status["cursor"], 2, "{status}");
    let journal = cascade::journal::Journal::open(&g.journal()).unwrap();
    let stored: u64 = journal.deltas().iter().map(|d| d.stored_bytes).sum();
    assert_eq!(totals, [stored]);
    let restore = |to: [&str; 2]| {
        run(
            &g,
            &[
                "restore",
                "--from",
                "vault",
                "--to",
                to[0],
                to[1],
                "--work-dir",
                ".",
                "--json",
                "--progress",
                "json",
            ],
        )
    };
    let o = restore(["n0.img", "n1.img"]);
    let totals = phases(&o, &["restore"]);
    assert_eq!(totals, [set_bytes(&json(&o))]);
    assert_eq!(
        g.contents()[1],
        std::fs::read(g.dir.join("n1.img")).unwrap()
    );

    // Onto existing files it downloads first, then replays the download.
    let o = restore(["r0.img", "r1.img"]);
    let totals = phases(&o, &["download", "check", "replay"]);
    let report = json(&o);
    assert_eq!(&totals[1..], [set_bytes(&report), set_bytes(&report)]);
}

#[test]
fn no_progress_lines_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    // Tests run with stderr on a pipe, so the default (auto) draws nothing, as `none`.
    for (seed, progress) in [None, Some("none"), Some("auto"), Some("bar")]
        .into_iter()
        .enumerate()
    {
        let mut args: Vec<&str> = progress.map_or(vec![], |p| vec!["--progress", p]);
        args.extend(["cycle", "-c", "cascade.yaml", "--cg", "cg", "--json"]);
        let o = run(&g, &args);
        assert!(read_bytes(&json(&o)) > 0, "{progress:?} {}", json(&o));
        let o = o.0;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for args in [
            &["replay", "journals/cg", "--to", "r0.img", "r1.img"][..],
            &["journal", "verify", "journals/cg"],
        ] {
            let mut args = args.to_vec();
            if let Some(p) = progress {
                args.extend(["--progress", p]);
            }
            let o = g.cascade(&args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(!o.stdout.is_empty());
            assert!(
                o.stderr.is_empty(),
                "{progress:?} {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        // The next cycle has something to read.
        g.write(0, 0, &noise(21 + 2 * seed as u64, 4096));
    }
}

/// On a terminal (a pty from script(1)) each phase's finished bar keeps its own line:
/// the next phase's bar and the report start below it instead of overwriting it or
/// running on after it.
#[test]
fn bars_on_a_terminal_keep_their_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    assert!(cycle(&g, "none").0.status.success());
    let replay = format!(
        "{} replay journals/cg --to r0.img r1.img",
        env!("CARGO_BIN_EXE_cascade")
    );
    let o = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &replay, "/dev/null"])
        .current_dir(&g.dir)
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    // What stays on screen: each \r-redrawn line's last state.
    let lines: Vec<&str> = screen
        .split("\r\n")
        .map(|l| l.rsplit('\r').next().unwrap().trim_start_matches("\x1b[2K"))
        .collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}: {lines:?}"))
    };
    let (check, replayed, report) = (at("check ["), at("replay ["), at("replayed:"));
    assert!(check < replayed && replayed < report, "{lines:?}");
    for bar in [check, replayed] {
        assert!(lines[bar].contains("] 9.00 MiB/9.00 MiB"), "{lines:?}");
    }
}
