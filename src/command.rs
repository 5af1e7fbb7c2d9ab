//! External commands (freeze/thaw hooks, lvm2 and thin-provisioning-tools), run through
//! duct so a failure's command line and stderr reach the error message.
//!
//! Every command has a time limit. A hook or an lvm2 command that hangs (a frozen file
//! system under it, a stuck device) would otherwise hold a group frozen for good: past
//! its limit its whole process group is killed and the caller gets
//! [`Error::CommandTimeout`] naming the command and the limit. The limit counts the
//! time cascade spends waiting on the command (for its output or its exit), not time
//! a caller spends between reads of a [`Stream`] (thin_delta's output is consumed
//! while the changes it names are journalled).
//!
//! Each start is logged at debug level ("external command"), so a test or a benchmark
//! can count what a cycle runs.
use crate::error::{Error, Result};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How much of a command's stderr is kept for its error message.
const STDERR_KEPT: usize = 16 << 10;

/// Runs `argv` to completion within `timeout`; a non-zero exit is an error carrying
/// its stderr.
pub fn run(argv: &[String], timeout: Duration) -> Result<()> {
    output(argv, &[], timeout).map(|_| ())
}

/// Runs `argv` with extra environment `env` within `timeout` and returns its stdout;
/// a non-zero exit is an error carrying the command line and its stderr.
pub fn output(argv: &[String], env: &[(&str, &str)], timeout: Duration) -> Result<String> {
    let mut s = stream(argv, env, timeout)?;
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    s.finish(read.err())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A running command whose stdout is read as it comes (bounded memory whatever it
/// prints); its stderr is collected on the side, at most [`STDERR_KEPT`] bytes.
/// Call [`Stream::finish`] after the last read to learn how it ended; dropped before
/// that, the command is killed.
pub struct Stream {
    // Declared first, so it is dropped (and the command killed) before the rest.
    reader: duct::ReaderHandle,
    stderr: Option<std::thread::JoinHandle<String>>,
    watchdog: Watchdog,
    command: String,
    pgid: u32,
    finished: bool,
}

/// Starts `argv` with extra environment `env`; see [`Stream`].
pub fn stream(argv: &[String], env: &[(&str, &str)], timeout: Duration) -> Result<Stream> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::InvalidArgument("empty command".into()))?;
    let command = argv.join(" ");
    let could_not_start = |e: std::io::Error| Error::Command {
        command: command.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
    };
    let (err_read, err_write) = os_pipe::pipe().map_err(could_not_start)?;
    tracing::debug!(command = %command, "external command");
    let reader = {
        let mut cmd = duct::cmd(program, args)
            .stderr_file(err_write)
            .stdin_null()
            .unchecked()
            // A process group of its own: a stop signal meant for cascade (Ctrl-C at a
            // terminal, systemd's SIGTERM to the service's processes) must not kill a
            // freeze hook or an lvcreate half way; cascade finishes or abandons the
            // cycle itself, and runs the thaw hook either way. It is also what a
            // timeout kills.
            .before_spawn(|c| {
                std::os::unix::process::CommandExt::process_group(c, 0);
                Ok(())
            });
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        // The expression holds the pipe's write end: it is dropped here, so the
        // child holds the only one and the stderr reader sees EOF when it ends.
        cmd.reader().map_err(could_not_start)?
    };
    let pgid = reader.pids()[0];
    let stderr = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&err_read).take(STDERR_KEPT as u64).read_to_end(&mut kept);
        // Drain the rest so the command never blocks on a full pipe.
        let _ = std::io::copy(&mut &err_read, &mut std::io::sink());
        String::from_utf8_lossy(&kept).trim().to_string()
    });
    Ok(Stream {
        reader,
        stderr: Some(stderr),
        watchdog: Watchdog::start(pgid, timeout),
        command,
        pgid,
        finished: false,
    })
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let _waiting = self.watchdog.waiting();
        // At EOF duct also waits for the exit, inside this same read.
        (&self.reader).read(buf)
    }
}

