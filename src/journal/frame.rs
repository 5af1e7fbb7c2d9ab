//! Segment headers and record frames: the byte layout of docs/journal-format.md, and a
//! cursor that walks frames across segment files.
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"CASCJRNL";
/// The version of segments written; readers read every version from 1 to this.
pub const VERSION: u32 = 3;
pub const HEADER_LEN: u64 = 32;
pub const FRAME_LEN: u64 = 12;
/// Large enough for a 1 MiB extent that zstd could not shrink, small enough that a
/// garbled length cannot make a reader allocate gigabytes.
pub const MAX_PAYLOAD: u32 = 16 << 20;

/// A place in the journal: segment number and byte offset inside it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

impl Pos {
    pub const START: Pos = Pos {
        segment: 1,
        offset: HEADER_LEN,
    };
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segment {} offset {}", self.segment, self.offset)
    }
}

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:016}.cjs"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("cannot list journal", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("cannot list journal", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|s| s.strip_suffix(".cjs"))
        {
            if let Ok(n) = n.parse::<u64>() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The format version in a segment header's bytes (not checked here).
pub fn header_version(h: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(h.get(8..12)?.try_into().ok()?))
}

pub fn segment_header(n: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&n.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The frame bytes for a record, and the record's checksum.
pub fn frame(kind: u8, payload: &[u8]) -> ([u8; FRAME_LEN as usize], u32) {
    let mut f = [0u8; FRAME_LEN as usize];
    f[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    f[4] = kind;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&f[0..8]), payload);
    f[8..12].copy_from_slice(&crc.to_le_bytes());
    (f, crc)
}

