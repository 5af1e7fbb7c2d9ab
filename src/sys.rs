//! Thin, safe wrappers around the Linux ioctls and syscalls that `std` does
//! not wrap.
//!
//! This is the only module of the crate allowed to contain `unsafe` code: the
//! crate root denies `unsafe_code` and this module opts back in. Every
//! `unsafe` block is a single FFI call inside a safe function, carries a
//! `// SAFETY:` comment explaining why it is sound, and is exercised by the
//! unit tests below.
//!
//! What lives here, and why `std` is not enough:
//!
//! * [`reflink`]: the `FICLONE` ioctl (copy-on-write clone of a whole file).
//! * [`fiemap`]: the `FS_IOC_FIEMAP` ioctl (physical extent map of a file).
//! * [`next_data`] / [`next_hole`]: `lseek` with `SEEK_DATA` / `SEEK_HOLE`
//!   (std's `Seek` only knows `Start`/`End`/`Current`).
//! * [`block_device_size`]: the `BLKGETSIZE64` ioctl (a block device's
//!   metadata reports a length of 0).
//! * [`punch_hole`]: `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`.
//! * [`zero_device_range`]: the `BLKZEROOUT` ioctl.
//! * [`device_or_file_size`]: a safe helper combining the metadata length and
//!   `BLKGETSIZE64`.
//!
//! All functions return [`std::io::Result`]; syscall failures are reported
//! as [`io::Error::last_os_error`], so callers can inspect
//! [`io::Error::raw_os_error`] (e.g. to fall back from a failed reflink).
//!
//! Linux only.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::iter::FusedIterator;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

/// `FICLONE` = `_IOW(0x94, 9, int)`.
const FICLONE: libc::Ioctl = 0x4004_9409_u32 as libc::Ioctl;
/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::Ioctl = 0xC020_660B_u32 as libc::Ioctl;
/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)` (64-bit `size_t`).
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272_u32 as libc::Ioctl;
/// `BLKZEROOUT` = `_IO(0x12, 127)`.
const BLKZEROOUT: libc::Ioctl = 0x127F as libc::Ioctl;

/// Sync the file before mapping (`fm_flags`).
const FIEMAP_FLAG_SYNC: u32 = 0x0000_0001;

/// This is the last extent of the file.
pub const FIEMAP_EXTENT_LAST: u32 = 0x0000_0001;
/// Data location unknown.
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x0000_0002;
/// Location still pending (delayed allocation); sets `UNKNOWN` too.
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x0000_0004;
/// Data cannot be read while the filesystem is unmounted.
pub const FIEMAP_EXTENT_ENCODED: u32 = 0x0000_0008;
/// Data is encrypted by the filesystem; sets `ENCODED` too.
pub const FIEMAP_EXTENT_DATA_ENCRYPTED: u32 = 0x0000_0080;
/// Extent offsets may not be block aligned.
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x0000_0100;
/// Data is mixed with metadata; sets `NOT_ALIGNED` too.
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x0000_0200;
/// Multiple files in one block; sets `NOT_ALIGNED` too.
pub const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x0000_0400;
/// Space allocated but not written (reads as zeros).
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x0000_0800;
/// File does not natively support extents; result merged for efficiency.
pub const FIEMAP_EXTENT_MERGED: u32 = 0x0000_1000;
/// Space shared with other files (e.g. after a reflink or in a snapshot).
pub const FIEMAP_EXTENT_SHARED: u32 = 0x0000_2000;

/// Flags meaning [`Extent::physical`] cannot be used as a physical address.
const PHYSICAL_UNRELIABLE: u32 = FIEMAP_EXTENT_UNKNOWN
    | FIEMAP_EXTENT_DELALLOC
    | FIEMAP_EXTENT_ENCODED
    | FIEMAP_EXTENT_DATA_ENCRYPTED
    | FIEMAP_EXTENT_NOT_ALIGNED
    | FIEMAP_EXTENT_DATA_INLINE
    | FIEMAP_EXTENT_DATA_TAIL;

/// Number of extents fetched per `FS_IOC_FIEMAP` call.
const FIEMAP_BATCH: usize = 256;

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

/// Clones the whole content of `src` into `dst` with the `FICLONE` ioctl
/// (copy-on-write, no data is copied).
///
/// `src` must be open for reading and `dst` for writing. On failure the raw
/// OS error is returned unchanged so callers can fall back to a real copy:
/// typically `EOPNOTSUPP` (filesystem without reflink), `EXDEV` (different
/// filesystems) or `EINVAL` (unsupported file types or alignment).
pub fn reflink(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: both descriptors are valid open fds borrowed from `File`s that
    // outlive the call; FICLONE takes the source fd by value as its argument
    // and does not touch user memory.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) };
    os_result(rc)?;
    Ok(())
}

/// One extent reported by `FS_IOC_FIEMAP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Byte offset of the extent in the file.
    pub logical: u64,
    /// Byte offset of the extent on the device (see
    /// [`Extent::physical_is_reliable`]).
    pub physical: u64,
    /// Length of the extent in bytes.
    pub length: u64,
    /// `FIEMAP_EXTENT_*` flags.
    pub flags: u32,
}

