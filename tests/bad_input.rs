//! Bad input through the real binary: each case gets a clear error naming what is
//! wrong, the documented exit code, and changes nothing.
mod common;

use common::config::{ConfigFile, Daemon, Driver, ObjectTarget, Retention, Schedule, Volume};
use common::group::{cascade_in, noise, Group};
use common::loopdev::LoopDev;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn fails(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code; stderr: {err} stdout: {}",
        stdout(o)
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

/// A group with two committed deltas and a bookmark.
fn history(dir: &Path) -> Group {
    let g = Group::new(dir, &[4 << 20, 2 << 20]);
    g.write(0, 0, &noise(1, 3 << 20));
    g.write(1, 4096, &noise(2, 1 << 20));
    g.cycle();
    g.write(0, 1 << 20, &noise(3, 256 << 10));
    g.cycle();
    g.bookmark("nightly");
    g
}

fn segment(g: &Group) -> PathBuf {
    g.journal().join("seg-0000000000000001.cjs")
}

#[test]
fn missing_and_garbled_config() {
    let tmp = tempfile::tempdir().unwrap();
    let o = cascade_in(tmp.path(), &["cycle", "--config", "nope.yaml", "--cg", "x"]);
    fails(&o, 2, &["nope.yaml", "cannot read"]);
    std::fs::write(tmp.path().join("bad.yaml"), "state-dir: [unclosed\n").unwrap();
    let o = cascade_in(tmp.path(), &["cycle", "--config", "bad.yaml", "--cg", "x"]);
    fails(&o, 2, &["bad.yaml", "line"]);
    std::fs::write(tmp.path().join("typo.yaml"), "state-dir: s\njournal-dir: j\nconsistency-groups:\n  - name: a\n    volumes:\n      - { id: v, driver: file, pth: v.img }\n").unwrap();
    let o = cascade_in(tmp.path(), &["cycle", "--config", "typo.yaml", "--cg", "a"]);
    fails(&o, 2, &["typo.yaml", "unknown field `pth`"]);
    assert!(
        !tmp.path().join("s").exists() && !tmp.path().join("j").exists(),
        "nothing was created"
    );
}

/// LVM volumes named wrongly are refused at load, with the field named.
#[test]
fn bad_lvm_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    let no_lv = Volume {
        id: "v".into(),
        driver: Driver::LvmThin,
        path: None,
        lv: None,
    };
    for (volumes, want) in [
        (
            vec![no_lv],
            "volumes[0].lv: the lvm-thin driver needs the thin LV as VG/LV",
        ),
        (
            vec![Volume::lvm_thin("v", "novg")],
            "volumes[0].lv: `novg` is not VG/LV",
        ),
        (vec![Volume::lvm_thin("v", "vg/a b")], "is not VG/LV"),
        (
            vec![Volume::lvm_thin("v", "vg/v"), Volume::file("w", "w.img")],
            "volumes[1].driver: all volumes of a consistency group use one driver",
        ),
    ] {
        let cfg = ConfigFile {
            state_dir: "s".into(),
            journal_dir: "j".into(),
            ..ConfigFile::group("a", volumes)
        };
        cfg.write_to(&tmp.path().join("lvm.yaml"));
        let o = cascade_in(tmp.path(), &["cycle", "--config", "lvm.yaml", "--cg", "a"]);
        fails(&o, 2, &["lvm.yaml", want]);
    }
    assert!(!tmp.path().join("s").exists(), "nothing was created");
}

/// Retention policies that make no sense are refused with the field named, before
/// anything is pruned.
#[test]
fn bad_retention_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let config = g.config_file();
    g.configure(|c| c.groups[0].journal_retention = Retention::keep_deltas(0));
    let o = g.cascade(&["journal", "prune", "-c", "cascade.yaml", "--cg", "cg"]);
    fails(&o, 2, &["cascade.yaml", "journal-retention.keep-deltas: 0"]);
    g.write_config(&config);
    g.configure(|c| c.groups[0].journal_retention = Retention::keep_age("7x"));
    let o = g.cascade(&["journal", "prune", "-c", "cascade.yaml", "--cg", "cg"]);
    fails(&o, 2, &["cascade.yaml", "`7x` is not an age"]);

    g.write_config(&config);
    let mut vault = ObjectTarget::new("../vault");
    vault.retention = Retention::keep_deltas(0);
    g.write_target("vault", &vault.into());
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    fails(&o, 2, &["vault.yaml", "retention.keep-deltas: 0"]);
    assert!(!g.dir.join("vault").exists(), "nothing was exported");
    let j = cascade::journal::Journal::open(&g.journal()).unwrap();
    assert_eq!(
        (j.first_delta(), j.last_delta()),
        (1, 2),
        "nothing was pruned"
    );
}

