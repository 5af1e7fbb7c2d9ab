//! Every config shipped in `examples/` loads, so the documentation cannot rot.
mod common;

use cascade::config::Config;
use common::config::{ConfigFile, TargetFile};

#[test]
fn every_example_config_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!cfg.consistency_groups.is_empty());
            loaded += 1;
        }
    }
    assert!(loaded >= 2, "examples/ holds the embedded default and more");
}

#[test]
fn every_shipped_target_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cascade-targets");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.extension().is_some_and(|e| e == "yaml") {
            cascade::config::Target::load(&dir, &name)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(
        loaded >= 3,
        "cascade-targets/ holds the demo's targets and an S3 example"
    );
}

/// The tests' typed config (tests/common/config.rs) mirrors the schema: every shipped
/// config and target reads into it, and what it writes loads as the same thing.
#[test]
fn the_tests_typed_config_reads_and_writes_every_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let typed = ConfigFile::read(&path);
            let again = Config::parse(&typed.to_yaml(), &path)
                .unwrap_or_else(|e| panic!("{} as written back: {e}", path.display()));
            assert_eq!(
                format!("{again:?}"),
                format!("{:?}", Config::load(&path).unwrap()),
                "{}",
                path.display()
            );
            seen += 1;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root.join("cascade-targets")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let typed: TargetFile =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        typed.write(tmp.path(), &name);
        let written = tmp.path().join(format!("cascade-targets/{name}.yaml"));
        let back: TargetFile =
            serde_yaml::from_str(&std::fs::read_to_string(&written).unwrap()).unwrap();
        assert_eq!(back, typed, "{}", path.display());
        cascade::config::Target::load(&tmp.path().join("cascade-targets"), &name)
            .unwrap_or_else(|e| panic!("{} as written back: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 6, "{seen} files");
}
