//! Cycles that are interrupted or refused: a crash between a delta's commit and the
//! snapshot's advance, and freeze/thaw hooks that fail. Afterwards the journal still
//! replays exactly what the volumes held at each committed point.
mod common;

use cascade::cycle::journal_delta;
use cascade::journal::{Journal, JournalWriter};
use cascade::progress::NoProgress;
use cascade::replay::{replay, Destination};
use cascade::volume::driver_for;
use common::config::{command, Hooks};
use common::group::{noise, Group};

fn replay_matches(g: &Group, delta: u64, want: &[Vec<u8>]) {
    let j = Journal::open(&g.journal()).unwrap();
    let out = g.dir.join(format!("check-{delta}"));
    std::fs::create_dir_all(&out).unwrap();
    let targets: Vec<Destination> = (0..want.len())
        .map(|v| {
            out.join(format!("v{v}"))
                .display()
                .to_string()
                .parse()
                .unwrap()
        })
        .collect();
    replay(&j, delta, &targets, &NoProgress).unwrap();
    for (v, want) in want.iter().enumerate() {
        assert!(
            std::fs::read(out.join(format!("v{v}"))).unwrap() == *want,
            "v{v} at delta {delta}"
        );
    }
}

/// Commits delta `tag` but "crashes" before `advance`; with `moved`, the crash comes
/// after advance moved the old copy into the new snapshot's directory.
fn commit_without_advance(g: &Group, tag: u64, moved: bool) {
    let cfg = g.config();
    let cg = cfg.group("cg").unwrap();
    let d = driver_for(cg, &cfg.state_path(cg)).unwrap();
    let mut w = JournalWriter::open(&g.journal(), 64 << 20).unwrap();
    let base = d.open_snapshot(tag - 1).unwrap();
    let new = d.snapshot(tag).unwrap();
    journal_delta(
        &mut w,
        d.as_ref(),
        Some(&base),
        &new,
        &mut || Ok(()),
        &NoProgress,
    )
    .unwrap();
    if moved {
        for (b, n) in base.volumes.iter().zip(&new.volumes) {
            if n.live {
                std::fs::rename(&b.path, &n.path).unwrap();
            }
        }
    }
}

#[test]
fn interrupted_advance_is_finished_by_the_next_cycle() {
    for moved in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let g = Group::new(tmp.path(), &[2 << 20, 1 << 20]);
        g.write(0, 0, &noise(1, 1 << 20));
        g.cycle();
        let mut points = vec![g.contents()];
        g.write(1, 4096, &noise(2, 8192));
        commit_without_advance(&g, 2, moved);
        points.push(g.contents());
        g.write(0, 1 << 20, &noise(3, 70000));
        let r = g.cycle();
        assert_eq!(r.delta, 3);
        points.push(g.contents());
        for (i, p) in points.iter().enumerate() {
            replay_matches(&g, i as u64 + 1, p);
        }
        // The copy kept by the driver is exactly the last point.
        let cfg = g.config();
        let d = driver_for(
            cfg.group("cg").unwrap(),
            &cfg.state_path(cfg.group("cg").unwrap()),
        )
        .unwrap();
        let s = d.open_snapshot(3).unwrap();
        if s.volumes[0].live || !s.volumes[0].reflinked {
            assert_eq!(std::fs::read(&s.volumes[0].path).unwrap(), points[2][0]);
        }
        assert_eq!(d.snapshots().unwrap(), [3]);
    }
}

fn with_hooks(g: &Group, freeze: &str, thaw: &str) {
    g.configure(|c| {
        c.groups[0].hooks = Hooks {
            freeze: command(&["sh", "-c", freeze]),
            thaw: command(&["sh", "-c", thaw]),
            ..Hooks::default()
        }
    });
}

#[test]
fn hooks_run_around_the_capture() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    with_hooks(&g, "echo freeze >> hooks.log", "echo thaw >> hooks.log");
    g.write(0, 0, &noise(1, 4096));
    let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(g.dir.join("hooks.log")).unwrap(),
        "freeze\nthaw\n"
    );
}

