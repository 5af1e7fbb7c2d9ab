//! The VolumeDriver contract (src/volume/mod.rs), checked the same way for every
//! driver and path: the file driver on the ordinary file system (sparse copies, block
//! comparison) and on XFS with reflink (clones, extent-map diff).
mod common;

use cascade::config::Config;
use cascade::diff::ChangeKind;
use cascade::volume::{driver_for, SnapshotSet, VolumeDriver};
use common::group::{noise, Group};
use std::path::Path;

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

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Every byte that differs between the snapshots lies inside a reported range, and
/// Zero ranges really are zero in the new snapshot. Returns the bytes reported.
fn check_changes(
    d: &dyn VolumeDriver,
    old: Option<&SnapshotSet>,
    new: &SnapshotSet,
    v: usize,
) -> u64 {
    let now = read(&new.volumes[v].path);
    let before = old.map_or(vec![0; now.len()], |o| read(&o.volumes[v].path));
    let mut covered = vec![false; now.len()];
    let mut last_end = 0;
    let mut total = 0;
    for c in d.changes(old, new, v).unwrap() {
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

fn suite(dir: &Path, expect_reflink: bool) {
    let g = Group::new(dir, &[SIZE, SIZE / 2]);
    g.write(0, 0, &noise(1, 3 << 20));
    g.write(1, 1 << 20, &noise(2, 1 << 20));
    let (_, d) = driver(&g);

    // Snapshots capture the group as of the moment they were taken.
    let s1 = d.snapshot(1).unwrap();
    assert_eq!(
        s1.volumes.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        ["v0", "v1"]
    );
    assert!(
        s1.volumes.iter().all(|v| v.reflinked == expect_reflink),
        "reflinked: {:?}",
        s1.volumes
    );
    let at_s1 = g.contents();
    assert_eq!(read(&s1.volumes[0].path), at_s1[0]);
    assert_eq!(read(&s1.volumes[1].path), at_s1[1]);
    g.write(0, 5 << 20, &noise(3, 64 << 10));
    g.write(0, 0, &[0u8; 128 << 10]);
    g.write(1, 1 << 20, &[9u8; 4096]);
    assert_eq!(
        read(&s1.volumes[0].path),
        at_s1[0],
        "a snapshot does not follow later writes"
    );
    assert_eq!(d.open_snapshot(1).unwrap(), s1);

    // A full listing covers the whole volume; an incremental one covers every change
    // and, on the reflink path, costs about the change, not the volume.
    let s2 = d.snapshot(2).unwrap();
    assert_eq!(check_changes(d.as_ref(), None, &s2, 0), SIZE);
    let changed =
        check_changes(d.as_ref(), Some(&s1), &s2, 0) + check_changes(d.as_ref(), Some(&s1), &s2, 1);
    let written = (64 << 10) + (128 << 10) + 4096;
    assert!(
        changed >= written && changed <= 2 * written,
        "reported {changed} bytes for {written} written"
    );
    assert_eq!(
        check_changes(d.as_ref(), Some(&s2), &s2, 0),
        0,
        "a snapshot has no changes against itself"
    );

    // Retire is idempotent; snapshot is all or nothing.
    assert_eq!(d.snapshots().unwrap(), [1, 2]);
    d.retire(1).unwrap();
    d.retire(1).unwrap();
    assert_eq!(d.snapshots().unwrap(), [2]);
    std::fs::remove_file(&g.volumes[1]).unwrap();
    let err = d.snapshot(3).unwrap_err().to_string();
    assert!(
        err.contains("v1.img"),
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
    suite(tmp.path(), false);
}

#[test]
fn file_driver_reflink_path() {
    let Some(xfs) = common::xfs::XfsMount::new(512) else {
        return;
    };
    suite(&xfs.path("group"), true);
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
