//! Power cuts of a split group, for real (issue 13, part 2): the splitter's journal,
//! its state directory (the write-intent map) and both volumes live on devices
//! stacked over one dm-log-writes device in the test VM, which records every write
//! with its FLUSH/FUA flags. A client writes through the splitter in rounds, with
//! FLUSHes and FUA writes, fast enough that a slow journal disk (dm-delay) turns the
//! group to marking and back; then the log is replayed onto a fresh image up to
//! every durability point and up to random subsets of the writes after each
//! (tests/common/logwrites.rs): exactly the states a power cut can leave.
//!
//! At every state:
//! - every write that was acknowledged and covered by a FLUSH answered before the
//!   cut (or sent with FUA) is on its volume, or a later write over it is;
//! - the journal opens and verifies; replay to each delta that ends at a consistent
//!   point gives the volumes after some prefix of the client's writes, a longer one at
//!   each, and the newest is at least where the journal was when a round ended (all
//!   journalled, as status said) before the cut;
//! - `cascade split` restarted in another boot (its boot id bind-mounted over, as
//!   after a real power cut) takes a base, since the map only covers FLUSHed writes
//!   and an unflushed one may have reached its volume without its bit; the journal
//!   verifies, and its first consistent point after the restart equals the volumes
//!   byte for byte.
//!
//! Every block a write carries is stamped with the write's number, volume and
//! block, so a block read back names the write it came from.
//!
//! `make test` tries 8 states; `make crash` as many as CASCADE_CRASH_STATES says
//! (CASCADE_CRASH_SUBSETS and CASCADE_CRASH_SEED too).
use crate::common::logwrites::{Log, State};
use crate::common::nbd::Raw;
use crate::common::powercut::{env_number, even_spread, image, Disk, Timings};
use crate::common::split::{split_status, Split, BIN};
use cascade::journal::{Applier, Journal, VolumeFile};
use cascade::progress::NoProgress;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// The volumes, raw regions of the logged device after the two file systems.
const VOLUMES: [(&str, u64); 2] = [("v0", 2 * MIB), ("v1", MIB)];
const JOURNAL_MOUNT: &str = "data=writeback,nodelalloc";
const DISK: Disk = Disk {
    prefix: "sp",
    journal_fs: 64 * MIB,
    // Enough to put the shipper behind a client, so the group marks.
    journal_delay_ms: 400,
    journal_mount: JOURNAL_MOUNT,
    state_fs: 16 * MIB,
    volumes: &VOLUMES,
};
const SPLITTER: &str =
    "      commit-every: 100ms\n      queue: 1MiB\n      dirty-granularity: 4KiB\n";
const ROUNDS: usize = 4;

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
        self.journal_mnt().join("journal/vms")
    }
    /// Where the run's config is, and the restarts'.
    fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    fn restart_dir(&self) -> PathBuf {
        self.root.join("restart")
    }
    fn replayed(&self, id: &str) -> PathBuf {
        self.root.join(format!("replay/{id}.img"))
    }
}

/// `dir/cascade.yaml`: group `vms` of `volumes` (device paths), journal and state on
/// the two file systems.
fn write_config(l: &Layout, dir: &Path, volumes: &[String]) {
    std::fs::create_dir_all(dir).unwrap();
    let vols: String = VOLUMES
        .iter()
        .zip(volumes)
        .map(|((id, _), path)| format!("      - {{ id: {id}, driver: file, path: {path} }}\n"))
        .collect();
    std::fs::write(
        dir.join("cascade.yaml"),
        format!(
            "state-dir: {}\njournal-dir: {}\nconsistency-groups:\n  - name: vms\n    \
             splitter:\n      listen: 127.0.0.1:0\n{SPLITTER}    volumes:\n{vols}",
            l.state_mnt().join("state").display(),
            l.journal_mnt().join("journal").display(),
        ),
    )
    .unwrap();
}

fn mark(name: &str) {
    DISK.mark(name);
}

/// One write of the workload: whole blocks from block `first` of its volume.
struct Write {
    first: u64,
    data: Vec<u8>,
}

