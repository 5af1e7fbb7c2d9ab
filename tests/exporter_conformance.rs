//! The Exporter contract (src/export/mod.rs), checked the same way for every
//! implementation: block on an image file and on a real loop device; object on a
//! directory, in memory, on S3 (plain and encrypted). Azure's run is `azure.rs`.
mod common;

use cascade::config::ObjectPolicy;
use cascade::export::{Exporter, ObjectExporter};
use cascade::journal::Journal;
use cascade::replica::Bucket;
use common::config::{Encryption, ObjectTarget, TargetFile};
use common::conformance::{
    history, history_suite, object_suites, open, policy, restore_at, restored, stored_keys, suite,
    with_target,
};
use common::group::noise;
use common::loopdev::LoopDev;
use std::path::PathBuf;

/// A block target of volumes `v0` and `v1`.
fn block(v0: impl Into<PathBuf>, v1: impl Into<PathBuf>) -> TargetFile {
    TargetFile::block([("v0", v0.into()), ("v1", v1.into())])
}

fn read_files(paths: &[PathBuf], sizes: &[usize]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .zip(sizes)
        .map(|(p, n)| std::fs::read(p).unwrap()[..*n].to_vec())
        .collect()
}

#[test]
fn block_exporter_on_image_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = history(tmp.path());
    let paths = [g.dir.join("r0.img"), g.dir.join("r1.img")];
    for (p, size) in paths.iter().zip([3 << 20, 1 << 20]) {
        std::fs::write(p, vec![0xeeu8; size]).unwrap();
    }
    let cfg = with_target(&g, block("../r0.img", "../r1.img"));
    suite(&g, &points, &|| open(&cfg), &|| {
        read_files(&paths, &[3 << 20, 1 << 20])
    });

    // Re-applying a delta after a crash that lost the cursor update is harmless.
    let journal = Journal::open(&g.journal()).unwrap();
    let state = cascade::export::targets_state(&cfg, cfg.group("cg").unwrap());
    let cursor = state.join("replica.cursor");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cursor).unwrap()).unwrap();
    c["delta"] = 2.into();
    std::fs::write(&cursor, serde_json::to_vec(&c).unwrap()).unwrap();
    open(&cfg).apply(&journal, 3).unwrap();
    assert!(read_files(&paths, &[3 << 20, 1 << 20]) == points[2]);

    // A cursor is not trusted for a file that did not receive the deltas.
    std::fs::remove_file(&paths[0]).unwrap();
    std::fs::write(&paths[0], vec![0u8; 3 << 20]).unwrap();
    c["delta"] = 2.into();
    std::fs::write(&cursor, serde_json::to_vec(&c).unwrap()).unwrap();
    let err = open(&cfg).apply(&journal, 3).unwrap_err().to_string();
    assert!(
        err.contains("is not the file that received deltas up to 2")
            && err.contains("replica.cursor"),
        "{err}"
    );
}

/// A replica that is a source volume, or one file for two volumes, is refused; so is a
/// target fed by another journal.
#[test]
fn a_replica_is_never_a_source_nor_shared_nor_mixed() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, _) = history(tmp.path());
    g.write_target("replica", &block("../v0.img", "../r1.img"));
    g.configure(|c| c.groups[0].targets = vec!["replica".into()]);
    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("is the source volume `v0` itself"), "{out}");
    std::fs::write(g.dir.join("r.img"), vec![0u8; 3 << 20]).unwrap();
    g.write_target("replica", &block("../r.img", "../r.img"));
    let out =
        String::from_utf8_lossy(&g.cascade(&["export", "-c", "cascade.yaml"]).stdout).into_owned();
    assert!(
        out.contains("`v0` and `v1` would both be written to"),
        "{out}"
    );

    // An object replica filled from one journal refuses another journal's deltas.
    g.write_target("replica", &TargetFile::object("../vault"));
    assert!(g
        .cascade(&["export", "-c", "cascade.yaml"])
        .status
        .success());
    std::fs::remove_dir_all(g.dir.join("journals")).unwrap();
    std::fs::remove_dir_all(g.dir.join("state")).unwrap();
    for _ in 0..4 {
        g.cycle();
    }
    let out =
        String::from_utf8_lossy(&g.cascade(&["export", "-c", "cascade.yaml"]).stdout).into_owned();
    assert!(out.contains("holds deltas 1..=3 of journal"), "{out}");
}

#[test]
fn block_exporter_on_loop_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = history(tmp.path());
    let mut loops = Vec::new();
    for (i, size) in [(0, 4 << 20), (1, 1 << 20)] {
        let backing = g.dir.join(format!("dev{i}.img"));
        std::fs::write(&backing, vec![0xeeu8; size]).unwrap();
        match LoopDev::attach_or_skip(&backing, "block exporter on loop devices") {
            Some(d) => loops.push(d),
            None => return,
        }
    }
    let (d0, d1) = (loops[0].device.clone(), loops[1].device.clone());
    let cfg = with_target(&g, block(&d0, &d1));
    suite(&g, &points, &|| open(&cfg), &|| {
        read_files(&[d0.clone(), d1.clone()], &[3 << 20, 1 << 20])
    });
}

