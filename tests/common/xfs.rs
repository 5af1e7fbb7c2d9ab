//! Test fixtures: a loop device over a file, and a scratch XFS filesystem
//! (with reflink) on one.
//!
//! Both need root (check [`is_root`] before [`LoopDevice::attach`]); XFS also
//! needs xfsprogs, and without either [`XfsMount::new`] prints a loud
//! `SKIPPED` line and returns `None` so the calling test can return early.
//! Once those are confirmed, any failing step panics with the command's
//! stderr: a broken environment must not look like a skipped test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::sleep;
use std::time::Duration;

use tempfile::TempDir;

/// xfsprogs refuses filesystems smaller than this unless run from fstests.
const XFS_MIN_MIB: u64 = 300;

/// A loop device over a backing file (`losetup -f --show`), detached on drop.
pub struct LoopDevice {
    /// The device, e.g. `/dev/loop3`.
    pub path: PathBuf,
    /// Cleared once detached, or when deliberately left attached.
    attached: bool,
}

impl LoopDevice {
    /// Attaches `backing` to the first free loop device.
    ///
    /// # Panics
    ///
    /// If losetup fails (callers check [`is_root`] first).
    pub fn attach(backing: &Path) -> LoopDevice {
        let out = run(Command::new("losetup").arg("-f").arg("--show").arg(backing));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            !path.as_os_str().is_empty(),
            "losetup -f --show printed no device"
        );
        LoopDevice {
            path,
            attached: true,
        }
    }

    /// Detaches the device, retrying while it is busy; with `wait`, also
    /// waits until the kernel has released it, so the next test does not
    /// find it taken. Warns if it stays attached.
    fn detach(&mut self, wait: bool) {
        self.attached = false;
        for attempt in 0..5 {
            if attempt > 0 {
                sleep(Duration::from_millis(100 * attempt));
            }
            // A device still in use (e.g. after a lazy unmount) is switched
            // to autoclear by the kernel and goes away once released.
            let last = attempt == 4;
            if quiet(Command::new("losetup").arg("-d").arg(&self.path), last) {
                if wait {
                    self.wait_released();
                }
                return;
            }
        }
        eprintln!("warning: losetup -d {} failed", self.path.display());
    }

    /// Waits (bounded) until the kernel has really unbound the loop device:
    /// if something still had it open, `losetup -d` only set autoclear.
    fn wait_released(&self) {
        let Some(name) = self.path.file_name() else {
            return;
        };
        let bound = Path::new("/sys/block").join(name).join("loop");
        for _ in 0..150 {
            if !bound.exists() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: {} still bound 3s after losetup -d (autoclear will release it)",
            self.path.display()
        );
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.attached {
            self.detach(true);
        }
    }
}

/// A freshly made, mounted XFS filesystem (`-m reflink=1`) backed by a
/// sparse file on a loop device. Dropping it unmounts the filesystem,
/// detaches the loop device and removes the backing file and mount point.
pub struct XfsMount {
    /// Mount point (the filesystem root).
    pub dir: PathBuf,
    /// Loop device holding the filesystem; declared before `tmp` so it is
    /// detached before the backing file is removed.
    pub device: LoopDevice,
    /// Sparse backing file of the loop device.
    pub backing: PathBuf,
    mounted: bool,
    /// Unmounted lazily: the filesystem (and so the loop device) may still
    /// be busy.
    lazy: bool,
    /// Holds `backing` and `dir`; `None` once deliberately leaked.
    tmp: Option<TempDir>,
}

