//! The undo journal of a live block replica: what lets a replica kept at the newest
//! point be rewound to an earlier one, or served as it was then, without a full
//! restore (docs/undo.md has the algorithm, its invariants and its files).
//!
//! Each delta applied to the replica becomes an **entry**: its redo (the extents it
//! wrote, copied from the change journal as they are stored there) and its undo (what
//! the replica held over those extents before). An entry's undo is made without
//! reading the replica wherever it can: where an earlier entry still held wrote the
//! bytes last, the undo *refers* to that entry's redo. Only bytes no held entry wrote
//! are read from the replica, before the delta is applied. When the journal is over
//! its bounds the oldest entry retires, and the bytes later entries refer to become
//! their own undo data, copied from the retiring redo (again no read of the replica).
//!
//! Invariant: every byte an entry's redo covers that existed before the entry has
//! undo in that entry: its own data, zeros, or a reference to the newest earlier
//! held entry that wrote it. Hence every point from just before the oldest entry to
//! the newest is reachable: undo entries newest first, then redo forward.
//!
//! Crash safety: an entry's files are durable (the map written last, atomically)
//! before the first byte of its delta reaches the replica, and an entry that exists
//! is never made again (a re-applied delta would read undo from a replica it already
//! half changed). A retirement makes the copied undo durable before it removes the
//! entry it came from. Files are named by an **epoch**, kept in the target's cursor:
//! a new epoch (undo lost, a replica rebuilt) makes every older file stale at once.
mod map;
mod reader;
mod record;
mod retire;
pub mod serve;
mod steps;

pub use map::EntryMap;
pub use record::RecordStats;
pub use steps::{path, Step};

use crate::diff::RangeMap;
use crate::error::{Error, Result};
use crate::journal::Until;
use map::Source;
use reader::Reader;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// How far back a live replica's undo reaches: entries retire, oldest first, while
/// the journal holds more than `max_bytes`, or while the entry after the oldest is
/// itself older than `max_age` (so the window reaches at least `max_age` back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: Option<u64>,
    pub max_age: Option<std::time::Duration>,
}

/// The points a live replica can reach: every delta from `oldest` (the point just
/// before the oldest entry) to `newest`, and inside a split delta after `oldest`
/// every consistent write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub oldest: u64,
    pub newest: u64,
    /// Bytes of undo journal held (maps and data files).
    pub bytes: u64,
    pub entries: u64,
}

pub struct UndoStore {
    dir: PathBuf,
    /// The target's name: its files begin with it, so targets may share a directory.
    target: String,
    epoch: u64,
    entries: BTreeMap<u64, EntryMap>,
    /// Per volume id: which held entry wrote each byte last.
    writers: HashMap<String, RangeMap<u64>>,
    /// Entry → the later entries whose undo refers to it.
    referrers: HashMap<u64, BTreeSet<u64>>,
    bytes: u64,
    /// Entry → its bytes on disk (map and data).
    sizes: HashMap<u64, u64>,
    reader: Reader,
}

