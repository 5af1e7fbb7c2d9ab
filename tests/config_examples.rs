//! Every config shipped in `examples/` loads, so the documentation cannot rot.
use cascade::config::Config;

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
