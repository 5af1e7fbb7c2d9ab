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
use crate::journal::{frame, Journal, Point};
use crate::progress::Progress;
use crate::replay::{replay, Destination, ReplayReport};
use crate::replica::{check_objects, corrupt_object, download, runtime, Bucket, ManifestDelta};
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
    let n = match until {
        Some(p) => manifest.resolve(p, &bucket.url)?,
        None => manifest.cursor(),
    };
    let chain = manifest.chain(n, &bucket.url)?;
    rt.block_on(check_objects(bucket, &chain))?;
    if targets.iter().all(|t| !t.path.exists()) {
        return stream::restore_into_new_files(bucket, &rt, &chain, targets, progress);
    }
    let scratch = crate::fsutil::Scratch::create(work_dir, "restore")?;
    // One segment per object, numbered by its delta id, starting at the full image.
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
    for d in &chain {
        rt.block_on(download(bucket, d, &scratch.0, progress))?;
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
    replay(&journal, n, targets, progress).map_err(object_err)
}

/// The scratch journal of a restore holds one segment per object, numbered by the
/// object's delta id, so damage found in segment N is damage in delta N's object:
/// say so, by key and offset in the object, rather than name a scratch file that is
/// gone when the error is read.
fn in_object(bucket: &Bucket, chain: &[&ManifestDelta], e: Error) -> Error {
    match e {
        Error::Corrupt {
            segment,
            offset,
            reason,
            ..
        } if let Some(d) = chain.iter().find(|d| d.delta == segment) => {
            corrupt_object(bucket, d, offset.saturating_sub(frame::HEADER_LEN), reason)
        }
        e => e,
    }
}
