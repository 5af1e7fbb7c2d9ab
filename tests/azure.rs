//! Object replicas on Azure Blob Storage (`az://container/prefix`), against Azurite on
//! 127.0.0.1 (tests/common/azurite.rs): the exporter contract and the replica's
//! history, plain and encrypted, then a restore through the binary with the standard
//! Azure environment variables.
mod common;

use common::azurite::Azurite;
use common::config::ObjectTarget;

/// One test in this binary: the store's credentials come from the environment, as a
/// user's would, set here before any other thread of the binary reads it.
#[test]
fn object_replicas_on_azurite() {
    let az = Azurite::start();
    for (k, v) in az.env() {
        std::env::set_var(k, v);
    }
    let base = ObjectTarget {
        endpoint: Some(az.endpoint.clone()),
        allow_http: true,
        ..ObjectTarget::new(az.url(""))
    };
    let restore = ["--endpoint", &az.endpoint, "--allow-http"];
    let (_tmp, g) = common::conformance::cloud_suites(&base, &|p| az.url(p), &restore);
    let url = az.url("cli");

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
