//! What a journal looks like after a power cut, after real damage, and while its
//! writer is live, as the writer, the readers and `verify` must see it: a power cut
//! (pages of the in-flight transaction lost in any order) is cut off and cycles go on;
//! evidence of a later transaction makes it damage, which `journal repair` cuts away;
//! a reader never sees a commit whose fsync may still be running.
mod common;

use cascade::journal::index::{index_path, Index};
use cascade::journal::record::VolumeInfo;
use cascade::journal::verify::verify;
use cascade::journal::{DeltaEntry, Journal, JournalWriter};
use cascade::progress::NoProgress;
use cascade::Error;
use common::config::TargetFile;
use common::group::{noise, Group};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const VOLUME: u64 = 1 << 20;

fn volumes() -> Vec<VolumeInfo> {
    vec![VolumeInfo {
        id: "v".into(),
        size: VOLUME,
    }]
}

/// Appends delta `n` (four 64 KiB data records that do not compress) and commits it.
fn delta(w: &mut JournalWriter, n: u64) -> DeltaEntry {
    let mut d = w.begin_delta(n as i64, volumes(), n == 1).unwrap();
    for i in 0..4u64 {
        d.data(0, i << 16, &noise(n * 10 + i, 64 << 10)).unwrap();
    }
    d.commit().unwrap()
}

/// A journal of `deltas` deltas in `dir`, written in segments of `segment_limit`.
fn journal(dir: &Path, deltas: u64, segment_limit: u64) -> Vec<DeltaEntry> {
    let mut w = JournalWriter::open(dir, segment_limit).unwrap();
    (1..=deltas).map(|n| delta(&mut w, n)).collect()
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:016}.cjs"))
}

/// Zeroes the 4 KiB page of segment 1 that holds `offset`, as a power cut leaves a
/// page that never reached the disk.
fn lose_page(dir: &Path, offset: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment(dir, 1))
        .unwrap()
        .write_all_at(&[0u8; 4096], offset / 4096 * 4096)
        .unwrap();
}

/// A page lost from the middle of `e`, well clear of its Begin and its Commit.
fn lose_page_inside(dir: &Path, e: &DeltaEntry) {
    let middle = e.begin.offset + (e.end.offset - e.begin.offset) / 2;
    assert!(
        middle / 4096 * 4096 > e.begin.offset && middle / 4096 * 4096 + 4096 < e.end.offset - 48
    );
    lose_page(dir, middle);
}

/// The index lags after a power cut: its appends are not fsynced.
fn lose_index(dir: &Path) {
    std::fs::remove_file(index_path(dir)).unwrap();
}

#[track_caller]
fn damaged(e: Error, needles: &[&str]) {
    let text = e.to_string();
    assert!(matches!(e, Error::Corrupt { .. }), "{text}");
    for n in needles {
        assert!(text.contains(n), "`{n}` not in: {text}");
    }
}

/// The writer opens the journal a power cut left, cuts the in-flight delta `n` off
/// at `cut`, and the next delta commits as `n`; verify agrees before and after.
#[track_caller]
fn recovers(dir: &Path, n: u64, cut: cascade::journal::Pos) {
    let before = verify(dir, &NoProgress).unwrap();
    assert!(before.ok, "{:?}", before.problem);
    assert_eq!(before.tail.as_ref().map(|t| t.cut), Some(cut));
    let mut w = JournalWriter::open(dir, 64 << 20).unwrap();
    assert_eq!(w.recovered_tail().map(|t| t.cut), Some(cut));
    assert_eq!(w.journal().last_delta(), n - 1);
    assert_eq!(delta(&mut w, n).delta, n);
    drop(w);
    let after = verify(dir, &NoProgress).unwrap();
    assert!(after.ok && after.tail.is_none(), "{after:?}");
    assert_eq!(after.deltas, n);
}

/// The Commit of the delta being written reached the disk, an earlier page of it did
/// not: an interrupted write, not damage.
#[test]
fn a_lost_page_before_the_in_flight_commit_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let e = journal(tmp.path(), 3, 64 << 20);
    lose_page_inside(tmp.path(), &e[2]);
    lose_index(tmp.path());
    recovers(tmp.path(), 3, e[2].begin);
}

/// No delta was open at the break: the in-flight delta's Begin is torn, and its own
/// Commit after it is no evidence either.
#[test]
fn a_torn_begin_before_the_in_flight_commit_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let e = journal(tmp.path(), 3, 64 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment(tmp.path(), 1))
        .unwrap()
        .write_all_at(&[0u8; 12], e[2].begin.offset)
        .unwrap();
    lose_index(tmp.path());
    recovers(tmp.path(), 3, e[2].begin);
}

