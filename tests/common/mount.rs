//! A mount made by a test, unmounted when dropped: retried while the file system is
//! busy, lazily as a last resort.
use super::host::{quiet, retry, run};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct Mount {
    pub dir: PathBuf,
    mounted: bool,
    lazy: bool,
}

impl Mount {
    /// Runs `mount ARGS DIR`, panicking with its stderr when it fails.
    pub fn new<S: AsRef<OsStr>>(args: &[S], dir: &Path) -> Mount {
        run(Command::new("mount").args(args).arg(dir));
        Mount {
            dir: dir.to_path_buf(),
            mounted: true,
            lazy: false,
        }
    }

    /// A bind mount of `src` on `dir`, read-only.
    pub fn read_only_bind(src: &Path, dir: &Path) -> Mount {
        let mount = Mount::new(&[OsStr::new("--bind"), src.as_os_str()], dir);
        run(Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(dir));
        mount
    }

    /// Unmounts now; true when done. Lazily, when it stays busy: [`Mount::lazy`]
    /// then says so, and what is under it may be held a while longer.
    pub fn unmount(&mut self) -> bool {
        if !self.mounted {
            return true;
        }
        let umount = || {
            let mut c = Command::new("umount");
            c.arg(&self.dir);
            c
        };
        if retry(8, 50, umount) {
            self.mounted = false;
            return true;
        }
        eprintln!(
            "warning: umount {} kept failing; trying a lazy unmount",
            self.dir.display()
        );
        self.lazy = quiet(Command::new("umount").arg("-l").arg(&self.dir), true);
        self.mounted = !self.lazy;
        self.lazy
    }

    /// Leaves it mounted when dropped (it could not be unmounted).
    pub fn leak(&mut self) {
        self.mounted = false;
    }

    /// Whether the last unmount was a lazy one.
    pub fn lazy(&self) -> bool {
        self.lazy
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}