#[test]
fn block_target_too_small_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, _) = history(tmp.path());
    std::fs::write(g.dir.join("r0.img"), vec![0xeeu8; 1 << 20]).unwrap();
    std::fs::write(g.dir.join("r1.img"), vec![0xeeu8; 1 << 20]).unwrap();
    let cfg = with_target(&g, block("../r0.img", "../r1.img"));
    let journal = Journal::open(&g.journal()).unwrap();
    let err = open(&cfg).apply(&journal, 1).unwrap_err().to_string();
    assert!(
        err.contains("r0.img") && err.contains("needs 3145728 bytes"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(g.dir.join("r1.img")).unwrap(),
        vec![0xeeu8; 1 << 20],
        "nothing written to any volume"
    );
    assert_eq!(open(&cfg).cursor().unwrap(), 0);
}

/// Through the binary: a target that is offline fails alone, the other is brought up
/// to date, and once the first is back it catches up from its own cursor.
#[test]
fn a_failing_target_does_not_hold_up_another() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = history(tmp.path());
    g.block_target("near", true);
    g.block_target("far", false);
    g.configure(|c| c.groups[0].targets = vec!["far".into(), "near".into()]);

    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("cg/far (block): FAILED after delta 0") && out.contains("does not exist"),
        "{out}"
    );
    assert!(
        out.contains("cg/near (block): at delta 3, 3 applied"),
        "{out}"
    );
    let o = g.cascade(&["status", "-c", "cascade.yaml", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let far = &s["groups"][0]["targets"][0];
    assert_eq!(
        (far["target"].as_str(), far["lag_deltas"].as_u64()),
        (Some("far"), Some(3))
    );
    assert!(far["last_error"]
        .as_str()
        .unwrap()
        .contains("does not exist"));

    for v in ["v0", "v1"] {
        std::fs::write(g.dir.join(format!("far/{v}.img")), vec![0u8; 3 << 20]).unwrap();
    }
    let o = g.cascade(&["export", "-c", "cascade.yaml", "--target", "far", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            r["status"]["cursor"].as_u64(),
            r["status"]["applied"].as_u64()
        ),
        (Some(3), Some(3))
    );
    let far = read_files(
        &[g.dir.join("far/v0.img"), g.dir.join("far/v1.img")],
        &[3 << 20, 1 << 20],
    );
    assert!(far == points[2]);
}

#[test]
fn object_exporter_on_a_local_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = history(tmp.path());
    let cfg = with_target(&g, TargetFile::object("../vault"));
    let bucket = Bucket::open(
        &g.dir.join("vault").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    suite(&g, &points, &|| open(&cfg), &|| {
        restored(&bucket, tmp.path())
    });
    assert!(g.dir.join("vault/manifest.json").exists());
    let work = tmp.path().join("history");
    history_suite(&work, &|policy: ObjectPolicy| {
        let dir = work.join(format!("vault-{}", cascade::clock::now_ns()));
        let bucket = Bucket::open(&dir.display().to_string(), &Default::default()).unwrap();
        let e = ObjectExporter::with_bucket("dir", bucket.clone(), policy, &work).unwrap();
        (Box::new(e) as Box<dyn Exporter>, bucket)
    });

    // A bookmark placed after the newest delta reaches the replica with the next export.
    g.bookmark("late");
    assert!(g
        .cascade(&["export", "-c", "cascade.yaml"])
        .status
        .success());
    let o = g.cascade(&[
        "restore", "--from", "vault", "--to", "a.img", "b.img", "--until", "late",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(g.dir.join("a.img")).unwrap() == points[2][0]);
}

#[test]
fn object_exporter_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, points) = history(tmp.path());
    let bucket = Bucket::from_store(
        std::sync::Arc::new(object_store::memory::InMemory::new()),
        "a/prefix",
        "memory",
    );
    suite(
        &g,
        &points,
        &|| {
            Box::new(
                ObjectExporter::with_bucket("mem", bucket.clone(), policy(0, None), tmp.path())
                    .unwrap(),
            )
        },
        &|| restored(&bucket, tmp.path()),
    );
    let work = tmp.path().join("history");
    history_suite(&work, &|policy: ObjectPolicy| {
        let bucket = Bucket::from_store(
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            "a/prefix",
            "memory",
        );
        let e = ObjectExporter::with_bucket("mem", bucket.clone(), policy, &work).unwrap();
        (Box::new(e) as Box<dyn Exporter>, bucket)
    });
}

