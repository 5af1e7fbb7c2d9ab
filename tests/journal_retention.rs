//! Journal retention: the journal drops deltas its policy lets go, never one a target
//! still needs, survives a crash in the middle of pruning, and everything that reads
//! it (replay, verify, export, the next cycle) goes on from the new start.
mod common;

use cascade::journal::{Journal, JournalWriter};
use common::config::{Retention, TargetFile};
use common::group::{noise, Group};
use std::path::Path;

/// A group of two volumes with 1 MiB journal segments, a block target `near`
/// (image files) and an object target `vault` (a directory), keeping 2 deltas.
fn group(dir: &Path) -> Group {
    let g = Group::new(dir, &[3 << 20, 1 << 20]);
    g.block_target("near", true);
    g.write_target("vault", &TargetFile::object("../vault"));
    g.configure(|c| {
        let cg = &mut c.groups[0];
        cg.targets = vec!["near".into(), "vault".into()];
        cg.segment_size_mib = Some(1);
        cg.journal_retention = Retention::keep_deltas(2);
    });
    g
}

/// A cycle after writing 1.5 MiB of fresh data, so deltas span segments.
fn change_and_cycle(g: &Group, i: u64) -> Vec<Vec<u8>> {
    g.write(0, (i * 700_000) % (2 << 20), &noise(100 + i, 1_500_000));
    g.write(1, (i * 90_000) % 900_000, &noise(200 + i, 100_000));
    g.cycle();
    g.contents()
}

