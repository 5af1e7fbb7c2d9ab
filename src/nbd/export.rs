//! What the server serves: the `Export` trait, and `FileExport`, an image file or a
//! block device served as it is.
use super::request::ZeroFlags;
use super::wire::*;
use crate::sys;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

/// What an export can do beyond READ and WRITE; each becomes a transmission flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub read_only: bool,
    pub trim: bool,
    /// WRITE_ZEROES, and FAST_ZERO with it: an export that cannot zero fast answers
    /// a `fast` request with `ENOTSUP` (see `Export::zero`).
    pub zeroes: bool,
    pub cache: bool,
    /// FLUSH or FUA on any connection makes the writes completed on every
    /// connection durable, and a READ on any connection sees every completed WRITE:
    /// true when all connections share one file or device.
    pub multi_conn: bool,
}

impl Capabilities {
    /// The transmission flags that offer these capabilities. FLUSH and FUA are
    /// always offered, DF once structured replies are on (the spec forbids it
    /// before).
    pub fn flags(&self, structured: bool) -> u16 {
        let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA;
        for (on, flag) in [
            (structured, FLAG_SEND_DF),
            (self.read_only, FLAG_READ_ONLY),
            (self.trim, FLAG_SEND_TRIM),
            (self.zeroes, FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO),
            (self.cache, FLAG_SEND_CACHE),
            (self.multi_conn, FLAG_CAN_MULTI_CONN),
        ] {
            if on {
                f |= flag;
            }
        }
        f
    }
}

/// One export of a server. Calls come from many threads at once, for requests in
/// flight on one or several connections; each call blocks until it is done, and
/// the server replies only after it returns (so what a call does before it
/// returns happens before the client learns of it). The server has checked every
/// range against `size` and every request against the capabilities.
///
/// Contract, as NBD states it: a WRITE (or TRIM, or WRITE_ZEROES) that returned is
/// seen by every later READ; `flush` makes every write that returned before it was
/// called durable; a write with `fua` is durable when it returns. An error is an
/// `io::Error`, sent to the client as the spec's code (`wire_error`).
pub trait Export: Send + Sync + 'static {
    fn size(&self) -> u64;
    fn capabilities(&self) -> Capabilities;
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// `data` is handed over, so an export that keeps it (the splitter queues it for
    /// the journal) need not copy it.
    fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    /// The range may be discarded: it reads afterwards as its old bytes or zeros.
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()>;
    /// The range reads as zeros afterwards. With `zero.fast`, fail with
    /// `ErrorKind::Unsupported` (`ENOTSUP`) instead of zeroing slowly.
    fn zero(&self, offset: u64, len: u64, zero: ZeroFlags, fua: bool) -> io::Result<()>;
    /// A hint that the range will be read soon.
    fn cache(&self, offset: u64, len: u64) -> io::Result<()>;
    /// `(length, state)` runs covering at least the first byte of the range and at
    /// most the range, `state` made of `STATE_HOLE` and `STATE_ZERO`.
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>>;
    /// Whether a READ (`write: false`) or a WRITE without FUA returns at page-cache
    /// speed and never waits on anything else: the server then runs it on its own
    /// threads, sparing a hand-off to a blocking thread per request (the largest
    /// cost of a small request). Default: no.
    fn quick(&self, write: bool) -> bool {
        let _ = write;
        false
    }
}

/// The spec's error code for an I/O error: the errno values it names, where they
/// mean the same thing, and `EIO` for the rest.
pub fn wire_error(e: &io::Error) -> u32 {
    if e.kind() == io::ErrorKind::Unsupported {
        return ENOTSUP;
    }
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES | libc::EROFS) => EPERM,
        Some(libc::ENOMEM) => ENOMEM,
        Some(libc::EINVAL) => EINVAL,
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => ENOSPC,
        Some(libc::EOVERFLOW) => EOVERFLOW,
        Some(libc::EOPNOTSUPP) => ENOTSUP,
        Some(libc::ESHUTDOWN) => ESHUTDOWN,
        _ => EIO,
    }
}

/// An image file or a block device, served directly: positional reads and writes,
/// `fdatasync` for FLUSH and FUA, holes punched for TRIM and zeroes in a file,
/// `BLKZEROOUT` on a device. Every connection shares the one descriptor, so
/// `CAN_MULTI_CONN` holds.
pub struct FileExport {
    file: File,
    size: u64,
    device: bool,
    read_only: bool,
}

/// Zeros are written in pieces of this size where no faster way exists.
const ZERO_CHUNK: usize = 1 << 20;

