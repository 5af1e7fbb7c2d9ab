//! A reader and replayer of the kernel's dm-log-writes log, the standard power-cut
//! harness (xfstests uses it the same way). The format is in the kernel's
//! `Documentation/admin-guide/device-mapper/log-writes.rst` and
//! `drivers/md/dm-log-writes.c`: a super block at byte 0 (magic, version, number of
//! entries, sector size), then per entry one sector holding the entry header (a
//! mark's text follows the header in that sector) and, for a write, its data.
//!
//! The target logs a write only once it completed, and puts the writes that completed
//! before a FLUSH was issued in front of the FLUSH entry; a FUA write is logged when
//! it completes. So the disk after a power cut held: every entry up to some FLUSH
//! (or FUA) entry, plus any subset of the writes logged after it and before the next
//! FLUSH. [`Log::states`] names exactly those states.
#![allow(dead_code)]

use rand::Rng;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: u64 = 0x6a736677736872;
const VERSION: u64 = 1;
pub const FLUSH: u64 = 1 << 0;
pub const FUA: u64 = 1 << 1;
pub const DISCARD: u64 = 1 << 2;
pub const MARK: u64 = 1 << 3;

/// One logged request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// First sector written, in units of the log's sector size.
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    /// A mark's text.
    pub mark: Option<String>,
    /// Where the written data starts in the log (for writes).
    data_at: u64,
}

impl Entry {
    pub fn is_write(&self) -> bool {
        self.flags & (MARK | DISCARD) == 0 && self.nr_sectors > 0
    }

    /// After this entry, everything logged before it is on the disk.
    pub fn is_durability_point(&self) -> bool {
        self.flags & (FLUSH | FUA) != 0
    }
}

/// A power-cut state: the entries up to and including `upto` (a durability point), and
/// of the writes after it (before the next one) those listed in `extra`.
#[derive(Debug, Clone)]
pub struct State {
    pub upto: usize,
    pub extra: Vec<usize>,
    /// The index of the next durability point (or the log's length): marks before it
    /// belong to commands whose last flush was at or before `upto`.
    pub window_end: usize,
}

impl State {
    pub fn describe(&self) -> String {
        if self.extra.is_empty() {
            format!("log entries 0..={}", self.upto)
        } else {
            format!(
                "log entries 0..={} plus {} of the {} writes before entry {}: {:?}",
                self.upto,
                self.extra.len(),
                self.window_end - self.upto - 1,
                self.window_end,
                self.extra
            )
        }
    }
}

pub struct Log {
    file: File,
    pub sector_size: u64,
    pub entries: Vec<Entry>,
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl Log {
    /// Reads the entry headers of the log on `path` (a log device or a copy of one).
    /// Data stays in the log and is read when an entry is applied.
    pub fn open(path: &Path) -> Log {
        let mut file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut sup = [0u8; 28];
        file.read_exact(&mut sup).unwrap();
        assert_eq!(
            le64(&sup, 0),
            MAGIC,
            "{} is not a dm-log-writes log",
            path.display()
        );
        assert_eq!(le64(&sup, 8), VERSION, "log version");
        let count = le64(&sup, 16);
        let sector_size = u32::from_le_bytes(sup[24..28].try_into().unwrap()) as u64;
        assert!(sector_size >= 512 && sector_size.is_power_of_two());
        let mut entries = Vec::with_capacity(count as usize);
        let mut at = sector_size;
        let mut head = vec![0u8; sector_size as usize];
        for i in 0..count {
            file.read_exact_at(&mut head, at)
                .unwrap_or_else(|e| panic!("log entry {i} at byte {at}: {e}"));
            let (sector, nr_sectors, flags, data_len) = (
                le64(&head, 0),
                le64(&head, 8),
                le64(&head, 16),
                le64(&head, 24),
            );
            let mark = (flags & MARK != 0).then(|| {
                let text = &head[32..(32 + data_len as usize).min(head.len())];
                String::from_utf8_lossy(text).into_owned()
            });
            at += sector_size;
            let data_at = at;
            if flags & (DISCARD | MARK) == 0 {
                at += nr_sectors * sector_size;
            }
            entries.push(Entry {
                sector,
                nr_sectors,
                flags,
                mark,
                data_at,
            });
        }
        Log {
            file,
            sector_size,
            entries,
        }
    }

    /// Index of the entry marked `name`.
    pub fn mark(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.mark.as_deref() == Some(name))
    }

    /// Writes entry `i` to `image` (a file as large as the logged device). A discard
    /// is written as zeros: what most devices read back, and the harder case for a
    /// reader that assumed its bytes stayed.
    pub fn apply(&self, i: usize, image: &File) {
        let e = &self.entries[i];
        let off = e.sector * self.sector_size;
        let len = e.nr_sectors * self.sector_size;
        if e.flags & MARK != 0 || len == 0 {
            return;
        }
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            if e.flags & DISCARD == 0 {
                self.file
                    .read_exact_at(&mut buf[..n], e.data_at + done)
                    .unwrap_or_else(|err| panic!("log entry {i} data: {err}"));
            } else {
                buf[..n].fill(0);
            }
            if buf[..n].iter().all(|b| *b == 0) {
                // Zeros as a hole: images stay sparse, so copying one is cheap.
                cascade::sys::punch_hole(image, off + done, n as u64).unwrap();
            } else {
                image.write_all_at(&buf[..n], off + done).unwrap();
            }
            done += n as u64;
        }
    }

    /// Every durability point, and after each `subsets` random subsets of the writes
    /// that follow it before the next one (when there are any).
    pub fn states(&self, subsets: usize, rng: &mut impl Rng) -> Vec<State> {
        let points: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].is_durability_point())
            .collect();
        let mut out = Vec::new();
        for (k, &p) in points.iter().enumerate() {
            let end = points.get(k + 1).copied().unwrap_or(self.entries.len());
            let writes: Vec<usize> = (p + 1..end)
                .filter(|&i| self.entries[i].is_write() || self.entries[i].flags & DISCARD != 0)
                .collect();
            out.push(State {
                upto: p,
                extra: Vec::new(),
                window_end: end,
            });
            if writes.is_empty() {
                continue;
            }
            for _ in 0..subsets {
                let extra: Vec<usize> = writes
                    .iter()
                    .copied()
                    .filter(|_| rng.gen_bool(0.5))
                    .collect();
                if !extra.is_empty() {
                    out.push(State {
                        upto: p,
                        extra,
                        window_end: end,
                    });
                }
            }
        }
        out
    }
}
