//! The write-intent map: which grains of a split group's volumes may hold writes the
//! journal does not have in order yet, kept in a file in the group's state directory
//! so that a splitter killed at any moment restarts by reading back only those
//! grains (docs/journal-format.md, "Restarts").
//!
//! A grain's bit is set in the file (`pwrite`, so in the page cache, which outlives
//! the process) *before* a write touching it reaches the volume, and the file is
//! fdatasynced before a FLUSH (or a FUA write) is answered when bits were set since.
//! Bits are cleared a whole epoch at a time: writes set bits of the current epoch;
//! the other one is cleared, and becomes the current one, once every write that set
//! its bits is journalled in order (`Intents::rotate`). A restart reads back the union
//! of both.
//!
//! The file also says how far write numbers may have been given out (numbers are
//! reserved a block at a time), so a restart never numbers a write twice, and
//! whether the next start must take a base delta (the splitter stopped cleanly, or
//! its base is not journalled yet). It names the boot it was written in: after a
//! reboot (a power cut) its page-cache bits may not all have reached the disk, and the
//! restart takes a base delta instead of trusting it.
use super::dirty::DirtyMap;
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CASCINTM";
const VERSION: u32 = 1;
const BOOT_LEN: usize = 48;
/// Write numbers reserved at a time: one header write per this many writes.
pub const RESERVE: u64 = 1 << 20;

