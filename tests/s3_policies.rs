//! What an S3 target asks of the store itself, on moto's S3 server, which records it
//! per object (read back with boto3): server-side encryption (SSE-KMS under a key id,
//! SSE-S3), the data objects' storage class, and Object Lock, with retention that
//! never deletes a locked object and says when it will be deletable.
mod common;

use common::config::{ObjectLock, Retention};
use common::group::{noise, Group};
use common::moto::Moto;
use std::process::{Command, Output};

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The replica's data objects (deltas and full images) and its manifest, by key under
/// the bucket, from the manifest as the library reads it.
fn objects(g: &Group, target: &str) -> (Vec<String>, String) {
    let cfg = g.config();
    let (url, options) = cfg.target(target).unwrap().spec.object_options().unwrap();
    let bucket = cascade::replica::Bucket::open(url, &options).unwrap();
    let m = cascade::replica::runtime()
        .unwrap()
        .block_on(bucket.manifest())
        .unwrap();
    let keys = m
        .deltas
        .iter()
        .chain(&m.fulls)
        .map(|d| bucket.key(&d.key).to_string())
        .collect();
    (keys, bucket.key("manifest.json").to_string())
}

#[test]
fn sse_kms_storage_class_and_object_lock_reach_every_data_object() {
    let moto = Moto::start(true);
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[2 << 20]);
    g.write_target(
        "vault",
        &common::config::ObjectTarget {
            server_side_encryption: Some("aws:kms".into()),
            kms_key_id: Some("cascade-test-key".into()),
            storage_class: Some("STANDARD_IA".into()),
            object_lock: Some(ObjectLock {
                mode: "governance".into(),
                retain: "1d".into(),
            }),
            synthetic_full_every: Some(2),
            retention: Retention::keep_deltas(1),
            ..moto.target("locked")
        }
        .into(),
    );
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
    let mut last = serde_json::Value::Null;
    let mut gone = Vec::new();
    for i in 0..5u64 {
        g.write(0, i * 300_000, &noise(20 + i, 200_000));
        g.cycle();
        let before = objects(&g, "vault").0;
        let out = ok(&g.cascade(&["export", "-c", "cascade.yaml", "--json"]));
        last = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        let after = objects(&g, "vault").0;
        gone.extend(before.into_iter().filter(|k| !after.contains(k)));
    }
    let now = cascade::clock::now_ns() as f64 / 1e9;
    let day = 86_400.0;
    let (keys, manifest) = objects(&g, "vault");
    for key in &keys {
        let h = moto.ctl(&["head", &moto.bucket, key]);
        assert_eq!(h["sse"], "aws:kms", "{key}: {h}");
        assert_eq!(h["kms_key_id"], "cascade-test-key", "{key}: {h}");
        assert_eq!(h["storage_class"], "STANDARD_IA", "{key}: {h}");
        assert_eq!(h["lock_mode"], "GOVERNANCE", "{key}: {h}");
        let until = h["lock_until"].as_f64().unwrap();
        assert!(
            (until - now - day).abs() < 600.0,
            "{key}: locked until {until}, now {now}"
        );
    }
    // The manifest, rewritten at every export, is encrypted but keeps the default class
    // and no lock of cascade's.
    let h = moto.ctl(&["head", &moto.bucket, &manifest]);
    assert_eq!(h["sse"], "aws:kms", "{h}");
    assert_eq!(h["storage_class"], "STANDARD", "{h}");
    assert!(h["lock_mode"].is_null(), "{h}");

    // Retention let objects go from the manifest, but deleted none of them: each is
    // still there, locked, and the export said until when.
    assert!(!gone.is_empty(), "retention let something go");
    let upkeep = &last["status"]["upkeep"];
    assert_eq!(upkeep["deleted_objects"], 0, "{last}");
    assert!(upkeep["locked_objects"].as_u64().unwrap() >= 1, "{last}");
    let at = upkeep["deletable_at_ns"].as_f64().unwrap() / 1e9;
    // The lock's end, and as much again as the store's clock is allowed (10 min).
    assert!(at > now + day - 60.0 && at < now + day + 660.0, "{last}");
    for key in &gone {
        let h = moto.ctl(&["head", &moto.bucket, key]);
        assert_eq!(h["lock_mode"], "GOVERNANCE", "{key} was deleted: {h}");
    }
    let text = ok(&g.cascade(&["export", "-c", "cascade.yaml"]));
    assert!(
        text.contains("still under object lock, the first deletable at"),
        "{text}"
    );
    // The server holds the lock: the locked version cannot be deleted.
    let d = moto.ctl(&["delete-version", &moto.bucket, &gone[0]]);
    assert_eq!(d["deleted"], false, "{d}");

    // And the replica restores from the store alone.
    let o = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["restore", "--from", &format!("s3://{}/locked", moto.bucket)])
        .args([
            "--to",
            "out.img",
            "--endpoint",
            &moto.endpoint,
            "--allow-http",
        ])
        .current_dir(&g.dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    ok(&o);
    assert!(std::fs::read(g.dir.join("out.img")).unwrap() == g.contents()[0]);
}