/// The client's writes (write `n` at index `n - 1`) and, per block of each volume,
/// the writes over it in order.
struct Workload {
    writes: Vec<Write>,
    touches: Vec<Vec<Vec<u64>>>,
}

impl Workload {
    fn new() -> Workload {
        Workload {
            writes: Vec::new(),
            touches: VOLUMES
                .iter()
                .map(|(_, size)| vec![Vec::new(); (size / BLOCK) as usize])
                .collect(),
        }
    }

    /// A new write of `blocks` blocks at block `first` of `vol`, each block stamped
    /// with the write's number, the volume and the block; its number.
    fn add(&mut self, vol: usize, first: u64, blocks: u64, rng: &mut impl Rng) -> u64 {
        let n = self.writes.len() as u64 + 1;
        let mut data = vec![0u8; (blocks * BLOCK) as usize];
        rng.fill(&mut data[..]);
        for (k, b) in data.chunks_mut(BLOCK as usize).enumerate() {
            let blk = first + k as u64;
            b[..8].copy_from_slice(&n.to_le_bytes());
            b[8..12].copy_from_slice(&(vol as u32).to_le_bytes());
            b[12..16].copy_from_slice(&(blk as u32).to_le_bytes());
            self.touches[vol][blk as usize].push(n);
        }
        self.writes.push(Write { first, data });
        n
    }

    fn bytes(&self, n: u64, blk: u64) -> &[u8] {
        let w = &self.writes[n as usize - 1];
        let at = ((blk - w.first) * BLOCK) as usize;
        &w.data[at..at + BLOCK as usize]
    }

    /// The write whose bytes block `blk` of `vol` holds (0: zeros, never written).
    fn holder(&self, vol: usize, blk: u64, got: &[u8]) -> Result<u64, String> {
        // A slice comparison (memcmp): a byte loop is slow in a test build.
        if got == [0u8; BLOCK as usize].as_slice() {
            return Ok(0);
        }
        let n = u64::from_le_bytes(got[..8].try_into().unwrap());
        let touched = self.touches[vol][blk as usize].binary_search(&n).is_ok();
        if touched && self.bytes(n, blk) == got {
            Ok(n)
        } else {
            Err(format!(
                "{} block {blk} holds bytes no write put there",
                VOLUMES[vol].0
            ))
        }
    }

    /// The last write up to `n` over block `blk` of `vol` (0: none).
    fn last_upto(&self, vol: usize, blk: u64, n: u64) -> u64 {
        let t = &self.touches[vol][blk as usize];
        let k = t.partition_point(|&m| m <= n);
        if k == 0 {
            0
        } else {
            t[k - 1]
        }
    }

    /// The writes each block of `volumes` (each volume's bytes) holds.
    fn holders(&self, volumes: &[Vec<u8>]) -> Result<Vec<Vec<u64>>, String> {
        volumes
            .iter()
            .enumerate()
            .map(|(vol, bytes)| {
                bytes
                    .chunks(BLOCK as usize)
                    .enumerate()
                    .map(|(blk, b)| self.holder(vol, blk as u64, b))
                    .collect()
            })
            .collect()
    }

    /// The volumes are as after writes 1..=N, in the client's order: N.
    fn prefix(&self, volumes: &[Vec<u8>]) -> Result<u64, String> {
        let held = self.holders(volumes)?;
        let n = held.iter().flatten().copied().max().unwrap_or(0);
        for (vol, blocks) in held.iter().enumerate() {
            for (blk, &h) in blocks.iter().enumerate() {
                let want = self.last_upto(vol, blk as u64, n);
                if h != want {
                    return Err(format!(
                        "{} block {blk} holds write {h}, but after write {n} it held write {want}",
                        VOLUMES[vol].0
                    ));
                }
            }
        }
        Ok(n)
    }
}

/// What the marks before a state say had been made durable, on the volumes and in
/// the journal.
#[derive(Debug, Default)]
struct Durable {
    /// Per volume: a FLUSH on it was answered after writes 1..=K were.
    flushed: [u64; VOLUMES.len()],
    /// Writes sent with FUA and answered, in order.
    fua: BTreeSet<u64>,
    /// The journal held the volumes after writes 1..=K at a consistent point: its
    /// base (K = 0), or a round's end, when status said all was journalled.
    journalled: Option<u64>,
}

