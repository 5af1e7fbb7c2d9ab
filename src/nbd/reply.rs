//! Transmission replies: simple replies and structured reply chunks. Pure encode.
use super::wire::*;

/// A simple reply: magic, error, cookie (the data of a successful READ follows).
pub fn simple(cookie: u64, error: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk's header: magic, flags, type, cookie, payload length.
pub fn chunk(flags: u16, kind: u16, cookie: u64, length: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
    b
}

/// The final `NONE` chunk: success of a command with nothing to say.
pub fn done(cookie: u64) -> [u8; 20] {
    chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0)
}

/// The header of a final `OFFSET_DATA` chunk (the chunk header and the offset);
/// `data_len` bytes of data follow it.
pub fn offset_data(cookie: u64, offset: u64, data_len: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&chunk(
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        8 + data_len,
    ));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b
}

/// Longest error message sent: qemu drops the connection on a chunk other than
/// data longer than 1000 bytes.
const MAX_MESSAGE: usize = 512;

/// A final `ERROR` chunk with a message for the client's log (cut at `MAX_MESSAGE`
/// bytes, on a character boundary).
pub fn error(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let mut cut = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let message = &message.as_bytes()[..cut];
    let mut b = chunk(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        6 + message.len() as u32,
    )
    .to_vec();
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(message.len() as u16).to_be_bytes());
    b.extend_from_slice(message);
    b
}

/// A final `BLOCK_STATUS` chunk: the context id and `(length, state)` descriptors.
pub fn block_status(cookie: u64, context: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let len = 4 + 8 * extents.len() as u32;
    let mut b = chunk(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, len).to_vec();
    b.extend_from_slice(&context.to_be_bytes());
    for (length, state) in extents {
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(&state.to_be_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_reply_layout() {
        assert_eq!(
            simple(0x0102, EIO),
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 1, 2]
        );
    }

    #[test]
    fn chunk_layouts() {
        assert_eq!(
            done(9),
            [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]
        );
        let d = offset_data(1, 0x200, 512);
        assert_eq!(&d[4..8], &[0, 1, 0, 1]);
        assert_eq!(&d[16..20], &[0, 0, 2, 8]);
        assert_eq!(&d[20..28], &[0, 0, 0, 0, 0, 0, 2, 0]);
        let e = error(1, EINVAL, "no");
        assert_eq!(&e[6..8], &[0x80, 0x01]);
        assert_eq!(&e[16..20], &[0, 0, 0, 8]);
        assert_eq!(&e[20..], &[0, 0, 0, 22, 0, 2, b'n', b'o']);
        assert_eq!(error(1, EIO, &"é".repeat(400)).len(), 20 + 6 + 512);
        let s = block_status(1, 1, &[(4096, 0), (8192, STATE_HOLE | STATE_ZERO)]);
        assert_eq!(&s[6..8], &[0, 5]);
        assert_eq!(&s[16..20], &[0, 0, 0, 20]);
        assert_eq!(
            &s[20..],
            &[0, 0, 0, 1, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 0, 3]
        );
    }
}
