//! The kernel's own NBD client against the splitter (issue 12, part 6), in the test
//! VM: `cascade split` serves an image file, `nbd-client` attaches it as /dev/nbd0,
//! and ext4 is made, mounted with `-o discard`, filled with files of several sizes
//! (some fsynced, one overwritten in place, one deleted again, then `fstrim`),
//! unmounted and disconnected. Every request the kernel sent (FLUSH, FUA writes,
//! TRIM, reads) went through the splitter, so replaying its journal must give the
//! image file byte for byte, and the replayed image must fsck clean and hold the
//! same files. Two earlier points are checked too, each one the kernel made
//! consistent on the device before it was bookmarked: right after mkfs (and the
//! write number it ends at, `seq:N`, gives the same image), and with the mounted
//! file system frozen (`fsfreeze` flushes ext4's journal and clears its
//! needs-recovery flag first).
//!
//! The same boot (they are slow) then serves a split group on an LVM thin volume,
//! whose base is a thin snapshot taken while the group is held, and replays it to
//! the device's bytes.
mod common;

use cascade::journal::record::Record;
use cascade::journal::Journal;
use common::group::noise;
use common::host::{quiet, run};
use common::mount::Mount;
use common::split::{replay, Split, BIN};
use common::vm::{dm_reload, in_vm, sh, tools_or_skip};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const SIZE: u64 = 64 << 20;
const DEVICE: &str = "/dev/nbd0";
/// Seconds a bookmark may take: one commit (`commit-every` 20 ms) away, normally.
const BOOKMARK_WAIT: u64 = 60;
const VOLUME: &str = "disk";
const TOOLS: [&str; 9] = [
    "nbd-client",
    "dmsetup",
    "lvcreate",
    "mkfs.ext4",
    "e2fsck",
    "fsfreeze",
    "fstrim",
    "blockdev",
    "modprobe",
];

/// Each regular file under a directory (relative path) and its SHA-256.
type Files = BTreeMap<PathBuf, Vec<u8>>;

/// /dev/nbd0 attached by `nbd-client` to an export; detached when dropped.
struct KernelNbd {
    attached: bool,
}

impl KernelNbd {
    fn attach(addr: SocketAddr, export: &str) -> KernelNbd {
        let port = addr.port().to_string();
        let ip = addr.ip().to_string();
        run(Command::new("nbd-client")
            .args(["-N", export, "-b", "4096", "-t", "120"])
            .args([ip.as_str(), port.as_str(), DEVICE]));
        let nbd = KernelNbd { attached: true };
        let size: u64 = sh(&format!("blockdev --getsize64 {DEVICE}"))
            .trim()
            .parse()
            .unwrap();
        assert_eq!(size, SIZE, "{DEVICE} after nbd-client");
        nbd
    }