impl XfsMount {
    /// Makes and mounts a `size_mib` MiB XFS filesystem, or returns `None`
    /// (after an `eprintln!` starting with `SKIPPED`) when not running as
    /// root or when `mkfs.xfs` is not installed.
    ///
    /// Sizes below 300 MiB are honoured (xfsprogs is told it runs under
    /// fstests); the backing file is sparse so the size costs no disk space.
    ///
    /// # Panics
    ///
    /// If any step (losetup, mkfs.xfs, mount) fails once root and xfsprogs
    /// are confirmed.
    pub fn new(size_mib: u64) -> Option<XfsMount> {
        if !is_root() {
            eprintln!("SKIPPED (needs root and xfsprogs): not running as root");
            return None;
        }
        let Some(mkfs) = find_tool("mkfs.xfs") else {
            eprintln!("SKIPPED (needs root and xfsprogs): mkfs.xfs not found");
            return None;
        };
        assert!(size_mib > 0, "XfsMount::new: size must be positive");

        let tmp = tempfile::Builder::new()
            .prefix("cascade-xfs-")
            .tempdir()
            .expect("create tempdir for XFS fixture");
        let backing = tmp.path().join("xfs.img");
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).expect("create XFS mount point");
        std::fs::File::create(&backing)
            .and_then(|f| f.set_len(size_mib * 1024 * 1024))
            .expect("create sparse XFS backing file");

        // From here on, Drop cleans up if a later step panics.
        let mut mount = XfsMount {
            dir,
            device: LoopDevice::attach(&backing),
            backing,
            mounted: false,
            lazy: false,
            tmp: Some(tmp),
        };

        let mut mkfs = Command::new(mkfs);
        mkfs.args(["-q", "-m", "reflink=1"]).arg(&mount.device.path);
        if size_mib < XFS_MIN_MIB {
            mkfs.env("TEST_DIR", &mount.dir)
                .env("TEST_DEV", &mount.device.path)
                .env("QA_CHECK_FS", "1");
        }
        run(&mut mkfs);
        run(Command::new("mount")
            .args(["-t", "xfs"])
            .arg(&mount.device.path)
            .arg(&mount.dir));
        mount.mounted = true;
        Some(mount)
    }

    /// `self.dir.join(path)`.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.dir.join(path)
    }

    fn unmount(&mut self) -> bool {
        for attempt in 0..8 {
            if attempt > 0 {
                sleep(Duration::from_millis(50 * attempt));
            }
            if quiet(Command::new("umount").arg(&self.dir), attempt == 7) {
                return true;
            }
        }
        eprintln!(
            "warning: umount {} kept failing; trying a lazy unmount",
            self.dir.display()
        );
        self.lazy = quiet(Command::new("umount").arg("-l").arg(&self.dir), true);
        self.lazy
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        if self.mounted {
            if self.unmount() {
                self.mounted = false;
            } else {
                // Removing the tempdir would recurse into the still-mounted
                // filesystem: leave everything in place instead.
                eprintln!(
                    "warning: could not unmount {}; leaking {} and {}",
                    self.dir.display(),
                    self.device.path.display(),
                    self.backing.display()
                );
                self.device.attached = false;
                if let Some(tmp) = self.tmp.take() {
                    let _ = tmp.keep();
                }
                return;
            }
        }
        if self.lazy {
            // The lazily unmounted filesystem may still hold the device:
            // waiting for its release would only time out.
            self.device.detach(false);
        }
        // Dropping `device` detaches it (unless done above), then dropping
        // `tmp` removes the backing file and the mount point.
    }
}

impl std::fmt::Debug for XfsMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XfsMount")
            .field("dir", &self.dir)
            .field("device", &self.device.path)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

/// Effective uid is 0, read from `/proc/self/status` (no `unsafe` needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// `name` on `PATH`, or in the sbin directories often missing from it.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd`, panicking with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|err| panic!("XFS fixture: cannot run `{}`: {err}", describe(cmd)));
    assert!(
        out.status.success(),
        "XFS fixture: `{}` failed ({}): {}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// Runs `cmd` for cleanup: never panics; reports a failure on stderr if
/// `report`.
fn quiet(cmd: &mut Command, report: bool) -> bool {
    match cmd.output() {
        Ok(out) if out.status.success() => true,
        _ if !report => false,
        Ok(out) => {
            eprintln!(
                "XFS fixture cleanup: `{}` failed ({}): {}",
                describe(cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(err) => {
            eprintln!("XFS fixture cleanup: cannot run `{}`: {err}", describe(cmd));
            false
        }
    }
}
