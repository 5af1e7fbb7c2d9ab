//! Where an object replica lives: an object store and a prefix, opened from the
//! target's URL, and for an encrypted replica the secret that opens its data key.
//! The manifest's reads and writes are in `head.rs`; sealed objects in `seal.rs`.
use super::keys::UserSecret;
use super::seal::{self, DataKey};
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
    /// An encrypted replica's secret, and the data key once it is unlocked (lazily:
    /// opening a bucket does no I/O).
    crypt: Option<Arc<Crypt>>,
    /// What the deltas and full images are uploaded with (an S3 storage class).
    pub(super) data_attributes: object_store::Attributes,
    /// S3 Object Lock of the deltas and full images.
    pub(super) lock: Option<Arc<super::lock::Lock>>,
}

struct Crypt {
    secret: UserSecret,
    /// The data key and the id of the slot that opened it.
    opened: tokio::sync::OnceCell<(DataKey, String)>,
}

impl Bucket {
    /// Opens `url`: `s3://bucket/prefix` (credentials and region from the standard AWS
    /// environment variables unless the target says otherwise), `gs://bucket/prefix`
    /// (Google Cloud Storage), `az://container/prefix` (Azure Blob Storage),
    /// `file:///dir` or a plain directory (created if missing).
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
            return Bucket::open_s3(url, bucket, prefix, b, o);
        }
        if let Some(rest) = url.strip_prefix("az://") {
            return Bucket::open_azure(url, rest, o);
        }
        if let Some(rest) = url.strip_prefix("gs://") {
            return Bucket::open_gcs(url, rest, o);
        }
        if let Some((scheme, _)) = url.split_once("://").filter(|(s, _)| *s != "file") {
            return Err(bad(format!("`{scheme}://` is not supported; use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///dir or a directory")));
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create object directory", dir))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(e.to_string()))?;
        Bucket {
            local: Some(dir.into()),
            ..Bucket::from_store(Arc::new(local), "", url)
        }
        .with_key(o)
    }

    /// An S3 bucket from builder `b`, with what the target asks of the store itself:
    /// server-side encryption (every request), the data objects' storage class, and
    /// Object Lock (`lock.rs`).
    fn open_s3(
        url: &str,
        bucket: &str,
        prefix: &str,
        mut b: object_store::aws::AmazonS3Builder,
        o: &ObjectOptions,
    ) -> Result<Bucket> {
        use crate::config::Sse;
        use object_store::aws::AmazonS3ConfigKey as Key;
        let bad = |why: String| Error::InvalidArgument(format!("object store `{url}`: {why}"));
        let sse: Key = "aws_server_side_encryption"
            .parse()
            .expect("a key object_store names");
        b = match (o.s3.sse, &o.s3.kms_key_id) {
            (Some(Sse::Kms), Some(id)) => b.with_sse_kms_encryption(id),
            (Some(Sse::Kms), None) => b.with_config(sse, "aws:kms"),
            (Some(Sse::S3), _) => b.with_config(sse, "AES256"),
            (None, _) => b,
        };
        if o.s3.lock.is_some() {
            // Object Lock wants every upload checksummed (S3 refuses one without).
            b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
        }
        let region = b
            .get_config_value(&Key::Region)
            .unwrap_or_else(|| "us-east-1".into());
        // The bucket's URL as object_store forms it (aws/builder.rs), so the lock
        // goes where the upload went.
        let virtual_hosted = b
            .get_config_value(&Key::VirtualHostedStyleRequest)
            .as_deref()
            == Some("true");
        let base = match (b.get_config_value(&Key::Endpoint), virtual_hosted) {
            (Some(e), true) => e,
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let allow_http = b
            .get_config_value(&Key::Client(object_store::ClientConfigKey::AllowHttp))
            .is_some_and(|v| v == "true");
        let s3 = Arc::new(b.build().map_err(|e| bad(e.to_string()))?);
        let mut opened = Bucket::from_store(s3.clone(), prefix, url);
        if let Some(class) = &o.s3.storage_class {
            opened
                .data_attributes
                .insert(object_store::Attribute::StorageClass, class.clone().into());
        }
        if let Some(l) = &o.s3.lock {
            let lock = super::lock::Lock::new(l, s3, base, region, allow_http)
                .map_err(|e| bad(format!("object-lock: {e}")))?;
            opened.lock = Some(Arc::new(lock));
        }
        opened.with_key(o)
    }

    /// Locks object `path`, just written (as `version`), if the replica is locked.
    pub(super) async fn lock_written(
        &self,
        path: &ObjectPath,
        version: Option<&str>,
    ) -> Result<()> {
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        lock.apply(path, version)
            .await
            .map_err(|reason| Error::ObjectStore {
                url: self.url.clone(),
                what: format!("cannot lock {path}"),
                reason,
            })
    }

    /// When an object written at `written_ns` may be deleted: None if the replica
    /// locks nothing.
    pub fn lock_until(&self, written_ns: i64) -> Option<i64> {
        self.lock.as_ref().map(|l| l.until(written_ns))
    }

    /// `az://container/prefix`: Azure Blob Storage, the account and its credentials from
    /// the standard environment variables (AZURE_STORAGE_ACCOUNT_NAME,
    /// AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY, a service principal's
    /// AZURE_CLIENT_ID…, or a managed identity), `endpoint` for an emulator such as
    /// Azurite (`http://127.0.0.1:10000/devstoreaccount1`). The container is the
    /// URL's host, parsed here: object_store's own parsing of `az://` takes the first
    /// path segment for the container instead.
    fn open_azure(url: &str, rest: &str, o: &ObjectOptions) -> Result<Bucket> {
        let bad = |why: String| Error::InvalidArgument(format!("object store `{url}`: {why}"));
        let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if container.is_empty() {
            return Err(bad("no container".into()));
        }
        if o.access_key_id.is_some() || o.region.is_some() {
            return Err(bad(
                "access-key-id, secret-access-key and region are S3's; an az:// target takes its account and credentials from AZURE_STORAGE_* environment variables".into(),
            ));
        }
        let mut b =
            object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(container);
        if let Some(e) = &o.endpoint {
            b = b.with_endpoint(e.clone());
        }
        if o.allow_http {
            b = b.with_allow_http(true);
        }
        let store = Arc::new(b.build().map_err(|e| bad(e.to_string()))?);
        Bucket::from_store(store, prefix.trim_end_matches('/'), url).with_key(o)
    }

    /// `gs://bucket/prefix`: Google Cloud Storage, credentials from the standard
    /// environment (GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT naming a
    /// service account file, or the machine's own account). An emulator is reached the
    /// way object_store reaches one: its address is the service account file's
    /// `gcs_base_url` (with `"disable_oauth": true`), so a gs:// target takes no
    /// `endpoint`.
    fn open_gcs(url: &str, rest: &str, o: &ObjectOptions) -> Result<Bucket> {
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
        let bad = |why: String| Error::InvalidArgument(format!("object store `{url}`: {why}"));
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket".into()));
        }
        if o.access_key_id.is_some() || o.region.is_some() || o.endpoint.is_some() {
            return Err(bad(
                "endpoint, region, access-key-id and secret-access-key are S3's; a gs:// target takes its credentials from GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT (an emulator's address is its service account file's gcs_base_url)".into(),
            ));
        }
        let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
        if o.allow_http {
            b = b.with_config(
                GoogleConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                "true",
            );
        }
        let store = Arc::new(b.build().map_err(|e| bad(e.to_string()))?);
        Bucket::from_store(store, prefix.trim_end_matches('/'), url).with_key(o)
    }

    /// The bucket with the secret of `o.key` (read now, so a missing or exposed key
    /// file is refused before anything is done), if it names one.
    fn with_key(self, o: &ObjectOptions) -> Result<Bucket> {
        match &o.key {
            None => Ok(self),
            Some(src) => {
                let secret = UserSecret::load(src).map_err(|r| self.key_error(r))?;
                Ok(self.with_secret(secret))
            }
        }
    }

    /// The bucket reading and writing its objects encrypted, opened by `secret`.
    pub fn with_secret(mut self, secret: UserSecret) -> Bucket {
        self.crypt = Some(Arc::new(Crypt {
            secret,
            opened: tokio::sync::OnceCell::new(),
        }));
        self
    }

    pub fn encrypted(&self) -> bool {
        self.crypt.is_some()
    }

    /// The data key and the slot that opened it; `create` makes a fresh replica
    /// encrypted if nothing is there yet. None: the bucket is not encrypted.
    pub(super) async fn data_key(&self, create: bool) -> Result<Option<&DataKey>> {
        let Some(c) = &self.crypt else {
            return Ok(None);
        };
        let (key, _) = c
            .opened
            .get_or_try_init(|| async {
                if create && self.encryption_info().await?.is_none() {
                    self.create_encryption(&c.secret).await
                } else {
                    self.unlock(&c.secret).await
                }
            })
            .await?;
        Ok(Some(key))
    }

    /// The data key once unlocked (the manifest is always read first).
    pub(super) fn unlocked(&self) -> Option<&DataKey> {
        self.crypt.as_ref()?.opened.get().map(|(k, _)| k)
    }

    /// The data key of an encrypted bucket and the slot that opened it.
    pub(super) async fn opened(&self) -> Result<(&DataKey, &str)> {
        let Some(c) = &self.crypt else {
            return Err(self.key_error(
                "no secret given (a target's `encryption:`, or --key-file / --key-env)".into(),
            ));
        };
        self.data_key(false).await?;
        let (k, slot) = c.opened.get().expect("unlocked above");
        Ok((k, slot))
    }

    /// How many bytes object `d` of `plain` plaintext bytes takes in the store.
    pub fn stored_size(&self, plain: u64) -> u64 {
        if self.encrypted() {
            seal::sealed_size(plain)
        } else {
            plain
        }
    }

    /// What to store as object `name` holding `plain`: sealed if the bucket encrypts.
    pub(super) async fn seal_bytes(&self, name: &str, plain: Vec<u8>) -> Result<Vec<u8>> {
        match self.data_key(true).await? {
            Some(k) => Ok(seal::seal(k, name, &plain)),
            None => Ok(plain),
        }
    }

    /// The plaintext of object `name` as stored: opened if the bucket encrypts. A
    /// sealed object read without a secret, or a plain one read with one, is refused:
    /// the target and the replica disagree about encryption.
    pub(super) async fn open_bytes(&self, name: &str, stored: Vec<u8>) -> Result<Vec<u8>> {
        let sealed = stored.starts_with(seal::MAGIC);
        match (self.encrypted(), sealed) {
            (false, false) => Ok(stored),
            (false, true) => Err(self.key_error(format!(
                "{name} is encrypted: give the replica's secret (a target's `encryption:`, or --key-file / --key-env)"
            ))),
            (true, false) => Err(self.key_error(format!(
                "{name} is not encrypted, but a secret was given: the replica was written without encryption (encryption cannot be turned on for an existing replica; give the target a new prefix)"
            ))),
            (true, true) => {
                let k = self.data_key(false).await?.expect("encrypted");
                seal::open(k, name, stored).map_err(|r| Error::CorruptObject {
                    url: self.url.clone(),
                    object: self.key(name).to_string(),
                    delta: None,
                    offset: 0,
                    reason: r.0,
                })
            }
        }
    }

    /// Any `object_store` implementation (the conformance suite uses the in-memory one).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Bucket {
        Bucket {
            store,
            prefix: ObjectPath::from(prefix),
            local: None,
            url: url.to_string(),
            crypt: None,
            data_attributes: object_store::Attributes::new(),
            lock: None,
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
