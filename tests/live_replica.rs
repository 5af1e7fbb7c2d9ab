//! Live block replicas (issue 14): undo data kept while deltas are applied, a rewind
//! to every point of the window equal to a replay to that point, roll-forward, and
//! the retirement's promises (the window reaches past what redo alone could reach;
//! replica reads are saved where an earlier entry's redo is the undo).
mod common;

use cascade::config::Config;
use cascade::export::live::RewindTo;
use cascade::export::{BlockExporter, Exporter, LiveTarget};
use cascade::journal::record::{Stamp, VolumeInfo, Writes};
use cascade::journal::{Journal, JournalWriter, Point};
use cascade::progress::NoProgress;
use common::config::TargetFile;
use common::group::{noise, Group};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
const SIZES: [u64; 2] = [64 << 10, 32 << 10];

/// One extent of a generated delta, in sectors.
#[derive(Debug, Clone)]
struct W {
    vol: usize,
    at: u64,
    len: u64,
    zero: bool,
    seed: u64,
}

fn writes() -> impl Strategy<Value = W> {
    (
        0usize..2,
        0u64..128,
        1u64..24,
        prop::bool::weighted(0.2),
        any::<u64>(),
    )
        .prop_map(|(vol, at, len, zero, seed)| {
            let sectors = SIZES[vol] / SECTOR;
            let at = at % sectors;
            W {
                vol,
                at,
                len: len.min(sectors - at),
                zero,
                seed,
            }
        })
}

/// A group of two image volumes with a live block target `live` whose undo is
/// bounded by `max_bytes`; the replica files are created at their volumes' sizes.
struct Live {
    g: Group,
    replicas: Vec<PathBuf>,
}

impl Live {
    fn new(dir: &Path, max_bytes: &str) -> Live {
        Live::sized(dir, max_bytes, &SIZES)
    }

    fn sized(dir: &Path, max_bytes: &str, sizes: &[u64]) -> Live {
        let g = Group::new(dir, sizes);
        let replicas: Vec<PathBuf> = (0..sizes.len())
            .map(|i| dir.join(format!("replica-v{i}.img")))
            .collect();
        for (p, size) in replicas.iter().zip(sizes.iter().copied()) {
            std::fs::File::create(p).unwrap().set_len(size).unwrap();
        }
        g.write_target(
            "live",
            &TargetFile::live(
                [("v0", replicas[0].clone()), ("v1", replicas[1].clone())],
                dir.join("undo"),
                max_bytes,
            ),
        );
        g.configure(|c| c.groups[0].targets = vec!["live".into()]);
        Live { g, replicas }
    }

    fn config(&self) -> Config {
        self.g.config()
    }

    fn exporter(&self, cfg: &Config) -> BlockExporter {
        let cg = cfg.group("cg").unwrap();
        let state = cascade::export::targets_state(cfg, cg);
        std::fs::create_dir_all(&state).unwrap();
        let target = cfg.target("live").unwrap();
        let cascade::config::TargetSpec::Block { volumes, .. } = &target.spec else {
            unreachable!()
        };
        BlockExporter::new(target, cg, volumes, &state).unwrap()
    }

    fn read(&self) -> Vec<Vec<u8>> {
        self.replicas
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    fn rewind(
        &self,
        cfg: &Config,
        to: RewindTo,
    ) -> cascade::Result<cascade::export::live::RewindReport> {
        LiveTarget::open(cfg, "live", None)?.rewind(cfg, &to, &NoProgress)
    }
}

fn volumes() -> Vec<VolumeInfo> {
    volumes_of(&SIZES)
}

fn volumes_of(sizes: &[u64]) -> Vec<VolumeInfo> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, size)| VolumeInfo {
            id: format!("v{i}"),
            size: *size,
        })
        .collect()
}

/// Journals a full first delta of noise and then `deltas`; returns the volumes at
/// every point (index: delta id; 0 is the replica before the first delta, zeros).
fn journal_of(journal: &Path, deltas: &[Vec<W>]) -> Vec<Vec<Vec<u8>>> {
    journal_sized(journal, &SIZES, deltas)
}