/// A later delta's commit after the break was written after the broken delta's fsync
/// returned: damage, refused by the writer and by verify, both naming the repair.
#[test]
fn a_break_before_a_later_commit_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let e = journal(dir, 4, 64 << 20);
    lose_page_inside(dir, &e[2]);
    lose_index(dir);
    let repair = format!("cascade journal repair {} --cut-at 2", dir.display());
    let err = JournalWriter::open(dir, 64 << 20).err().expect("refused");
    damaged(err, &["commit of delta 4", &repair]);
    let r = verify(dir, &NoProgress).unwrap();
    let p = r.problem.expect("damage");
    assert!(
        !r.ok && p.reason.contains("commit of delta 4"),
        "{}",
        p.reason
    );
    assert_eq!(p.last_good_delta, 2);
}

/// Bookmarks are written only between deltas, after the one before returned: one
/// after the break is evidence.
#[test]
fn a_break_before_a_later_bookmark_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = JournalWriter::open(dir, 64 << 20).unwrap();
    let e: Vec<_> = (1..=3).map(|n| delta(&mut w, n)).collect();
    w.add_bookmark("after-3", 9, None).unwrap();
    drop(w);
    lose_page_inside(dir, &e[2]);
    lose_index(dir);
    let err = JournalWriter::open(dir, 64 << 20).err().expect("refused");
    damaged(err, &["bookmark number 1", "--cut-at 2"]);
    assert!(!verify(dir, &NoProgress).unwrap().ok);
}

/// While a writer is live, a Commit frame past the index may be in the page cache
/// only, its fsync still running: a reader must not see that delta. Once no writer is
/// live, the reader makes the unindexed delta durable and sees it.
#[test]
fn readers_see_only_commits_that_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let (live, twin) = (tmp.path().join("live"), tmp.path().join("twin"));
    journal(&live, 1, 64 << 20);
    journal(&twin, 2, 64 << 20);
    let (a, b) = (
        std::fs::read(segment(&live, 1)).unwrap(),
        std::fs::read(segment(&twin, 1)).unwrap(),
    );
    assert_eq!(
        a,
        b[..a.len()],
        "the twin journal starts with the same bytes"
    );

    let w = JournalWriter::open(&live, 64 << 20).unwrap();
    // What the live writer's delta 2 looks like between its write and its fsync:
    // every record, the Commit too, in the file; no index entry yet.
    std::fs::OpenOptions::new()
        .append(true)
        .open(segment(&live, 1))
        .unwrap()
        .write_all_at(&b[a.len()..], a.len() as u64)
        .unwrap();
    let j = Journal::open(&live).unwrap();
    assert_eq!(
        j.last_delta(),
        1,
        "a reader saw a commit still being made durable"
    );
    drop(j);
    drop(w);
    let j = Journal::open(&live).unwrap();
    assert_eq!(
        j.last_delta(),
        2,
        "with no writer live, the committed delta is read"
    );
    assert_eq!(
        Index::load(&live).unwrap().on_disk,
        1,
        "and the reader changed nothing"
    );
}

/// A missing segment inside what the index lists: the writer and readers refuse.
#[test]
fn a_missing_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    journal(dir, 3, 100 << 10);
    assert!(segment(dir, 4).exists(), "the deltas span several segments");
    std::fs::remove_file(segment(dir, 2)).unwrap();
    damaged(
        Journal::open(dir).err().expect("refused"),
        &["segment 2 is missing"],
    );
    damaged(
        JournalWriter::open(dir, 100 << 10).err().expect("refused"),
        &["segment 2 is missing", "--cut-at 0"],
    );
    assert!(
        !segment(dir, 2).exists(),
        "nothing was appended after the gap"
    );
}

/// And when the index lags too, the gap is a break with committed records after it.
#[test]
fn a_missing_segment_the_index_does_not_cover_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    journal(dir, 3, 100 << 10);
    std::fs::remove_file(segment(dir, 2)).unwrap();
    lose_index(dir);
    let segments = std::fs::read_dir(dir).unwrap().count();
    damaged(
        JournalWriter::open(dir, 100 << 10).err().expect("refused"),
        &[
            "segment 2 is missing, yet segment 3 follows",
            "commit of delta",
        ],
    );
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        segments,
        "nothing was cut or added"
    );
    let r = verify(dir, &NoProgress).unwrap();
    assert!(!r.ok && r.problem.unwrap().reason.contains("segment 2 is missing"));
}

/// A segment is begun only after the one before it is durable: a break in a segment
/// with a later one present is damage, even when only the broken delta's own commit
/// follows (it committed; the index just lost its entry).
#[test]
fn a_break_in_a_segment_before_a_later_one_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let e = journal(dir, 3, 100 << 10);
    let first = e[2].begin.segment;
    assert!(e[2].end.segment > first, "delta 3 spans segments");
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment(dir, first))
        .unwrap()
        .write_all_at(&[0u8; 64], e[2].begin.offset + 20)
        .unwrap();
    lose_index(dir);
    let err = JournalWriter::open(dir, 100 << 10).err().expect("refused");
    damaged(
        err,
        &[&format!("segment {} exists", first + 1), "--cut-at 2"],
    );
    assert!(!verify(dir, &NoProgress).unwrap().ok);
}

