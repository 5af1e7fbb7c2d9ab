//! The dirty-region map: which grains of a split group's volumes were written while
//! the splitter only marked writes (docs/journal-format.md, "Gaps"), so that a
//! resynchronisation reads those and nothing else.
//!
//! One bit per grain (the `dirty-granularity`, 64 KiB by default: 2 KiB of map per
//! GiB of volume). It is kept in memory and written, whole and atomically, to the
//! group's state directory at every FLUSH while it is not empty; its file format is
//! `encode`'s.
use crate::error::{Error, Result};
use std::path::Path;

const MAGIC: &[u8; 8] = b"CASCDMAP";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyMap {
    grain_shift: u32,
    sizes: Vec<u64>,
    bits: Vec<Vec<u64>>,
    /// Grains set, over every volume.
    count: u64,
}

impl DirtyMap {
    /// An empty map of volumes of `sizes` bytes, one bit per `grain` bytes (a power
    /// of two).
    pub fn new(sizes: &[u64], grain: u64) -> DirtyMap {
        assert!(
            grain.is_power_of_two(),
            "checked when the config was loaded"
        );
        let grain_shift = grain.trailing_zeros();
        let bits = sizes
            .iter()
            .map(|s| vec![0; grains(*s, grain_shift).div_ceil(64) as usize])
            .collect();
        DirtyMap {
            grain_shift,
            sizes: sizes.to_vec(),
            bits,
            count: 0,
        }
    }

