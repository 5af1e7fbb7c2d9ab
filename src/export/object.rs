//! The virtual replica: the journal's deltas as objects in object storage (S3 and
//! S3-compatible stores, or a local directory) through the `object_store` crate, so
//! that any exported point can be restored on a machine that has never seen the
//! journal. Other `object_store` backends (GCS, Azure) need only their URL parsed here.
//!
//! Layout under the target's prefix:
//! - `deltas/NNNNNNNNNNNNNNNNNNNN.cjd`: one object per delta, holding that delta's
//!   journal records byte for byte (each still carries its CRC and the commit digest),
//!   uploaded as multipart uploads of 16 MiB parts, at most 4 in flight.
//! - `fulls/NNNNNNNNNNNNNNNNNNNN.cjd`: synthetic full images, each a full delta with the
//!   id of the delta it was built at (see `chain.rs`), in the same record format.
//! - `manifest.json`: what has been exported, with each object's size and CRC-32C.
//!   It is written last, after the delta's object is complete, so a reader never sees
//!   a half-exported delta; it is the target's cursor. Retention rewrites it before
//!   deleting the objects it no longer names.
use super::chain::{self, Upkeep};
use super::target::{ObjectOptions, ObjectPolicy};
use super::{check_next, Exporter, Target};
use crate::error::{Error, Result};
use crate::journal::frame::{self, Pos};
use crate::journal::{BookmarkEntry, Journal};
use crate::progress::NoProgress;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Multipart part size, and how many parts may be in flight at once.
const PART: usize = 16 << 20;
const PARTS_IN_FLIGHT: usize = 4;
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    /// The id of the journal these deltas come from.
    #[serde(default)]
    pub journal: Option<String>,
    pub deltas: Vec<ManifestDelta>,
    /// Synthetic full images, oldest first.
    #[serde(default)]
    pub fulls: Vec<ManifestDelta>,
    pub bookmarks: Vec<BookmarkEntry>,
}

impl Manifest {
    /// The newest delta the replica holds.
    pub fn cursor(&self) -> u64 {
        let d = self.deltas.last().map_or(0, |d| d.delta);
        d.max(self.fulls.last().map_or(0, |f| f.delta))
    }

    /// The points a restore can reach (ids and times, ascending): every full image
    /// and every delta after the oldest one.
    pub fn points(&self) -> Vec<(u64, i64)> {
        let mut p: Vec<(u64, i64)> = self
            .deltas
            .iter()
            .chain(&self.fulls)
            .map(|d| (d.delta, d.time_ns))
            .collect();
        p.sort_unstable();
        p.dedup_by_key(|p| p.0);
        p
    }

    /// The newest full image (a synthetic one, or a full delta) at or before `n`.
    pub fn full_at(&self, n: u64) -> Option<&ManifestDelta> {
        self.fulls
            .iter()
            .chain(self.deltas.iter().filter(|d| d.is_full()))
            .filter(|d| d.delta <= n)
            .max_by_key(|d| d.delta)
    }

    /// The objects a restore to delta `n` reads: the newest full image at or before
    /// `n`, then every delta after it up to `n`.
    pub fn chain(&self, n: u64, url: &str) -> Result<Vec<&ManifestDelta>> {
        let base = self.full_at(n).ok_or_else(|| {
            Error::NotFound(format!("{url}: no full image at or before delta {n}"))
        })?;
        let mut chain = vec![base];
        for want in base.delta + 1..=n {
            let d = self
                .deltas
                .iter()
                .find(|d| d.delta == want)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{url}: the manifest lacks delta {want}, needed to restore delta {n}"
                    ))
                })?;
            chain.push(d);
        }
        Ok(chain)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestDelta {
    pub delta: u64,
    pub time_ns: i64,
    pub flags: u32,
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
    pub changed_bytes: u64,
}

impl ManifestDelta {
    pub fn is_full(&self) -> bool {
        self.flags & crate::journal::record::FLAG_FULL != 0
    }
}

/// An object store and the prefix a target lives under.
#[derive(Clone)]
pub struct Bucket {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    /// For a local directory: its path. object_store does not fsync local files, so
    /// the exporter does before it counts an object as written.
    pub local: Option<std::path::PathBuf>,
    /// For messages: the URL as the user wrote it.
    pub url: String,
}

