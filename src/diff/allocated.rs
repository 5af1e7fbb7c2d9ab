//! The ranges of a file that hold data, from SEEK_DATA/SEEK_HOLE: what a full delta
//! must carry (the rest is journalled as zeros).
use super::{Change, ChangeKind, Changes};
use crate::error::Error;
use crate::sys;
use std::fs::File;
use std::path::Path;

/// Data ranges and Zero ranges covering `0..size` of `file`.
pub fn allocated_ranges(file: File, size: u64, path: &Path) -> Changes<'static> {
    let path = path.to_path_buf();
    let mut pos = 0u64;
    let mut pending: Option<Change> = None;
    Box::new(std::iter::from_fn(move || {
        if let Some(c) = pending.take() {
            return Some(Ok(c));
        }
        if pos >= size {
            return None;
        }
        let data = match sys::next_data(&file, pos) {
            Ok(d) => d.unwrap_or(size).min(size),
            Err(e) => return Some(Err(Error::io("cannot find data in", &path)(e))),
        };
        let hole = if data < size {
            match sys::next_hole(&file, data) {
                Ok(h) => h.min(size),
                Err(e) => return Some(Err(Error::io("cannot find holes in", &path)(e))),
            }
        } else {
            size
        };
        let zero = Change {
            offset: pos,
            len: data - pos,
            kind: ChangeKind::Zero,
        };
        let data_run = Change {
            offset: data,
            len: hole - data,
            kind: ChangeKind::Data,
        };
        pos = hole;
        match (zero.len > 0, data_run.len > 0) {
            (true, true) => {
                pending = Some(data_run);
                Some(Ok(zero))
            }
            (true, false) => Some(Ok(zero)),
            _ => Some(Ok(data_run)),
        }
    }))
}
