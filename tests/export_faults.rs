//! Faults around exports and restores, through the real binary: the S3 server going
//! away in the middle of an export, unusable targets, and a replica whose manifest
//! names a missing or damaged object.
mod common;

use common::config::TargetFile;
use common::group::{delta_object, noise, Group};
use common::s3::S3Server;
use std::process::{Command, Output};

fn cascade(g: &Group, s3: Option<&S3Server>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cascade"));
    c.args(args).current_dir(&g.dir);
    for (k, v) in s3.map(|s| s.env()).unwrap_or_default() {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Four deltas of several MiB each, so an export takes long enough to interrupt.
fn big_history(g: &Group) -> Vec<Vec<Vec<u8>>> {
    let mut points = Vec::new();
    for i in 0..4u64 {
        g.write(0, i * (6 << 20), &noise(i + 1, 6 << 20));
        g.cycle();
        points.push(g.contents());
    }
    points
}

/// Writes `target` as `vault` and names it in the group's config.
fn name_target(g: &Group, target: TargetFile) {
    g.write_target("vault", &target);
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
}

#[test]
fn s3_server_stopped_during_an_export() {
    let mut s3 = S3Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[24 << 20]);
    let points = big_history(&g);
    // Credentials, endpoint and region come from the environment, the AWS way.
    name_target(&g, TargetFile::object(s3.url("cg")));

    let child = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["export", "-c", "cascade.yaml"])
        .current_dir(&g.dir)
        .envs(s3.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = s3.bucket_dir().join("cg/manifest.json");
    let started = std::time::Instant::now();
    while !manifest.exists() && started.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    s3.stop();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "the export fails: {}", text(&o));
    assert!(
        text(&o).contains("FAILED after delta") && text(&o).contains(&s3.url("cg")),
        "the error names the store: {}",
        text(&o)
    );
    let o = cascade(&g, Some(&s3), &["status", "-c", "cascade.yaml", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &st["groups"][0]["targets"][0];
    assert!(
        t["lag_deltas"].as_u64().unwrap() >= 1 && t["last_error"].is_string(),
        "{st}"
    );

    s3.restart();
    let o = cascade(&g, Some(&s3), &["export", "-c", "cascade.yaml", "--json"]);
    assert!(o.status.success(), "a rerun finishes: {}", text(&o));
    for (i, want) in points.iter().enumerate() {
        let out = g.dir.join(format!("restored-{i}.img"));
        let until = (i + 1).to_string();
        let o = cascade(
            &g,
            Some(&s3),
            &[
                "restore",
                "--from",
                &s3.url("cg"),
                "--to",
                out.to_str().unwrap(),
                "--until",
                &until,
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            std::fs::read(&out).unwrap() == want[0],
            "restore at delta {} is exact",
            i + 1
        );
    }
}

#[test]
fn unusable_targets_fail_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    g.write(0, 0, &noise(1, 4096));
    g.cycle();
    std::fs::write(g.dir.join("not-a-dir"), b"x").unwrap();
    name_target(&g, TargetFile::object("../not-a-dir"));
    let o = cascade(&g, None, &["export", "-c", "cascade.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("cannot create object directory") && text(&o).contains("not-a-dir"),
        "{}",
        text(&o)
    );

    std::fs::create_dir(g.dir.join("a-dir")).unwrap();
    g.write_target("vault", &TargetFile::block([("v0", "../a-dir")]));
    let o = cascade(&g, None, &["export", "-c", "cascade.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("a-dir") && text(&o).contains("Is a directory"),
        "{}",
        text(&o)
    );

    g.write_target(
        "vault",
        &TargetFile::block([("v0", "../r.img"), ("nope", "../x.img")]),
    );
    let o = cascade(&g, None, &["export", "-c", "cascade.yaml"]);
    assert!(
        text(&o).contains("vault.yaml") && text(&o).contains("`nope` is not a volume"),
        "{}",
        text(&o)
    );
}

/// A group with [`big_history`], exported to the directory target `vault`.
fn exported_to_vault(dir: &std::path::Path) -> Group {
    let g = Group::new(dir, &[4 << 20]);
    big_history(&g);
    name_target(&g, TargetFile::object("../vault"));
    assert!(cascade(&g, None, &["export", "-c", "cascade.yaml"])
        .status
        .success());
    g
}

#[test]
fn restore_refuses_a_missing_or_damaged_object() {
    let tmp = tempfile::tempdir().unwrap();
    let g = exported_to_vault(tmp.path());
    let object = delta_object(&g.dir.join("vault"), 2).unwrap();

    let bytes = std::fs::read(&object).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    std::fs::write(&object, &flipped).unwrap();
    // Into a new file the restore streams: the damaged record is found as it arrives,
    // and the file it had started is removed.
    let o = cascade(&g, None, &["restore", "--from", "vault", "--to", "out.img"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("deltas/00000000000000000002-") && text(&o).contains("checksum mismatch"),
        "{}",
        text(&o)
    );
    assert!(!g.dir.join("out.img").exists(), "nothing written");
    // Onto an existing file everything is downloaded and checked first: the file is
    // untouched.
    std::fs::write(g.dir.join("old.img"), b"keep me").unwrap();
    let o = cascade(&g, None, &["restore", "--from", "vault", "--to", "old.img"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("deltas/00000000000000000002-") && text(&o).contains("manifest says"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(g.dir.join("old.img")).unwrap(), b"keep me");

    std::fs::remove_file(&object).unwrap();
    let o = cascade(&g, None, &["restore", "--from", "vault", "--to", "out.img"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("the manifest lists") && text(&o).contains("missing"),
        "{}",
        text(&o)
    );
    assert!(!g.dir.join("out.img").exists(), "nothing written");

    // Delta 1 alone is intact and restores.
    let o = cascade(
        &g,
        None,
        &[
            "restore", "--from", "vault", "--to", "out.img", "--until", "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn restore_names_the_damaged_object_even_when_the_manifest_agrees_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let g = exported_to_vault(tmp.path());
    // Damage delta 2's records and make the manifest agree with the damaged object,
    // so only the records' own checksums can find it.
    let object = delta_object(&g.dir.join("vault"), 2).unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&object, &bytes).unwrap();
    let manifest = g.dir.join("vault/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for d in m["deltas"].as_array_mut().unwrap() {
        if d["delta"] == 2 {
            d["crc32c"] = crc32c::crc32c(&bytes).into();
        }
    }
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();

    // Onto an existing file (downloaded into a scratch journal, then replayed) and
    // into a new one (streamed): both name the object and its delta, not a scratch
    // file, and write nothing.
    std::fs::write(g.dir.join("old.img"), b"keep me").unwrap();
    for to in ["old.img", "new.img"] {
        let o = cascade(&g, None, &["restore", "--from", "vault", "--to", to]);
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("deltas/00000000000000000002-")
                && t.contains("delta 2")
                && t.contains("checksum mismatch")
                && !t.contains("cascade-restore-"),
            "{t}"
        );
    }
    assert_eq!(std::fs::read(g.dir.join("old.img")).unwrap(), b"keep me");
    assert!(!g.dir.join("new.img").exists());
}

/// A restore into new files never truncates an existing `PATH.partial` (another
/// restore may be writing it): it refuses, says what the file is and what to do,
/// and leaves it as it was.
#[test]
fn restore_refuses_an_existing_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let g = exported_to_vault(tmp.path());
    let partial = g.dir.join("out.img.partial");
    std::fs::write(&partial, b"another restore's bytes").unwrap();
    let o = cascade(&g, None, &["restore", "--from", "vault", "--to", "out.img"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("out.img.partial exists")
            && t.contains("another restore")
            && t.contains("remove it"),
        "{t}"
    );
    assert_eq!(std::fs::read(&partial).unwrap(), b"another restore's bytes");
    assert!(!g.dir.join("out.img").exists());
    std::fs::remove_file(&partial).unwrap();
    let o = cascade(&g, None, &["restore", "--from", "vault", "--to", "out.img"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// The first record of an object sizes no read beyond the record size limit: a
/// garbled length in a (sparse, 8 GiB) object is refused as corrupt by a restore
/// whose address space is 1 GiB, instead of reading 4 GiB into memory.
#[test]
fn a_garbled_first_record_length_is_refused_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let g = exported_to_vault(tmp.path());
    let object = delta_object(&g.dir.join("vault"), 4).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &0xffff_fff0u32.to_le_bytes(), 0).unwrap();
    f.set_len(8 << 30).unwrap();
    let manifest = g.dir.join("vault/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for d in m["deltas"].as_array_mut().unwrap() {
        if d["delta"] == 4 {
            d["size"] = (8u64 << 30).into();
        }
    }
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();

    let o = Command::new("sh")
        .args([
            "-c",
            "ulimit -v 1048576 && exec \"$0\" restore --from vault --to out.img",
            env!("CARGO_BIN_EXE_cascade"),
        ])
        .current_dir(&g.dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("deltas/00000000000000000004-") && t.contains("over the limit"),
        "{t}"
    );
    assert!(!g.dir.join("out.img").exists(), "nothing written");
}

/// An export refused because another holds the target (here `flock`, as a running
/// export holds it) says so, and leaves the target's status file to the holder: it
/// neither overwrites it with its own stale view nor races the holder's write.
#[test]
fn an_export_refused_by_the_target_lock_leaves_its_status_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let g = exported_to_vault(tmp.path());
    let targets = g.dir.join("state/cg/targets");
    let status = targets.join("vault.status.json");
    let before = std::fs::read(&status).unwrap();
    // flock runs the shell once it holds the lock; the shell writes its pid.
    let marker = g.dir.join("holder.pid");
    let mut holder = Command::new("flock")
        .arg(targets.join("vault.lock"))
        .args(["sh", "-c", "echo $$ > \"$0\"; exec sleep 60"])
        .arg(&marker)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .filter(|p| p.ends_with('\n'))
        {
            break pid.trim().to_string();
        }
        assert!(started.elapsed().as_secs() < 10, "flock did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let o = cascade(&g, None, &["export", "-c", "cascade.yaml"]);
    Command::new("kill").arg(&pid).status().unwrap();
    holder.wait().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FAILED") && text(&o).contains("locked by another cascade process"),
        "{}",
        text(&o)
    );
    assert!(
        std::fs::read(&status).unwrap() == before,
        "the status file is the holder's"
    );
    assert!(!targets.join("vault.status.json.tmp").exists());
}
