//! The object exporter: each delta of the journal uploaded as one object of an
//! object replica (its format is in [`crate::replica`]), the manifest written after
//! it, then the replica's history kept (synthetic fulls and retention, `chain.rs`).
//!
//! A split group commits a delta every `commit-every` (ten a second by default): one
//! object each would make millions a day, each with its own request costs and
//! manifest entry. So its deltas go up in runs, one object per run: a run is uploaded
//! once its first delta is `batch` old (default 30s), or it reaches [`MAX_RUN`]
//! bytes, or a bookmark follows its last delta, or the stream ends (a base delta
//! follows); `cascade export` uploads every run at once. A restore still reaches every
//! write inside a run: it downloads the run and finds the point in its records.
use super::chain::{self, Upkeep};
use super::{check_next, Exporter, Flush};
use crate::config::{ObjectPolicy, Target};
use crate::error::{Error, Result};
use crate::journal::record::{Gap, Writes};
use crate::journal::{BookmarkEntry, DeltaEntry, Journal};
use crate::progress::NoProgress;
use crate::replica::{runtime, upload_range, Bucket, Manifest, ManifestDelta, Stored, Writer};
use std::path::{Path, PathBuf};

/// The most journal bytes one run of split deltas holds: objects stay large enough
/// to be cheap, and small enough that a failed upload costs little to redo.
pub const MAX_RUN: u64 = 256 << 20;

pub struct ObjectExporter {
    name: String,
    bucket: Bucket,
    policy: ObjectPolicy,
    /// Scratch space for building synthetic fulls.
    work: PathBuf,
    runtime: tokio::runtime::Runtime,
    manifest: Option<Manifest>,
    /// The head last read or written: the version the next conditional write of the
    /// manifest must match, kept across the deltas of one export.
    stored: Stored,
    /// This exporter, as the manifest names it to another writer.
    writer: Writer,
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
            stored: Stored::default(),
            writer: Writer::this_process()?,
        })
    }

    /// Writes `m` as the manifest. On failure what was read is forgotten: the write
    /// may have landed, or another writer may own the replica, so the next use reads
    /// the manifest again.
    fn put_manifest(&mut self, m: Manifest) -> Result<()> {
        let put =
            self.runtime
                .block_on(self.bucket.put_manifest(&m, &mut self.stored, &self.writer));
        self.manifest = put.is_ok().then_some(m);
        put
    }

    fn manifest(&mut self) -> Result<&mut Manifest> {
        if self.manifest.is_none() {
            let (m, stored) = self.runtime.block_on(self.bucket.load_manifest())?;
            self.manifest = Some(m);
            self.stored = stored;
        }
        Ok(self.manifest.as_mut().expect("loaded above"))
    }
}

impl Exporter for ObjectExporter {
    fn cursor(&mut self) -> Result<u64> {
        Ok(self.manifest()?.cursor())
    }

    fn fed_by(&mut self) -> Result<Option<String>> {
        Ok(self.manifest()?.journal.clone())
    }

    fn apply(&mut self, journal: &Journal, delta: u64) -> Result<u64> {
        self.apply_run(journal, delta, delta)
    }

    fn run_end(&mut self, journal: &Journal, next: u64, flush: Flush) -> Result<Option<u64>> {
        let first = journal.delta(next)?;
        if first.writes.is_none() {
            return Ok(Some(next));
        }
        let last = journal.last_delta();
        let marked: std::collections::HashSet<u64> =
            journal.bookmarks().iter().map(|b| b.after_delta).collect();
        let (mut end, mut bytes) = (next, first.stored_bytes);
        // Closed: nothing more can join the run, so it goes now.
        let closed = loop {
            if marked.contains(&end) {
                break true;
            }
            if end == last {
                break false;
            }
            let d = journal.delta(end + 1)?;
            if d.writes.is_none() || bytes + d.stored_bytes > MAX_RUN {
                break true;
            }
            bytes += d.stored_bytes;
            end += 1;
        };
        let age = crate::clock::now_ns().saturating_sub(first.time_ns).max(0) as u128;
        let due = closed || flush == Flush::All || age >= self.policy.batch.as_nanos();
        Ok(due.then_some(end))
    }

