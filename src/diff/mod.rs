//! Extent maths: the changed ranges between two snapshots of a volume, as a stream of
//! runs. Drivers produce runs (from metadata where the volume manager keeps it, by
//! comparison where not); the cycle consumes them and reads only what they name.

mod allocated;
mod compare;
mod extent_map;
mod ranges;

pub use allocated::allocated_ranges;
pub use compare::BlockCompare;
pub use extent_map::ExtentMapDiff;
pub use ranges::{Piece, RangeMap};

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The range holds data in the new snapshot that may differ from the old: read it.
    Data,
    /// The range reads as zeros in the new snapshot (a hole), and may not before.
    Zero,
}

/// A changed byte range of one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub offset: u64,
    pub len: u64,
    pub kind: ChangeKind,
}

impl Change {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Changed ranges in ascending order, non-overlapping.
pub type Changes<'a> = Box<dyn Iterator<Item = Result<Change>> + Send + 'a>;

/// Merges adjacent ranges of the same kind into one run, so consumers see few, long
/// runs instead of one per block.
#[derive(Default)]
pub struct RunBuilder {
    pending: Option<Change>,
}

impl RunBuilder {
    /// Adds a range; returns the run it closes, if any.
    pub fn push(&mut self, offset: u64, len: u64, kind: ChangeKind) -> Option<Change> {
        if len == 0 {
            return None;
        }
        match &mut self.pending {
            Some(p) if p.kind == kind && p.end() == offset => {
                p.len += len;
                None
            }
            _ => self.pending.replace(Change { offset, len, kind }),
        }
    }

    pub fn finish(&mut self) -> Option<Change> {
        self.pending.take()
    }
}

/// Whether every byte is zero; a word at a time, which the compiler vectorises.
pub fn is_zero(buf: &[u8]) -> bool {
    let words = buf.chunks_exact(8);
    let rest = words.remainder();
    words
        .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
        .fold(0, |a, w| a | w)
        == 0
        && rest.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_only_when_adjacent_and_alike() {
        let mut b = RunBuilder::default();
        assert_eq!(b.push(0, 4096, ChangeKind::Data), None);
        assert_eq!(b.push(4096, 4096, ChangeKind::Data), None);
        let first = b.push(8192, 10, ChangeKind::Zero).unwrap();
        assert_eq!(
            first,
            Change {
                offset: 0,
                len: 8192,
                kind: ChangeKind::Data
            }
        );
        let second = b.push(9000, 1, ChangeKind::Zero).unwrap();
        assert_eq!(second.len, 10);
        assert_eq!(b.finish().unwrap().offset, 9000);
    }

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v));
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[7] = 1;
        assert!(!is_zero(&v));
    }
}
