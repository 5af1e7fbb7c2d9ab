//! An object replica's history over time. Synthetic full images keep restores short:
//! a restore reads the newest full image at or before its point and the deltas after
//! it, never the whole history. Retention deletes what no kept restore point needs.
//!
//! A synthetic full is built from the replica itself (its newest full image and the
//! deltas after it, restored into sparse scratch files), not from the source volumes
//! or the local journal, so it is exactly what a restore of that point would give,
//! and it works when the journal has already been pruned.
use crate::config::Retention;
use crate::error::{Error, Result};
use crate::fsutil::Scratch;
use crate::journal::record::VolumeInfo;
use crate::journal::{JournalWriter, Point};
use crate::replay::Destination;
use crate::replica::{upload_range, Bucket, Manifest, ManifestDelta, Stored, Writer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// What an export did to a replica's history besides adding deltas.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Upkeep {
    /// The delta a synthetic full image was built at.
    pub synthetic_full: Option<u64>,
    /// Objects deleted by retention, and their bytes.
    pub deleted_objects: u64,
    pub deleted_bytes: u64,
    /// Objects retention would delete but S3 Object Lock still holds, and when the
    /// first of them is deletable (the next export after it deletes it).
    #[serde(default)]
    pub locked_objects: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletable_at_ns: Option<i64>,
}

/// The newest delta with a full image (a synthetic one, or a full delta).
fn newest_full(m: &Manifest) -> u64 {
    m.full_at(u64::MAX).map_or(0, |d| d.delta)
}

/// Whether `every` delta objects (a delta, or a run of split deltas) have been
/// uploaded since the newest full image.
pub fn full_due(m: &Manifest, every: u64) -> bool {
    let full = newest_full(m);
    every > 0
        && m.cursor() > 0
        && m.deltas.iter().filter(|d| d.delta > full).count() as u64 >= every
}

/// Builds a full image of the replica's newest delta, whose volumes are `volumes`,
/// and uploads it as `fulls/N-W.cjd` (`W`: the id of writer `by`); scratch space (as much
/// as the volumes' data, sparse) comes from `work`. Returns its manifest entry; the
/// caller records it.
pub fn synthesize(
    bucket: &Bucket,
    rt: &tokio::runtime::Runtime,
    m: &Manifest,
    volumes: &[VolumeInfo],
    work: &Path,
    by: &Writer,
) -> Result<ManifestDelta> {
    let n = m.cursor();
    let time_ns = m.points().iter().find(|p| p.0 == n).map_or(0, |p| p.1);
    let scratch = Scratch::create(work, "synthetic-full")?;
    let images = scratch.0.join("images");
    std::fs::create_dir_all(&images).map_err(Error::io("cannot create scratch space", &images))?;
    let targets: Vec<Destination> = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| Destination {
            volume: Some(v.id.clone()),
            path: images.join(format!("volume-{i}.img")),
        })
        .collect();
    crate::restore::restore_from(
        bucket,
        Some(&Point::Delta(n)),
        &targets,
        &scratch.0,
        &crate::progress::NoProgress,
    )?;

    let mut writer = JournalWriter::create_starting_at(&scratch.0.join("journal"), n, 64 << 20)?;
    let mut delta = writer.begin_delta(time_ns, volumes.to_vec(), true)?;
    let mut buf = vec![0u8; crate::journal::READ_CHUNK];
    for (i, (v, t)) in volumes.iter().zip(&targets).enumerate() {
        let file = std::fs::File::open(&t.path).map_err(Error::io("cannot open", &t.path))?;
        let ranges = crate::diff::allocated_ranges(
            file.try_clone()
                .map_err(Error::io("cannot open", &t.path))?,
            v.size,
            &t.path,
        );
        crate::journal::journal_changes(
            &mut delta,
            i as u16,
            &file,
            &t.path,
            ranges,
            &mut buf,
            &crate::progress::NoProgress,
        )?;
    }
    let entry = delta.commit()?;
    let key = format!("fulls/{n:020}-{}.cjd", by.id);
    let (size, crc32c) = rt.block_on(upload_range(
        bucket,
        &key,
        writer.journal(),
        entry.begin,
        entry.end,
    ))?;
    Ok(ManifestDelta {
        delta: n,
        time_ns,
        flags: entry.flags,
        key,
        size,
        crc32c,
        changed_bytes: entry.changed_bytes,
        first: None,
        first_time_ns: None,
        writes: None,
    })
}