/// What reading one frame found.
pub enum FrameRead {
    /// A frame whose checksum holds; its payload is in the caller's buffer.
    Frame { kind: u8, crc: u32 },
    /// A clean end: no bytes at all where the next frame would start.
    End,
    /// A short or garbled frame: a torn write or corruption.
    Broken(String),
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads one frame and its payload (into `payload`), checking length and checksum.
pub fn read_frame(r: &mut impl Read, payload: &mut Vec<u8>) -> std::io::Result<FrameRead> {
    let mut f = [0u8; FRAME_LEN as usize];
    match read_full(r, &mut f)? {
        0 => return Ok(FrameRead::End),
        n if n < f.len() => {
            return Ok(FrameRead::Broken(format!(
                "torn record frame ({n} of 12 bytes)"
            )))
        }
        _ => {}
    }
    let len = u32::from_le_bytes(f[0..4].try_into().unwrap());
    if len > MAX_PAYLOAD {
        return Ok(FrameRead::Broken(format!(
            "record length {len} is over the limit"
        )));
    }
    payload.resize(len as usize, 0);
    let n = read_full(r, payload)?;
    if n < len as usize {
        return Ok(FrameRead::Broken(format!(
            "torn record ({n} of {len} payload bytes)"
        )));
    }
    let want = u32::from_le_bytes(f[8..12].try_into().unwrap());
    let got = crc32c::crc32c_append(crc32c::crc32c(&f[0..8]), payload);
    if want != got {
        return Ok(FrameRead::Broken(format!(
            "record checksum mismatch (stored {want:08x}, computed {got:08x})"
        )));
    }
    Ok(FrameRead::Frame {
        kind: f[4],
        crc: got,
    })
}

/// One step of a [`FrameCursor`].
pub enum Step {
    Frame {
        at: Pos,
        end: Pos,
        kind: u8,
        crc: u32,
    },
    End {
        at: Pos,
    },
    Broken {
        at: Pos,
        reason: String,
    },
}

/// Walks frames from a position to the end of the journal, moving from one segment
/// file to the next. The payload of the last frame is in [`FrameCursor::payload`].
pub struct FrameCursor {
    dir: PathBuf,
    pos: Pos,
    file: Option<BufReader<File>>,
    pub payload: Vec<u8>,
}

impl FrameCursor {
    pub fn new(dir: &Path, pos: Pos) -> FrameCursor {
        FrameCursor {
            dir: dir.to_path_buf(),
            pos,
            file: None,
            payload: Vec::new(),
        }
    }

    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Opens segment `n`, checks its header and seeks to `offset`. `Ok(None)` when the
    /// segment does not exist; `Err(reason)` inside when its header is broken.
    fn open(
        &self,
        n: u64,
        offset: u64,
    ) -> Result<Option<std::result::Result<BufReader<File>, String>>> {
        let path = segment_path(&self.dir, n);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot open journal segment", path)(e)),
        };
        let mut h = [0u8; HEADER_LEN as usize];
        let got = read_full(&mut file, &mut h)
            .map_err(Error::io("cannot read journal segment", &path))?;
        if got < h.len() {
            return Ok(Some(Err(format!(
                "torn segment header ({got} of 32 bytes)"
            ))));
        }
        if &h[0..8] != MAGIC {
            return Ok(Some(
                Err("not a cascade journal segment (bad magic)".into()),
            ));
        }
        let crc = u32::from_le_bytes(h[28..32].try_into().unwrap());
        if crc != crc32c::crc32c(&h[0..28]) {
            return Ok(Some(Err("segment header checksum mismatch".into())));
        }
        let version = header_version(&h).expect("a whole header was read");
        if !(1..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                journal: self.dir.clone(),
                segment: n,
                version,
            });
        }
        if u64::from_le_bytes(h[16..24].try_into().unwrap()) != n {
            return Ok(Some(Err(
                "segment number in the header differs from the file name".into(),
            )));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(Error::io("cannot seek journal segment", &path))?;
        Ok(Some(Ok(BufReader::with_capacity(1 << 20, file))))
    }

    /// The end of the journal at `at`, where segment `missing` would come next, unless
    /// a later segment exists: then the journal breaks at the gap, so that nothing is
    /// read or appended past it.
    fn end_or_gap(&self, at: Pos, missing: u64) -> Result<Step> {
        Ok(
            match list_segments(&self.dir)?.into_iter().find(|n| *n > missing) {
                Some(later) => Step::Broken {
                    at: Pos {
                        segment: missing,
                        offset: 0,
                    },
                    reason: format!("segment {missing} is missing, yet segment {later} follows"),
                },
                None => Step::End { at },
            },
        )
    }

    pub fn step(&mut self) -> Result<Step> {
        loop {
            if self.file.is_none() {
                match self.open(self.pos.segment, self.pos.offset)? {
                    None => return self.end_or_gap(self.pos, self.pos.segment),
                    Some(Err(reason)) => {
                        return Ok(Step::Broken {
                            at: Pos {
                                offset: 0,
                                ..self.pos
                            },
                            reason,
                        })
                    }
                    Some(Ok(f)) => self.file = Some(f),
                }
            }
            let at = self.pos;
            let file = self.file.as_mut().expect("opened above");
            let path = || segment_path(&self.dir, at.segment);
            match read_frame(file, &mut self.payload)
                .map_err(|e| Error::io("cannot read journal segment", path())(e))?
            {
                FrameRead::Frame { kind, crc } => {
                    self.pos.offset += FRAME_LEN + self.payload.len() as u64;
                    return Ok(Step::Frame {
                        at,
                        end: self.pos,
                        kind,
                        crc,
                    });
                }
                FrameRead::Broken(reason) => return Ok(Step::Broken { at, reason }),
                FrameRead::End => {
                    // A clean end of this segment: go on in the next one if there is one.
                    let next = segment_path(&self.dir, at.segment + 1);
                    if !next.exists() {
                        return self.end_or_gap(at, at.segment + 1);
                    }
                    self.file = None;
                    self.pos = Pos {
                        segment: at.segment + 1,
                        offset: HEADER_LEN,
                    };
                }
            }
        }
    }
}