    fn apply_run(&mut self, journal: &Journal, first: u64, last: u64) -> Result<u64> {
        let cursor = self.cursor()?;
        check_next(&self.name, cursor, first)?;
        let fed_by = self.manifest()?.journal.clone();
        journal.check_replica(&self.name, fed_by.as_deref(), cursor)?;
        let run = (first..=last)
            .map(|d| journal.delta(d).cloned())
            .collect::<Result<Vec<DeltaEntry>>>()?;
        if last > first && run.iter().any(|d| d.writes.is_none()) {
            return Err(Error::InvalidArgument(format!(
                "target `{}`: deltas {first}..={last} are not all split deltas; only those go up as one object",
                self.name
            )));
        }
        for d in first..=last {
            journal.read_delta(d)?.check_all(&NoProgress)?;
        }
        let (head, tail) = (&run[0], &run[run.len() - 1]);
        let key = if last == first {
            format!("deltas/{first:020}-{}.cjd", self.writer.id)
        } else {
            format!("deltas/{first:020}-{last:020}-{}.cjd", self.writer.id)
        };
        let (size, crc) = self.runtime.block_on(upload_range(
            &self.bucket,
            &key,
            journal,
            head.begin,
            tail.end,
        ))?;
        let combined = head.writes.zip(tail.writes).map(|(h, t)| Writes {
            first_write: h.first_write,
            last_write: t.last_write,
            exact_from: h.exact_from,
            // The records say which writes inside the run are points; the
            // manifest says where a gap begins, and whether the run leaves it open.
            gap: run
                .iter()
                .find_map(|d| d.writes.and_then(|w| w.gap))
                .map(|g| Gap {
                    lost_after: g.lost_after,
                    resumes: !t.gap_open(),
                }),
        });
        let mut m = self.manifest()?.clone();
        m.deltas.push(ManifestDelta {
            delta: last,
            time_ns: tail.time_ns,
            // A run in or at the edge of a gap says so, as its deltas do.
            flags: head.flags | combined.map_or(0, |w| w.flags()),
            key,
            size,
            crc32c: crc,
            changed_bytes: run.iter().map(|d| d.changed_bytes).sum(),
            first: (last > first).then_some(first),
            first_time_ns: (last > first).then_some(head.time_ns),
            writes: combined,
        });
        m.bookmarks = bookmarks_for(&m, journal);
        m.journal = journal.id().map(String::from);
        self.put_manifest(m)?;
        Ok(size)
    }

    fn finish(&mut self, journal: &Journal) -> Result<Upkeep> {
        let mut upkeep = Upkeep::default();
        // Bookmarks, fulls and retention of another journal's replica would be wrong.
        let (cursor, fed_by) = (self.cursor()?, self.manifest()?.journal.clone());
        journal.check_replica(&self.name, fed_by.as_deref(), cursor)?;
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
            let full = chain::synthesize(
                &self.bucket,
                &self.runtime,
                &m,
                &volumes,
                &self.work,
                &self.writer,
            )?;
            tracing::info!(target = %self.name, delta = full.delta, bytes = full.size, "synthetic full image written");
            upkeep.synthetic_full = Some(full.delta);
            let mut m = m;
            m.fulls.push(full);
            self.put_manifest(m)?;
        }
        if self.policy.retention.prunes() {
            let m = self.manifest()?.clone();
            let (kept, pruned) = chain::prune(
                &self.bucket,
                &self.runtime,
                &m,
                &self.policy.retention,
                crate::clock::now_ns(),
                (&mut self.stored, &self.writer),
            )
            .inspect_err(|_| self.manifest = None)?;
            self.manifest = Some(kept);
            upkeep.deleted_objects = pruned.deleted_objects;
            upkeep.deleted_bytes = pruned.deleted_bytes;
            upkeep.locked_objects = pruned.locked_objects;
            upkeep.deletable_at_ns = pruned.deletable_at_ns;
            if let Some(at) = pruned.deletable_at_ns {
                tracing::info!(target = %self.name, locked = pruned.locked_objects,
                    deletable_at = %chrono::DateTime::from_timestamp_nanos(at),
                    "retention keeps objects that S3 Object Lock still holds");
            }
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
