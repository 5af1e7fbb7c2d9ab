//! Scrubbing an object replica (`cascade target verify`): every object the manifest
//! names must exist with its size; with read-data, a share of them is read whole:
//! opened (an encrypted replica's frames must authenticate), every record's checksum,
//! the records' order and each commit's digest, every data record decompressed, and
//! the whole object's size and CRC-32C against the manifest. Every problem found is
//! named, not only the first; nothing is changed.
use super::{
    check_whole, corrupt_object, object_frame, parts, runtime, Bucket, ManifestDelta, PartsReader,
};
use crate::error::{Error, Result};
use crate::journal::frame::{self, Pos};
use crate::journal::index::Entry;
use crate::journal::verify::check_data;
use crate::journal::Scanner;
use crate::progress::Progress;
use futures_util::StreamExt;
use serde::Serialize;
use std::io::Read;

#[derive(Debug, Clone, Serialize)]
pub struct ScrubReport {
    pub url: String,
    pub encrypted: bool,
    /// Objects the manifest names (deltas, runs, full images), and their stored bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Of those, read whole and checked.
    pub read_objects: u64,
    pub read_bytes: u64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub object: String,
    pub delta: u64,
    pub reason: String,
}

/// Scrubs the replica in `bucket`: every object's existence and size; and, if
/// `read_percent` is given, that share of the objects (picked at random, at least one)
/// read and checked whole. `progress` is told the stored bytes read.
pub fn scrub(
    bucket: &Bucket,
    read_percent: Option<f64>,
    progress: &dyn Progress,
) -> Result<ScrubReport> {
    let rt = runtime()?;
    let m = rt.block_on(bucket.manifest())?;
    // No manifest is not a clean replica: a mistyped URL, a deleted manifest.
    if m.cursor() == 0 {
        return Err(Error::NotFound(format!(
            "{}: no manifest.json: nothing was exported there, or the manifest was deleted",
            bucket.url
        )));
    }
    let objects: Vec<&ManifestDelta> = m.deltas.iter().chain(&m.fulls).collect();
    let mut report = ScrubReport {
        url: bucket.url.clone(),
        encrypted: bucket.encrypted(),
        objects: objects.len() as u64,
        bytes: objects.iter().map(|d| bucket.stored_size(d.size)).sum(),
        read_objects: 0,
        read_bytes: 0,
        problems: Vec::new(),
    };
    let problem = |d: &ManifestDelta, e: Error| Problem {
        object: bucket.key(&d.key).to_string(),
        delta: d.delta,
        reason: match e {
            Error::CorruptObject { reason, .. } => reason,
            Error::NotFound(_) => {
                "missing: the manifest names it but the store has no such object".into()
            }
            e => e.to_string(),
        },
    };
    let mut present = Vec::new();
    for d in &objects {
        match rt.block_on(super::check_objects(bucket, &[d])) {
            Ok(()) => present.push(*d),
            Err(e @ (Error::NotFound(_) | Error::CorruptObject { .. })) => {
                report.problems.push(problem(d, e))
            }
            // The store cannot be asked (refused, unreachable): not a finding about
            // the replica, so the scrub stops and says so.
            Err(e) => return Err(e),
        }
    }
    let Some(percent) = read_percent else {
        return Ok(report);
    };
    let chosen = pick(&present, percent);
    progress.start(
        "verify",
        chosen.iter().map(|d| bucket.stored_size(d.size)).sum(),
    );
    for d in chosen {
        report.read_objects += 1;
        report.read_bytes += bucket.stored_size(d.size);
        match read_whole(bucket, &rt, d) {
            Ok(()) => {}
            Err(e @ (Error::NotFound(_) | Error::CorruptObject { .. })) => {
                report.problems.push(problem(d, e))
            }
            Err(e) => return Err(e),
        }
        progress.inc(bucket.stored_size(d.size));
    }
    progress.finish();
    Ok(report)
}

/// `percent` of `objects`, at least one if there are any, picked at random so that
/// scrubs of a share of the replica in turn cover all of it.
fn pick<'a>(objects: &[&'a ManifestDelta], percent: f64) -> Vec<&'a ManifestDelta> {
    let seed: [u8; 8] = super::seal::random();
    let mut ranked: Vec<(u32, &ManifestDelta)> = objects
        .iter()
        .map(|d| {
            (
                crc32c::crc32c_append(crc32c::crc32c(&seed), d.key.as_bytes()),
                *d,
            )
        })
        .collect();
    ranked.sort_by_key(|(h, _)| *h);
    let n =
        ((objects.len() as f64 * percent / 100.0).ceil() as usize).clamp(1, objects.len().max(1));
    let mut chosen: Vec<&ManifestDelta> = ranked.into_iter().take(n).map(|(_, d)| d).collect();
    chosen.sort_by_key(|d| d.delta);
    chosen
}

/// Reads object `d` whole and checks everything a restore would.
fn read_whole(bucket: &Bucket, rt: &tokio::runtime::Runtime, d: &ManifestDelta) -> Result<()> {
    let mut stream = Box::pin(parts(bucket.clone(), d.clone()));
    let mut reader = PartsReader::new(|| rt.block_on(stream.next()));
    let corrupt = |at: u64, why: String| corrupt_object(bucket, d, at, why);
    let mut scanner = Scanner::expecting(d.first() - 1, 0);
    let mut decompressor = zstd::bulk::Decompressor::new()
        .map_err(Error::io("cannot start zstd for", bucket.url.clone()))?;
    let (mut payload, mut raw) = (Vec::new(), Vec::new());
    let (mut offset, mut committed) = (0u64, None);
    let at = |offset| Pos {
        segment: d.first(),
        offset,
    };
    let mut object = (&mut reader).take(d.size);
    while let Some((kind, crc)) = object_frame(&mut object, &mut payload, bucket, d, offset)? {
        let start = offset;
        offset += frame::FRAME_LEN + payload.len() as u64;
        match scanner.feed(at(start), at(offset), kind, crc, &payload) {
            Ok(Some(Entry::Delta(e))) => committed = Some(e.delta),
            Ok(_) => {}
            Err(why) => return Err(corrupt(start, why)),
        }
        check_data(kind, &payload, &mut decompressor, &mut raw)
            .map_err(|why| corrupt(start, why))?;
    }
    if committed != Some(d.delta) || scanner.open_delta().is_some() {
        return Err(corrupt(
            offset,
            format!(
                "the object ends before the commit of delta {} (its last)",
                d.delta
            ),
        ));
    }
    check_whole(bucket, d, reader.size, reader.crc)
}
