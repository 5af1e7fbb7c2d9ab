//! Gaps where a splitter lost write order (docs/journal-format.md, "Gaps"): which
//! points are consistent, and the nearest ones either side of a point that is not.
use super::{Journal, Until};
use crate::error::{Error, Result};

impl Journal {
    /// `until` when it is a consistent point; inside a gap, an error naming the
    /// nearest consistent points before and after it.
    pub fn consistent(&self, until: Until) -> Result<Until> {
        let d = self.delta(until.delta)?;
        let Some(w) = d.writes else {
            return Ok(until);
        };
        let n = until.write.unwrap_or(w.last_write);
        if w.consistent(n) {
            return Ok(until);
        }
        let (before, after) = self.gap_edges(until.delta);
        Err(Error::InvalidArgument(format!(
            "write {n} (delta {}) of {} lies in a gap, where the splitter fell behind and \
             write order was lost; the nearest consistent points are {before} before it and {after} after it",
            until.delta,
            self.dir.display()
        )))
    }

    /// A time resolved to `until`, whose last write was acknowledged at `at`: refused
    /// when a gap begins right after that write and the time is later, since writes
    /// that were only marked may have been acknowledged in between.
    pub(super) fn time_before_gap(&self, until: Until, at: i64, t: i64) -> Result<Until> {
        let d = self.delta(until.delta)?;
        let inside = |w: crate::journal::record::Writes, n: u64| {
            w.gap
                .is_some_and(|g| g.lost_after == n && !(g.resumes && n == w.last_write))
        };
        let next = self.delta(until.delta + 1).ok().and_then(|e| e.writes);
        let begins = match d.writes {
            Some(w) => {
                let n = until.write.unwrap_or(w.last_write);
                inside(w, n) || (n == w.last_write && next.is_some_and(|x| inside(x, n)))
            }
            None => next.is_some_and(|x| inside(x, x.first_write - 1)),
        };
        if !begins || t <= at {
            return self.consistent(until);
        }
        let gap_delta = if d.writes.is_some_and(|w| w.gap.is_some()) {
            until.delta
        } else {
            until.delta + 1
        };
        let (before, after) = self.gap_edges(gap_delta);
        Err(Error::InvalidArgument(format!(
            "that time lies in a gap of {}, where the splitter fell behind and write order was lost; \
             the nearest consistent points are {before} before it and {after} after it",
            self.dir.display()
        )))
    }

    /// The consistent points either side of a gap that split delta `at` lies in, as
    /// the points a user names.
    fn gap_edges(&self, at: u64) -> (String, String) {
        let deltas = &self.index.deltas;
        let i = (at - self.first_delta()) as usize;
        let mut before = "none left (retention pruned where the gap began)".to_string();
        for (k, d) in deltas[..=i].iter().enumerate().rev() {
            let Some(w) = d.writes else {
                before = format!("delta {} (the base of its stream)", d.delta);
                break;
            };
            if k < i && w.consistent(w.last_write) {
                before = format!("seq:{}", w.last_write);
                break;
            }
            if let Some(g) = w.gap.filter(|g| g.lost_after >= w.first_write) {
                before = format!("seq:{}", g.lost_after);
                break;
            }
        }
        let after = deltas[i..]
            .iter()
            .find_map(|d| match d.writes {
                None => Some(format!("delta {} (a new base)", d.delta)),
                Some(w) if w.gap.is_some_and(|g| g.resumes) => {
                    Some(format!("seq:{}", w.last_write))
                }
                Some(_) => None,
            })
            .unwrap_or_else(|| "none yet (the splitter has not resynchronised)".to_string());
        (before, after)
    }
}