impl Bucket {
    /// Opens `url`: `s3://bucket/prefix` (credentials and region from the standard AWS
    /// environment variables unless the target says otherwise), `file:///dir` or a
    /// plain directory (created if missing).
    pub fn open(url: &str, o: &ObjectOptions) -> Result<Bucket> {
        let bad = |why: String| Error::InvalidArgument(format!("object store `{url}`: {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket".into()));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(e) = o
                .endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            {
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            if let Some(r) = &o.region {
                b = b.with_region(r);
            }
            if o.allow_http {
                b = b.with_allow_http(true);
            }
            if let (Some(k), Some(s)) = (&o.access_key_id, &o.secret_access_key) {
                b = b
                    .with_access_key_id(k.expose())
                    .with_secret_access_key(s.expose());
            }
            let store = Arc::new(b.build().map_err(|e| bad(e.to_string()))?);
            return Ok(Bucket {
                store,
                prefix: ObjectPath::from(prefix),
                local: None,
                url: url.to_string(),
            });
        }
        if let Some((scheme, _)) = url.split_once("://").filter(|(s, _)| *s != "file") {
            return Err(bad(format!("`{scheme}://` is not supported; use s3://bucket/prefix, file:///dir or a directory")));
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create object directory", dir))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Bucket {
            store: Arc::new(local),
            prefix: ObjectPath::from(""),
            local: Some(dir.into()),
            url: url.to_string(),
        })
    }

    /// Any `object_store` implementation (the conformance suite uses the in-memory one).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Bucket {
        Bucket {
            store,
            prefix: ObjectPath::from(prefix),
            local: None,
            url: url.to_string(),
        }
    }

    /// Makes a written object durable where the store itself does not: a local file
    /// and its directory are fsynced. Remote stores acknowledge only durable writes.
    fn sync(&self, name: &str) -> Result<()> {
        let Some(root) = &self.local else {
            return Ok(());
        };
        let path = root.join(self.key(name).as_ref());
        for p in [path.as_path(), path.parent().unwrap_or(root)] {
            File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("cannot sync", p))?;
        }
        Ok(())
    }

    pub fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    pub(super) fn err(&self, what: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { path, .. } => {
                Error::NotFound(format!("{}: {what}: no object {path}", self.url))
            }
            e => Error::ObjectStore {
                url: self.url.clone(),
                what: what.to_string(),
                reason: e.to_string(),
            },
        }
    }

    /// The manifest, or an empty one if nothing was exported yet.
    pub async fn manifest(&self) -> Result<Manifest> {
        let key = self.key(MANIFEST);
        let bytes = match self.store.get(&key).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.err("cannot read manifest", e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Manifest {
                    format: 1,
                    ..Default::default()
                })
            }
            Err(e) => return Err(self.err("cannot read manifest", e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            journal: self.url.clone().into(),
            segment: 0,
            offset: 0,
            reason: format!("manifest.json does not parse: {e}"),
        })?;
        if m.format != 1 {
            return Err(Error::InvalidArgument(format!(
                "{}: manifest format {} is not one this cascade reads",
                self.url, m.format
            )));
        }
        Ok(m)
    }

    pub(super) async fn put_manifest(&self, m: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(m).expect("manifest serialises");
        self.store
            .put(&self.key(MANIFEST), PutPayload::from(bytes))
            .await
            .map_err(|e| self.err("cannot write manifest", e))?;
        self.sync(MANIFEST)
    }
}

pub struct ObjectExporter {
    name: String,
    bucket: Bucket,
    policy: ObjectPolicy,
    /// Scratch space for building synthetic fulls.
    work: PathBuf,
    runtime: tokio::runtime::Runtime,
    manifest: Option<Manifest>,
}

impl ObjectExporter {
    /// The exporter of an object target; synthetic fulls are built in a directory
    /// of its own under `state`, emptied here (the caller holds the target's lock, so
    /// whatever is there was left by a run that died).
    pub fn new(target: &Target, state: &Path) -> Result<ObjectExporter> {
        let (url, options) = target
            .spec
            .object_options()
            .expect("only object targets come here");
        let policy = target.spec.object_policy().expect("an object target");
        let work = state.join(format!("{}.work", target.name));
        match std::fs::remove_dir_all(&work) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("cannot clear scratch space", &work)(e))
            }
            _ => {}
        }
        std::fs::create_dir_all(&work).map_err(Error::io("cannot create scratch space", &work))?;
        ObjectExporter::with_bucket(&target.name, Bucket::open(url, &options)?, policy, &work)
    }

    pub fn with_bucket(
        name: &str,
        bucket: Bucket,
        policy: ObjectPolicy,
        work: &Path,
    ) -> Result<ObjectExporter> {
        Ok(ObjectExporter {
            name: name.to_string(),
            bucket,
            policy,
            work: work.to_path_buf(),
            runtime: runtime()?,
            manifest: None,
        })
    }

    fn put_manifest(&mut self, m: Manifest) -> Result<()> {
        self.runtime.block_on(self.bucket.put_manifest(&m))?;
        self.manifest = Some(m);
        Ok(())
    }

    fn manifest(&mut self) -> Result<&mut Manifest> {
        if self.manifest.is_none() {
            let m = self.runtime.block_on(self.bucket.manifest())?;
            self.manifest = Some(m);
        }
        Ok(self.manifest.as_mut().expect("loaded above"))
    }
}