fn ok(g: &Group, args: &[&str]) -> String {
    let o = g.cascade(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn replica(g: &Group) -> Vec<Vec<u8>> {
    ["v0", "v1"]
        .iter()
        .zip([3 << 20, 1 << 20])
        .map(|(v, n)| std::fs::read(g.dir.join(format!("near/{v}.img"))).unwrap()[..n].to_vec())
        .collect()
}

fn restore(g: &Group, until: u64) -> Vec<Vec<u8>> {
    let out = g.dir.join(format!("restored-{until}"));
    std::fs::create_dir_all(&out).unwrap();
    let to: Vec<String> = ["v0", "v1"]
        .iter()
        .map(|v| format!("{v}={}", out.join(v).display()))
        .collect();
    let until = until.to_string();
    let mut args = vec!["restore", "--from", "vault", "--until", &until, "--to"];
    args.extend(to.iter().map(String::as_str));
    ok(g, &args);
    ["v0", "v1"]
        .iter()
        .map(|v| std::fs::read(out.join(v)).unwrap())
        .collect()
}

fn segments(g: &Group) -> Vec<u64> {
    cascade::journal::frame::list_segments(&g.journal()).unwrap()
}

#[test]
fn the_slowest_target_bounds_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    let mut points = Vec::new();
    for i in 0..5 {
        points.push(change_and_cycle(&g, i));
    }
    g.bookmark("after-5");

    // Only the block target exports: the object target holds nothing, so nothing goes.
    let out = ok(&g, &["export", "-c", "cascade.yaml", "--target", "near"]);
    assert!(
        out.contains("nothing to prune") && out.contains("`vault`, holds delta 0"),
        "{out}"
    );
    assert_eq!(Journal::open(&g.journal()).unwrap().first_delta(), 1);

    // A dry run says what would go and changes nothing.
    let out = ok(
        &g,
        &[
            "journal",
            "prune",
            "-c",
            "cascade.yaml",
            "--cg",
            "cg",
            "--dry-run",
        ],
    );
    assert!(out.contains("would start at delta 1"), "{out}");

    // Both export; the policy (2 deltas) now decides: deltas 1..=3 go.
    let before = segments(&g);
    let out = ok(&g, &["export", "-c", "cascade.yaml"]);
    assert!(
        out.contains("journal pruned to start at delta 4 (3 deltas"),
        "{out}"
    );
    let j = Journal::open(&g.journal()).unwrap();
    assert_eq!((j.first_delta(), j.last_delta()), (4, 5));
    assert_eq!(
        j.bookmarks()
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["after-5"]
    );
    let after = segments(&g);
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert_eq!(after.first(), Some(&j.delta(4).unwrap().begin.segment));
    assert!(ok(&g, &["journal", "verify", "journals/cg", "--json"]).contains("\"ok\":true"));

    // Replaying onto fresh files needs a full delta, which the pruned journal lacks.
    let o = g.cascade(&["replay", "journals/cg", "--to", "x0.img", "x1.img"]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("begins at delta 4") && err.contains("restore from an object replica"),
        "{err}"
    );

    // Cycles, bookmarks and exports go on from the new start.
    for i in 5..8 {
        points.push(change_and_cycle(&g, i));
    }
    g.bookmark("after-8");
    let out = ok(&g, &["export", "-c", "cascade.yaml", "--json"]);
    assert!(out.contains("\"first_after\":7"), "{out}");
    assert!(replica(&g) == points[7], "block replica at delta 8");
    for d in [1, 4, 8] {
        assert!(
            restore(&g, d) == points[d as usize - 1],
            "object replica at delta {d}"
        );
    }
    let out = ok(&g, &["journal", "ls", "journals/cg", "--json"]);
    let ls: serde_json::Value = serde_json::from_str(&out).unwrap();
    let seqs: Vec<u64> = ls["bookmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2], "bookmark numbering goes on across a prune");

    // Once every bookmark is pruned, numbering still goes on from the start file, and
    // the journal rescans cleanly without its index.
    for i in 8..10 {
        points.push(change_and_cycle(&g, i));
    }
    let out = ok(&g, &["export", "-c", "cascade.yaml", "--target", "near"]);
    assert!(out.contains("`vault`, holds delta 8"), "{out}");
    ok(&g, &["export", "-c", "cascade.yaml"]);
    let j = Journal::open(&g.journal()).unwrap();
    assert_eq!((j.first_delta(), j.bookmarks().len()), (9, 0));
    // The name `after-5` is free again in the journal; the vault still lists the old
    // one (no retention there), and from now on the name means the new point.
    g.bookmark("after-5");
    std::fs::remove_file(g.journal().join("index.cji")).unwrap();
    points.push(change_and_cycle(&g, 10));
    ok(&g, &["export", "-c", "cascade.yaml"]);
    ok(
        &g,
        &[
            "restore", "--from", "vault", "--until", "after-5", "--to", "n0.img", "n1.img",
        ],
    );
    assert!(
        std::fs::read(g.dir.join("n0.img")).unwrap() == points[9][0],
        "a reused bookmark name means the newer point"
    );
    let j = Journal::open(&g.journal()).unwrap();
    assert_eq!(
        j.bookmarks()
            .iter()
            .map(|b| (b.seq, b.after_delta))
            .collect::<Vec<_>>(),
        [(3, 10)]
    );
    assert!(ok(&g, &["journal", "verify", "journals/cg", "--json"]).contains("\"ok\":true"));

    // A target named after the deltas it needs were pruned is refused, clearly.
    g.block_target("late", true);
    g.configure(|c| c.groups[0].targets.push("late".into()));
    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("cg/late (block): FAILED") && out.contains("now begins at delta 10"),
        "{out}"
    );
}

/// The cut stops exactly after the slowest target's cursor, even when the policy
/// would go further.
#[test]
fn the_cut_stops_right_after_the_slowest_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    for i in 0..5 {
        change_and_cycle(&g, i);
    }
    ok(&g, &["export", "-c", "cascade.yaml"]);
    for i in 5..9 {
        change_and_cycle(&g, i);
    }
    let out = ok(&g, &["export", "-c", "cascade.yaml", "--target", "near"]);
    assert!(
        out.contains("journal pruned to start at delta 6")
            && out
                .contains("policy keeps deltas from 8; the slowest target, `vault`, holds delta 5"),
        "{out}"
    );
    assert_eq!(Journal::open(&g.journal()).unwrap().first_delta(), 6);
}

