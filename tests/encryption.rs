//! Encrypted object replicas (docs/encryption.md), on the real S3 server on 127.0.0.1
//! and through the binary: nothing of the volumes reaches the store; every point
//! restores exactly with the key; without it, with a wrong one, or from a changed or
//! swapped object, the restore is refused, names why, and writes nothing; key slots are
//! added and removed without rewriting data; secrets never show.
mod common;

use common::config::{Encryption, ObjectTarget, TargetFile, Volume};
use common::group::{noise, Group};
use common::s3::S3Server;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Bytes written into the volumes, looked for in the stored objects.
const MARKER: &[u8] = b"PLAINTEXT-MARKER-of-the-volume-bytes";
/// Names that only the manifest or the records hold.
const VOLUME_ID: &str = "ledger-volume-alpha";
const BOOKMARK: &str = "quarterly-close-bookmark";
const PASSPHRASE: &str = "correct horse battery staple";

struct Replica {
    s3: S3Server,
    g: Group,
    _tmp: tempfile::TempDir,
    /// Volume contents after each delta.
    points: Vec<Vec<Vec<u8>>>,
    prefix: String,
    /// The target as written.
    target: ObjectTarget,
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn failed(o: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{err}");
    err
}

impl Replica {
    /// Four deltas on two volumes (delta 2 and 3 write the same number of fresh bytes
    /// at the same place, so their objects have the same size), a bookmark after 3,
    /// exported to `prefix`, encrypted under `vault.key` if `encrypted`.
    fn new(encrypted: bool) -> Replica {
        let s3 = S3Server::start();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("group");
        std::fs::create_dir_all(&dir).unwrap();
        let paths = [dir.join("a.img"), dir.join("b.img")];
        for (p, size) in paths.iter().zip([4u64 << 20, 2 << 20]) {
            std::fs::File::create(p).unwrap().set_len(size).unwrap();
        }
        let g = Group::with_volumes(
            &dir,
            vec![
                Volume::file(VOLUME_ID, "a.img"),
                Volume::file("ledger-volume-beta", "b.img"),
            ],
            paths.to_vec(),
        );
        let prefix = if encrypted { "sealed" } else { "plain" }.to_string();
        if encrypted {
            ok(&g.cascade(&["key", "generate", "vault.key"]));
        }
        let target = ObjectTarget {
            encryption: encrypted.then(|| Encryption::file("../vault.key")),
            ..s3.target(&prefix)
        };
        g.write_target("vault", &TargetFile::from(target.clone()));
        g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
        let mut points = Vec::new();
        g.write(0, 0, &MARKER.repeat(2000));
        g.write(1, 8192, &noise(1, 300_000));
        g.cycle();
        points.push(g.contents());
        g.write(0, 1 << 20, &noise(4, 1 << 20));
        g.cycle();
        points.push(g.contents());
        g.write(0, 1 << 20, &noise(6, 1 << 20));
        g.cycle();
        points.push(g.contents());
        g.bookmark(BOOKMARK);
        g.punch(1, 0, 1 << 20);
        g.write(0, 3 << 20, MARKER);
        g.cycle();
        points.push(g.contents());
        ok(&g.cascade(&["export", "-c", "cascade.yaml"]));
        Replica {
            s3,
            g,
            _tmp: tmp,
            points,
            prefix,
            target,
        }
    }

    fn stored(&self) -> PathBuf {
        self.s3.bucket_dir().join(&self.prefix)
    }

