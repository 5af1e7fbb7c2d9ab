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
        let g = Group::new(dir, &SIZES);
        let replicas: Vec<PathBuf> = (0..SIZES.len())
            .map(|i| dir.join(format!("replica-v{i}.img")))
            .collect();
        for (p, size) in replicas.iter().zip(SIZES) {
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
    SIZES
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
    let mut w = JournalWriter::open(journal, 64 << 20).unwrap();
    let mut state: Vec<Vec<u8>> = SIZES.iter().map(|s| vec![0u8; *s as usize]).collect();
    let mut points = vec![state.clone()];
    let mut d = w.begin_delta(1, volumes(), true).unwrap();
    for (i, v) in state.iter_mut().enumerate() {
        *v = noise(100 + i as u64, v.len());
        d.data(i as u16, 0, v).unwrap();
    }
    d.commit().unwrap();
    points.push(state.clone());
    for (n, delta) in deltas.iter().enumerate() {
        let mut d = w.begin_delta(2 + n as i64, volumes(), false).unwrap();
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
    prop_assert_eq!(made.read_bytes + made.referred_bytes, made.undo_bytes);
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
    // Deltas 1 and 2 read everything they write, 3 and 4 nothing (their undo was
    // 2's and 3's redo), 5 its C.
    assert_eq!(
        found.made.read_bytes,
        full + (16 + 8 + 8) * SECTOR,
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
