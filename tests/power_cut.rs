//! Power cuts, for real (issue 11): the journal, a block replica and the file driver's
//! copy live on devices stacked over one dm-log-writes device in the test VM, which
//! records every write with its FLUSH/FUA flags. Cycles, exports (one of them running
//! all through a cycle), a bookmark and a prune run with a mark after each; then the
//! log is replayed onto a fresh image up to every durability point and up to random
//! subsets of the writes after each (tests/common/logwrites.rs): exactly the states a
//! power cut can leave. At every state the journal must open and verify, replay to the
//! last delta whose commit returned (or the next one, if its commit was durable), take
//! the next cycle, and the block replica must be exact at its cursor.
//!
//! The devices model two disks and a neighbour, the worst a real host does:
//! - the journal's file system sits behind a dm-delay device, so its writes reach the
//!   "disk" a while after the writer issued them, while the state file system (the
//!   file driver's copy, the cursor) and the replica do not wait: a reader that trusts
//!   a Commit still in the page cache makes a replica durable ahead of the journal;
//! - the journal's ext4 runs `data=writeback,nodelalloc` and a neighbour fsyncs its own
//!   file there all the time, so a segment's size and blocks become durable before its
//!   data. One cycle is killed (strace injects SIGKILL at its commit's fdatasync): its
//!   delta sits in the page cache, the neighbour makes the segment's new size durable,
//!   and the next writer's recovery writes the pages back, in any order: a torn delta
//!   whose Commit reached the disk before an earlier page of it.
//!
//! The same boot then runs the split group's harness (power_cut/splitter.rs) and the
//! live replica's (power_cut/live.rs).
//!
//! `make test` tries 50 states (an even spread over the run); `make crash` thousands
//! (CASCADE_CRASH_CYCLES, CASCADE_CRASH_SUBSETS, CASCADE_CRASH_STATES, CASCADE_CRASH_SEED).
mod common;
#[path = "power_cut/live.rs"]
mod live;
#[path = "power_cut/splitter.rs"]
mod splitter;

use cascade::config::Config;
use cascade::journal::{Applier, Journal, VolumeFile};
use cascade::progress::NoProgress;
use common::config::{ConfigFile, GroupConfig, Retention, TargetFile, Volume};
use common::logwrites::{Log, State};
use common::powercut::{env_number, even_spread, Background, Disk, Timings};
use common::vm::in_vm_with;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const CASCADE: &str = env!("CARGO_BIN_EXE_cascade");
const MIB: u64 = 1 << 20;
const JOURNAL_FS: u64 = 24 * MIB;
const STATE_FS: u64 = 16 * MIB;
const VOLUMES: [(&str, u64); 2] = [("v0", 2 * MIB), ("v1", MIB)];
/// What the delay device adds to each write of the journal's file system.
const JOURNAL_DELAY_MS: u64 = 150;
const JOURNAL_MOUNT: &str = "data=writeback,nodelalloc";

struct Params {
    cycles: u64,
    subsets: usize,
    max_states: usize,
    seed: u64,
}

impl Params {
    fn from_env() -> Params {
        Params {
            cycles: env_number("CASCADE_CRASH_CYCLES", 6),
            subsets: env_number("CASCADE_CRASH_SUBSETS", 2) as usize,
            max_states: env_number("CASCADE_CRASH_STATES", 50) as usize,
            seed: env_number("CASCADE_CRASH_SEED", 11),
        }
    }
}

const ENV: [&str; 4] = [
    "CASCADE_CRASH_CYCLES",
    "CASCADE_CRASH_SUBSETS",
    "CASCADE_CRASH_STATES",
    "CASCADE_CRASH_SEED",
];

