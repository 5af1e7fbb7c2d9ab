//! A consistency group of small image files in a directory, with its config, for
//! tests that drive the library or the binary.
use cascade::config::Config;
use cascade::cycle::{run_cycle, CycleReport};
use std::os::unix::fs::{FileExt, FileTypeExt};
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

    /// A group `cg` of given volume entries (YAML flow mappings, as in
    /// `{ id: v0, driver: lvm-thin, lv: vg/v0 }`) whose bytes are at `paths`.
    pub fn with_volumes(dir: &Path, entries: &[String], paths: Vec<PathBuf>) -> Group {
        std::fs::create_dir_all(dir).unwrap();
        let mut yaml = String::from("state-dir: state\njournal-dir: journals\nconsistency-groups:\n  - name: cg\n    volumes:\n");
        for e in entries {
            yaml += &format!("      - {e}\n");
        }
        let config = dir.join("cascade.yaml");
        std::fs::write(&config, yaml).unwrap();
        Group {
            dir: dir.to_path_buf(),
            config,
            volumes: paths,
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config).unwrap()
    }

    pub fn cycle(&self) -> CycleReport {
        let cfg = self.config();
        run_cycle(
            &cfg,
            cfg.group("cg").unwrap(),
            &cascade::progress::NoProgress,
        )
        .unwrap()
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
        // On a block device, a snapshot must see the write.
        f.sync_data().unwrap();
    }

    /// Punches a hole, as a discard would.
    pub fn punch(&self, volume: usize, offset: u64, len: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.volumes[volume])
            .unwrap();
        if f.metadata().unwrap().file_type().is_block_device() {
            cascade::sys::zero_device_range(&f, offset, len).unwrap();
        } else {
            cascade::sys::punch_hole(&f, offset, len).unwrap();
        }
        f.sync_data().unwrap();
    }

    pub fn contents(&self) -> Vec<Vec<u8>> {
        self.volumes
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    /// A block replica target `NAME`: its file in `cascade-targets/`, and one zeroed
    /// image per volume in `NAME/`, as large as the volume, unless `images` is false.
    pub fn block_target(&self, name: &str, images: bool) {
        std::fs::create_dir_all(self.dir.join("cascade-targets")).unwrap();
        std::fs::create_dir_all(self.dir.join(name)).unwrap();
        let mut yaml = String::from("kind: block\nvolumes:\n");
        for (i, v) in self.volumes.iter().enumerate() {
            yaml += &format!("  v{i}: ../{name}/v{i}.img\n");
            if images {
                let size = std::fs::metadata(v).unwrap().len();
                std::fs::write(
                    self.dir.join(format!("{name}/v{i}.img")),
                    vec![0u8; size as usize],
                )
                .unwrap();
            }
        }
        std::fs::write(self.dir.join(format!("cascade-targets/{name}.yaml")), yaml).unwrap();
    }

    /// Names `extra` (YAML lines for the group, such as `targets: [a, b]`) in the
    /// group's config.
    pub fn configure(&self, extra: &str) {
        let yaml = std::fs::read_to_string(&self.config).unwrap();
        let yaml = yaml.replace("    volumes:\n", &format!("{extra}    volumes:\n"));
        std::fs::write(&self.config, yaml).unwrap();
    }

    /// Places bookmark `name` through the binary.
    pub fn bookmark(&self, name: &str) {
        let o = self.cascade(&[
            "bookmark",
            "-c",
            "cascade.yaml",
            "--cg",
            "cg",
            "--name",
            name,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
