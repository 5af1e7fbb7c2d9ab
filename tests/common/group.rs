//! A consistency group of small image files in a directory, with its config, for
//! tests that drive the library or the binary.
use cascade::config::Config;
use cascade::cycle::{run_cycle, CycleReport};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Group {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub volumes: Vec<PathBuf>,
}

impl Group {
    /// Volumes `v0`, `v1`, … of the given sizes (sparse, all zeros) in group `cg`.
    pub fn new(dir: &Path, sizes: &[u64]) -> Group {
        std::fs::create_dir_all(dir).unwrap();
        let mut yaml = String::from("state-dir: state\njournal-dir: journals\nconsistency-groups:\n  - name: cg\n    volumes:\n");
        let mut volumes = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let path = dir.join(format!("v{i}.img"));
            std::fs::File::create(&path)
                .unwrap()
                .set_len(*size)
                .unwrap();
            yaml += &format!("      - {{ id: v{i}, driver: file, path: v{i}.img }}\n");
            volumes.push(path);
        }
        let config = dir.join("cascade.yaml");
        std::fs::write(&config, yaml).unwrap();
        Group {
            dir: dir.to_path_buf(),
            config,
            volumes,
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config).unwrap()
    }

    pub fn cycle(&self) -> CycleReport {
        let cfg = self.config();
        run_cycle(&cfg, cfg.group("cg").unwrap()).unwrap()
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journals/cg")
    }

    pub fn write(&self, volume: usize, offset: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.volumes[volume])
            .unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    /// Punches a hole, as a discard would.
    pub fn punch(&self, volume: usize, offset: u64, len: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.volumes[volume])
            .unwrap();
        cascade::sys::punch_hole(&f, offset, len).unwrap();
    }

    pub fn contents(&self) -> Vec<Vec<u8>> {
        self.volumes
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    /// Runs the `cascade` binary in the group's directory.
    pub fn cascade(&self, args: &[&str]) -> Output {
        cascade_in(&self.dir, args)
    }
}

pub fn cascade_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