impl Extent {
    /// Byte offset just past the end of the extent in the file.
    pub fn logical_end(&self) -> u64 {
        self.logical.saturating_add(self.length)
    }

    /// True when this is the last extent of the file.
    pub fn is_last(&self) -> bool {
        self.flags & FIEMAP_EXTENT_LAST != 0
    }

    /// True when the extent's storage is shared with another file or
    /// snapshot.
    pub fn is_shared(&self) -> bool {
        self.flags & FIEMAP_EXTENT_SHARED != 0
    }

    /// True when the space is allocated but unwritten (reads as zeros).
    pub fn is_unwritten(&self) -> bool {
        self.flags & FIEMAP_EXTENT_UNWRITTEN != 0
    }

    /// False when [`Extent::physical`] must not be trusted as a device
    /// address: unknown or delayed location, encoded/encrypted data, or data
    /// not block aligned (inline or tail-packed).
    pub fn physical_is_reliable(&self) -> bool {
        self.flags & PHYSICAL_UNRELIABLE == 0
    }
}

/// `struct fiemap` without its flexible array member.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// `struct fiemap` followed by room for `FIEMAP_BATCH` extents, laid out
/// exactly as the kernel expects (`fm_extents` starts right after the
/// 32-byte header, 8-byte aligned).
#[repr(C)]
struct FiemapBuf {
    header: FiemapHeader,
    extents: [FiemapExtent; FIEMAP_BATCH],
}

const _: () = {
    assert!(std::mem::size_of::<FiemapHeader>() == 32);
    assert!(std::mem::size_of::<FiemapExtent>() == 56);
    assert!(std::mem::offset_of!(FiemapBuf, extents) == 32);
    assert!(std::mem::align_of::<FiemapBuf>() == 8);
};

/// Iterator over the extents of a file, see [`fiemap`].
///
/// Memory use is bounded (one buffer of 256 extents) whatever the file size.
/// After the first error the iterator yields `None`.
pub struct FiemapIter {
    /// A `dup` of the caller's descriptor, or the error from duplicating it
    /// (yielded once by `next`).
    file: Option<io::Result<File>>,
    buf: Box<FiemapBuf>,
    /// Index of the next extent of `buf` to yield.
    pos: usize,
    /// Number of valid extents in `buf`.
    len: usize,
    /// Logical offset where the next batch starts.
    next_start: u64,
    first_call: bool,
    /// No batch left to fetch (an extent had `LAST`, or the end was reached).
    exhausted: bool,
}