#[test]
fn failing_hooks_fail_the_cycle_and_commit_nothing() {
    for (freeze, thaw, says) in [
        ("echo cannot-freeze >&2; exit 3", "true", "cannot-freeze"),
        ("true", "echo cannot-thaw >&2; exit 4", "cannot-thaw"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let g = Group::new(tmp.path(), &[1 << 20]);
        g.write(0, 0, &noise(1, 4096));
        g.cycle();
        let plain = g.config_file();
        with_hooks(&g, freeze, &format!("echo thawed >> thaw.log; {thaw}"));
        g.write(0, 0, &noise(2, 4096));
        let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(says) && err.contains("sh -c"), "{err}");
        assert_eq!(
            Journal::open(&g.journal()).unwrap().last_delta(),
            1,
            "nothing committed"
        );
        // Thaw runs once, also after a failed freeze that may have frozen something.
        assert_eq!(
            std::fs::read_to_string(g.dir.join("thaw.log")).unwrap(),
            "thawed\n",
            "thaw ran once"
        );
        // Once the hooks are gone the next cycle picks the change up.
        g.write_config(&plain);
        assert_eq!(g.cycle().delta, 2);
        replay_matches(&g, 2, &g.contents());
    }
}

/// A cycle whose index append fails after its Commit was fsynced has committed its
/// delta all the same: the new snapshot stays as the next base, so the next cycle
/// diffs against it (incremental, and exact) instead of journalling every volume
/// again. The freeze hook turns `index.cji` into a dangling symlink, which fails the
/// append but not a reader, who finds the delta in the segments.
#[test]
fn a_failed_index_append_after_the_commit_keeps_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[2 << 20, 1 << 20]);
    g.write(0, 0, &noise(1, 1 << 20));
    g.cycle();
    let mut points = vec![g.contents()];
    let plain = g.config_file();
    let index = g.journal().join("index.cji");
    let saved = g.dir.join("index.saved");
    with_hooks(
        &g,
        &format!(
            "mv {0} {1} && ln -s no-such-dir/index.cji {0}",
            index.display(),
            saved.display()
        ),
        "true",
    );
    g.write(1, 4096, &noise(2, 8192));
    let cfg = g.config();
    let err = cascade::cycle::run_cycle(&cfg, cfg.group("cg").unwrap(), &NoProgress)
        .map(|r| r.delta)
        .unwrap_err()
        .to_string();
    assert!(err.contains("index.cji"), "{err}");
    points.push(g.contents());
    std::fs::remove_file(&index).unwrap();
    g.write_config(&plain);
    assert_eq!(Journal::open(&g.journal()).unwrap().last_delta(), 2);

    g.write(0, 1 << 20, &noise(3, 70_000));
    let r = g.cycle();
    assert_eq!(
        (r.delta, r.full),
        (3, false),
        "diffed against delta 2's snapshot"
    );
    assert!(
        r.changed_bytes < 1 << 20,
        "only the change is journalled: {}",
        r.changed_bytes
    );
    points.push(g.contents());
    for (i, p) in points.iter().enumerate() {
        replay_matches(&g, i as u64 + 1, p);
    }
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_thaw_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.write(0, 0, &noise(1, 4096));
    g.cycle();
    with_hooks(&g, "sleep 30", "echo thawed >> thaw.log");
    g.configure(|c| c.groups[0].hooks.timeout = Some("1s".into()));
    let started = std::time::Instant::now();
    let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the hook was not cut short: {:?}",
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`sh -c sleep 30` did not finish within 1s and was killed"),
        "{err}"
    );
    assert_eq!(Journal::open(&g.journal()).unwrap().last_delta(), 1);
    assert_eq!(
        std::fs::read_to_string(g.dir.join("thaw.log")).unwrap(),
        "thawed\n"
    );
}

#[test]
fn max_freeze_thaws_the_group_and_abandons_the_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.write(0, 0, &noise(1, 4096));
    g.cycle();
    // The freeze hook outlasts max-freeze (not its own timeout): the group is thawed
    // at max-freeze, while the hook still runs, and the cycle keeps nothing.
    with_hooks(
        &g,
        "sleep 4; echo freeze-returned >> hooks.log",
        "echo thawed >> hooks.log",
    );
    g.configure(|c| c.groups[0].hooks.max_freeze = Some("1s".into()));
    g.write(0, 0, &noise(2, 4096));
    let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stayed frozen past hooks.max-freeze (1s)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(g.dir.join("hooks.log")).unwrap(),
        "thawed\nfreeze-returned\n",
        "thawed once, at max-freeze, before the freeze hook returned"
    );
    assert_eq!(Journal::open(&g.journal()).unwrap().last_delta(), 1);
    let cfg = g.config();
    let cg = cfg.group("cg").unwrap();
    let d = driver_for(cg, &cfg.state_path(cg)).unwrap();
    assert_eq!(
        d.snapshots().unwrap(),
        [1],
        "the abandoned cycle left no snapshot"
    );
    // Without the limit the next cycle picks the change up.
    g.configure(|c| c.groups[0].hooks = Hooks::default());
    assert_eq!(g.cycle().delta, 2);
    replay_matches(&g, 2, &g.contents());
}
