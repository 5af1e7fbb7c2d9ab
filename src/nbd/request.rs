//! Transmission requests: the 28-byte header and its check against what was
//! negotiated. Pure; `transmission.rs` reads the bytes and runs the commands.
use super::wire::*;

pub const REQUEST_LEN: usize = 28;

/// A request header as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// Decodes a request header; `Err` holds a wrong magic, after which the stream
/// cannot be trusted to be at a request boundary (the connection is closed).
pub fn decode_request(b: &[u8; REQUEST_LEN]) -> Result<Request, u32> {
    let magic = u32::from_be_bytes(b[0..4].try_into().unwrap());
    if magic != REQUEST_MAGIC {
        return Err(magic);
    }
    Ok(Request {
        flags: u16::from_be_bytes(b[4..6].try_into().unwrap()),
        command: u16::from_be_bytes(b[6..8].try_into().unwrap()),
        cookie: u64::from_be_bytes(b[8..16].try_into().unwrap()),
        offset: u64::from_be_bytes(b[16..24].try_into().unwrap()),
        length: u32::from_be_bytes(b[24..28].try_into().unwrap()),
    })
}

/// The header's bytes, for the tests.
#[cfg(test)]
pub fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&r.flags.to_be_bytes());
    b[6..8].copy_from_slice(&r.command.to_be_bytes());
    b[8..16].copy_from_slice(&r.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&r.offset.to_be_bytes());
    b[24..28].copy_from_slice(&r.length.to_be_bytes());
    b
}

/// How zeros are to be written (`CMD_WRITE_ZEROES` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroFlags {
    /// `NO_HOLE`: the range must stay allocated.
    pub no_hole: bool,
    /// `FAST_ZERO`: fail with `ENOTSUP` rather than write zeros slowly.
    pub fast: bool,
}

/// A request that passed every check, in the terms the export understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        length: u32,
    },
    Write {
        offset: u64,
        length: u32,
        fua: bool,
    },
    Disconnect,
    Flush,
    Trim {
        offset: u64,
        length: u32,
        fua: bool,
    },
    Cache {
        offset: u64,
        length: u32,
    },
    WriteZeroes {
        offset: u64,
        length: u32,
        fua: bool,
        zero: ZeroFlags,
    },
    BlockStatus {
        offset: u64,
        length: u32,
        one: bool,
    },
}

/// What a session's requests are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub size: u64,
    /// The transmission flags sent to the client: a command it was not offered is
    /// refused.
    pub flags: u16,
    /// Largest READ or WRITE payload.
    pub max_payload: u32,
    pub structured: bool,
    /// A metadata context was negotiated (`base:allocation`), so BLOCK_STATUS may be
    /// sent.
    pub block_status: bool,
}