/// What the file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub grain: u64,
    pub boot: String,
    /// Write numbers up to this one may have been given out.
    pub reserved: u64,
    /// The next start takes a base delta: the splitter stopped with every write
    /// journalled in order (the volumes may be written while nothing serves them),
    /// or this run's base is not journalled yet.
    pub base_next: bool,
    /// The base delta of the stream this run journals, and the write it holds the
    /// volumes after (0 until it is journalled).
    pub base_delta: u64,
    pub exact_from: u64,
    pub sizes: Vec<u64>,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&self.grain.trailing_zeros().to_le_bytes());
        let mut boot = [0u8; BOOT_LEN];
        let b = self.boot.as_bytes();
        boot[..b.len().min(BOOT_LEN)].copy_from_slice(&b[..b.len().min(BOOT_LEN)]);
        h.extend_from_slice(&boot);
        h.extend_from_slice(&self.reserved.to_le_bytes());
        h.extend_from_slice(&u32::from(self.base_next).to_le_bytes());
        h.extend_from_slice(&self.base_delta.to_le_bytes());
        h.extend_from_slice(&self.exact_from.to_le_bytes());
        h.extend_from_slice(&(self.sizes.len() as u32).to_le_bytes());
        for s in &self.sizes {
            h.extend_from_slice(&s.to_le_bytes());
        }
        let crc = crc32c::crc32c(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h.resize(h.len().next_multiple_of(8), 0);
        h
    }

    fn decode(b: &[u8]) -> std::result::Result<(Header, usize), String> {
        let fixed = 8 + 4 + 4 + BOOT_LEN + 8 + 4 + 16 + 4;
        if b.len() < fixed || &b[..8] != MAGIC {
            return Err("it is not a write-intent map (bad magic or too short)".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        if u32_at(8) != VERSION {
            return Err(format!("unknown write-intent map version {}", u32_at(8)));
        }
        let shift = u32_at(12);
        let boot = &b[16..16 + BOOT_LEN];
        let boot =
            String::from_utf8_lossy(&boot[..boot.iter().position(|c| *c == 0).unwrap_or(BOOT_LEN)])
                .into_owned();
        let at = 16 + BOOT_LEN;
        let reserved = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let base_next = u32_at(at + 8) == 1;
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let (base_delta, exact_from) = (u64_at(at + 12), u64_at(at + 20));
        let n = u32_at(at + 28) as usize;
        let end = fixed + 8 * n;
        if shift > 40 || b.len() < end + 4 {
            return Err("its header is out of range".into());
        }
        let sizes = (0..n)
            .map(|i| u64::from_le_bytes(b[fixed + 8 * i..fixed + 8 * i + 8].try_into().unwrap()))
            .collect();
        if crc32c::crc32c(&b[..end]).to_le_bytes() != b[end..end + 4] {
            return Err("its header's checksum does not match".into());
        }
        let h = Header {
            grain: 1 << shift,
            boot,
            reserved,
            base_next,
            base_delta,
            exact_from,
            sizes,
        };
        Ok((h, (end + 4).next_multiple_of(8)))
    }
}

/// The open file: its header, and where each epoch's words begin.
pub struct IntentFile {
    path: PathBuf,
    /// Shared with a FLUSH's fdatasync, which runs outside the lock.
    file: std::sync::Arc<File>,
    header: Header,
    words_at: u64,
    words: usize,
}

impl IntentFile {
    /// Writes a new file (atomically) with `epochs` as its two epochs, and opens it.
    pub fn create(path: &Path, header: Header, epochs: [&DirtyMap; 2]) -> Result<IntentFile> {
        let mut bytes = header.encode();
        let words_at = bytes.len() as u64;
        let words = epochs[0].words().len();
        for e in epochs {
            for w in e.words() {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
        }
        crate::fsutil::write_atomic(path, &bytes)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io("cannot open", path))?;
        Ok(IntentFile {
            path: path.to_path_buf(),
            file: std::sync::Arc::new(file),
            header,
            words_at,
            words,
        })
    }

    /// The file at `path`, if there is one: its header and its two epochs.
    pub fn read(path: &Path) -> Result<Option<(Header, [DirtyMap; 2])>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read", path)(e)),
        };
        let bad = |reason: String| Error::Config {
            file: path.to_path_buf(),
            reason: format!("the write-intent map cannot be read: {reason}"),
        };
        let (h, at) = Header::decode(&bytes).map_err(bad)?;
        let mut maps = [
            DirtyMap::new(&h.sizes, h.grain),
            DirtyMap::new(&h.sizes, h.grain),
        ];
        let n = maps[0].words().len();
        if bytes.len() != at + 16 * n {
            return Err(bad("its length does not match its volumes".into()));
        }
        for (e, m) in maps.iter_mut().enumerate() {
            let base = at + e * 8 * n;
            m.set_words((0..n).map(|i| {
                u64::from_le_bytes(bytes[base + 8 * i..base + 8 * i + 8].try_into().unwrap())
            }));
        }
        Ok(Some((h, maps)))
    }

    /// Writes word `index` of `epoch`.
    pub fn write_word(&self, epoch: usize, index: usize, value: u64) -> std::io::Result<()> {
        let at = self.words_at + ((epoch * self.words + index) * 8) as u64;
        self.file.write_all_at(&value.to_le_bytes(), at)
    }

    /// Clears every word of `epoch`.
    pub fn clear(&self, epoch: usize) -> std::io::Result<()> {
        let at = self.words_at + (epoch * self.words * 8) as u64;
        self.file.write_all_at(&vec![0u8; self.words * 8], at)
    }

    /// Rewrites the header with `f` applied to it.
    pub fn update(&mut self, f: impl FnOnce(&mut Header)) -> std::io::Result<()> {
        f(&mut self.header);
        let h = self.header.encode();
        debug_assert_eq!(h.len() as u64, self.words_at);
        self.file.write_all_at(&h, 0)
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(Error::io("cannot sync", &self.path))
    }
}

/// This boot of the machine, as the kernel names it.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The two epochs of the write-intent map in memory, beside their file.
pub struct Intents {
    st: std::sync::Mutex<State>,
}

struct State {
    maps: [DirtyMap; 2],
    current: usize,
    /// Writes that marked each epoch and are not numbered (or abandoned) yet.
    inflight: [u64; 2],
    /// The highest number of a write that marked each epoch.
    max_n: [u64; 2],
    file: Option<IntentFile>,
    /// Changes made to the file, and how many of them an fdatasync has covered.
    changes: u64,
    synced: u64,
    /// The highest write number given out (numbered) so far.
    given: u64,
    last_rotate: std::time::Instant,
}

