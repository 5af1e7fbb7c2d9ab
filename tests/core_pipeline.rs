//! The core property: for random writes over several cycles on several volumes,
//! replaying the journal up to every committed delta gives exactly the bytes the
//! volumes had when that delta's snapshot was taken. Run on the copy/block-compare
//! path (the ordinary file system) and on the reflink/extent-map path (XFS on a loop
//! device).
mod common;

use cascade::journal::Journal;
use cascade::progress::NoProgress;
use cascade::replay::{replay, Destination};
use common::group::{noise, Group};
use proptest::prelude::*;
use std::path::Path;

#[derive(Debug, Clone)]
enum Write {
    Noise(u64),
    Fill(u8),
    Zeros,
    /// A discard: the range becomes a hole.
    Punch,
}

#[derive(Debug, Clone)]
struct Op {
    volume: usize,
    /// Fraction of the volume where the write starts, in 1/1000.
    at: u64,
    len: usize,
    write: Write,
}

const SIZES: [u64; 2] = [3 * 1024 * 1024 + 1234, 1024 * 1024];

fn op() -> impl Strategy<Value = Op> {
    let write = prop_oneof![
        any::<u64>().prop_map(Write::Noise),
        any::<u8>().prop_map(Write::Fill),
        Just(Write::Zeros),
        Just(Write::Punch),
    ];
    (0..SIZES.len(), 0u64..1000, 1usize..300_000, write).prop_map(|(volume, at, len, write)| Op {
        volume,
        at,
        len,
        write,
    })
}

/// Applies the cycles' writes, takes a cycle after each batch, then replays every
/// delta onto fresh files and compares.
fn check_history(dir: &Path, batches: &[Vec<Op>]) {
    let g = Group::new(dir, &SIZES);
    let mut expected = Vec::new();
    for batch in batches {
        for op in batch {
            let size = SIZES[op.volume];
            let offset = size * op.at / 1000;
            let len = op.len.min((size - offset) as usize);
            let bytes = match op.write {
                Write::Noise(seed) => noise(seed, len),
                Write::Fill(b) => vec![b; len],
                Write::Zeros => vec![0; len],
                Write::Punch => {
                    g.punch(op.volume, offset, len as u64);
                    continue;
                }
            };
            g.write(op.volume, offset, &bytes);
        }
        let report = g.cycle();
        assert_eq!(report.delta as usize, expected.len() + 1);
        expected.push(g.contents());
    }
    let journal = Journal::open(&g.journal()).unwrap();
    assert_eq!(journal.last_delta() as usize, batches.len());
    for (i, want) in expected.iter().enumerate() {
        let out = dir.join(format!("replay-{}", i + 1));
        std::fs::create_dir_all(&out).unwrap();
        let targets: Vec<Destination> = (0..SIZES.len())
            .map(|v| {
                format!("{}", out.join(format!("v{v}")).display())
                    .parse()
                    .unwrap()
            })
            .collect();
        replay(&journal, i as u64 + 1, &targets, &NoProgress).unwrap();
        for (v, want) in want.iter().enumerate() {
            let got = std::fs::read(out.join(format!("v{v}"))).unwrap();
            assert!(
                got == *want,
                "volume v{v} differs after replaying to delta {}",
                i + 1
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn replay_gives_every_snapshot_copy_path(batches in prop::collection::vec(prop::collection::vec(op(), 0..10), 1..5)) {
        let tmp = tempfile::tempdir().unwrap();
        check_history(tmp.path(), &batches);
    }
}

#[test]
fn replay_gives_every_snapshot_reflink_path() {
    let Some(xfs) = common::xfs::XfsMount::new(512) else {
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    });
    let strategy = prop::collection::vec(prop::collection::vec(op(), 0..10), 1..5);
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |batches| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = xfs.path(format!("case-{n}"));
            check_history(&dir, &batches);
            let snap = std::fs::read_to_string(dir.join(format!(
                "state/cg/snapshots/{}/snapshot.json",
                batches.len()
            )))
            .unwrap();
            assert!(
                snap.contains("\"reflinked\": true"),
                "XFS snapshots must be reflink clones: {snap}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
            Ok(())
        })
        .unwrap();
}

/// Shrinking and growing a volume: bytes past a shrunken end must not come back when
/// the volume grows, on fresh targets and on an existing target full of other bytes.
fn check_resizes(dir: &Path) {
    let g = Group::new(dir, &[2 << 20]);
    let resize = |size: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&g.volumes[0])
            .unwrap()
            .set_len(size)
            .unwrap()
    };
    g.write(0, 1536 << 10, &noise(5, 64 << 10));
    g.cycle();
    let mut points = vec![g.contents()];
    resize(1 << 20);
    g.cycle();
    points.push(g.contents());
    resize(3 << 20);
    g.write(0, (5 << 19) + 4096, &noise(6, 4096));
    g.cycle();
    points.push(g.contents());
    let journal = Journal::open(&g.journal()).unwrap();
    for (i, want) in points.iter().enumerate() {
        let fresh = dir.join(format!("fresh-{i}"));
        let used = dir.join(format!("used-{i}"));
        std::fs::write(&used, vec![0xffu8; 4 << 20]).unwrap();
        for target in [&fresh, &used] {
            let t: Destination = target.display().to_string().parse().unwrap();
            replay(&journal, i as u64 + 1, &[t], &NoProgress).unwrap();
            assert!(
                std::fs::read(target).unwrap() == want[0],
                "{} at delta {}",
                target.display(),
                i + 1
            );
        }
    }
}

#[test]
fn resized_volumes_replay_exactly_copy_path() {
    let tmp = tempfile::tempdir().unwrap();
    check_resizes(tmp.path());
}

#[test]
fn resized_volumes_replay_exactly_reflink_path() {
    let Some(xfs) = common::xfs::XfsMount::new(512) else {
        return;
    };
    check_resizes(&xfs.path("resize"));
}

/// A replay into new files makes their names durable, not only their bytes: once
/// the files are created and fsynced, the directory holding them is fsynced too, as
/// the system calls show under strace.
#[test]
fn replay_into_new_files_fsyncs_their_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.write(0, 0, &noise(1, 100_000));
    g.cycle();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = out.join("v0.img");
    let trace = tmp.path().join("trace");
    let o = std::process::Command::new("strace")
        .args(["-f", "-qq", "-s", "4096", "-e", "trace=openat,fsync"])
        .arg("-o")
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_cascade"))
        .args(["replay", "journals/cg", "--to"])
        .arg(&target)
        .current_dir(&g.dir)
        .output()
        .expect("strace runs (make test installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = std::fs::read_to_string(&trace).unwrap();
    let created = format!("\"{}\", O_WRONLY|O_CREAT|O_EXCL", target.display());
    let dir_open = format!("\"{}\", O_RDONLY", out.display());
    let lines: Vec<&str> = trace.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(&created))
        .unwrap_or_else(|| panic!("no exclusive create of the target in:\n{trace}"));
    let synced = lines[start..].iter().enumerate().any(|(i, l)| {
        l.contains(&dir_open)
            && l.rsplit(" = ").next().is_some_and(|fd| {
                lines[start + i..]
                    .iter()
                    .any(|m| m.contains(&format!("fsync({fd})")))
            })
    });
    assert!(
        synced,
        "the directory is never fsynced after the create:\n{trace}"
    );
}