impl Durable {
    fn at(log: &Log, s: &State) -> Durable {
        let mut d = Durable::default();
        for m in log.entries[..s.window_end]
            .iter()
            .filter_map(|e| e.mark.as_deref())
        {
            let words: Vec<&str> = m.split(':').collect();
            match words[..] {
                ["flush", vol, k] => d.flushed[vol.parse::<usize>().unwrap()] = k.parse().unwrap(),
                ["fua", k] => {
                    d.fua.insert(k.parse().unwrap());
                }
                ["journalled", k] => d.journalled = Some(k.parse().unwrap()),
                _ => {}
            }
        }
        d
    }

    fn covers(&self, vol: usize, n: u64) -> bool {
        n <= self.flushed[vol] || self.fua.contains(&n)
    }
}

/// Each volume's bytes in the work image.
fn volumes_in(image: &File) -> Vec<Vec<u8>> {
    VOLUMES
        .iter()
        .enumerate()
        .map(|(v, (_, size))| {
            let mut b = vec![0u8; *size as usize];
            image.read_exact_at(&mut b, DISK.volume_at(v)).unwrap();
            b
        })
        .collect()
}

/// Every durable write is on its volume, or a later write over it is.
fn check_volumes(w: &Workload, d: &Durable, volumes: &[Vec<u8>]) -> Result<(), String> {
    for (vol, blocks) in w.holders(volumes)?.iter().enumerate() {
        for (blk, &h) in blocks.iter().enumerate() {
            let t = &w.touches[vol][blk];
            if let Some(&floor) = t.iter().rev().find(|&&n| d.covers(vol, n)) {
                if h < floor {
                    return Err(format!(
                        "{} block {blk} holds write {h}, but write {floor} over it was \
                         acknowledged and made durable (FLUSH or FUA) before the cut",
                        VOLUMES[vol].0
                    ));
                }
            }
        }
    }
    Ok(())
}

fn verify(journal: &Path) -> Result<(), String> {
    let report = cascade::journal::verify::verify(journal, &NoProgress)
        .map_err(|e| format!("verify fails: {e}"))?;
    match report.problem {
        Some(p) => Err(format!(
            "verify finds damage at segment {} offset {}: {}",
            p.segment, p.offset, p.reason
        )),
        None => Ok(()),
    }
}

/// Fresh zeroed files to replay onto.
fn replay_targets(l: &Layout) -> HashMap<String, VolumeFile> {
    VOLUMES
        .iter()
        .map(|(id, size)| {
            let path = l.replayed(id);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            image(&path, *size);
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            (
                id.to_string(),
                VolumeFile {
                    file,
                    device: false,
                    path,
                },
            )
        })
        .collect()
}

fn replayed(l: &Layout) -> Vec<Vec<u8>> {
    VOLUMES
        .iter()
        .map(|(id, _)| std::fs::read(l.replayed(id)).unwrap())
        .collect()
}

/// Replays the journal (if there is one) delta by delta; at each consistent point,
/// the volumes are as after a prefix of the client's writes, a longer one at each.
/// The journal's last delta, and what the replay files hold.
fn check_journal(
    l: &Layout,
    w: &Workload,
    d: &Durable,
    applier: &mut Applier,
    targets: &HashMap<String, VolumeFile>,
) -> Result<(u64, String), String> {
    if !l.journal().exists() {
        if let Some(n) = d.journalled {
            return Err(format!(
                "there is no journal, and it held the volumes after write {n} before the cut"
            ));
        }
        return Ok((0, "no journal yet".into()));
    }
    let j = Journal::open(&l.journal()).map_err(|e| format!("the journal does not open: {e}"))?;
    verify(&l.journal())?;
    let mut prefix = 0;
    let mut points = 0;
    for e in j.deltas() {
        applier
            .apply(&j, e.delta, targets, &NoProgress)
            .map_err(|err| format!("replay of delta {} fails: {err}", e.delta))?;
        if e.writes.is_none_or(|wr| wr.consistent(wr.last_write)) {
            let n = w
                .prefix(&replayed(l))
                .map_err(|why| format!("replay to delta {}: {why}", e.delta))?;
            if n < prefix {
                return Err(format!(
                    "replay to delta {} gives the volumes after write {n}, an earlier point gave them after write {prefix}",
                    e.delta
                ));
            }
            prefix = n;
            points += 1;
        }
    }
    match d.journalled {
        Some(n) if points == 0 || prefix < n => Err(format!(
            "the journal's newest consistent point ({points} of them) holds the volumes after \
             write {prefix}, but it held them after write {n} before the cut"
        )),
        _ => Ok((
            j.last_delta(),
            format!("{points} consistent points, the last after write {prefix}"),
        )),
    }
}