#[test]
fn unknown_group_and_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    fails(
        &g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "nope"]),
        3,
        &["no consistency group `nope`", "cg"],
    );
    let j = g.journal();
    let o = g.cascade(&[
        "replay",
        j.to_str().unwrap(),
        "--to",
        "v0=a.img",
        "vx=b.img",
    ]);
    fails(&o, 3, &["volume `vx` is not in the journal", "v0, v1"]);
    assert!(!g.dir.join("a.img").exists(), "nothing written");
    std::fs::remove_file(&g.volumes[1]).unwrap();
    fails(
        &g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]),
        3,
        &["volume `v1`", "v1.img", "does not exist"],
    );
    assert_eq!(
        cascade::journal::Journal::open(&j).unwrap().last_delta(),
        2,
        "a failed cycle commits nothing"
    );
}

#[test]
fn until_naming_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let j = g.journal();
    let j = j.to_str().unwrap();
    fails(
        &g.cascade(&["replay", j, "--to", "a", "b", "--until", "9"]),
        3,
        &["delta 9 does not exist", "1..=2"],
    );
    fails(
        &g.cascade(&["replay", j, "--to", "a", "b", "--until", "weekly"]),
        3,
        &["no bookmark `weekly`"],
    );
    fails(
        &g.cascade(&[
            "replay",
            j,
            "--to",
            "a",
            "b",
            "--until",
            "2001-01-01T00:00:00Z",
        ]),
        3,
        &["no delta was taken at or before 2001-01-01"],
    );
    assert!(!g.dir.join("a").exists());
    // And the points that do exist resolve.
    assert!(g
        .cascade(&["replay", j, "--to", "a", "b", "--until", "nightly"])
        .status
        .success());
}

#[test]
fn replay_targets_must_be_distinct_and_creatable() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let j = g.journal();
    let js = j.to_str().unwrap();
    fails(
        &g.cascade(&["replay", js, "--to", "same.img", "./same.img"]),
        2,
        &["would both be replayed into"],
    );
    std::fs::write(g.dir.join("old.img"), vec![1u8; 8 << 20]).unwrap();
    std::fs::hard_link(g.dir.join("old.img"), g.dir.join("link.img")).unwrap();
    fails(
        &g.cascade(&["replay", js, "--to", "v0=old.img", "v1=link.img"]),
        2,
        &["would both be replayed into"],
    );
    assert_eq!(
        std::fs::read(g.dir.join("old.img")).unwrap(),
        vec![1u8; 8 << 20]
    );
    fails(
        &g.cascade(&["replay", js, "--to", "r0.img", "no/such/dir/r1.img"]),
        1,
        &["cannot create replay target", "no/such/dir/r1.img"],
    );
    assert!(
        !g.dir.join("r0.img").exists(),
        "a failed replay leaves no new files behind"
    );
    fails(
        &g.cascade(&["replay", js, "--to", "v0=.", "v1=r1.img"]),
        1,
        &["cannot open replay target", "Is a directory"],
    );
    fails(
        &g.cascade(&["journal", "ls", "cascade.yaml"]),
        2,
        &["cascade.yaml is not a journal"],
    );
}

#[test]
fn replay_target_too_small() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let small = g.dir.join("small.img");
    std::fs::write(&small, vec![7u8; 1 << 20]).unwrap();
    let j = g.journal();
    let o = g.cascade(&[
        "replay",
        j.to_str().unwrap(),
        "--to",
        &format!("v0={}", small.display()),
        "v1=other.img",
    ]);
    fails(
        &o,
        5,
        &["small.img", "1048576", "4194304", "nothing was written"],
    );
    assert_eq!(
        std::fs::read(&small).unwrap(),
        vec![7u8; 1 << 20],
        "target unchanged"
    );
    assert!(
        !g.dir.join("other.img").exists(),
        "no other target was created"
    );
}