/// A journal pruned to a full delta is whole again: replay onto fresh files works.
#[test]
fn a_journal_pruned_to_a_full_delta_replays_from_scratch() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[2 << 20]);
    let mut points = Vec::new();
    for i in 0..3 {
        points.push(change_and_cycle_one(&g, i));
    }
    // Losing the driver's snapshot makes the next delta full.
    std::fs::remove_dir_all(g.dir.join("state/cg/snapshots")).unwrap();
    for i in 3..5 {
        points.push(change_and_cycle_one(&g, i));
    }
    let j = Journal::open(&g.journal()).unwrap();
    assert!(j.delta(4).unwrap().flags & 1 != 0, "delta 4 is full");
    drop(j);
    let mut w = JournalWriter::open(&g.journal(), 64 << 20).unwrap();
    let r = w.prune_before(4).unwrap();
    assert_eq!((r.first_before, r.first_after, r.deltas_removed), (1, 4, 3));
    drop(w);
    for d in [4u64, 5] {
        let out = g.dir.join(format!("r{d}.img"));
        let until = d.to_string();
        let o = g.cascade(&[
            "replay",
            "journals/cg",
            "--until",
            &until,
            "--to",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            std::fs::read(&out).unwrap() == points[d as usize - 1][0],
            "delta {d}"
        );
    }
    let o = g.cascade(&["replay", "journals/cg", "--until", "3", "--to", "r3.img"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("delta 3 does not exist") && err.contains("4..=5"),
        "{err}"
    );
}

fn change_and_cycle_one(g: &Group, i: u64) -> Vec<Vec<u8>> {
    g.write(0, i * 100_000, &noise(300 + i, 150_000));
    g.cycle();
    g.contents()
}

/// A crash after the new start is recorded but before the old index and segments are
/// gone leaves a journal that opens at the new start; the next prune tidies up.
#[test]
fn a_crash_in_the_middle_of_pruning_is_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    for i in 0..5 {
        change_and_cycle(&g, i);
    }
    let saved = tmp.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let names: Vec<_> = std::fs::read_dir(g.journal())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".cjs") || n == "index.cji")
        .collect();
    for n in &names {
        std::fs::copy(g.journal().join(n), saved.join(n)).unwrap();
    }
    let mut w = JournalWriter::open(&g.journal(), 1 << 20).unwrap();
    w.prune_before(4).unwrap();
    drop(w);
    // Put back the old index and the removed segments, as if the crash came right
    // after the start file was written.
    for n in &names {
        let dst = g.journal().join(n);
        if n == "index.cji" || !dst.exists() {
            std::fs::copy(saved.join(n), dst).unwrap();
        }
    }
    let j = Journal::open(&g.journal()).unwrap();
    assert_eq!((j.first_delta(), j.last_delta()), (4, 5));
    assert!(ok(&g, &["journal", "verify", "journals/cg", "--json"]).contains("\"ok\":true"));
    drop(j);
    let mut w = JournalWriter::open(&g.journal(), 1 << 20).unwrap();
    w.prune_before(5).unwrap();
    let first = w.journal().delta(5).unwrap().begin.segment;
    drop(w);
    assert!(
        segments(&g).iter().all(|s| *s >= first),
        "leftovers removed"
    );
    assert!(ok(&g, &["journal", "verify", "journals/cg", "--json"]).contains("\"ok\":true"));
    // The newest delta always stays.
    let mut w = JournalWriter::open(&g.journal(), 1 << 20).unwrap();
    let err = w.prune_before(6).unwrap_err().to_string();
    assert!(err.contains("the newest delta, 5, always stays"), "{err}");
}

