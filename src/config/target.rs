//! Replica targets: one YAML file per target in the targets directory
//! (`cascade-targets/` beside the config unless the config says otherwise), named
//! after the file. Parsing is strict for the same reason as the config's.
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// An object target has many more settings than a block one; specs are loaded once
// per run, so the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    tag = "kind"
)]
pub enum TargetSpec {
    /// A physical replica: each volume is kept current on a block device or image file.
    Block {
        /// Volume id → device or image file. The path must exist and be large enough.
        volumes: BTreeMap<String, PathBuf>,
        /// Keeps the replica **live** with undo data, so it can be rewound to, or
        /// served as it was at, any point of a window (`cascade rewind`,
        /// `cascade serve --at`). Without it the replica only moves forward.
        #[serde(default)]
        undo: Option<UndoConfig>,
    },
    /// A virtual replica in object storage: `s3://bucket/prefix`, `gs://bucket/prefix`
    /// (Google Cloud Storage), `az://container/prefix` (Azure Blob Storage),
    /// `file:///dir`, or a plain directory path.
    Object {
        url: String,
        /// An S3-compatible endpoint (MinIO, Ceph RGW, a test server), AWS otherwise; of
        /// an az:// target, the Blob service's (an emulator's), Azure's otherwise.
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        region: Option<String>,
        /// Allow plain HTTP to the endpoint (test servers on loopback).
        #[serde(default)]
        allow_http: bool,
        /// Credentials, if not from the standard AWS environment variables
        /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Never logged or printed.
        #[serde(default)]
        access_key_id: Option<Secret>,
        #[serde(default)]
        secret_access_key: Option<Secret>,
        /// After this many delta objects past the newest full image (a run of split
        /// deltas is one), the export builds a synthetic full at the cursor, so a
        /// restore downloads at most this many objects after one full. 0 turns
        /// synthetic fulls off.
        #[serde(default = "default_synthetic_full_every")]
        synthetic_full_every: u64,
        /// Which restore points the replica keeps; objects no kept point needs are
        /// deleted. Without a policy everything is kept.
        #[serde(default)]
        retention: super::Retention,
        /// A split group's deltas (one per `commit-every`) are uploaded in runs, each
        /// run one object, once its oldest delta is this old (or the run reaches
        /// 256 MiB, or a bookmark or the stream's end closes it). Default 30s; a
        /// shorter one keeps the replica closer, in more objects. `cascade export`
        /// uploads every run at once.
        #[serde(default)]
        batch: Option<super::Age>,
        /// Every object encrypted and authenticated on the client under a key only the
        /// holders of a secret can unwrap (docs/encryption.md): `key-file: PATH` (its
        /// first line, the file readable by its owner alone) or `key-env: VAR`.
        #[serde(default)]
        encryption: Option<EncryptionConfig>,
        /// S3 server-side encryption of every object (beside `encryption:`, or where
        /// a policy asks for it): `AES256` (SSE-S3) or `aws:kms` (SSE-KMS, under
        /// `kms-key-id`, else the bucket's default key). s3:// only.
        #[serde(default)]
        server_side_encryption: Option<Sse>,
        #[serde(default)]
        kms_key_id: Option<String>,
        /// The S3 storage class of the deltas and full images (`STANDARD_IA`,
        /// `GLACIER_IR`, ...); the manifest and key slots, read and rewritten at every
        /// export, stay `STANDARD`. Classes a restore cannot read at once (`GLACIER`,
        /// `DEEP_ARCHIVE`) are refused. s3:// only.
        #[serde(default)]
        storage_class: Option<String>,
        /// S3 Object Lock: each delta and full image is locked once uploaded, in
        /// `mode` (`governance` or `compliance`) for `retain` (`30d`); the bucket
        /// must have Object Lock enabled. Retention never deletes an object still
        /// locked: it says when it will be deletable. s3:// only.
        #[serde(default)]
        object_lock: Option<ObjectLockConfig>,
    },
}

/// `server-side-encryption:` of an S3 target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Sse {
    #[serde(rename = "AES256")]
    S3,
    #[serde(rename = "aws:kms")]
    Kms,
}

/// `object-lock:` of an S3 target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectLockConfig {
    pub mode: LockMode,
    pub retain: super::Age,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    Governance,
    Compliance,
}

/// What an S3 target asks of the store itself: server-side encryption, the data
/// objects' storage class, Object Lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Policy {
    pub sse: Option<Sse>,
    pub kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub lock: Option<ObjectLockConfig>,
}

/// The storage classes a restore can read at once.
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
];

/// `encryption:` of an object target: where its secret is; exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EncryptionConfig {
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub key_env: Option<String>,
}

/// Where an encrypted replica's secret comes from: read when the replica is opened,
/// never kept in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

