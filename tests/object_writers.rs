//! One writer per object replica (docs/object-replica.md): the manifest's head is
//! written conditionally, so two exporters on one prefix cannot overwrite each other
//! or prune each other's objects; a write that landed behind a retry is recognised as
//! our own; the bytes written per delta stay bounded; and format-1 replicas still
//! restore and are upgraded in place.
mod common;

use async_trait::async_trait;
use cascade::config::{ObjectOptions, ObjectPolicy, Retention};
use cascade::export::{Exporter, ObjectExporter};
use cascade::journal::{Journal, Point};
use cascade::replica::{runtime, Bucket, Manifest, ManifestDelta, Writer, CHUNK_DELTAS};
use common::config::TargetFile;
use common::group::{noise, Group};
use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

/// A group (its own journal) with `n` committed deltas, and its contents at each.
fn group(dir: &Path, n: u64) -> (Group, Vec<Vec<Vec<u8>>>) {
    let g = Group::new(dir, &[1 << 20]);
    let points = (0..n)
        .map(|i| {
            g.write(
                0,
                i * 100_000,
                &noise(dir.as_os_str().len() as u64 + i, 150_000),
            );
            g.cycle();
            g.contents()
        })
        .collect();
    (g, points)
}

fn keep_newest(n: u64) -> ObjectPolicy {
    ObjectPolicy {
        synthetic_full_every: 0,
        retention: Retention {
            keep_deltas: Some(n),
            keep_age: None,
        },
        batch: Default::default(),
    }
}

fn exporter(name: &str, bucket: &Bucket, work: &Path) -> ObjectExporter {
    ObjectExporter::with_bucket(name, bucket.clone(), keep_newest(1), work).unwrap()
}

fn manifest(bucket: &Bucket) -> Manifest {
    runtime().unwrap().block_on(bucket.manifest()).unwrap()
}

/// Every object of the replica and its size.
fn objects(bucket: &Bucket) -> Vec<(String, u64)> {
    runtime().unwrap().block_on(async {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        let mut list = bucket.store.list(Some(&bucket.prefix));
        while let Some(m) = list.next().await {
            let m = m.unwrap();
            out.push((m.location.to_string(), m.size));
        }
        out.sort();
        out
    })
}

/// The newest point of the replica, restored into new files.
fn restored(bucket: &Bucket, dir: &Path, delta: u64) -> Vec<Vec<u8>> {
    let out = tempfile::tempdir_in(dir).unwrap();
    let to = out.path().join("v0");
    cascade::restore::restore_from(
        bucket,
        Some(&Point::Delta(delta)),
        &[format!("v0={}", to.display()).parse().unwrap()],
        out.path(),
        &cascade::progress::NoProgress,
    )
    .unwrap();
    vec![std::fs::read(to).unwrap()]
}

/// Two exporters of two journals open one empty replica at once, then two exporters
/// of one journal hold one head version at once. Each time the first to write wins,
/// the other is refused with the winner's name, and every object the winner's
/// manifest names is still there and restores.
fn race(tmp: &Path, bucket: &dyn Fn(&str) -> Bucket) {
    let (ga, pa) = group(&tmp.join("a"), 3);
    let (gb, _) = group(&tmp.join("b"), 3);
    let (ja, jb) = (
        Journal::open(&ga.journal()).unwrap(),
        Journal::open(&gb.journal()).unwrap(),
    );
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).unwrap();

    // Both see an empty replica; A's first manifest is created first.
    let shared = bucket("race-create");
    let (mut a, mut b) = (exporter("a", &shared, &work), exporter("b", &shared, &work));
    assert_eq!((a.cursor().unwrap(), b.cursor().unwrap()), (0, 0));
    for d in 1..=3 {
        a.apply(&ja, d).unwrap();
    }
    a.finish(&ja).unwrap();
    let winner = objects(&shared);
    let err = b.apply(&jb, 1).unwrap_err();
    let text = err.to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        matches!(err, cascade::Error::OtherWriter { .. })
            && text.contains(&format!("host {}", host.trim()))
            && text.contains(&format!("pid {}", std::process::id()))
            && text.contains(ja.id().unwrap()),
        "{text}"
    );
    // B's retention would keep only its own delta 1: it never runs on A's replica.
    assert!(
        b.finish(&jb).is_err(),
        "a foreign journal's upkeep is refused"
    );
    let m = manifest(&shared);
    assert_eq!(m.cursor(), 3);
    assert_eq!(m.journal.as_deref(), ja.id());
    for (key, _) in &winner {
        assert!(
            objects(&shared).iter().any(|(k, _)| k == key),
            "{key} of the winner is still there"
        );
    }
    assert!(restored(&shared, tmp, 3) == pa[2]);

    // Two exporters of one journal, both at delta 1: A's delta 2 goes first, and B's
    // write of the head it read is refused.
    let shared = bucket("race-update");
    exporter("a", &shared, &work).apply(&ja, 1).unwrap();
    let (mut a, mut b) = (exporter("a", &shared, &work), exporter("b", &shared, &work));
    assert_eq!((a.cursor().unwrap(), b.cursor().unwrap()), (1, 1));
    a.apply(&ja, 2).unwrap();
    let text = b.apply(&ja, 2).unwrap_err().to_string();
    assert!(
        text.contains("written meanwhile by another exporter"),
        "{text}"
    );
    a.apply(&ja, 3).unwrap();
    a.finish(&ja).unwrap();
    let m = manifest(&shared);
    assert_eq!(m.cursor(), 3);
    assert!(restored(&shared, tmp, 3) == pa[2]);
}

