//! Object replicas on Google Cloud Storage (`gs://bucket/prefix`), against
//! gcp-storage-emulator with the XML API object_store speaks, on 127.0.0.1
//! (tests/common/gcs.rs): the exporter contract and the replica's history, plain and
//! encrypted, then a restore through the binary with the standard Google environment
//! variable.
mod common;

use common::config::ObjectTarget;
use common::gcs::Gcs;

/// One test in this binary: the store's credentials come from the environment, as a
/// user's would, set here before any other thread of the binary reads it.
#[test]
fn object_replicas_on_gcs() {
    let gcs = Gcs::start();
    for (k, v) in gcs.env() {
        std::env::set_var(k, v);
    }
    let base = ObjectTarget {
        allow_http: true,
        ..ObjectTarget::new(gcs.url(""))
    };
    let (_tmp, g) = common::conformance::cloud_suites(&base, &|p| gcs.url(p), &["--allow-http"]);
    let url = gcs.url("cli");

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
