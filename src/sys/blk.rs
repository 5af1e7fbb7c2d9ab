//! Block devices: their size (`BLKGETSIZE64`) and zeroing ranges of them
//! (`BLKZEROOUT`). The tests here cover what needs no device; the one on a
//! real (loop) block device needs root and lives in `tests/sys.rs`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

use super::os_result;

/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)` (64-bit `size_t`).
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272_u32 as libc::Ioctl;
/// `BLKZEROOUT` = `_IO(0x12, 127)`.
const BLKZEROOUT: libc::Ioctl = 0x127F as libc::Ioctl;

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
    use crate::sys::test_files::rw_file;

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
}
