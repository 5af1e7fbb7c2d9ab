//! Restore from an object-store replica alone: download the newest full image at or
//! before the point and the deltas after it into a scratch journal, then replay it
//! with every check replay makes. The manifest names each object's size and CRC-32C,
//! so a missing or damaged object is refused before anything is written to a target.
use crate::error::{Error, Result};
use crate::export::object::{Bucket, Manifest};
use crate::journal::{frame, Journal, Point};
use crate::replay::{replay, ReplayReport, ReplayTarget};
use futures_util::StreamExt;
use std::io::Write;
use std::path::{Path, PathBuf};

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

pub fn restore(
    source: &Source,
    until: Option<&Point>,
    targets: &[ReplayTarget],
    work_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
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
    progress: &mut dyn FnMut(u64, u64),
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
    for d in chain {
        rt.block_on(download(bucket, d, &scratch.0))?;
    }
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

/// Downloads one delta object into segment `delta` of the scratch journal, checking
/// its size and CRC-32C against the manifest.
async fn download(
    bucket: &Bucket,
    d: &crate::export::object::ManifestDelta,
    dir: &Path,
) -> Result<()> {
    let key = bucket.key(&d.key);
    let got = bucket.store.get(&key).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => Error::NotFound(format!(
            "{}: the manifest lists {key} but the object is missing",
            bucket.url
        )),
        e => Error::ObjectStore {
            url: bucket.url.clone(),
            what: format!("cannot read {key}"),
            reason: e.to_string(),
        },
    })?;
    let path = frame::segment_path(dir, d.delta);
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&path).map_err(Error::io("cannot write scratch journal", &path))?,
    );
    out.write_all(&frame::segment_header(d.delta))
        .map_err(Error::io("cannot write scratch journal", &path))?;
    let (mut size, mut crc) = (0u64, 0u32);
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::ObjectStore {
            url: bucket.url.clone(),
            what: format!("cannot read {key}"),
            reason: e.to_string(),
        })?;
        crc = crc32c::crc32c_append(crc, &chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk)
            .map_err(Error::io("cannot write scratch journal", &path))?;
    }
    out.flush()
        .map_err(Error::io("cannot write scratch journal", &path))?;
    if (size, crc) != (d.size, d.crc32c) {
        return Err(Error::Corrupt {
            journal: bucket.url.clone().into(),
            segment: d.delta,
            offset: 0,
            reason: format!("{key} is {size} bytes with CRC {crc:08x}; the manifest says {} bytes with CRC {:08x}", d.size, d.crc32c),
        });
    }
    Ok(())
}
