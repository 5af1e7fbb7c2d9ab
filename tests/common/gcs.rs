//! A Google Cloud Storage test server on 127.0.0.1 for the gs:// tests:
//! gcp-storage-emulator (the pip package, installed by
//! `tests/gcs/install-gcs-emulator.sh`, run by `make test`) with the XML API
//! object_store speaks (`tests/gcs/xml_api.py`). The client reaches it the way
//! object_store reaches any emulator: a service account file whose `gcs_base_url` is
//! the server, with OAuth off. When it is missing, [`Gcs::start`] panics: the GCS
//! tests must run in CI, never skip.
use super::emulator::spawn_on_free_port;
use super::s3::{random_token, tail};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Gcs {
    pub bucket: String,
    /// The service account file that points object_store at this server
    /// (GOOGLE_SERVICE_ACCOUNT).
    pub service_account: PathBuf,
    child: Child,
    log: PathBuf,
    // Last: removed after the child is killed in Drop.
    _dir: tempfile::TempDir,
}

impl Gcs {
    /// Starts a fresh server (data in a temp dir) on a free port, with one bucket.
    pub fn start() -> Gcs {
        let tools = std::env::var("CASCADE_TOOLS").unwrap_or("/var/cache/cascade-tools".into());
        let python = PathBuf::from(tools).join("gcs-venv/bin/python");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gcs/xml_api.py");
        assert!(
            python.exists(),
            "{} is missing: run `make test` (or tests/gcs/install-gcs-emulator.sh)",
            python.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("cascade-gcs-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("gcs.log");
        let bucket = format!("cascade-{}", random_token(8).to_lowercase());
        let data = dir.path().join("data");
        let (child, port) = spawn_on_free_port("the GCS emulator", &log, READY_TIMEOUT, |port| {
            let mut c = Command::new(&python);
            c.arg(&script)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("--data")
                .arg(&data)
                .args(["--bucket", &bucket]);
            c
        });
        let service_account = dir.path().join("service-account.json");
        std::fs::write(
            &service_account,
            format!(
                r#"{{"gcs_base_url":"http://127.0.0.1:{port}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#
            ),
        )
        .unwrap();
        Gcs {
            bucket,
            service_account,
            child,
            log,
            _dir: dir,
        }
    }

    /// `gs://BUCKET/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("gs://{}/{}", self.bucket, prefix.trim_matches('/'))
    }

    /// The standard Google environment variable that reaches this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "GOOGLE_SERVICE_ACCOUNT".into(),
            self.service_account.display().to_string(),
        )]
    }

    pub fn log(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Gcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