/// Iterates over the extents of `file` with `FS_IOC_FIEMAP`.
///
/// The descriptor is duplicated (`try_clone`), so the iterator borrows
/// nothing; if duplicating fails the error is the iterator's first item.
/// Extents are fetched in batches of 256: the first call uses
/// `FIEMAP_FLAG_SYNC` (flush delayed allocations so physical addresses are
/// known), later calls continue from the end of the last extent returned,
/// until an extent carries `FIEMAP_EXTENT_LAST` or a call maps no extent.
///
/// Holes are not reported: they are the gaps between extents. The file
/// position is not used.
pub fn fiemap(file: &File) -> FiemapIter {
    FiemapIter {
        file: Some(file.try_clone()),
        buf: Box::new(FiemapBuf {
            header: FiemapHeader::default(),
            extents: [FiemapExtent::default(); FIEMAP_BATCH],
        }),
        pos: 0,
        len: 0,
        next_start: 0,
        first_call: true,
        exhausted: false,
    }
}

impl FiemapIter {
    /// Fetches the next batch into `buf`. Returns the number of extents.
    fn fetch(&mut self, file: &File) -> io::Result<usize> {
        self.buf.header = FiemapHeader {
            fm_start: self.next_start,
            fm_length: u64::MAX - self.next_start,
            fm_flags: if self.first_call { FIEMAP_FLAG_SYNC } else { 0 },
            fm_mapped_extents: 0,
            fm_extent_count: FIEMAP_BATCH as u32,
            fm_reserved: 0,
        };
        self.first_call = false;
        let ptr: *mut FiemapBuf = &mut *self.buf;
        // SAFETY: the fd is valid (owned by `file`). `ptr` points to a live,
        // exclusively borrowed, 8-byte aligned `#[repr(C)] FiemapBuf`: a
        // `struct fiemap` header followed by `fm_extent_count` (=
        // FIEMAP_BATCH) `struct fiemap_extent`s, so the kernel writes at most
        // that many extents inside the buffer.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, ptr) };
        os_result(rc)?;
        Ok((self.buf.header.fm_mapped_extents as usize).min(FIEMAP_BATCH))
    }

    /// Replaces the (consumed) buffer with the next batch and decides
    /// whether another batch will be needed after it.
    fn refill(&mut self) -> io::Result<()> {
        self.pos = 0;
        self.len = 0;
        let file = match self.file.take() {
            Some(Ok(file)) => file,
            Some(Err(err)) => return Err(err),
            None => return Ok(()),
        };
        let fetched = self.fetch(&file);
        self.file = Some(Ok(file));
        self.len = fetched?;
        let mapped = &self.buf.extents[..self.len];
        let Some(last) = mapped.last() else {
            self.exhausted = true;
            return Ok(());
        };
        let end = last.fe_logical.saturating_add(last.fe_length);
        // Stop after an extent flagged LAST, and never loop forever if the
        // filesystem reports no forward progress.
        if mapped.iter().any(|e| e.fe_flags & FIEMAP_EXTENT_LAST != 0)
            || end <= self.next_start
            || end == u64::MAX
        {
            self.exhausted = true;
        }
        self.next_start = end;
        Ok(())
    }
}

impl Iterator for FiemapIter {
    type Item = io::Result<Extent>;

    fn next(&mut self) -> Option<io::Result<Extent>> {
        if self.pos == self.len {
            if self.exhausted {
                return None;
            }
            if let Err(err) = self.refill() {
                self.exhausted = true;
                return Some(Err(err));
            }
            if self.len == 0 {
                return None;
            }
        }
        let raw = &self.buf.extents[self.pos];
        self.pos += 1;
        Some(Ok(Extent {
            logical: raw.fe_logical,
            physical: raw.fe_physical,
            length: raw.fe_length,
            flags: raw.fe_flags,
        }))
    }
}

impl FusedIterator for FiemapIter {}

impl std::fmt::Debug for FiemapIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FiemapIter")
            .field("next_start", &self.next_start)
            .field("buffered", &(self.len - self.pos))
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}

fn lseek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset = to_off_t(offset, "offset")?;
    // SAFETY: the fd is valid for the duration of the call; lseek takes only
    // integers and does not touch user memory.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    os_result(rc)?;
    Ok(rc as u64)
}

