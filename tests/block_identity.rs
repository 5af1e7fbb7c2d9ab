//! A physical replica on a block device is recognised by what the device is, not by
//! its node: device nodes are recreated at every boot and udev re-add, and the
//! replica must still be accepted then; another device at the same path must not be.
mod common;

use cascade::config::Config;
use cascade::export::{open_exporter, Exporter};
use cascade::journal::Journal;
use common::config::TargetFile;
use common::group::{noise, Group};
use common::loopdev::LoopDev;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A group of one 1 MiB volume with `n` deltas.
fn group(dir: &Path, n: u64) -> Group {
    let g = Group::new(dir, &[1 << 20]);
    for i in 0..n {
        g.write(0, i * 65536, &noise(i, 100_000));
        g.cycle();
    }
    g
}

fn loop_device(dir: &Path, name: &str) -> LoopDev {
    let backing = dir.join(name);
    std::fs::write(&backing, vec![0u8; 2 << 20]).unwrap();
    LoopDev::attach(&backing).expect("loop devices need root")
}

/// Makes `at` a block device node for the device `of` is (its major:minor), as udev
/// does at boot: a new inode each time.
fn mknod(at: &Path, of: &Path) {
    let _ = std::fs::remove_file(at);
    let rdev = std::fs::metadata(of).unwrap().rdev();
    let ok = Command::new("mknod")
        .arg(at)
        .arg("b")
        .arg(libc::major(rdev).to_string())
        .arg(libc::minor(rdev).to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mknod {}", at.display());
}

fn exporter(cfg: &Config) -> Box<dyn Exporter> {
    let cg = cfg.group("cg").unwrap();
    let state = cascade::export::targets_state(cfg, cg);
    std::fs::create_dir_all(&state).unwrap();
    open_exporter(cfg.target("replica").unwrap(), cg, &state).unwrap()
}

fn refused(cfg: &Config, journal: &Journal, delta: u64) -> String {
    let err = exporter(cfg).apply(journal, delta).unwrap_err().to_string();
    assert!(
        err.contains("is not the file that received deltas"),
        "{err}"
    );
    err
}

#[test]
fn a_recreated_node_is_the_same_replica_and_another_device_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path(), 5);
    let journal = Journal::open(&g.journal()).unwrap();
    let (mine, other) = (
        loop_device(tmp.path(), "mine.img"),
        loop_device(tmp.path(), "other.img"),
    );
    let node: PathBuf = tmp.path().join("replica-node");
    mknod(&node, &mine.device);
    g.write_target("replica", &TargetFile::block([("v0", node.clone())]));
    g.configure(|c| c.groups[0].targets = vec!["replica".into()]);
    let cfg = g.config();
    exporter(&cfg).apply(&journal, 1).unwrap();

    // The node is recreated (a reboot, a udev re-add): same device, accepted.
    mknod(&node, &mine.device);
    exporter(&cfg).apply(&journal, 2).unwrap();

    // Another device at that path: a node for it, or a link to it, is refused.
    mknod(&node, &other.device);
    let err = refused(&cfg, &journal, 3);
    assert!(err.contains("loop over inode"), "{err}");
    std::fs::remove_file(&node).unwrap();
    std::os::unix::fs::symlink(&other.device, &node).unwrap();
    refused(&cfg, &journal, 3);
    // A link to the device itself is the device.
    std::fs::remove_file(&node).unwrap();
    std::os::unix::fs::symlink(&mine.device, &node).unwrap();
    exporter(&cfg).apply(&journal, 3).unwrap();
    // So is the kernel's own node.
    g.write_target("replica", &TargetFile::block([("v0", mine.device.clone())]));
    let cfg = g.config();
    exporter(&cfg).apply(&journal, 4).unwrap();
    exporter(&cfg).apply(&journal, 5).unwrap();
    let replica = std::fs::read(&mine.device).unwrap();
    assert!(
        replica[..1 << 20] == g.contents()[0][..],
        "the replica is exact"
    );
}

