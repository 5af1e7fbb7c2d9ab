//! Moving objects of a replica: a delta's journal bytes uploaded as one multipart
//! object, an object read back as ranged GETs in order, and the checks (existence,
//! size, CRC-32C) made against the manifest before anything is written.
use super::{seal, Bucket, ManifestDelta};
use crate::error::{Error, Result};
use crate::journal::frame::{self, Pos};
use crate::journal::Journal;
use crate::progress::Progress;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::WriteMultipart;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How many parts of one object are in flight at once, uploading or downloading.
const PARTS_IN_FLIGHT: usize = 4;

/// Multipart upload part size: large parts, few requests.
const UPLOAD_PART: usize = 16 << 20;

/// Uploads the journal bytes `begin..end` (which may span segments) as one object,
/// streaming in parts; returns its size and CRC-32C.
pub async fn upload_range(
    bucket: &Bucket,
    key: &str,
    journal: &Journal,
    begin: Pos,
    end: Pos,
) -> Result<(u64, u32)> {
    let path = bucket.key(key);
    let opts = object_store::PutMultipartOptions {
        attributes: bucket.data_attributes.clone(),
        ..Default::default()
    };
    let upload = bucket
        .store
        .put_multipart_opts(&path, opts)
        .await
        .map_err(|e| bucket.err("cannot start upload", e))?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART);
    let mut crc = 0u32;
    let mut size = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    // An encrypting bucket's object goes up sealed: the size and CRC returned (the
    // manifest's) stay the plaintext's.
    let mut sealer = None;
    let mut sealed = Vec::new();
    let result: Result<()> = async {
        if let Some(k) = bucket.data_key(true).await? {
            let (s, header) = seal::Sealer::new(k, key);
            w.write(&header);
            sealer = Some(s);
        }
        for seg in begin.segment..=end.segment {
            let file_path = frame::segment_path(journal.dir(), seg);
            let file = File::open(&file_path)
                .map_err(Error::io("cannot open journal segment", &file_path))?;
            let from = if seg == begin.segment {
                begin.offset
            } else {
                frame::HEADER_LEN
            };
            let to = if seg == end.segment {
                end.offset
            } else {
                file.metadata()
                    .map_err(Error::io("cannot stat", &file_path))?
                    .len()
            };
            let mut at = from;
            while at < to {
                let n = (to - at).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], at)
                    .map_err(Error::io("cannot read journal segment", &file_path))?;
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| bucket.err("cannot upload", e))?;
                match &mut sealer {
                    Some(s) => {
                        sealed.clear();
                        s.push(&buf[..n], &mut sealed);
                        w.write(&sealed);
                    }
                    None => w.write(&buf[..n]),
                }
                size += n as u64;
                at += n as u64;
            }
        }
        if let Some(s) = sealer.take() {
            sealed.clear();
            s.finish(&mut sealed);
            w.write(&sealed);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let put = w
                .finish()
                .await
                .map_err(|e| bucket.err("cannot complete upload", e))?;
            bucket.lock_written(&path, put.version.as_deref()).await?;
            bucket.sync(key)?;
            Ok((size, crc))
        }
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}

/// Objects are downloaded as ranged GETs of this size, [`PARTS_IN_FLIGHT`] at a time
/// (in order, so the CRC runs as they arrive): one stream is bound by a single server
/// connection, and local files are read in large blocks rather than object_store's
/// 8 KiB stream chunks.
const DOWNLOAD_PART: u64 = 4 << 20;

