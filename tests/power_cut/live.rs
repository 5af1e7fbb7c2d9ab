//! Power cuts of a live block replica (issue 14, part 2): its undo directory, its
//! state directory (the cursor) and its two volumes (raw devices) live on devices
//! stacked over one dm-log-writes device in the test VM. Exports apply deltas with
//! undo (entries retiring past `max-bytes`), rewinds move the replica back and
//! forward, each with a mark after it; then the log is replayed onto a fresh image
//! up to every durability point and random subsets of the writes after each: the
//! states a power cut can leave. The change journal is the input, outside the log.
//!
//! At every state the cursor must tell where the replica is:
//! - held at a point, or live at its delta with no apply under way: the replica is
//!   exactly that point, as it is;
//! - a move under way (`moving_to`): `cascade rewind` to that point finishes it, exactly;
//! - an apply under way: `cascade export` finishes it.
//!
//! A rewind to the oldest point of the window the last saved status named gives
//! that point exactly, or is refused as outside the window. Then, after
//! `rewind --latest` and an export, the replica is the newest point,
//! and a rewind to the oldest point of its window gives that point exactly (the undo
//! the cut left is whole), and back to the newest.
//!
//! `make test` tries 8 states; `make crash` as many as CASCADE_CRASH_STATES says.
use crate::common::logwrites::{Log, State};
use crate::common::powercut::{env_number, even_spread, Disk, Timings};
use crate::common::vm::sh;
use cascade::journal::record::VolumeInfo;
use cascade::journal::JournalWriter;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::process::Command;

const CASCADE: &str = env!("CARGO_BIN_EXE_cascade");
const MIB: u64 = 1 << 20;
const VOLUMES: [(&str, u64); 2] = [("v0", 2 * MIB), ("v1", MIB)];
/// Its "journal" file system holds the undo directory here.
const DISK: Disk = Disk {
    prefix: "lv",
    journal_fs: 32 * MIB,
    journal_delay_ms: 0,
    journal_mount: "data=ordered",
    state_fs: 16 * MIB,
    volumes: &VOLUMES,
};

struct Layout {
    root: PathBuf,
}

impl Layout {
    fn undo_mnt(&self) -> PathBuf {
        self.root.join("mnt-undo")
    }
    fn state_mnt(&self) -> PathBuf {
        self.root.join("mnt-state")
    }
    fn journal(&self) -> PathBuf {
        self.root.join("journal/cg")
    }
    fn dir(&self) -> PathBuf {
        self.root.join("run")
    }
    fn cursor(&self) -> PathBuf {
        self.state_mnt().join("state/cg/targets/live.cursor")
    }
}

/// The replicas are device-mapper devices with fixed uuids, so the target knows
/// them again when they are rebuilt over a replayed image.
fn replica(id: &str) -> String {
    format!("/dev/mapper/lvr-{id}")
}

fn map_replicas(over: &[String]) {
    for ((id, size), dev) in VOLUMES.iter().zip(over) {
        sh(&format!(
            "dmsetup create lvr-{id} --uuid CASCADE-LIVE-{id} --table '0 {} linear {dev} 0'",
            size / 512
        ));
    }
}

fn unmap_replicas() {
    for (id, _) in VOLUMES {
        sh(&format!("dmsetup remove lvr-{id}"));
    }
}

