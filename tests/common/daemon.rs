//! A `cascade run` process for tests: started in a group's directory with JSON logs
//! in a file, signalled like a service manager would, and killed if a test fails.
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cascade run -c cascade.yaml --log-format json ARGS` in `dir`; its
    /// stderr goes to `dir/NAME.log`.
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Daemon {
        Daemon::start_env(dir, name, args, Vec::new())
    }

    /// [`Daemon::start`] with more environment (an S3 server's, say).
    pub fn start_env(dir: &Path, name: &str, args: &[&str], env: Vec<(String, String)>) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        // A process group of its own, as a service manager gives it, so a test can
        // signal the whole group the way systemd or a terminal would.
        let child = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .process_group(0)
            .args(["run", "-c", "cascade.yaml", "--log-format", "json"])
            .args(args)
            .envs(env)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) takes plain integers; the pid is our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Signals every process of the daemon's process group, as Ctrl-C at a terminal
    /// or systemd's default KillMode do.
    pub fn signal_group(&self, sig: libc::c_int) {
        // SAFETY: kill(2) takes plain integers; the group is our own child's.
        assert_eq!(unsafe { libc::kill(-(self.child.id() as i32), sig) }, 0);
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(60))
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < until,
                "the daemon did not exit within {limit:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines, parsed.
    pub fn events(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Events whose message contains `text`.
    pub fn find(&self, text: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .collect()
    }

    /// Waits until `cond` holds, failing with the log after `limit`.
    pub fn until(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
