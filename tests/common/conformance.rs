//! The exporter contract (src/export/mod.rs) and an object replica's history, as
//! suites every implementation and every object store runs the same way: the test
//! binaries of each store (`exporter_conformance.rs`, `azure.rs`) call them.
use super::config::{Encryption, ObjectTarget, TargetFile};
use super::group::{noise, Group};
use cascade::config::{Config, ObjectPolicy};
use cascade::export::{open_exporter, Exporter, Flush, ObjectExporter};
use cascade::journal::{Journal, Point};
use cascade::replica::Bucket;
use cascade::restore::restore_from;
use std::collections::BTreeSet;
use std::path::Path;

/// A group with three committed deltas and the volume contents at each.
pub fn history(dir: &Path) -> (Group, Vec<Vec<Vec<u8>>>) {
    let g = Group::new(dir, &[3 << 20, 1 << 20]);
    let mut points = Vec::new();
    g.write(0, 0, &noise(1, 2 << 20));
    g.write(1, 4096, &noise(2, 100_000));
    g.cycle();
    points.push(g.contents());
    g.write(0, 1 << 20, &noise(3, 300_000));
    g.punch(1, 0, 65536);
    g.cycle();
    points.push(g.contents());
    g.write(1, 500_000, &noise(4, 70_000));
    g.cycle();
    points.push(g.contents());
    (g, points)
}

/// Writes `target` as `replica`, names it in the group's config and returns the
/// loaded config.
pub fn with_target(g: &Group, target: TargetFile) -> Config {
    g.write_target("replica", &target);
    g.configure(|c| c.groups[0].targets = vec!["replica".into()]);
    g.config()
}

pub fn open(cfg: &Config) -> Box<dyn Exporter> {
    let cg = cfg.group("cg").unwrap();
    let state = cascade::export::targets_state(cfg, cg);
    std::fs::create_dir_all(&state).unwrap();
    open_exporter(cfg.target("replica").unwrap(), cg, &state).unwrap()
}

/// The contract, given a way to read the replica's volumes back.
pub fn suite(
    g: &Group,
    points: &[Vec<Vec<u8>>],
    make: &dyn Fn() -> Box<dyn Exporter>,
    read_back: &dyn Fn() -> Vec<Vec<u8>>,
) {
    let journal = Journal::open(&g.journal()).unwrap();
    let mut e = make();
    assert_eq!(e.cursor().unwrap(), 0, "a new target holds nothing");
    assert!(e.apply(&journal, 2).is_err(), "deltas go in order");
    e.apply(&journal, 1).unwrap();
    assert_eq!(e.cursor().unwrap(), 1);
    assert!(read_back() == points[0], "replica at delta 1");
    drop(e);
    // A new exporter resumes from the durable cursor.
    let mut e = make();
    assert_eq!(e.cursor().unwrap(), 1);
    assert!(
        e.apply(&journal, 1).is_err(),
        "a delta is not applied twice in a row"
    );
    // The rest as the export loop takes it: runs that run_end offers.
    assert!(
        e.apply_run(&journal, 3, 3).is_err(),
        "a run goes on from the cursor"
    );
    let mut next = 2;
    while next <= 3 {
        let end = e.run_end(&journal, next, Flush::All).unwrap();
        let end = end.expect("Flush::All leaves nothing for later");
        assert!((next..=3).contains(&end), "run {next}..={end}");
        e.apply_run(&journal, next, end).unwrap();
        assert_eq!(e.cursor().unwrap(), end);
        next = end + 1;
    }
    assert!(read_back() == points[2], "replica at delta 3");
}

/// Reads an object replica back the way a user would: a restore from it alone, both
/// into new files (streamed) and onto existing files holding other bytes (downloaded
/// and checked first), which must agree.
pub fn restored(bucket: &Bucket, dir: &Path) -> Vec<Vec<u8>> {
    let out = tempfile::tempdir_in(dir).unwrap();
    let restore = |prefix: &str| {
        let targets = ["v0", "v1"].map(|v| {
            format!("{v}={}", out.path().join(format!("{prefix}{v}")).display())
                .parse()
                .unwrap()
        });
        restore_from(
            bucket,
            None,
            &targets,
            out.path(),
            &cascade::progress::NoProgress,
        )
        .unwrap();
        ["v0", "v1"]
            .iter()
            .map(|v| std::fs::read(out.path().join(format!("{prefix}{v}"))).unwrap())
            .collect::<Vec<_>>()
    };
    let streamed = restore("new-");
    for v in ["v0", "v1"] {
        std::fs::write(out.path().join(format!("old-{v}")), vec![0xeeu8; 5 << 20]).unwrap();
    }
    assert!(restore("old-") == streamed, "both ways of restoring agree");
    streamed
}

