//! The VolumeDriver contract (src/volume/mod.rs), checked the same way for every
//! driver and path: the file driver on the ordinary file system (sparse copies, block
//! comparison) and on XFS with reflink (clones, extent-map diff).
mod common;

use cascade::config::Config;
use cascade::cycle::journal_delta;
use cascade::diff::ChangeKind;
use cascade::journal::JournalWriter;
use cascade::progress::NoProgress;
use cascade::volume::{driver_for, SnapshotSet, VolumeDriver};
use common::group::{noise, Group};
use std::os::unix::fs::FileExt;

const SIZE: u64 = 8 << 20;

fn driver(g: &Group) -> (Config, Box<dyn VolumeDriver>) {
    let cfg = g.config();
    let d = driver_for(
        cfg.group("cg").unwrap(),
        &cfg.state_path(cfg.group("cg").unwrap()),
    )
    .unwrap();
    (cfg, d)
}

/// Journals `new` against `base` and advances, as a cycle does.
fn commit(
    d: &dyn VolumeDriver,
    w: &mut JournalWriter,
    base: Option<&SnapshotSet>,
    new: &SnapshotSet,
) -> SnapshotSet {
    journal_delta(w, d, base, new, &mut || Ok(()), &NoProgress).unwrap();
    d.advance(base, new, w.journal()).unwrap();
    let fixed = d.open_snapshot(new.tag).unwrap();
    assert!(!fixed.is_live(), "advance leaves the snapshot fixed");
    fixed
}