    /// `nbd-client -d`, then waits until the kernel has let the device go.
    fn detach(&mut self) {
        run(Command::new("nbd-client").args(["-d", DEVICE]));
        self.attached = false;
        for _ in 0..100 {
            if sh(&format!(
                "blockdev --getsize64 {DEVICE} 2>/dev/null || echo 0"
            ))
            .trim()
                == "0"
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{DEVICE} still has a size 10 s after nbd-client -d");
    }
}

impl Drop for KernelNbd {
    fn drop(&mut self) {
        if self.attached {
            quiet(Command::new("nbd-client").args(["-d", DEVICE]), true);
        }
    }
}

fn digest(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// Writes `data` to `root/rel` (creating directories), fsyncing it if `fsync`.
fn put(root: &Path, files: &mut Files, rel: &str, data: &[u8], fsync: bool) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(data).unwrap();
    if fsync {
        f.sync_all().unwrap();
    }
    files.insert(PathBuf::from(rel), digest(data));
}

/// Every regular file under `root` but lost+found, with its digest.
fn read_tree(root: &Path) -> Files {
    fn walk(root: &Path, dir: &Path, out: &mut Files) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                if rel != Path::new("lost+found") {
                    walk(root, &p, out);
                }
            } else {
                assert!(t.is_file(), "{}: not a regular file", p.display());
                out.insert(rel, digest(&std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Files::new();
    walk(root, root, &mut out);
    out
}

/// What differs between the files expected and those found, or `None`.
fn tree_difference(expected: &Files, found: &Files) -> Option<String> {
    let mut why = Vec::new();
    for (p, d) in expected {
        match found.get(p) {
            None => why.push(format!("{} is missing", p.display())),
            Some(f) if f != d => why.push(format!("{} has other content", p.display())),
            Some(_) => {}
        }
    }
    for p in found.keys().filter(|p| !expected.contains_key(*p)) {
        why.push(format!("{} should not be there", p.display()));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Where two files differ: their sizes, or how many 4 KiB blocks differ and the
/// first differing byte; `None` when they are equal.
fn file_difference(a: &Path, b: &Path) -> Option<String> {
    let (la, lb) = (
        std::fs::metadata(a).unwrap().len(),
        std::fs::metadata(b).unwrap().len(),
    );
    if la != lb {
        return Some(format!("sizes differ: {la} and {lb} bytes"));
    }
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; MIB], vec![0u8; MIB]);
    let (mut first, mut blocks, mut at) = (None, 0u64, 0u64);
    while at < la {
        let n = (la - at).min(MIB as u64) as usize;
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        for (i, (x, y)) in ba[..n].chunks(4096).zip(bb[..n].chunks(4096)).enumerate() {
            if x != y {
                blocks += 1;
                let byte = x.iter().zip(y).position(|(p, q)| p != q).unwrap();
                first.get_or_insert(at + (i * 4096 + byte) as u64);
            }
        }
        at += n as u64;
    }
    first.map(|f| {
        format!(
            "{blocks} of {} 4 KiB blocks differ, the first byte at offset {f}",
            la / 4096
        )
    })
}

/// `e2fsck -fn` of an image: panics with its report unless it finds it clean.
fn fsck_clean(img: &Path, point: &str) {
    let o = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn of the replay to {point} found problems ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Mounts `img` read-only on a loop device and checks it holds exactly `expected`.
fn check_files(img: &Path, mnt: &Path, point: &str, expected: &Files) {
    std::fs::create_dir_all(mnt).unwrap();
    let mut m = Mount::new(
        &[OsStr::new("-o"), OsStr::new("ro,loop"), img.as_os_str()],
        mnt,
    );
    let found = read_tree(mnt);
    assert!(m.unmount(), "cannot unmount the replay to {point}");
    if let Some(why) = tree_difference(expected, &found) {
        panic!("the file system replayed to {point} differs from what was written: {why}");
    }
}

/// Places bookmark `name` through the running splitter; the delta it follows. A
/// splitter that cannot journal never places it: then, after `BOOKMARK_WAIT`, why.
fn bookmark(split: &Split, name: &str) -> Result<u64, String> {
    let o = Command::new("timeout")
        .arg(BOOKMARK_WAIT.to_string())
        .arg(BIN)
        .args(["bookmark", "-c", "cascade.yaml", "--cg", "vms", "--json"])
        .args(["--name", name])
        .current_dir(&split.dir)
        .output()
        .unwrap();
    if !o.status.success() {
        let waited = if o.status.code() == Some(124) {
            format!(" (no answer in {BOOKMARK_WAIT} s)")
        } else {
            String::new()
        };
        return Err(format!(
            "cascade bookmark {name} failed{waited}: {}\nthe splitter's last messages:\n{}",
            String::from_utf8_lossy(&o.stderr),
            split.log()
        ));
    }
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    Ok(b["after_delta"].as_u64().unwrap())
}

/// TRIM and WRITE_ZEROES records (each a `Zero` record) in the split deltas after
/// delta `after`.
fn zero_records_after(j: &Journal, after: u64) -> u64 {
    let mut n = 0;
    for d in j.deltas().iter().filter(|d| d.delta > after) {
        let mut r = j.read_delta(d.delta).unwrap();
        while let Some(rec) = r.next_record().unwrap() {
            n += matches!(rec, Record::Zero { .. }) as u64;
        }
    }
    n
}

#[test]
fn the_kernel_client_makes_an_ext4_that_replays_byte_for_byte() {
    let test = "the_kernel_client_makes_an_ext4_that_replays_byte_for_byte";
    if !tools_or_skip(test, &TOOLS) {
        return;
    }
    let Some(scratch) = in_vm(test) else {
        return;
    };
    let started = Instant::now();
    sh("modprobe nbd && ip link set lo up");
    // Everything lives in a tmpfs of the guest: fast, and it can punch holes.
    let work = scratch.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=1200m", "tmpfs"], &work);
    let split = Split::start(&work, &[(VOLUME, SIZE)], "20ms");
    let mut nbd = KernelNbd::attach(split.addr, VOLUME);

    // mkfs discards the whole device first (TRIM), then writes and flushes.
    sh(&format!("mkfs.ext4 -q -F -b 4096 {DEVICE}"));
    let after_mkfs = bookmark(&split, "after-mkfs").unwrap_or_else(|e| panic!("{e}"));
    let mkfs_s = started.elapsed().as_secs_f64();

    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut fs = Mount::new(&["-o", "discard", DEVICE], &mnt);
    let mut files = Files::new();
    put(&mnt, &mut files, "empty", b"", false);
    put(&mnt, &mut files, "one", b"1", true);
    put(&mnt, &mut files, "odd", &noise(1, 4095), false);
    put(&mnt, &mut files, "page", &noise(2, 4096), true);
    put(&mnt, &mut files, "dir/sub/mid", &noise(3, MIB + 3), true);
    let mut big = noise(4, 6 * MIB);
    put(&mnt, &mut files, "big", &big, true);
    put(&mnt, &mut files, "doomed", &noise(5, 2 * MIB), true);
    for i in 0..64u64 {
        let len = 100 + (i as usize * 997) % (8 * KIB);
        put(
            &mnt,
            &mut files,
            &format!("small/{i:02}"),
            &noise(10 + i, len),
            i % 8 == 0,
        );
    }
    // Frozen, ext4 has flushed its journal and marked itself needing no recovery: the
    // device holds a clean file system, which the bookmark pins.
    sh(&format!("sync && fsfreeze -f {}", mnt.display()));
    let frozen = bookmark(&split, "frozen");
    sh(&format!("fsfreeze -u {}", mnt.display()));
    let frozen = frozen.unwrap_or_else(|e| panic!("{e}"));
    let at_freeze = files.clone();

    // Then a delete (ext4 discards the freed blocks at its next commit), an
    // overwrite in place, a file never fsynced, and fstrim over all free space.
    std::fs::remove_file(mnt.join("doomed")).unwrap();
    files.remove(Path::new("doomed"));
    let patch = noise(6, 256 * KIB);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("big"))
        .unwrap();
    f.seek(SeekFrom::Start(5 * MIB as u64 + 512)).unwrap();
    f.write_all(&patch).unwrap();
    f.sync_data().unwrap();
    drop(f);
    big[5 * MIB + 512..5 * MIB + 512 + patch.len()].copy_from_slice(&patch);
    files.insert(PathBuf::from("big"), digest(&big));
    put(&mnt, &mut files, "late", &noise(7, MIB), false);
    sh(&format!("sync && fstrim {}", mnt.display()));
    assert!(fs.unmount(), "cannot unmount {DEVICE}");
    nbd.detach();
    let write_s = started.elapsed().as_secs_f64() - mkfs_s;
    let report = split.stop();
    eprintln!("splitter: {report}");

    let journal = work.join("journal/vms");
    let image = work.join(format!("{VOLUME}.img"));
    let j = Journal::open(&journal).unwrap();
    let zeros = zero_records_after(&j, frozen);
    assert!(
        zeros > 0,
        "no TRIM reached the splitter after the delete and fstrim (no Zero record after \
         delta {frozen}): {report}"
    );
    let mkfs_write = j
        .delta(after_mkfs)
        .unwrap()
        .writes
        .expect("mkfs's writes end in a split delta")
        .last_write;
    drop(j);

    // The latest point: the image itself, and the files written.
    let out = work.join("out");
    let latest = out.join(VOLUME);
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new(BIN)
        .arg("replay")
        .arg(&journal)
        .arg("--to")
        .arg(format!("{VOLUME}={}", latest.display())));
    if let Some(why) = file_difference(&image, &latest) {
        panic!(
            "the replay to the latest point differs from {}: {why}",
            image.display()
        );
    }
    std::fs::remove_file(&image).unwrap();
    fsck_clean(&latest, "the latest point");
    check_files(&latest, &work.join("m"), "the latest point", &files);

    // Frozen: clean, and the files as they were then (`doomed` still there).
    let got = replay(&journal, "bookmark:frozen", &out, &[VOLUME]);
    fsck_clean(&got[0], "bookmark frozen");
    check_files(&got[0], &work.join("m"), "bookmark frozen", &at_freeze);

    // Right after mkfs: clean and empty; seq:N at mkfs's last write is the same image.
    let got = replay(&journal, "bookmark:after-mkfs", &out, &[VOLUME]);
    fsck_clean(&got[0], "bookmark after-mkfs");
    check_files(
        &got[0],
        &work.join("m"),
        "bookmark after-mkfs",
        &Files::new(),
    );
    let kept = work.join("after-mkfs.img");
    std::fs::rename(&got[0], &kept).unwrap();
    let seq = format!("seq:{mkfs_write}");
    let got = replay(&journal, &seq, &out, &[VOLUME]);
    if let Some(why) = file_difference(&kept, &got[0]) {
        panic!("the replay to {seq} (mkfs's last write) differs from bookmark after-mkfs: {why}");
    }
    eprintln!(
        "{test}: mkfs {mkfs_s:.1} s, files {write_s:.1} s, replays and checks {:.1} s; \
         {zeros} TRIM/zero records after the freeze, mkfs ended at write {mkfs_write}",
        started.elapsed().as_secs_f64() - mkfs_s - write_s
    );
    // In the same boot (they are slow): a split group on a thin volume, and one
    // whose journal disk stalls.
    a_thin_volume_split_group_replays_its_device(&work);
    a_journal_disk_that_stalls_turns_the_group_to_marking(&work);
}

/// A split group whose journal is on a dm-delay device (issue 13, part 3): while the
/// device takes two seconds an I/O, a burst of writes is acknowledged all the same
/// (the splitter marks them); once the delay is taken away the marked regions are
/// read back, and the journal resumes where it equals the volume.
fn a_journal_disk_that_stalls_turns_the_group_to_marking(work: &Path) {
    let dir = work.join("stall");
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    let backing = work.join("stall-journal.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let dev = common::loopdev::LoopDev::attach(&backing).unwrap();
    let sectors = (256u64 << 20) / 512;
    let table = |ms: u32| format!("0 {sectors} delay {} 0 {ms}", dev.path());
    sh(&format!(
        "modprobe dm-delay && dmsetup create jdelay --table '{}'",
        table(0)
    ));
    sh("mkfs.ext4 -q -F /dev/mapper/jdelay");
    let mut fs = Mount::new(&["/dev/mapper/jdelay"], &dir.join("journal"));
    Split::config(
        &dir,
        &[("web", 32 << 20)],
        "      commit-every: 20ms\n      queue: 2MiB\n      dirty-granularity: 16KiB\n",
        "",
    );
    let split = Split::serve(&dir);
    let status = || common::split::split_status(&dir)["splitter"]["serving"].clone();
    let mut c = common::nbd::Raw::open(split.addr, "web");
    let mut shadow = vec![0u8; 32 << 20];
    let mut n = 0u64;
    fn write(c: &mut common::nbd::Raw, n: &mut u64, shadow: &mut [u8], off: usize) {
        *n += 1;
        let data = noise(*n, 64 * KIB);
        c.write(*n, off as u64, &data);
        shadow[off..off + data.len()].copy_from_slice(&data);
    }
    for i in 0..20 {
        write(&mut c, &mut n, &mut shadow, i * 64 * KIB);
    }
    let in_order = digest(&shadow);
    // The stall: every I/O of the journal's disk waits two seconds.
    dm_reload("jdelay", &table(2000));
    let burst = Instant::now();
    for i in 0..256 {
        write(&mut c, &mut n, &mut shadow, (i * 97 % 480) * 64 * KIB);
    }
    let burst_s = burst.elapsed().as_secs_f64();
    let marking = status();
    assert_eq!(
        marking["mode"], "marking",
        "a stalled journal, and not marking: {marking}"
    );
    dm_reload("jdelay", &table(0));
    let back = Instant::now();
    loop {
        let s = status();
        if s["mode"] == "active" && s["last_journalled"] == s["last_numbered"] {
            break;
        }
        assert!(back.elapsed().as_secs() < 120, "never resynchronised: {s}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    c.disconnect();
    split.stop();
    let journal = dir.join("journal/vms");
    common::split::verify_journal(&journal, "a stalled journal disk harmed the journal");
    let j = Journal::open(&journal).unwrap();
    let resumes = common::split::resume_points(&j);
    let gap_after = marking["gap_after"].as_u64().unwrap();
    let last = j.last_delta();
    drop(j);
    let out = dir.join("out");
    let volume = std::fs::read(dir.join("web.img")).unwrap();
    assert!(volume == shadow, "the volume is not what the client wrote");
    let got = replay(&journal, &format!("delta:{last}"), &out, &["web"]);
    assert!(
        std::fs::read(&got[0]).unwrap() == volume,
        "the journal does not replay to the volume"
    );
    let got = replay(&journal, &format!("seq:{}", resumes[0]), &out, &["web"]);
    assert!(
        std::fs::read(&got[0]).unwrap() == volume,
        "where the gap resumes is not the volume"
    );
    if gap_after >= 20 {
        let got = replay(&journal, "seq:20", &out, &["web"]);
        assert_eq!(digest(&std::fs::read(&got[0]).unwrap()), in_order, "seq:20");
    }
    eprintln!(
        "a stalled journal: 256 writes of 64 KiB acknowledged in {burst_s:.1} s while marking, \
               read back in {:.1} s",
        back.elapsed().as_secs_f64()
    );
    fs.unmount();
    sh("dmsetup remove jdelay");
}

/// A split group whose volume is an LVM thin volume: its base is a thin snapshot
/// taken while the group is held (and the device flushed), and the writes after it,
/// through the splitter onto the block device, replay to the device's bytes; so does
/// the bookmark placed between them.
fn a_thin_volume_split_group_replays_its_device(work: &Path) {
    let dir = work.join("thin");
    std::fs::create_dir_all(&dir).unwrap();
    let vg = common::vm::ThinVg::new(work, "splitvg", 96);
    let lv = vg.thin_lv("web", 32);
    // Data before the group is served: the base holds it.
    sh(&format!(
        "dd if=/dev/urandom of={} bs=1M count=3 oflag=direct status=none",
        lv.display()
    ));
    std::fs::write(
        dir.join("cascade.yaml"),
        "state-dir: state\njournal-dir: journal\nconsistency-groups:\n  - name: vms\n    \
         splitter:\n      listen: 127.0.0.1:0\n      commit-every: 20ms\n    volumes:\n      \
         - { id: web, driver: lvm-thin, lv: splitvg/web }\n",
    )
    .unwrap();
    let split = Split::serve(&dir);
    common::nbd::qemu_io(
        &split.uri("web"),
        &["write -P 0x5a 1M 64k", "write -z 2M 512k", "discard 8M 1M"],
    );
    bookmark(&split, "middle").unwrap_or_else(|e| panic!("{e}"));
    let middle = std::fs::read(&lv).unwrap();
    common::nbd::qemu_io(
        &split.uri("web"),
        &[
            "write -f -P 0x33 16M 4M",
            "aio_write -P 0x44 30M 1M",
            "aio_flush",
        ],
    );
    split.stop();
    let journal = dir.join("journal/vms");
    let out = dir.join("out");
    let last = Journal::open(&journal).unwrap().last_delta().to_string();
    let got = replay(&journal, &last, &out, &["web"]);
    assert!(
        std::fs::read(&got[0]).unwrap() == std::fs::read(&lv).unwrap(),
        "the thin volume's journal replays to other bytes than {}",
        lv.display()
    );
    let got = replay(&journal, "bookmark:middle", &out, &["web"]);
    assert!(
        std::fs::read(&got[0]).unwrap() == middle,
        "the thin volume's bookmark replays to other bytes than the device had then"
    );
    drop(vg);
}