/// A cursor written before devices had stable ids names the node: it is accepted
/// while the node is the one it names, and from then on holds the device's id.
#[test]
fn a_cursor_of_the_old_identity_format_is_accepted_and_upgraded() {
    let tmp = tempfile::tempdir().unwrap();
    let g = group(tmp.path(), 3);
    let journal = Journal::open(&g.journal()).unwrap();
    let dev = loop_device(tmp.path(), "dev.img");
    let node: PathBuf = tmp.path().join("replica-node");
    mknod(&node, &dev.device);
    g.write_target("replica", &TargetFile::block([("v0", node.clone())]));
    g.configure(|c| c.groups[0].targets = vec!["replica".into()]);
    let cfg = g.config();
    exporter(&cfg).apply(&journal, 1).unwrap();
    let cursor =
        cascade::export::targets_state(&cfg, cfg.group("cg").unwrap()).join("replica.cursor");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cursor).unwrap()).unwrap();
    c["replicas"]["v0"] = cascade::fsutil::node_identity(&node).into();
    std::fs::write(&cursor, serde_json::to_vec(&c).unwrap()).unwrap();

    exporter(&cfg).apply(&journal, 2).unwrap();
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cursor).unwrap()).unwrap();
    let id = c["replicas"]["v0"].as_str().unwrap();
    assert!(id.starts_with("block loop over inode"), "{id}");
    // Upgraded: the node may now be recreated.
    mknod(&node, &dev.device);
    exporter(&cfg).apply(&journal, 3).unwrap();
}

/// Inside the VM, with real device-mapper: a thin LV is known by its dm uuid, so a
/// replica LV deactivated and activated again (a new node, perhaps a new minor) is
/// the same replica, and another LV behind the same link is not; a target naming a
/// thin volume of the group, by `/dev/VG/LV` or `/dev/mapper/VG-LV`, is the source.
#[test]
fn thin_volumes_are_known_by_their_dm_uuid() {
    let Some(scratch) = common::vm::in_vm("thin_volumes_are_known_by_their_dm_uuid") else {
        return;
    };
    let vg = common::vm::ThinVg::new(&scratch, "cbid", 128);
    let source = vg.thin_lv("src", 8);
    let (rep, other) = (vg.thin_lv("rep", 8), vg.thin_lv("other", 8));
    let g = Group::with_volumes(
        &scratch.join("group"),
        vec![common::config::Volume::lvm_thin("v0", "cbid/src")],
        vec![source.clone()],
    );
    g.write(0, 4096, &noise(1, 1 << 20));
    g.cycle();
    g.write(0, 2 << 20, &noise(2, 1 << 20));
    g.cycle();
    let journal = Journal::open(&g.journal()).unwrap();
    g.configure(|c| c.groups[0].targets = vec!["replica".into()]);

    for name in ["/dev/cbid/src", "/dev/mapper/cbid-src"] {
        g.write_target("replica", &TargetFile::block([("v0", name)]));
        let cfg = g.config();
        let cg = cfg.group("cg").unwrap();
        let state = cascade::export::targets_state(&cfg, cg);
        let err = open_exporter(cfg.target("replica").unwrap(), cg, &state)
            .err()
            .expect(name)
            .to_string();
        assert!(err.contains("is the source volume `v0` itself"), "{err}");
    }

    let link = scratch.join("replica-link");
    std::os::unix::fs::symlink(&rep, &link).unwrap();
    g.write_target("replica", &TargetFile::block([("v0", link.clone())]));
    let cfg = g.config();
    exporter(&cfg).apply(&journal, 1).unwrap();
    let (id, node) = (
        cascade::fsutil::file_identity(&rep),
        cascade::fsutil::node_identity(&rep),
    );
    assert!(id.starts_with("block dm LVM-"), "{id}");
    common::vm::sh("lvchange -q -an cbid/rep && lvchange -q -ay cbid/rep");
    assert_ne!(cascade::fsutil::node_identity(&rep), node, "a new node");
    assert_eq!(cascade::fsutil::file_identity(&rep), id);
    // Another thin LV behind the link is refused, the reactivated one accepted.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&other, &link).unwrap();
    refused(&cfg, &journal, 2);
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&rep, &link).unwrap();
    exporter(&cfg).apply(&journal, 2).unwrap();
    assert!(
        std::fs::read(&rep).unwrap() == g.contents()[0],
        "the replica is exact"
    );
}
