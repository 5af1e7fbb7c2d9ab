//! A journal written by format version 1, committed under tests/fixtures/journal-v1 by
//! its script: every later cascade must still verify it and replay it exactly.

use cascade::journal::verify::verify;
use cascade::journal::{Journal, Point};
use cascade::progress::NoProgress;
use cascade::replay::replay;
use sha2::{Digest, Sha256};
use std::path::Path;

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/journal-v1"
    ))
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn version_1_journal_verifies_and_replays_exactly() {
    let report = verify(fixture(), &NoProgress).unwrap();
    assert!(report.ok && report.tail.is_none(), "{report:?}");
    assert_eq!((report.deltas, report.bookmarks), (3, 1));

    let j = Journal::open(fixture()).unwrap();
    assert_eq!(
        j.resolve(&Point::Bookmark("fixture-mark".into())).unwrap(),
        2
    );
    let expected = std::fs::read_to_string(fixture().join("expected.txt")).unwrap();
    for line in expected.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let delta: u64 = f[0].parse().unwrap();
        let out = tempfile::tempdir().unwrap();
        let targets = ["boot", "data"].map(|v| {
            format!("{v}={}", out.path().join(v).display())
                .parse()
                .unwrap()
        });
        replay(&j, delta, &targets, &NoProgress).unwrap();
        assert_eq!(
            sha256(&out.path().join("boot")),
            f[1],
            "boot at delta {delta}"
        );
        assert_eq!(
            sha256(&out.path().join("data")),
            f[2],
            "data at delta {delta}"
        );
    }
}

fn fixture_v2() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/journal-v2"
    ))
}

#[test]
fn version_2_journal_with_split_deltas_verifies_and_replays_every_write_exactly() {
    let report = verify(fixture_v2(), &NoProgress).unwrap();
    assert!(report.ok && report.tail.is_none(), "{report:?}");
    assert_eq!((report.deltas, report.bookmarks), (4, 1));
    let j = Journal::open(fixture_v2()).unwrap();
    let split: Vec<_> = j.deltas().iter().filter_map(|d| d.writes).collect();
    assert_eq!(split.len(), 3);
    assert_eq!((split[0].first_write, split[2].last_write), (1, 6));
    let expected = std::fs::read_to_string(fixture_v2().join("expected.txt")).unwrap();
    for line in expected.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let point: Point = f[0].parse().unwrap();
        let out = tempfile::tempdir().unwrap();
        let targets = ["boot", "data"].map(|v| {
            format!("{v}={}", out.path().join(v).display())
                .parse()
                .unwrap()
        });
        replay(&j, j.resolve_until(&point).unwrap(), &targets, &NoProgress).unwrap();
        assert_eq!(sha256(&out.path().join("boot")), f[1], "boot at {}", f[0]);
        assert_eq!(sha256(&out.path().join("data")), f[2], "data at {}", f[0]);
    }
}