#[test]
fn replay_target_too_small_block_device() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let backing = g.dir.join("loop.img");
    std::fs::write(&backing, vec![7u8; 1 << 20]).unwrap();
    let Some(loop_dev) = LoopDev::attach_or_skip(&backing, "replay onto a small loop device")
    else {
        return;
    };
    let dev = loop_dev.path().to_string();
    let o = g.cascade(&[
        "replay",
        g.journal().to_str().unwrap(),
        "--to",
        &format!("v0={dev}"),
    ]);
    drop(loop_dev);
    fails(&o, 5, &[&dev, "needs 4194304 bytes"]);
    assert_eq!(
        std::fs::read(&backing).unwrap(),
        vec![7u8; 1 << 20],
        "device unchanged"
    );
}

#[test]
fn flipped_byte_is_found_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let seg = segment(&g);
    // Flip one byte inside the compressed data of delta 1.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 5000).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], 5000).unwrap();
    let j = g.journal();
    let o = g.cascade(&["journal", "verify", j.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("DAMAGED at segment 1") && stdout(&o).contains("checksum"),
        "{}",
        stdout(&o)
    );

    let target = g.dir.join("t0.img");
    std::fs::write(&target, vec![5u8; 4 << 20]).unwrap();
    let o = g.cascade(&[
        "replay",
        j.to_str().unwrap(),
        "--to",
        &format!("v0={}", target.display()),
        "v1=t1.img",
    ]);
    fails(&o, 4, &["corrupt at segment 1", "checksum"]);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        vec![5u8; 4 << 20],
        "nothing written before the corruption was found"
    );
    assert!(!g.dir.join("t1.img").exists());
    // A writer never cuts committed data off as if it were a torn tail, even when
    // the index is lost and the damage is found while rebuilding it.
    std::fs::remove_file(j.join("index.cji")).unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    fails(
        &g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]),
        4,
        &["damage rather than an interrupted write"],
    );
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        before,
        "damaged journal left as it was"
    );
}

#[test]
fn truncated_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let seg = segment(&g);
    let j = g.journal();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut into the middle of committed delta 2: damage, named by verify and replay.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 200).unwrap();
    let o = g.cascade(&["journal", "verify", j.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    let o = g.cascade(&[
        "replay",
        j.to_str().unwrap(),
        "--to",
        "a",
        "b",
        "--until",
        "2",
    ]);
    fails(&o, 4, &["segment 1"]);
    assert!(!g.dir.join("a").exists());
    // Delta 1 is intact and still replays exactly.
    let o = g.cascade(&[
        "replay",
        j.to_str().unwrap(),
        "--to",
        "a",
        "b",
        "--until",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// An interrupted write after the last commit: reported by readers, ignored by
/// replay, cut off by the next writer, and the journal verifies afterwards.
#[test]
fn torn_tail_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let seg = segment(&g);
    let j = g.journal();
    let js = j.to_str().unwrap();
    let committed = std::fs::metadata(&seg).unwrap().len();
    // A Begin record of delta 3 and half an extent, as a crash would leave them.
    let begin = cascade::journal::record::Begin {
        delta: 3,
        time_ns: 1,
        flags: 0,
        volumes: vec![],
        writes: None,
    }
    .encode();
    let (frame, _) = cascade::journal::frame::frame(cascade::journal::record::BEGIN, &begin);
    let mut torn = frame.to_vec();
    torn.extend_from_slice(&begin);
    torn.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&torn, committed)
        .unwrap();

    let o = g.cascade(&["journal", "verify", js]);
    assert!(
        o.status.success() && stdout(&o).contains("tail"),
        "{}",
        stdout(&o)
    );
    let o = g.cascade(&["journal", "ls", js]);
    assert!(stdout(&o).contains("tail"), "{}", stdout(&o));
    let o = g.cascade(&["replay", js, "--to", "a", "b"]);
    assert!(
        o.status.success() && stderr(&o).contains("unfinished tail"),
        "{}",
        stderr(&o)
    );

    g.write(0, 0, &noise(9, 4096));
    let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["delta"], 3);
    assert_eq!(report["recovered_tail"]["cut"]["offset"], committed);
    let o = g.cascade(&["journal", "verify", js, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["deltas"].clone(), v["tail"].clone()),
        (true.into(), 3.into(), serde_json::Value::Null)
    );
}

#[test]
fn second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let _held = cascade::journal::JournalWriter::open(&g.journal(), 64 << 20).unwrap();
    fails(
        &g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]),
        6,
        &["locked by another cascade process"],
    );
    fails(&g.try_bookmark("x"), 6, &["locked"]);
}

#[test]
fn duplicate_bookmark_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    fails(
        &g.try_bookmark("nightly"),
        2,
        &["bookmark `nightly` already exists"],
    );
}

