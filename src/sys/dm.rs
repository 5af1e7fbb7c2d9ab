//! device-mapper ioctls on `/dev/mapper/control`: a target message (what `dmsetup
//! message` sends) and a device's table (what `dmsetup table` prints). The lvm-thin
//! driver sends the thin pool's metadata-snapshot messages and reads a new snapshot's
//! thin device id this way: under emulation every process start costs more than an
//! incremental cycle's data, and these are two ioctls where dmsetup would be four
//! processes a cycle.
//!
//! The layout is the kernel's `include/uapi/linux/dm-ioctl.h`: a 312-byte
//! `struct dm_ioctl` header, then the payload at `data_start`. These need
//! device-mapper, which the host kernel here lacks: `tests/lvm_thin.rs` runs them in
//! the VM.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::os_result;

/// `sizeof(struct dm_ioctl)`.
const HEADER: usize = 312;
/// `_IOWR(0xfd, 12, struct dm_ioctl)`.
const DM_TABLE_STATUS: libc::Ioctl = 0xC138_FD0C_u32 as libc::Ioctl;
/// `_IOWR(0xfd, 14, struct dm_ioctl)`.
const DM_TARGET_MSG: libc::Ioctl = 0xC138_FD0E_u32 as libc::Ioctl;
/// Asks DM_TABLE_STATUS for the table rather than the status.
const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
/// Set by the kernel when the payload did not fit.
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
const NAME_AT: usize = 48;
const NAME_LEN: usize = 128;
/// `sizeof(struct dm_target_spec)`: sector_start, length, status, next, target_type[16].
const TARGET_SPEC: usize = 40;

/// One ioctl on the control device with `payload` after the header, for device
/// `name`; returns the whole buffer (header and what the kernel wrote).
fn dm_ioctl(
    request: libc::Ioctl,
    name: &str,
    flags: u32,
    payload: &[u8],
    room: usize,
) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() >= NAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a device-mapper name"),
        ));
    }
    let control = File::open("/dev/mapper/control")?;
    let mut room = room.max(payload.len());
    loop {
        // u64 words: the kernel reads the header's u64 field at offset 40 in place.
        let mut words = vec![0u64; (HEADER + room).div_ceil(8)];
        let size = words.len() * 8;
        let buf = bytes_of(&mut words);
        put_u32(buf, 0, 4); // version 4.0.0: any kernel since 2.6 speaks it
        put_u32(buf, 12, size as u32); // data_size
        put_u32(buf, 16, HEADER as u32); // data_start
        put_u32(buf, 28, flags);
        buf[NAME_AT..NAME_AT + name.len()].copy_from_slice(name.as_bytes());
        buf[HEADER..HEADER + payload.len()].copy_from_slice(payload);
        // SAFETY: the fd is valid; the pointer is to a live buffer of `size` bytes,
        // which data_size tells the kernel, so it reads and writes inside it only.
        os_result(unsafe { libc::ioctl(control.as_raw_fd(), request, words.as_mut_ptr()) })?;
        let buf = bytes_of(&mut words).to_vec();
        if get_u32(&buf, 28) & DM_BUFFER_FULL_FLAG == 0 {
            return Ok(buf);
        }
        room *= 4;
    }
}

fn bytes_of(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: u64 has no padding and any byte pattern is a valid u64; the slice
    // covers exactly the words' memory and borrows them mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// Sends `message` to sector 0 of device `name`'s target (`dmsetup message NAME 0 MSG`).
pub fn target_message(name: &str, message: &str) -> io::Result<()> {
    let mut payload = vec![0u8; 8]; // sector 0
    payload.extend_from_slice(message.as_bytes());
    payload.push(0);
    dm_ioctl(DM_TARGET_MSG, name, 0, &payload, 0).map(|_| ())
}

/// The table of device `name`: per target, its type and parameters (`dmsetup table`).
pub fn table(name: &str) -> io::Result<Vec<(String, String)>> {
    let buf = dm_ioctl(DM_TABLE_STATUS, name, DM_STATUS_TABLE_FLAG, &[], 4096)?;
    let count = get_u32(&buf, 20) as usize;
    let mut at = get_u32(&buf, 16) as usize;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "device-mapper returned a malformed table",
        )
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let spec = buf.get(at..at + TARGET_SPEC).ok_or_else(bad)?;
        let next = get_u32(spec, 20) as usize;
        let text = |b: &[u8]| {
            String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or(&[])).into_owned()
        };
        let params = buf.get(at + TARGET_SPEC..).ok_or_else(bad)?;
        out.push((text(&spec[24..40]), text(params)));
        if next == 0 {
            break;
        }
        at = get_u32(&buf, 16) as usize + next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_ioctl() {
        let long = "x".repeat(NAME_LEN);
        for name in ["", long.as_str()] {
            assert_eq!(
                target_message(name, "x").unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn the_request_numbers_are_the_kernels() {
        // _IOWR(type, nr, size) = 3 << 30 | size << 16 | type << 8 | nr.
        let iowr =
            |nr: u32| ((3u32 << 30) | ((HEADER as u32) << 16) | (0xfd << 8) | nr) as libc::Ioctl;
        assert_eq!((DM_TABLE_STATUS, DM_TARGET_MSG), (iowr(12), iowr(14)));
    }
}