impl EncryptionConfig {
    fn source(&self) -> std::result::Result<KeySource, String> {
        match (&self.key_file, &self.key_env) {
            (Some(f), None) => Ok(KeySource::File(f.clone())),
            (None, Some(v)) if !v.is_empty() => Ok(KeySource::Env(v.clone())),
            (None, Some(_)) => Err("encryption.key-env: name an environment variable".into()),
            _ => Err("encryption: give key-file or key-env (one of them)".into()),
        }
    }
}

/// Where a live block replica keeps its undo journal, and how far back it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UndoConfig {
    /// A directory of its own (created if missing), not on the replica's device.
    pub dir: PathBuf,
    /// The undo journal's bound in bytes (`8GiB`): the oldest entries retire past it.
    #[serde(default)]
    pub max_bytes: Option<super::Size>,
    /// Entries retire once the window would still reach this far back (`7d`).
    #[serde(default)]
    pub max_age: Option<super::Age>,
}

/// How long split deltas wait to be uploaded together when a target says nothing.
pub const DEFAULT_BATCH: std::time::Duration = std::time::Duration::from_secs(30);

fn default_synthetic_full_every() -> u64 {
    32
}

/// How an object replica's history is kept: synthetic fulls and retention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectPolicy {
    pub synthetic_full_every: u64,
    pub retention: super::Retention,
    /// How old a run of split deltas gets before it is uploaded as one object.
    pub batch: std::time::Duration,
}