/// A power cut can keep a later segment's directory entry and lose an earlier one's
/// (both created during the in-flight delta, neither synced yet): with only that
/// delta's own records after the gap, it is a tail, cut with every segment after it.
#[test]
fn a_missing_segment_inside_the_in_flight_delta_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let e = journal(dir, 3, 100 << 10);
    let (first, last) = (e[2].begin.segment, e[2].end.segment);
    assert!(last >= first + 2, "delta 3 spans three segments or more");
    std::fs::remove_file(segment(dir, first + 1)).unwrap();
    lose_index(dir);
    recovers(dir, 3, e[2].begin);
}

/// An index append that fails after the delta's fsync returned is told apart from a
/// failed commit: the delta is in the journal, and the index catches up.
#[test]
fn a_failed_index_append_after_a_durable_commit_is_its_own_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = JournalWriter::open(dir, 64 << 20).unwrap();
    delta(&mut w, 1);
    // The index can be neither appended to nor replaced while a directory holds its name.
    std::fs::remove_file(index_path(dir)).unwrap();
    std::fs::create_dir(index_path(dir)).unwrap();
    let mut d = w.begin_delta(2, volumes(), false).unwrap();
    d.data(0, 0, &noise(7, 4096)).unwrap();
    match d.commit() {
        Err(Error::Unindexed { delta, .. }) => assert_eq!(delta, Some(2)),
        other => panic!("expected Unindexed, got {other:?}"),
    }
    std::fs::remove_dir(index_path(dir)).unwrap();
    assert_eq!(
        delta(&mut w, 3).delta,
        3,
        "the writer goes on with the next id"
    );
    drop(w);
    let index = Index::load(dir).unwrap();
    assert_eq!(
        (index.on_disk, index.deltas.len()),
        (3, 3),
        "the index lists 1, 2 and 3"
    );
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {} stdout: {}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Every file of the journal and its bytes, to show that nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