/// [`journal_of`] for volumes of `sizes`.
fn journal_sized(journal: &Path, sizes: &[u64], deltas: &[Vec<W>]) -> Vec<Vec<Vec<u8>>> {
    let mut w = JournalWriter::open(journal, 64 << 20).unwrap();
    let mut state: Vec<Vec<u8>> = sizes.iter().map(|s| vec![0u8; *s as usize]).collect();
    let mut points = vec![state.clone()];
    let mut d = w.begin_delta(1, volumes_of(sizes), true).unwrap();
    for (i, v) in state.iter_mut().enumerate() {
        *v = noise(100 + i as u64, v.len());
        d.data(i as u16, 0, v).unwrap();
    }
    d.commit().unwrap();
    points.push(state.clone());
    for (n, delta) in deltas.iter().enumerate() {
        let mut d = w
            .begin_delta(2 + n as i64, volumes_of(sizes), false)
            .unwrap();
        for x in delta {
            let (at, len) = ((x.at * SECTOR) as usize, (x.len * SECTOR) as usize);
            let bytes = if x.zero {
                vec![0u8; len]
            } else {
                noise(x.seed, len)
            };
            if x.zero {
                d.zero(x.vol as u16, at as u64, len as u64).unwrap();
            } else {
                d.data(x.vol as u16, at as u64, &bytes).unwrap();
            }
            state[x.vol][at..at + len].copy_from_slice(&bytes);
        }
        d.commit().unwrap();
        points.push(state.clone());
    }
    points
}

/// The oldest point a journal of the redo of entries `held` (delta ids) alone could
/// bring the replica back to, the replica being at the last of them: every sector
/// written after the point must have been written by a held entry at or before it.
fn redo_alone_reach(deltas: &[Vec<W>], held: std::ops::RangeInclusive<u64>) -> u64 {
    // deltas[i] is delta i + 2; delta 1 wrote everything.
    let wrote = |d: u64| -> Vec<(usize, u64)> {
        if d == 1 {
            return (0..2)
                .flat_map(|v| (0..SIZES[v] / SECTOR).map(move |s| (v, s)))
                .collect();
        }
        deltas[d as usize - 2]
            .iter()
            .flat_map(|x| (x.at..x.at + x.len).map(move |s| (x.vol, s)))
            .collect()
    };
    let (a, n) = (*held.start(), *held.end());
    (a.saturating_sub(1)..=n)
        .find(|&p| {
            let before: std::collections::HashSet<(usize, u64)> = (a..=p).flat_map(wrote).collect();
            (p + 1..=n).flat_map(wrote).all(|s| before.contains(&s))
        })
        .unwrap_or(n)
}

/// What a case found: the undo's costs, the window, and how far redo alone reaches.
struct Found {
    made: cascade::export::undo::RecordStats,
    window: cascade::export::undo::Window,
    redo_alone: u64,
}