#[test]
fn two_exporters_race_on_a_local_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    race(tmp.path(), &|name| {
        Bucket::open(&root.join(name).display().to_string(), &Default::default()).unwrap()
    });
}

#[test]
fn two_exporters_race_on_s3() {
    let s3 = common::s3::S3Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let options = s3_options(&s3, tmp.path());
    race(tmp.path(), &|name| {
        Bucket::open(&s3.url(name), &options).unwrap()
    });
}

/// The options of an object target on `s3`, loaded the way a target file is.
fn s3_options(s3: &common::s3::S3Server, dir: &Path) -> ObjectOptions {
    let g = Group::new(&dir.join("config"), &[4096]);
    g.write_target("s3", &TargetFile::from(s3.target("")));
    g.configure(|c| c.groups[0].targets = vec!["s3".into()]);
    let cfg = g.config();
    cfg.target("s3").unwrap().spec.object_options().unwrap().1
}

/// Many rounds of two exporters of one journal writing at the same instant to a
/// local directory, whose conditional replace is cascade's own (a lock on the
/// directory): in every round exactly one of them writes each head.
#[test]
fn exclusion_holds_under_a_real_race_on_a_local_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = group(&tmp.path().join("g"), 2);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    for round in 0..20 {
        let dir: PathBuf = tmp.path().join(format!("vault-{round}"));
        let bucket = Bucket::open(&dir.display().to_string(), &Default::default()).unwrap();
        // Round 0 mod 2: both create the first head; else both replace delta 1's.
        let start = round % 2;
        if start == 1 {
            let j = Journal::open(&g.journal()).unwrap();
            exporter("seed", &bucket, &work).apply(&j, 1).unwrap();
        }
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<bool> = (0..2)
            .map(|i| {
                let (bucket, work, barrier, jdir) =
                    (bucket.clone(), work.clone(), barrier.clone(), g.journal());
                std::thread::spawn(move || {
                    let j = Journal::open(&jdir).unwrap();
                    let mut e = exporter(&format!("w{i}"), &bucket, &work);
                    e.cursor().unwrap();
                    barrier.wait();
                    match e.apply(&j, start + 1) {
                        Ok(_) => true,
                        Err(cascade::Error::OtherWriter { .. }) => false,
                        Err(e) => panic!("round {round}: {e}"),
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            results.iter().filter(|w| **w).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(restored(&bucket, tmp.path(), start + 1) == points[start as usize]);
    }
}

/// An in-memory store that counts the bytes written to manifest objects and, when
/// asked, answers a conditional write of the head that it carried out with the
/// conflict a retried request gets (S3 retries a 5xx; the first attempt had landed).
#[derive(Debug)]
struct Store {
    inner: InMemory,
    manifest_bytes: AtomicU64,
    retry_lands: bool,
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "test store over {}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Store {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().contains("manifest") {
            self.manifest_bytes
                .fetch_add(payload.content_length() as u64, Ordering::Relaxed);
        }
        let mode = opts.mode.clone();
        let put = self.inner.put_opts(location, payload, opts).await?;
        let path = location.to_string();
        match mode {
            PutMode::Create if self.retry_lands => Err(object_store::Error::AlreadyExists {
                path,
                source: "a retry of a create that landed".into(),
            }),
            PutMode::Update(_) if self.retry_lands => Err(object_store::Error::Precondition {
                path,
                source: "a retry of an update that landed".into(),
            }),
            _ => Ok(put),
        }
    }
    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &ObjectPath) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
    ) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

fn store(retry_lands: bool) -> Arc<Store> {
    Arc::new(Store {
        inner: InMemory::new(),
        manifest_bytes: AtomicU64::new(0),
        retry_lands,
    })
}

#[test]
fn a_retried_write_that_landed_is_our_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = group(&tmp.path().join("g"), 3);
    let j = Journal::open(&g.journal()).unwrap();
    let bucket = Bucket::from_store(store(true), "p", "flaky");
    let mut e = exporter("flaky", &bucket, tmp.path());
    for d in 1..=3 {
        e.apply(&j, d).unwrap();
    }
    e.finish(&j).unwrap();
    assert_eq!(manifest(&bucket).cursor(), 3);
    assert!(restored(&bucket, tmp.path(), 3) == points[2]);
}

