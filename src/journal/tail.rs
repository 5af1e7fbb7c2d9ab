//! Telling an interrupted append from damage. The writer runs one transaction at a
//! time (a delta, or a bookmark between deltas) and starts the next only after the
//! previous one's fsync returned. After a power cut, the bytes behind the last durable
//! record are what the page cache wrote back of that one in-flight transaction, in any
//! order: its records, zeros, its Commit before an earlier page of it. None of that was
//! committed, so it may be cut. Damage is a break followed by evidence of a *later*
//! transaction, one the writer began only after the in-flight one had returned: a valid
//! Commit frame of a delta after the in-flight one, a valid Bookmark frame numbered
//! after the last one before the break, an index entry past the break (the index is
//! appended only after a commit returned), or a segment after the break's own (begun
//! only once the break's segment was synced). Cutting there would lose committed data.
//! docs/journal-format.md ("Commit and crash safety") gives the argument in full.
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

/// What the journal held, committed, just before a break: the last delta and the last
/// bookmark number. The in-flight transaction is delta `last_delta + 1` (open at the
/// break, or with its Begin torn) or bookmark `last_seq + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Before {
    pub last_delta: u64,
    pub last_seq: u64,
}

/// Why the break at `at` is damage rather than the remains of an interrupted append,
/// or `None` when it may be cut. `indexed_end` is where the index's entries end: a
/// break before it is inside records whose commit returned. The one rule the writer's
/// recovery and `verify` both apply.
pub fn damage(dir: &Path, at: Pos, before: Before, indexed_end: Pos) -> Result<Option<String>> {
    if at < indexed_end {
        return Ok(Some(format!(
            "the index lists committed records up to {indexed_end}, past the break"
        )));
    }
    let segments = frame::list_segments(dir)?;
    // The writer creates segment k+1 only after segment k's fdatasync returned, and
    // never writes to k again: a break inside an existing segment with a later one
    // present lies in synced bytes. (A *missing* segment is another matter: its data
    // was synced, but maybe not its directory entry.)
    if segments.binary_search(&at.segment).is_ok() {
        if let Some(later) = segments.iter().find(|n| **n > at.segment) {
            return Ok(Some(format!(
                "segment {later} exists, and a segment is begun only after the one before it \
                 is durable"
            )));
        }
    }
    for n in segments.into_iter().filter(|n| *n >= at.segment) {
        // From the break itself: a valid frame of a later transaction there (a
        // grammar break) is evidence too; the in-flight one's own frames are not.
        let start = if n == at.segment { at.offset } else { 0 };
        if let Some((offset, what)) = scan_segment(&frame::segment_path(dir, n), start, before)? {
            return Ok(Some(format!(
                "{what} follows it at segment {n} offset {offset}, so the transaction written \
                 before it had returned"
            )));
        }
    }
    Ok(None)
}

/// The first frame at or after `start` in the segment at `path` that proves a later
/// transaction: its offset and what it is.
fn scan_segment(path: &Path, start: u64, before: Before) -> Result<Option<(u64, String)>> {
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
        if let Some((i, what)) =
            (0..last_start).find_map(|i| later_transaction(&window[i..], before).map(|w| (i, w)))
        {
            return Ok(Some((at + i as u64, what)));
        }
        at += last_start.max(1) as u64;
    }
    Ok(None)
}

/// Whether `b` starts with a valid Commit frame of a delta after the in-flight one,
/// or a valid Bookmark frame numbered after the last committed bookmark; says which.
fn later_transaction(b: &[u8], before: Before) -> Option<String> {
    if b.len() < FRAME_LEN as usize || b[5..8] != [0, 0, 0] {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    let plausible = match b[4] {
        COMMIT => len == COMMIT_LEN,
        BOOKMARK => BOOKMARK_LEN.contains(&len),
        _ => false,
    };
    if !plausible || b.len() < FRAME_LEN as usize + len {
        return None;
    }
    let payload = &b[FRAME_LEN as usize..FRAME_LEN as usize + len];
    let (_, crc) = frame::frame(b[4], payload);
    if crc.to_le_bytes() != b[8..12] {
        return None;
    }
    // Both payloads start with the number that orders them: the delta, the sequence.
    let id = u64::from_le_bytes(payload[0..8].try_into().unwrap());
    match b[4] {
        COMMIT if id > before.last_delta + 1 => Some(format!("the commit of delta {id}")),
        BOOKMARK if id > before.last_seq => Some(format!("bookmark number {id}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::Commit;

    fn commit_frame(delta: u64) -> Vec<u8> {
        let payload = Commit {
            delta,
            records: 1,
            changed_bytes: 2,
            stored_bytes: 3,
            digest: 4,
        }
        .encode();
        let (f, _) = frame::frame(COMMIT, &payload);
        [f.to_vec(), payload].concat()
    }

    fn at(offset: u64) -> Pos {
        Pos { segment: 1, offset }
    }

    /// No index entries: where the index ends is before any break.
    const NO_INDEX: Pos = Pos {
        segment: 0,
        offset: 0,
    };

    const FRESH: Before = Before {
        last_delta: 0,
        last_seq: 0,
    };

    #[test]
    fn finds_a_later_commit_anywhere_after_the_break() {
        let dir = tempfile::tempdir().unwrap();
        let seg = frame::segment_path(dir.path(), 1);
        // Noise, then a commit frame of delta 3 straddling the 1 MiB window boundary.
        let mut bytes = vec![7u8; (1 << 20) - 20];
        bytes.extend(commit_frame(3));
        bytes.extend(vec![0u8; 100]);
        std::fs::write(&seg, &bytes).unwrap();
        let found = damage(dir.path(), at(10), FRESH, NO_INDEX).unwrap();
        assert!(
            found
                .as_deref()
                .is_some_and(|r| r.contains("delta 3") && r.contains("offset 1048556")),
            "{found:?}"
        );
        assert!(
            damage(dir.path(), at((1 << 20) - 20), FRESH, NO_INDEX)
                .unwrap()
                .is_some(),
            "a later commit at the break itself (a grammar break) is evidence too"
        );
        assert_eq!(
            damage(dir.path(), at((1 << 20) - 19), FRESH, NO_INDEX).unwrap(),
            None,
            "only from the break on"
        );
        let mut broken = bytes.clone();
        broken[(1 << 20) - 20 + 20] ^= 1;
        std::fs::write(&seg, &broken).unwrap();
        assert_eq!(
            damage(dir.path(), at(10), FRESH, NO_INDEX).unwrap(),
            None,
            "a commit with a bad checksum is not one"
        );
    }

    #[test]
    fn the_in_flight_deltas_own_commit_is_no_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; 4096];
        bytes.extend(commit_frame(3));
        std::fs::write(frame::segment_path(dir.path(), 1), &bytes).unwrap();
        let in_flight_3 = Before {
            last_delta: 2,
            last_seq: 0,
        };
        assert_eq!(
            damage(dir.path(), at(100), in_flight_3, NO_INDEX).unwrap(),
            None
        );
        // A break before the end of what the index lists is damage whatever follows.
        assert!(damage(dir.path(), at(100), in_flight_3, at(200))
            .unwrap()
            .is_some());
    }
}