/// How often the older epoch may be cleared: bits stay set a while, so a region
/// written again and again costs no file write each time.
const ROTATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Intents {
    /// Epoch `1 - current` holds `older` (bits a restart found, written by writes up
    /// to `older_max`); new writes mark epoch `current`, empty. `file` is None only
    /// in unit tests.
    pub fn new(older: DirtyMap, older_max: u64, file: Option<IntentFile>) -> Intents {
        let empty = {
            let mut e = older.clone();
            e.clear();
            e
        };
        Intents {
            st: std::sync::Mutex::new(State {
                maps: [empty, older],
                current: 0,
                inflight: [0; 2],
                max_n: [0, older_max],
                file,
                changes: 0,
                synced: 0,
                given: older_max,
                last_rotate: std::time::Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the grains a write of `len` bytes at `offset` of `volume` touches, in
    /// the file too, before the write reaches the volume; the epoch it marked, to be
    /// given back to [`Intents::done`].
    pub fn intend(&self, volume: u16, offset: u64, len: u64) -> usize {
        let mut g = self.lock();
        let g = &mut *g;
        let e = g.current;
        let mut failed = Ok(());
        let file = g.file.as_ref();
        let mut wrote = false;
        g.maps[e].mark_words(volume, offset, len, |i, v| {
            if let Some(f) = file {
                if failed.is_ok() {
                    failed = f.write_word(e, i, v);
                    wrote = true;
                }
            }
        });
        g.changes += u64::from(wrote);
        if let Err(err) = failed {
            Self::lost(g, err);
        }
        g.inflight[e] += 1;
        e
    }

    /// The file cannot be written: it is removed (the next start takes a base, as
    /// without a map) and the run goes on without one. Writes never fail for it.
    fn lost(g: &mut State, e: impl std::fmt::Display) {
        if let Some(f) = g.file.take() {
            tracing::error!(path = %f.path.display(), error = %e,
                "the write-intent map cannot be written: it is removed, and the next start takes a base delta");
            // Gone, or at least emptied (unreadable, so a base): a stale map must not
            // be resumed from.
            if let Err(e) = std::fs::remove_file(&f.path).or_else(|_| f.file.set_len(0)) {
                tracing::error!(path = %f.path.display(), error = %e,
                    "cannot remove or empty the write-intent map either: a restart after a crash may miss writes made from now on");
            }
        }
    }

    /// A write that marked `epoch` was numbered `n` (None: abandoned); numbers past
    /// those reserved in the file reserve the next block first.
    pub fn done(&self, epoch: usize, n: Option<u64>) {
        let mut g = self.lock();
        g.inflight[epoch] -= 1;
        if let Some(n) = n {
            g.max_n[epoch] = g.max_n[epoch].max(n);
            Self::reserve(&mut g, n);
        }
    }

    /// A number given out without an intent (a read back): reserved like a write's.
    pub fn numbered(&self, n: u64) {
        Self::reserve(&mut self.lock(), n)
    }

    fn reserve(g: &mut State, n: u64) {
        g.given = g.given.max(n);
        if let Some(f) = g.file.as_mut().filter(|f| f.header.reserved < n) {
            match f.update(|h| h.reserved = n + RESERVE) {
                Ok(()) => g.changes += 1,
                Err(e) => Self::lost(g, e),
            }
        }
    }

    /// Told by the shipper that the journal holds every write up to `through` in
    /// order: the older epoch is cleared and becomes the current one once every
    /// write that marked it is numbered at or below that.
    pub fn rotate(&self, through: u64) {
        let mut g = self.lock();
        let older = 1 - g.current;
        if g.last_rotate.elapsed() < ROTATE_EVERY
            || g.inflight[older] > 0
            || g.max_n[older] > through
        {
            return;
        }
        if !g.maps[older].is_empty() {
            if let Some(Err(e)) = g.file.as_ref().map(|f| f.clear(older)) {
                Self::lost(&mut g, e);
            }
            g.maps[older].clear();
        }
        g.current = older;
        g.max_n[older] = 0;
        g.last_rotate = std::time::Instant::now();
    }

    /// Makes what is set durable (a FLUSH, a FUA write), if anything was set since.
    /// The fdatasync runs outside the lock, so writes on other connections do not
    /// wait behind it; a FLUSH returns only once a sync that began after its writes'
    /// bits were set has returned.
    pub fn sync(&self) {
        let (target, file) = {
            let g = self.lock();
            if g.synced >= g.changes {
                return;
            }
            (
                g.changes,
                g.file.as_ref().map(|f| (f.file.clone(), f.path.clone())),
            )
        };
        let Some((file, path)) = file else { return };
        let done = file.sync_data();
        let mut g = self.lock();
        match done {
            Ok(()) => g.synced = g.synced.max(target),
            Err(e) => Self::lost(&mut g, Error::io("cannot sync", &path)(e)),
        }
    }

    /// Says durably that the splitter stopped (serving ended short of a crash): the
    /// next start takes a base, and numbers after the last number given out.
    pub fn stopped_clean(&self) {
        let last = self.lock().given;
        self.update(|h| {
            h.base_next = true;
            h.reserved = h.reserved.min(last);
        })
    }

    /// Says durably that this run's stream began with `base_delta`, which holds the
    /// volumes after write `exact_from`: a crash from now on goes on with it.
    pub fn stream_began(&self, base_delta: u64, exact_from: u64) {
        self.update(|h| {
            h.base_next = false;
            h.base_delta = base_delta;
            h.exact_from = exact_from;
        })
    }

    fn update(&self, f: impl FnOnce(&mut Header)) {
        let mut g = self.lock();
        if let Some(file) = &mut g.file {
            let path = file.path.clone();
            let done = file
                .update(f)
                .map_err(Error::io("cannot write", &path))
                .and_then(|()| file.sync());
            if let Err(e) = done {
                Self::lost(&mut g, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(reserved: u64) -> Header {
        Header {
            grain: 65536,
            boot: boot_id(),
            reserved,
            base_next: false,
            base_delta: 4,
            exact_from: 9,
            sizes: vec![8 << 20, 1 << 20],
        }
    }

    #[test]
    fn intents_reach_the_file_before_the_write_and_clear_an_epoch_once_journalled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("write-intent");
        let empty = DirtyMap::new(&[8 << 20, 1 << 20], 65536);
        let file = IntentFile::create(&path, header(10), [&empty, &empty]).unwrap();
        let i = Intents::new(empty.clone(), 0, Some(file));
        let e = i.intend(0, 100_000, 10);
        // Read back at once, as a restart after a kill would.
        let (h, maps) = IntentFile::read(&path).unwrap().unwrap();
        assert_eq!(h, header(10));
        assert_eq!(maps[e].dirty_bytes(), 65536, "grain 1 of volume 0");
        // Numbering past the reserve reserves the next block first.
        i.done(e, Some(11));
        assert_eq!(
            IntentFile::read(&path).unwrap().unwrap().0.reserved,
            11 + RESERVE
        );
        // The first rotation (after a second) moves to the empty epoch; the next
        // clears this one once write 11 is journalled in order, not before.
        let mut st = i.lock();
        st.last_rotate -= ROTATE_EVERY;
        drop(st);
        i.rotate(11);
        let e2 = i.intend(1, 0, 1);
        assert_ne!(e, e2);
        i.done(e2, Some(12));
        i.lock().last_rotate -= ROTATE_EVERY;
        i.rotate(11);
        let maps = IntentFile::read(&path).unwrap().unwrap().1;
        assert!(maps[e].is_empty() && !maps[e2].is_empty());
        i.lock().last_rotate -= ROTATE_EVERY;
        i.rotate(11);
        let maps = IntentFile::read(&path).unwrap().unwrap().1;
        assert!(
            !maps[e2].is_empty(),
            "write 12 is not journalled in order yet"
        );
        i.rotate(12);
        i.stopped_clean();
        let (h, maps) = IntentFile::read(&path).unwrap().unwrap();
        assert!(h.base_next && h.reserved == 12 && maps[0].is_empty() && maps[1].is_empty());
        // A damaged header is named.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(IntentFile::read(&path)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }
}