/// Returns the start of the first data region at or after `offset`
/// (`lseek(SEEK_DATA)`), or `None` if there is no data from `offset` to the
/// end of the file (`ENXIO`).
///
/// This moves the file position of `file` (shared with its clones); the
/// crate only does positional I/O (`read_at` / `write_at`) on such files, so
/// that does not matter. Filesystems without hole tracking report all of the
/// file as data.
pub fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    match lseek(file, offset, libc::SEEK_DATA) {
        Ok(pos) => Ok(Some(pos)),
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Returns the start of the first hole at or after `offset`
/// (`lseek(SEEK_HOLE)`); the end of the file counts as a hole, so this is at
/// most the file size. Fails with `ENXIO` if `offset` is at or past the end
/// of the file.
///
/// Like [`next_data`], this moves the file position, which does not matter
/// for positional I/O.
pub fn next_hole(file: &File, offset: u64) -> io::Result<u64> {
    lseek(file, offset, libc::SEEK_HOLE)
}

/// Returns the size in bytes of a block device (`BLKGETSIZE64`).
///
/// Fails with `ENOTTY` on anything that is not a block device.
pub fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: the fd is valid; BLKGETSIZE64 writes one u64 (64-bit size_t)
    // through the pointer, which points to a live, aligned local u64.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    os_result(rc)?;
    Ok(size)
}

/// Deallocates `[offset, offset + len)` of a regular file, keeping its size:
/// the range then reads as zeros (`fallocate(FALLOC_FL_PUNCH_HOLE |
/// FALLOC_FL_KEEP_SIZE)`). Partial blocks at the edges are zeroed. `len == 0`
/// is a no-op. Fails with `EOPNOTSUPP` on filesystems without hole punching.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off = to_off_t(offset, "offset")?;
    let length = to_off_t(len, "length")?;
    // SAFETY: the fd is valid; fallocate takes only integers and does not
    // touch user memory.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            length,
        )
    };
    os_result(rc)?;
    Ok(())
}

/// Asks the kernel to start reading `[offset, offset + len)` of `file` into the page
/// cache (`posix_fadvise(POSIX_FADV_WILLNEED)`), so scattered reads that follow find
/// their data in flight together instead of waiting for the disk one at a time.
/// Only a hint: errors mean nothing was prefetched.
pub fn prefetch(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off = to_off_t(offset, "offset")?;
    let length = to_off_t(len, "length")?;
    // SAFETY: the fd is valid; posix_fadvise takes only integers and does not touch
    // user memory.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), off, length, libc::POSIX_FADV_WILLNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Starts writeback of every dirty page of `file` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)` over the whole file). Long writers
/// call it as they go so the disk works while they compute, and the final fsync
/// has little left to do. It gives no durability by itself.
pub fn start_writeback(file: &File) -> io::Result<()> {
    // SAFETY: the fd is valid; sync_file_range takes only integers and does not
    // touch user memory.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    os_result(rc)?;
    Ok(())
}

/// Zeroes `[offset, offset + len)` of a block device (`BLKZEROOUT`), letting
/// the device use write-zeroes/discard offload when it can. Both values must
/// be multiples of 512 and the range inside the device (else `EINVAL`).
/// `len == 0` is a no-op. Fails with `ENOTTY` on anything that is not a
/// block device; the device must be open for writing.
pub fn zero_device_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let range: [u64; 2] = [offset, len];
    // SAFETY: the fd is valid; BLKZEROOUT reads a `[u64; 2]` (start, length)
    // through the pointer, which points to a live, aligned local array.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
    os_result(rc)?;
    Ok(())
}

