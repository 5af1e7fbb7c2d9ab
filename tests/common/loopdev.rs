//! A loop device over a backing file: attached with `losetup -f --show`, detached
//! when dropped, and waited for until the kernel has really let it go.
//!
//! Works wherever the test process runs as root, also inside the LVM test VM.
use super::host::{find_tool, is_root, retry, skip, try_run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

pub struct LoopDev {
    /// e.g. `/dev/loop3`.
    pub device: PathBuf,
    pub backing: PathBuf,
    losetup: PathBuf,
    attached: bool,
    /// Something may still hold the device (a lazily unmounted file system):
    /// `losetup -d` then only sets autoclear, so do not wait for the release.
    busy: bool,
}

impl LoopDev {
    /// Attaches `backing` to a free loop device, or says why not (not root, no
    /// losetup, losetup's error).
    pub fn attach(backing: &Path) -> Result<LoopDev, String> {
        if !is_root() {
            return Err("not running as root".into());
        }
        let losetup = find_tool("losetup").ok_or("losetup not found")?;
        let out = try_run(Command::new(&losetup).arg("-f").arg("--show").arg(backing))?;
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if device.as_os_str().is_empty() {
            return Err("losetup -f --show printed no device".into());
        }
        Ok(LoopDev {
            device,
            backing: backing.to_path_buf(),
            losetup,
            attached: true,
            busy: false,
        })
    }

    /// [`LoopDev::attach`], or `None` after a loud `SKIPPED` line naming `what`
    /// (a failure when CASCADE_REQUIRE_ROOT is set, see [`super::host::skip`]).
    pub fn attach_or_skip(backing: &Path, what: &str) -> Option<LoopDev> {
        LoopDev::attach(backing)
            .map_err(|e| skip(what, &format!("needs root for loop devices: {e}")))
            .ok()
    }

    /// The device path as a string, for configs and command lines.
    pub fn path(&self) -> &str {
        self.device.to_str().unwrap()
    }

    /// Detach without waiting for the release: something (a lazily unmounted file
    /// system) may still hold the device, which the kernel frees once it is let go.
    pub fn set_busy(&mut self) {
        self.busy = true;
    }

    /// Leaves the device attached when dropped (what is on it could not be let go).
    pub fn leak(&mut self) {
        self.attached = false;
    }

    /// Detaches now (retried a few times); true when done.
    pub fn detach(&mut self) -> bool {
        if !self.attached {
            return true;
        }
        // A device still in use is switched to autoclear by the kernel and goes away
        // once released.
        let detach = || {
            let mut c = Command::new(&self.losetup);
            c.arg("-d").arg(&self.device);
            c
        };
        if retry(5, 100, detach) {
            self.attached = false;
            if !self.busy {
                self.wait_released();
            }
            return true;
        }
        eprintln!("warning: losetup -d {} failed", self.device.display());
        false
    }

    /// Waits (bounded) until the kernel has really unbound the loop device: if
    /// something still had it open, `losetup -d` only set autoclear.
    fn wait_released(&self) {
        let Some(name) = self.device.file_name() else {
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
            self.device.display()
        );
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        self.detach();
    }
}

impl std::fmt::Debug for LoopDev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopDev")
            .field("device", &self.device)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}
