//! S3 Object Lock of a replica's data objects (deltas, full images) and of its
//! manifest chunks, which are written once. Each is given a retention of its own once
//! uploaded: a PutObjectRetention request, which object_store does not make, signed
//! with the store's own credentials. (object_store 0.12 sends headers it is given per
//! request unsigned, and S3 refuses unsigned `x-amz-*` headers, so the lock cannot ride
//! on the upload itself.) The lock ends `retain` after the object's Last-Modified as
//! the store gives it, the time retention (`export/chain.rs`) reads back from a
//! listing, so both count from the store's clock; retention never deletes an object
//! before then, and says when it may.
use base64::Engine;
use md5::Digest;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::sync::Arc;

/// Tries of a lock request (PutObjectRetention is idempotent) before the export fails.
const TRIES: u32 = 4;

/// For the store's clock against this host's: an object counts as locked this much
/// longer than its lock (never longer than the lock itself).
const SKEW: std::time::Duration = std::time::Duration::from_secs(600);

pub struct Lock {
    /// `GOVERNANCE` or `COMPLIANCE`.
    mode: &'static str,
    retain: std::time::Duration,
    s3: Arc<AmazonS3>,
    /// The bucket's URL, as object_store forms it, without a trailing slash.
    base: String,
    region: String,
    /// Built once: every lock of an export goes through it.
    client: HttpClient,
}

impl Lock {
    pub fn new(
        config: &crate::config::ObjectLockConfig,
        s3: Arc<AmazonS3>,
        base: String,
        region: String,
        allow_http: bool,
    ) -> object_store::Result<Lock> {
        let client = ReqwestConnector::default()
            .connect(&object_store::ClientOptions::new().with_allow_http(allow_http))?;
        Ok(Lock {
            mode: match config.mode {
                crate::config::LockMode::Governance => "GOVERNANCE",
                crate::config::LockMode::Compliance => "COMPLIANCE",
            },
            retain: config.retain.duration(),
            s3,
            base,
            region,
            client,
        })
    }

    /// From when an object the store says was written at `written_ns` may be deleted:
    /// its lock's end, with an allowance for the store's clock.
    pub fn until(&self, written_ns: i64) -> i64 {
        let wait = self.retain + SKEW.min(self.retain);
        written_ns.saturating_add(wait.as_nanos() as i64)
    }

    /// Locks object `path` (its `version`, where the bucket keeps versions, as Object
    /// Lock requires) until `retain` after its Last-Modified. A request the store did
    /// not answer, or answered with a server error, is tried again.
    pub async fn apply(&self, path: &ObjectPath, version: Option<&str>) -> Result<(), String> {
        let written = self
            .s3
            .head(path)
            .await
            .map_err(|e| e.to_string())?
            .last_modified;
        let until = written + chrono::Duration::from_std(self.retain).map_err(|e| e.to_string())?;
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            self.mode,
            until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let mut uri = format!("{}/{}?retention", self.base, encode_path(path.as_ref()));
        if let Some(v) = version {
            uri.push_str(&format!("&versionId={}", encode_path(v)));
        }
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
            let mut req = http::Request::builder()
                .method("PUT")
                .uri(&uri)
                .header("content-md5", &md5)
                .header("content-type", "application/xml")
                .body(bytes::Bytes::from(body.clone()).into())
                .map_err(|e| e.to_string())?;
            let cred = self
                .s3
                .credentials()
                .get_credential()
                .await
                .map_err(|e| e.to_string())?;
            AwsAuthorizer::new(&cred, "s3", &self.region).authorize(&mut req, None);
            let resp = match self.client.execute(req).await {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let text = resp.into_body().bytes().await.unwrap_or_default();
            last = format!(
                "PutObjectRetention answered {status}: {}",
                String::from_utf8_lossy(&text[..text.len().min(500)])
            );
            // Refused (a 4xx): asking again would be refused again.
            if !status.is_server_error() {
                break;
            }
        }
        Err(last)
    }
}

/// A URL path, each byte other than an unreserved one or `/` percent-encoded.
fn encode_path(p: &str) -> String {
    p.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
