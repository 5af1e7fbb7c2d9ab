//! Restore from an object-store replica alone: the newest full image at or before
//! the point and the deltas after it. The manifest names each object's size and
//! CRC-32C; every object is checked to exist with its size before anything is written.
//!
//! Onto existing files or devices, the objects are downloaded into a scratch journal
//! and replayed with every check replay makes, so a damaged object is refused before
//! a byte of the targets changes. Into files that do not exist yet, the restore
//! streams instead (`stream.rs`): each record is checked as it arrives and applied,
//! and any failure removes the files it created, so nothing half-written remains
//! either way, without the scratch copy.
use crate::error::{Error, Result};
use crate::journal::{frame, Journal, Point, Until};
use crate::progress::Progress;
use crate::replay::{replay, Destination, ReplayReport};
use crate::replica::{
    check_objects, corrupt_object, download, runtime, Bucket, ManifestDelta, Reach,
};
use std::path::Path;

mod stream;

/// Where to restore from: an object store URL and how to reach it.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub options: crate::config::ObjectOptions,
}

/// Restores `targets` at `until` (default: the newest exported delta) from `source`.
///
/// `progress` is told the bytes of volume set, summed over the restored deltas (their
/// `changed_bytes`): into new files in one phase, "restore"; onto existing targets in
/// three, "download" (bytes of objects), then replay's "check" and "replay".
pub fn restore(
    source: &Source,
    until: Option<&Point>,
    targets: &[Destination],
    work_dir: &Path,
    progress: &dyn Progress,
) -> Result<ReplayReport> {
    let bucket = Bucket::open(&source.url, &source.options)?;
    restore_from(&bucket, until, targets, work_dir, progress)
}

/// [`restore`] from an open bucket.
pub fn restore_from(
    bucket: &Bucket,
    until: Option<&Point>,
    targets: &[Destination],
    work_dir: &Path,
    progress: &dyn Progress,
) -> Result<ReplayReport> {
    let rt = runtime()?;
    let manifest = rt.block_on(bucket.manifest())?;
    if manifest.cursor() == 0 {
        return Err(Error::NotFound(format!(
            "{}: nothing has been exported there",
            bucket.url
        )));
    }
    let reach = match until {
        Some(p) => manifest.reach(p, &bucket.url)?,
        None => Reach::at(manifest.cursor()),
    };
    let n = reach.end;
    let chain = manifest.chain(&reach, &bucket.url)?;
    rt.block_on(check_objects(bucket, &chain))?;
    // Streaming applies whole objects; a point inside a run of split deltas is
    // replayed from a scratch journal, which finds it.
    let whole = reach.until == Some(Until::from(n));
    // An object that ends inside a gap is not a point: the scratch journal says which
    // points are nearest.
    let in_gap = chain
        .last()
        .and_then(|d| d.writes)
        .is_some_and(|w| w.gap_open());
    if whole && !in_gap && targets.iter().all(|t| !t.path.exists()) {
        return stream::restore_into_new_files(bucket, &rt, &chain, targets, progress);
    }
    let scratch = crate::fsutil::Scratch::create(work_dir, "restore")?;
    // One segment per object, in order, numbered from the full image's delta id.
    crate::journal::start::Start {
        delta: chain[0].delta,
        seq: 0,
        pos: frame::Pos {
            segment: chain[0].delta,
            offset: frame::HEADER_LEN,
        },
    }
    .store(&scratch.0)?;
    progress.start("download", chain.iter().map(|d| d.size).sum());
    for (i, d) in chain.iter().enumerate() {
        let segment = chain[0].delta + i as u64;
        rt.block_on(download(bucket, d, &scratch.0, segment, progress))?;
    }
    progress.finish();
    let object_err = |e| in_object(bucket, &chain, e);
    let journal = Journal::open(&scratch.0).map_err(object_err)?;
    if journal.last_delta() != n {
        let why = journal
            .tail()
            .map_or("deltas missing".to_string(), |t| t.reason.clone());
        // The first object whose delta the scratch journal lacks (or, if it holds more
        // than asked for, the last one).
        let bad = chain
            .iter()
            .find(|d| d.delta > journal.last_delta())
            .unwrap_or_else(|| chain.last().expect("a chain is never empty"));
        return Err(corrupt_object(bucket, bad, 0, why));
    }
    let until = match (reach.until, until) {
        (Some(u), _) => journal.consistent(u).map_err(object_err)?,
        (None, Some(p)) => journal.resolve_until(p).map_err(object_err)?,
        (None, None) => journal.consistent(n.into()).map_err(object_err)?,
    };
    replay(&journal, until, targets, progress).map_err(object_err)
}

/// The scratch journal of a restore holds one segment per object of the chain, in
/// order, numbered from the full image's delta id, so damage found in a segment is
/// damage in one object: say so, by key and offset in the object, rather than name a
/// scratch file that is gone when the error is read.
fn in_object(bucket: &Bucket, chain: &[&ManifestDelta], e: Error) -> Error {
    match e {
        Error::Corrupt {
            segment,
            offset,
            reason,
            ..
        } if let Some(d) = segment
            .checked_sub(chain[0].delta)
            .and_then(|i| chain.get(i as usize)) =>
        {
            corrupt_object(bucket, d, offset.saturating_sub(frame::HEADER_LEN), reason)
        }
        e => e,
    }
}
