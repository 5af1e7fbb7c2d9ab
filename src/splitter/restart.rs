//! How a split group starts: after a crash of its splitter (the write-intent map
//! is there, does not ask for a base, and is from this boot) it goes on with its stream, reading back
//! what the map marks; otherwise it takes a base delta (docs/journal-format.md,
//! "Restarts").
use super::dirty::DirtyMap;
use super::intent::{self, Header, IntentFile, Intents};
use crate::error::Result;
use crate::journal::record::Writes;
use crate::journal::Journal;
use std::path::Path;
use std::sync::Arc;

/// A stream that goes on after a crash.
pub struct Resume {
    /// The journal holds the writes in order up to this one...
    pub after: u64,
    /// ...or it ends in a gap already.
    pub open: bool,
    /// The next split delta's first write, and the stream's `exact_from`.
    pub next_first: u64,
    pub exact_from: u64,
    /// Where the volumes may differ from the journal: to read back.
    pub dirty: DirtyMap,
}

pub struct Start {
    /// The last write number that may have been given out.
    pub last: u64,
    pub resume: Option<Resume>,
    pub intents: Arc<Intents>,
}

/// Reads the write-intent map at `path` beside `journal`, decides how the group
/// starts, and writes the map anew for this run.
pub fn start(journal: &Journal, path: &Path, cg: &str, sizes: &[u64], grain: u64) -> Result<Start> {
    let journalled = super::last_write(journal);
    let found = match IntentFile::read(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(cg, error = %e, "the write-intent map is unreadable; the group takes a base delta");
            None
        }
    };
    let mut last = journalled;
    let mut resume = None;
    let mut found_stream = (0, 0);
    if let Some((h, maps)) = found {
        // Numbers up to those reserved may have been given out: never again.
        last = last.max(h.reserved);
        resume = resumable(journal, &h, maps, cg, sizes, grain);
        if resume.is_some() {
            found_stream = (h.base_delta, h.exact_from);
        }
    }
    if resume.is_some() {
        // A number of its own for where the gap ends, past every one given out.
        last += 1;
    }
    let empty = DirtyMap::new(sizes, grain);
    let older = resume
        .as_ref()
        .map_or_else(|| empty.clone(), |r| r.dirty.clone());
    let header = Header {
        grain,
        boot: intent::boot_id(),
        reserved: last + intent::RESERVE,
        // Until a base is journalled, a crash must be followed by another.
        base_next: resume.is_none(),
        base_delta: found_stream.0,
        exact_from: found_stream.1,
        sizes: sizes.to_vec(),
    };
    let file = IntentFile::create(path, header, [&empty, &older])?;
    // The older epoch holds what is read back; it clears once the gap ends, past
    // every number given out before the crash.
    let intents = Arc::new(Intents::new(older, last, Some(file)));
    Ok(Start {
        last,
        resume,
        intents,
    })
}

/// The stream to go on with, when the map says the splitter crashed in this boot
/// with this journal, these volumes and this grain.
fn resumable(
    journal: &Journal,
    h: &Header,
    maps: [DirtyMap; 2],
    cg: &str,
    sizes: &[u64],
    grain: u64,
) -> Option<Resume> {
    let why_not = if h.base_next {
        "it stopped cleanly (the volumes may have been written since), or its base was not journalled"
    } else if h.boot.is_empty() || h.boot != intent::boot_id() {
        "the machine rebooted since (a power cut can lose bits of the map)"
    } else if !maps[0].fits(sizes, grain) {
        "its volumes or dirty-granularity changed"
    } else {
        ""
    };
    // The journal ends with a split delta of this stream, or with its base.
    let last = journal.deltas().last();
    let w = match last {
        Some(d) if d.writes.is_some_and(|w| w.exact_from == h.exact_from) => d.writes,
        Some(d) if d.delta == h.base_delta && h.base_delta > 0 => Some(Writes {
            first_write: h.exact_from + 1,
            last_write: h.exact_from,
            exact_from: h.exact_from,
            gap: None,
        }),
        _ => None,
    };
    let why_not = match (why_not, w) {
        ("", None) => "its journal does not end with the stream the map belongs to",
        (why, _) => why,
    };
    if !why_not.is_empty() {
        tracing::info!(cg, reason = why_not, "the split group takes a base delta");
        return None;
    }
    let w = w.expect("checked above");
    let [mut dirty, other] = maps;
    dirty.union(&other);
    Some(Resume {
        after: w.last_write,
        open: w.gap_open(),
        next_first: w.last_write + 1,
        exact_from: w.exact_from,
        dirty,
    })
}
