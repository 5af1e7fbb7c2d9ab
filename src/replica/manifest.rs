//! The manifest: what an object replica holds, with each object's size and CRC-32C.
//! It is the replica's cursor, and what a restore plans its reads from. How it is
//! stored (a head and chunks) is in `head.rs`.
use crate::error::{Error, Result};
use crate::journal::{BookmarkEntry, Point};
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

    /// The newest exported delta at `point`.
    pub fn resolve(&self, point: &Point, url: &str) -> Result<u64> {
        point.resolve_in(
            &self.points(),
            self.bookmarks
                .iter()
                .map(|b| (b.name.as_str(), b.after_delta)),
            url,
        )
    }

    /// The objects a restore to delta `n` reads: the newest full image at or before
    /// `n`, then every delta after it up to `n`.
    pub fn chain(&self, n: u64, url: &str) -> Result<Vec<&ManifestDelta>> {
        let base = self.full_at(n).ok_or_else(|| {
            Error::NotFound(format!("{url}: no full image at or before delta {n}"))
        })?;
        let mut chain = vec![base];
        for want in base.delta + 1..=n {
            let d = self
                .deltas
                .iter()
                .find(|d| d.delta == want)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{url}: the manifest lacks delta {want}, needed to restore delta {n}"
                    ))
                })?;
            chain.push(d);
        }
        Ok(chain)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestDelta {
    pub delta: u64,
    pub time_ns: i64,
    pub flags: u32,
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
    pub changed_bytes: u64,
}

impl ManifestDelta {
    pub fn is_full(&self) -> bool {
        self.flags & crate::journal::record::FLAG_FULL != 0
    }
}