fn case(deltas: Vec<Vec<W>>, max_bytes: u64, order_seed: u64) -> Result<Found, TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let live = Live::new(tmp.path(), &format!("{max_bytes}"));
    let points = journal_of(&live.g.journal(), &deltas);
    let n = points.len() as u64 - 1;
    let cfg = live.config();
    let journal = Journal::open(&live.g.journal()).unwrap();
    let mut e = live.exporter(&cfg);
    for d in 1..=n {
        e.apply(&journal, d).unwrap();
    }
    let made = e.undo_made().unwrap();
    let window = e.live().unwrap().unwrap().window;
    drop(e);
    prop_assert!(live.read() == points[n as usize], "the replica is live");
    prop_assert_eq!(window.newest, n);
    prop_assert_eq!(window.oldest, (n - window.entries).max(1), "{:?}", window);
    prop_assert!(
        window.entries == 1 || window.bytes <= max_bytes,
        "{:?}",
        window
    );
    // The undo covers every byte written: read, or referred to an earlier entry.
    prop_assert_eq!(
        made.read_bytes + made.referred_bytes + made.hole_bytes,
        made.undo_bytes
    );
    let redo_alone = match window.entries {
        0 => n,
        e => redo_alone_reach(&deltas, n - e + 1..=n),
    };
    prop_assert!(
        window.oldest <= redo_alone,
        "window {:?}, redo alone reaches {redo_alone}",
        window
    );
    // Every point of the window, in a shuffled order (so rewinds go back and
    // forward from held points), then the newest again.
    let mut order: Vec<u64> = (window.oldest..=n).collect();
    let mut s = order_seed;
    for i in (1..order.len()).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (s >> 33) as usize % (i + 1));
    }
    for p in order {
        let r = live.rewind(&cfg, RewindTo::Point(Point::Delta(p))).unwrap();
        prop_assert!(r.held);
        prop_assert!(live.read() == points[p as usize], "rewound to {p}");
    }
    if window.oldest > 1 {
        let err = live
            .rewind(&cfg, RewindTo::Point(Point::Delta(window.oldest - 1)))
            .unwrap_err()
            .to_string();
        prop_assert!(
            err.contains("outside the replica's window")
                && err.contains(&format!("from delta {} to delta {n}", window.oldest)),
            "{}",
            err
        );
    }
    let r = live.rewind(&cfg, RewindTo::Latest).unwrap();
    prop_assert!(!r.held);
    prop_assert!(live.read() == points[n as usize], "rolled forward");
    Ok(Found {
        made,
        window,
        redo_alone,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Generated deltas of overlapping writes and zeros on two volumes, the undo
    /// journal bounded so that entries retire: every point of the window rewinds to
    /// the journal's state there byte for byte, one outside is refused naming the
    /// window, the window reaches at least as far as redo alone would, and
    /// `--latest` comes back to the newest point.
    #[test]
    fn rewind_reaches_every_point_of_the_window(
        deltas in prop::collection::vec(prop::collection::vec(writes(), 1..6), 1..12),
        max_kib in 4u64..200,
        order_seed in any::<u64>(),
    ) {
        case(deltas, max_kib << 10, order_seed)?;
    }
}

/// Overwrites of bytes an earlier held entry wrote are not read from the replica:
/// their undo is that entry's redo, copied only when it retires; the window still
/// reaches every point after the retirement.
#[test]
fn retirement_saves_replica_reads() {
    let w = |vol, at, len, seed| W {
        vol,
        at,
        len,
        zero: false,
        seed,
    };
    // Delta 2 writes A and B, 3 overwrites A, 4 overwrites A and B, 5 writes C.
    let deltas = vec![
        vec![w(0, 0, 16, 1), w(1, 8, 8, 2)],
        vec![w(0, 0, 16, 3)],
        vec![w(0, 4, 8, 4), w(1, 8, 8, 5)],
        vec![w(0, 64, 8, 6)],
    ];
    // A bound that delta 1's full image cannot stay in, and that retires entry 2
    // after delta 4 (its redo of A and B becomes the own undo of 3 and 4), then
    // entry 3 after delta 5 (its A becomes 4's).
    let found = case(deltas.clone(), 36 << 10, 7).unwrap();
    let full = SIZES.iter().sum::<u64>();
    let naive: u64 = deltas.iter().flatten().map(|x| x.len * SECTOR).sum::<u64>() + full;
    assert_eq!(found.made.undo_bytes, naive, "undo covers every write");
    // Delta 1 reads nothing (the new replica files are holes), 2 everything it
    // writes, 3 and 4 nothing (their undo was 2's and 3's redo), 5 its C.
    assert_eq!(found.made.hole_bytes, full);
    assert_eq!(
        found.made.read_bytes,
        (16 + 8 + 8) * SECTOR,
        "replica reads: {} of {naive}",
        found.made.read_bytes
    );
    assert_eq!(
        (found.window.oldest, found.window.entries),
        (3, 2),
        "{:?}",
        found.window
    );
    assert_eq!(
        found.redo_alone, 5,
        "redo alone reaches no point before the newest"
    );
}

/// Split deltas: a point inside one (`seq:N`, just after write N) rewinds to the
/// volumes as they were after that write.
#[test]
fn rewind_to_a_write_inside_a_split_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let live = Live::new(tmp.path(), "1MiB");
    let mut w = JournalWriter::open(&live.g.journal(), 64 << 20).unwrap();
    let mut state: Vec<Vec<u8>> = SIZES.iter().map(|s| vec![0u8; *s as usize]).collect();
    let mut d = w.begin_delta(1, volumes(), true).unwrap();
    for (i, v) in state.iter_mut().enumerate() {
        *v = noise(50 + i as u64, v.len());
        d.data(i as u16, 0, v).unwrap();
    }
    d.commit().unwrap();
    // Writes 1..=12 in deltas 2 (1..=5), 3 (6..=9), 4 (10..=12), overlapping.
    let mut after = vec![state.clone()];
    let mut n = 0u64;
    for (first, last) in [(1u64, 5u64), (6, 9), (10, 12)] {
        let writes = Writes {
            first_write: first,
            last_write: last,
            exact_from: 0,
            gap: None,
        };
        let mut d = w
            .begin_split_delta(first as i64 * 1000, volumes(), writes)
            .unwrap();
        for write in first..=last {
            n += 1;
            let vol = (write % 2) as usize;
            let at = (write * 3 % 24) * 1024;
            let bytes = noise(write, 6 * 1024);
            let stamp = Stamp {
                write,
                time_ns: write as i64 * 1000,
            };
            d.write_data(stamp, vol as u16, at, &bytes).unwrap();
            state[vol][at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
            after.push(state.clone());
        }
        d.commit().unwrap();
    }
    drop(w);
    let cfg = live.config();
    let journal = Journal::open(&live.g.journal()).unwrap();
    let mut e = live.exporter(&cfg);
    for d in 1..=4 {
        e.apply(&journal, d).unwrap();
    }
    drop(e);
    for write in [3u64, 12, 7, 1, 9, 10, 5] {
        live.rewind(&cfg, RewindTo::Point(Point::Write(write)))
            .unwrap();
        assert!(live.read() == after[write as usize], "seq:{write}");
    }
    live.rewind(&cfg, RewindTo::Latest).unwrap();
    assert!(live.read() == after[n as usize]);
}

/// A group with `deltas` journalled and all of them exported to the live target.
fn exported(dir: &Path, max_bytes: &str, deltas: &[Vec<W>]) -> (Live, Vec<Vec<Vec<u8>>>) {
    let live = Live::new(dir, max_bytes);
    let points = journal_of(&live.g.journal(), deltas);
    let out = live
        .g
        .cascade(&["export", "-c", "cascade.yaml", "--target", "live"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (live, points)
}

/// Four deltas of overlapping writes on both volumes.
fn four_deltas() -> Vec<Vec<W>> {
    (0..4u64)
        .map(|i| {
            (0..3u64)
                .map(|j| W {
                    vol: ((i + j) % 2) as usize,
                    at: (i * 13 + j * 29) % 40,
                    len: 8 + (i + j) % 16,
                    zero: j == 2 && i % 2 == 1,
                    seed: 1000 + i * 10 + j,
                })
                .collect()
        })
        .collect()
}

fn target_status(live: &Live) -> serde_json::Value {
    let out = live.g.cascade(&["status", "-c", "cascade.yaml", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["groups"][0]["targets"][0].clone()
}

fn code(out: &std::process::Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cascade rewind` and `cascade status`: the window, "held at" while rewound (an
/// export then waits and applies nothing), `--latest` live again; a point outside
/// the window and a target that is not live are refused with their reasons.
#[test]
fn rewind_holds_the_replica_and_latest_lets_exports_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (live, points) = exported(tmp.path(), "1MiB", &four_deltas());
    let t = target_status(&live);
    assert_eq!(t["cursor"], 5, "{t}");
    assert_eq!(t["live"]["window"]["oldest"], 1, "{t}");
    assert_eq!(t["live"]["window"]["newest"], 5, "{t}");
    assert!(t["live"]["held"].is_null(), "{t}");

    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", code(&out).1);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some("delta 5"), Some("delta 3")),
        "{r}"
    );
    assert_eq!(r["held"], true);
    assert!(live.read() == points[3]);
    let text = live.g.cascade(&["status", "-c", "cascade.yaml"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("window: delta 1 to delta 5") && text.contains("held at delta 3"),
        "{text}"
    );

    // A new delta waits while the replica is held.
    let mut w = JournalWriter::open(&live.g.journal(), 64 << 20).unwrap();
    let mut d = w.begin_delta(10, volumes(), false).unwrap();
    d.data(0, 0, &noise(77, 4096)).unwrap();
    d.commit().unwrap();
    drop(w);
    let mut newest = points[5].clone();
    newest[0][..4096].copy_from_slice(&noise(77, 4096));
    let out = live
        .g
        .cascade(&["export", "-c", "cascade.yaml", "--target", "live", "--json"]);
    assert!(out.status.success(), "{}", code(&out).1);
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &e["status"];
    assert_eq!(e["live"]["held"], "delta 3", "{e}");
    assert_eq!(
        (e["applied"].as_u64(), e["waiting"].as_u64()),
        (Some(0), Some(1)),
        "{e}"
    );
    assert!(
        live.read() == points[3],
        "an export leaves a held replica alone"
    );

    // Outside the window; not a live target; neither --to nor --latest.
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "6",
    ]);
    let (c, err) = code(&out);
    assert!(
        c == 3
            && err.contains("outside the replica's window")
            && err.contains("from delta 1 to delta 5"),
        "{c} {err}"
    );
    assert!(live.read() == points[3]);
    let out = live
        .g
        .cascade(&["rewind", "-c", "cascade.yaml", "--target", "live"]);
    assert_eq!(code(&out).0, 2, "{}", code(&out).1);
    live.g.write_target(
        "plain",
        &TargetFile::block([("v0", tmp.path().join("p0")), ("v1", tmp.path().join("p1"))]),
    );
    live.g
        .configure(|c| c.groups[0].targets.push("plain".into()));
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "plain",
        "--latest",
    ]);
    let (c, err) = code(&out);
    assert!(
        c == 2 && err.contains("is not live") && err.contains("undo:"),
        "{c} {err}"
    );

    // Forward again: to the newest exported point, then the export goes on.
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--latest",
    ]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[5]);
    let out = live
        .g
        .cascade(&["export", "-c", "cascade.yaml", "--target", "live"]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == newest);
    let t = target_status(&live);
    assert!(
        t["live"]["held"].is_null() && t["live"]["window"]["newest"] == 6,
        "{t}"
    );
}

/// Damaged undo data is refused before the replica changes, naming the file.
#[test]
fn corrupt_undo_is_refused_before_the_replica_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (live, points) = exported(tmp.path(), "1MiB", &four_deltas());
    // Flip a byte in the middle of the data of entry 3 (its redo and undo).
    let data = std::fs::read_dir(tmp.path().join("undo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-00000000000000000003.data"))
        .expect("entry 3's data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "1",
    ]);
    let (c, err) = code(&out);
    assert!(
        c == 4 && err.contains(&data.display().to_string()) && err.contains("checksum"),
        "{c} {err}"
    );
    assert!(live.read() == points[5], "nothing was written");
    let t = target_status(&live);
    assert!(t["live"]["held"].is_null(), "{t}");
    // A point whose path does not cross entry 3 is still reached.
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "4",
    ]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[4]);
}

/// An undo directory that cannot be written (here: a file stands where it should
/// be) keeps the replica live: the export applies its deltas, and status says the
/// undo was dropped and the window closed to the newest point. Once the directory
/// can be written again the window grows back.
#[test]
fn an_undo_directory_that_is_gone_keeps_the_replica_live() {
    let tmp = tempfile::tempdir().unwrap();
    let live = Live::new(tmp.path(), "1MiB");
    let deltas = four_deltas();
    let points = journal_of(&live.g.journal(), &deltas[..2]);
    std::fs::write(tmp.path().join("undo"), b"not a directory").unwrap();
    let out = live
        .g
        .cascade(&["export", "-c", "cascade.yaml", "--target", "live"]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[3], "the replica stays live");
    let t = target_status(&live);
    assert_eq!(t["live"]["window"]["oldest"], 3, "{t}");
    assert!(
        t["live"]["undo_lost"]["reason"]
            .as_str()
            .unwrap()
            .contains("undo"),
        "{t}"
    );
    let text = live.g.cascade(&["status", "-c", "cascade.yaml"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("undo was dropped at delta"));
    // The directory is back: the next deltas have undo, the window grows from 3.
    std::fs::remove_file(tmp.path().join("undo")).unwrap();
    let mut w = JournalWriter::open(&live.g.journal(), 64 << 20).unwrap();
    let mut d = w.begin_delta(10, volumes(), false).unwrap();
    d.data(1, 0, &noise(78, 8192)).unwrap();
    d.commit().unwrap();
    drop(w);
    let out = live
        .g
        .cascade(&["export", "-c", "cascade.yaml", "--target", "live"]);
    assert!(out.status.success(), "{}", code(&out).1);
    let t = target_status(&live);
    assert_eq!(
        (
            t["live"]["window"]["oldest"].as_u64(),
            t["live"]["window"]["newest"].as_u64()
        ),
        (Some(3), Some(4)),
        "{t}"
    );
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "3",
    ]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[3]);
}

/// A served point reads as a replay to that point (`qemu-img compare`), from the
/// newest point and from a held one; writes through it are seen by its reads and
/// leave the replica unchanged, and are gone when serving stops.
#[test]
fn serve_at_a_point_reads_as_a_replay_and_leaves_the_replica_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (live, points) = exported(tmp.path(), "1MiB", &four_deltas());
    let check = |at: &str, n: usize| {
        let replay = tmp.path().join(format!("replay-{at}"));
        std::fs::create_dir_all(&replay).unwrap();
        let to: Vec<String> = ["v0", "v1"]
            .iter()
            .map(|v| format!("{v}={}", replay.join(v).display()))
            .collect();
        let out = live.g.cascade(&[
            "replay",
            "journals/cg",
            "--until",
            at,
            "--to",
            &to[0],
            &to[1],
        ]);
        assert!(out.status.success(), "{}", code(&out).1);
        let server = Served::start(&live.g.dir, at);
        for v in ["v0", "v1"] {
            common::nbd::client(
                std::process::Command::new("qemu-img")
                    .args(["compare", "-f", "raw", "-F", "raw"])
                    .arg(server.uri(v))
                    .arg(replay.join(v)),
            );
        }
        // While it serves, an export waits, and says why.
        let out = live
            .g
            .cascade(&["export", "-c", "cascade.yaml", "--target", "live", "--json"]);
        assert!(out.status.success(), "{}", code(&out).1);
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            e["status"]["last_error"].is_null()
                && e["status"]["live"]["served"]
                    .as_str()
                    .is_some_and(|s| s.contains(&format!("cascade serve` at {at}"))),
            "{e}"
        );
        let uri = server.uri("v0");
        common::nbd::qemu_io(&uri, &["write -P 0x5a 4096 8192", "write -z 32768 4096"]);
        let read = common::nbd::qemu_io(&uri, &["read -P 0x5a 4096 8192", "read -P 0 32768 4096"]);
        assert!(!read.contains("Pattern verification failed"), "{read}");
        server.stop();
        assert!(
            live.read() == points[n],
            "serving {at} left the replica alone"
        );
        // The writes are gone: served again, the point reads as the replay.
        let server = Served::start(&live.g.dir, at);
        common::nbd::client(
            std::process::Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(server.uri("v0"))
                .arg(replay.join("v0")),
        );
        server.stop();
    };
    check("2", 5);
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "3",
    ]);
    assert!(out.status.success(), "{}", code(&out).1);
    check("4", 3);
    check("1", 3);
    let out = live.g.cascade(&[
        "serve",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--at",
        "9",
        "--listen",
        "127.0.0.1:0",
    ]);
    let (c, err) = code(&out);
    assert!(c == 3 && err.contains("delta 9"), "{c} {err}");
}

/// `cascade serve --at`, running until stopped.
struct Served {
    child: std::process::Child,
    addr: String,
}

impl Served {
    fn start(dir: &Path, at: &str) -> Served {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args([
                "serve",
                "-c",
                "cascade.yaml",
                "--target",
                "live",
                "--at",
                at,
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let mut addr = None;
        while addr.is_none() || said.matches("serving ").count() < 2 {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "cascade serve exited:\n{said}"
            );
            said += &line;
            if let Some(rest) = line.split(" at nbd://").nth(1) {
                addr = rest.split('/').next().map(String::from);
            }
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Served {
            child,
            addr: addr.unwrap(),
        }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.addr)
    }

    fn stop(mut self) {
        unsafe_free_sigterm(self.child.id());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cascade serve: {status}");
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -9` of `cascade export` while it applies deltas (and makes their undo), and
/// of `cascade rewind` while it moves the replica: after each, the cursor names
/// where the replica is or which move was cut short, and the next run brings it to
/// the exact point: the newest after the export, the point asked for after a rewind.
#[test]
fn kill_9_during_apply_and_rewind_leaves_an_exact_point() {
    const MIB: u64 = 1 << 20;
    let sizes = [8 * MIB, 8 * MIB];
    let tmp = tempfile::tempdir().unwrap();
    // A bound that retires entries during the export (delta 1's full image first).
    let live = Live::sized(tmp.path(), "24MiB", &sizes);
    let vols: Vec<VolumeInfo> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| VolumeInfo {
            id: format!("v{i}"),
            size: *size,
        })
        .collect();
    let mut state: Vec<Vec<u8>> = sizes.iter().map(|s| noise(300 + *s, *s as usize)).collect();
    let mut points = vec![vec![vec![0u8; 8 * MIB as usize]; 2]];
    let mut w = JournalWriter::open(&live.g.journal(), 64 << 20).unwrap();
    let mut d = w.begin_delta(1, vols.clone(), true).unwrap();
    for (i, v) in state.iter().enumerate() {
        d.data(i as u16, 0, v).unwrap();
    }
    d.commit().unwrap();
    points.push(state.clone());
    let mut seed = 1u64;
    for n in 2..=6 {
        let mut d = w.begin_delta(n, vols.clone(), false).unwrap();
        for _ in 0..48 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let vol = (seed >> 60) as usize % 2;
            let at = ((seed >> 20) % (8 * MIB / 4096 - 16)) * 4096;
            let bytes = noise(seed, 64 << 10);
            d.data(vol as u16, at, &bytes).unwrap();
            state[vol][at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        d.commit().unwrap();
        points.push(state.clone());
    }
    drop(w);
    let bin = env!("CARGO_BIN_EXE_cascade");
    let run = |args: &[&str], kill_after: Option<std::time::Duration>| {
        let mut child = std::process::Command::new(bin)
            .args(args)
            .current_dir(&live.g.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if let Some(after) = kill_after {
            std::thread::sleep(after);
            let _ = child.kill();
        }
        child.wait().unwrap()
    };
    let timed = |args: &[&str]| {
        let started = std::time::Instant::now();
        assert!(run(args, None).success(), "{args:?}");
        started.elapsed()
    };
    let mut rng = 99u64;
    let mut delay = |full: std::time::Duration| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        full.mul_f64((rng >> 11) as f64 / (1u64 << 53) as f64)
    };

    // The export, killed until it gets through.
    let export = ["export", "-c", "cascade.yaml", "--target", "live"];
    let mut kills = 0;
    while !run(&export, Some(delay(std::time::Duration::from_millis(400)))).success() {
        kills += 1;
        assert!(kills < 60, "the export never got through");
    }
    assert!(
        live.read() == points[6],
        "after {kills} kills the export ends at the newest point"
    );
    let o = target_status(&live)["live"]["window"]["oldest"]
        .as_u64()
        .unwrap();
    assert!(o < 5, "the window holds a few points: from {o}");

    // Rewinds, each killed once at a random moment of its run, then run again.
    let mut cut_short = 0;
    let mut at = 6u64;
    for p in [o + 1, 5, o, 6, o + 1, 4, o, 5] {
        let to = p.to_string();
        let args = [
            "rewind",
            "-c",
            "cascade.yaml",
            "--target",
            "live",
            "--to",
            &to,
        ];
        // How long a whole move takes, from here, measured on the way back.
        let full = timed(&args);
        let back = at.to_string();
        assert!(run(
            &[
                "rewind",
                "-c",
                "cascade.yaml",
                "--target",
                "live",
                "--to",
                &back
            ],
            None
        )
        .success());
        let killed = !run(&args, Some(delay(full))).success();
        eprintln!("rewind {at} -> {p}: whole {full:?}, killed {killed}");
        let t = target_status(&live);
        if killed && !t["live"]["moving_to"].is_null() {
            cut_short += 1;
            assert_eq!(t["live"]["moving_to"], format!("delta {p}"), "{t}");
        }
        assert!(run(&args, None).success());
        assert!(live.read() == points[p as usize], "at {p} after a kill");
        at = p;
    }
    eprintln!("export: {kills} kills; rewinds (window from delta {o}): {cut_short} of 8 kills cut a move short");
    assert!(cut_short > 0, "no kill landed inside a move");
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--latest",
    ]);
    assert!(out.status.success());
    assert!(live.read() == points[6]);
}

/// Two live targets may share an undo directory: each keeps its own entries (a
/// target's files carry its name), and each rewinds exactly.
#[test]
fn live_targets_share_an_undo_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let live = Live::new(tmp.path(), "1MiB");
    let other: Vec<PathBuf> = (0..2)
        .map(|i| tmp.path().join(format!("other-v{i}.img")))
        .collect();
    for (p, size) in other.iter().zip(SIZES) {
        std::fs::File::create(p).unwrap().set_len(size).unwrap();
    }
    live.g.write_target(
        "other",
        &TargetFile::live(
            [("v0", other[0].clone()), ("v1", other[1].clone())],
            tmp.path().join("undo"),
            "1MiB",
        ),
    );
    live.g
        .configure(|c| c.groups[0].targets = vec!["live".into(), "other".into()]);
    let points = journal_of(&live.g.journal(), &four_deltas());
    let out = live.g.cascade(&["export", "-c", "cascade.yaml"]);
    assert!(out.status.success(), "{}", code(&out).1);
    for (target, files) in [("live", &live.replicas), ("other", &other)] {
        let out = live.g.cascade(&[
            "rewind",
            "-c",
            "cascade.yaml",
            "--target",
            target,
            "--to",
            "2",
        ]);
        assert!(out.status.success(), "{target}: {}", code(&out).1);
        let read: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(read == points[2], "{target} at 2");
    }
}

/// A replica whose cursor says a delta's apply was cut short, with no entry for
/// that delta kept (its undo was dropped before the crash): the export finishes the
/// delta without reading undo from the half-written replica, and the window starts
/// after it.
#[test]
fn an_apply_cut_short_without_its_entry_drops_the_undo() {
    let tmp = tempfile::tempdir().unwrap();
    let live = Live::new(tmp.path(), "1MiB");
    let deltas = four_deltas();
    let points = journal_of(&live.g.journal(), &deltas);
    let cfg = live.config();
    let journal = Journal::open(&live.g.journal()).unwrap();
    let mut e = live.exporter(&cfg);
    for d in 1..=3 {
        e.apply(&journal, d).unwrap();
    }
    drop(e);
    // As a crash in delta 4 would leave it after its undo was dropped: the cursor
    // marks 4 as being applied in a new epoch, and the replica holds part of it.
    let cursor = tmp.path().join("state/cg/targets/live.cursor");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cursor).unwrap()).unwrap();
    c["applying"] = 4.into();
    c["undo_epoch"] = 12345.into();
    std::fs::write(&cursor, serde_json::to_vec(&c).unwrap()).unwrap();
    let out = live
        .g
        .cascade(&["export", "-c", "cascade.yaml", "--target", "live"]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[5]);
    let t = target_status(&live);
    assert_eq!(t["live"]["window"]["oldest"], 4, "{t}");
    let reason = t["live"]["undo_lost"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("holds part of delta 4"), "{t}");
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "4",
    ]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[4]);
}

/// A full undo directory (a 512 KiB tmpfs) keeps the replica live: the export applies
/// every delta, and status says why the window is short. Deltas whose undo fits go
/// on having it.
#[test]
fn a_full_undo_directory_keeps_the_replica_live() {
    if !common::host::root_or_skip("a_full_undo_directory_keeps_the_replica_live") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [1 << 20, 512 << 10];
    let live = Live::sized(tmp.path(), "1MiB", &sizes);
    std::fs::create_dir(tmp.path().join("undo")).unwrap();
    let _tmpfs = common::mount::Mount::new(
        &["-t", "tmpfs", "-o", "size=512k", "tmpfs"],
        &tmp.path().join("undo"),
    );
    // Delta 1's full image (1.5 MiB of redo) cannot fit; deltas 2..5 (tens of KiB
    // each) can.
    let points = journal_sized(&live.g.journal(), &sizes, &four_deltas());
    let out = live
        .g
        .cascade(&["export", "-c", "cascade.yaml", "--target", "live"]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[5], "the replica stays live");
    let t = target_status(&live);
    let lost = &t["live"]["undo_lost"];
    assert!(
        lost["delta"] == 1 && lost["reason"].as_str().unwrap().contains("No space left"),
        "{t}"
    );
    assert_eq!(
        (
            t["live"]["window"]["oldest"].as_u64(),
            t["live"]["window"]["newest"].as_u64()
        ),
        (Some(1), Some(5)),
        "{t}"
    );
    let out = live.g.cascade(&[
        "rewind",
        "-c",
        "cascade.yaml",
        "--target",
        "live",
        "--to",
        "1",
    ]);
    assert!(out.status.success(), "{}", code(&out).1);
    assert!(live.read() == points[1]);
}
