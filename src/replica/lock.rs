//! S3 Object Lock of a replica's data objects. Each delta and full image, once
//! uploaded, is given a retention of its own: a PutObjectRetention request, which
//! object_store does not make, signed with the store's own credentials. (object_store
//! 0.12 sends headers it is given per request unsigned, and S3 refuses unsigned
//! `x-amz-*` headers, so the lock cannot ride on the upload itself.) Retention
//! (`export/chain.rs`) never deletes an object before its lock ends, and says when.
use base64::Engine;
use md5::Digest;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::path::Path as ObjectPath;
use std::sync::Arc;

pub struct Lock {
    /// `GOVERNANCE` or `COMPLIANCE`.
    mode: &'static str,
    retain: std::time::Duration,
    s3: Arc<AmazonS3>,
    /// The bucket's URL, without a trailing slash.
    base: String,
    region: String,
    allow_http: bool,
}

impl Lock {
    pub fn new(
        config: &crate::config::ObjectLockConfig,
        s3: Arc<AmazonS3>,
        base: String,
        region: String,
        allow_http: bool,
    ) -> Lock {
        Lock {
            mode: match config.mode {
                crate::config::LockMode::Governance => "GOVERNANCE",
                crate::config::LockMode::Compliance => "COMPLIANCE",
            },
            retain: config.retain.duration(),
            s3,
            base,
            region,
            allow_http,
        }
    }

    /// When an object written at `written_ns` is no longer locked.
    pub fn until(&self, written_ns: i64) -> i64 {
        written_ns.saturating_add(self.retain.as_nanos() as i64)
    }

    /// Locks object `path` (its `version`, where the bucket keeps versions, as Object
    /// Lock requires) for the retain period from now.
    pub async fn apply(&self, path: &ObjectPath, version: Option<&str>) -> Result<(), String> {
        let until = chrono::DateTime::from_timestamp_nanos(self.until(crate::clock::now_ns()));
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
        let mut req = http::Request::builder()
            .method("PUT")
            .uri(&uri)
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .body(bytes::Bytes::from(body).into())
            .map_err(|e| e.to_string())?;
        let cred = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| e.to_string())?;
        AwsAuthorizer::new(&cred, "s3", &self.region).authorize(&mut req, None);
        let client = ReqwestConnector::default()
            .connect(&object_store::ClientOptions::new().with_allow_http(self.allow_http))
            .map_err(|e| e.to_string())?;
        let resp = client.execute(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.into_body().bytes().await.unwrap_or_default();
        Err(format!(
            "PutObjectRetention answered {status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(500)])
        ))
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