/// A failed read of object `key`, said the way a user can act on it.
pub fn object_error(bucket: &Bucket, key: &ObjectPath, e: object_store::Error) -> Error {
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

/// Object `d` of the replica fails a check at `offset` within it, for `reason`.
pub fn corrupt_object(bucket: &Bucket, d: &ManifestDelta, offset: u64, reason: String) -> Error {
    Error::CorruptObject {
        url: bucket.url.clone(),
        object: bucket.key(&d.key).to_string(),
        delta: Some(d.delta),
        offset,
        reason,
    }
}

/// Checks that every object of a chain exists and has the size the manifest gives,
/// before anything is written anywhere.
pub async fn check_objects(bucket: &Bucket, chain: &[&ManifestDelta]) -> Result<()> {
    for d in chain {
        let key = bucket.key(&d.key);
        let meta = bucket
            .store
            .head(&key)
            .await
            .map_err(|e| object_error(bucket, &key, e))?;
        let expected = bucket.stored_size(d.size);
        if meta.size != expected {
            return Err(corrupt_object(
                bucket,
                d,
                0,
                format!(
                    "the object is {} bytes; the manifest says {expected}",
                    meta.size
                ),
            ));
        }
    }
    Ok(())
}

/// The bytes of object `d`, in order, fetched as ranged GETs several at a time; of an
/// encrypting bucket, opened (each GET is of whole frames, so each opens as it
/// arrives, in order).
pub fn parts(
    bucket: Bucket,
    d: ManifestDelta,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes>> + Send + 'static {
    let key = bucket.key(&d.key);
    let ranges: Vec<std::ops::Range<u64>> = if bucket.encrypted() {
        seal::Opener::pieces(d.size, DOWNLOAD_PART / seal::FRAME)
    } else {
        (0..d.size)
            .step_by(DOWNLOAD_PART as usize)
            .map(|at| at..(at + DOWNLOAD_PART).min(d.size))
            .collect()
    };
    let fetch = bucket.clone();
    let mut opener: Option<seal::Opener> = None;
    let mut left = ranges.len();
    futures_util::stream::iter(ranges)
        .map(move |r| {
            let (bucket, key) = (fetch.clone(), key.clone());
            async move {
                bucket
                    .store
                    .get_range(&key, r)
                    .await
                    .map_err(|e| object_error(&bucket, &key, e))
            }
        })
        .buffered(PARTS_IN_FLIGHT)
        .map(move |part| {
            let part = part?;
            if !bucket.encrypted() {
                return Ok(part);
            }
            let refused = |r: seal::Refused| corrupt_object(&bucket, &d, 0, r.0);
            // Without a copy: the bytes a store read are its own, so they open in place.
            let mut piece = Vec::from(part);
            let mut skip = 0;
            if opener.is_none() {
                let k = bucket.unlocked().ok_or_else(|| {
                    bucket.key_error("the data key was not unlocked before a read".into())
                })?;
                opener = Some(seal::Opener::new(k, &d.key, &piece, d.size).map_err(refused)?);
                skip = seal::HEADER as usize;
            }
            let o = opener.as_mut().expect("made above");
            let n = o.open(&mut piece[skip..]).map_err(refused)?;
            left -= 1;
            if left == 0 && !o.done() {
                return Err(refused(seal::Refused(
                    "it ends before its last frame".into(),
                )));
            }
            piece.copy_within(skip..skip + n, 0);
            piece.truncate(n);
            Ok(bytes::Bytes::from(piece))
        })
}

/// The first `len` bytes of object `d` (fewer if it is shorter), opened if the bucket
/// encrypts: only the frames that hold them are read.
pub async fn prefix(bucket: &Bucket, d: &ManifestDelta, len: u64) -> Result<bytes::Bytes> {
    let key = bucket.key(&d.key);
    let len = len.min(d.size);
    let Some(k) = bucket.data_key(false).await? else {
        return bucket
            .store
            .get_range(&key, 0..len)
            .await
            .map_err(|e| object_error(bucket, &key, e));
    };
    let frames = len.div_ceil(seal::FRAME).max(1);
    let end = (seal::HEADER + frames * (seal::FRAME + seal::TAG)).min(seal::sealed_size(d.size));
    let mut piece = bucket
        .store
        .get_range(&key, 0..end)
        .await
        .map_err(|e| object_error(bucket, &key, e))?
        .to_vec();
    let refused = |r: seal::Refused| corrupt_object(bucket, d, 0, r.0);
    let mut o = seal::Opener::new(k, &d.key, &piece, d.size).map_err(refused)?;
    let n = o
        .open(&mut piece[seal::HEADER as usize..])
        .map_err(refused)?;
    piece.copy_within(seal::HEADER as usize..seal::HEADER as usize + n, 0);
    piece.truncate(n.min(len as usize));
    Ok(bytes::Bytes::from(piece))
}

/// Downloads one delta object into segment `segment` of the scratch journal, checking
/// its size and CRC-32C against the manifest.
pub async fn download(
    bucket: &Bucket,
    d: &ManifestDelta,
    dir: &Path,
    segment: u64,
    progress: &dyn Progress,
) -> Result<()> {
    let path = frame::segment_path(dir, segment);
    let mut out =
        std::fs::File::create(&path).map_err(Error::io("cannot write scratch journal", &path))?;
    out.write_all(&frame::segment_header(segment))
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
pub fn check_whole(bucket: &Bucket, d: &ManifestDelta, size: u64, crc: u32) -> Result<()> {
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

/// An object's bytes as one reader, pulled part by part from `next` (a channel from a
/// fetcher running ahead, or a stream of parts driven in place), with the size and
/// CRC-32C of what was read.
pub struct PartsReader<F> {
    next: F,
    part: bytes::Bytes,
    /// The fetch error behind a failed read, to report it as it was.
    pub failed: Option<Error>,
    pub crc: u32,
    pub size: u64,
}

impl<F: FnMut() -> Option<Result<bytes::Bytes>>> PartsReader<F> {
    pub fn new(next: F) -> PartsReader<F> {
        PartsReader {
            next,
            part: bytes::Bytes::new(),
            failed: None,
            crc: 0,
            size: 0,
        }
    }
}

impl<F: FnMut() -> Option<Result<bytes::Bytes>>> std::io::Read for PartsReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.part.is_empty() {
            match (self.next)() {
                None => return Ok(0),
                Some(Ok(p)) => self.part = p,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.failed = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.part.len());
        let chunk = self.part.split_to(n);
        buf[..n].copy_from_slice(&chunk);
        self.crc = crc32c::crc32c_append(self.crc, &chunk);
        self.size += n as u64;
        Ok(n)
    }
}

/// The next record frame of object `d`, read through `object` into `payload`: its kind
/// and CRC, or None at the object's end. A frame that does not parse is damage to the
/// object at `offset`; a failed read is the fetch's own error, as it was.
pub fn object_frame<F: FnMut() -> Option<Result<bytes::Bytes>>>(
    object: &mut std::io::Take<&mut PartsReader<F>>,
    payload: &mut Vec<u8>,
    bucket: &Bucket,
    d: &ManifestDelta,
    offset: u64,
) -> Result<Option<(u8, u32)>> {
    match frame::read_frame(object, payload) {
        Err(e) => Err(object
            .get_mut()
            .failed
            .take()
            .unwrap_or_else(|| Error::io("cannot read", bucket.url.clone())(e))),
        Ok(frame::FrameRead::End) => Ok(None),
        Ok(frame::FrameRead::Broken(why)) => Err(corrupt_object(bucket, d, offset, why)),
        Ok(frame::FrameRead::Frame { kind, crc }) => Ok(Some((kind, crc))),
    }
}
