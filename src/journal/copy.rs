//! Copying ranges of a file into a delta: the changes a diff found, read from a
//! snapshot or an image and written as Data and Zero records. Every delta built from
//! files is built here: a cycle's, and a synthetic full image's.
use super::DeltaWriter;
use crate::diff::{Change, ChangeKind, Changes};
use crate::error::{Error, Result};
use crate::progress::Progress;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The read buffer callers pass to [`journal_changes`]: large reads, bounded memory.
pub const READ_CHUNK: usize = 1 << 20;

/// How far ahead of the reader changed ranges are announced to the kernel.
const PREFETCH_BYTES: u64 = 32 << 20;
const PREFETCH_RANGES: usize = 256;

/// Journals `changes` of one volume, reading Data ranges from `file` (at `path`, for
/// messages) through `buf`, telling `progress` of each chunk read; returns the bytes
/// covered and the bytes read.
pub fn journal_changes(
    delta: &mut DeltaWriter<'_>,
    volume: u16,
    file: &File,
    path: &Path,
    changes: Changes<'_>,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let (mut changed, mut read) = (0, 0);
    for change in Prefetch::new(changes, file) {
        let change = change?;
        changed += change.len;
        match change.kind {
            ChangeKind::Zero => delta.zero(volume, change.offset, change.len)?,
            ChangeKind::Data => {
                let mut at = change.offset;
                while at < change.end() {
                    if progress.stop_requested() {
                        return Err(Error::Stopped(format!(
                            "the cycle reading {}",
                            path.display()
                        )));
                    }
                    let n = (change.end() - at).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..n], at)
                        .map_err(Error::io("cannot read snapshot", path))?;
                    read += n as u64;
                    delta.data(volume, at, &buf[..n])?;
                    progress.inc(n as u64);
                    at += n as u64;
                }
            }
        }
    }
    Ok((changed, read))
}

/// Runs the diff ahead of the reader and asks the kernel to prefetch the Data ranges
/// it names, so the scattered reads of an incremental cycle overlap on the disk instead
/// of waiting one by one. Holds at most a few hundred ranges, never data.
struct Prefetch<'a> {
    changes: Changes<'a>,
    file: &'a File,
    window: VecDeque<Change>,
    ahead: u64,
    done: bool,
}

impl<'a> Prefetch<'a> {
    fn new(changes: Changes<'a>, file: &'a File) -> Self {
        Prefetch {
            changes,
            file,
            window: Default::default(),
            ahead: 0,
            done: false,
        }
    }
}

impl Iterator for Prefetch<'_> {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && self.ahead < PREFETCH_BYTES && self.window.len() < PREFETCH_RANGES {
            match self.changes.next() {
                None => self.done = true,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(c)) => {
                    if c.kind == ChangeKind::Data {
                        let len = c.len.min(PREFETCH_BYTES);
                        // A hint only: if it fails, the read below still works.
                        let _ = crate::sys::prefetch(self.file, c.offset, len);
                        self.ahead += len;
                    }
                    self.window.push_back(c);
                }
            }
        }
        let c = self.window.pop_front()?;
        if c.kind == ChangeKind::Data {
            self.ahead -= c.len.min(PREFETCH_BYTES);
        }
        Some(Ok(c))
    }
}