/// The object exporter against a real S3-compatible server on 127.0.0.1, with the
/// credentials in the target file.
#[test]
fn object_exporter_on_s3() {
    on_s3("replicas/cg", None);
}

/// The same contract with `encryption:`: every object sealed, the replica read back
/// with the key alone.
#[test]
fn object_exporter_on_s3_encrypted() {
    let s3 = on_s3("sealed/cg", Some(Encryption::file("../vault.key")));
    let dir = s3.bucket_dir().join("sealed/cg");
    assert!(dir.join("encryption.json").exists(), "{}", s3.log());
    assert_eq!(std::fs::read_dir(dir.join("keys")).unwrap().count(), 1);
}

/// The encrypted contract on a local directory (the embedded default store).
#[test]
fn object_exporter_on_a_local_directory_encrypted() {
    let base = tempfile::tempdir().unwrap();
    let url_of = |p: &str| base.path().join(p).display().to_string();
    let target = ObjectTarget {
        encryption: Some(Encryption::file("../vault.key")),
        ..ObjectTarget::new(url_of("replica"))
    };
    object_suites(target, &url_of);
    let stored = std::fs::read(base.path().join("replica/manifest.json")).unwrap();
    assert!(stored.starts_with(b"CASCENC1"), "the manifest is sealed");
}

fn on_s3(prefix: &str, encryption: Option<Encryption>) -> common::s3::S3Server {
    let s3 = common::s3::S3Server::start();
    let target = ObjectTarget {
        encryption,
        ..s3.target(prefix)
    };
    object_suites(target, &|p| s3.url(p));
    assert!(
        s3.bucket_dir().join(prefix).join("manifest.json").exists(),
        "{}",
        s3.log()
    );
    s3
}

/// A clock that stepped ahead for one cycle stamps that point in the future. Ages
/// count from the clock then, not from that point: retention deletes nothing earlier
/// because of it, and the full image the kept points restore from stays.
#[test]
fn a_point_stamped_in_the_future_ages_nothing_out() {
    use cascade::journal::record::VolumeInfo;
    use cascade::journal::JournalWriter;
    const H: i64 = 3_600_000_000_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let now = cascade::clock::now_ns();
    let volumes: Vec<VolumeInfo> = ["v0", "v1"]
        .iter()
        .map(|id| VolumeInfo {
            id: id.to_string(),
            size: 1 << 20,
        })
        .collect();
    // Deltas 1..=6 an hour apart up to an hour ago, then delta 7 stamped 1000 h ahead.
    let mut contents = vec![vec![0u8; 1 << 20]; 2];
    let mut points = Vec::new();
    let mut w = JournalWriter::open(&dir, 64 << 20).unwrap();
    for i in 1..=7u64 {
        let time = if i == 7 {
            now + 1000 * H
        } else {
            now - (7 - i as i64) * H
        };
        let mut d = w.begin_delta(time, volumes.clone(), i == 1).unwrap();
        let v = (i % 2) as usize;
        let at = (i as usize) * 100_000;
        let bytes = noise(40 + i, 60_000);
        d.data(v as u16, at as u64, &bytes).unwrap();
        contents[v][at..at + bytes.len()].copy_from_slice(&bytes);
        d.commit().unwrap();
        points.push(contents.clone());
    }
    drop(w);
    let journal = Journal::open(&dir).unwrap();

    // Synthetic fulls at 4 and 7; keep what is younger than 150 min.
    let bucket = Bucket::open(
        &tmp.path().join("vault").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    let policy = ObjectPolicy {
        synthetic_full_every: 3,
        retention: cascade::config::Retention {
            keep_deltas: None,
            keep_age: Some("150m".parse().unwrap()),
        },
        batch: Default::default(),
    };
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut e = ObjectExporter::with_bucket("dir", bucket.clone(), policy, &work).unwrap();
    for d in 1..=7 {
        e.apply(&journal, d).unwrap();
        e.finish(&journal).unwrap();
    }
    let m = cascade::replica::runtime()
        .unwrap()
        .block_on(bucket.manifest())
        .unwrap();
    // Counted from the clock, points 5 and 6 (2 h and 1 h old) are young, and 7;
    // they restore from the full image at 4, which stays. Counted from delta 7's
    // stamp, every earlier point would be gone.
    let kept: Vec<u64> = m.points().iter().map(|p| p.0).collect();
    assert_eq!(kept, [4, 5, 6, 7], "{m:?}");
    assert!(
        stored_keys(&bucket)
            .iter()
            .any(|k| k.starts_with("fulls/00000000000000000004-")),
        "the full image at 4 stays"
    );
    for p in kept {
        assert!(
            restore_at(&bucket, &work, p, false).unwrap() == points[p as usize - 1],
            "restore at {p}"
        );
    }
}
