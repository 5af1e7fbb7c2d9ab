//! Block comparison: the diff when nothing records what changed. Streams both files
//! in chunks (memory stays at two chunk buffers whatever the volume size) and skips
//! ranges that are holes in both without reading them. It asks whoever runs it
//! whether to stop before every chunk: two identical volumes yield nothing until the
//! end, and a cycle must still be abandonable (a stopping daemon, max-freeze) then.
use super::{Change, ChangeKind, RunBuilder};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::sys;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Comparison granularity: a changed range is reported in whole blocks.
pub const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;

/// The next data run of a file at or after the last query, so SEEK_DATA/SEEK_HOLE run
/// once per extent rather than once per chunk.
#[derive(Default)]
struct DataRun {
    start: u64,
    end: u64,
}

impl DataRun {
    /// The first offset at or after `pos` that may hold data (`size` if none).
    fn next(&mut self, f: &File, pos: u64, size: u64) -> std::io::Result<u64> {
        if pos >= size {
            return Ok(u64::MAX);
        }
        if pos >= self.end {
            self.start = sys::next_data(f, pos)?.unwrap_or(size).min(size);
            self.end = if self.start < size {
                sys::next_hole(f, self.start)?.min(size)
            } else {
                size
            };
        }
        Ok(self.start.max(pos))
    }
}

pub struct BlockCompare<'a> {
    old: File,
    new: File,
    old_run: DataRun,
    new_run: DataRun,
    old_size: u64,
    new_size: u64,
    new_path: PathBuf,
    pos: u64,
    old_buf: Vec<u8>,
    new_buf: Vec<u8>,
    runs: RunBuilder,
    ready: VecDeque<Change>,
    stop: &'a dyn Progress,
}

impl<'a> BlockCompare<'a> {
    pub fn new(
        old: File,
        old_size: u64,
        new: File,
        new_size: u64,
        new_path: PathBuf,
        stop: &'a dyn Progress,
    ) -> BlockCompare<'a> {
        BlockCompare {
            old,
            new,
            old_run: DataRun::default(),
            new_run: DataRun::default(),
            old_size,
            new_size,
            new_path,
            pos: 0,
            old_buf: vec![0; CHUNK],
            new_buf: vec![0; CHUNK],
            runs: RunBuilder::default(),
            ready: VecDeque::new(),
            stop,
        }
    }

    /// The next offset at or after `pos` where either file may hold data.
    fn next_data(&mut self, pos: u64) -> Result<u64> {
        let io = |e| Error::io("cannot find data in", self.new_path.clone())(e);
        let new = self
            .new_run
            .next(&self.new, pos, self.new_size)
            .map_err(io)?;
        let old = self
            .old_run
            .next(&self.old, pos, self.old_size)
            .map_err(io)?;
        Ok(new.min(old).min(self.new_size))
    }

    /// Compares the next chunk; queues the runs it closes.
    fn step(&mut self) -> Result<()> {
        if self.stop.stop_requested() {
            return Err(Error::Stopped(format!(
                "the comparison of {}",
                self.new_path.display()
            )));
        }
        self.pos = self.next_data(self.pos)?;
        if self.pos >= self.new_size {
            return Ok(());
        }
        let len = (self.new_size - self.pos).min(CHUNK as u64) as usize;
        let new = &mut self.new_buf[..len];
        self.new
            .read_exact_at(new, self.pos)
            .map_err(Error::io("cannot read snapshot", self.new_path.clone()))?;
        let old = &mut self.old_buf[..len];
        let old_len = self.old_size.saturating_sub(self.pos).min(len as u64) as usize;
        self.old
            .read_exact_at(&mut old[..old_len], self.pos)
            .map_err(Error::io(
                "cannot read previous snapshot of",
                self.new_path.clone(),
            ))?;
        old[old_len..].fill(0);
        if old != new {
            for (i, (a, b)) in old.chunks(BLOCK).zip(new.chunks(BLOCK)).enumerate() {
                if a != b {
                    let at = self.pos + (i * BLOCK) as u64;
                    if let Some(run) = self.runs.push(at, b.len() as u64, ChangeKind::Data) {
                        self.ready.push_back(run);
                    }
                }
            }
        }
        self.pos += len as u64;
        Ok(())
    }
}

impl Iterator for BlockCompare<'_> {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Result<Change>> {
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Some(Ok(c));
            }
            if self.pos >= self.new_size {
                return self.runs.finish().map(Ok);
            }
            if let Err(e) = self.step() {
                self.pos = self.new_size;
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Asks to stop once it has been asked `after` times.
    struct StopAfter(AtomicUsize);

    impl Progress for StopAfter {
        fn start(&self, _: &str, _: u64) {}
        fn add_total(&self, _: u64) {}
        fn inc(&self, _: u64) {}
        fn finish(&self) {}
        fn stop_requested(&self) -> bool {
            self.0.fetch_sub(1, Ordering::Relaxed) == 0
        }
    }

    #[test]
    fn a_change_free_scan_stops_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 8 * CHUNK];
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, &data).unwrap();
        std::fs::write(&b, &data).unwrap();
        let open = |p: &PathBuf| File::open(p).unwrap();
        let size = data.len() as u64;
        // Nothing differs: without a stop the scan ends with nothing to report.
        let all = BlockCompare::new(
            open(&a),
            size,
            open(&b),
            size,
            b.clone(),
            &crate::progress::NoProgress,
        );
        assert_eq!(all.count(), 0);
        // Asked to stop after two chunks, it says so instead of scanning on.
        let stop = StopAfter(AtomicUsize::new(2));
        let mut scan = BlockCompare::new(open(&a), size, open(&b), size, b.clone(), &stop);
        let e = scan.next().expect("an error, not the end").unwrap_err();
        assert!(matches!(e, Error::Stopped(_)), "{e}");
        assert!(e.to_string().contains("comparison of"), "{e}");
        assert!(scan.next().is_none());
    }
}
