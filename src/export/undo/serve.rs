//! A live replica served as it was at a point of its window, without changing it:
//! the path from the replica's point to the served one is walked once for its
//! metadata only (no data is read), into a map of which bytes read from where; a
//! read takes those bytes from the undo journal and the rest from the replica.
//! Writes go to a scratch file, unlinked as soon as it is made, so whatever ends the
//! server (a stop, a crash) throws them away. Starting costs the map: the number of
//! extents between the two points, whatever the volume's size.
use super::reader::{Bytes, Reader};
use super::steps::{path, Op};
use super::UndoStore;
use crate::diff::RangeMap;
use crate::error::{Error, Result};
use crate::journal::Until;
use crate::nbd::{Capabilities, Export, ZeroFlags};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// Where a served point differs from the replica: the bytes it holds there (and
/// the length of the blob they are in).
type Overlay = RangeMap<(Bytes, u64)>;

/// One volume served at a point.
pub struct PointExport {
    size: u64,
    replica: File,
    /// Where the served point differs from the replica: the bytes it holds there.
    overlay: Overlay,
    reader: Mutex<Reader>,
    scratch: Mutex<Scratch>,
}

/// What clients wrote: a sparse file, and the ranges written.
struct Scratch {
    file: File,
    written: RangeMap<()>,
}

impl UndoStore {
    /// The exports of every volume in `replicas` (id → path) as they were at `at`,
    /// the replica being at `from`; scratch files go in `scratch_dir`.
    pub fn serve_at(
        &mut self,
        from: Until,
        at: Until,
        replicas: &HashMap<String, std::path::PathBuf>,
        scratch_dir: &Path,
    ) -> Result<Vec<(String, PointExport)>> {
        let steps = path(from, at);
        // Per volume: what the point holds where it differs, and its size.
        let mut overlays: HashMap<String, (Overlay, Option<u64>)> = HashMap::new();
        self.walk(&steps, &mut |_, id, op, _| {
            let (map, size) = overlays.entry(id.to_string()).or_default();
            // The walk starts from the replica as it is: a cut below its size reads
            // as zeros past it.
            if size.is_none() {
                if let Some(path) = replicas.get(id) {
                    *size = File::open(path)
                        .and_then(|f| crate::sys::device_or_file_size(&f))
                        .ok();
                }
            }
            match op {
                Op::Size(len) => {
                    // Bytes past a cut read as zeros should the volume grow again.
                    if let Some(was) = size.filter(|was| *was > len) {
                        map.insert(len, was, (Bytes::Zero, 0));
                    }
                    *size = Some(len);
                }
                Op::Run {
                    start,
                    end,
                    bytes,
                    len_of,
                } => map.insert(start, end, (bytes, len_of)),
            }
            Ok(())
        })?;
        let mut out = Vec::new();
        for (id, path) in replicas {
            let replica = File::open(path).map_err(Error::io("cannot open replica", path))?;
            let now = crate::sys::device_or_file_size(&replica)
                .map_err(Error::io("cannot size replica", path))?;
            let (overlay, size) = overlays.remove(id).unwrap_or_default();
            let size = size.unwrap_or(now);
            let mut overlay = overlay;
            // A file shorter than the point's volume: the rest reads as zeros.
            if now < size && overlay.pieces(now, size).iter().any(|p| p.value.is_none()) {
                for p in overlay.pieces(now, size) {
                    if p.value.is_none() {
                        overlay.insert(p.start, p.end, (Bytes::Zero, 0));
                    }
                }
            }
            let name = scratch_dir.join(format!(".serve-{id}-{}.scratch", std::process::id()));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&name)
                .map_err(Error::io("cannot create scratch file", &name))?;
            std::fs::remove_file(&name).map_err(Error::io("cannot unlink scratch file", &name))?;
            out.push((
                id.clone(),
                PointExport {
                    size,
                    replica,
                    overlay,
                    reader: Mutex::new(Reader::new(&self.dir, &self.target, self.epoch)?),
                    scratch: Mutex::new(Scratch {
                        file,
                        written: RangeMap::default(),
                    }),
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl PointExport {
    /// The point's bytes (the overlay over the replica) into `buf`.
    fn read_point(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        for p in self.overlay.pieces(offset, end) {
            let out = &mut buf[(p.start - offset) as usize..(p.end - offset) as usize];
            match p.value {
                Some((bytes, len_of)) => self
                    .reader
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fill(bytes, p.start, out, len_of)
                    .map_err(to_io)?,
                None => read_or_zeros(&self.replica, out, p.start)?,
            }
        }
        Ok(())
    }

    fn scratch(&self) -> std::sync::MutexGuard<'_, Scratch> {
        self.scratch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads what the file holds, zeros past its end.
fn read_or_zeros(file: &File, out: &mut [u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < out.len() {
        match file.read_at(&mut out[done..], at + done as u64)? {
            0 => {
                out[done..].fill(0);
                break;
            }
            n => done += n,
        }
    }
    Ok(())
}

impl Export for PointExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: false,
            trim: true,
            zeroes: true,
            cache: true,
            multi_conn: true,
        }
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let scratch = self.scratch();
        let end = offset + buf.len() as u64;
        for p in scratch.written.pieces(offset, end) {
            let out = &mut buf[(p.start - offset) as usize..(p.end - offset) as usize];
            match p.value {
                Some(()) => read_or_zeros(&scratch.file, out, p.start)?,
                None => self.read_point(p.start, out)?,
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: Vec<u8>, _fua: bool) -> io::Result<()> {
        let mut scratch = self.scratch();
        scratch.file.write_all_at(&data, offset)?;
        scratch
            .written
            .insert(offset, offset + data.len() as u64, ());
        Ok(())
    }

    /// The writes are thrown away when serving stops: nothing to make durable.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.zero(offset, len, ZeroFlags::default(), fua)
    }

    fn zero(&self, offset: u64, len: u64, _zero: ZeroFlags, _fua: bool) -> io::Result<()> {
        let mut scratch = self.scratch();
        crate::sys::punch_hole(&scratch.file, offset, len)?;
        scratch.written.insert(offset, offset + len, ());
        Ok(())
    }

    fn cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn block_status(&self, _offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        Ok(vec![(len, 0)])
    }
}
