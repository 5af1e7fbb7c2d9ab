//! Holes of sparse files: finding them (`lseek` with `SEEK_DATA` /
//! `SEEK_HOLE`) and making them (`fallocate` punch hole).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

use super::{os_result, to_off_t};

/// `lseek(2)` with `whence`; the one FFI call behind [`next_data`] and
/// [`next_hole`], which give meaning to its result and errors.
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
/// file as data, and so does a block device (its `lseek` knows no `SEEK_DATA`).
pub fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    match lseek(file, offset, libc::SEEK_DATA) {
        Ok(pos) => Ok(Some(pos)),
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(err) => match device_size(file, err)? {
            size if offset < size => Ok(Some(offset)),
            _ => Ok(None),
        },
    }
}

/// The size of `file` when it is a block device, which has no holes to tell of;
/// `err` (`lseek`'s) otherwise.
fn device_size(file: &File, err: io::Error) -> io::Result<u64> {
    let device =
        err.raw_os_error() == Some(libc::EINVAL) && file.metadata()?.file_type().is_block_device();
    if device {
        super::device_or_file_size(file)
    } else {
        Err(err)
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
    match lseek(file, offset, libc::SEEK_HOLE) {
        Ok(pos) => Ok(pos),
        Err(err) => match device_size(file, err)? {
            size if offset < size => Ok(size),
            _ => Err(io::Error::from_raw_os_error(libc::ENXIO)),
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::test_files::{rw_file, sparse_file, KIB, MIB};
    use std::os::unix::fs::FileExt;

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
        // The range is deallocated, not only zeroed: SEEK_HOLE finds it, which is
        // what makes a discard reach the journal as a hole.
        assert_eq!(next_hole(&file, 0).unwrap(), start as u64);
        assert_eq!(next_data(&file, start as u64).unwrap(), Some(end as u64));
    }
}
