//! A split group served by `cascade split` (the binary, stopped with SIGTERM), on
//! image files in a scratch directory, and replays of its journal.
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

pub const BIN: &str = env!("CARGO_BIN_EXE_cascade");

/// Lines of the splitter's stderr kept for a failure's message.
const LOG_LINES: usize = 12;

pub struct Split {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Split {
    /// Writes a config for group `vms` with `volumes` (id, size) as sparse image
    /// files in `dir` (kept if they exist), serves it on a port the system picks,
    /// and returns once its base is journalled.
    pub fn start(dir: &Path, volumes: &[(&str, u64)], commit_every: &str) -> Split {
        Split::start_with(dir, volumes, commit_every, "")
    }

    /// [`Split::start`] with more of the group's settings: YAML lines at the group's
    /// indentation (`    targets: [store]\n`).
    pub fn start_with(
        dir: &Path,
        volumes: &[(&str, u64)],
        commit_every: &str,
        group: &str,
    ) -> Split {
        Split::config(
            dir,
            volumes,
            &format!("      commit-every: {commit_every}\n"),
            group,
        );
        Split::serve(dir)
    }

    /// Writes `dir/cascade.yaml` for group `vms` with `volumes` (id, size) as sparse
    /// image files in `dir` (kept if they exist), listening on a port the system
    /// picks; `splitter` and `group` are more YAML lines at the indentation of the
    /// `splitter:` section and of the group.
    pub fn config(dir: &Path, volumes: &[(&str, u64)], splitter: &str, group: &str) {
        let mut vols = String::new();
        for (id, size) in volumes {
            let img = dir.join(format!("{id}.img"));
            if !img.exists() {
                std::fs::File::create(&img).unwrap().set_len(*size).unwrap();
            }
            vols += &format!("      - {{ id: {id}, driver: file, path: {id}.img }}\n");
        }
        std::fs::write(
            dir.join("cascade.yaml"),
            format!(
                "state-dir: state\njournal-dir: journal\nconsistency-groups:\n  - name: vms\n    \
                 splitter:\n      listen: 127.0.0.1:0\n{splitter}{group}    volumes:\n{vols}"
            ),
        )
        .unwrap();
    }

    /// Serves group `vms` of the config `dir/cascade.yaml` (written by the caller),
    /// and returns once its base is journalled.
    pub fn serve(dir: &Path) -> Split {
        let mut cmd = Command::new(BIN);
        cmd.args(Split::ARGS);
        Split::serve_with(dir, cmd)
    }

    /// `cascade split`'s arguments for group `vms` of `cascade.yaml`.
    pub const ARGS: [&'static str; 6] = ["split", "-c", "cascade.yaml", "--cg", "vms", "--json"];

    /// [`Split::serve`] with the command `cmd`, which runs `BIN` with [`Split::ARGS`]
    /// in its own way (in another mount namespace, say).
    pub fn serve_with(dir: &Path, mut cmd: Command) -> Split {
        let mut child = cmd
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It names each export's URI on stderr once it listens, and says when the
        // base is journalled.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut addr = None;
        let mut line = String::new();
        let mut said = String::new();
        loop {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "cascade split exited early:\n{said}"
            );
            said += &line;
            let uri = line
                .strip_prefix("serving ")
                .and_then(|l| l.split(" at nbd://").nth(1));
            if let Some(host) = uri.and_then(|u| u.split('/').next()) {
                addr = Some(host.parse::<SocketAddr>().unwrap());
            }
            if line.contains("journalling the writes after it") {
                break;
            }
        }
        // Keep draining stderr, so the splitter never blocks on a full pipe, and
        // keep its last lines.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap();
                if kept.len() == LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        Split {
            dir: dir.to_path_buf(),
            addr: addr.expect("cascade split named its address"),
            child: Some(child),
            log,
        }
    }

    /// The last lines the splitter wrote on stderr since it started serving.
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().map(|l| format!("{l}\n")).collect()
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.addr)
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal/vms")
    }

    /// SIGKILL: a crash of the splitter, at whatever it was doing.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then the exit status must be 0; the JSON report.
    pub fn stop(mut self) -> serde_json::Value {
        let child = self.child.take().unwrap();
        let status = stop(child);
        // Its last lines are all written once it exited.
        status.unwrap_or_else(|(status, out)| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            panic!("cascade split exited with {status}: {out}\n{}", self.log())
        })
    }
}

/// SIGTERM; the JSON report, or the exit status and stdout of a failed exit.
fn stop(mut child: Child) -> Result<serde_json::Value, (ExitStatus, String)> {
    let pid = child.id().to_string();
    super::host::run(Command::new("kill").args(["-TERM", &pid]));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let status = child.wait().unwrap();
    if !status.success() {
        return Err((status, out));
    }
    Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("report {out:?}: {e}")))
}

impl Drop for Split {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Replays `journal` to `point` (`seq:N`, a bookmark, …) into fresh files under
/// `out`; the path of each volume's file.
pub fn replay(journal: &Path, point: &str, out: &Path, ids: &[&str]) -> Vec<PathBuf> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("replay").arg(journal).args(["--until", point]);
    let paths: Vec<PathBuf> = ids.iter().map(|id| out.join(id)).collect();
    for (id, p) in ids.iter().zip(&paths) {
        cmd.arg("--to").arg(format!("{id}={}", p.display()));
    }
    super::host::run(&mut cmd);
    paths
}

/// SHA-256 of `b`: what a shadow copy and a replayed volume are compared by.
pub fn digest(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

pub fn file_digest(p: &Path) -> Vec<u8> {
    digest(&std::fs::read(p).unwrap())
}

/// `cascade status --json` of the one group of `dir/cascade.yaml`.
pub fn split_status(dir: &Path) -> serde_json::Value {
    let out = super::nbd::client(
        Command::new(BIN)
            .args(["status", "-c", "cascade.yaml", "--json"])
            .current_dir(dir),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["groups"][0].clone()
}

/// `cascade bookmark --name NAME` of group `vms`, configured in `dir`, to run.
pub fn bookmark_command(dir: &Path, name: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "bookmark",
        "-c",
        "cascade.yaml",
        "--cg",
        "vms",
        "--name",
        name,
    ])
    .current_dir(dir);
    c
}

/// `cascade journal verify JOURNAL` must pass; `why` says what a failure means.
pub fn verify_journal(journal: &Path, why: &str) {
    let out = Command::new(BIN)
        .args(["journal", "verify"])
        .arg(journal)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{why}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The writes where gaps of `journal` resume: the journal holds the volumes there.
pub fn resume_points(journal: &cascade::journal::Journal) -> Vec<u64> {
    journal
        .deltas()
        .iter()
        .filter_map(|e| e.writes)
        .filter(|w| w.gap.is_some_and(|g| g.resumes))
        .map(|w| w.last_write)
        .collect()
}