/// A credential: usable, but its Debug never shows it. YAML reads some unquoted keys
/// as numbers or booleans (`0x1f` as 31, `+7` as 7, `1e3`, `true`), and the text
/// written is lost by then: such a key is refused with a message to quote it, never
/// taken as a different string. The messages never repeat the value.
#[derive(Clone)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Secret, D::Error> {
        struct V;
        fn unquoted<E: serde::de::Error>(what: &str) -> E {
            E::custom(format!(
                "a credential that YAML reads as {what} cannot keep the text it was \
                 written as; quote it (secret-access-key: \"...\")"
            ))
        }
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a credential string (quoted)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<Secret, E> {
                Err(unquoted("a number"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<Secret, E> {
                Err(unquoted("a number"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<Secret, E> {
                Err(unquoted("a number"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<Secret, E> {
                Err(unquoted("a boolean"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl TargetSpec {
    /// How to reach an object target.
    pub fn object_options(&self) -> Option<(&str, ObjectOptions)> {
        match self {
            TargetSpec::Object {
                url,
                endpoint,
                region,
                allow_http,
                access_key_id,
                secret_access_key,
                encryption,
                server_side_encryption,
                kms_key_id,
                storage_class,
                object_lock,
                ..
            } => Some((
                url,
                ObjectOptions {
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    allow_http: *allow_http,
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    key: encryption
                        .as_ref()
                        .map(|e| e.source().expect("checked when the target was loaded")),
                    s3: S3Policy {
                        sse: *server_side_encryption,
                        kms_key_id: kms_key_id.clone(),
                        storage_class: storage_class.clone(),
                        lock: *object_lock,
                    },
                },
            )),
            TargetSpec::Block { .. } => None,
        }
    }
}

impl TargetSpec {
    /// How an object target keeps its history.
    pub fn object_policy(&self) -> Option<ObjectPolicy> {
        match self {
            TargetSpec::Object {
                synthetic_full_every,
                retention,
                batch,
                ..
            } => Some(ObjectPolicy {
                synthetic_full_every: *synthetic_full_every,
                retention: retention.clone(),
                batch: batch.map_or(DEFAULT_BATCH, |a| a.duration()),
            }),
            TargetSpec::Block { .. } => None,
        }
    }

    /// A live block target's undo settings.
    pub fn undo(&self) -> Option<&UndoConfig> {
        match self {
            TargetSpec::Block { undo, .. } => undo.as_ref(),
            TargetSpec::Object { .. } => None,
        }
    }
}

/// Connection settings for an object store beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct ObjectOptions {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// The secret of an encrypted replica; None: the replica is not encrypted.
    pub key: Option<KeySource>,
    /// What an s3:// target asks of the store itself.
    pub s3: S3Policy,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// The YAML file it came from, for error messages.
    pub file: PathBuf,
    pub spec: TargetSpec,
}

impl Target {
    /// Loads `DIR/NAME.yaml`; relative paths in it are taken from `DIR`.
    pub fn load(dir: &Path, name: &str) -> Result<Target> {
        let file = dir.join(format!("{name}.yaml"));
        let err = |reason: String| Error::Config {
            file: file.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| err(format!("cannot read target `{name}`: {e}")))?;
        let mut spec: TargetSpec = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
        match &mut spec {
            TargetSpec::Block { volumes, undo } => {
                if volumes.is_empty() {
                    return Err(err(
                        "volumes: a block target needs a device or image file per volume".into(),
                    ));
                }
                for path in volumes.values_mut() {
                    *path = dir.join(&*path);
                }
                if let Some(u) = undo {
                    if u.max_bytes.is_none() && u.max_age.is_none() {
                        return Err(err(
                            "undo: give max-bytes, max-age or both: an unbounded undo journal fills its disk".into(),
                        ));
                    }
                    if u.max_bytes.is_some_and(|b| b.0 == 0) {
                        return Err(err("undo.max-bytes: must be more than 0".into()));
                    }
                    u.dir = dir.join(&u.dir);
                    if let Some((id, _)) = volumes.iter().find(|(_, p)| p.starts_with(&u.dir)) {
                        return Err(err(format!(
                            "undo.dir: {} holds the replica of volume `{id}`; give the undo journal a directory of its own",
                            u.dir.display()
                        )));
                    }
                }
            }
            TargetSpec::Object {
                url,
                access_key_id,
                secret_access_key,
                retention,
                synthetic_full_every,
                encryption,
                server_side_encryption,
                kms_key_id,
                storage_class,
                object_lock,
                ..
            } => {
                retention.check("retention").map_err(err)?;
                let s3_only = [
                    ("server-side-encryption", server_side_encryption.is_some()),
                    ("kms-key-id", kms_key_id.is_some()),
                    ("storage-class", storage_class.is_some()),
                    ("object-lock", object_lock.is_some()),
                ];
                if let Some((field, _)) = s3_only.iter().find(|(_, set)| *set) {
                    if !url.starts_with("s3://") {
                        return Err(err(format!("{field}: only an s3:// target has it")));
                    }
                }
                if kms_key_id.is_some() && *server_side_encryption != Some(Sse::Kms) {
                    return Err(err(
                        "kms-key-id: goes with server-side-encryption: aws:kms".into()
                    ));
                }
                if let Some(c) = storage_class {
                    if !STORAGE_CLASSES.contains(&c.as_str()) {
                        return Err(err(format!(
                            "storage-class: `{c}` is not one a restore can read at once; give one of {}",
                            STORAGE_CLASSES.join(", ")
                        )));
                    }
                }
                if let Some(e) = encryption {
                    e.source().map_err(err)?;
                    if let Some(f) = &mut e.key_file {
                        *f = dir.join(&*f);
                    }
                }
                if retention.prunes() && *synthetic_full_every == 0 {
                    tracing::warn!(target_file = %file.display(),
                        "retention without synthetic fulls (synthetic-full-every: 0) can delete only what lies before a full delta of the journal, which is rare");
                }
                if access_key_id.is_some() != secret_access_key.is_some() {
                    return Err(err("access-key-id and secret-access-key go together".into()));
                }
                if url.is_empty() {
                    return Err(err(
                        "url: give s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///dir or a directory".into(),
                    ));
                }
                if !url.contains("://") {
                    *url = dir.join(&*url).display().to_string();
                }
            }
        }
        Ok(Target {
            name: name.to_string(),
            file,
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s3.yaml"),
            "kind: object\nurl: s3://b/p\naccess-key-id: AKIAEXAMPLE\nsecret-access-key: hunter2\n",
        )
        .unwrap();
        let t = Target::load(dir.path(), "s3").unwrap();
        let shown = format!("{t:?} {:?}", t.spec.object_options());
        assert!(
            !shown.contains("hunter2") && !shown.contains("AKIAEXAMPLE"),
            "{shown}"
        );
        std::fs::write(
            dir.path().join("half.yaml"),
            "kind: object\nurl: s3://b/p\nsecret-access-key: hunter2\n",
        )
        .unwrap();
        let e = Target::load(dir.path(), "half").unwrap_err().to_string();
        assert!(
            e.contains("half.yaml") && e.contains("go together") && !e.contains("hunter2"),
            "{e}"
        );
    }

    /// A key that YAML reads as a number or a boolean is refused with a message to
    /// quote it, without repeating it; a key of digits it reads as text (`0123`), or
    /// a quoted one, keeps every character.
    #[test]
    fn secrets_keep_their_exact_text_or_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let load = |key: &str| {
            std::fs::write(
                dir.path().join("s3.yaml"),
                format!("kind: object\nurl: s3://b/p\naccess-key-id: AKIAEXAMPLE\nsecret-access-key: {key}\n"),
            )
            .unwrap();
            Target::load(dir.path(), "s3").map(|t| {
                let (_, options) = t.spec.object_options().unwrap();
                options.secret_access_key.unwrap().expose().to_string()
            })
        };
        for key in ["0x1f", "0o17", "+7", "123", "12e3", "1.50", "true", ".inf"] {
            let e = load(key).unwrap_err().to_string();
            assert!(
                e.contains("s3.yaml") && e.contains("quote it") && !e.contains(key),
                "{key}: {e}"
            );
        }
        assert_eq!(load("0123").unwrap(), "0123");
        assert_eq!(load("\"0x1f\"").unwrap(), "0x1f");
        assert_eq!(load("'+7'").unwrap(), "+7");
    }
}
