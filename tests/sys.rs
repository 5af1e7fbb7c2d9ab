//! `cascade::sys` on real parts: a loop device over a file, and reflinks on an
//! XFS and on file systems without them, so it needs root; without root a test
//! prints `SKIPPED` and passes, unless CASCADE_REQUIRE_ROOT is set (`make test`
//! sets it), when it fails. The tests that need no device or mount are unit
//! tests beside the code in `src/sys/`.
mod common;

use cascade::sys::{
    block_device_size, device_or_file_size, fiemap, next_data, next_hole, reflink,
    zero_device_range,
};
use common::host::root_or_skip;
use common::loopdev::LoopDev;
use common::mount::Mount;
use common::xfs::XfsMount;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

const MIB: u64 = 1024 * 1024;

#[test]
fn loop_device_size_and_zeroout() {
    if !root_or_skip("a loop device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    File::create(&backing).unwrap().set_len(64 * MIB).unwrap();
    let lo = LoopDev::attach(&backing).unwrap();
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lo.device)
        .unwrap();
    assert_eq!(block_device_size(&dev).unwrap(), 64 * MIB);
    assert_eq!(device_or_file_size(&dev).unwrap(), 64 * MIB);
    // A device's lseek knows no SEEK_DATA: all of it is data.
    assert_eq!(next_data(&dev, MIB).unwrap(), Some(MIB));
    assert_eq!(next_data(&dev, 64 * MIB).unwrap(), None);
    assert_eq!(next_hole(&dev, MIB).unwrap(), 64 * MIB);

    dev.write_all_at(&vec![0xCD; 2 * MIB as usize], MIB)
        .unwrap();
    dev.sync_all().unwrap();
    let (start, len) = (MIB + 4096, MIB);
    zero_device_range(&dev, start, len).unwrap();
    zero_device_range(&dev, 0, 0).unwrap();
    let mut buf = vec![0u8; 2 * MIB as usize];
    dev.read_exact_at(&mut buf, MIB).unwrap();
    let (a, b) = (4096usize, 4096 + MIB as usize);
    assert!(buf[..a].iter().all(|&x| x == 0xCD));
    assert!(buf[a..b].iter().all(|&x| x == 0));
    assert!(buf[b..].iter().all(|&x| x == 0xCD));

    // Misaligned or out-of-range requests are EINVAL.
    let err = zero_device_range(&dev, 100, 512).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    let err = zero_device_range(&dev, 64 * MIB - 512, 1024).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    drop(dev);
}

/// FICLONE on real file systems: on an XFS made with `reflink=1` the clone reads
/// back the source and shares its extents (FIEMAP says SHARED: no data was copied);
/// on a file system without reflinks (tmpfs) it fails with EOPNOTSUPP, and across
/// two file systems with EXDEV, the errors the file driver falls back to a copy on.
#[test]
fn reflink_clones_on_xfs_and_fails_where_there_is_none() {
    let Some(xfs) = XfsMount::new(64) else {
        return;
    };
    let bytes: Vec<u8> = (0..MIB as u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(xfs.path("src"), &bytes).unwrap();
    let src = File::open(xfs.path("src")).unwrap();
    src.sync_all().unwrap();
    let dst = rw(&xfs.path("dst"));
    reflink(&src, &dst).unwrap();
    assert!(std::fs::read(xfs.path("dst")).unwrap() == bytes);
    let extents: Vec<_> = fiemap(&dst).collect::<std::io::Result<_>>().unwrap();
    assert!(
        !extents.is_empty() && extents.iter().all(|e| e.is_shared()),
        "the clone shares every extent: {extents:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("tmpfs");
    std::fs::create_dir(&mnt).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=16m", "tmpfs"], &mnt);
    std::fs::write(mnt.join("a"), &bytes).unwrap();
    let a = File::open(mnt.join("a")).unwrap();
    let err = reflink(&a, &rw(&mnt.join("b"))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "tmpfs: {err}");
    let err = reflink(&src, &rw(&mnt.join("c"))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "XFS to tmpfs: {err}");
}

fn rw(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

/// A test that needs root fails instead of skipping when CASCADE_REQUIRE_ROOT is
/// set (as `make test` sets it) and it cannot run: this binary's own root-only
/// tests, run again as `nobody`, skip loudly without it and fail with it.
#[test]
fn root_only_tests_fail_unrun_when_root_is_required() {
    if !root_or_skip("running tests as another user") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for test in [
        "loop_device_size_and_zeroout",
        "reflink_clones_on_xfs_and_fails_where_there_is_none",
    ] {
        let run = |require: bool| {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&exe)
                .args(["--exact", test, "--nocapture", "--test-threads=1"])
                .env_remove(common::host::REQUIRE_ROOT)
                .current_dir("/");
            if require {
                c.env(common::host::REQUIRE_ROOT, "1");
            }
            c.output().unwrap()
        };
        let o = run(false);
        let text = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && text.contains("SKIPPED"),
            "{test}: {text}"
        );
        let o = run(true);
        let text = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && text.contains("CASCADE_REQUIRE_ROOT is set"),
            "{test}: {text}"
        );
    }
}