    pub fn grain(&self) -> u64 {
        1 << self.grain_shift
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of volume the set grains cover (the last grain of a volume counts whole).
    pub fn dirty_bytes(&self) -> u64 {
        self.count << self.grain_shift
    }

    /// Unmarks everything.
    pub fn clear(&mut self) {
        self.bits.iter_mut().flatten().for_each(|w| *w = 0);
        self.count = 0;
    }

    /// Bytes of memory the bits take.
    pub fn map_bytes(&self) -> u64 {
        self.bits.iter().map(|b| b.len() as u64 * 8).sum()
    }

    /// Marks the grains `len` bytes at `offset` of `volume` touch (at least the one
    /// `offset` is in, so that a write of nothing still leaves the map non-empty).
    pub fn mark(&mut self, volume: u16, offset: u64, len: u64) {
        let grain = self.grain();
        let Some(bits) = self.bits.get_mut(volume as usize) else {
            return;
        };
        let n = grains(self.sizes[volume as usize], self.grain_shift);
        if n == 0 {
            return;
        }
        let first = (offset >> self.grain_shift).min(n - 1);
        let end = (offset.saturating_add(len.max(1)).div_ceil(grain)).min(n);
        for g in first..end.max(first + 1) {
            let (w, b) = ((g / 64) as usize, g % 64);
            if bits[w] & (1 << b) == 0 {
                bits[w] |= 1 << b;
                self.count += 1;
            }
        }
    }

    /// Takes the first run of set grains at or after `from` (a volume and an
    /// offset; it wraps around to the start), at most `max` bytes, out of the map:
    /// its volume, offset and length, clipped to the volume's end.
    pub fn take_run(&mut self, from: (u16, u64), max: u64) -> Option<(u16, u64, u64)> {
        if self.count == 0 {
            return None;
        }
        let volumes = self.bits.len();
        let max_grains = (max >> self.grain_shift).max(1);
        // Every volume once from the cursor on, then the cursor's volume before it.
        for k in 0..=volumes {
            let v = (from.0 as usize + k) % volumes;
            let start = if k == 0 {
                from.1 >> self.grain_shift
            } else {
                0
            };
            let n = grains(self.sizes[v], self.grain_shift);
            let Some(first) = next_set(&self.bits[v], start, n) else {
                continue;
            };
            let mut end = first;
            while end < n && end - first < max_grains && get(&self.bits[v], end) {
                clear(&mut self.bits[v], end);
                self.count -= 1;
                end += 1;
            }
            let offset = first << self.grain_shift;
            let len = (end << self.grain_shift).min(self.sizes[v]) - offset;
            return Some((v as u16, offset, len));
        }
        unreachable!("count says a grain is set")
    }

    /// The map as its file holds it: magic, version, grain shift, the volumes'
    /// sizes, their bits, and a CRC-32C of all that.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.map_bytes() as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.grain_shift.to_le_bytes());
        out.extend_from_slice(&(self.sizes.len() as u32).to_le_bytes());
        for s in &self.sizes {
            out.extend_from_slice(&s.to_le_bytes());
        }
        for w in self.bits.iter().flatten() {
            out.extend_from_slice(&w.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<DirtyMap, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .filter(|n| *n >= 20)
            .ok_or("shorter than its header")?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("its checksum does not match".into());
        }
        if &body[..8] != MAGIC {
            return Err("it is not a dirty-region map (bad magic)".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap());
        if u32_at(8) != VERSION {
            return Err(format!("unknown dirty-map version {}", u32_at(8)));
        }
        let shift = u32_at(12);
        let volumes = u32_at(16) as usize;
        if shift > 40 || body.len() < 20 + volumes * 8 {
            return Err("its header is out of range".into());
        }
        let mut at = 20;
        let mut sizes = Vec::with_capacity(volumes);
        for _ in 0..volumes {
            sizes.push(u64::from_le_bytes(body[at..at + 8].try_into().unwrap()));
            at += 8;
        }
        let mut m = DirtyMap::new(&sizes, 1 << shift);
        if body.len() - at != m.map_bytes() as usize {
            return Err("its length does not match its volumes".into());
        }
        for w in m.bits.iter_mut().flatten() {
            *w = u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
            m.count += w.count_ones() as u64;
            at += 8;
        }
        Ok(m)
    }

    /// Writes the map to `path` atomically (temp file, fsync, rename, directory fsync).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.encode())
    }

    /// The map saved at `path`, if there is one.
    pub fn load(path: &Path) -> Result<Option<DirtyMap>> {
        match std::fs::read(path) {
            Ok(b) => DirtyMap::decode(&b)
                .map(Some)
                .map_err(|reason| Error::Config {
                    file: path.to_path_buf(),
                    reason: format!("the dirty-region map cannot be read: {reason}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                what: "cannot read",
                path: path.to_path_buf(),
                cause: e,
            }),
        }
    }
}

/// The map's file in the group's state directory, written at a FLUSH when the map
/// changed since it was last written (one writer at a time, newest last).
pub struct MapFile {
    pub path: std::path::PathBuf,
    saved: std::sync::Mutex<u64>,
}

impl MapFile {
    pub fn new(path: std::path::PathBuf) -> MapFile {
        MapFile {
            path,
            saved: std::sync::Mutex::new(0),
        }
    }

    /// Writes the map `changed_since` gives (its change number and itself, if it
    /// changed since the one written last).
    pub fn save(&self, changed_since: impl FnOnce(u64) -> Option<(u64, DirtyMap)>) -> Result<()> {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((gen, map)) = changed_since(*saved) {
            map.save(&self.path)?;
            *saved = gen;
        }
        Ok(())
    }
}

fn grains(size: u64, shift: u32) -> u64 {
    size.div_ceil(1 << shift)
}

fn get(bits: &[u64], g: u64) -> bool {
    bits[(g / 64) as usize] & (1 << (g % 64)) != 0
}

fn clear(bits: &mut [u64], g: u64) {
    bits[(g / 64) as usize] &= !(1 << (g % 64));
}

/// The first set grain at or after `start`, below `n`: a word at a time.
fn next_set(bits: &[u64], start: u64, n: u64) -> Option<u64> {
    let mut w = (start / 64) as usize;
    let mut word = bits.get(w)? & (!0u64 << (start % 64));
    loop {
        if word != 0 {
            let g = w as u64 * 64 + word.trailing_zeros() as u64;
            return (g < n).then_some(g);
        }
        w += 1;
        word = *bits.get(w)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_grains_and_takes_them_back_as_runs() {
        let mut m = DirtyMap::new(&[1 << 20, 100_000], 4096);
        assert!(m.is_empty());
        m.mark(0, 4095, 2); // grains 0 and 1
        m.mark(0, 8192, 4096); // grain 2
        m.mark(1, 99_999, 0); // the last, clipped grain of volume 1
        m.mark(0, 900_000, 0);
        assert_eq!(m.dirty_bytes(), 5 * 4096);
        assert_eq!(m.take_run((0, 0), 8192), Some((0, 0, 8192)));
        assert_eq!(m.take_run((0, 0), 1 << 20), Some((0, 8192, 4096)));
        // From a cursor past what is left of volume 0: volume 1, then wrap to 0.
        assert_eq!(m.take_run((0, 950_000), 1 << 20), Some((1, 98_304, 1696)));
        assert_eq!(
            m.take_run((1, 0), 1 << 20),
            Some((0, 219 * 4096, 4096)),
            "wraps around"
        );
        assert_eq!(m.take_run((0, 0), 1 << 20), None);
        assert!(m.is_empty());
    }

    #[test]
    fn its_file_round_trips_and_damage_is_named() {
        let mut m = DirtyMap::new(&[64 << 20, 3 << 20], 65536);
        m.mark(0, 1 << 20, 300_000);
        m.mark(1, 0, 1);
        let bytes = m.encode();
        assert_eq!(DirtyMap::decode(&bytes).unwrap(), m);
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert!(DirtyMap::decode(&bad).unwrap_err().contains("checksum"));
        assert!(DirtyMap::decode(&bytes[..10]).is_err());
        // 2 KiB per GiB at 64 KiB grains.
        assert_eq!(DirtyMap::new(&[1 << 30], 65536).map_bytes(), 2048);
    }
}
