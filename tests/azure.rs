//! Object replicas on Azure Blob Storage (`az://container/prefix`), against Azurite on
//! 127.0.0.1 (tests/common/azurite.rs): the exporter contract and the replica's
//! history, plain and encrypted, then a restore through the binary with the standard
//! Azure environment variables.
mod common;

use common::azurite::Azurite;
use common::config::{Encryption, ObjectTarget};
use common::group::{noise, Group};

/// One test in this binary: the store's credentials come from the environment, as a
/// user's would, set here before any other thread of the binary reads it.
#[test]
fn object_replicas_on_azurite() {
    let az = Azurite::start();
    for (k, v) in az.env() {
        std::env::set_var(k, v);
    }
    for (prefix, encryption) in [
        ("plain/cg", None),
        ("sealed/cg", Some(Encryption::file("../vault.key"))),
    ] {
        let target = ObjectTarget {
            endpoint: Some(az.endpoint.clone()),
            allow_http: true,
            encryption,
            ..ObjectTarget::new(az.url(prefix))
        };
        common::conformance::object_suites(target, &|p| az.url(p));
    }

    // Through the binary: export, then restore from the container alone.
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[2 << 20]);
    g.write(0, 4096, &noise(7, 300_000));
    g.cycle();
    g.write_target(
        "blob",
        &ObjectTarget {
            endpoint: Some(az.endpoint.clone()),
            allow_http: true,
            ..ObjectTarget::new(az.url("cli"))
        }
        .into(),
    );
    g.configure(|c| c.groups[0].targets = vec!["blob".into()]);
    let o = g.cascade(&["export", "-c", "cascade.yaml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = az.url("cli");
    let o = g.cascade(&[
        "restore",
        "--from",
        &url,
        "--to",
        "out.img",
        "--endpoint",
        &az.endpoint,
        "--allow-http",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(g.dir.join("out.img")).unwrap() == g.contents()[0]);

    // S3's credential fields are refused on an az:// target, by name.
    let o = g.cascade(&[
        "restore",
        "--from",
        &url,
        "--to",
        "x.img",
        "--endpoint",
        &az.endpoint,
        "--region",
        "eu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("AZURE_STORAGE_"), "{err}");
}
