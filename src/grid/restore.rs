//! Rebuilding every volume of every stream at a complete grid bookmark, from the
//! streams' object replicas alone: the counter store says which streams there are
//! and where each one's replica is.
use super::counter::GridBookmark;
use super::Grid;
use crate::config::ObjectOptions;
use crate::error::{Error, Result};
use crate::journal::Point;
use crate::progress::Progress;
use crate::replay::{Destination, ReplayReport};
use crate::replica::Bucket;
use crate::restore::restore_from;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct StreamRestore {
    pub stream: String,
    pub replica: String,
    pub report: ReplayReport,
}

/// The grid bookmark `name`, refused unless it is complete.
pub fn complete(grid: &Grid, name: &str) -> Result<GridBookmark> {
    let b = crate::replica::runtime()?.block_on(grid.counter.find(name))?;
    if !b.complete {
        let why = if b.duplicate {
            "its name belongs to another value".to_string()
        } else {
            format!("not recorded by {}", b.missing.join(", "))
        };
        return Err(Error::Incomplete(format!(
            "grid bookmark `{name}` (value {}) is incomplete ({why}): it is never offered for recovery",
            b.value.value
        )));
    }
    Ok(b)
}

/// Restores each stream that holds complete bookmark `name` into `dir/STREAM/ID.img`
/// (files that must not exist yet), from the first object replica it registered.
/// Each replica is checked first (it holds the bookmark with the grid's value, and
/// every object the restore reads exists with its size), so a replica that cannot
/// be restored stops the restore before any stream is written. Encrypted replicas
/// are opened with `key`: one secret that has a key slot in each of them.
pub fn restore_grid(
    grid: &Grid,
    name: &str,
    dir: &Path,
    work_dir: &Path,
    key: Option<&crate::config::KeySource>,
    progress: &dyn Progress,
) -> Result<Vec<StreamRestore>> {
    let b = complete(grid, name)?;
    // One runtime for the planning's reads; each stream's restore runs its own.
    let rt = crate::replica::runtime()?;
    let streams = rt.block_on(grid.counter.streams())?;
    // Every replica is checked before anything is written.
    let mut plan = Vec::new();
    for m in &b.marks {
        let info = streams
            .iter()
            .find(|s| s.stream == m.stream)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "stream `{}` holds bookmark `{name}` but is not registered in {}",
                    m.stream,
                    grid.counter.url()
                ))
            })?;
        let r = info.replicas.first().ok_or_else(|| {
            Error::NotFound(format!(
                "stream `{}` registered no object replica: restore it from its journal (cascade replay --until bookmark:{name})",
                m.stream
            ))
        })?;
        let options = ObjectOptions {
            endpoint: r.endpoint.clone(),
            region: r.region.clone(),
            allow_http: r.allow_http,
            key: key.cloned(),
            ..Default::default()
        };
        let bucket = Bucket::open(&r.url, &options)?;
        let manifest = rt.block_on(bucket.manifest())?;
        let held = manifest
            .bookmarks
            .iter()
            .find(|x| x.name == name)
            .and_then(|x| x.grid.as_ref())
            .is_some_and(|g| g.grid == grid.cfg.name && g.value == b.value.value);
        if !held {
            return Err(Error::NotFound(format!(
                "{}: stream `{}`'s replica holds no grid bookmark `{name}` of value {} yet: export it first",
                r.url, m.stream, b.value.value
            )));
        }
        // Every object the restore reads exists with its size, and no target is
        // there yet, before any stream is written.
        let point = Point::Bookmark(name.to_string());
        let reach = manifest.reach(&point, &r.url)?;
        let chain = manifest.chain(&reach, &r.url)?;
        rt.block_on(crate::replica::check_objects(&bucket, &chain))?;
        let targets: Vec<Destination> = info
            .volumes
            .iter()
            .map(|v| Destination {
                volume: Some(v.id.clone()),
                path: dir.join(&m.stream).join(format!("{}.img", v.id)),
            })
            .collect();
        if let Some(t) = targets.iter().find(|t| t.path.exists()) {
            return Err(Error::AlreadyExists(format!(
                "{} exists: restore --grid writes only new files; nothing was written",
                t.path.display()
            )));
        }
        plan.push((m.stream.clone(), r.url.clone(), bucket, targets));
    }
    drop(rt);
    let mut out = Vec::new();
    for (stream, url, bucket, targets) in plan {
        std::fs::create_dir_all(dir.join(&stream))
            .map_err(Error::io("cannot create", dir.join(&stream)))?;
        let report = restore_from(
            &bucket,
            Some(&Point::Bookmark(name.to_string())),
            &targets,
            work_dir,
            progress,
        )?;
        out.push(StreamRestore {
            stream,
            replica: url,
            report,
        });
    }
    Ok(out)
}
