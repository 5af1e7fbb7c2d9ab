//! The dirty-region map: which grains of a split group's volumes were written while
//! the splitter only marked writes (docs/journal-format.md, "Gaps"), so that a
//! resynchronisation reads those and nothing else.
//!
//! One bit per grain (the `dirty-granularity`, 64 KiB by default: 2 KiB of map per
//! GiB of volume). The marking map lives in memory; what survives a crash is the
//! write-intent map (`intent`), two of these in a file, which covers it.

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
    #[cfg(test)]
    pub fn map_bytes(&self) -> u64 {
        self.bits.iter().map(|b| b.len() as u64 * 8).sum()
    }

    /// Marks the grains `len` bytes at `offset` of `volume` touch (at least the one
    /// `offset` is in, so that a write of nothing still leaves the map non-empty).
    pub fn mark(&mut self, volume: u16, offset: u64, len: u64) {
        self.mark_words(volume, offset, len, |_, _| {});
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

    /// Its words, every volume's after the one before: what the write-intent file
    /// holds of it.
    pub fn words(&self) -> Vec<u64> {
        self.bits.iter().flatten().copied().collect()
    }

    /// Sets its words from `words`, in the order `words` gives them.
    pub fn set_words(&mut self, mut words: impl Iterator<Item = u64>) {
        self.count = 0;
        for w in self.bits.iter_mut().flatten() {
            *w = words.next().unwrap_or(0);
            self.count += w.count_ones() as u64;
        }
    }

    /// Marks what `other` (a map of the same volumes and grain) marks.
    pub fn union(&mut self, other: &DirtyMap) {
        let words = self
            .words()
            .into_iter()
            .zip(other.words())
            .map(|(a, b)| a | b)
            .collect::<Vec<_>>();
        self.set_words(words.into_iter());
    }

    /// Whether it is a map of these volume sizes and grain.
    pub fn fits(&self, sizes: &[u64], grain: u64) -> bool {
        self.sizes == sizes && self.grain() == grain
    }

    /// [`DirtyMap::mark`], telling `changed` each word that changed: its index in
    /// [`DirtyMap::words`] and its new value.
    pub fn mark_words(
        &mut self,
        volume: u16,
        offset: u64,
        len: u64,
        mut changed: impl FnMut(usize, u64),
    ) {
        let v = volume as usize;
        if v >= self.bits.len() {
            return;
        }
        let n = grains(self.sizes[v], self.grain_shift);
        if n == 0 {
            return;
        }
        let base: usize = self.bits[..v].iter().map(Vec::len).sum();
        let first = (offset >> self.grain_shift).min(n - 1);
        let end = offset
            .saturating_add(len.max(1))
            .div_ceil(self.grain())
            .clamp(first + 1, n);
        let bits = &mut self.bits[v];
        let mut g = first;
        while g < end {
            let w = (g / 64) as usize;
            let upto = end.min((w as u64 + 1) * 64);
            let old = bits[w];
            for b in g..upto {
                bits[w] |= 1 << (b % 64);
            }
            if bits[w] != old {
                self.count += (bits[w] ^ old).count_ones() as u64;
                changed(base + w, bits[w]);
            }
            g = upto;
        }
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
    fn words_round_trip_and_marking_tells_which_changed() {
        let mut m = DirtyMap::new(&[64 << 20, 3 << 20], 65536);
        let mut changed = Vec::new();
        m.mark_words(1, 0, 1, |i, v| changed.push((i, v)));
        // Volume 0 has 1024 grains, 16 words: volume 1's first word is the 17th.
        assert_eq!(changed, [(16, 1)]);
        changed.clear();
        m.mark_words(1, 100, 1, |i, v| changed.push((i, v)));
        assert!(changed.is_empty(), "a grain marked already changes nothing");
        let mut n = DirtyMap::new(&[64 << 20, 3 << 20], 65536);
        n.set_words(m.words().into_iter());
        assert_eq!(n, m);
        let mut o = DirtyMap::new(&[64 << 20, 3 << 20], 65536);
        o.mark(0, 0, 1);
        o.union(&m);
        assert_eq!(o.dirty_bytes(), 2 * 65536);
        // 2 KiB per GiB at 64 KiB grains.
        assert_eq!(DirtyMap::new(&[1 << 30], 65536).map_bytes(), 2048);
    }
}