/// Paths inside the guest (its /tmp is a tmpfs: fast, and gone at power-off).
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn journal_mnt(&self) -> PathBuf {
        self.root.join("mnt-journal")
    }
    fn state_mnt(&self) -> PathBuf {
        self.root.join("mnt-state")
    }
    fn journal(&self) -> PathBuf {
        self.journal_mnt().join("journals/g")
    }
    fn cursor(&self) -> PathBuf {
        self.state_mnt().join("state/g/targets/rep.cursor")
    }
    fn config(&self) -> PathBuf {
        self.root.join("cfg/cascade.yaml")
    }
    fn prune_config(&self) -> PathBuf {
        self.root.join("cfg-prune/cascade.yaml")
    }
    fn source(&self, id: &str) -> PathBuf {
        self.root.join("src").join(format!("{id}.img"))
    }
    fn truth(&self, delta: u64, id: &str) -> PathBuf {
        self.root.join(format!("truth/{delta}/{id}.img"))
    }
    fn replica_offset(&self, id: &str) -> u64 {
        let v = VOLUMES.iter().position(|(v, _)| *v == id);
        DISK.volume_at(v.unwrap_or_else(|| panic!("no volume {id}")))
    }
}

/// The journal's file system, the state file system, then one replica device per
/// volume.
const DISK: Disk = Disk {
    prefix: "pc",
    journal_fs: JOURNAL_FS,
    journal_delay_ms: JOURNAL_DELAY_MS,
    journal_mount: JOURNAL_MOUNT,
    state_fs: STATE_FS,
    volumes: &VOLUMES,
};

fn cascade(args: &[&str]) -> std::process::Output {
    Command::new(CASCADE).args(args).output().unwrap()
}

