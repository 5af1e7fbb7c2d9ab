//! Page-cache hints: read ahead before scattered reads, write back while
//! writing, so the disk works while the caller computes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::{os_result, to_off_t};

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
}
