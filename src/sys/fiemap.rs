//! `FS_IOC_FIEMAP`: the physical extent map of a file, read in bounded
//! batches by [`FiemapIter`].

use std::fs::File;
use std::io;
use std::iter::FusedIterator;
use std::os::fd::AsRawFd;

use super::os_result;

/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::Ioctl = 0xC020_660B_u32 as libc::Ioctl;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::test_files::{rw_file, sparse_file, KIB, MIB};
    use std::os::unix::fs::FileExt;

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

    /// FIEMAP on a file whose file system has none (`/dev/null` on devtmpfs) fails;
    /// the iterator yields that error once and then only `None`.
    #[test]
    fn fiemap_iterator_is_fused_after_error() {
        let null = File::open("/dev/null").unwrap();
        let mut iter = fiemap(&null);
        let err = iter.next().expect("an item").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
        for _ in 0..3 {
            assert!(iter.next().is_none(), "{iter:?}");
        }
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
}