impl Exporter for ObjectExporter {
    fn cursor(&mut self) -> Result<u64> {
        Ok(self.manifest()?.cursor())
    }

    fn apply(&mut self, journal: &Journal, delta: u64) -> Result<u64> {
        let cursor = self.cursor()?;
        check_next(&self.name, cursor, delta)?;
        let fed_by = self.manifest()?.journal.clone();
        super::check_journal(&self.name, fed_by.as_deref(), cursor, journal)?;
        let entry = journal.delta(delta)?.clone();
        journal.read_delta(delta)?.check_all(&NoProgress)?;
        let key = format!("deltas/{delta:020}.cjd");
        let (size, crc) = self.runtime.block_on(upload_range(
            &self.bucket,
            &key,
            journal,
            entry.begin,
            entry.end,
        ))?;
        let mut m = self.manifest()?.clone();
        m.deltas.push(ManifestDelta {
            delta,
            time_ns: entry.time_ns,
            flags: entry.flags,
            key,
            size,
            crc32c: crc,
            changed_bytes: entry.changed_bytes,
        });
        m.bookmarks = bookmarks_for(&m, journal);
        m.journal = journal.id().map(String::from);
        self.put_manifest(m)?;
        Ok(size)
    }

    fn finish(&mut self, journal: &Journal) -> Result<Upkeep> {
        let mut upkeep = Upkeep::default();
        let m = self.manifest()?;
        let wanted = bookmarks_for(m, journal);
        if m.bookmarks != wanted {
            let mut m = m.clone();
            m.bookmarks = wanted;
            self.put_manifest(m)?;
        }
        let every = self.policy.synthetic_full_every;
        if chain::full_due(self.manifest()?, every) {
            let volumes = journal.volumes_at(self.cursor()?)?;
            let m = self.manifest()?.clone();
            let full = chain::synthesize(&self.bucket, &self.runtime, &m, &volumes, &self.work)?;
            tracing::info!(target = %self.name, delta = full.delta, bytes = full.size, "synthetic full image written");
            upkeep.synthetic_full = Some(full.delta);
            let mut m = m;
            m.fulls.push(full);
            self.put_manifest(m)?;
        }
        if self.policy.retention.prunes() {
            let m = self.manifest()?.clone();
            let (kept, pruned) =
                chain::prune(&self.bucket, &self.runtime, &m, &self.policy.retention)?;
            self.manifest = Some(kept);
            upkeep.deleted_objects = pruned.deleted_objects;
            upkeep.deleted_bytes = pruned.deleted_bytes;
        }
        Ok(upkeep)
    }
}

/// The bookmarks a replica with manifest `m` should list: those it lists already and
/// the journal's up to its cursor (the journal may have pruned older ones), minus any
/// before its oldest restore point (retention pruned those), one per name.
fn bookmarks_for(m: &Manifest, journal: &Journal) -> Vec<BookmarkEntry> {
    let cursor = m.cursor();
    let oldest = m.points().first().map_or(u64::MAX, |p| p.0);
    let mut all: std::collections::BTreeMap<u64, BookmarkEntry> =
        m.bookmarks.iter().map(|b| (b.seq, b.clone())).collect();
    for b in journal.bookmarks() {
        if b.after_delta > 0 && b.after_delta <= cursor {
            all.insert(b.seq, b.clone());
        }
    }
    // A name the journal reused after pruning its first bookmark of that name now
    // means the newer point, as it does in the journal.
    let mut named: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for b in all.values() {
        named.insert(b.name.clone(), b.seq);
    }
    all.into_values()
        .filter(|b| b.after_delta >= oldest && named[&b.name] == b.seq)
        .collect()
}

/// The library is synchronous; object_store is async. Each user of a bucket drives it
/// from a small runtime of its own.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            what: "cannot start the object store runtime",
            path: std::path::PathBuf::new(),
            cause: e,
        })
}

/// Uploads the journal bytes `begin..end` (which may span segments) as one object,
/// streaming in parts; returns its size and CRC-32C.
pub(super) async fn upload_range(
    bucket: &Bucket,
    key: &str,
    journal: &Journal,
    begin: Pos,
    end: Pos,
) -> Result<(u64, u32)> {
    let path = bucket.key(key);
    let upload = bucket
        .store
        .put_multipart(&path)
        .await
        .map_err(|e| bucket.err("cannot start upload", e))?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut crc = 0u32;
    let mut size = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    let result: Result<()> = async {
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
                w.write(&buf[..n]);
                size += n as u64;
                at += n as u64;
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            w.finish()
                .await
                .map_err(|e| bucket.err("cannot complete upload", e))?;
            bucket.sync(key)?;
            Ok((size, crc))
        }
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}
