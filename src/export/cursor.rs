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

/// A cursor kept in a local file: the newest delta a target holds durably.
pub struct FileCursor {
    path: std::path::PathBuf,
}

impl FileCursor {
    pub fn new(path: std::path::PathBuf) -> FileCursor {
        FileCursor { path }
    }

    pub fn get(&self) -> Result<u64> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::InvalidArgument(format!(
                    "cursor file {} is damaged: `{}`",
                    self.path.display(),
                    s.trim()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("cannot read cursor", &self.path)(e)),
        }
    }

    pub fn set(&self, delta: u64) -> Result<()> {
        write_atomic(&self.path, format!("{delta}\n").as_bytes())
    }
}