/// A crash can leave an uncommitted delta whose pages reached the disk out of order:
/// valid records after zeroed ones. None of it was committed, so it is a tail (cut by
/// the next writer), not damage.
#[test]
fn scrambled_uncommitted_tail_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let seg = segment(&g);
    let committed = std::fs::metadata(&seg).unwrap().len();
    let mut w = cascade::journal::JournalWriter::open(&g.journal(), 64 << 20).unwrap();
    let vols = cascade::journal::Journal::open(&g.journal())
        .unwrap()
        .volumes_at(2)
        .unwrap();
    let mut d = w.begin_delta(1, vols, false).unwrap();
    for i in 0..3u64 {
        d.data(0, i << 20, &noise(10 + i, 1 << 20)).unwrap();
    }
    std::mem::forget(d); // the process "dies" before its commit
    drop(w);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&[0u8; 8192], committed + (3 << 19))
        .unwrap();
    assert!(
        std::fs::metadata(&seg).unwrap().len() > committed + (2 << 20),
        "the uncommitted records reached the file"
    );

    let js = g.journal();
    let o = g.cascade(&["journal", "verify", js.to_str().unwrap()]);
    assert!(
        o.status.success() && stdout(&o).contains("tail"),
        "{}",
        stdout(&o)
    );
    let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            report["delta"].clone(),
            report["recovered_tail"]["cut"]["offset"].clone()
        ),
        (3.into(), committed.into())
    );
}

/// The group of [`history`] with a misspelt field in its schedule: malformed text,
/// so written as text.
const MISSPELT_SCHEDULE: &str = r#"state-dir: state
journal-dir: journals
consistency-groups:
  - name: cg
    schedule:
      crn: "@daily"
    volumes:
      - { id: v0, driver: file, path: v0.img }
      - { id: v1, driver: file, path: v1.img }
"#;

#[test]
fn bad_schedules_and_daemon_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let g = history(tmp.path());
    let config = g.config_file();
    let scheduled = |schedule: Schedule| {
        let mut c = config.clone();
        c.groups[0].schedule = Some(schedule);
        c.to_yaml()
    };
    let cases: [(String, &[&str]); 5] = [
        (
            scheduled(Schedule::cron("*/5 * *")),
            &["consistency-groups[0].schedule", "`*/5 * *` has 3 fields"],
        ),
        (
            scheduled(Schedule::cron("0 25 * * *")),
            &["`0 25 * * *` is not a cron schedule"],
        ),
        (
            scheduled(Schedule {
                timezone: Some("Mars/Olympus".into()),
                ..Schedule::cron("@daily")
            }),
            &["`Mars/Olympus` is not an IANA time zone"],
        ),
        (
            scheduled(Schedule {
                missed: Some("all".into()),
                ..Schedule::cron("@daily")
            }),
            &["unknown variant `all`", "run-once", "skip"],
        ),
        (MISSPELT_SCHEDULE.into(), &["unknown field `crn`"]),
    ];
    for (yaml, words) in cases {
        std::fs::write(&g.config, yaml).unwrap();
        let mut want = vec!["cascade.yaml"];
        want.extend_from_slice(words);
        fails(&g.cascade(&["run", "-c", "cascade.yaml"]), 2, &want);
        fails(&g.cascade(&["status", "-c", "cascade.yaml"]), 2, &want);
    }
    g.write_config(&ConfigFile {
        daemon: Some(Daemon {
            metrics_listen: Some("localhost:x".into()),
            ..Default::default()
        }),
        ..config.clone()
    });
    fails(
        &g.cascade(&["run", "-c", "cascade.yaml"]),
        2,
        &[
            "daemon.metrics-listen",
            "`localhost:x` is not a listen address",
        ],
    );
    g.write_config(&ConfigFile {
        daemon: Some(Daemon {
            stop_grace: Some("0s".into()),
            ..Default::default()
        }),
        ..config.clone()
    });
    fails(
        &g.cascade(&["run", "-c", "cascade.yaml"]),
        2,
        &["daemon: `0s` is not an age"],
    );
    g.write_config(&config);
    fails(
        &g.cascade(&["run", "-c", "cascade.yaml", "--metrics-listen", "nowhere"]),
        2,
        &["`nowhere` is not a listen address"],
    );
    fails(
        &g.cascade(&["status", "-c", "cascade.yaml", "--watch", "0"]),
        2,
        &["--watch 0", "between 0.1 and 86400"],
    );
    assert!(
        !g.dir.join("state/daemon.lock").exists(),
        "no daemon started"
    );
}