/// A version-1 journal that a split group goes on writing: the split delta starts a
/// segment of version 2, the version-1 segment is left as it was, and both read.
#[test]
fn a_split_delta_in_a_version_1_journal_starts_a_segment_of_the_current_version() {
    use cascade::journal::record::{Stamp, Writes};
    use cascade::journal::JournalWriter;
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("j");
    std::fs::create_dir(&j).unwrap();
    for f in ["seg-0000000000000001.cjs", "index.cji"] {
        std::fs::copy(fixture().join(f), j.join(f)).unwrap();
    }
    let before = std::fs::read(j.join("seg-0000000000000001.cjs")).unwrap();
    let mut w = JournalWriter::open(&j, 64 << 20).unwrap();
    let volumes = w.journal().volumes_at(3).unwrap();
    let writes = Writes {
        first_write: 1,
        last_write: 2,
        exact_from: 0,
        gap: None,
    };
    let mut d = w.begin_split_delta(5, volumes, writes).unwrap();
    d.write_data(
        Stamp {
            write: 1,
            time_ns: 5,
        },
        0,
        0,
        &[7; 100],
    )
    .unwrap();
    d.write_zero(
        Stamp {
            write: 2,
            time_ns: 6,
        },
        1,
        4096,
        4096,
    )
    .unwrap();
    d.commit().unwrap();
    drop(w);
    let after = std::fs::read(j.join("seg-0000000000000001.cjs")).unwrap();
    assert!(after == before, "the version-1 segment changed");
    let version = |n: u32| {
        let h = std::fs::read(j.join(format!("seg-{n:016}.cjs"))).unwrap();
        u32::from_le_bytes(h[8..12].try_into().unwrap())
    };
    assert_eq!((version(1), version(2)), (1, 3));
    let report = verify(&j, &NoProgress).unwrap();
    assert!(report.ok, "{report:?}");
    let jr = Journal::open(&j).unwrap();
    let out = tempfile::tempdir().unwrap();
    let targets = ["boot", "data"].map(|v| {
        format!("{v}={}", out.path().join(v).display())
            .parse()
            .unwrap()
    });
    let until = jr.resolve_until(&Point::Write(1)).unwrap();
    assert_eq!((until.delta, until.write), (4, Some(1)));
    replay(&jr, until, &targets, &NoProgress).unwrap();
    let boot = std::fs::read(out.path().join("boot")).unwrap();
    assert_eq!(&boot[..100], &[7; 100]);
}

/// Extents a shipper that is behind stores without compression (raw zstd blocks) are
/// an ordinary journal: they verify and replay to the same bytes as compressed ones.
#[test]
fn stored_extents_verify_and_replay_like_compressed_ones() {
    use cascade::journal::record::VolumeInfo;
    use cascade::journal::JournalWriter;
    use cascade::replay::Destination;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j");
    let volume = vec![VolumeInfo {
        id: "v".into(),
        size: 1 << 20,
    }];
    // Data that does not repeat, over more than one raw block and across a record.
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut w = JournalWriter::open(&journal, 64 << 20).unwrap();
    for (n, compress) in [(1, true), (2, false)] {
        let mut d = w.begin_delta(n, volume.clone(), n == 1).unwrap();
        d.compress(compress);
        d.data(0, n as u64 * 4096, &bytes).unwrap();
        d.commit().unwrap();
    }
    drop(w);
    let report = verify(&journal, &NoProgress).unwrap();
    assert!(report.ok, "{report:?}");
    let j = Journal::open(&journal).unwrap();
    let stored = j.delta(2).unwrap().stored_bytes;
    assert!(
        stored > bytes.len() as u64,
        "delta 2 was compressed: {stored} bytes"
    );
    let out = dir.path().join("out.img");
    let to = [Destination {
        volume: Some("v".into()),
        path: out.clone(),
    }];
    replay(&j, 2, &to, &NoProgress).unwrap();
    let mut want = vec![0u8; 1 << 20];
    want[4096..4096 + bytes.len()].copy_from_slice(&bytes);
    want[8192..8192 + bytes.len()].copy_from_slice(&bytes);
    assert!(
        std::fs::read(&out).unwrap() == want,
        "the replay of stored extents"
    );
}