/// `cascade split` on the state's volumes as after a reboot (another boot id bind-
/// mounted over the kernel's), stopped once its first point is journalled; its JSON
/// report.
fn restart(l: &Layout, rng: &mut impl Rng) -> Result<serde_json::Value, String> {
    let boot = l.root.join("boot_id");
    let id: u128 = rng.gen();
    let hex = format!("{id:032x}");
    std::fs::write(
        &boot,
        format!(
            "{}-{}-{}-{}-{}\n",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ),
    )
    .unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount --bind \"$1\" /proc/sys/kernel/random/boot_id && shift && exec \"$@\"",
        "sh",
    ])
    .arg(&boot)
    .arg(BIN)
    .args(Split::ARGS);
    let dir = l.restart_dir();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Split::serve_with(&dir, cmd).stop()
    }))
    .map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("the restarted splitter fails: {why}")
    })
}

/// The checks at one power-cut state, with its file systems mounted.
fn check_state(
    l: &Layout,
    w: &Workload,
    d: &Durable,
    image: &File,
    rng: &mut impl Rng,
    t: &mut Timings,
) -> Result<String, String> {
    let volumes = volumes_in(image);
    check_volumes(w, d, &volumes)?;
    t.lap("volumes");
    let mut applier = Applier::new().unwrap();
    let targets = replay_targets(l);
    let (last, seen) = check_journal(l, w, d, &mut applier, &targets)?;
    t.lap("journal");
    let report = restart(l, rng)?;
    t.lap("restart");
    if report["base_delta"].is_null() {
        return Err(format!(
            "after a reboot the splitter went on from its write-intent map: {report}"
        ));
    }
    let j = Journal::open(&l.journal())
        .map_err(|e| format!("the journal does not open after the restart: {e}"))?;
    verify(&l.journal()).map_err(|e| format!("after the restart: {e}"))?;
    for e in j.deltas().iter().filter(|e| e.delta > last) {
        applier
            .apply(&j, e.delta, &targets, &NoProgress)
            .map_err(|err| format!("replay of the restart's delta {} fails: {err}", e.delta))?;
    }
    let replayed = replayed(l);
    for (v, (id, _)) in VOLUMES.iter().enumerate() {
        if replayed[v] != volumes[v] {
            return Err(format!(
                "the journal's first point after the restart (delta {}) differs from volume {id}",
                j.last_delta()
            ));
        }
    }
    t.lap("after the restart");
    Ok(seen)
}

