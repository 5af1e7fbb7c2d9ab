//! The manifest: what an object replica holds, with each object's size and CRC-32C.
//! It is the replica's cursor, and what a restore plans its reads from. How it is
//! stored (a head and chunks) is in `head.rs`.
use crate::error::{Error, Result};
use crate::journal::record::Writes;
use crate::journal::{BookmarkEntry, Point, Until};
use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The id of the journal these deltas come from.
    #[serde(default)]
    pub journal: Option<String>,
    pub deltas: Vec<ManifestDelta>,
    /// Synthetic full images, oldest first.
    #[serde(default)]
    pub fulls: Vec<ManifestDelta>,
    pub bookmarks: Vec<BookmarkEntry>,
}

impl Manifest {
    /// The newest delta the replica holds.
    pub fn cursor(&self) -> u64 {
        let d = self.deltas.last().map_or(0, |d| d.delta);
        d.max(self.fulls.last().map_or(0, |f| f.delta))
    }

    /// The points a restore can reach (ids and times, ascending): every full image
    /// and every delta after the oldest one.
    pub fn points(&self) -> Vec<(u64, i64)> {
        let mut p: Vec<(u64, i64)> = self
            .deltas
            .iter()
            .chain(&self.fulls)
            .map(|d| (d.delta, d.time_ns))
            .collect();
        p.sort_unstable();
        p.dedup_by_key(|p| p.0);
        p
    }

    /// The newest full image (a synthetic one, or a full delta) at or before `n`.
    pub fn full_at(&self, n: u64) -> Option<&ManifestDelta> {
        self.fulls
            .iter()
            .chain(self.deltas.iter().filter(|d| d.is_full()))
            .filter(|d| d.delta <= n)
            .max_by_key(|d| d.delta)
    }

    /// The delta object holding delta `n` (a run of split deltas holds several).
    fn holding(&self, n: u64) -> Option<&ManifestDelta> {
        self.deltas.iter().find(|d| d.first() <= n && n <= d.delta)
    }

    /// What a restore to `point` reads, and where it stops when the manifest alone
    /// can say. A write, or a time that falls in a run of split deltas, is found in
    /// the records themselves once they are downloaded.
    pub fn reach(&self, point: &Point, url: &str) -> Result<Reach> {
        let in_run = |d: &ManifestDelta, until: Option<Until>| Reach {
            full_at: d.first() - 1,
            end: d.delta,
            until,
        };
        match point {
            Point::Write(n) => {
                let split = || self.deltas.iter().filter_map(|d| d.writes.map(|w| (d, w)));
                let Some((d, w)) = split().find(|(_, w)| w.last_write >= *n) else {
                    return Err(Error::NotFound(match split().next_back() {
                        Some((_, w)) => format!(
                            "{url} holds writes up to {}; seq:{n} is not exported there (yet)",
                            w.last_write
                        ),
                        None => format!("{url} holds no split deltas, so no write seq:{n}"),
                    }));
                };
                // Its last write is the object's end; any other is inside it, or (before
                // its first write) in the base delta before it.
                Ok(if w.last_write == *n {
                    Reach::at(d.delta)
                } else {
                    in_run(d, None)
                })
            }
            Point::Time(t) => {
                // The newest object begun at or before the time: a run is searched
                // for the last write at or before it; a whole delta is the point.
                let d = self.resolve(point, url)?;
                let starts: Vec<(u64, i64)> = self
                    .deltas
                    .iter()
                    .filter(|d| d.writes.is_some())
                    .map(|d| (d.delta, d.first_time_ns.unwrap_or(d.time_ns)))
                    .collect();
                match starts.iter().rev().find(|(_, start)| start <= t) {
                    Some((run, _)) if *run > d => {
                        Ok(in_run(self.holding(*run).expect("listed above"), None))
                    }
                    _ => Ok(Reach::at(d)),
                }
            }
            _ => {
                let n = self.resolve(point, url)?;
                match self.holding(n) {
                    Some(d) if n < d.delta => Ok(in_run(d, Some(Until::from(n)))),
                    _ => Ok(Reach::at(n)),
                }
            }
        }
    }

    /// The newest exported delta at `point`; a delta inside a run of split deltas
    /// counts as well as the run's last.
    pub fn resolve(&self, point: &Point, url: &str) -> Result<u64> {
        let mut points = self.points();
        if let Point::Delta(id) = point {
            if self.holding(*id).is_some() {
                points.push((*id, 0));
            }
        }
        point.resolve_in(
            &points,
            self.bookmarks
                .iter()
                .map(|b| (b.name.as_str(), b.after_delta)),
            url,
        )
    }

    /// The objects a restore to `reach` reads: the newest full image at or before
    /// `reach.full_at`, then every delta object after it up to the one ending at
    /// `reach.end`.
    pub fn chain(&self, reach: &Reach, url: &str) -> Result<Vec<&ManifestDelta>> {
        let base = self.full_at(reach.full_at).ok_or_else(|| {
            Error::NotFound(format!(
                "{url}: no full image at or before delta {}",
                reach.full_at
            ))
        })?;
        let mut chain = vec![base];
        let mut next = base.delta + 1;
        while next <= reach.end {
            let d = self
                .holding(next)
                .filter(|d| d.first() == next)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{url}: the manifest lacks delta {next}, needed to restore delta {}",
                        reach.end
                    ))
                })?;
            chain.push(d);
            next = d.delta + 1;
        }
        Ok(chain)
    }
}

/// Where a restore goes: the objects it reads, from the newest full image at or
/// before `full_at` through the object ending at delta `end`, and where replay of
/// them stops, if the manifest knows (None: the point is found in the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub full_at: u64,
    pub end: u64,
    pub until: Option<Until>,
}

impl Reach {
    /// The state after delta `n`, the end of an object.
    pub fn at(n: u64) -> Reach {
        Reach {
            full_at: n,
            end: n,
            until: Some(Until::from(n)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestDelta {
    /// The delta, or the last of a run of split deltas that the object holds.
    pub delta: u64,
    /// The delta's time (of a run, its last delta's).
    pub time_ns: i64,
    pub flags: u32,
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
    pub changed_bytes: u64,
    /// Of a run of split deltas: its first delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    /// Of a run: its first delta's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time_ns: Option<i64>,
    /// Of split deltas: the writes the object holds (the first's `exact_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Writes>,
}

impl ManifestDelta {
    pub fn is_full(&self) -> bool {
        self.flags & crate::journal::record::FLAG_FULL != 0
    }

    /// The first delta the object holds.
    pub fn first(&self) -> u64 {
        self.first.unwrap_or(self.delta)
    }
}