fn entry(delta: u64) -> ManifestDelta {
    ManifestDelta {
        delta,
        time_ns: 1_700_000_000_000_000_000 + delta as i64,
        // Full images now and then, so retention has a base to keep from.
        flags: u32::from(delta == 1 || delta.is_multiple_of(50)),
        key: format!("deltas/{delta:020}-00000000-0000-0000-0000-000000000000.cjd"),
        size: 1 << 20,
        crc32c: delta as u32,
        changed_bytes: 1 << 20,
        first: None,
        first_time_ns: None,
        writes: None,
    }
}

/// The manifest bytes written per delta do not grow with the replica's age: the
/// deltas 2N+1..=3N cost what the first N did (one rewrite of the whole list at each
/// delta would cost about five times as much), and what was written reads back.
#[test]
fn manifest_bytes_per_delta_stay_bounded() {
    let s = store(false);
    let bucket = Bucket::from_store(s.clone(), "p", "memory");
    let rt = runtime().unwrap();
    let writer = Writer::this_process().unwrap();
    let (mut m, mut stored) = rt.block_on(bucket.load_manifest()).unwrap();
    let n = CHUNK_DELTAS as u64;
    let mut windows = Vec::new();
    for d in 1..=3 * n {
        m.deltas.push(entry(d));
        rt.block_on(bucket.put_manifest(&m, &mut stored, &writer))
            .unwrap();
        if d % n == 0 {
            windows.push(s.manifest_bytes.swap(0, Ordering::Relaxed));
        }
    }
    assert!(
        windows[2] as f64 <= windows[0] as f64 * 1.05,
        "bytes per {n} deltas: {windows:?}"
    );
    assert_eq!(rt.block_on(bucket.manifest()).unwrap(), m);

    // Retention lets the oldest go: the head lists from the new oldest delta on, a
    // chunk straddling it is still read, and the chunks wholly before it are deleted.
    let keep = Retention {
        keep_deltas: Some(10),
        keep_age: None,
    };
    let (kept, _) = cascade::export::chain::prune(
        &bucket,
        &rt,
        &m,
        &keep,
        cascade::clock::now_ns(),
        (&mut stored, &writer),
    )
    .unwrap();
    let base = 3 * n / 50 * 50;
    assert_eq!(kept.deltas.first().map(|d| d.delta), Some(base));
    assert_eq!(rt.block_on(bucket.manifest()).unwrap(), kept);
    let chunks: Vec<String> = objects(&bucket)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("manifest.d/"))
        .collect();
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert!(
        chunks[0].contains(&format!("/{:020}-{:020}-", 2 * n + 1, 3 * n)),
        "{chunks:?}"
    );
    m = kept;
    m.deltas.clear();
    rt.block_on(bucket.put_manifest(&m, &mut stored, &writer))
        .unwrap();
    assert_eq!(rt.block_on(bucket.manifest()).unwrap(), m);
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/object-replica-v1")
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A replica written with manifest format 1 (tests/fixtures/make-object-replica-v1.sh)
/// restores every point exactly, and after a write in format 2 (conditional on the
/// format-1 head it read) it still does.
#[test]
fn a_format_1_replica_restores_and_is_upgraded() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    let o = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture().join("vault"))
        .arg(&vault)
        .status()
        .unwrap();
    assert!(o.success());
    let expected = std::fs::read_to_string(fixture().join("expected.txt")).unwrap();
    let bucket = Bucket::open(&vault.display().to_string(), &Default::default()).unwrap();
    let check = |bucket: &Bucket| {
        for line in expected.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let delta: u64 = f[0].parse().unwrap();
            let out = tempfile::tempdir_in(tmp.path()).unwrap();
            let targets: Vec<_> = ["boot", "data"]
                .iter()
                .map(|v| {
                    format!("{v}={}", out.path().join(v).display())
                        .parse()
                        .unwrap()
                })
                .collect();
            cascade::restore::restore_from(
                bucket,
                Some(&Point::Delta(delta)),
                &targets,
                out.path(),
                &cascade::progress::NoProgress,
            )
            .unwrap();
            for (v, want) in ["boot", "data"].iter().zip(&f[1..]) {
                assert_eq!(
                    sha256(&std::fs::read(out.path().join(v)).unwrap()),
                    *want,
                    "{v} at delta {delta}"
                );
            }
        }
    };
    check(&bucket);
    let rt = runtime().unwrap();
    let (m, mut stored) = rt.block_on(bucket.load_manifest()).unwrap();
    assert_eq!((m.cursor(), m.fulls.len(), m.bookmarks.len()), (3, 1, 1));
    // Another writer replaces the format-1 head first: ours is refused.
    let mut stale = stored.clone();
    let writer = Writer::this_process().unwrap();
    rt.block_on(bucket.put_manifest(&m, &mut stored, &writer))
        .unwrap();
    let head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vault.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(head["format"], 2);
    assert_eq!(rt.block_on(bucket.manifest()).unwrap(), m);
    check(&bucket);
    let err = rt
        .block_on(bucket.put_manifest(&m, &mut stale, &writer))
        .unwrap_err();
    assert!(
        matches!(err, cascade::Error::OtherWriter { .. }) || err.to_string().contains("meanwhile"),
        "{err}"
    );
}
