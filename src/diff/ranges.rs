//! A map from byte ranges to values, ranges never overlapping: who wrote each byte
//! last, what a byte reads from. Inserting a range replaces whatever covered it, so
//! the map holds at most twice as many entries as ranges were inserted, and memory
//! follows the number of writes, never the size of the volume.
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct RangeMap<V> {
    /// start → (end, value); `start < end`, and no two entries overlap.
    map: BTreeMap<u64, (u64, V)>,
}

impl<V> Default for RangeMap<V> {
    fn default() -> Self {
        RangeMap {
            map: BTreeMap::new(),
        }
    }
}

/// One piece of a looked-up range: `[start, end)` and what covers it, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<V> {
    pub start: u64,
    pub end: u64,
    pub value: Option<V>,
}

impl<V: Clone> RangeMap<V> {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Makes `[start, end)` map to `value`, cutting back whatever covered it.
    pub fn insert(&mut self, start: u64, end: u64, value: V) {
        if start >= end {
            return;
        }
        self.cut(start, end);
        self.map.insert(start, (end, value));
    }

    /// Removes the parts of `[start, end)` whose value `drop` selects.
    pub fn remove_if(&mut self, start: u64, end: u64, drop: impl Fn(&V) -> bool) {
        for p in self.pieces(start, end) {
            if p.value.as_ref().is_some_and(&drop) {
                self.cut(p.start, p.end);
            }
        }
    }

    /// `[start, end)` in order, split where what covers it changes; uncovered
    /// stretches come back with `value: None`.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<Piece<V>> {
        let mut out = Vec::new();
        let mut at = start;
        // The entry that begins before `start` may reach into the range.
        let before = self
            .map
            .range(..start)
            .next_back()
            .filter(|(_, (e, _))| *e > start);
        for (&s, (e, v)) in before.into_iter().chain(self.map.range(start..end)) {
            let s = s.max(start);
            if s > at {
                out.push(Piece {
                    start: at,
                    end: s,
                    value: None,
                });
            }
            let e = (*e).min(end);
            out.push(Piece {
                start: s,
                end: e,
                value: Some(v.clone()),
            });
            at = e;
        }
        if at < end {
            out.push(Piece {
                start: at,
                end,
                value: None,
            });
        }
        out
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &V)> {
        self.map.iter().map(|(&s, (e, v))| (s, *e, v))
    }

    /// Takes `[start, end)` out of every entry that overlaps it, keeping the parts
    /// outside.
    fn cut(&mut self, start: u64, end: u64) {
        if let Some((&s, (e, v))) = self.map.range(..start).next_back() {
            if *e > start {
                let (e, v) = (*e, v.clone());
                self.map.insert(s, (start, v.clone()));
                if e > end {
                    self.map.insert(end, (e, v));
                }
            }
        }
        let inside: Vec<u64> = self.map.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            let (e, v) = self.map.remove(&s).expect("listed");
            if e > end {
                self.map.insert(end, (e, v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a byte array: after any inserts and removals, every byte maps to
        /// what the array says, and `pieces` tiles the range asked for.
        #[test]
        fn matches_a_byte_array(ops in proptest::collection::vec((0u64..200, 1u64..60, 0u8..4, any::<bool>()), 1..40),
                                q in (0u64..200, 1u64..100)) {
            let mut m = RangeMap::default();
            let mut bytes = vec![None; 300];
            for (s, len, v, insert) in ops {
                let e = s + len;
                if insert {
                    m.insert(s, e, v);
                    bytes[s as usize..e as usize].fill(Some(v));
                } else {
                    m.remove_if(s, e, |x| *x == v);
                    for b in &mut bytes[s as usize..e as usize] {
                        if *b == Some(v) { *b = None; }
                    }
                }
            }
            let (s, e) = (q.0, q.0 + q.1);
            let pieces = m.pieces(s, e);
            let mut at = s;
            for p in &pieces {
                prop_assert_eq!(p.start, at);
                prop_assert!(p.end > p.start);
                for b in p.start..p.end {
                    prop_assert_eq!(bytes[b as usize], p.value);
                }
                at = p.end;
            }
            prop_assert_eq!(at, e);
            let mut last = 0;
            for (s, e, _) in m.iter() {
                prop_assert!(s >= last && e > s);
                last = e;
            }
        }
    }
}