pub fn policy(every: u64, keep_deltas: Option<u64>) -> ObjectPolicy {
    ObjectPolicy {
        synthetic_full_every: every,
        retention: cascade::config::Retention {
            keep_deltas,
            keep_age: None,
        },
        batch: Default::default(),
    }
}

/// Every object of the replica's history in its store, by key below its prefix: all
/// but an encrypted replica's `encryption.json` and key slots, which stay as they are.
pub fn stored_keys(bucket: &Bucket) -> BTreeSet<String> {
    let rt = cascade::replica::runtime().unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        let mut out = BTreeSet::new();
        let mut list = bucket.store.list(Some(&bucket.prefix));
        while let Some(m) = list.next().await {
            let key = m.unwrap().location.to_string();
            let rel = key
                .strip_prefix(&format!("{}/", bucket.prefix))
                .unwrap_or(&key)
                .to_string();
            if rel != "encryption.json" && !rel.starts_with("keys/") {
                out.insert(rel);
            }
        }
        out
    })
}

/// A restore at `delta` into new files, or onto existing ones (`over`: the two paths
/// of restore_from).
pub fn restore_at(
    bucket: &Bucket,
    dir: &Path,
    delta: u64,
    over: bool,
) -> cascade::error::Result<Vec<Vec<u8>>> {
    let out = tempfile::tempdir_in(dir).unwrap();
    if over {
        for v in ["v0", "v1"] {
            std::fs::write(out.path().join(v), vec![0xeeu8; 5 << 20]).unwrap();
        }
    }
    let targets = ["v0", "v1"].map(|v| {
        format!("{v}={}", out.path().join(v).display())
            .parse()
            .unwrap()
    });
    restore_from(
        bucket,
        Some(&Point::Delta(delta)),
        &targets,
        out.path(),
        &cascade::progress::NoProgress,
    )?;
    Ok(["v0", "v1"]
        .iter()
        .map(|v| std::fs::read(out.path().join(v)).unwrap())
        .collect())
}

/// The replica's history, for every object store: synthetic full images make a
/// restore independent of old deltas, and retention deletes exactly what no kept
/// restore point needs. `make` gives an exporter on a fresh, empty replica.
pub fn history_suite(work: &Path, make: &dyn Fn(ObjectPolicy) -> (Box<dyn Exporter>, Bucket)) {
    std::fs::create_dir_all(work).unwrap();
    let g = Group::new(&work.join("group"), &[3 << 20, 1 << 20]);
    let mut points = Vec::new();
    for i in 0..7u64 {
        g.write((i % 2) as usize, i * 300_000, &noise(10 + i, 200_000));
        if i == 4 {
            g.punch(0, 0, 1 << 20);
        }
        g.cycle();
        points.push(g.contents());
    }
    let journal = Journal::open(&g.journal()).unwrap();
    let manifest = |b: &Bucket| {
        cascade::replica::runtime()
            .unwrap()
            .block_on(b.manifest())
            .unwrap()
    };

    // Synthetic fulls alone (no retention): every third delta gets one, and a
    // restore needs only the newest full at or before its point.
    let (mut e, bucket) = make(policy(3, None));
    for d in 1..=7 {
        e.apply(&journal, d).unwrap();
        let upkeep = e.finish(&journal).unwrap();
        assert_eq!(
            upkeep.synthetic_full,
            (d == 4 || d == 7).then_some(d),
            "delta {d}"
        );
    }
    let m = manifest(&bucket);
    assert_eq!(m.fulls.iter().map(|f| f.delta).collect::<Vec<_>>(), [4, 7]);
    assert!(stored_keys(&bucket).contains(&m.fulls[0].key));
    let rt = cascade::replica::runtime().unwrap();
    for old in &m.deltas[..4] {
        rt.block_on(bucket.store.delete(&bucket.key(&old.key)))
            .unwrap();
    }
    for d in 4..=7 {
        assert!(
            restore_at(&bucket, work, d, d % 2 == 0).unwrap() == points[d as usize - 1],
            "restore at delta {d} from the synthetic full at 4"
        );
    }
    let err = restore_at(&bucket, work, 3, false).unwrap_err().to_string();
    assert!(
        err.contains(&m.deltas[0].key) && err.contains("missing"),
        "{err}"
    );

    // Retention on top: keep the newest 2 points. After each export the store holds
    // exactly what the manifest names, and every point it names restores exactly.
    let (mut e, bucket) = make(policy(2, Some(2)));
    for d in 1..=7 {
        e.apply(&journal, d).unwrap();
        e.finish(&journal).unwrap();
        let m = manifest(&bucket);
        let named: BTreeSet<String> = m
            .deltas
            .iter()
            .chain(&m.fulls)
            .map(|o| o.key.clone())
            .chain(["manifest.json".to_string()])
            .collect();
        assert_eq!(stored_keys(&bucket), named, "after delta {d}");
        let kept: Vec<u64> = m.points().iter().map(|p| p.0).collect();
        let newest: Vec<u64> = (d.saturating_sub(1).max(1)..=d).collect();
        assert!(kept.ends_with(&newest), "after delta {d}: {kept:?}");
        for p in &kept {
            assert!(
                restore_at(&bucket, work, *p, *p % 2 == 1).unwrap() == points[*p as usize - 1],
                "after delta {d}: restore at {p}"
            );
        }
    }
    let m = manifest(&bucket);
    assert!(m.points().len() <= 3, "{:?}", m.points());
    let err = restore_at(&bucket, work, 1, false).unwrap_err().to_string();
    assert!(err.contains("delta 1 does not exist"), "{err}");
}

