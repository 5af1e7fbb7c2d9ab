//! Grids for tests: streams served by `cascade split` (each its own process, on
//! this host or in a network namespace of its own), a shared secret, and a writer
//! whose writes depend on each other across the streams.
use super::nbd::Raw;
use super::split::{Split, BIN};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of each stream's one volume.
pub const VOLUME: u64 = 1 << 20;

/// Writes a secret file only its owner reads, in `dir`.
pub fn secret(dir: &Path) -> PathBuf {
    let p = dir.join("grid.secret");
    std::fs::write(&p, "c2VjcmV0LWZvci10aGUtdGVzdC1ncmlkLW9mLWNhc2NhZGU=\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a stream's config says.
pub struct StreamSpec<'a> {
    pub stream: &'a str,
    pub grid_listen: String,
    pub peers: Vec<String>,
    pub counter: &'a str,
    pub secret: &'a Path,
    /// The splitter's NBD listener; None for a snapshot stream.
    pub nbd_listen: Option<String>,
    /// More YAML lines of the `grid:` section (`  hold-budget: 80ms\n`).
    pub grid_extra: &'a str,
    /// More YAML lines of the group (`    targets: [store]\n`).
    pub group_extra: &'a str,
}

/// Writes `dir/cascade.yaml`: grid `shop`, group `vms` with volume `v-STREAM`.
pub fn config(dir: &Path, s: &StreamSpec) {
    std::fs::create_dir_all(dir).unwrap();
    let img = dir.join("v.img");
    if !img.exists() {
        std::fs::File::create(&img)
            .unwrap()
            .set_len(VOLUME)
            .unwrap();
    }
    let peers: Vec<String> = s.peers.iter().map(|p| format!("\"{p}\"")).collect();
    let split = match &s.nbd_listen {
        Some(l) => format!("    splitter:\n      listen: {l}\n      commit-every: 20ms\n"),
        None => String::new(),
    };
    std::fs::write(
        dir.join("cascade.yaml"),
        format!(
            "state-dir: state\njournal-dir: journal\ngrid:\n  name: shop\n  stream: {}\n  counter: {}\n  \
             listen: {}\n  peers: [{}]\n  secret-file: {}\n{}consistency-groups:\n  - name: vms\n{split}{}    \
             volumes:\n      - {{ id: v-{}, driver: file, path: v.img }}\n",
            s.stream,
            s.counter,
            s.grid_listen,
            peers.join(", "),
            s.secret.display(),
            s.grid_extra,
            s.group_extra,
            s.stream
        ),
    )
    .unwrap();
}

/// The `cascade` binary, run by `wrap` (empty, or `ip netns exec NS`).
fn cascade(wrap: &[&str]) -> Command {
    match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    }
}

/// `cascade split` of the stream configured in `dir`, run by `wrap`, with more
/// environment.
pub fn serve(dir: &Path, wrap: &[&str], env: &[(String, String)]) -> Split {
    let mut cmd = cascade(wrap);
    cmd.args(Split::ARGS).envs(env.iter().cloned());
    Split::serve_with(dir, cmd)
}

/// `cascade bookmark --grid shop --name NAME` from the config in `dir`, to run.
pub fn bookmark_command(
    dir: &Path,
    wrap: &[&str],
    env: &[(String, String)],
    name: &str,
) -> Command {
    let mut cmd = cascade(wrap);
    cmd.args([
        "bookmark",
        "-c",
        "cascade.yaml",
        "--grid",
        "shop",
        "--name",
        name,
    ])
    .envs(env.iter().cloned())
    .current_dir(dir);
    cmd
}

/// [`bookmark_command`] with `--json`: its exit success and its JSON.
pub fn bookmark(
    dir: &Path,
    wrap: &[&str],
    env: &[(String, String)],
    name: &str,
) -> (bool, serde_json::Value) {
    let out = bookmark_command(dir, wrap, env, name)
        .arg("--json")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "bookmark {name}: no JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

/// A client that writes to each stream in turn, each write sent only once the
/// previous one (on the previous stream) was answered: write i of stream k+1
/// depends on write i of stream k, and write i+1 of the first stream on write i of
/// the last. Each write puts its round number in the first 8 bytes of the volume.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub rounds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(streams: Vec<(SocketAddr, String)>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Raw> = streams.iter().map(|(a, e)| Raw::open(*a, e)).collect();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let mut block = vec![0u8; 4096];
                block[..8].copy_from_slice(&i.to_le_bytes());
                for c in conns.iter_mut() {
                    c.write(i, 0, &block);
                }
                r.store(i, Ordering::Relaxed);
            }
        });
        Writer {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Stops after the round in progress; the last round written.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the writer failed");
        self.rounds.load(Ordering::Relaxed)
    }
}

/// The round number a volume image holds.
pub fn round(img: &Path) -> u64 {
    let b = std::fs::read(img).unwrap();
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// "B implies A" for the writer's rounds as a cut holds them, streams in writing
/// order: each stream holds at most what the one before it holds, and the first at
/// most one round more than the last.
pub fn check_cut(what: &str, rounds: &[u64]) {
    for w in rounds.windows(2) {
        assert!(
            w[0] >= w[1],
            "{what}: a stream holds round {} though the stream written before it holds only {} ({rounds:?})",
            w[1],
            w[0]
        );
    }
    let (first, last) = (rounds[0], *rounds.last().unwrap());
    assert!(
        first <= last + 1,
        "{what}: the first stream holds round {first}, which was written after the last stream's round {}, which it lacks ({rounds:?})",
        first - 1
    );
}
