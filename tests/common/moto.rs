//! moto's S3 server on 127.0.0.1, for what the S3 tests need beyond s3s-fs:
//! server-side encryption, storage classes and Object Lock, which it records per
//! object, read back with boto3 (`tests/s3/s3ctl.py`). Installed by
//! `tests/s3/install-moto.sh` (run by `make test`); when it is missing,
//! [`Moto::start`] panics: these tests run in CI, never skip.
use super::emulator::spawn_on_free_port;
use super::s3::{random_token, tail};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Moto {
    pub endpoint: String,
    pub bucket: String,
    venv: PathBuf,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts a server with one bucket, Object Lock enabled on it if `lock`.
    pub fn start(lock: bool) -> Moto {
        let tools = std::env::var("CASCADE_TOOLS").unwrap_or("/var/cache/cascade-tools".into());
        let venv = PathBuf::from(tools).join("moto-venv");
        let bin = venv.join("bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run `make test` (or tests/s3/install-moto.sh)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let (child, port) = spawn_on_free_port("moto_server", &log, READY_TIMEOUT, |port| {
            let mut c = Command::new(&bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        });
        let m = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: format!("cascade-{}", random_token(8).to_lowercase()),
            venv,
            child,
            log,
            _dir: dir,
        };
        let mut args = vec!["create-bucket", m.bucket.as_str()];
        if lock {
            args.push("--object-lock");
        }
        m.ctl(&args);
        m
    }

    /// `tests/s3/s3ctl.py ENDPOINT ARGS`: its stdout, parsed if it is JSON.
    pub fn ctl(&self, args: &[&str]) -> serde_json::Value {
        let o = Command::new(self.venv.join("bin/python"))
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/s3/s3ctl.py"))
            .arg(&self.endpoint)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "s3ctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// An object target at `prefix` of this server.
    pub fn target(&self, prefix: &str) -> super::config::ObjectTarget {
        super::config::ObjectTarget {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..super::config::ObjectTarget::new(format!("s3://{}/{prefix}", self.bucket))
        }
    }

    pub fn log(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
