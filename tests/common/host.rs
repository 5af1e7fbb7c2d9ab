//! Running the host's tools for fixtures (losetup, mkfs, mount): a failing step of a
//! fixture panics with the command's stderr, a failing cleanup step only says so.
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

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

/// Set by `make test`: a test that needs root (loop devices, mounts, the XFS with
/// reflink) fails instead of skipping when it cannot run, so CI cannot pass it unrun.
pub const REQUIRE_ROOT: &str = "CASCADE_REQUIRE_ROOT";

/// Says why a test that needs root cannot run: it panics when [`REQUIRE_ROOT`] is
/// set, else prints a loud `SKIPPED` line naming `what` and the reason, and the
/// caller returns.
pub fn skip(what: &str, why: &str) {
    assert!(
        std::env::var_os(REQUIRE_ROOT).is_none(),
        "{what} cannot run ({why}), and {REQUIRE_ROOT} is set: run the tests as root with \
         what `make test` installs"
    );
    eprintln!("SKIPPED: {what}: {why}");
}

/// True when running as root; otherwise [`skip`]s with that reason and returns false.
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(what, "needs root");
    false
}

/// `name` on `PATH`, or in the sbin directories often missing from it.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd`, or says why it failed (it could not start, or its exit status and
/// stderr).
pub fn try_run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|err| format!("cannot run `{}`: {err}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Runs `cmd`, panicking with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    try_run(cmd).unwrap_or_else(|e| panic!("fixture: {e}"))
}

/// Runs a cleanup `cmd` up to `attempts` times, waiting a little longer before each
/// retry (`step_ms`, twice that, …); only the last failure is reported.
pub fn retry(attempts: u64, step_ms: u64, mut cmd: impl FnMut() -> Command) -> bool {
    (0..attempts).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(step_ms * attempt));
        }
        quiet(&mut cmd(), attempt + 1 == attempts)
    })
}

/// Runs `cmd` for cleanup: never panics; reports a failure on stderr if `report`.
pub fn quiet(cmd: &mut Command, report: bool) -> bool {
    match try_run(cmd) {
        Ok(_) => true,
        Err(e) => {
            if report {
                eprintln!("fixture cleanup: {e}");
            }
            false
        }
    }
}