/// Checks a request; `Err` holds the spec's error code for the reply. A WRITE's
/// payload follows its header whatever the answer: the caller reads (or skips) it
/// before replying.
pub fn check(r: &Request, l: &Limits) -> Result<Command, u32> {
    // FUA is accepted on every command once offered (the spec says so; it means
    // something only on the ones that write).
    let known = CMD_FLAG_FUA
        | match r.command {
            CMD_READ => CMD_FLAG_DF,
            CMD_WRITE_ZEROES => CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
            CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
            CMD_WRITE | CMD_TRIM | CMD_DISC | CMD_FLUSH | CMD_CACHE => 0,
            _ => return Err(EINVAL),
        };
    if r.flags & !known != 0 {
        return Err(EINVAL);
    }
    let offered = |flag: u16| l.flags & flag != 0;
    let fua = r.flags & CMD_FLAG_FUA != 0;
    if fua && !offered(FLAG_SEND_FUA) {
        return Err(EINVAL);
    }
    if r.flags & CMD_FLAG_DF != 0 && !(l.structured && offered(FLAG_SEND_DF)) {
        return Err(EINVAL);
    }
    let writes = matches!(r.command, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    let ranged = !matches!(r.command, CMD_DISC | CMD_FLUSH);
    if ranged {
        // A zero length is useful to no command that has a range, and the spec lets
        // a server refuse it.
        if r.length == 0 {
            return Err(EINVAL);
        }
        let end = r.offset.checked_add(r.length as u64);
        if end.is_none_or(|e| e > l.size) {
            // Writing past the end is out of space; any other request out of range
            // (TRIM included) is invalid (proto.md, "Error values").
            let out_of_space = matches!(r.command, CMD_WRITE | CMD_WRITE_ZEROES);
            return Err(if out_of_space { ENOSPC } else { EINVAL });
        }
    }
    if writes && offered(FLAG_READ_ONLY) {
        return Err(EPERM);
    }
    let (offset, length) = (r.offset, r.length);
    Ok(match r.command {
        // A read too large for one reply is EOVERFLOW where structured replies let
        // the spec name it so; elsewhere (and for writes) the spec names no code and
        // EINVAL is what qemu answers.
        CMD_READ if length > l.max_payload && l.structured => return Err(EOVERFLOW),
        CMD_READ | CMD_WRITE if length > l.max_payload => return Err(EINVAL),
        CMD_READ => Command::Read { offset, length },
        CMD_WRITE => Command::Write {
            offset,
            length,
            fua,
        },
        CMD_DISC => Command::Disconnect,
        CMD_FLUSH if !offered(FLAG_SEND_FLUSH) || offset != 0 || length != 0 => return Err(EINVAL),
        CMD_FLUSH => Command::Flush,
        CMD_TRIM if !offered(FLAG_SEND_TRIM) => return Err(EINVAL),
        CMD_TRIM => Command::Trim {
            offset,
            length,
            fua,
        },
        CMD_CACHE if !offered(FLAG_SEND_CACHE) => return Err(EINVAL),
        CMD_CACHE => Command::Cache { offset, length },
        CMD_WRITE_ZEROES if !offered(FLAG_SEND_WRITE_ZEROES) => return Err(EINVAL),
        CMD_WRITE_ZEROES if r.flags & CMD_FLAG_FAST_ZERO != 0 && !offered(FLAG_SEND_FAST_ZERO) => {
            return Err(EINVAL)
        }
        CMD_WRITE_ZEROES => Command::WriteZeroes {
            offset,
            length,
            fua,
            zero: ZeroFlags {
                no_hole: r.flags & CMD_FLAG_NO_HOLE != 0,
                fast: r.flags & CMD_FLAG_FAST_ZERO != 0,
            },
        },
        CMD_BLOCK_STATUS if !l.block_status => return Err(EINVAL),
        CMD_BLOCK_STATUS => Command::BlockStatus {
            offset,
            length,
            one: r.flags & CMD_FLAG_REQ_ONE != 0,
        },
        _ => unreachable!("unknown commands were refused above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u16 = FLAG_HAS_FLAGS
        | FLAG_SEND_FLUSH
        | FLAG_SEND_FUA
        | FLAG_SEND_TRIM
        | FLAG_SEND_WRITE_ZEROES
        | FLAG_SEND_DF
        | FLAG_SEND_CACHE
        | FLAG_SEND_FAST_ZERO;

    fn limits() -> Limits {
        Limits {
            size: 1 << 20,
            flags: ALL,
            max_payload: 1 << 16,
            structured: true,
            block_status: true,
        }
    }

    fn req(command: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            command,
            cookie: 7,
            offset,
            length,
        }
    }

    #[test]
    fn header_round_trips_and_is_the_spec_layout() {
        let r = req(CMD_WRITE, CMD_FLAG_FUA, 0x1000, 0x200);
        let b = encode_request(&r);
        assert_eq!(&b[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(&b[4..8], &[0, 1, 0, 1]);
        assert_eq!(&b[8..16], &[0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(&b[24..28], &[0, 0, 2, 0]);
        assert_eq!(decode_request(&b), Ok(r));
        let mut bad = b;
        bad[0] = 0;
        assert_eq!(decode_request(&bad), Err(0x0060_9513));
    }

    #[test]
    fn valid_requests() {
        let l = limits();
        assert_eq!(
            check(&req(CMD_READ, 0, 0, 4096), &l),
            Ok(Command::Read {
                offset: 0,
                length: 4096
            })
        );
        assert_eq!(
            check(&req(CMD_WRITE, CMD_FLAG_FUA, (1 << 20) - 512, 512), &l),
            Ok(Command::Write {
                offset: (1 << 20) - 512,
                length: 512,
                fua: true
            })
        );
        assert_eq!(check(&req(CMD_FLUSH, 0, 0, 0), &l), Ok(Command::Flush));
        assert_eq!(check(&req(CMD_DISC, 0, 0, 0), &l), Ok(Command::Disconnect));
        let z = check(
            &req(
                CMD_WRITE_ZEROES,
                CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
                0,
                1 << 20,
            ),
            &l,
        );
        assert_eq!(
            z,
            Ok(Command::WriteZeroes {
                offset: 0,
                length: 1 << 20,
                fua: false,
                zero: ZeroFlags {
                    no_hole: true,
                    fast: true
                }
            })
        );
        // Zeroing, trimming and block status are not payload-limited.
        assert!(check(&req(CMD_TRIM, 0, 0, 1 << 20), &l).is_ok());
        assert!(check(&req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 1 << 20), &l).is_ok());
    }

    #[test]
    fn refusals_use_the_spec_codes() {
        let l = limits();
        // Out of range: reads are invalid, writes are out of space.
        assert_eq!(check(&req(CMD_READ, 0, 1 << 20, 1), &l), Err(EINVAL));
        assert_eq!(check(&req(CMD_WRITE, 0, (1 << 20) - 1, 2), &l), Err(ENOSPC));
        assert_eq!(
            check(&req(CMD_WRITE_ZEROES, 0, u64::MAX, 2), &l),
            Err(ENOSPC)
        );
        assert_eq!(check(&req(CMD_READ, 0, u64::MAX - 1, 4), &l), Err(EINVAL));
        assert_eq!(check(&req(CMD_TRIM, 0, (1 << 20) - 1, 2), &l), Err(EINVAL));
        // Oversized payloads.
        assert_eq!(
            check(&req(CMD_READ, 0, 0, (1 << 16) + 1), &l),
            Err(EOVERFLOW)
        );
        assert_eq!(check(&req(CMD_WRITE, 0, 0, (1 << 16) + 1), &l), Err(EINVAL));
        // FLUSH's offset and length are reserved.
        assert_eq!(check(&req(CMD_FLUSH, 0, 0, 1), &l), Err(EINVAL));
        // FUA is accepted on anything once offered.
        assert!(check(&req(CMD_READ, CMD_FLAG_FUA, 0, 1), &l).is_ok());
        // Unknown command, unknown flag, flag on the wrong command.
        assert_eq!(check(&req(9, 0, 0, 1), &l), Err(EINVAL));
        assert_eq!(check(&req(CMD_READ, 1 << 9, 0, 1), &l), Err(EINVAL));
        assert_eq!(check(&req(CMD_WRITE, CMD_FLAG_DF, 0, 1), &l), Err(EINVAL));
        assert_eq!(check(&req(CMD_READ, 0, 0, 0), &l), Err(EINVAL));
        // Not offered: read-only, no block status, DF without structured replies.
        let ro = Limits {
            flags: ALL | FLAG_READ_ONLY,
            ..l
        };
        assert_eq!(check(&req(CMD_WRITE, 0, 0, 1), &ro), Err(EPERM));
        assert_eq!(check(&req(CMD_WRITE_ZEROES, 0, 0, 1), &ro), Err(EPERM));
        let plain = Limits {
            structured: false,
            block_status: false,
            flags: FLAG_HAS_FLAGS,
            ..l
        };
        assert_eq!(check(&req(CMD_BLOCK_STATUS, 0, 0, 1), &plain), Err(EINVAL));
        assert_eq!(
            check(&req(CMD_READ, CMD_FLAG_DF, 0, 1), &plain),
            Err(EINVAL)
        );
        assert_eq!(check(&req(CMD_FLUSH, 0, 0, 0), &plain), Err(EINVAL));
        assert_eq!(
            check(&req(CMD_WRITE, CMD_FLAG_FUA, 0, 1), &plain),
            Err(EINVAL)
        );
        assert_eq!(check(&req(CMD_CACHE, 0, 0, 1), &plain), Err(EINVAL));
        assert_eq!(
            check(&req(CMD_READ, 0, 0, (1 << 16) + 1), &plain),
            Err(EINVAL)
        );
    }
}
