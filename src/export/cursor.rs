//! A local target's cursor: a small file replaced atomically (see
//! [`crate::fsutil::write_atomic`]), so a crash leaves the old or the new, never a mix.
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use std::path::Path;

/// What a local target holds: the newest delta applied durably, the journal it came
/// from, and which files received it, so a cursor is never trusted for a replica it
/// does not describe.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CursorState {
    pub delta: u64,
    /// A delta being written over the replica in place: until it is done the replica
    /// is neither at `delta` nor at this one, and says so. Written (durably) before
    /// the first byte of the delta, cleared with the advance of `delta`; an export
    /// that finds it set applies that delta again (deltas are absolute bytes, so the
    /// second application gives exactly that delta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applying: Option<u64>,
    pub journal: Option<String>,
    /// Volume id → identity of the file or device written ([`crate::fsutil::file_identity`]:
    /// a device by what it is, so the cursor survives its node being recreated at boot).
    pub replicas: std::collections::BTreeMap<String, String>,
    /// A live replica (one with undo): the epoch its undo journal's files carry.
    /// A new epoch makes every older file stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_epoch: Option<u64>,
    /// Where `cascade rewind` left the replica, when not at `delta`: exports wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// The last time the undo journal was dropped (it could not be written, or was
    /// damaged), and why: the window cannot reach before that delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_lost: Option<UndoLost>,
}

/// A live replica rewound: the point it holds, and, while a rewind or roll-forward
/// runs (or after a crash cut it short), the point it is moving to. Each path
/// writes absolute bytes, so running the path from `at` to `moving_to` again ends
/// exactly at `moving_to` whatever part of it ran before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub at: crate::journal::Until,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<crate::journal::Until>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UndoLost {
    pub delta: u64,
    pub reason: String,
}

/// A cursor kept in a local file.
pub struct FileCursor {
    path: std::path::PathBuf,
}

impl FileCursor {
    pub fn new(path: std::path::PathBuf) -> FileCursor {
        FileCursor { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self) -> Result<CursorState> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::InvalidArgument(format!(
                    "cursor file {} is damaged: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CursorState::default()),
            Err(e) => Err(Error::io("cannot read cursor", &self.path)(e)),
        }
    }

    pub fn set(&self, state: &CursorState) -> Result<()> {
        write_atomic(
            &self.path,
            &serde_json::to_vec_pretty(state).expect("cursor serialises"),
        )
    }
}
