//! Test fixture: a scratch XFS filesystem (with reflink) on a loop device.
//!
//! Needs root and xfsprogs; without them [`XfsMount::new`] prints a loud
//! `SKIPPED` line and returns `None` so the calling test can return early, or
//! fails when CASCADE_REQUIRE_ROOT is set ([`super::host::skip`]).
//! Once those are confirmed, any failing step panics with the command's
//! stderr: a broken environment must not look like a skipped test.

use super::host::{find_tool, root_or_skip, run, skip};
use super::loopdev::LoopDev;
use super::mount::Mount;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// xfsprogs refuses filesystems smaller than this unless run from fstests.
const XFS_MIN_MIB: u64 = 300;

/// A freshly made, mounted XFS filesystem (`-m reflink=1`) backed by a
/// sparse file on a loop device. Dropping it unmounts the filesystem,
/// detaches the loop device and removes the backing file and mount point.
pub struct XfsMount {
    /// Mount point (the filesystem root).
    pub dir: PathBuf,
    /// Loop device holding the filesystem, e.g. `/dev/loop3`.
    pub device: PathBuf,
    /// Sparse backing file of the loop device.
    pub backing: PathBuf,
    // Dropped in this order: unmounted, detached, files removed.
    mount: Option<Mount>,
    dev: LoopDev,
    /// Holds `backing` and `dir`; `None` once deliberately leaked.
    tmp: Option<TempDir>,
}

impl XfsMount {
    /// Makes and mounts a `size_mib` MiB XFS filesystem, or returns `None`
    /// (after an `eprintln!` starting with `SKIPPED`) when not running as
    /// root or when `mkfs.xfs` is not installed; with CASCADE_REQUIRE_ROOT set,
    /// panics instead.
    ///
    /// Sizes below 300 MiB are honoured (xfsprogs is told it runs under
    /// fstests); the backing file is sparse so the size costs no disk space.
    ///
    /// # Panics
    ///
    /// If any step (losetup, mkfs.xfs, mount) fails once root and xfsprogs
    /// are confirmed.
    pub fn new(size_mib: u64) -> Option<XfsMount> {
        if !root_or_skip("an XFS file system with reflink") {
            return None;
        }
        let Some(mkfs) = find_tool("mkfs.xfs") else {
            skip(
                "an XFS file system with reflink",
                "mkfs.xfs not found (xfsprogs)",
            );
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

        let dev = LoopDev::attach(&backing).unwrap_or_else(|e| panic!("XFS fixture: {e}"));
        // From here on, Drop cleans up if a later step panics.
        let mut xfs = XfsMount {
            dir,
            device: dev.device.clone(),
            backing,
            mount: None,
            dev,
            tmp: Some(tmp),
        };

        let mut mkfs = Command::new(mkfs);
        mkfs.args(["-q", "-m", "reflink=1"]).arg(&xfs.device);
        if size_mib < XFS_MIN_MIB {
            mkfs.env("TEST_DIR", &xfs.dir)
                .env("TEST_DEV", &xfs.device)
                .env("QA_CHECK_FS", "1");
        }
        run(&mut mkfs);
        xfs.mount = Some(Mount::new(
            &[OsStr::new("-t"), OsStr::new("xfs"), xfs.device.as_os_str()],
            &xfs.dir,
        ));
        Some(xfs)
    }

    /// `self.dir.join(path)`.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.dir.join(path)
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let Some(mount) = &mut self.mount else {
            return;
        };
        if !mount.unmount() {
            // Removing the tempdir would recurse into the still-mounted
            // filesystem: leave everything in place instead.
            eprintln!(
                "warning: could not unmount {}; leaking {} and {}",
                self.dir.display(),
                self.device.display(),
                self.backing.display()
            );
            mount.leak();
            self.dev.leak();
            if let Some(tmp) = self.tmp.take() {
                let _ = tmp.keep();
            }
        } else if mount.lazy() {
            // The filesystem (and so the loop device) may still be busy.
            self.dev.set_busy();
        }
        // Then `dev` detaches and dropping `tmp` removes the backing file and
        // the mount point.
    }
}

impl std::fmt::Debug for XfsMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XfsMount")
            .field("dir", &self.dir)
            .field("device", &self.device)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}