fn write_config(l: &Layout) {
    let dir = l.dir();
    std::fs::create_dir_all(dir.join("cascade-targets")).unwrap();
    std::fs::write(
        dir.join("cascade.yaml"),
        format!(
            "state-dir: {}\njournal-dir: {}\nconsistency-groups:\n  - name: cg\n    targets: [live]\n    volumes:\n      \
             - {{ id: v0, driver: file, path: v0.img }}\n      - {{ id: v1, driver: file, path: v1.img }}\n",
            l.state_mnt().join("state").display(),
            l.root.join("journal").display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("cascade-targets/live.yaml"),
        format!(
            "kind: block\nvolumes: {{ v0: {}, v1: {} }}\nundo: {{ dir: {}, max-bytes: 2MiB }}\n",
            replica("v0"),
            replica("v1"),
            l.undo_mnt().join("undo").display()
        ),
    )
    .unwrap();
}

fn volumes() -> Vec<VolumeInfo> {
    VOLUMES
        .iter()
        .map(|(id, size)| VolumeInfo {
            id: id.to_string(),
            size: *size,
        })
        .collect()
}

/// Appends deltas `from..=to` to the journal (delta 1 a full image of noise, the
/// rest random 4-64 KiB writes), extending `points` with the volumes at each.
fn journal_deltas(l: &Layout, points: &mut Vec<Vec<Vec<u8>>>, to: u64, rng: &mut impl Rng) {
    let mut w = JournalWriter::open(&l.journal(), 64 << 20).unwrap();
    while (points.len() as u64) <= to {
        let n = points.len() as u64;
        let mut state = points.last().unwrap().clone();
        let mut d = w.begin_delta(n as i64, volumes(), n == 1).unwrap();
        if n == 1 {
            for (v, bytes) in state.iter_mut().enumerate() {
                rng.fill(&mut bytes[..]);
                d.data(v as u16, 0, bytes).unwrap();
            }
        } else {
            for _ in 0..12 {
                let v = rng.gen_range(0..2);
                let blocks = rng.gen_range(1..=16u64);
                let at = rng.gen_range(0..VOLUMES[v].1 / 4096 - blocks) * 4096;
                let mut bytes = vec![0u8; (blocks * 4096) as usize];
                rng.fill(&mut bytes[..]);
                d.data(v as u16, at, &bytes).unwrap();
                state[v][at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
            }
        }
        d.commit().unwrap();
        points.push(state);
    }
}

fn cascade(l: &Layout, args: &[&str]) -> Result<String, String> {
    let out = Command::new(CASCADE)
        .args(args)
        .args(["-c", "cascade.yaml"])
        .current_dir(l.dir())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`cascade {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn read_replicas() -> Vec<Vec<u8>> {
    VOLUMES
        .iter()
        .map(|(id, _)| std::fs::read(replica(id)).unwrap())
        .collect()
}

fn equal(points: &[Vec<Vec<u8>>], p: u64, what: &str) -> Result<(), String> {
    if read_replicas() == points[p as usize] {
        Ok(())
    } else {
        Err(format!("{what}: the replica is not delta {p}"))
    }
}

fn rewind(l: &Layout, to: &str) -> Result<(), String> {
    cascade(l, &["rewind", "--target", "live", "--to", to]).map(|_| ())
}

/// Where a state's cursor says the replica is, checked; then the replica brought
/// to the newest point, to the oldest of its window and back.
fn check_state(l: &Layout, points: &[Vec<Vec<u8>>]) -> Result<String, String> {
    let newest = points.len() as u64 - 1;
    let said = match std::fs::read(l.cursor()) {
        Ok(bytes) => {
            let c: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("the cursor does not parse: {e}"))?;
            let delta = c["delta"].as_u64().unwrap_or(0);
            let at = |u: &serde_json::Value| u["delta"].as_u64().unwrap_or(0);
            if let Some(m) = c["held"]["moving_to"].as_object() {
                let m = m["delta"].as_u64().unwrap();
                rewind(l, &m.to_string())?;
                equal(points, m, "after the move the cut stopped was finished")?;
                format!("moving to {m}, finished")
            } else if !c["held"].is_null() {
                let h = at(&c["held"]["at"]);
                equal(points, h, "held as the cursor says")?;
                format!("held at {h}")
            } else if let Some(a) = c["applying"].as_u64() {
                format!("applying {a}")
            } else {
                if delta > 0 {
                    equal(points, delta, "live at its cursor")?;
                }
                format!("live at {delta}")
            }
        }
        Err(_) => "no cursor yet".to_string(),
    };
    // The undo the cut left: back to the oldest point the last saved status knew
    // (the cut may have taken the replica's window past it since: then refused).
    if !said.starts_with("applying") && !said.starts_with("no cursor") {
        if let Some(oldest) = saved_oldest(l) {
            match rewind(l, &oldest.to_string()) {
                Ok(()) => equal(
                    points,
                    oldest,
                    "rewound, before any export, to the oldest point",
                )?,
                Err(e) if e.contains("outside the replica's window") => {}
                Err(e) => return Err(e),
            }
        }
    }
    let held = std::fs::read(l.cursor())
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|c| !c["held"].is_null());
    if held {
        cascade(l, &["rewind", "--target", "live", "--latest"])?;
    }
    cascade(l, &["export", "--target", "live"])?;
    equal(points, newest, "exported to the newest")?;
    let status: serde_json::Value =
        serde_json::from_str(&cascade(l, &["status", "--json"])?).map_err(|e| e.to_string())?;
    let window = &status["groups"][0]["targets"][0]["live"]["window"];
    let oldest = window["oldest"]
        .as_u64()
        .ok_or(format!("no window: {status}"))?;
    rewind(l, &oldest.to_string())?;
    equal(points, oldest, "rewound to the window's oldest point")?;
    cascade(l, &["rewind", "--target", "live", "--latest"])?;
    equal(points, newest, "rolled forward")?;
    Ok(format!("{said}; window {oldest}..{newest}"))
}

/// The oldest point of the window the target's last saved status names.
fn saved_oldest(l: &Layout) -> Option<u64> {
    let path = l.state_mnt().join("state/cg/targets/live.status.json");
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    status["live"]["window"]["oldest"].as_u64()
}

pub fn states() {
    let subsets = env_number("CASCADE_CRASH_SUBSETS", 2) as usize;
    let max_states = env_number("CASCADE_CRASH_STATES", 8) as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(env_number("CASCADE_CRASH_SEED", 17));
    let l = Layout {
        root: PathBuf::from("/tmp/lv"),
    };
    for d in ["mnt-undo", "mnt-state", "journal"] {
        std::fs::create_dir_all(l.root.join(d)).unwrap();
    }
    let stack = DISK.build(&l.root, &l.undo_mnt(), &l.state_mnt());
    let devices: Vec<String> = VOLUMES.iter().map(|(id, _)| stack.volume(id)).collect();
    map_replicas(&devices);
    write_config(&l);
    let mut points = vec![VOLUMES
        .iter()
        .map(|(_, s)| vec![0u8; *s as usize])
        .collect()];
    journal_deltas(&l, &mut points, 4, &mut rng);
    DISK.mark("ready");
    let step = |args: &[&str], mark: &str| {
        cascade(&l, args).unwrap();
        DISK.mark(mark);
    };
    step(&["export", "--target", "live"], "live:4");
    for (to, mark) in [("2", "held:2"), ("3", "held:3")] {
        step(&["rewind", "--target", "live", "--to", to], mark);
    }
    step(&["rewind", "--target", "live", "--latest"], "latest:4");
    journal_deltas(&l, &mut points, 7, &mut rng);
    step(&["export", "--target", "live"], "live:7");
    step(&["rewind", "--target", "live", "--to", "5"], "held:5");
    step(&["rewind", "--target", "live", "--latest"], "latest:7");
    assert!(
        read_replicas() == points[7],
        "the run ends at the newest point"
    );
    unmap_replicas();
    stack.finish();

    let log = Log::open(&stack.log_img);
    let ready = log.mark("ready").expect("the ready mark is in the log");
    let states: Vec<State> = log
        .states(subsets, &mut rng)
        .into_iter()
        .filter(|s| s.upto > ready)
        .collect();
    let found = states.len();
    let states = even_spread(states, max_states);
    eprintln!(
        "power-cut harness (live replica): {} log entries, {found} states, trying {}",
        log.entries.len(),
        states.len()
    );
    let replay = DISK.replay(&l.root, DISK.regions().len(), &l.undo_mnt(), &l.state_mnt());
    replay.try_states(&log, &states, |_, t: &mut Timings| {
        map_replicas(&replay.views.devices[2..]);
        let r = check_state(&l, &points);
        unmap_replicas();
        t.lap("checks");
        r
    });
}