#[test]
fn sse_s3_without_object_lock() {
    let moto = Moto::start(false);
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.write_target(
        "vault",
        &common::config::ObjectTarget {
            server_side_encryption: Some("AES256".into()),
            ..moto.target("sse")
        }
        .into(),
    );
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
    g.write(0, 0, &noise(3, 100_000));
    g.cycle();
    ok(&g.cascade(&["export", "-c", "cascade.yaml"]));
    let (keys, manifest) = objects(&g, "vault");
    for key in keys.iter().chain([&manifest]) {
        let h = moto.ctl(&["head", &moto.bucket, key]);
        assert_eq!(h["sse"], "AES256", "{key}: {h}");
        assert_eq!(h["storage_class"], "STANDARD", "{key}: {h}");
        assert!(h["lock_mode"].is_null(), "{key}: {h}");
    }
}

#[test]
fn s3_settings_are_refused_where_they_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
    for (target, want) in [
        (
            common::config::ObjectTarget {
                object_lock: Some(ObjectLock {
                    mode: "governance".into(),
                    retain: "1d".into(),
                }),
                ..common::config::ObjectTarget::new("../vault")
            },
            "object-lock: only an s3:// target has it",
        ),
        (
            common::config::ObjectTarget {
                storage_class: Some("GLACIER".into()),
                ..common::config::ObjectTarget::new("s3://b/p")
            },
            "storage-class: `GLACIER` is not one a restore can read at once",
        ),
        (
            common::config::ObjectTarget {
                kms_key_id: Some("k".into()),
                ..common::config::ObjectTarget::new("s3://b/p")
            },
            "kms-key-id: goes with server-side-encryption: aws:kms",
        ),
    ] {
        g.write_target("vault", &target.into());
        let o = g.cascade(&["export", "-c", "cascade.yaml"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
}

/// Once a lock has ended, retention deletes what it let go.
#[test]
fn a_lock_that_ended_lets_retention_delete() {
    let moto = Moto::start(true);
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.write_target(
        "vault",
        &common::config::ObjectTarget {
            object_lock: Some(ObjectLock {
                mode: "compliance".into(),
                retain: "2s".into(),
            }),
            synthetic_full_every: Some(2),
            retention: Retention::keep_deltas(1),
            ..moto.target("short")
        }
        .into(),
    );
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
    let export = || -> serde_json::Value {
        let out = ok(&g.cascade(&["export", "-c", "cascade.yaml", "--json"]));
        serde_json::from_str(out.lines().next().unwrap()).unwrap()
    };
    for i in 0..4u64 {
        g.write(0, i * 100_000, &noise(40 + i, 50_000));
        g.cycle();
        export();
    }
    // Its lock (2 s, and as much again for the store's clock) has ended for all.
    std::thread::sleep(std::time::Duration::from_secs(5));
    g.write(0, 0, &noise(50, 50_000));
    g.cycle();
    let last = export();
    let upkeep = &last["status"]["upkeep"];
    assert!(upkeep["deleted_objects"].as_u64().unwrap() >= 1, "{last}");
}

/// The lock request is signed as S3 checks it: s3s-fs verifies every signature (and
/// does not implement Object Lock), so a request signed wrong would be refused as such.
#[test]
fn the_lock_request_is_signed_as_s3_checks_it() {
    let s3 = common::s3::S3Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.write_target(
        "vault",
        &common::config::ObjectTarget {
            object_lock: Some(ObjectLock {
                mode: "governance".into(),
                retain: "1d".into(),
            }),
            ..s3.target("locked")
        }
        .into(),
    );
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
    g.write(0, 0, &noise(60, 50_000));
    g.cycle();
    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("cannot lock") && err.contains("PutObjectRetention answered"),
        "{err}"
    );
    assert!(
        !err.contains("SignatureDoesNotMatch") && !err.contains("403"),
        "{err}"
    );
}
