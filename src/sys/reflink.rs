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
    use crate::sys::test_files::rw_file;
    use std::os::unix::fs::FileExt;

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
}
