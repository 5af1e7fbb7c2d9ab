//! Files the unit tests of `sys` work on, in a temporary directory.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;

/// Creates (or truncates) `path` open for reading and writing.
pub(super) fn rw_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

/// A 16 MiB sparse file with 64 KiB of data at 1 MiB and at 8 MiB.
pub(super) fn sparse_file(dir: &Path) -> File {
    let file = rw_file(&dir.join("sparse"));
    file.set_len(16 * MIB).unwrap();
    file.write_all_at(&[0xA5; 64 * KIB as usize], MIB).unwrap();
    file.write_all_at(&[0x5A; 64 * KIB as usize], 8 * MIB)
        .unwrap();
    file
}
