//! A journal written by format version 1, committed under tests/fixtures/journal-v1 by
//! its script: every later cascade must still verify it and replay it exactly.

use cascade::journal::verify::verify;
use cascade::journal::{Journal, Point};
use cascade::progress::NoProgress;
use cascade::replay::replay;
use sha2::{Digest, Sha256};
use std::path::Path;

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/journal-v1"
    ))
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn version_1_journal_verifies_and_replays_exactly() {
    let report = verify(fixture(), &NoProgress).unwrap();
    assert!(report.ok && report.tail.is_none(), "{report:?}");
    assert_eq!((report.deltas, report.bookmarks), (3, 1));

    let j = Journal::open(fixture()).unwrap();
    assert_eq!(
        j.resolve(&Point::Bookmark("fixture-mark".into())).unwrap(),
        2
    );
    let expected = std::fs::read_to_string(fixture().join("expected.txt")).unwrap();
    for line in expected.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let delta: u64 = f[0].parse().unwrap();
        let out = tempfile::tempdir().unwrap();
        let targets = ["boot", "data"].map(|v| {
            format!("{v}={}", out.path().join(v).display())
                .parse()
                .unwrap()
        });
        replay(&j, delta, &targets, &NoProgress).unwrap();
        assert_eq!(
            sha256(&out.path().join("boot")),
            f[1],
            "boot at delta {delta}"
        );
        assert_eq!(
            sha256(&out.path().join("data")),
            f[2],
            "data at delta {delta}"
        );
    }
}
