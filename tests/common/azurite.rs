//! Azurite, Microsoft's Azure Storage emulator, on 127.0.0.1 for the az:// tests: its
//! Blob service, with one container, the emulator's well-known account and key
//! (requests must carry valid SharedKey signatures).
//!
//! Installed by `tests/azure/install-azurite.sh` (run by `make test`) under
//! `${CASCADE_TOOLS:-/var/cache/cascade-tools}/azurite`. When it is missing,
//! [`Azurite::start`] panics: the Azure tests must run in CI, never skip.
use super::emulator::spawn_on_free_port;
use super::s3::{random_token, tail};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// The emulator's account and key, the same on every Azurite.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Azurite {
    /// `http://127.0.0.1:PORT/devstoreaccount1`: the Blob service endpoint.
    pub endpoint: String,
    pub container: String,
    child: Child,
    log: PathBuf,
    // Last: removed after the child is killed in Drop.
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// Starts a fresh emulator (data in a temp dir) on a free port, with one container.
    pub fn start() -> Azurite {
        let tools = std::env::var("CASCADE_TOOLS").unwrap_or("/var/cache/cascade-tools".into());
        let bin = PathBuf::from(tools).join("azurite/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: run `make test` (or tests/azure/install-azurite.sh)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("cascade-azurite-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("azurite.log");
        let data = dir.path().join("data");
        let (child, port) = spawn_on_free_port("azurite", &log, READY_TIMEOUT, |port| {
            let mut c = Command::new(&bin);
            c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(&data)
                .args(["--skipApiVersionCheck", "--disableTelemetry", "--loose"]);
            c
        });
        let az = Azurite {
            endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
            container: format!("cascade-{}", random_token(8).to_lowercase()),
            child,
            log,
            _dir: dir,
        };
        az.create_container();
        az
    }

    /// Creates the container (object_store has no call for it): a SharedKey-signed
    /// `PUT ?restype=container`, signed by object_store's own authorizer.
    fn create_container(&self) {
        use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};
        use object_store::client::{HttpConnector, ReqwestConnector};
        let rt = tokio::runtime::Runtime::new().unwrap();
        let status = rt.block_on(async {
            let client = ReqwestConnector::default()
                .connect(&object_store::ClientOptions::new().with_allow_http(true))
                .unwrap();
            let mut req = http::Request::builder()
                .method("PUT")
                .uri(format!(
                    "{}/{}?restype=container",
                    self.endpoint, self.container
                ))
                .header("content-length", "0")
                .body(bytes::Bytes::new().into())
                .unwrap();
            let cred = AzureCredential::AccessKey(AzureAccessKey::try_new(KEY).unwrap());
            AzureAuthorizer::new(&cred, ACCOUNT).authorize(&mut req);
            client.execute(req).await.map(|r| r.status().as_u16())
        });
        assert_eq!(status.ok(), Some(201), "create container: {}", self.log());
    }

    /// `az://CONTAINER/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("az://{}/{}", self.container, prefix.trim_matches('/'))
    }

    /// The standard Azure environment variables that reach this emulator's account.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub fn log(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
