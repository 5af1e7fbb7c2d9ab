//! A restore into new files that streams: objects are fetched in order, part by part,
//! while this thread parses their records, checks each one (checksum, grammar, commit
//! digest, then the whole object's size and CRC-32C) and applies it. Downloading and
//! writing overlap, and no scratch copy is written. Targets are written as
//! `PATH.partial` and renamed into place once fsynced; any failure removes them, so a
//! bad object leaves nothing half-written, and a killed restore leaves only files
//! named as unfinished. An existing `PATH.partial` is refused, never truncated: it
//! may belong to a restore still running.
use crate::error::{Error, Result};
use crate::journal::frame::{self, FrameRead, Pos};
use crate::journal::index::Entry;
use crate::journal::record::{Begin, Record};
use crate::journal::Scanner;
use crate::journal::{Applier, VolumeFile};
use crate::progress::Progress;
use crate::replay::{assign, refuse_shared_targets, sync_targets, Destination, ReplayReport};
use crate::replica::{
    check_whole, corrupt_object, object_frame, parts, prefix, Bucket, ManifestDelta, PartsReader,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::path::PathBuf;

pub fn restore_into_new_files(
    bucket: &Bucket,
    rt: &tokio::runtime::Runtime,
    chain: &[&ManifestDelta],
    targets: &[Destination],
    progress: &dyn Progress,
) -> Result<ReplayReport> {
    let last = *chain.last().expect("a chain is never empty");
    let volumes = rt.block_on(first_begin(bucket, last))?.volumes;
    let ids: Vec<&str> = volumes.iter().map(|v| v.id.as_str()).collect();
    let chosen = assign(targets, &ids)?;
    refuse_shared_targets(&chosen)?;

    // Written as PATH.partial and renamed into place once durable: a restore killed
    // half-way leaves files that say so, never a PATH with half its bytes.
    let mut created = Created(Vec::new());
    let mut open: HashMap<String, VolumeFile> = HashMap::new();
    for (id, path) in &chosen {
        let partial = partial_path(path);
        // Never truncated: it may be another restore's file, still being written.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(format!(
                    "{} exists: another restore to {} is running, or one was stopped part \
                     way and left it; if none runs, remove it and restore again",
                    partial.display(),
                    path.display()
                )),
                _ => Error::io("cannot create restore target", &partial)(e),
            })?;
        created.0.push(partial.clone());
        open.insert(
            id.clone(),
            VolumeFile {
                file,
                device: false,
                path: partial,
            },
        );
    }

    // The fetcher runs ahead by a few parts; dropping the receiver stops it.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let objects: Vec<ManifestDelta> = chain.iter().map(|d| (*d).clone()).collect();
    let fetch_from = bucket.clone();
    let fetcher = rt.spawn(async move {
        for d in objects {
            let mut parts = std::pin::pin!(parts(fetch_from.clone(), d));
            while let Some(part) = parts.next().await {
                let stop = part.is_err();
                if tx.send(part).await.is_err() || stop {
                    return;
                }
            }
        }
    });
    let mut rx = rx;
    let mut incoming = PartsReader::new(move || rx.blocking_recv());
    let mut report = ReplayReport {
        from: chain[0].delta,
        until: last.delta,
        until_write: None,
        deltas: chain.iter().map(|d| d.delta - d.first() + 1).sum(),
        data_bytes: 0,
        zero_bytes: 0,
        volumes: Vec::new(),
    };
    let mut applier = Applier::new()?;
    let mut scanner = Scanner::expecting(chain[0].delta - 1, 0);
    let mut payload = Vec::new();
    progress.start("restore", chain.iter().map(|d| d.changed_bytes).sum());
    for d in chain {
        incoming.crc = 0;
        incoming.size = 0;
        let mut slots = Vec::new();
        let mut offset = 0u64;
        // An object holds one delta, or a run of split deltas: inside one, and the
        // last one committed.
        let mut inside = false;
        let mut committed = None;
        let mut object = (&mut incoming).take(d.size);
        let corrupt = |at: u64, why: String| corrupt_object(bucket, d, at, why);
        while let Some((kind, crc)) = object_frame(&mut object, &mut payload, bucket, d, offset)? {
            let at = offset;
            if committed == Some(d.delta) {
                return Err(corrupt(
                    at,
                    "a record follows the object's last commit".into(),
                ));
            }
            offset += frame::FRAME_LEN + payload.len() as u64;
            match scanner.feed(pos(d, at), pos(d, offset), kind, crc, &payload) {
                Ok(Some(Entry::Delta(e))) => {
                    inside = false;
                    committed = Some(e.delta);
                }
                Ok(_) => inside |= kind == crate::journal::record::BEGIN,
                Err(why) => return Err(corrupt(at, why)),
            }
            let rec = Record::decode(kind, &payload).map_err(|why| corrupt(at, why))?;
            let len = rec.extent_len();
            let applied = applier.record(rec, &open, &mut slots)?;
            progress.inc(len);
            match applied {
                Ok((data, zero)) => {
                    report.data_bytes += data;
                    report.zero_bytes += zero;
                }
                Err(why) => return Err(corrupt(at, why)),
            }
        }
        if inside || committed != Some(d.delta) {
            return Err(corrupt(
                offset,
                format!(
                    "the object ends before the commit of delta {} (its last)",
                    d.delta
                ),
            ));
        }
        check_whole(bucket, d, incoming.size, incoming.crc)?;
    }
    fetcher.abort();
    report.volumes = sync_targets(&chosen, &open, &volumes)?;
    for (id, path) in &chosen {
        crate::fsutil::rename_durable(&open[id].path, path)?;
    }
    created.0.clear();
    progress.finish();
    Ok(report)
}

/// Where a target is written until the restore is complete.
fn partial_path(path: &std::path::Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Where a record is, for the grammar checker: objects are numbered by their first
/// delta's id.
fn pos(d: &ManifestDelta, offset: u64) -> Pos {
    Pos {
        segment: d.first(),
        offset,
    }
}

/// The Begin record that opens object `d`: its volumes are the restore's.
async fn first_begin(bucket: &Bucket, d: &ManifestDelta) -> Result<Begin> {
    let head = prefix(bucket, d, frame::FRAME_LEN).await?;
    let len = head.get(0..4).map_or(0, |b| {
        u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64
    });
    // A garbled length must not size the read (a full image's object can be far
    // larger than memory): past the record size limit the frame alone is read, and
    // read_frame refuses it.
    let body = if len <= frame::MAX_PAYLOAD as u64 {
        len
    } else {
        0
    };
    let whole = prefix(bucket, d, frame::FRAME_LEN + body).await?;
    let mut payload = Vec::new();
    let bad = |why: String| corrupt_object(bucket, d, 0, why);
    match frame::read_frame(&mut whole.as_ref(), &mut payload)
        .map_err(Error::io("cannot read", bucket.url.clone()))?
    {
        FrameRead::Frame { kind, .. } => match Record::decode(kind, &payload).map_err(bad)? {
            Record::Begin(b) => Ok(b),
            _ => Err(bad("the object does not start with a Begin record".into())),
        },
        FrameRead::Broken(why) => Err(bad(why)),
        FrameRead::End => Err(bad("the object is empty".into())),
    }
}

/// Files this restore created; removed unless the restore finished.
struct Created(Vec<PathBuf>);

impl Drop for Created {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
