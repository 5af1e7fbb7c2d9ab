//! A real S3-compatible server on 127.0.0.1 for tests: `s3s-fs` (a bucket is a
//! directory under `root`; requests must carry valid SigV4 signatures).
//!
//! The binary is installed by `tests/s3/install-s3s-fs.sh` (run by `make test`)
//! into `${CASCADE_TOOLS:-/var/cache/cascade-tools}/bin/s3s-fs`. When it is missing,
//! [`S3Server::start`] panics: the S3 tests must run in CI, never skip.
//!
//! ```ignore
//! let s3 = common::s3::S3Server::start();
//! let store = object_store::aws::AmazonS3Builder::new()
//!     .with_endpoint(&s3.endpoint)
//!     .with_bucket_name(&s3.bucket)
//!     .with_access_key_id(&s3.access_key)
//!     .with_secret_access_key(&s3.secret_key)
//!     .with_region(&s3.region)
//!     .with_allow_http(true)
//!     .with_virtual_hosted_style_request(false)
//!     .build()?;
//! ```
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`S3Server::start`] / [`S3Server::restart`] wait for the port to accept.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// The version `tests/s3/install-s3s-fs.sh` installs.
pub const S3S_FS_VERSION: &str = "0.14.1";

pub struct S3Server {
    /// `http://127.0.0.1:PORT` (no trailing slash): object_store's `with_endpoint`,
    /// `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    /// The bucket that exists when the server starts (a directory `root/bucket`).
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Any region works (s3s-fs checks the signature with whatever region the
    /// client signs for); `us-east-1` is what [`S3Server::env`] hands out.
    pub region: String,
    /// The server's data root; the bucket's objects are files under `root/bucket/`.
    pub root: PathBuf,
    pub port: u16,
    /// The address it listens on (loopback, or a bridge network namespaces reach).
    pub host: Ipv4Addr,
    bin: PathBuf,
    /// Server stdout+stderr, appended across restarts (outside `root`).
    log: PathBuf,
    child: Option<Child>,
    // Last: dropped after the child is killed in Drop.
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a fresh server with one empty bucket, random credentials, a free port.
    pub fn start() -> S3Server {
        S3Server::start_on(Ipv4Addr::LOCALHOST)
    }

    /// [`S3Server::start`] listening on `host`.
    pub fn start_on(host: Ipv4Addr) -> S3Server {
        let bin = find_binary();
        let dir = tempfile::Builder::new()
            .prefix("cascade-s3-")
            .tempdir()
            .expect("create a temp dir for the S3 server");
        let root = dir.path().join("data");
        let bucket = format!("cascade-test-{}", random_token(8).to_lowercase());
        fs::create_dir_all(root.join(&bucket)).expect("create the bucket directory");
        let log = dir.path().join("s3s-fs.log");

        let mut server = S3Server {
            endpoint: String::new(),
            bucket,
            access_key: format!("AK{}", random_token(18).to_uppercase()),
            secret_key: random_token(40),
            region: "us-east-1".to_string(),
            root,
            port: 0,
            host,
            bin,
            log,
            child: None,
            dir,
        };
        // The free port is found by binding :0 and letting go, so another process
        // can take it before the server binds: try a few ports before giving up.
        let mut last_err = String::new();
        for _ in 0..5 {
            server.port = free_port();
            server.endpoint = format!("http://{host}:{}", server.port);
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("s3s-fs did not start: {last_err}");
    }

    /// Kills the server at once (SIGKILL), as a crash or an outage would; requests in
    /// flight fail with connection errors. The data under `root` stays. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, root and credentials (stopping it
    /// first if it is running); returns once it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        // The old socket's port is free once the process is gone, but retry briefly
        // in case the kernel still holds it.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("s3s-fs did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Environment for a child process (the `cascade` binary) so that object_store's
    /// `AmazonS3Builder::from_env()` reaches this server. The bucket is not included:
    /// it comes from the target URL/config (`s3://{bucket}/...`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", self.region.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// An object target at `prefix` of this server, credentials in the target file.
    pub fn target(&self, prefix: &str) -> super::config::ObjectTarget {
        super::config::ObjectTarget {
            endpoint: Some(self.endpoint.clone()),
            region: Some(self.region.clone()),
            allow_http: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            ..super::config::ObjectTarget::new(self.url(prefix))
        }
    }

    /// `s3://BUCKET` (or `s3://BUCKET/prefix` for a non-empty prefix).
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, prefix)
        }
    }

    /// The bucket's directory: object `a/b` is the file `bucket_dir()/a/b`.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.join(&self.bucket)
    }

    /// Everything the server printed so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.bin)
            .arg("--host")
            .arg(self.host.to_string())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--access-key")
            .arg(&self.access_key)
            .arg("--secret-key")
            .arg(&self.secret_key)
            .arg(&self.root)
            .env(
                "RUST_LOG",
                std::env::var("S3S_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;

        let addr = SocketAddr::from((self.host, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before accepting on {addr}; its log:\n{}",
                    self.bin.display(),
                    tail(&self.log)
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not accept on {addr} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.bin.display(),
                    tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where the temp dir is (root, log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        // `dir` (TempDir) is removed after this, when its field is dropped.
    }
}

/// `$CASCADE_TOOLS/bin/s3s-fs`, `/var/cache/cascade-tools/bin/s3s-fs`, then `PATH`.
fn find_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(tools) = std::env::var_os("CASCADE_TOOLS") {
        candidates.push(PathBuf::from(tools).join("bin/s3s-fs"));
    }
    candidates.push(PathBuf::from("/var/cache/cascade-tools/bin/s3s-fs"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("s3s-fs")));
    }
    for c in &candidates {
        if is_executable(c) {
            return c.clone();
        }
    }
    panic!(
        "the S3 test server s3s-fs {S3S_FS_VERSION} is not installed (looked for \
         $CASCADE_TOOLS/bin/s3s-fs, /var/cache/cascade-tools/bin/s3s-fs and s3s-fs on PATH). \
         Run `make test`, which installs it, or `bash tests/s3/install-s3s-fs.sh` \
         (a few minutes the first time)."
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

pub fn random_token(len: usize) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

pub fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
