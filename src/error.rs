//! The library's error type. Each variant names the thing an operator has to look at
//! (a file, a field, a segment and offset, a command line); the binary maps variants
//! to exit codes in one place.
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config file that cannot be read, parsed or validated.
    #[error("config {file}: {reason}")]
    Config { file: PathBuf, reason: String },

    /// An I/O failure, with what was being done to which path.
    // The cause is part of the message and deliberately not a `source()`, so it is
    // printed once, not again by the error chain.
    #[error("{what} {path}: {cause}")]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },

    /// Bytes in a journal that fail a checksum or break the format's grammar.
    #[error("journal {journal}: corrupt at segment {segment} offset {offset}: {reason}")]
    Corrupt {
        journal: PathBuf,
        segment: u64,
        offset: u64,
        reason: String,
    },

    /// An object of an object replica that fails a check (its size or CRC-32C against
    /// the manifest, a record's checksum or the format's grammar), or a manifest that
    /// does not parse. Named by object key and delta: an object store has no segments.
    #[error("object store {url}: {object}{} is corrupt: {reason}", .delta.map_or(String::new(), |d| format!(" (delta {d}, offset {offset})")))]
    CorruptObject {
        url: String,
        object: String,
        delta: Option<u64>,
        offset: u64,
        reason: String,
    },

    /// A delta (`delta` is its id) or a bookmark that is committed, durable in the
    /// segments, but whose index entry could not be written. Unlike any other error
    /// of a commit, the delta or bookmark *is* in the journal: the writer keeps the
    /// entry in memory and the next open of the journal rebuilds the index.
    #[error("journal {journal}: {what} is committed and durable, but its index entry could not be written ({reason}); the next open of the journal rebuilds the index")]
    Unindexed {
        journal: PathBuf,
        delta: Option<u64>,
        what: String,
        reason: String,
    },

    /// An undo journal's file (a live replica's) that fails a check: a map that does
    /// not decode, a blob that fails its checksum or does not decompress.
    #[error("undo journal {file}: {reason}")]
    CorruptUndo { file: PathBuf, reason: String },

    /// A journal written by a newer (or unknown) format version.
    #[error("journal {journal}: segment {segment} has format version {version}; this cascade reads versions 1 and 2")]
    UnsupportedVersion {
        journal: PathBuf,
        segment: u64,
        version: u32,
    },

    /// Something the user named does not exist (a CG, a volume, a delta, a bookmark).
    #[error("{0}")]
    NotFound(String),

    /// A name that would collide with an existing one (a bookmark name).
    #[error("{0}")]
    AlreadyExists(String),

    /// An argument that is malformed or contradicts the journal.
    #[error("{0}")]
    InvalidArgument(String),

    /// A replay or export target smaller than the volume it must hold.
    #[error("target {target} is {actual} bytes but volume {volume} needs {needed} bytes; nothing was written")]
    TargetTooSmall {
        target: PathBuf,
        volume: String,
        actual: u64,
        needed: u64,
    },

    /// Another process holds the lock (a journal writer, a daemon).
    #[error("{path} is locked by another cascade process")]
    Locked { path: PathBuf },

    /// A daemon already runs on this state directory.
    #[error("a cascade daemon{} already runs on state directory {}; one daemon serves a state directory (stop it, or use another state-dir)", .pid.map_or(String::new(), |p| format!(" (pid {p})")), .state_dir.display())]
    DaemonRunning {
        state_dir: PathBuf,
        pid: Option<u32>,
    },

    /// Work stopped on request (the daemon stopping) before it finished; what it
    /// had begun was not kept.
    #[error("{0}: stopped on request before it finished; nothing of it was kept")]
    Stopped(String),

    /// A grid bookmark that not every stream recorded: never offered for recovery.
    #[error("{0}")]
    Incomplete(String),

    /// A grid peer that could not be reached, that failed to prove it knows the
    /// grid's secret, or that refused what it was asked.
    #[error("grid peer {peer}: {reason}")]
    Peer { peer: String, reason: String },

    /// An object store request that failed (network, credentials, server).
    #[error("object store {url}: {what}: {reason}")]
    ObjectStore {
        url: String,
        what: String,
        reason: String,
    },

    /// Another exporter wrote an object replica's manifest since this one read it:
    /// two writers on one prefix would overwrite each other and prune each other's
    /// objects, so the later one stops. Named by what the manifest says of its writer.
    #[error("object store {url}: the manifest was written meanwhile by another exporter, {writer}; this export stopped and deleted nothing (one exporter per replica: give each its own prefix)")]
    OtherWriter { url: String, writer: String },

    /// An encrypted replica cannot be opened with the secret given (none, a wrong one,
    /// one of a removed slot), or a key operation is refused. Nothing was read or
    /// written. The reason never quotes the secret.
    #[error("encrypted replica {url}: {reason}")]
    Key { url: String, reason: String },

    /// An external command (a hook, an lvm2 tool) that ran past its time limit; it
    /// was killed with every process it started.
    #[error("command `{command}` did not finish within {timeout:?} and was killed")]
    CommandTimeout {
        command: String,
        timeout: std::time::Duration,
    },

    /// A group stayed frozen longer than its `hooks.max-freeze`: the cycle was
    /// abandoned (it keeps nothing) and the group thawed.
    #[error("consistency group `{cg}` stayed frozen past hooks.max-freeze ({limit:?}): the cycle was abandoned, kept nothing, and the group was thawed")]
    FrozenTooLong {
        cg: String,
        limit: std::time::Duration,
    },

    /// An external command (a hook, an lvm2 tool) that failed.
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |cause| Error::Io { what, path, cause }
    }
}