    /// `cascade ARGS` in the group's directory with the S3 server's credentials.
    fn cascade(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(args)
            .current_dir(&self.g.dir)
            .envs(self.s3.env())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// `cascade restore` of the replica into `out/a.img`, `out/b.img` at `until`, with
    /// `extra` arguments (the secret).
    fn restore(&self, out: &Path, until: &str, extra: &[&str]) -> Output {
        let (a, b) = (out.join("a.img"), out.join("b.img"));
        let mut args = vec![
            "restore".to_string(),
            "--from".into(),
            self.s3.url(&self.prefix),
            "--to".into(),
            format!("{VOLUME_ID}={}", a.display()),
            format!("ledger-volume-beta={}", b.display()),
            "--until".into(),
            until.into(),
            "--work-dir".into(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cascade(&args, &[("CASCADE_PASS", PASSPHRASE)])
    }

    fn restored(&self, out: &Path) -> Vec<Vec<u8>> {
        ["a.img", "b.img"]
            .iter()
            .map(|f| std::fs::read(out.join(f)).unwrap())
            .collect()
    }

    /// The stored object of delta `n`.
    fn delta_object(&self, n: u64) -> PathBuf {
        common::group::delta_object(&self.stored(), n).expect("delta exported")
    }
}

/// Every file below `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn nothing_of_the_volumes_reaches_the_store_and_every_point_restores_with_the_key() {
    // The control: unencrypted, the scan finds what it looks for.
    let plain = Replica::new(false);
    let all: Vec<u8> = files(&plain.stored())
        .into_iter()
        .flat_map(|f| f.1)
        .collect();
    for needle in [MARKER, VOLUME_ID.as_bytes(), BOOKMARK.as_bytes()] {
        assert!(contains(&all, needle), "the plain replica holds {needle:?}");
    }

    let r = Replica::new(true);
    let stored = files(&r.stored());
    assert!(stored.len() >= 7, "{stored:?}");
    for (path, bytes) in &stored {
        for needle in [MARKER, VOLUME_ID.as_bytes(), BOOKMARK.as_bytes()] {
            assert!(
                !contains(bytes, needle),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
        let name = path
            .strip_prefix(r.stored())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if name != "encryption.json" && !name.starts_with("keys/") {
            assert!(bytes.starts_with(b"CASCENC1"), "{name} is not sealed");
        }
    }

    // Every point, into new files (streamed) and onto existing ones (checked first).
    for (n, want) in r.points.iter().enumerate() {
        let out = tempfile::tempdir().unwrap();
        ok(&r.restore(
            out.path(),
            &(n + 1).to_string(),
            &["--key-file", "vault.key"],
        ));
        assert!(r.restored(out.path()) == *want, "delta {}", n + 1);
        ok(&r.restore(
            out.path(),
            &(n + 1).to_string(),
            &["--key-file", "vault.key"],
        ));
        assert!(
            r.restored(out.path()) == *want,
            "delta {} over files",
            n + 1
        );
    }
    let out = tempfile::tempdir().unwrap();
    ok(&r.restore(out.path(), BOOKMARK, &["--key-file", "vault.key"]));
    assert!(r.restored(out.path()) == r.points[2]);
}

#[test]
fn without_the_key_or_with_a_wrong_one_nothing_is_written() {
    let r = Replica::new(true);
    let out = tempfile::tempdir().unwrap();
    let err = failed(&r.restore(out.path(), "4", &[]), 2);
    assert!(
        err.contains("is encrypted: give the replica's secret"),
        "{err}"
    );
    assert!(!out.path().join("a.img").exists());

    ok(&r.g.cascade(&["key", "generate", "other.key"]));
    let err = failed(&r.restore(out.path(), "4", &["--key-file", "other.key"]), 2);
    assert!(
        err.contains("the key given opens none of its 1 key slots"),
        "{err}"
    );
    let err = failed(
        &r.restore(out.path(), "4", &["--key-env", "CASCADE_PASS"]),
        2,
    );
    assert!(err.contains("the passphrase given opens none"), "{err}");
    assert!(!out.path().join("a.img").exists());

    // A key file others can read is refused before anything is read, and not quoted.
    let key = std::fs::read_to_string(r.g.dir.join("vault.key")).unwrap();
    std::fs::set_permissions(
        r.g.dir.join("vault.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = failed(&r.restore(out.path(), "4", &["--key-file", "vault.key"]), 2);
    assert!(
        err.contains("readable or writable by others (mode 644)"),
        "{err}"
    );
    assert!(!err.contains(key.trim()), "{err}");
    let err = failed(&r.g.cascade(&["export", "-c", "cascade.yaml", "--json"]), 1);
    let status = r.g.cascade(&["status", "-c", "cascade.yaml", "--json"]);
    let all = format!("{err}{}", String::from_utf8_lossy(&status.stdout));
    assert!(all.contains("readable or writable by others"), "{all}");
    assert!(!all.contains(key.trim()), "{all}");
    assert!(!out.path().join("a.img").exists());
}

#[test]
fn a_changed_or_swapped_object_is_refused_naming_it() {
    let r = Replica::new(true);
    let (d2, d3) = (r.delta_object(2), r.delta_object(3));
    let (b2, b3) = (std::fs::read(&d2).unwrap(), std::fs::read(&d3).unwrap());
    assert_eq!(b2.len(), b3.len(), "deltas 2 and 3 are stored alike");
    let name2 = format!("deltas/{}", d2.file_name().unwrap().to_string_lossy());

    let mut bad = b2.clone();
    bad[b2.len() / 2] ^= 0x40;
    std::fs::write(&d2, &bad).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = failed(&r.restore(out.path(), "2", &["--key-file", "vault.key"]), 4);
    assert!(
        err.contains(&name2) && err.contains("does not authenticate"),
        "{err}"
    );
    assert!(
        !out.path().join("a.img").exists(),
        "a streamed restore leaves nothing"
    );
    // Onto existing files: they keep their bytes.
    for f in ["a.img", "b.img"] {
        std::fs::write(out.path().join(f), vec![0x5a; 4 << 20]).unwrap();
    }
    let err = failed(&r.restore(out.path(), "2", &["--key-file", "vault.key"]), 4);
    assert!(
        err.contains(&name2) && err.contains("does not authenticate"),
        "{err}"
    );
    assert!(r
        .restored(out.path())
        .iter()
        .all(|v| v.iter().all(|b| *b == 0x5a)));

    // Swapped: each is a genuine object of the replica, under the other's name.
    std::fs::write(&d2, &b3).unwrap();
    std::fs::write(&d3, &b2).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let err = failed(
        &r.restore(fresh.path(), "2", &["--key-file", "vault.key"]),
        4,
    );
    assert!(
        err.contains(&name2) && err.contains("does not authenticate"),
        "{err}"
    );
    // Restoring delta 3 reads its volumes from delta 3's object first: either
    // swapped object is the one to name.
    let name3 = format!("deltas/{}", d3.file_name().unwrap().to_string_lossy());
    let err = failed(
        &r.restore(fresh.path(), "3", &["--key-file", "vault.key"]),
        4,
    );
    assert!(
        (err.contains(&name2) || err.contains(&name3)) && err.contains("does not authenticate"),
        "{err}"
    );
    assert!(!fresh.path().join("a.img").exists());

    // A changed manifest is refused too.
    std::fs::write(&d2, &b2).unwrap();
    std::fs::write(&d3, &b3).unwrap();
    let head = r.stored().join("manifest.json");
    let mut m = std::fs::read(&head).unwrap();
    let at = m.len() - 20;
    m[at] ^= 1;
    std::fs::write(&head, &m).unwrap();
    let err = failed(
        &r.restore(fresh.path(), "3", &["--key-file", "vault.key"]),
        4,
    );
    assert!(
        err.contains("manifest.json") && err.contains("does not authenticate"),
        "{err}"
    );
}

#[test]
fn key_slots_are_added_and_removed_without_rewriting_data() {
    let r = Replica::new(true);
    let target = ["-c", "cascade.yaml", "--target", "vault"];
    let data_before: Vec<(PathBuf, Vec<u8>)> = files(&r.stored())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(r.stored().join("keys")))
        .collect();
    ok(&r.g.cascade(&["key", "generate", "second.key"]));
    let err = failed(&r.g.cascade(&["key", "generate", "second.key"]), 2);
    assert!(err.contains("never overwritten"), "{err}");
    std::fs::set_permissions(
        r.g.dir.join("second.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let added = ok(&r.cascade(
        &[
            &["key", "add"],
            &target[..],
            &["--new-key-file", "second.key", "--json"],
        ]
        .concat(),
        &[],
    ));
    let second: serde_json::Value = serde_json::from_str(&added).unwrap();
    let second = second["added"].as_str().unwrap().to_string();
    ok(&r.cascade(
        &[
            &["key", "add"],
            &target[..],
            &["--new-key-env", "CASCADE_PASS"],
        ]
        .concat(),
        &[("CASCADE_PASS", PASSPHRASE)],
    ));
    let list: serde_json::Value = serde_json::from_str(&ok(
        &r.cascade(&[&["key", "list"], &target[..], &["--json"]].concat(), &[])
    ))
    .unwrap();
    let slots = list["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 3, "{list}");
    assert_eq!(slots.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(
        slots.iter().filter(|s| s["kind"] == "passphrase").count(),
        1
    );
    let first = slots.iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let data_after: Vec<(PathBuf, Vec<u8>)> = files(&r.stored())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(r.stored().join("keys")))
        .collect();
    assert!(data_before == data_after, "adding keys rewrote data");

    for secret in [["--key-file", "second.key"], ["--key-env", "CASCADE_PASS"]] {
        let out = tempfile::tempdir().unwrap();
        ok(&r.restore(out.path(), "4", &secret));
        assert!(r.restored(out.path()) == r.points[3], "{secret:?}");
    }

    // The target's own slot is not removed with its own secret; another is.
    let err = failed(
        &r.cascade(&[&["key", "remove"], &target[..], &[&first]].concat(), &[]),
        2,
    );
    assert!(err.contains("is the one the secret given opens"), "{err}");
    ok(&r.cascade(
        &[&["key", "remove"], &target[..], &[&second[..8]]].concat(),
        &[],
    ));
    let out = tempfile::tempdir().unwrap();
    let err = failed(
        &r.restore(out.path(), "4", &["--key-file", "second.key"]),
        2,
    );
    assert!(err.contains("opens none of its 2 key slots"), "{err}");
    ok(&r.restore(out.path(), "4", &["--key-file", "vault.key"]));
}

#[test]
fn encryption_cannot_be_turned_on_or_off_for_an_existing_replica() {
    let r = Replica::new(false);
    ok(&r.g.cascade(&["key", "generate", "vault.key"]));
    let mut t = r.target.clone();
    t.encryption = Some(Encryption::file("../vault.key"));
    r.g.write_target("vault", &t.clone().into());
    r.g.write(0, 0, b"more");
    r.g.cycle();
    let o = r.g.cascade(&["export", "-c", "cascade.yaml"]);
    let err = failed(&o, 1);
    assert!(
        err.contains("is not encrypted, but a secret was given"),
        "{err}"
    );

    let r = Replica::new(true);
    let mut t = r.target.clone();
    t.encryption = None;
    r.g.write_target("vault", &t.into());
    r.g.write(0, 0, b"more");
    r.g.cycle();
    let err = failed(&r.g.cascade(&["export", "-c", "cascade.yaml"]), 1);
    assert!(
        err.contains("is encrypted: give the replica's secret"),
        "{err}"
    );
    // Made encrypted by an export that stopped before its first manifest: still no
    // plain object goes in.
    std::fs::remove_file(r.stored().join("manifest.json")).unwrap();
    let err = failed(&r.g.cascade(&["export", "-c", "cascade.yaml"]), 1);
    assert!(
        err.contains("encryption.json says it is encrypted"),
        "{err}"
    );
    assert!(!r.stored().join("manifest.json").exists());
}

#[test]
fn secrets_never_show_in_logs_or_output() {
    let r = Replica::new(true);
    let key = std::fs::read_to_string(r.g.dir.join("vault.key")).unwrap();
    let hex = key
        .trim()
        .strip_prefix("cascade-key-v1:")
        .unwrap()
        .to_string();
    r.g.write(0, 0, b"more");
    r.g.cycle();
    let mut seen = String::new();
    for args in [
        vec!["-vv", "export", "-c", "cascade.yaml"],
        vec![
            "-vv",
            "key",
            "list",
            "-c",
            "cascade.yaml",
            "--target",
            "vault",
        ],
        vec!["-vv", "status", "-c", "cascade.yaml", "--json"],
    ] {
        let o = r.cascade(&args, &[("RUST_LOG", "debug")]);
        seen += &String::from_utf8_lossy(&o.stdout);
        seen += &String::from_utf8_lossy(&o.stderr);
    }
    let out = tempfile::tempdir().unwrap();
    let o = r.restore(out.path(), "5", &["-vv", "--key-env", "CASCADE_PASS"]);
    seen += &String::from_utf8_lossy(&o.stderr);
    assert!(seen.contains("DEBUG"), "debug logs were on: {seen}");
    assert!(!seen.contains(&hex) && !seen.contains(PASSPHRASE), "{seen}");
}

#[test]
fn target_verify_finds_a_deleted_and_a_damaged_object() {
    let r = Replica::new(true);
    let verify = |extra: &[&str]| {
        r.cascade(
            &[
                &["target", "verify", "vault", "-c", "cascade.yaml", "--json"],
                extra,
            ]
            .concat(),
            &[],
        )
    };
    let report = |o: &Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
    };
    let clean = report(&verify(&["--read-data"]));
    assert_eq!(clean["objects"], 4, "{clean}");
    assert_eq!(clean["read_objects"], 4, "{clean}");
    assert_eq!(clean["encrypted"], true);
    assert_eq!(clean["problems"].as_array().unwrap().len(), 0, "{clean}");
    let some = report(&verify(&["--read-data", "10"]));
    assert_eq!(
        some["read_objects"], 1,
        "at least one object is read: {some}"
    );

    let (d2, d3) = (r.delta_object(2), r.delta_object(3));
    std::fs::remove_file(&d2).unwrap();
    let mut b3 = std::fs::read(&d3).unwrap();
    let at = b3.len() - 100;
    b3[at] ^= 1;
    std::fs::write(&d3, &b3).unwrap();
    let name = |p: &Path| format!("deltas/{}", p.file_name().unwrap().to_string_lossy());

    // Without --read-data: the deleted one (the damaged one has its size).
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(4));
    let shallow = report(&o);
    let problems = shallow["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{shallow}");
    assert!(problems[0]["object"]
        .as_str()
        .unwrap()
        .ends_with(&name(&d2)));
    assert!(
        problems[0]["reason"].as_str().unwrap().contains("missing"),
        "{shallow}"
    );

    // With it: both, each named with why.
    let o = verify(&["--read-data"]);
    assert_eq!(o.status.code(), Some(4));
    let deep = report(&o);
    let problems = deep["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{deep}");
    let of = |p: &Path| {
        problems
            .iter()
            .find(|x| x["object"].as_str().unwrap().ends_with(&name(p)))
            .unwrap_or_else(|| panic!("{} not named: {deep}", name(p)))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(of(&d2).contains("missing"), "{deep}");
    assert!(of(&d3).contains("does not authenticate"), "{deep}");
    let text = ok_or_4(&r.cascade(&["target", "verify", "vault", "-c", "cascade.yaml"], &[]));
    assert!(
        text.contains("1 problems") && text.contains(&name(&d2)),
        "{text}"
    );

    // A plain replica's damage is found by the records' checksums.
    let p = Replica::new(false);
    let d = p.delta_object(2);
    let mut b = std::fs::read(&d).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&d, &b).unwrap();
    let o = p.cascade(
        &[
            "target",
            "verify",
            "vault",
            "-c",
            "cascade.yaml",
            "--json",
            "--read-data",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(4));
    let plain = report(&o);
    let problems = plain["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{plain}");
    assert!(
        problems[0]["object"].as_str().unwrap().ends_with(&name(&d)),
        "{plain}"
    );
}

/// Stdout of a run that exits 4 (problems found).
fn ok_or_4(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Larger than one ranged read (several pieces of frames per object, and the first
/// record's prefix across frames) and more deltas than one manifest chunk holds (sealed
/// chunks): every point restores, both ways, and the scrub reads it all clean.
#[test]
fn large_objects_and_chunked_manifests_restore_encrypted() {
    let s3 = S3Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[16 << 20]);
    ok(&g.cascade(&["key", "generate", "vault.key"]));
    g.write_target(
        "vault",
        &TargetFile::from(ObjectTarget {
            synthetic_full_every: Some(0),
            encryption: Some(Encryption::file("../vault.key")),
            ..s3.target("big")
        }),
    );
    g.configure(|c| c.groups[0].targets = vec!["vault".into()]);
    g.write(0, 0, &noise(11, 9 << 20));
    g.cycle();
    let mut points = vec![g.contents()];
    for i in 0..69u64 {
        g.write(0, (i * 200_000) % (15 << 20), &noise(100 + i, 50_000));
        g.cycle();
        points.push(g.contents());
    }
    ok(&g.cascade(&["export", "-c", "cascade.yaml"]));
    let chunks = s3.bucket_dir().join("big/manifest.d");
    assert!(
        std::fs::read_dir(&chunks).unwrap().count() >= 1,
        "a chunk was sealed"
    );
    let restore = |out: &Path, n: usize| {
        Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["restore", "--from", &s3.url("big"), "--to"])
            .arg(out.join("v0.img"))
            .args([
                "--until",
                &n.to_string(),
                "--key-file",
                "vault.key",
                "--work-dir",
            ])
            .arg(out)
            .current_dir(&g.dir)
            .envs(s3.env())
            .output()
            .unwrap()
    };
    for n in [1, 2, 64, 65, 70] {
        let out = tempfile::tempdir().unwrap();
        ok(&restore(out.path(), n));
        assert!(
            std::fs::read(out.path().join("v0.img")).unwrap() == points[n - 1][0],
            "{n}"
        );
        ok(&restore(out.path(), n));
        assert!(
            std::fs::read(out.path().join("v0.img")).unwrap() == points[n - 1][0],
            "{n} over a file"
        );
    }
    let o = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args([
            "target",
            "verify",
            "vault",
            "-c",
            "cascade.yaml",
            "--read-data",
            "--json",
        ])
        .current_dir(&g.dir)
        .envs(s3.env())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(report["read_objects"], 70, "{report}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
}