/// The client's rounds of writes through the splitter; each round ends once the
/// group is active again with everything journalled. How many gaps the group had.
fn workload(l: &Layout, w: &mut Workload, rng: &mut impl Rng) -> u64 {
    let split = Split::serve(&l.run_dir());
    // Its base is journalled: from here on a restart in the same boot would go on
    // with its stream, from the map.
    mark("journalled:0");
    let mut conns: Vec<Raw> = VOLUMES
        .iter()
        .map(|(id, _)| Raw::open(split.addr, id))
        .collect();
    let mut marked = 0;
    for round in 0..ROUNDS {
        for _ in 0..rng.gen_range(80..120) {
            let vol = rng.gen_range(0..VOLUMES.len());
            let blocks_in = VOLUMES[vol].1 / BLOCK;
            let blocks = rng.gen_range(1..=32);
            let first = rng.gen_range(0..=blocks_in - blocks);
            let n = w.add(vol, first, blocks, rng);
            let fua = rng.gen_bool(0.08);
            let c = &mut conns[vol];
            c.request(u16::from(fua), 1, n, first * BLOCK, (blocks * BLOCK) as u32);
            std::io::Write::write_all(&mut c.0, &w.writes[n as usize - 1].data).unwrap();
            assert_eq!(c.simple_reply(), (0, n), "write {n}");
            if fua {
                mark(&format!("fua:{n}"));
            }
            if rng.gen_bool(0.05) {
                let v = rng.gen_range(0..VOLUMES.len());
                conns[v].request(0, 3, n, 0, 0);
                assert_eq!(conns[v].simple_reply(), (0, n), "FLUSH after write {n}");
                mark(&format!("flush:{v}:{n}"));
            }
        }
        // Caught up quickly: the states of the wait are like those of the writes.
        DISK.delay_journal(0);
        let start = std::time::Instant::now();
        loop {
            let s = split_status(&l.run_dir())["splitter"]["serving"].clone();
            marked = marked.max(s["gaps"].as_u64().unwrap_or(0));
            if s["mode"] == "active" && s["last_journalled"] == s["last_numbered"] {
                break;
            }
            assert!(
                start.elapsed().as_secs() < 120,
                "round {round} never caught up: {s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        mark(&format!("journalled:{}", w.writes.len()));
        DISK.delay_journal(DISK.journal_delay_ms);
        eprintln!(
            "round {round}: {} writes so far, {marked} gap(s)",
            w.writes.len()
        );
    }
    conns.into_iter().for_each(Raw::disconnect);
    let report = split.stop();
    mark("stopped");
    report["shipped"]["gaps"].as_u64().unwrap()
}

/// Runs the workload, then tries the power-cut states (inside the VM).
pub fn states() {
    let subsets = env_number("CASCADE_CRASH_SUBSETS", 2) as usize;
    let max_states = env_number("CASCADE_CRASH_STATES", 8) as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(env_number("CASCADE_CRASH_SEED", 13));
    let l = Layout {
        root: PathBuf::from("/tmp/sp"),
    };
    for d in ["mnt-journal", "mnt-state"] {
        std::fs::create_dir_all(l.root.join(d)).unwrap();
    }
    let stack = DISK.build(&l.root, &l.journal_mnt(), &l.state_mnt());
    let devices: Vec<String> = VOLUMES.iter().map(|(id, _)| stack.volume(id)).collect();
    write_config(&l, &l.run_dir(), &devices);
    mark("ready");

    let mut w = Workload::new();
    let gaps = workload(&l, &mut w, &mut rng);
    assert!(
        gaps > 0,
        "the group never marked: the power cuts would not reach marking and resynchronising"
    );
    stack.finish();

    // The states.
    let log = Log::open(&stack.log_img);
    let ready = log.mark("ready").expect("the ready mark is in the log");
    let states: Vec<State> = log
        .states(subsets, &mut rng)
        .into_iter()
        .filter(|s| s.upto > ready)
        .collect();
    let found = states.len();
    let states = even_spread(states, max_states);
    // Where the map could be trusted in the same boot: the boot id must decide.
    let (base, stopped) = (log.mark("journalled:0"), log.mark("stopped"));
    let streaming = states
        .iter()
        .filter(|s| base.is_some_and(|b| s.upto > b) && stopped.is_some_and(|e| s.upto < e))
        .count();
    assert!(
        streaming * 2 >= states.len(),
        "only {streaming} of {} states fall while the group streams",
        states.len()
    );
    eprintln!(
        "power-cut harness: {} writes in {gaps} gap(s) of marking, {} log entries, {found} states, trying {}",
        w.writes.len(),
        log.entries.len(),
        states.len()
    );
    let replay = DISK.replay(
        &l.root,
        DISK.regions().len(),
        &l.journal_mnt(),
        &l.state_mnt(),
    );
    write_config(&l, &l.restart_dir(), &replay.views.devices[2..]);
    replay.try_states(&log, &states, |s, t| {
        let durable = Durable::at(&log, s);
        check_state(&l, &w, &durable, &replay.work, &mut rng, t)
            .inspect_err(|_| eprintln!("  (durable before it: {durable:?})"))
    });
}
