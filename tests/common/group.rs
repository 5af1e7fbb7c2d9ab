//! A consistency group of small image files in a directory, with its config, for
//! tests that drive the library or the binary.
use super::config::{ConfigFile, TargetFile, Volume};
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
        let mut entries = Vec::new();
        let mut volumes = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let path = dir.join(format!("v{i}.img"));
            std::fs::File::create(&path)
                .unwrap()
                .set_len(*size)
                .unwrap();
            entries.push(Volume::file(&format!("v{i}"), format!("v{i}.img")));
            volumes.push(path);
        }
        Group::with_volumes(dir, entries, volumes)
    }

    /// A group `cg` of the given volumes (as in `Volume::lvm_thin("v0", "vg/v0")`)
    /// whose bytes are at `paths`.
    pub fn with_volumes(dir: &Path, entries: Vec<Volume>, paths: Vec<PathBuf>) -> Group {
        std::fs::create_dir_all(dir).unwrap();
        let config = ConfigFile::group("cg", entries).write(dir);
        Group {
            dir: dir.to_path_buf(),
            config,
            volumes: paths,
        }
    }

    /// The config file as it is now.
    pub fn config_file(&self) -> ConfigFile {
        ConfigFile::read(&self.config)
    }

    /// Replaces the config file.
    pub fn write_config(&self, cfg: &ConfigFile) {
        cfg.write_to(&self.config);
    }

    /// Changes the config file: `change` gets it as it is now, and what it leaves is
    /// written back (group `cg` is `groups[0]`).
    pub fn configure(&self, change: impl FnOnce(&mut ConfigFile)) {
        let mut cfg = self.config_file();
        change(&mut cfg);
        self.write_config(&cfg);
    }

    /// Writes target file `cascade-targets/NAME.yaml` beside the config.
    pub fn write_target(&self, name: &str, target: &TargetFile) {
        target.write(&self.dir, name);
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
        std::fs::create_dir_all(self.dir.join(name)).unwrap();
        let mut volumes = Vec::new();
        for (i, v) in self.volumes.iter().enumerate() {
            volumes.push((format!("v{i}"), format!("../{name}/v{i}.img")));
            if images {
                let size = std::fs::metadata(v).unwrap().len();
                std::fs::write(
                    self.dir.join(format!("{name}/v{i}.img")),
                    vec![0u8; size as usize],
                )
                .unwrap();
            }
        }
        self.write_target(name, &TargetFile::block(volumes));
    }

    /// Places bookmark `name` through the binary.
    pub fn bookmark(&self, name: &str) {
        let o = self.try_bookmark(name);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Runs `cascade bookmark` for group `cg`, which may fail.
    pub fn try_bookmark(&self, name: &str) -> Output {
        self.cascade(&[
            "bookmark",
            "-c",
            "cascade.yaml",
            "--cg",
            "cg",
            "--name",
            name,
        ])
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

/// The object of delta `delta` in the object replica in directory `vault`
/// (`deltas/N-WRITER.cjd`), if it was uploaded.
pub fn delta_object(vault: &Path, delta: u64) -> Option<PathBuf> {
    let prefix = format!("{delta:020}-");
    std::fs::read_dir(vault.join("deltas"))
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
}