/// A reader that opened the journal before a prune (a CLI replay while the daemon
/// prunes) still finds every segment it may read; the space comes back at the next
/// prune after the reader is gone.
#[test]
fn a_reader_keeps_the_segments_it_may_read_until_it_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    let mut points = Vec::new();
    for i in 0..5 {
        points.push(change_and_cycle(&g, i));
    }
    let before = segments(&g);
    let reader = Journal::open(&g.journal()).unwrap();

    let mut w = JournalWriter::open(&g.journal(), 1 << 20).unwrap();
    let r = w.prune_before(4).unwrap();
    let first = w.journal().delta(4).unwrap().begin.segment;
    drop(w);
    assert_eq!((r.first_after, r.deltas_removed), (4, 3), "{r:?}");
    assert_eq!(r.segments_removed, 0, "{r:?}");
    assert!(r.segments_kept_for_readers > 0, "{r:?}");
    assert_eq!(segments(&g), before, "nothing removed under the reader");
    // A new reader opens at the new start...
    assert_eq!(Journal::open(&g.journal()).unwrap().first_delta(), 4);
    // ...while the old one still replays a point the prune dropped.
    let out = g.dir.join("old-point");
    std::fs::create_dir_all(&out).unwrap();
    let targets: Vec<cascade::replay::Destination> = ["v0", "v1"]
        .iter()
        .map(|v| format!("{v}={}", out.join(v).display()).parse().unwrap())
        .collect();
    cascade::replay::replay(&reader, 2, &targets, &cascade::progress::NoProgress).unwrap();
    for (i, v) in ["v0", "v1"].iter().enumerate() {
        assert!(
            std::fs::read(out.join(v)).unwrap() == points[1][i],
            "{v} at delta 2"
        );
    }
    drop(reader);

    // The journal-retention prune (as the daemon and `cascade journal prune` run it)
    // removes what was kept even though its start does not move.
    let o = ok(
        &g,
        &["journal", "prune", "-c", "cascade.yaml", "--cg", "cg"],
    );
    assert!(o.contains("pruned to start at delta 4 (0 deltas"), "{o}");
    assert!(
        segments(&g).iter().all(|s| *s >= first),
        "{:?}",
        segments(&g)
    );
    assert!(ok(&g, &["journal", "verify", "journals/cg", "--json"]).contains("\"ok\":true"));
}

/// Prunes the journal in `dir` to `first` the first time a verify reports progress,
/// which is in the middle of its read.
struct PruneMidway {
    dir: std::path::PathBuf,
    first: u64,
    done: std::sync::atomic::AtomicBool,
}

impl cascade::progress::Progress for PruneMidway {
    fn start(&self, _: &str, _: u64) {}
    fn add_total(&self, _: u64) {}
    fn inc(&self, _: u64) {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let mut w = JournalWriter::open(&self.dir, 1 << 20).unwrap();
            let r = w.prune_before(self.first).unwrap();
            assert_eq!(r.deltas_removed, self.first - 1, "{r:?}");
        }
    }
    fn finish(&self) {}
}

/// `journal verify` is a reader too: a prune while it reads leaves the segments it
/// listed in place, and it reports the journal sound.
#[test]
fn a_prune_during_a_verify_does_not_make_it_see_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    for i in 0..5 {
        change_and_cycle(&g, i);
    }
    let before = segments(&g);
    let watcher = PruneMidway {
        dir: g.journal(),
        first: 4,
        done: Default::default(),
    };
    let report = cascade::journal::verify::verify(&g.journal(), &watcher).unwrap();
    assert!(watcher.done.into_inner(), "the prune ran");
    assert!(report.ok && report.problem.is_none(), "{report:?}");
    assert_eq!(segments(&g), before, "nothing removed under the verify");
    assert_eq!(Journal::open(&g.journal()).unwrap().first_delta(), 4);
}

/// A journal on a read-only file system opens, verifies and replays: with its
/// `readers` file (locked through a read-only open) and without one (written before
/// readers took a lock: read unguarded).
#[test]
fn a_journal_on_a_read_only_mount_is_read_with_or_without_the_lock_file() {
    if !common::host::root_or_skip("a read-only bind mount") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path());
    let points: Vec<_> = (0..2).map(|i| change_and_cycle(&g, i)).collect();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let _mount = common::mount::Mount::read_only_bind(&g.journal(), &ro);
    assert!(
        std::fs::write(ro.join("probe"), b"x").is_err(),
        "the mount is read-only"
    );

    let j = ro.to_str().unwrap();
    for lock_file in [true, false] {
        if !lock_file {
            // Through the writable side of the bind mount.
            std::fs::remove_file(g.journal().join("readers")).unwrap();
        }
        assert_eq!(ro.join("readers").exists(), lock_file);
        assert!(ok(&g, &["journal", "verify", j, "--json"]).contains("\"ok\":true"));
        let out = g.dir.join(format!("from-ro-{lock_file}"));
        std::fs::create_dir_all(&out).unwrap();
        let to: Vec<String> = ["v0", "v1"]
            .iter()
            .map(|v| format!("{v}={}", out.join(v).display()))
            .collect();
        ok(&g, &["replay", j, "--until", "1", "--to", &to[0], &to[1]]);
        for (i, v) in ["v0", "v1"].iter().enumerate() {
            assert!(std::fs::read(out.join(v)).unwrap() == points[0][i], "{v}");
        }
    }
}