/// The manifest after `policy` with the clock at `now_ns`: the restore points it
/// keeps, and what they need (the newest full image at or before the oldest of them,
/// and the deltas after that). Returns the new manifest and the newest delta id
/// nothing needs any more.
pub fn retained(m: &Manifest, policy: &Retention, now_ns: i64) -> Option<(Manifest, u64)> {
    let oldest = policy.oldest_kept(&m.points(), now_ns)?;
    let base = m.full_at(oldest)?.delta;
    let mut kept = m.clone();
    kept.deltas
        .retain(|d| d.delta > base || (d.delta == base && d.is_full()));
    kept.fulls.retain(|f| f.delta >= base);
    kept.bookmarks.retain(|b| b.after_delta >= base);
    Some((kept, base))
}

/// Applies `policy` with the clock at `now_ns`: writes the manifest without the points it lets go first (as
/// `writer`, conditionally on the head `stored` describes, so nothing is deleted on
/// the word of a manifest another writer has replaced), then deletes every delta or
/// full image object at or below the new base that the manifest does not name, and
/// every manifest chunk wholly before its oldest delta (including leftovers of an
/// earlier run that stopped between the two steps, or of a writer that lost a race).
pub fn prune(
    bucket: &Bucket,
    rt: &tokio::runtime::Runtime,
    m: &Manifest,
    policy: &Retention,
    now_ns: i64,
    (stored, writer): (&mut Stored, &Writer),
) -> Result<(Manifest, Upkeep)> {
    let mut upkeep = Upkeep::default();
    let Some((kept, base)) = retained(m, policy, now_ns) else {
        return Ok((m.clone(), upkeep));
    };
    if kept != *m {
        rt.block_on(bucket.put_manifest(&kept, stored, writer))?;
    }
    let named: HashSet<&str> = kept
        .deltas
        .iter()
        .chain(&kept.fulls)
        .map(|d| d.key.as_str())
        .collect();
    // Delta ids in keys: `deltas/N.cjd` (format 1), `deltas/N-W.cjd`, a run's first
    // delta in `deltas/F-L-W.cjd` (a run that straddles the base is named), and a chunk's
    // last delta in `manifest.d/F-L-W.json`.
    let field = |name: &str, n: usize| name.split(['-', '.']).nth(n)?.parse::<u64>().ok();
    let first = kept.deltas.first().map_or(u64::MAX, |d| d.delta);
    rt.block_on(async {
        for dir in ["deltas", "fulls", "manifest.d"] {
            let prefix = bucket.key(dir);
            let mut list = bucket.store.list(Some(&prefix));
            let mut doomed = Vec::new();
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(|e| bucket.err("cannot list objects", e))?;
                let Some(name) = meta.location.filename() else {
                    continue;
                };
                let key = format!("{dir}/{name}");
                let unneeded = if dir == "manifest.d" {
                    field(name, 1).is_some_and(|last| last < first)
                } else {
                    field(name, 0).is_some_and(|id| id <= base) && !named.contains(key.as_str())
                };
                if !unneeded {
                    continue;
                }
                // Still locked: never asked to go (S3 would refuse, or hide it behind a
                // delete marker); a later export deletes it once its lock ends.
                let written = meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX);
                match bucket.lock_until(written) {
                    Some(until) if until > now_ns => {
                        upkeep.locked_objects += 1;
                        upkeep.deletable_at_ns =
                            Some(upkeep.deletable_at_ns.map_or(until, |d| d.min(until)));
                    }
                    _ => doomed.push((meta.location, meta.size)),
                }
            }
            for (path, size) in doomed {
                match bucket.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(bucket.err("cannot delete pruned object", e)),
                }
                upkeep.deleted_objects += 1;
                upkeep.deleted_bytes += size;
            }
        }
        Ok(())
    })?;
    Ok((kept, upkeep))
}
