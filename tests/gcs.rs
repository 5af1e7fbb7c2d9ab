//! Object replicas on Google Cloud Storage (`gs://bucket/prefix`), against
//! gcp-storage-emulator with the XML API object_store speaks, on 127.0.0.1
//! (tests/common/gcs.rs): the exporter contract and the replica's history, plain and
//! encrypted, then a restore through the binary with the standard Google environment
//! variable.
mod common;

use common::config::{Encryption, ObjectTarget};
use common::gcs::Gcs;
use common::group::{noise, Group};

/// One test in this binary: the store's credentials come from the environment, as a
/// user's would, set here before any other thread of the binary reads it.
#[test]
fn object_replicas_on_gcs() {
    let gcs = Gcs::start();
    for (k, v) in gcs.env() {
        std::env::set_var(k, v);
    }
    for (prefix, encryption) in [
        ("plain/cg", None),
        ("sealed/cg", Some(Encryption::file("../vault.key"))),
    ] {
        let target = ObjectTarget {
            allow_http: true,
            encryption,
            ..ObjectTarget::new(gcs.url(prefix))
        };
        common::conformance::object_suites(target, &|p| gcs.url(p));
    }

    // Through the binary: export, then restore from the bucket alone.
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[2 << 20]);
    g.write(0, 4096, &noise(7, 300_000));
    g.cycle();
    g.write_target(
        "gcs",
        &ObjectTarget {
            allow_http: true,
            ..ObjectTarget::new(gcs.url("cli"))
        }
        .into(),
    );
    g.configure(|c| c.groups[0].targets = vec!["gcs".into()]);
    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        gcs.log()
    );
    let url = gcs.url("cli");
    let o = g.cascade(&["restore", "--from", &url, "--to", "out.img", "--allow-http"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(g.dir.join("out.img")).unwrap() == g.contents()[0]);

    // S3's settings are refused on a gs:// target, by name.
    let o = g.cascade(&[
        "restore",
        "--from",
        &url,
        "--to",
        "x.img",
        "--endpoint",
        "http://127.0.0.1:1",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
}
