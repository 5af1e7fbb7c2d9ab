//! The diff of two reflink clones from their extent maps (FIEMAP). A range whose
//! physical blocks are the same in both clones is shared, so unchanged, and is skipped
//! without reading data: the cost follows the change, not the volume.
use super::{Change, ChangeKind, RunBuilder};
use crate::error::{Error, Result};
use crate::sys::{self, Extent, FiemapIter};
use std::fs::File;
use std::path::PathBuf;

/// One file's extent map, walked forward.
struct Map {
    iter: FiemapIter,
    cur: Option<Extent>,
    size: u64,
}

impl Map {
    /// The extent covering `pos` or, failing that, the next one after it.
    fn at(&mut self, pos: u64, path: &std::path::Path) -> Result<Option<Extent>> {
        while self.cur.is_none_or(|e| e.logical + e.length <= pos) {
            match self.iter.next() {
                Some(Ok(e)) => self.cur = Some(e),
                Some(Err(e)) => return Err(Error::io("cannot map extents of", path)(e)),
                None => {
                    self.cur = None;
                    return Ok(None);
                }
            }
        }
        Ok(self.cur.filter(|e| e.logical < self.size))
    }
}

pub struct ExtentMapDiff {
    old: Map,
    new: Map,
    path: PathBuf,
    pos: u64,
    runs: RunBuilder,
}

impl ExtentMapDiff {
    pub fn new(
        old: &File,
        old_size: u64,
        new: &File,
        new_size: u64,
        path: PathBuf,
    ) -> ExtentMapDiff {
        ExtentMapDiff {
            old: Map {
                iter: sys::fiemap(old),
                cur: None,
                size: old_size,
            },
            new: Map {
                iter: sys::fiemap(new),
                cur: None,
                size: new_size,
            },
            path,
            pos: 0,
            runs: RunBuilder::default(),
        }
    }

    /// Classifies the range starting at `pos` up to the next extent boundary.
    fn step(&mut self) -> Result<Option<Change>> {
        let pos = self.pos;
        let o = self.old.at(pos, &self.path)?;
        let n = self.new.at(pos, &self.path)?;
        let covers = |e: &Option<Extent>| e.filter(|e| e.logical <= pos);
        let boundary = |e: &Option<Extent>| {
            e.map_or(u64::MAX, |e| {
                if e.logical <= pos {
                    e.logical + e.length
                } else {
                    e.logical
                }
            })
        };
        let end = boundary(&o)
            .min(boundary(&n))
            .min(self.new.size)
            .min(if pos < self.old.size {
                self.old.size
            } else {
                u64::MAX
            });
        self.pos = end;
        let (o, n) = (covers(&o).filter(|_| pos < self.old.size), covers(&n));
        let kind = match (o, n) {
            (None, None) => None,
            (Some(_), None) => Some(ChangeKind::Zero),
            (None, Some(_)) => Some(ChangeKind::Data),
            (Some(o), Some(n)) => {
                let shared = o.physical_is_reliable()
                    && n.physical_is_reliable()
                    && o.physical + (pos - o.logical) == n.physical + (pos - n.logical);
                (!shared).then_some(ChangeKind::Data)
            }
        };
        Ok(kind.and_then(|k| self.runs.push(pos, end - pos, k)))
    }
}

impl Iterator for ExtentMapDiff {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Result<Change>> {
        while self.pos < self.new.size {
            match self.step() {
                Ok(Some(run)) => return Some(Ok(run)),
                Ok(None) => {}
                Err(e) => {
                    self.pos = self.new.size;
                    return Some(Err(e));
                }
            }
        }
        self.runs.finish().map(Ok)
    }
}