impl UndoStore {
    /// Opens the undo journal in `dir` for a replica at `cursor` (the newest delta it
    /// holds) in `epoch`. Keeps the entries that run without a gap up to `cursor`, or
    /// `cursor + 1` (an entry made just before a crash cut its delta's apply short);
    /// removes every other file of its own, stale ones first. A map that does not
    /// decode is an error naming it.
    pub fn open(dir: &Path, target: &str, epoch: u64, cursor: u64) -> Result<UndoStore> {
        crate::fsutil::create_dir_durable(dir)?;
        let mut found: BTreeMap<u64, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
        let mut stale = Vec::new();
        for e in std::fs::read_dir(dir).map_err(Error::io("cannot list undo directory", dir))? {
            let e = e.map_err(Error::io("cannot list undo directory", dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((ep, delta, kind)) = parse_name(target, &name) else {
                continue;
            };
            if ep != epoch || kind == FileKind::Temp {
                stale.push(e.path());
                continue;
            }
            let slot = found.entry(delta).or_default();
            match kind {
                FileKind::Map => slot.0 = Some(e.path()),
                _ => slot.1 = Some(e.path()),
            }
        }
        // The run of complete entries that ends at the cursor (or just past it). A
        // map is written after its data and removed before it, so a map without its
        // data is damage, not a step of ours.
        let broken = found
            .iter()
            .find(|(d, s)| **d <= cursor + 1 && s.0.is_some() && s.1.is_none());
        if let Some((d, (Some(m), _))) = broken {
            return Err(Error::CorruptUndo {
                file: m.clone(),
                reason: format!("entry {d} has a map but no data file"),
            });
        }
        let complete = |d: u64| found.get(&d).is_some_and(|s| s.0.is_some());
        let mut keep = BTreeSet::new();
        let mut d = if complete(cursor + 1) {
            cursor + 1
        } else {
            cursor
        };
        while d > 0 && complete(d) {
            keep.insert(d);
            d -= 1;
        }
        for (delta, (m, data)) in &found {
            if !keep.contains(delta) {
                // The map first: an entry without a map is no entry.
                stale.extend(m.iter().chain(data.iter()).cloned());
            }
        }
        for p in &stale {
            std::fs::remove_file(p).map_err(Error::io("cannot remove stale undo file", p))?;
        }
        if !stale.is_empty() {
            crate::fsutil::sync_dir(dir)?;
        }
        let mut store = UndoStore {
            dir: dir.to_path_buf(),
            target: target.to_string(),
            epoch,
            entries: BTreeMap::new(),
            writers: HashMap::new(),
            referrers: HashMap::new(),
            bytes: 0,
            sizes: HashMap::new(),
            reader: Reader::new(dir, target, epoch)?,
        };
        for delta in keep {
            let path = store.file(delta, FileKind::Map);
            let bytes = std::fs::read(&path).map_err(Error::io("cannot read undo map", &path))?;
            let map = EntryMap::decode(&bytes).map_err(|reason| Error::CorruptUndo {
                file: path.clone(),
                reason,
            })?;
            if map.delta != delta {
                return Err(Error::CorruptUndo {
                    file: path,
                    reason: format!("it holds entry {}", map.delta),
                });
            }
            if let Some(j) = map.undo.iter().find_map(|x| match x.source {
                Source::Ref(j) if !store.entries.contains_key(&j) => Some(j),
                _ => None,
            }) {
                return Err(Error::CorruptUndo {
                    file: path,
                    reason: format!(
                        "its undo refers to entry {j}, which the journal no longer holds"
                    ),
                });
            }
            store.bytes += bytes.len() as u64 + map.data_len;
            store.sizes.insert(delta, bytes.len() as u64 + map.data_len);
            store.insert(map);
        }
        Ok(store)
    }

    /// Adds a complete entry to the in-memory view: its writes, and what it refers to.
    fn insert(&mut self, map: EntryMap) {
        for r in &map.redo {
            let id = &map.volumes[r.extent.volume as usize].id;
            self.writers.entry(id.clone()).or_default().insert(
                r.extent.offset,
                r.extent.end(),
                map.delta,
            );
        }
        for x in &map.undo {
            if let Source::Ref(j) = x.source {
                self.referrers.entry(j).or_default().insert(map.delta);
            }
        }
        self.entries.insert(map.delta, map);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn has(&self, delta: u64) -> bool {
        self.entries.contains_key(&delta)
    }

    pub fn entry(&self, delta: u64) -> Option<&EntryMap> {
        self.entries.get(&delta)
    }

    /// The window of a replica whose newest delta is `cursor`.
    pub fn window(&self, cursor: u64) -> Window {
        let held = self.entries.range(..=cursor);
        Window {
            // Before delta 1 is no point a journal names: the window starts at 1.
            oldest: held.clone().next().map_or(cursor, |(d, _)| (d - 1).max(1)),
            newest: cursor,
            bytes: self.bytes,
            entries: held.count() as u64,
        }
    }

    /// Refuses a point the window does not reach, naming the window.
    pub fn check_reach(&self, to: Until, cursor: u64) -> Result<()> {
        let w = self.window(cursor);
        let inside = match to.write {
            None => (w.oldest..=w.newest).contains(&to.delta),
            Some(_) => to.delta > w.oldest && to.delta <= w.newest,
        };
        if inside {
            return Ok(());
        }
        Err(Error::NotFound(format!(
            "{} is outside the replica's window: it reaches from delta {} to delta {}{}",
            describe(to),
            w.oldest,
            w.newest,
            if w.entries == 0 {
                " (it holds no undo yet)"
            } else {
                ""
            }
        )))
    }

    fn file(&self, delta: u64, kind: FileKind) -> PathBuf {
        self.dir
            .join(file_name(&self.target, self.epoch, delta, kind))
    }
}

/// A point as the messages name it: `delta N`, or `seq:W (delta N)` inside one.
pub fn describe(at: Until) -> String {
    match at.write {
        None => format!("delta {}", at.delta),
        Some(w) => format!("seq:{w} (in delta {})", at.delta),
    }
}

/// A fresh epoch, from the kernel's random source.
pub fn new_epoch() -> Result<u64> {
    let mut raw = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .map_err(Error::io("cannot read", "/dev/urandom"))?;
    Ok(u64::from_le_bytes(raw))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Map,
    Data,
    Temp,
}

fn file_name(target: &str, epoch: u64, delta: u64, kind: FileKind) -> String {
    let ext = match kind {
        FileKind::Map => "map",
        FileKind::Data => "data",
        FileKind::Temp => "map.tmp",
    };
    format!("{target}.{epoch:016x}-{delta:020}.{ext}")
}

/// `TARGET.EPOCH-DELTA.map`, `.data` or `.map.tmp`; None for a file that is not
/// this target's.
fn parse_name(target: &str, name: &str) -> Option<(u64, u64, FileKind)> {
    let (stem, ext) = name
        .strip_prefix(target)?
        .strip_prefix('.')?
        .split_once('.')?;
    let kind = match ext {
        "map" => FileKind::Map,
        "data" => FileKind::Data,
        "map.tmp" => FileKind::Temp,
        _ => return None,
    };
    let (ep, delta) = stem.split_once('-')?;
    if ep.len() != 16 || delta.len() != 20 {
        return None;
    }
    Some((u64::from_str_radix(ep, 16).ok()?, delta.parse().ok()?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        for kind in [FileKind::Map, FileKind::Data, FileKind::Temp] {
            let n = file_name("web", 0xabc, 42, kind);
            assert_eq!(parse_name("web", &n), Some((0xabc, 42, kind)), "{n}");
            assert_eq!(parse_name("db", &n), None, "another target's {n}");
            assert_eq!(parse_name("web.x", &n), None, "another target's {n}");
        }
        let other = file_name("web.x", 0xabc, 42, FileKind::Map);
        assert_eq!(parse_name("web", &other), None, "{other}");
        assert_eq!(parse_name("web", "notes.txt"), None);
        assert_eq!(parse_name("web", "web.0000000000000abc-42.map"), None);
    }
}
