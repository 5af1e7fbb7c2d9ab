//! Where an object replica lives: an object store and a prefix, opened from the
//! target's URL. The manifest's reads and writes are in `head.rs`.
use crate::config::ObjectOptions;
use crate::error::{Error, Result};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::sync::Arc;

/// An object store and the prefix a target lives under.
#[derive(Clone)]
pub struct Bucket {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    /// For a local directory: its path. object_store does not fsync local files, so
    /// the exporter does before it counts an object as written.
    pub local: Option<std::path::PathBuf>,
    /// For messages: the URL as the user wrote it.
    pub url: String,
}

impl Bucket {
    /// Opens `url`: `s3://bucket/prefix` (credentials and region from the standard AWS
    /// environment variables unless the target says otherwise), `file:///dir` or a
    /// plain directory (created if missing).
    pub fn open(url: &str, o: &ObjectOptions) -> Result<Bucket> {
        let bad = |why: String| Error::InvalidArgument(format!("object store `{url}`: {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket".into()));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(e) = o
                .endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            {
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            if let Some(r) = &o.region {
                b = b.with_region(r);
            }
            if o.allow_http {
                b = b.with_allow_http(true);
            }
            if let (Some(k), Some(s)) = (&o.access_key_id, &o.secret_access_key) {
                b = b
                    .with_access_key_id(k.expose())
                    .with_secret_access_key(s.expose());
            }
            let store = Arc::new(b.build().map_err(|e| bad(e.to_string()))?);
            return Ok(Bucket {
                store,
                prefix: ObjectPath::from(prefix),
                local: None,
                url: url.to_string(),
            });
        }
        if let Some((scheme, _)) = url.split_once("://").filter(|(s, _)| *s != "file") {
            return Err(bad(format!("`{scheme}://` is not supported; use s3://bucket/prefix, file:///dir or a directory")));
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create object directory", dir))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Bucket {
            store: Arc::new(local),
            prefix: ObjectPath::from(""),
            local: Some(dir.into()),
            url: url.to_string(),
        })
    }

    /// Any `object_store` implementation (the conformance suite uses the in-memory one).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Bucket {
        Bucket {
            store,
            prefix: ObjectPath::from(prefix),
            local: None,
            url: url.to_string(),
        }
    }

    /// Makes a written object durable where the store itself does not: a local file
    /// and its directory are fsynced. Remote stores acknowledge only durable writes.
    pub fn sync(&self, name: &str) -> Result<()> {
        let Some(root) = &self.local else {
            return Ok(());
        };
        let path = root.join(self.key(name).as_ref());
        crate::fsutil::sync_path(&path)?;
        crate::fsutil::sync_dir(path.parent().unwrap_or(root))
    }

    pub fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    pub fn err(&self, what: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { path, .. } => {
                Error::NotFound(format!("{}: {what}: no object {path}", self.url))
            }
            e => Error::ObjectStore {
                url: self.url.clone(),
                what: what.to_string(),
                reason: e.to_string(),
            },
        }
    }
}

/// The library is synchronous; object_store is async. Each user of a bucket drives it
/// from a small runtime of its own.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            what: "cannot start the object store runtime",
            path: std::path::PathBuf::new(),
            cause: e,
        })
}
