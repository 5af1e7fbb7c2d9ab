//! `cascade::sys` on a real block device: a loop device over a file, so it
//! needs root; without root the test prints `SKIPPED` and passes. The tests
//! that need no device are unit tests beside the code in `src/sys/`.
mod common;

use cascade::sys::{block_device_size, device_or_file_size, zero_device_range};
use common::host::is_root;
use common::loopdev::LoopDev;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

const MIB: u64 = 1024 * 1024;

#[test]
fn loop_device_size_and_zeroout() {
    if !is_root() {
        eprintln!("SKIPPED: loop device test needs root");
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