/// Split deltas through a gap (docs/journal-format.md, "Gaps"): they verify, points in
/// order and where the gap resumes replay, and a point inside it is refused with the
/// consistent points either side named.
#[test]
fn points_inside_a_gap_are_refused_and_its_edges_replay() {
    use cascade::journal::record::{Gap, Stamp, Writes};
    use cascade::journal::JournalWriter;
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("j");
    std::fs::create_dir(&j).unwrap();
    for f in ["seg-0000000000000001.cjs", "index.cji"] {
        std::fs::copy(fixture().join(f), j.join(f)).unwrap();
    }
    let mut w = JournalWriter::open(&j, 64 << 20).unwrap();
    let volumes = w.journal().volumes_at(3).unwrap();
    let st = |write| Stamp {
        write,
        time_ns: write as i64 * 1000,
    };
    let gap = |lost_after, resumes| {
        Some(Gap {
            lost_after,
            resumes,
        })
    };
    // Delta 4: writes 1 and 2 in order, then the gap: 3 and 4 only marked, 5 read back.
    // Delta 5 goes on in it and resumes at 9 (8 was the last record, 9 marked and
    // covered by the read of 8); delta 6 is in order again; delta 7 opens a new gap.
    let plan: [(Writes, &[(u64, u8)]); 4] = [
        (
            Writes {
                first_write: 1,
                last_write: 5,
                exact_from: 0,
                gap: gap(2, false),
            },
            &[(1, 1), (2, 2), (5, 5)],
        ),
        (
            Writes {
                first_write: 6,
                last_write: 9,
                exact_from: 0,
                gap: gap(5, true),
            },
            &[(7, 7), (8, 8)],
        ),
        (
            Writes {
                first_write: 10,
                last_write: 10,
                exact_from: 0,
                gap: None,
            },
            &[(10, 10)],
        ),
        (
            Writes {
                first_write: 11,
                last_write: 13,
                exact_from: 0,
                gap: gap(11, false),
            },
            &[(11, 11), (13, 13)],
        ),
    ];
    for (writes, recs) in plan {
        let mut d = w
            .begin_split_delta(writes.first_write as i64 * 1000, volumes.clone(), writes)
            .unwrap();
        for (n, byte) in recs {
            d.write_data(st(*n), 0, 0, &[*byte; 512]).unwrap();
        }
        d.commit().unwrap();
    }
    drop(w);
    let report = verify(&j, &NoProgress).unwrap();
    assert!(report.ok, "{report:?}");
    let jr = Journal::open(&j).unwrap();
    for n in 3..=8 {
        let e = jr.resolve_until(&Point::Write(n)).unwrap_err().to_string();
        assert!(
            e.contains("gap") && e.contains("seq:2") && e.contains("seq:9"),
            "{e}"
        );
    }
    let e = jr.resolve_until(&Point::Write(12)).unwrap_err().to_string();
    assert!(e.contains("seq:11") && e.contains("none yet"), "{e}");
    assert!(jr.latest().unwrap_err().to_string().contains("seq:11"));
    assert!(
        jr.resolve_until(&Point::Delta(4)).is_err(),
        "delta 4 ends inside the gap"
    );
    assert_eq!(
        jr.resolve(&Point::Write(4)).unwrap(),
        4,
        "journal show still finds it"
    );
    let first_byte = |p: Point| {
        let out = tempfile::tempdir().unwrap();
        let targets = ["boot", "data"].map(|v| {
            format!("{v}={}", out.path().join(v).display())
                .parse()
                .unwrap()
        });
        let until = jr.resolve_until(&p).unwrap();
        replay(&jr, until, &targets, &NoProgress).unwrap();
        std::fs::read(out.path().join("boot")).unwrap()[0]
    };
    assert_eq!(first_byte(Point::Write(2)), 2);
    assert_eq!(first_byte(Point::Write(9)), 8);
    assert_eq!(first_byte(Point::Delta(5)), 8);
    assert_eq!(first_byte(Point::Write(11)), 11);
    // A time inside the gap names its newest write, which is refused; so is a time
    // after the last write in order, when writes only marked may have come since.
    assert!(jr.resolve_until(&Point::Time(7_500)).is_err());
    let e = jr
        .resolve_until(&Point::Time(3_000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("seq:2") && e.contains("seq:9"), "{e}");
    assert_eq!(
        jr.resolve_until(&Point::Time(2_000)).unwrap().write,
        Some(2)
    );
    assert_eq!(
        first_byte(Point::Time(9_500)),
        8,
        "after it resumed: write 9 is the point"
    );
    // A delta that leaves the gap open may not be followed by one in order.
    let mut w = JournalWriter::open(&j, 64 << 20).unwrap();
    let plain = Writes {
        first_write: 14,
        last_write: 14,
        exact_from: 0,
        gap: None,
    };
    let mut d = w.begin_split_delta(14_000, volumes, plain).unwrap();
    d.write_data(st(14), 0, 0, &[14; 512]).unwrap();
    d.commit().unwrap();
    drop(w);
    let report = verify(&j, &NoProgress).unwrap();
    assert!(!report.ok, "a gap left silently verifies: {report:?}");
}
