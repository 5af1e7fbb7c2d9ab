//! Small durable files: a cursor or a status, replaced atomically (temp file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new, never a mix.
use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(Error::io("cannot write", &tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(Error::io("cannot write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("cannot replace", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("cannot sync", dir))
}

/// What a local target holds: the newest delta applied durably, the journal it came
/// from, and which files received it, so a cursor is never trusted for a replica it
/// does not describe.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CursorState {
    pub delta: u64,
    pub journal: Option<String>,
    /// Volume id → identity of the file written (device and inode).
    pub replicas: std::collections::BTreeMap<String, String>,
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
