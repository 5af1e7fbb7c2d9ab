//! Process groups: killing a command with everything it started (`killpg`). External
//! commands run in a process group of their own (see `command.rs`), so a hook that
//! hangs in a grandchild (`sh -c 'sleep 1000'`) is stopped whole when it times out.

use std::io;

use super::os_result;

/// Sends SIGKILL to every process of group `pgid`. A group that has already gone is
/// not an error (`ESRCH`): the command finished just as its time ran out.
pub fn kill_group(pgid: u32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process group id"))?;
    // SAFETY: killpg takes two integers and touches no memory of ours; pgid > 1, so
    // it can never mean "our own group" (0) or "every process" (-1 / 1).
    match os_result(unsafe { libc::killpg(pgid, libc::SIGKILL) }) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn kills_the_whole_group() {
        // The shell starts a grandchild; killing the group ends both, so the pipe
        // they share reaches EOF at once instead of after the sleep.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        kill_group(child.id()).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        child.wait().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Gone already: not an error.
        kill_group(child.id()).unwrap();
        assert!(kill_group(0).is_err() && kill_group(1).is_err());
    }
}
