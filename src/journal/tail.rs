//! Telling an interrupted append from damage. After a crash the bytes behind the last
//! durable commit can be anything the page cache had written back: records, zeros,
//! records after zeros. None of that was committed, so it may be cut. Damage is a
//! break with a *committed* record after it: a valid Commit or Bookmark frame means
//! fsynced data follows, and cutting there would lose it.
use super::frame::{self, Pos, FRAME_LEN};
use super::record::{BOOKMARK, COMMIT};
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Payload sizes a Commit and a Bookmark frame can have.
const COMMIT_LEN: usize = 36;
const BOOKMARK_LEN: std::ops::RangeInclusive<usize> = 26..=26 + 255;
/// The longest frame looked for: a window must hold it whole.
const LONGEST: usize = FRAME_LEN as usize + 26 + 255;

/// Whether a valid Commit or Bookmark frame starts anywhere after `at` (in its
/// segment, past its first byte, or in any later segment).
pub fn committed_follows(dir: &Path, at: Pos) -> Result<bool> {
    for n in frame::list_segments(dir)?
        .into_iter()
        .filter(|n| *n >= at.segment)
    {
        let start = if n == at.segment { at.offset + 1 } else { 0 };
        if scan_segment(&frame::segment_path(dir, n), start)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn scan_segment(path: &Path, start: u64) -> Result<bool> {
    let file = File::open(path).map_err(Error::io("cannot open journal segment", path))?;
    let len = file
        .metadata()
        .map_err(Error::io("cannot stat journal segment", path))?
        .len();
    let mut buf = vec![0u8; (1 << 20) + LONGEST];
    let mut at = start;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(Error::io("cannot read journal segment", path))?;
        let window = &buf[..n];
        // Frames starting in the first part of the window; the overlap is rescanned
        // by the next window so no frame is missed at a boundary.
        let last_start = if at + (n as u64) < len {
            n - LONGEST
        } else {
            n
        };
        if (0..last_start).any(|i| is_committed_frame(&window[i..])) {
            return Ok(true);
        }
        at += last_start.max(1) as u64;
    }
    Ok(false)
}

fn is_committed_frame(b: &[u8]) -> bool {
    if b.len() < FRAME_LEN as usize || b[5..8] != [0, 0, 0] {
        return false;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    let plausible = match b[4] {
        COMMIT => len == COMMIT_LEN,
        BOOKMARK => BOOKMARK_LEN.contains(&len),
        _ => false,
    };
    if !plausible || b.len() < FRAME_LEN as usize + len {
        return false;
    }
    let (_, crc) = frame::frame(b[4], &b[FRAME_LEN as usize..FRAME_LEN as usize + len]);
    crc.to_le_bytes() == b[8..12]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::Commit;

    fn commit_frame() -> Vec<u8> {
        let payload = Commit {
            delta: 3,
            records: 1,
            changed_bytes: 2,
            stored_bytes: 3,
            digest: 4,
        }
        .encode();
        let (f, _) = frame::frame(COMMIT, &payload);
        [f.to_vec(), payload].concat()
    }

    #[test]
    fn finds_a_commit_anywhere_after_the_break() {
        let dir = tempfile::tempdir().unwrap();
        let seg = frame::segment_path(dir.path(), 1);
        // Noise, then a commit frame straddling the 1 MiB window boundary.
        let mut bytes = vec![7u8; (1 << 20) - 20];
        bytes.extend(commit_frame());
        bytes.extend(vec![0u8; 100]);
        std::fs::write(&seg, &bytes).unwrap();
        assert!(committed_follows(
            dir.path(),
            Pos {
                segment: 1,
                offset: 10
            }
        )
        .unwrap());
        assert!(
            !committed_follows(
                dir.path(),
                Pos {
                    segment: 1,
                    offset: (1 << 20) - 20
                }
            )
            .unwrap(),
            "only after the break"
        );
        let mut broken = bytes.clone();
        broken[(1 << 20) - 20 + 20] ^= 1;
        std::fs::write(&seg, &broken).unwrap();
        assert!(
            !committed_follows(
                dir.path(),
                Pos {
                    segment: 1,
                    offset: 10
                }
            )
            .unwrap(),
            "a commit with a bad checksum is not one"
        );
    }
}