impl FileExport {
    pub fn open(path: &Path, read_only: bool) -> io::Result<FileExport> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)?;
        let size = sys::device_or_file_size(&file)?;
        let device = file.metadata()?.file_type().is_block_device();
        Ok(FileExport {
            file,
            size,
            device,
            read_only,
        })
    }

    /// Writes `data` at `offset` (durably with `fua`): `Export::write` without
    /// taking the buffer.
    pub fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        self.sync_if(fua)
    }

    fn sync_if(&self, fua: bool) -> io::Result<()> {
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

impl Export for FileExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.read_only,
            trim: true,
            zeroes: true,
            cache: true,
            multi_conn: true,
        }
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()> {
        self.write_at(offset, &data, fua)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        // TRIM is advisory: a device keeps its bytes, a file whose file system
        // cannot punch holes keeps them too.
        if !self.device {
            match sys::punch_hole(&self.file, offset, len) {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                r => r?,
            }
        }
        self.sync_if(fua)
    }

    fn zero(&self, offset: u64, len: u64, zero: ZeroFlags, fua: bool) -> io::Result<()> {
        let fast = if self.device {
            // BLKZEROOUT wants 512-byte alignment and may itself write zeros: it is
            // never promised fast.
            if zero.fast {
                return Err(io::ErrorKind::Unsupported.into());
            }
            offset.is_multiple_of(512)
                && len.is_multiple_of(512)
                && sys::zero_device_range(&self.file, offset, len).is_ok()
        } else if zero.no_hole {
            if zero.fast {
                return Err(io::ErrorKind::Unsupported.into());
            }
            false
        } else {
            match sys::punch_hole(&self.file, offset, len) {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && !zero.fast => false,
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    return Err(io::ErrorKind::Unsupported.into())
                }
                Err(e) => return Err(e),
            }
        };
        if !fast {
            self.write_zeros(offset, len)?;
        }
        self.sync_if(fua)
    }

    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        sys::prefetch(&self.file, offset, len)
    }

    fn quick(&self, _write: bool) -> bool {
        // Buffered positional I/O: a copy into or out of the page cache.
        true
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        if self.device {
            // A device says nothing of its allocation: all of it is data.
            return Ok(vec![(len, 0)]);
        }
        let end = offset + len;
        let data_at = sys::next_data(&self.file, offset)?.unwrap_or(self.size);
        if data_at > offset {
            return Ok(vec![(data_at.min(end) - offset, STATE_HOLE | STATE_ZERO)]);
        }
        let hole_at = sys::next_hole(&self.file, offset)?;
        Ok(vec![(hole_at.min(end) - offset, 0)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(dir: &Path, size: u64) -> FileExport {
        let p = dir.join("img");
        File::create(&p).unwrap().set_len(size).unwrap();
        FileExport::open(&p, false).unwrap()
    }

    #[test]
    fn file_export_reads_writes_zeroes_and_reports_holes() {
        let dir = tempfile::tempdir().unwrap();
        let e = sparse(dir.path(), 4 << 20);
        assert_eq!(e.size(), 4 << 20);
        e.write(1 << 20, vec![0xab; 65536], true).unwrap();
        let mut buf = vec![0u8; 65536];
        e.read(1 << 20, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0xab));
        let status = e.block_status(0, 4 << 20).unwrap();
        assert_eq!(status, vec![(1 << 20, STATE_HOLE | STATE_ZERO)]);
        assert_eq!(e.block_status(1 << 20, 4096).unwrap(), vec![(4096, 0)]);
        // Zeroes that may leave a hole punch one; NO_HOLE writes them.
        e.zero(1 << 20, 4096, ZeroFlags::default(), false).unwrap();
        e.zero(
            (1 << 20) + 4096,
            4096,
            ZeroFlags {
                no_hole: true,
                fast: false,
            },
            false,
        )
        .unwrap();
        e.read(1 << 20, &mut buf).unwrap();
        assert!(buf[..8192].iter().all(|&b| b == 0));
        assert!(buf[8192..].iter().all(|&b| b == 0xab));
        let fast_no_hole = ZeroFlags {
            no_hole: true,
            fast: true,
        };
        let err = e.zero(0, 4096, fast_no_hole, false).unwrap_err();
        assert_eq!(wire_error(&err), ENOTSUP);
        e.trim(1 << 20, 65536, true).unwrap();
        e.read(1 << 20, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn error_codes_are_the_spec_values() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(wire_error(&os(libc::ENOSPC)), ENOSPC);
        assert_eq!(wire_error(&os(libc::EROFS)), EPERM);
        assert_eq!(wire_error(&os(libc::EBADF)), EIO);
        assert_eq!(wire_error(&io::ErrorKind::UnexpectedEof.into()), EIO);
    }

    #[test]
    fn capabilities_become_transmission_flags() {
        let c = Capabilities {
            trim: true,
            multi_conn: true,
            ..Default::default()
        };
        let f = c.flags(false);
        assert_eq!(f & FLAG_SEND_DF, 0);
        assert_eq!(c.flags(true) & FLAG_SEND_DF, FLAG_SEND_DF);
        assert_eq!(f & FLAG_HAS_FLAGS, FLAG_HAS_FLAGS);
        assert_eq!(f & FLAG_SEND_TRIM, FLAG_SEND_TRIM);
        assert_eq!(f & FLAG_CAN_MULTI_CONN, FLAG_CAN_MULTI_CONN);
        assert_eq!(
            f & (FLAG_READ_ONLY | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_CACHE),
            0
        );
    }
}