/// Real damage through the binary: verify names the repair, a dry run changes
/// nothing, the repair cuts and saves what it cut, cycles go on, and a block target
/// that held a delta past the cut is refused while one at the cut goes on.
#[test]
fn repair_cuts_damage_and_refuses_targets_past_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[VOLUME]);
    g.block_target("replica", true);
    g.block_target("early", true);
    g.write_target("vault", &TargetFile::object("../vault-store"));
    let targets = |names: &[&str]| {
        g.configure(|c| c.groups[0].targets = names.iter().map(|n| n.to_string()).collect())
    };
    targets(&["replica", "vault", "early"]);
    for n in 1..=2u64 {
        g.write(0, n << 16, &noise(n, 200 << 10));
        g.cycle();
    }
    ok(g.cascade(&["export", "-c", "cascade.yaml"]));
    targets(&["replica", "vault"]);
    g.write(0, 3 << 16, &noise(3, 200 << 10));
    g.cycle();
    ok(g.cascade(&["export", "-c", "cascade.yaml"]));
    g.write(0, 4 << 16, &noise(4, 200 << 10));
    g.cycle();
    targets(&["replica", "vault", "early"]);

    let j = g.journal();
    let js = j.to_str().unwrap();
    let third = Journal::open(&j).unwrap().delta(3).unwrap().clone();
    let second_end = Journal::open(&j).unwrap().delta(2).unwrap().end;
    lose_page_inside(&j, &third);

    let o = g.cascade(&["journal", "verify", js]);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("cascade journal repair {js} --cut-at 2")),
        "{}",
        stdout(&o)
    );

    let before = snapshot(&j);
    let dry = ok(g.cascade(&["journal", "repair", js, "--cut-at", "2", "--dry-run"]));
    assert!(
        dry.contains("would cut") && dry.contains("deltas [3, 4]"),
        "{dry}"
    );
    assert_eq!(snapshot(&j), before, "a dry run changes nothing");
    assert_eq!(
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".cut-after-")
            })
            .count(),
        0,
        "and saves nothing"
    );

    let o = g.cascade(&["journal", "repair", js, "--cut-at", "3"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--cut-at 2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(&j), before, "a cut past the damage is refused");

    let r: serde_json::Value = serde_json::from_str(&ok(
        g.cascade(&["journal", "repair", js, "--cut-at", "2", "--json"])
    ))
    .unwrap();
    assert_eq!(r["deltas_removed"], serde_json::json!([3, 4]));
    let saved = PathBuf::from(r["saved_to"].as_str().unwrap());
    let seg = before.iter().find(|(n, _)| n.starts_with("seg-")).unwrap();
    assert_eq!(
        std::fs::read(saved.join(format!("{}.from-{}", seg.0, second_end.offset))).unwrap(),
        seg.1[second_end.offset as usize..],
        "the cut bytes are kept beside the journal"
    );
    assert_ne!(r["new_id"], r["old_id"]);
    let v = ok(g.cascade(&["journal", "verify", js, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["deltas"].clone()),
        (true.into(), 2.into())
    );

    g.write(0, 5 << 16, &noise(5, 200 << 10));
    assert_eq!(g.cycle().delta, 3, "cycles go on after the cut");
    for past in ["replica", "vault"] {
        let o = g.cascade(&["export", "-c", "cascade.yaml", "--target", past]);
        assert!(!o.status.success(), "{past} was fed past the cut");
        let why = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            why.contains(&format!("target `{past}` holds deltas up to 3"))
                && why.contains("journal repair")
                && why.contains("after delta 2"),
            "{why}"
        );
    }
    // A cursor older than journal ids names no journal: held to the cut all the same.
    let cfg = g.config();
    let cursor = |target: &str| {
        cascade::export::targets_state(&cfg, cfg.group("cg").unwrap())
            .join(format!("{target}.cursor"))
    };
    let old_format = |target: &str| {
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(cursor(target)).unwrap()).unwrap();
        c["journal"] = serde_json::Value::Null;
        std::fs::write(cursor(target), serde_json::to_vec(&c).unwrap()).unwrap();
    };
    old_format("replica");
    let o = g.cascade(&["export", "-c", "cascade.yaml", "--target", "replica"]);
    let why = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !o.status.success() && why.contains("does not record which journal fed it"),
        "{why}"
    );

    // One at the cut, killed in the middle of the first delta past it (SIGXFSZ, at a
    // write past the file size limit): its cursor says which journal it was fed by,
    // so the next export finishes the delta.
    old_format("early");
    let o = std::process::Command::new("prlimit")
        .arg(format!("--fsize={}", (5 << 16) + 4096))
        .args([
            "--",
            env!("CARGO_BIN_EXE_cascade"),
            "export",
            "-c",
            "cascade.yaml",
        ])
        .args(["--target", "early"])
        .current_dir(&g.dir)
        .output()
        .unwrap();
    assert!(!o.status.success(), "the export was not cut short");
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cursor("early")).unwrap()).unwrap();
    assert_eq!(
        (c["delta"].as_u64(), c["applying"].as_u64()),
        (Some(2), Some(3))
    );
    ok(g.cascade(&["export", "-c", "cascade.yaml", "--target", "early"]));
    let early = std::fs::read(tmp.path().join("early/v0.img")).unwrap();
    assert_eq!(
        early,
        g.contents()[0],
        "a target at the cut goes on exactly"
    );
}

/// An index append is not fsynced: after a power cut on a file system that can show a
/// freed block in a grown file (ext4 `data=writeback`), the index may end in valid
/// frames of an older index file. They are not the next entry and must not be believed.
#[test]
fn stale_index_frames_after_the_last_entry_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("j");
    journal(&j, 3, 64 << 20);
    let index = std::fs::read(index_path(&j)).unwrap();
    // The first entry again, whole and with a valid checksum, after the last one.
    let entry_len = index.len() / 3;
    let mut stale = index.clone();
    stale.extend_from_slice(&index[..entry_len]);
    std::fs::write(index_path(&j), &stale).unwrap();
    let loaded = Index::load(&j).unwrap();
    assert_eq!(
        loaded.deltas.len(),
        3,
        "the stale frame is not a fourth entry"
    );
    assert!(
        loaded.torn,
        "the index is rewritten at the next writer's open"
    );
    let r = Journal::open(&j).unwrap();
    assert_eq!(r.last_delta(), 3);
    assert!(verify(&j, &NoProgress).unwrap().ok);
}

/// A journal older than ids (no `id` file, or an empty one) records its cut as `-`,
/// and a replica that names no journal is held to it: accepted up to the cut and
/// refused past it.
#[test]
fn a_cut_of_a_journal_without_an_id_holds_replicas_that_name_none() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("j");
    journal(&j, 3, 64 << 20);
    std::fs::write(j.join("id"), "").unwrap();
    let r = cascade::journal::repair::repair(&j, 2, false).unwrap();
    assert_eq!(r.old_id, None);
    assert_eq!(std::fs::read_to_string(j.join("cuts")).unwrap(), "- 2\n");
    let journal = Journal::open(&j).unwrap();
    assert!(journal.id().is_some(), "the repair gave the journal an id");
    journal.check_replica("t", None, 2).unwrap();
    let e = journal.check_replica("t", None, 3).unwrap_err().to_string();
    assert!(e.contains("does not record which journal fed it"), "{e}");
}
