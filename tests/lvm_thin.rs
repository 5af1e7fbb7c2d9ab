//! LVM thin volumes for real, inside the VM: the `cascade` binary cycles a group of two
//! thin LVs with writes in between, journals only what thin_delta reports, and every
//! committed point replays, byte for byte, onto fresh files and onto fresh thin LVs.
//! Two groups share one thin pool, cycling at once; snapshots are read-only, inactive
//! between cycles and still the base after a simulated reboot; an incremental cycle
//! runs at most five external commands.
mod common;

use common::config::Volume;
use common::group::{noise, Group};
use common::vm::{in_vm, sh, ThinVg};
use std::path::Path;

fn cycle(g: &Group) -> serde_json::Value {
    let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg", "--json"]);
    assert!(
        o.status.success(),
        "cycle: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn replay(g: &Group, until: usize, to: [&Path; 2]) {
    let until = until.to_string();
    let a = format!("a={}", to[0].display());
    let b = format!("b={}", to[1].display());
    let o = g.cascade(&["replay", "journals/cg", "--until", &until, "--to", &a, &b]);
    assert!(
        o.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn thin_volumes_cycle_and_replay_exactly() {
    let Some(scratch) = in_vm("thin_volumes_cycle_and_replay_exactly") else {
        return;
    };
    let vg = ThinVg::new(&scratch, "ce2e", 256);
    let paths = vec![vg.thin_lv("a", 32), vg.thin_lv("b", 16)];
    let entries = ["a", "b"].map(|v| Volume::lvm_thin(v, &format!("ce2e/{v}")));
    let g = Group::with_volumes(&scratch.join("group"), entries.to_vec(), paths);

    g.write(0, 0, &noise(1, 8 << 20));
    g.write(1, 1 << 20, &noise(2, 2 << 20));
    let first = cycle(&g);
    assert_eq!(first["full"], true);
    let mut points = vec![g.contents()];
    let chunk = 64 << 10;
    for round in 0..3u64 {
        // 1% of each volume's 64 KiB chunks, plus a small write and zeros.
        for i in 0..5u64 {
            let at = ((round * 7 + i * 13) % 500) * chunk;
            g.write(0, at, &noise(10 + round * 10 + i, chunk as usize));
        }
        g.write(1, 4096 + round * chunk * 3, &noise(99 + round, 512));
        g.write(0, (20 << 20) + round * chunk, &vec![0u8; chunk as usize]);
        let r = cycle(&g);
        assert_eq!(r["full"], false);
        // thin_delta reports whole chunks: at most the chunks touched are read.
        let read_bytes: u64 = r["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["read_bytes"].as_u64().unwrap())
            .sum();
        assert!(
            read_bytes <= 7 * chunk,
            "round {round}: read {read_bytes} bytes for 7 touched chunks"
        );
        points.push(g.contents());
    }

    // Every point onto fresh files.
    for (i, want) in points.iter().enumerate() {
        let (fa, fb) = (
            scratch.join(format!("a-{i}.img")),
            scratch.join(format!("b-{i}.img")),
        );
        replay(&g, i + 1, [&fa, &fb]);
        assert!(
            read(&fa) == want[0] && read(&fb) == want[1],
            "point {}",
            i + 1
        );
    }
    // The newest point onto fresh thin LVs.
    let (la, lb) = (vg.thin_lv("ra", 32), vg.thin_lv("rb", 16));
    replay(&g, points.len(), [&la, &lb]);
    let last = points.last().unwrap();
    assert!(
        read(&la) == last[0] && read(&lb) == last[1],
        "replay onto thin LVs"
    );

    // Only the newest snapshot of each volume is kept.
    let lvs = sh("lvs --noheadings -o lv_name ce2e");
    let snaps: Vec<&str> = lvs
        .split_whitespace()
        .filter(|n| n.contains("-cascade-"))
        .collect();
    assert_eq!(snaps, ["a-cascade-4", "b-cascade-4"], "{lvs}");

    // Without thin_delta the cycle fails, says what is missing, and leaves no snapshot.
    let bin = scratch.join("no-thin-delta");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["lvs", "lvcreate", "lvchange", "lvremove"] {
        let real = sh(&format!("command -v {tool}"));
        std::os::unix::fs::symlink(real.trim(), bin.join(tool)).unwrap();
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["cycle", "-c", "cascade.yaml", "--cg", "cg"])
        .current_dir(&g.dir)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("needs thin-provisioning-tools"),
        "{err}"
    );
    let lvs = sh("lvs --noheadings -o lv_name ce2e");
    assert!(
        !lvs.contains("cascade-5"),
        "a failed cycle leaves no snapshot: {lvs}"
    );

    // A volume that is not a thin LV is refused, naming it.
    sh("lvcreate -q -L 8M -n linear ce2e");
    g.configure(|c| c.groups[0].volumes[1].lv = Some("ce2e/linear".into()));
    let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("ce2e/linear is not a thin LV"),
        "{err}"
    );
    let lvs = sh("lvs --noheadings -o lv_name ce2e");
    assert!(
        !lvs.contains("cascade-5"),
        "a refused cycle leaves no snapshot: {lvs}"
    );
}

/// Starts `cascade cycle` of group `g` (with debug logs, to count its commands).
fn start_cycle(g: &Group) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["cycle", "-c", "cascade.yaml", "--cg", "cg", "--json"])
        .current_dir(&g.dir)
        .env("RUST_LOG", "cascade=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a cycle started by [`start_cycle`]: its report and its log.
fn finish_cycle(child: std::process::Child, what: &str) -> (serde_json::Value, String) {
    let o = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what}: {log}");
    (serde_json::from_slice(&o.stdout).unwrap(), log)
}

/// The external commands a cycle's debug log names, by program.
fn commands(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("external command"))
        .filter_map(|l| l.split("command=").nth(1))
        .map(|c| c.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Every committed point of `g`'s journal replays to what the volume held.
fn replays_exactly(g: &Group, scratch: &Path, points: &[Vec<Vec<u8>>]) {
    for (i, want) in points.iter().enumerate() {
        let to = scratch.join(format!(
            "{}-{i}.img",
            g.dir.file_name().unwrap().to_string_lossy()
        ));
        let until = (i + 1).to_string();
        let o = g.cascade(&[
            "replay",
            "journals/cg",
            "--until",
            &until,
            "--to",
            &format!("v={}", to.display()),
        ]);
        assert!(
            o.status.success(),
            "replay: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(read(&to) == want[0], "{}: point {}", g.dir.display(), i + 1);
    }
}

/// Writes a few chunks into every group's volume, then cycles all groups at once;
/// each cycle is incremental and runs at most five external commands, one `lvs`.
fn cycle_together(groups: &[Group], points: &mut [Vec<Vec<Vec<u8>>>], round: u64) {
    let chunk = 64 << 10;
    for (i, g) in groups.iter().enumerate() {
        for k in 0..6u64 {
            let at = ((round * 11 + k * 37 + i as u64 * 5) % 240) * chunk;
            g.write(0, at, &noise(100 + round * 10 + k, chunk as usize));
        }
    }
    eprintln!("round {round}: the groups cycle at once");
    let running: Vec<_> = groups.iter().map(start_cycle).collect();
    for (i, child) in running.into_iter().enumerate() {
        let (r, log) = finish_cycle(child, &format!("round {round}, group {i}"));
        assert_eq!(r["full"], false, "round {round}, group {i}");
        let ran = commands(&log);
        assert!(ran.len() <= 5, "round {round}, group {i}: {ran:?}");
        assert_eq!(ran.iter().filter(|c| *c == "lvs").count(), 1, "{ran:?}");
        points[i].push(groups[i].contents());
    }
}

/// The pool's held metadata root (`-` when no metadata snapshot is reserved).
fn held_root() -> String {
    let status = sh("dmsetup status cshare-pool-tpool");
    status.split_whitespace().nth(6).unwrap_or("").to_string()
}

#[test]
fn groups_share_a_pool_and_snapshots_outlive_a_reboot() {
    let Some(scratch) = in_vm("groups_share_a_pool_and_snapshots_outlive_a_reboot") else {
        return;
    };
    let vg = ThinVg::new(&scratch, "cshare", 256);
    let groups: Vec<Group> = ["one", "two"]
        .iter()
        .map(|name| {
            let path = vg.thin_lv(name, 16);
            let entry = Volume::lvm_thin("v", &format!("cshare/{name}"));
            Group::with_volumes(&scratch.join(name), vec![entry], vec![path])
        })
        .collect();
    let mut points = vec![Vec::new(), Vec::new()];
    for (i, g) in groups.iter().enumerate() {
        g.write(0, 0, &noise(i as u64 + 1, 4 << 20));
    }
    let running: Vec<_> = groups.iter().map(start_cycle).collect();
    for (i, child) in running.into_iter().enumerate() {
        assert_eq!(finish_cycle(child, "first cycle").0["full"], true);
        points[i].push(groups[i].contents());
    }

    // A live cascade's turn at the pool: it holds the pool's lock and the metadata
    // snapshot. A cycle waits for the turn instead of releasing the reservation.
    eprintln!("a cycle waits for another's turn at the pool");
    std::fs::create_dir_all("/run/cascade").unwrap();
    let turn = std::fs::File::create("/run/cascade/thin-pool-cshare-pool.lock").unwrap();
    turn.lock().unwrap();
    sh("dmsetup message cshare-pool-tpool 0 reserve_metadata_snap");
    let held = held_root();
    assert_ne!(held, "-");
    let g = &groups[0];
    g.write(0, 5 << 16, &noise(50, 64 << 10));
    let mut waiting = start_cycle(g);
    let started = std::time::Instant::now();
    while !sh("lvs --noheadings -o lv_name cshare").contains("one-cascade-2") {
        assert!(
            started.elapsed().as_secs() < 300,
            "the cycle never snapshotted"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the cycle did not wait for the turn"
    );
    assert_eq!(held_root(), held, "the other's reservation was left alone");
    sh("dmsetup message cshare-pool-tpool 0 release_metadata_snap");
    drop(turn);
    assert_eq!(finish_cycle(waiting, "the waiting cycle").0["full"], false);
    points[0].push(g.contents());
    // Groups on one pool cycling at once each take their turn.
    for round in 0..2 {
        cycle_together(&groups, &mut points, round);
    }

    // Between cycles a snapshot is read-only and inactive (activation skip set), and
    // only the newest one of each volume is kept.
    let attrs = sh("lvs --noheadings -o lv_name,lv_attr cshare");
    let snaps: Vec<&str> = attrs.lines().filter(|l| l.contains("-cascade-")).collect();
    assert_eq!(snaps.len(), 2, "{attrs}");
    for l in &snaps {
        let attr = l.split_whitespace().nth(1).unwrap().as_bytes();
        assert!(
            attr[1] == b'r' && attr[4] != b'a' && attr[9] == b'k',
            "read-only, inactive, activation skip: {l}"
        );
    }

    // A reboot: every LV goes inactive and the pool's reservation with it; at boot
    // the VG is activated again, which skips the snapshots. A cascade that died held
    // a reservation: released, since no live cascade holds the pool's lock. The
    // next cycles are incremental and leak no snapshot.
    eprintln!("a reboot");
    sh("vgchange -q -an cshare && vgchange -q -ay cshare");
    let nodes = sh("ls /dev/cshare");
    assert!(
        !nodes.contains("-cascade-"),
        "no snapshot is active after the reboot: {nodes}"
    );
    sh("dmsetup message cshare-pool-tpool 0 reserve_metadata_snap");
    cycle_together(&groups, &mut points, 2);
    assert_eq!(held_root(), "-", "the stale reservation was released");
    let lvs = sh("lvs --noheadings -o lv_name cshare");
    let snaps: Vec<&str> = lvs
        .split_whitespace()
        .filter(|n| n.contains("-cascade-"))
        .collect();
    assert_eq!(snaps.len(), 2, "no snapshot leaked: {lvs}");

    for (i, g) in groups.iter().enumerate() {
        replays_exactly(g, &scratch, &points[i]);
    }
}
