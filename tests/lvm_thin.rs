//! LVM thin volumes for real, inside the VM: the `cascade` binary cycles a group of two
//! thin LVs with writes in between, journals only what thin_delta reports, and every
//! committed point replays, byte for byte, onto fresh files and onto fresh thin LVs.
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
    for tool in ["lvs", "lvcreate", "lvremove", "dmsetup"] {
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
