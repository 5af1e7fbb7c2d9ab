//! Thin, safe wrappers around the Linux ioctls and syscalls that `std` does
//! not wrap.
//!
//! This is the only module of the crate allowed to contain `unsafe` code: the
//! crate root denies `unsafe_code` and this module (with its submodules)
//! opts back in, so the FFI surface is in one place to audit. Every `unsafe`
//! block is a single FFI call inside a safe function, carries a
//! `// SAFETY:` comment explaining why it is sound, and is exercised by the
//! unit tests beside it (and, on a real block device, which needs root, by
//! `tests/sys.rs`).
//!
//! What lives where, and why `std` is not enough:
//!
//! * `reflink.rs` — [`reflink()`]: the `FICLONE` ioctl (copy-on-write clone of
//!   a whole file).
//! * `fiemap.rs` — [`fiemap()`], [`Extent`] and the `FIEMAP_EXTENT_*` flags:
//!   the `FS_IOC_FIEMAP` ioctl (physical extent map of a file).
//! * `holes.rs` — [`next_data`] / [`next_hole`]: `lseek` with `SEEK_DATA` /
//!   `SEEK_HOLE` (std's `Seek` only knows `Start`/`End`/`Current`);
//!   [`punch_hole`]: `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`.
//! * `page_cache.rs` — [`prefetch`]: `posix_fadvise(POSIX_FADV_WILLNEED)`;
//!   [`start_writeback`]: `sync_file_range(SYNC_FILE_RANGE_WRITE)`.
//! * `blk.rs` — [`block_device_size`]: the `BLKGETSIZE64` ioctl (a block
//!   device's metadata reports a length of 0); [`zero_device_range`]: the
//!   `BLKZEROOUT` ioctl; [`device_or_file_size`]: a safe helper combining
//!   the metadata length and `BLKGETSIZE64`.
//! * `dm.rs` — [`dm_target_message`] / [`dm_table`]: device-mapper ioctls
//!   (what `dmsetup message` and `dmsetup table` do, without a process each).
//! * `process.rs` — [`kill_group`]: `killpg`, to stop a timed-out command with
//!   everything it started.
//! * `malloc.rs` — [`limit_malloc_arenas`]: `mallopt(M_ARENA_MAX)`, so memory
//!   freed on another thread than the one that allocated it is reused.
//! * `statvfs.rs` — [`available_bytes`]: `statvfs`, the room left on a file
//!   system (a splitter whose journal disk is full waits for room cheaply).
//!
//! All functions return [`std::io::Result`]; syscall failures are reported
//! as [`io::Error::last_os_error`], so callers can inspect
//! [`io::Error::raw_os_error`] (e.g. to fall back from a failed reflink).
//!
//! Linux only.
#![allow(unsafe_code)]

use std::io;

mod blk;
mod block_id;
mod dm;
mod fiemap;
mod holes;
mod malloc;
mod page_cache;
mod process;
mod reflink;
mod statvfs;
#[cfg(test)]
mod test_files;

pub use blk::{block_device_size, device_or_file_size, zero_device_range};
pub use block_id::{birth_ns, stable_id};
pub use dm::{table as dm_table, target_message as dm_target_message};
pub use fiemap::{
    fiemap, Extent, FiemapIter, FIEMAP_EXTENT_DATA_ENCRYPTED, FIEMAP_EXTENT_DATA_INLINE,
    FIEMAP_EXTENT_DATA_TAIL, FIEMAP_EXTENT_DELALLOC, FIEMAP_EXTENT_ENCODED, FIEMAP_EXTENT_LAST,
    FIEMAP_EXTENT_MERGED, FIEMAP_EXTENT_NOT_ALIGNED, FIEMAP_EXTENT_SHARED, FIEMAP_EXTENT_UNKNOWN,
    FIEMAP_EXTENT_UNWRITTEN,
};
pub use holes::{next_data, next_hole, punch_hole};
pub use malloc::limit_malloc_arenas;
pub use page_cache::{prefetch, start_writeback};
pub use process::kill_group;
pub use reflink::reflink;
pub use statvfs::available_bytes;

/// Converts a byte offset or length to the kernel's signed `off_t`, failing
/// with `InvalidInput` (naming `what`) instead of wrapping to a negative
/// value the syscall would misread.
fn to_off_t(value: u64, what: &str) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {value} does not fit in off_t"),
        )
    })
}

/// `Ok(rc)`, or [`io::Error::last_os_error`] when `rc` is the `-1` by which a
/// syscall or ioctl reports failure (the cause is in `errno`, so this must
/// run right after the call).
fn os_result<T: PartialEq + From<i8>>(rc: T) -> io::Result<T> {
    if rc == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