fn snapshot_bytes(d: &dyn VolumeDriver, s: &SnapshotSet, v: usize) -> Vec<u8> {
    let f = d.open_volume(s, v).unwrap();
    let mut buf = vec![0; s.volumes[v].size as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// Every byte that differs between the snapshots lies inside a reported range, and
/// Zero ranges really are zero in the new snapshot. Returns the bytes reported.
fn check_changes(
    d: &dyn VolumeDriver,
    old: Option<&SnapshotSet>,
    new: &SnapshotSet,
    v: usize,
) -> u64 {
    let now = snapshot_bytes(d, new, v);
    let before = old.map_or(vec![0; now.len()], |o| snapshot_bytes(d, o, v));
    let mut covered = vec![false; now.len()];
    let mut last_end = 0;
    let mut total = 0;
    for c in d
        .changes(old, new, v, &cascade::progress::NoProgress)
        .unwrap()
    {
        let c = c.unwrap();
        assert!(
            c.offset >= last_end && c.len > 0,
            "ranges ascend and do not overlap: {c:?}"
        );
        assert!(
            c.end() <= now.len() as u64,
            "range inside the volume: {c:?}"
        );
        last_end = c.end();
        total += c.len;
        let range = c.offset as usize..c.end() as usize;
        if c.kind == ChangeKind::Zero {
            assert!(
                now[range.clone()].iter().all(|b| *b == 0),
                "Zero range {c:?} holds data"
            );
        }
        covered[range].iter_mut().for_each(|x| *x = true);
    }
    for (i, (a, b)) in before.iter().zip(&now).enumerate() {
        assert!(
            a == b || covered[i],
            "byte {i} of volume {v} changed but no range covers it"
        );
    }
    total
}

/// How a driver path shows in its snapshots, and how to make volume 1 disappear.
struct DriverPath {
    reflinked: bool,
    live: bool,
    /// Removes volume 1; a snapshot must then fail naming this.
    remove_v1: Box<dyn Fn(&Group)>,
    v1_name: &'static str,
}

fn file_path(reflink: bool) -> DriverPath {
    DriverPath {
        reflinked: reflink,
        live: !reflink,
        remove_v1: Box::new(|g| std::fs::remove_file(&g.volumes[1]).unwrap()),
        v1_name: "v1.img",
    }
}

fn suite(g: &Group, p: DriverPath) {
    g.write(0, 0, &noise(1, 3 << 20));
    g.write(1, 1 << 20, &noise(2, 1 << 20));
    let (_, d) = driver(g);
    let d = d.as_ref();
    let mut w = JournalWriter::open(&g.journal(), 64 << 20).unwrap();

    // A snapshot captures the group; once advanced it is fixed and survives later writes.
    let s1 = d.snapshot(1).unwrap();
    assert_eq!(
        s1.volumes.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        ["v0", "v1"]
    );
    assert!(
        s1.volumes
            .iter()
            .all(|v| v.reflinked == p.reflinked && v.live == p.live),
        "{:?}",
        s1.volumes
    );
    assert_eq!(
        check_changes(d, None, &s1, 0),
        SIZE,
        "a full listing covers the whole volume"
    );
    let s1 = commit(d, &mut w, None, &s1);
    let at_s1 = g.contents();
    assert_eq!(snapshot_bytes(d, &s1, 0), at_s1[0]);
    assert_eq!(snapshot_bytes(d, &s1, 1), at_s1[1]);
    g.write(0, 5 << 20, &noise(3, 64 << 10));
    g.write(0, 0, &[0u8; 128 << 10]);
    g.write(1, 1 << 20, &[9u8; 4096]);
    g.punch(0, 2 << 20, 64 << 10);
    assert_eq!(
        snapshot_bytes(d, &s1, 0),
        at_s1[0],
        "a snapshot does not follow later writes"
    );
    assert_eq!(d.open_snapshot(1).unwrap(), s1);

    // An incremental listing covers every change and costs about the change.
    let s2 = d.snapshot(2).unwrap();
    let changed = check_changes(d, Some(&s1), &s2, 0) + check_changes(d, Some(&s1), &s2, 1);
    let written = (64 << 10) + (128 << 10) + 4096 + (64 << 10);
    assert!(
        changed >= written && changed <= 2 * written,
        "reported {changed} bytes for {written} written"
    );
    let s2 = commit(d, &mut w, Some(&s1), &s2);
    assert_eq!(
        check_changes(d, Some(&s2), &s2, 0),
        0,
        "a snapshot has no changes against itself"
    );
    assert_eq!(
        g.contents(),
        [snapshot_bytes(d, &s2, 0), snapshot_bytes(d, &s2, 1)]
    );

    // Advance retired the base; retire is idempotent; snapshot is all or nothing.
    assert_eq!(d.snapshots().unwrap(), [2]);
    d.retire(1).unwrap();
    assert_eq!(d.snapshots().unwrap(), [2]);
    (p.remove_v1)(g);
    let err = d.snapshot(3).unwrap_err().to_string();
    assert!(
        err.contains(p.v1_name),
        "the error names the missing volume: {err}"
    );
    assert_eq!(
        d.snapshots().unwrap(),
        [2],
        "a failed snapshot leaves nothing behind"
    );
}

#[test]
fn file_driver_copy_path() {
    let tmp = tempfile::tempdir().unwrap();
    let probe = tmp.path().join("probe");
    std::fs::write(&probe, b"x").unwrap();
    let a = std::fs::File::open(&probe).unwrap();
    let b = std::fs::File::create(tmp.path().join("probe2")).unwrap();
    if cascade::sys::reflink(&a, &b).is_ok() {
        eprintln!(
            "SKIPPED: the temp file system supports reflinks, so it cannot test the copy path"
        );
        return;
    }
    suite(&Group::new(tmp.path(), &[SIZE, SIZE / 2]), file_path(false));
}

#[test]
fn file_driver_reflink_path() {
    let Some(xfs) = common::xfs::XfsMount::new(512) else {
        return;
    };
    suite(
        &Group::new(&xfs.path("group"), &[SIZE, SIZE / 2]),
        file_path(true),
    );
}

/// On the reflink path a cycle reads only what changed: 1% of a 64 MiB volume.
#[test]
fn reflink_cycle_reads_only_the_change() {
    let Some(xfs) = common::xfs::XfsMount::new(512) else {
        return;
    };
    let g = Group::new(&xfs.path("group"), &[64 << 20]);
    g.write(0, 0, &noise(7, 64 << 20));
    assert_eq!(g.cycle().volumes[0].read_bytes, 64 << 20);
    for i in 0..10u64 {
        g.write(0, i * (6 << 20), &noise(i, 64 << 10));
    }
    let r = g.cycle();
    assert_eq!(r.volumes[0].read_bytes, 10 * (64 << 10), "{r:?}");
}

/// The same contract for LVM thin volumes, inside the VM (real lvm2, thin_delta).
#[test]
fn lvm_thin_driver() {
    let Some(scratch) = common::vm::in_vm("lvm_thin_driver") else {
        return;
    };
    let vg = common::vm::ThinVg::new(&scratch, "cconf", 128);
    let paths = vec![vg.thin_lv("v0", SIZE >> 20), vg.thin_lv("v1", SIZE >> 21)];
    let entries = ["v0", "v1"].map(|v| common::config::Volume::lvm_thin(v, &format!("cconf/{v}")));
    let g = Group::with_volumes(&scratch.join("group"), entries.to_vec(), paths);
    suite(
        &g,
        DriverPath {
            reflinked: false,
            live: false,
            remove_v1: Box::new(|_| {
                common::vm::sh("lvremove -q -y cconf/v1");
            }),
            v1_name: "cconf/v1",
        },
    );
}