impl Stream {
    /// Reads what is left, waits for the exit and says how the command ended: a
    /// timeout, a non-zero exit (with its stderr), or `read_error` if the caller's
    /// reading failed, with the command line.
    pub fn finish(mut self, read_error: Option<std::io::Error>) -> Result<()> {
        self.finished = true;
        let drained = std::io::copy(&mut self, &mut std::io::sink());
        let status = self.reader.try_wait().ok().flatten().map(|o| o.status);
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if self.watchdog.fired() {
            return Err(Error::CommandTimeout {
                command: self.command.clone(),
                timeout: self.watchdog.timeout,
            });
        }
        match (status, read_error.or(drained.err())) {
            (Some(s), None) if s.success() => Ok(()),
            (Some(s), _) if !s.success() => Err(Error::Command {
                command: self.command.clone(),
                status: s.to_string(),
                stderr,
            }),
            (_, e) => Err(Error::Command {
                command: self.command.clone(),
                status: "unreadable output".into(),
                stderr: e.map_or("no exit status".into(), |e| e.to_string()),
            }),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.finished {
            // duct kills only the child; its own children go with the group.
            let _ = crate::sys::kill_group(self.pgid);
        }
    }
}

/// Kills a process group once cascade has waited on it for longer than `timeout`
/// in total; a thread of its own, so a blocked read or wait is cut short.
struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    timeout: Duration,
}

#[derive(Default)]
struct WatchState {
    /// Waited so far, not counting the wait now under way.
    waited: Duration,
    /// When the wait now under way began.
    since: Option<Instant>,
    fired: bool,
    done: bool,
}

impl Watchdog {
    fn start(pgid: u32, timeout: Duration) -> Watchdog {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*s;
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !st.done {
                let Some(since) = st.since else {
                    st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
                    continue;
                };
                let waited = st.waited + since.elapsed();
                if waited >= timeout {
                    st.fired = true;
                    if let Err(e) = crate::sys::kill_group(pgid) {
                        tracing::error!(pgid, error = %e, "cannot kill a timed-out command");
                    }
                    return;
                }
                st = cv
                    .wait_timeout(st, timeout - waited)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
        Watchdog {
            state,
            thread: Some(thread),
            timeout,
        }
    }

    /// Counts the time until the guard drops as time waited on the command.
    fn waiting(&self) -> impl Drop + '_ {
        self.update(|st| st.since = Some(Instant::now()));
        Waiting(self)
    }

    fn update(&self, f: impl FnOnce(&mut WatchState)) {
        let (lock, cv) = &*self.state;
        f(&mut lock.lock().unwrap_or_else(|e| e.into_inner()));
        cv.notify_all();
    }

    fn fired(&self) -> bool {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).fired
    }
}

struct Waiting<'a>(&'a Watchdog);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.update(|st| {
            if let Some(since) = st.since.take() {
                st.waited += since.elapsed();
            }
        });
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.update(|st| st.done = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn failure_carries_command_and_stderr() {
        let e = run(
            &argv(&["sh", "-c", "echo frozen-fs-busy >&2; exit 3"]),
            LONG,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sh -c") && e.contains("frozen-fs-busy") && e.contains('3'),
            "{e}"
        );
        run(&argv(&["true"]), LONG).unwrap();
        let e = run(&argv(&["/nonexistent/tool"]), LONG)
            .unwrap_err()
            .to_string();
        assert!(e.contains("could not start"), "{e}");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        let started = Instant::now();
        // The grandchild holds stdout open: only killing the group ends the wait.
        let e = run(
            &argv(&["sh", "-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(e, Error::CommandTimeout { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("sh -c sleep 30 & sleep 30") && e.contains("300ms"),
            "{e}"
        );
    }

    #[test]
    fn stderr_is_kept_bounded_and_stdout_streams() {
        let script = "head -c 1000000 /dev/zero | tr '\\0' e >&2; seq 1 100000; exit 1";
        let mut s = stream(&argv(&["sh", "-c", script]), &[], LONG).unwrap();
        let mut lines = 0;
        for line in std::io::BufRead::lines(std::io::BufReader::new(&mut s)) {
            line.unwrap();
            lines += 1;
        }
        assert_eq!(lines, 100000);
        match s.finish(None).unwrap_err() {
            Error::Command { stderr, .. } => assert_eq!(stderr.len(), STDERR_KEPT),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn time_between_reads_does_not_count() {
        let mut s = stream(
            &argv(&["sh", "-c", "echo a; sleep 0.2; echo b"]),
            &[],
            Duration::from_millis(1500),
        )
        .unwrap();
        let mut one = [0u8; 2];
        s.read_exact(&mut one).unwrap();
        // The caller is busy for longer than the limit; the command is not to blame.
        std::thread::sleep(Duration::from_millis(1800));
        s.finish(None).unwrap();
    }
}
