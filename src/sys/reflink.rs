//! `FICLONE`: copy-on-write clone of a whole file.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::os_result;

/// `FICLONE` = `_IOW(0x94, 9, int)`.
const FICLONE: libc::Ioctl = 0x4004_9409_u32 as libc::Ioctl;

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

#[cfg(test)]
mod tests {
    use super::*;

    // Whether a clone works depends on the file system: tests/sys.rs clones on an
    // XFS with reflink and fails on tmpfs and across file systems, with root.

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
}
