//! Where a journal begins. A journal starts at delta 1 in segment 1 until retention
//! prunes its oldest deltas (or it is built to start later: a synthetic full, a
//! restore's scratch journal); from then on the `start` file says which delta comes
//! first and where it is, so a reader can tell deltas pruned on purpose from segments
//! that went missing.
use super::frame::{self, FrameRead, Pos};
use super::record::{Dec, Enc};
use crate::error::{Error, Result};
use std::path::Path;

pub const START_FILE: &str = "start";
const KIND: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Start {
    /// The first delta the journal holds.
    pub delta: u64,
    /// The sequence number of the last bookmark before it (0: none), so bookmark
    /// numbering goes on where it was.
    pub seq: u64,
    /// Where that delta's Begin record is (or where the first record will go).
    pub pos: Pos,
}

impl Default for Start {
    fn default() -> Start {
        Start {
            delta: 1,
            seq: 0,
            pos: Pos::START,
        }
    }
}

impl Start {
    /// The start recorded in `dir`, or delta 1 at the first segment if none is.
    pub fn load(dir: &Path) -> Result<Start> {
        let path = dir.join(START_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Start::default()),
            Err(e) => return Err(Error::io("cannot read journal start", path)(e)),
        };
        let corrupt = |reason: String| Error::Corrupt {
            journal: dir.to_path_buf(),
            segment: 0,
            offset: 0,
            reason: format!("{START_FILE}: {reason}"),
        };
        let mut payload = Vec::new();
        let mut r = bytes.as_slice();
        match frame::read_frame(&mut r, &mut payload)
            .map_err(Error::io("cannot read journal start", &path))?
        {
            FrameRead::Frame { kind: KIND, .. } if r.is_empty() => {}
            FrameRead::Frame { kind, .. } => {
                return Err(corrupt(format!(
                    "unexpected record kind {kind} or trailing bytes"
                )))
            }
            FrameRead::Broken(reason) => return Err(corrupt(reason)),
            FrameRead::End => return Err(corrupt("empty file".into())),
        }
        let mut d = Dec::new(&payload);
        let start = (|| -> std::result::Result<Start, String> {
            let s = Start {
                delta: d.u64()?,
                seq: d.u64()?,
                pos: Pos {
                    segment: d.u64()?,
                    offset: d.u64()?,
                },
            };
            d.end()?;
            Ok(s)
        })()
        .map_err(corrupt)?;
        if start.delta == 0 || start.pos.segment == 0 || start.pos.offset < frame::HEADER_LEN {
            return Err(corrupt(format!("impossible start {start:?}")));
        }
        Ok(start)
    }

    /// Records this start durably (temp file, fsync, rename).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let mut e = Enc::default();
        e.u64(self.delta)
            .u64(self.seq)
            .u64(self.pos.segment)
            .u64(self.pos.offset);
        let (f, _) = frame::frame(KIND, &e.0);
        let mut bytes = f.to_vec();
        bytes.extend_from_slice(&e.0);
        crate::fsutil::write_atomic(&dir.join(START_FILE), &bytes)
    }
}
