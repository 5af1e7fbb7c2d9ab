//! Tests that need LVM run inside a small VM (tests/vm/run.sh: Debian's kernel with
//! device-mapper over the host's root file system), because the host kernel has no
//! device-mapper. A test calls [`in_vm`] first: on the host it boots the VM, runs the
//! same test binary there with only that test selected, and asserts it passed; inside
//! the VM it returns the scratch directory and the test goes on.
//!
//! The VM is installed by `make test` (tests/vm/install.sh), which also sets
//! CASCADE_REQUIRE_VM so that a VM that cannot start fails the test: CI must run these.
//! A plain `cargo test` on a machine without the VM skips them, loudly.
#![allow(dead_code)]

use super::loopdev::LoopDev;
use std::path::PathBuf;
use std::process::Command;

const IN_VM: &str = "CASCADE_IN_VM";
const SCRATCH: &str = "CASCADE_VM_SCRATCH";
static ONE_VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `None` on the host, after the test ran and passed inside the VM; inside the VM,
/// `Some(scratch)`: a directory writable from the VM, removed by the host afterwards.
pub fn in_vm(test: &str) -> Option<PathBuf> {
    in_vm_with(test, None, &[])
}

/// [`in_vm`] with guest memory `memory` (as `2G`; the default otherwise) and the host's
/// values of the environment variables `env` passed on to the guest (those set).
pub fn in_vm_with(test: &str, memory: Option<&str>, env: &[&str]) -> Option<PathBuf> {
    if std::env::var_os(IN_VM).is_some() {
        return Some(PathBuf::from(
            std::env::var_os(SCRATCH).expect("set by the host"),
        ));
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let scratch = tempfile::Builder::new()
        .prefix("cascade-vm-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    // One VM at a time per test binary: two TCG guests of all the host's cores each
    // starve one another (the two lvm_thin tests took 525 s side by side, 355 s one
    // after the other). `make test` runs two binaries at once instead, each guest
    // on one core (CASCADE_VM_CPUS=1, tests/lanes.sh): 171 s for both side by side.
    let _one_vm = ONE_VM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = std::time::Instant::now();
    let mut vm = Command::new(format!("{root}/tests/vm/run.sh"));
    vm.arg("--rwdir").arg(scratch.path());
    if let Some(m) = memory {
        vm.args(["--memory", m]);
    }
    vm.arg("--").arg("env");
    for name in env {
        if let Ok(v) = std::env::var(name) {
            vm.arg(format!("{name}={v}"));
        }
    }
    let status = vm
        .arg(format!("{IN_VM}=1"))
        .arg(format!("{SCRATCH}={}", scratch.path().display()))
        .arg(format!("CARGO_MANIFEST_DIR={root}"))
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run tests/vm/run.sh: {e}"));
    // 125: the VM could not start (no vng, no kernel, modules missing).
    if status.code() == Some(125) && std::env::var_os("CASCADE_REQUIRE_VM").is_none() {
        eprintln!(
            "SKIPPED: {test}: the LVM test VM cannot start here (`make vm-deps` installs it)"
        );
        return None;
    }
    eprintln!(
        "{test}: ran inside the VM in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "{test} failed inside the VM: {status}");
    None
}

/// On the host, whether the VM will have every program in `tools` (the guest runs
/// the host's own root file system, so it has what the host has); when one is
/// missing, fails under CASCADE_REQUIRE_VM and else skips loudly, naming it. Inside
/// the VM, true: the host checked.
pub fn tools_or_skip(test: &str, tools: &[&str]) -> bool {
    if std::env::var_os(IN_VM).is_some() {
        return true;
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| super::host::find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CASCADE_REQUIRE_VM").is_none(),
        "{test} cannot run: {} not found, and CASCADE_REQUIRE_VM is set (`make vm-deps` \
         installs them)",
        missing.join(", ")
    );
    eprintln!(
        "SKIPPED: {test}: the test VM would lack {} (`make vm-deps` installs them)",
        missing.join(", ")
    );
    false
}

/// Runs a shell command inside the VM (from a test already there); panics with its
/// output when it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Swaps the table of device-mapper device `name` for `table` while it is in use
/// (suspended, reloaded, resumed): a delay device made slow or quick again.
pub fn dm_reload(name: &str, table: &str) {
    sh(&format!(
        "dmsetup suspend {name} && dmsetup reload {name} --table '{table}' && dmsetup resume {name}"
    ));
}

/// A volume group on a loop device over a sparse file, with a thin pool `pool`
/// (64 KiB chunks); removed with its loop device when dropped.
pub struct ThinVg {
    pub vg: String,
    // Dropped after the volume group is removed.
    dev: LoopDev,
}

impl ThinVg {
    pub fn new(scratch: &std::path::Path, vg: &str, pool_mib: u64) -> ThinVg {
        let backing = scratch.join(format!("{vg}.img"));
        std::fs::File::create(&backing)
            .and_then(|f| f.set_len((pool_mib + 64) << 20))
            .unwrap();
        let dev = LoopDev::attach(&backing).unwrap_or_else(|e| panic!("ThinVg: {e}"));
        let loop_dev = dev.path();
        sh(&format!(
            "pvcreate -q {loop_dev} && vgcreate -q {vg} {loop_dev} && \
             lvcreate -q -L {pool_mib}M -c 64k -T {vg}/pool"
        ));
        ThinVg {
            vg: vg.to_string(),
            dev,
        }
    }

    /// A thin LV of `mib` MiB in the pool; its device path.
    pub fn thin_lv(&self, name: &str, mib: u64) -> PathBuf {
        sh(&format!("lvcreate -q -V {mib}M -n {name} {}/pool", self.vg));
        PathBuf::from(format!("/dev/{}/{name}", self.vg))
    }
}

impl Drop for ThinVg {
    fn drop(&mut self) {
        let removed = Command::new("vgremove")
            .args(["-q", "-f", &self.vg])
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .status()
            .is_ok_and(|s| s.success());
        if !removed {
            // The device still holds the volume group: leave it attached, as before.
            self.dev.leak();
        }
    }
}