/// Size in bytes of a regular file (metadata length) or of a block device
/// ([`block_device_size`]). Fails with `InvalidInput` for other file types.
pub fn device_or_file_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    let file_type = meta.file_type();
    if file_type.is_block_device() {
        block_device_size(file)
    } else if file_type.is_file() {
        Ok(meta.len())
    } else {
        let kind = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_char_device() {
            "a character device"
        } else {
            "neither a regular file nor a block device"
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}; expected an image file or a block device"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_accepts_files_and_refuses_pipes() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        prefetch(&f, 4096, 65536).unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        let r: std::os::fd::OwnedFd = r.into();
        assert!(
            prefetch(&File::from(r), 0, 4096).is_err(),
            "ESPIPE on a pipe"
        );
    }

    #[test]
    fn start_writeback_accepts_files_and_refuses_pipes() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &[1u8; 1 << 16]).unwrap();
        start_writeback(&f).unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        let r: std::os::fd::OwnedFd = r.into();
        assert!(start_writeback(&File::from(r)).is_err(), "ESPIPE on a pipe");
    }
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    fn rw_file(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    /// `f_type` of the filesystem holding `file`.
    fn fs_magic(file: &File) -> i64 {
        // SAFETY: an all-zero `statfs` is a valid value of this plain C
        // struct of integers.
        let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is valid and `buf` is a live, writable `statfs`.
        let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut buf) };
        assert_eq!(rc, 0, "fstatfs: {}", io::Error::last_os_error());
        buf.f_type as i64
    }

    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    const TMPFS_MAGIC: i64 = 0x0102_1994;

    /// A 16 MiB sparse file with 64 KiB of data at 1 MiB and at 8 MiB.
    fn sparse_file(dir: &Path) -> File {
        let file = rw_file(&dir.join("sparse"));
        file.set_len(16 * MIB).unwrap();
        file.write_all_at(&[0xA5; 64 * KIB as usize], MIB).unwrap();
        file.write_all_at(&[0x5A; 64 * KIB as usize], 8 * MIB)
            .unwrap();
        file
    }

    fn collect_extents(file: &File) -> io::Result<Vec<Extent>> {
        // Bounded, so a non-terminating iterator fails the test instead of
        // hanging it.
        let extents: Vec<Extent> = fiemap(file).take(100_000).collect::<io::Result<_>>()?;
        assert!(extents.len() < 100_000, "fiemap iterator did not terminate");
        Ok(extents)
    }

    /// The extents of `file`, or `None` (after a `SKIPPED` line) where the
    /// filesystem has no FIEMAP.
    fn extents_or_skip(file: &File) -> Option<Vec<Extent>> {
        match collect_extents(file) {
            Ok(extents) => Some(extents),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => {
                eprintln!("SKIPPED: FIEMAP not supported on this filesystem: {err}");
                None
            }
            Err(err) => panic!("fiemap: {err}"),
        }
    }

    #[test]
    fn reflink_fails_or_clones() {
        let dir = tempfile::tempdir().unwrap();
        let src = rw_file(&dir.path().join("src"));
        src.write_all_at(&[7u8; 8192], 0).unwrap();
        let dst = rw_file(&dir.path().join("dst"));
        let magic = fs_magic(&src);
        match reflink(&src, &dst) {
            Ok(()) => {
                let mut buf = vec![0u8; 8192];
                dst.read_exact_at(&mut buf, 0).unwrap();
                assert_eq!(buf, vec![7u8; 8192]);
                assert_eq!(dst.metadata().unwrap().len(), 8192);
            }
            Err(err) => {
                if magic == EXT4_SUPER_MAGIC || magic == TMPFS_MAGIC {
                    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
                } else {
                    assert!(
                        matches!(
                            err.raw_os_error(),
                            Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
                        ),
                        "unexpected reflink error {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn reflink_rejects_wrong_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let read_only = File::open(&path).unwrap();
        // dst opened read-only: EBADF whatever the filesystem.
        let err = reflink(&read_only, &read_only).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    }

    #[test]
    fn fiemap_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path());
        let Some(extents) = extents_or_skip(&file) else {
            return;
        };
        let covers = |off: u64| {
            extents
                .iter()
                .any(|e| e.logical <= off && off < e.logical_end())
        };
        for off in [MIB, MIB + 64 * KIB - 1, 8 * MIB, 8 * MIB + 64 * KIB - 1] {
            assert!(covers(off), "offset {off} not mapped: {extents:?}");
        }
        for off in [0, 4 * MIB, 12 * MIB] {
            assert!(!covers(off), "hole at {off} mapped: {extents:?}");
        }
        assert!(extents.last().unwrap().is_last(), "{extents:?}");
        // FIEMAP_FLAG_SYNC resolved delayed allocation.
        assert!(
            extents.iter().all(|e| e.physical_is_reliable()),
            "{extents:?}"
        );
        assert!(extents.iter().all(|e| !e.is_shared()), "{extents:?}");
    }

    #[test]
    fn fiemap_many_extents_spans_batches() {
        let dir = tempfile::tempdir().unwrap();
        let file = rw_file(&dir.path().join("many"));
        // 700 separate 4 KiB data blocks (more than two batches of 256).
        let pieces = 700u64;
        for i in 0..pieces {
            file.write_all_at(&[1u8; 4096], i * 8 * KIB).unwrap();
        }
        let Some(extents) = extents_or_skip(&file) else {
            return;
        };
        assert!(extents.len() as u64 >= pieces, "{} extents", extents.len());
        for pair in extents.windows(2) {
            assert!(pair[0].logical_end() <= pair[1].logical, "{pair:?}");
        }
        let total: u64 = extents.iter().map(|e| e.length).sum();
        assert_eq!(total, pieces * 4096);
        assert!(extents.last().unwrap().is_last());
        assert_eq!(extents.iter().filter(|e| e.is_last()).count(), 1);
    }

    #[test]
    fn fiemap_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = rw_file(&dir.path().join("empty"));
        if let Some(extents) = extents_or_skip(&file) {
            assert!(extents.is_empty(), "{extents:?}");
        }
    }

    #[test]
    fn fiemap_iterator_is_fused_after_error() {
        // A directory fd: FIEMAP fails (or maps nothing); either way the
        // iterator must stop.
        let dir = tempfile::tempdir().unwrap();
        let file = File::open(dir.path()).unwrap();
        let mut iter = fiemap(&file);
        let mut count = 0;
        while let Some(item) = iter.next() {
            count += 1;
            assert!(count < 100_000);
            if item.is_err() {
                assert!(iter.next().is_none());
                break;
            }
        }
        assert!(iter.next().is_none());
    }

    #[test]
    fn extent_flag_helpers() {
        let e = |flags| Extent {
            logical: 0,
            physical: 0,
            length: 4096,
            flags,
        };
        assert!(e(FIEMAP_EXTENT_LAST).is_last());
        assert!(!e(0).is_last());
        assert!(e(FIEMAP_EXTENT_SHARED).is_shared());
        assert!(e(FIEMAP_EXTENT_UNWRITTEN).is_unwritten());
        assert!(e(0).physical_is_reliable());
        assert!(
            e(FIEMAP_EXTENT_LAST | FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_UNWRITTEN)
                .physical_is_reliable()
        );
        for flag in [
            FIEMAP_EXTENT_UNKNOWN,
            FIEMAP_EXTENT_DELALLOC,
            FIEMAP_EXTENT_ENCODED,
            FIEMAP_EXTENT_DATA_ENCRYPTED,
            FIEMAP_EXTENT_NOT_ALIGNED,
            FIEMAP_EXTENT_DATA_INLINE,
            FIEMAP_EXTENT_DATA_TAIL,
        ] {
            assert!(!e(flag).physical_is_reliable(), "{flag:#x}");
        }
    }

    #[test]
    fn seek_data_and_hole() {
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path());
        if next_data(&file, 0).unwrap() == Some(0) {
            eprintln!("SKIPPED: filesystem does not report holes to SEEK_DATA");
            return;
        }
        assert_eq!(next_data(&file, 0).unwrap(), Some(MIB));
        assert_eq!(next_data(&file, MIB + 4096).unwrap(), Some(MIB + 4096));
        assert_eq!(next_hole(&file, MIB).unwrap(), MIB + 64 * KIB);
        assert_eq!(next_data(&file, MIB + 64 * KIB).unwrap(), Some(8 * MIB));
        assert_eq!(next_hole(&file, 8 * MIB).unwrap(), 8 * MIB + 64 * KIB);
        assert_eq!(next_hole(&file, 0).unwrap(), 0);
        // Only a hole up to the end of the file.
        assert_eq!(next_data(&file, 8 * MIB + 64 * KIB).unwrap(), None);
        assert_eq!(next_data(&file, 100 * MIB).unwrap(), None);
        // Inside a hole, the hole starts right there; at or past the end of
        // the file is ENXIO.
        assert_eq!(next_hole(&file, 15 * MIB).unwrap(), 15 * MIB);
        let err = next_hole(&file, 16 * MIB).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "{err}");
        let err = next_data(&file, u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        // The end of a file counts as a hole.
        let dense = rw_file(&dir.path().join("dense"));
        dense.write_all_at(&[1u8; 10_000], 0).unwrap();
        assert_eq!(next_data(&dense, 0).unwrap(), Some(0));
        assert_eq!(next_hole(&dense, 0).unwrap(), 10_000);
    }

    #[test]
    fn punch_hole_reads_back_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let file = rw_file(&dir.path().join("punch"));
        file.write_all_at(&vec![0xAB; MIB as usize], 0).unwrap();
        let (start, len) = (256 * KIB, 128 * KIB);
        match punch_hole(&file, start, len) {
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                eprintln!("SKIPPED: hole punching not supported here: {err}");
                return;
            }
            res => res.unwrap(),
        }
        punch_hole(&file, 0, 0).unwrap();
        assert_eq!(file.metadata().unwrap().len(), MIB, "size kept");
        let mut buf = vec![0u8; MIB as usize];
        file.read_exact_at(&mut buf, 0).unwrap();
        let (start, end) = (start as usize, (start + len) as usize);
        assert!(buf[..start].iter().all(|&b| b == 0xAB));
        assert!(buf[start..end].iter().all(|&b| b == 0));
        assert!(buf[end..].iter().all(|&b| b == 0xAB));
        if next_data(&file, 0).unwrap() != Some(0) || next_hole(&file, 0).unwrap() != MIB {
            assert_eq!(next_hole(&file, 0).unwrap(), start as u64);
        }
    }

    #[test]
    fn regular_file_is_not_a_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = rw_file(&dir.path().join("plain"));
        file.set_len(12345).unwrap();
        assert_eq!(device_or_file_size(&file).unwrap(), 12345);
        let err = block_device_size(&file).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
        let err = zero_device_range(&file, 0, 4096).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
        let dir_fd = File::open(dir.path()).unwrap();
        let err = device_or_file_size(&dir_fd).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// A loop device backed by a file; detached on drop.
    struct LoopDevice {
        device: PathBuf,
    }

    impl LoopDevice {
        fn attach(backing: &Path) -> Option<LoopDevice> {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            if !root {
                eprintln!("SKIPPED: loop device test needs root");
                return None;
            }
            let out = match Command::new("losetup")
                .args(["-f", "--show"])
                .arg(backing)
                .output()
            {
                Ok(out) => out,
                Err(err) => {
                    eprintln!("SKIPPED: loop device test needs losetup: {err}");
                    return None;
                }
            };
            assert!(
                out.status.success(),
                "losetup -f --show failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            Some(LoopDevice {
                device: device.into(),
            })
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            let status = Command::new("losetup").arg("-d").arg(&self.device).status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!(
                    "warning: losetup -d {} failed: {status:?}",
                    self.device.display()
                );
            }
        }
    }

    #[test]
    fn loop_device_size_and_zeroout() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing.img");
        rw_file(&backing).set_len(64 * MIB).unwrap();
        let Some(lo) = LoopDevice::attach(&backing) else {
            return;
        };
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
}