fn cascade_ok(args: &[&str]) -> String {
    let out = cascade(args);
    assert!(
        out.status.success(),
        "cascade {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mark(name: &str) {
    DISK.mark(name);
}

fn write_configs(l: &Layout) {
    let volumes = VOLUMES
        .iter()
        .map(|(id, _)| Volume::file(id, l.source(id)))
        .collect();
    let mut group = GroupConfig::new("g", volumes);
    group.targets = vec!["rep".into()];
    let mut cfg = ConfigFile {
        state_dir: l.state_mnt().join("state"),
        journal_dir: l.journal_mnt().join("journals"),
        targets_dir: None,
        daemon: None,
        grid: None,
        groups: vec![group],
    };
    let target = TargetFile::block(VOLUMES.iter().map(|(id, _)| {
        (
            id.to_string(),
            PathBuf::from(format!("/dev/mapper/pc-{id}")),
        )
    }));
    for (file, retention) in [
        (l.config(), Retention::default()),
        (l.prune_config(), Retention::keep_deltas(3)),
    ] {
        let dir = file.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        cfg.groups[0].journal_retention = retention;
        cfg.write_to(&file);
        target.write(dir, "rep");
    }
}

/// Random writes, zeros and holes over the sources, like a guest's.
fn mutate(l: &Layout, rng: &mut impl Rng) {
    for (id, size) in VOLUMES {
        let f = OpenOptions::new().write(true).open(l.source(id)).unwrap();
        for _ in 0..rng.gen_range(1..6) {
            let len = rng.gen_range(1..32) * 4096u64;
            let at = rng.gen_range(0..(size - len) / 4096) * 4096;
            let mut buf = vec![0u8; len as usize];
            if rng.gen_bool(0.85) {
                rng.fill(&mut buf[..]);
            }
            f.write_all_at(&buf, at).unwrap();
        }
        f.sync_all().unwrap();
    }
}

/// What the marks before a state say had finished, and what was running.
#[derive(Debug, Default)]
struct Expected {
    /// The newest delta whose cycle had returned.
    delta: u64,
    /// The command running at the power cut, if it was a cycle: its delta.
    cycle_in_flight: Option<u64>,
    /// A cycle killed before its commit returned: its delta, which may or may not
    /// have become durable.
    killed: Option<u64>,
    /// The newest delta a sequential export had brought the replica to.
    exported: u64,
    bookmarks: Vec<String>,
}

fn expected(log: &Log, s: &State) -> Expected {
    let mut e = Expected::default();
    for entry in &log.entries[..s.window_end] {
        let Some(m) = entry.mark.as_deref() else {
            continue;
        };
        let mut words = m.split(":");
        match (words.next(), words.next()) {
            (Some("cycle"), Some(d)) => e.delta = d.parse().unwrap(),
            (Some("export"), Some(d)) => e.exported = d.parse().unwrap(),
            (Some("killed"), Some(d)) => e.killed = Some(d.parse().unwrap()),
            (Some("bookmark"), Some(name)) => e.bookmarks.push(name.into()),
            _ => {}
        }
    }
    let next = log.entries[s.window_end..]
        .iter()
        .find_map(|entry| entry.mark.as_deref());
    if let Some(m) = next {
        if let Some(d) = m.strip_prefix("cycle:") {
            e.cycle_in_flight = Some(d.parse().unwrap());
        }
    }
    e
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// `path`, opened to receive volume `id`'s bytes.
fn volume_file(id: &str, path: PathBuf) -> (String, VolumeFile) {
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    (
        id.to_string(),
        VolumeFile {
            file,
            device: false,
            path,
        },
    )
}

/// Files holding each volume at `delta` (zeros for 0), to replay onto.
fn volumes_at(l: &Layout, delta: u64, dir: &Path) -> HashMap<String, VolumeFile> {
    std::fs::create_dir_all(dir).unwrap();
    VOLUMES
        .iter()
        .map(|(id, size)| {
            let path = dir.join(format!("{id}.img"));
            if delta == 0 {
                File::create(&path).unwrap().set_len(*size).unwrap();
            } else {
                std::fs::copy(l.truth(delta, id), &path).unwrap();
            }
            volume_file(id, path)
        })
        .collect()
}

/// The checks at one power-cut state, with the replayed file systems mounted.
fn check_state(
    l: &Layout,
    exp: &Expected,
    image: &File,
    t: &mut Timings,
) -> Result<String, String> {
    if exp.delta == 0 && !l.journal().exists() {
        // Cut before the first cycle made its journal: nothing was committed.
        return Ok("no journal yet".into());
    }
    let j = Journal::open(&l.journal()).map_err(|e| format!("the journal does not open: {e}"))?;
    let report = cascade::journal::verify::verify(&l.journal(), &NoProgress)
        .map_err(|e| format!("verify fails: {e}"))?;
    if let Some(p) = &report.problem {
        return Err(format!(
            "verify finds damage at segment {} offset {}: {}",
            p.segment, p.offset, p.reason
        ));
    }
    let last = j.last_delta();
    let allowed = last == exp.delta
        || Some(last) == exp.cycle_in_flight
        || (Some(last) == exp.killed && last > exp.delta);
    if !allowed {
        return Err(format!(
            "the journal ends at delta {last}; the last cycle that returned made delta {}{}",
            exp.delta,
            exp.cycle_in_flight
                .map_or(String::new(), |d| format!(" (delta {d} was being written)"))
        ));
    }
    for b in &exp.bookmarks {
        if !j.bookmarks().iter().any(|x| &x.name == b) {
            return Err(format!("bookmark {b} placed before the cut is gone"));
        }
    }
    // Replay from the journal's first delta onto the volumes as they were before it.
    let first = j.first_delta();
    let work = l.root.join("replay");
    let targets = volumes_at(l, first - 1, &work);
    let mut applier = Applier::new().unwrap();
    for d in first..=last {
        applier
            .apply(&j, d, &targets, &NoProgress)
            .map_err(|e| format!("replay of delta {d} fails: {e}"))?;
    }
    for (id, _) in VOLUMES {
        if last > 0 && !same_file(&work.join(format!("{id}.img")), &l.truth(last, id)) {
            return Err(format!(
                "replay to delta {last} differs from the source at that delta in {id}"
            ));
        }
    }
    // The block replica: never ahead of the journal, at or past the last export, and
    // exact at its cursor.
    let mut replica = String::from("no cursor");
    if let Ok(text) = std::fs::read(l.cursor()) {
        let c: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("the cursor is damaged: {e}"))?;
        let at = c["delta"].as_u64().unwrap_or(0);
        let applying = c["applying"].as_u64();
        if at > last || applying.is_some_and(|a| a > last) {
            return Err(format!(
                "the replica's cursor says delta {at} (applying {applying:?}) but the journal ends at {last}: \
                 an export shipped a delta that was not durable"
            ));
        }
        if at < exp.exported {
            return Err(format!(
                "the cursor says {at}; delta {} was exported before the cut",
                exp.exported
            ));
        }
        // An export cut short says so, and finishing it gives that delta exactly.
        let want = applying.unwrap_or(at);
        let views = replica_views(l, image);
        if let Some(a) = applying {
            applier
                .apply(&j, a, &views, &NoProgress)
                .map_err(|e| format!("finishing the replica's delta {a} fails: {e}"))?;
        }
        if want > 0 {
            for (id, view) in &views {
                if !same_file(&view.path, &l.truth(want, id)) {
                    return Err(format!(
                        "replica volume {id} is not exact at its cursor (delta {at}, applying {applying:?})"
                    ));
                }
            }
        }
        replica = format!("replica at {want}");
    }
    t.lap("checks");
    // The next cycle succeeds and journals exactly the source as it is now.
    let cfg = Config::load(&l.config()).unwrap();
    let next = cascade::cycle::run_cycle(&cfg, cfg.group("g").unwrap(), &NoProgress)
        .map_err(|e| format!("the next cycle fails: {e}"))?;
    drop(j);
    let j = Journal::open(&l.journal()).unwrap();
    for d in last + 1..=j.last_delta() {
        applier
            .apply(&j, d, &targets, &NoProgress)
            .map_err(|e| format!("replay of the next cycle's delta {d} fails: {e}"))?;
    }
    for (id, _) in VOLUMES {
        if !same_file(&work.join(format!("{id}.img")), &l.source(id)) {
            return Err(format!(
                "after the next cycle (delta {}), replay differs from the source in {id}",
                next.delta
            ));
        }
    }
    t.lap("next cycle");
    Ok(format!("journal at {last}, {replica}"))
}

/// The replica regions of the state image, as files a delta can be applied to.
fn replica_views(l: &Layout, image: &File) -> HashMap<String, VolumeFile> {
    VOLUMES
        .iter()
        .map(|(id, size)| {
            let path = l.root.join(format!("replica-{id}.img"));
            let mut buf = vec![0u8; *size as usize];
            image.read_exact_at(&mut buf, l.replica_offset(id)).unwrap();
            std::fs::write(&path, &buf).unwrap();
            volume_file(id, path)
        })
        .collect()
}

/// Both harnesses in one boot of the VM (a TCG boot costs half a minute): the
/// snapshot cycles' power cuts, then a split group's (power_cut/splitter.rs).
#[test]
fn power_cut_states() {
    let Some(_scratch) = in_vm_with("power_cut_states", Some("3G"), &ENV) else {
        return;
    };
    cycles();
    // The guest's /tmp is in its memory.
    std::fs::remove_dir_all("/tmp/pc").unwrap();
    splitter::states();
    std::fs::remove_dir_all("/tmp/sp").unwrap();
    live::states();
}

fn cycles() {
    let p = Params::from_env();
    let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
    let l = Layout {
        root: PathBuf::from("/tmp/pc"),
    };
    for d in [
        "src",
        "truth",
        "cfg",
        "cfg-prune",
        "mnt-journal",
        "mnt-state",
    ] {
        std::fs::create_dir_all(l.root.join(d)).unwrap();
    }
    let stack = DISK.build(&l.root, &l.journal_mnt(), &l.state_mnt());
    for (id, size) in VOLUMES {
        File::create(l.source(id)).unwrap().set_len(size).unwrap();
    }
    write_configs(&l);
    let cfg = l.config();
    let cfg = cfg.to_str().unwrap();
    mark("ready");

    // The workload.
    let neighbour_file = l.journal_mnt().join("neighbour");
    let neighbour_fsync = {
        let nf = neighbour_file.clone();
        move || {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&nf)
                .unwrap();
            std::io::Write::write_all(&mut &f, b"neighbour\n").unwrap();
            f.sync_all().unwrap();
        }
    };
    let mut last = 0;
    for i in 1..=p.cycles {
        mutate(&l, &mut rng);
        if i == 3 {
            // Killed at its commit's fdatasync: the whole delta, Commit included, is
            // in the page cache only. The neighbour's fsyncs make the segment's new
            // size durable; the next cycle's recovery writes the pages back.
            let n = last + 1;
            let segment = l.journal().join("seg-0000000000000001.cjs");
            let out = Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-P"])
                .arg(&segment)
                .args([
                    "-e",
                    "trace=fdatasync",
                    "-e",
                    "inject=fdatasync:signal=KILL",
                    CASCADE,
                ])
                .args(["cycle", "--config", cfg, "--cg", "g"])
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "the cycle was to be killed at its commit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for (id, _) in VOLUMES {
                std::fs::create_dir_all(l.truth(n, id).parent().unwrap()).unwrap();
                std::fs::copy(l.source(id), l.truth(n, id)).unwrap();
            }
            mark(&format!("killed:{n}"));
            neighbour_fsync();
            neighbour_fsync();
            mutate(&l, &mut rng);
        }
        let fsync = neighbour_fsync.clone();
        let neighbour = Background::start(move || {
            fsync();
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        // From the second cycle on, exports keep running while the cycle commits.
        let exporter = (i > 1).then(|| {
            let cfg = cfg.to_string();
            Background::start(move || {
                let out = cascade(&["export", "--config", &cfg, "--cg", "g"]);
                assert!(
                    out.status.success(),
                    "concurrent export failed ({}): {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            })
        });
        let out = cascade_ok(&["cycle", "--config", cfg, "--cg", "g", "--json"]);
        let exports = exporter.map_or(0, Background::stop);
        let fsyncs = neighbour.stop();
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let delta = report["delta"].as_u64().unwrap();
        last = delta;
        for (id, _) in VOLUMES {
            std::fs::create_dir_all(l.truth(delta, id).parent().unwrap()).unwrap();
            std::fs::copy(l.source(id), l.truth(delta, id)).unwrap();
        }
        mark(&format!("cycle:{delta}"));
        eprintln!("cycle {i}: delta {delta}; {exports} exports ran beside it, the neighbour fsynced {fsyncs} times");
        if i % 2 == 0 {
            cascade_ok(&["export", "--config", cfg, "--cg", "g"]);
            mark(&format!("export:{delta}"));
        }
        if i == 3 {
            cascade_ok(&["bookmark", "--config", cfg, "--cg", "g", "--name", "b3"]);
            mark("bookmark:b3");
        }
        if i == 4 {
            let prune = l.prune_config();
            cascade_ok(&[
                "journal",
                "prune",
                "--config",
                prune.to_str().unwrap(),
                "--cg",
                "g",
            ]);
            mark("prune");
        }
    }
    stack.finish();

    // The states.
    let log = Log::open(&stack.log_img);
    let ready = log.mark("ready").expect("the ready mark is in the log");
    let mut states: Vec<State> = log
        .states(p.subsets, &mut rng)
        .into_iter()
        .filter(|s| s.upto > ready)
        .collect();
    let found = states.len();
    if states.len() > p.max_states {
        // The killed cycle's recovery (where a torn delta lies on the disk), then an
        // even spread over the rest of the run, so every phase is cut
        // somewhere.
        let marked = |from: usize, prefix: &str| {
            (from..log.entries.len()).find(|&i| {
                log.entries[i]
                    .mark
                    .as_deref()
                    .is_some_and(|m| m.starts_with(prefix))
            })
        };
        let killed = marked(0, "killed:");
        let recovered = killed.and_then(|k| marked(k, "cycle:"));
        let in_recovery = |s: &State| match (killed, recovered) {
            (Some(k), Some(r)) => s.upto >= k && s.upto <= r,
            _ => false,
        };
        let (mut chosen, rest): (Vec<State>, Vec<State>) =
            states.into_iter().partition(in_recovery);
        // The torn delta is written back at the start of the recovery: its first
        // states, up to a third of the budget.
        chosen.truncate(p.max_states / 3);
        let recovery = chosen.len();
        chosen.extend(even_spread(rest, p.max_states.saturating_sub(recovery)));
        chosen.sort_by_key(|s| s.upto);
        eprintln!(
            "power-cut harness: the first {recovery} states of the killed cycle's recovery are tried"
        );
        states = chosen;
    }
    eprintln!(
        "power-cut harness: {} log entries, {found} states, trying {}",
        log.entries.len(),
        states.len()
    );
    let replay = DISK.replay(&l.root, 2, &l.journal_mnt(), &l.state_mnt());
    replay.try_states(&log, &states, |s, t| {
        let exp = expected(&log, s);
        check_state(&l, &exp, &replay.work, t)
            .inspect_err(|_| eprintln!("  (the marks before it: {exp:?})"))
    });
}
