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
use crate::export::object::{Bucket, Manifest, ManifestDelta};
use crate::journal::{frame, Journal, Point};
use crate::progress::Progress;
use crate::replay::{replay, ReplayReport, ReplayTarget};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use std::io::Write;
use std::path::{Path, PathBuf};

mod stream;

/// Where to restore from: an object store URL and how to reach it.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub options: crate::export::target::ObjectOptions,
}

/// The newest exported delta at `point`.
pub fn resolve(m: &Manifest, point: &Point, url: &str) -> Result<u64> {
    point.resolve_in(
        &m.points(),
        m.bookmarks.iter().map(|b| (b.name.as_str(), b.after_delta)),
        url,
    )
}

/// A scratch directory under a work directory, removed when dropped.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub fn create(work: &Path, what: &str) -> Result<Scratch> {
        let dir = work.join(format!(
            "cascade-{what}-{}-{}",
            std::process::id(),
            crate::volume::now_ns()
        ));
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create scratch space", &dir))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Restores `targets` at `until` (default: the newest exported delta) from `source`.
///
/// `progress` is told the bytes of volume set, summed over the restored deltas (their
/// `changed_bytes`): into new files in one phase, "restore"; onto existing targets in
/// three, "download" (bytes of objects), then replay's "check" and "replay".
pub fn restore(
    source: &Source,
    until: Option<&Point>,
    targets: &[ReplayTarget],
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
    targets: &[ReplayTarget],
    work_dir: &Path,
    progress: &dyn Progress,
) -> Result<ReplayReport> {
    let rt = crate::export::object::runtime()?;
    let manifest = rt.block_on(bucket.manifest())?;
    if manifest.cursor() == 0 {
        return Err(Error::NotFound(format!(
            "{}: nothing has been exported there",
            bucket.url
        )));
    }
    let n = match until {
        Some(p) => resolve(&manifest, p, &bucket.url)?,
        None => manifest.cursor(),
    };
    let chain = manifest.chain(n, &bucket.url)?;
    rt.block_on(check_objects(bucket, &chain))?;
    if targets.iter().all(|t| !t.path.exists()) {
        return stream::restore_into_new_files(bucket, &rt, &chain, targets, progress);
    }
    let scratch = Scratch::create(work_dir, "restore")?;
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
    for d in chain {
        rt.block_on(download(bucket, d, &scratch.0, progress))?;
    }
    progress.finish();
    let journal = Journal::open(&scratch.0)?;
    if journal.last_delta() != n {
        let why = journal
            .tail()
            .map_or("deltas missing".to_string(), |t| t.reason.clone());
        return Err(Error::Corrupt {
            journal: bucket.url.clone().into(),
            segment: journal.last_delta() + 1,
            offset: 0,
            reason: why,
        });
    }
    replay(&journal, n, targets, progress)
}

/// Objects are downloaded as ranged GETs of this size, this many at a time (in
/// order, so the CRC runs as they arrive): one stream is bound by a single server
/// connection, and local files are read in large blocks rather than object_store's
/// 8 KiB stream chunks.
const PART: u64 = 4 << 20;
const PARTS_IN_FLIGHT: usize = 4;

/// A failed read of object `key`, said the way a user can act on it.
fn object_error(bucket: &Bucket, key: &ObjectPath, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound(format!(
            "{}: the manifest lists {key} but the object is missing",
            bucket.url
        )),
        e => Error::ObjectStore {
            url: bucket.url.clone(),
            what: format!("cannot read {key}"),
            reason: e.to_string(),
        },
    }
}

pub(crate) fn corrupt_object(
    bucket: &Bucket,
    d: &ManifestDelta,
    offset: u64,
    reason: String,
) -> Error {
    Error::Corrupt {
        journal: bucket.url.clone().into(),
        segment: d.delta,
        offset,
        reason: format!("{}: {reason}", bucket.key(&d.key)),
    }
}

/// Checks that every object of a chain exists and has the size the manifest gives,
/// before anything is written anywhere.
async fn check_objects(bucket: &Bucket, chain: &[&ManifestDelta]) -> Result<()> {
    for d in chain {
        let key = bucket.key(&d.key);
        let meta = bucket
            .store
            .head(&key)
            .await
            .map_err(|e| object_error(bucket, &key, e))?;
        if meta.size != d.size {
            return Err(corrupt_object(
                bucket,
                d,
                0,
                format!(
                    "the object is {} bytes; the manifest says {}",
                    meta.size, d.size
                ),
            ));
        }
    }
    Ok(())
}

/// The bytes of object `d`, in order, fetched as ranged GETs several at a time.
pub(crate) fn parts(
    bucket: Bucket,
    d: ManifestDelta,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes>> + Send + 'static {
    let key = bucket.key(&d.key);
    let ranges: Vec<std::ops::Range<u64>> = (0..d.size)
        .step_by(PART as usize)
        .map(|at| at..(at + PART).min(d.size))
        .collect();
    futures_util::stream::iter(ranges)
        .map(move |r| {
            let (bucket, key) = (bucket.clone(), key.clone());
            async move {
                bucket
                    .store
                    .get_range(&key, r)
                    .await
                    .map_err(|e| object_error(&bucket, &key, e))
            }
        })
        .buffered(PARTS_IN_FLIGHT)
}

/// Downloads one delta object into segment `delta` of the scratch journal, checking
/// its size and CRC-32C against the manifest.
async fn download(
    bucket: &Bucket,
    d: &ManifestDelta,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let path = frame::segment_path(dir, d.delta);
    let mut out =
        std::fs::File::create(&path).map_err(Error::io("cannot write scratch journal", &path))?;
    out.write_all(&frame::segment_header(d.delta))
        .map_err(Error::io("cannot write scratch journal", &path))?;
    let (mut size, mut crc) = (0u64, 0u32);
    let mut parts = std::pin::pin!(parts(bucket.clone(), d.clone()));
    while let Some(part) = parts.next().await {
        let part = part?;
        crc = crc32c::crc32c_append(crc, &part);
        size += part.len() as u64;
        out.write_all(&part)
            .map_err(Error::io("cannot write scratch journal", &path))?;
        progress.inc(part.len() as u64);
    }
    check_whole(bucket, d, size, crc)
}

/// The size and CRC-32C of a whole object against its manifest entry.
pub(crate) fn check_whole(bucket: &Bucket, d: &ManifestDelta, size: u64, crc: u32) -> Result<()> {
    if (size, crc) != (d.size, d.crc32c) {
        return Err(corrupt_object(
            bucket,
            d,
            0,
            format!(
                "the object is {size} bytes with CRC {crc:08x}; the manifest says {} bytes with CRC {:08x}",
                d.size, d.crc32c
            ),
        ));
    }
    Ok(())
}