/// The exporter contract and the history suite on the object store `target` reaches
/// (its url a fresh prefix; `url_of` gives the store's URL of another prefix, for the
/// history suite's fresh replicas). A target with `encryption:` gets its key file
/// made first, at the `../vault.key` of the targets directory.
pub fn object_suites(target: ObjectTarget, url_of: &dyn Fn(&str) -> String) {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = history(tmp.path());
    if target.encryption.is_some() {
        let o = g.cascade(&["key", "generate", "vault.key"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let cfg = with_target(&g, target.into());
    let (url, options) = cfg
        .target("replica")
        .unwrap()
        .spec
        .object_options()
        .unwrap();
    let bucket = Bucket::open(url, &options).unwrap();
    suite(&g, &points, &|| open(&cfg), &|| {
        restored(&bucket, tmp.path())
    });
    let work = tmp.path().join("history");
    history_suite(&work, &|policy: ObjectPolicy| {
        let url = url_of(&format!("history/{}", cascade::clock::now_ns()));
        let bucket = Bucket::open(&url, &options).unwrap();
        let e = ObjectExporter::with_bucket("store", bucket.clone(), policy, &work).unwrap();
        (Box::new(e) as Box<dyn Exporter>, bucket)
    });
}

/// What every cloud store runs: [`object_suites`] on `base` (its url replaced by a
/// fresh prefix's, from `url_of`), plain and encrypted; then an export and a restore
/// from the store alone through the binary, `restore_args` saying how the restore
/// reaches the store. Returns the group of that last run (in the temp dir returned
/// with it), for a store's own checks.
pub fn cloud_suites(
    base: &ObjectTarget,
    url_of: &dyn Fn(&str) -> String,
    restore_args: &[&str],
) -> (tempfile::TempDir, Group) {
    for (prefix, encryption) in [
        ("plain/cg", None),
        ("sealed/cg", Some(Encryption::file("../vault.key"))),
    ] {
        let target = ObjectTarget {
            url: url_of(prefix),
            encryption,
            ..base.clone()
        };
        object_suites(target, url_of);
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[2 << 20]);
    g.write(0, 4096, &noise(7, 300_000));
    g.cycle();
    let target = ObjectTarget {
        url: url_of("cli"),
        ..base.clone()
    };
    g.write_target("cloud", &target.into());
    g.configure(|c| c.groups[0].targets = vec!["cloud".into()]);
    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = url_of("cli");
    let args = [
        &["restore", "--from", &url, "--to", "out.img"][..],
        restore_args,
    ]
    .concat();
    let o = g.cascade(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(g.dir.join("out.img")).unwrap() == g.contents()[0]);
    (tmp, g)
}
