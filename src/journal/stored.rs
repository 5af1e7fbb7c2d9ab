//! Extent bytes as a zstd frame of raw (stored) blocks: what a Data record holds when
//! the writer has no time to compress. Any zstd decoder reads it like any other frame
//! (RFC 8878, "Raw_Block"), so the journal format is the same; writing it is a copy.

/// The largest block a frame may hold (RFC 8878, Block_Maximum_Size).
const MAX_BLOCK: usize = 128 << 10;

/// Appends to `out` a zstd frame holding `bytes` (at most 4 GiB, and not empty) in raw
/// blocks: a single-segment frame whose content size is given, no checksum.
pub fn append_frame(out: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(!bytes.is_empty() && bytes.len() <= u32::MAX as usize);
    out.reserve(9 + bytes.len() + 3 * bytes.len().div_ceil(MAX_BLOCK));
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame_Content_Size_flag 2 (a 4-byte size), Single_Segment_flag.
    out.push(0b1010_0000);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    let blocks = bytes.len().div_ceil(MAX_BLOCK);
    for (i, block) in bytes.chunks(MAX_BLOCK).enumerate() {
        // Last_Block, Block_Type 0 (raw), Block_Size.
        let header = u32::from(i + 1 == blocks) | (block.len() as u32) << 3;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_reads_stored_frames_back() {
        for len in [1, 4095, MAX_BLOCK, MAX_BLOCK + 1, 1 << 20] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + i / 7) as u8).collect();
            let mut frame = vec![7u8; 3];
            append_frame(&mut frame, &bytes);
            let back = zstd::bulk::decompress(&frame[3..], len).unwrap();
            assert!(back == bytes, "{len} bytes");
            let size = zstd::zstd_safe::get_frame_content_size(&frame[3..]);
            assert_eq!(size.ok().flatten(), Some(len as u64));
        }
    }
}
