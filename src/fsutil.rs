//! Durable file-system steps, each written once: a file replaced atomically, a
//! rename made durable, a directory's entries made durable, a scratch directory that
//! removes itself, and what makes two paths the same file. A rename or a create is
//! durable only once its directory is fsynced; a file's bytes only once the file is.
//! These steps exist here once; the callers decide which of their files need them.
use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_path(dir)
}

/// Makes a file's bytes, or a directory's entries, durable.
pub fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("cannot sync", path))
}

/// Creates `dir` and any missing parents, and makes each new entry durable (its
/// parent fsynced), so a crash after the call cannot lose the directory that files
/// were then made durable in.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    create_dir_durable(parent)?;
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::io("cannot create directory", dir)(e))
        }
        _ => {}
    }
    sync_dir(parent)
}

/// The directory a path's entry lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Renames `from` to `to` and makes the rename durable; the caller has made `from`'s
/// bytes durable first, so a crash leaves the old `to` or the whole new one.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(Error::io("cannot rename into place", to))?;
    sync_dir(parent_dir(to))
}

/// Replaces `path` with `bytes` atomically: a temp file beside it, fsynced, renamed
/// over it, and the directory fsynced. A crash leaves the old or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = File::create(&tmp).map_err(Error::io("cannot write", &tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(Error::io("cannot write", &tmp))?;
    rename_durable(&tmp, path)
}

/// A scratch directory under a work directory, removed (with what it holds) when
/// dropped, so an error part way leaves nothing behind.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `WORK/cascade-WHAT-PID-TIME`: unique per process and call.
    pub fn create(work: &Path, what: &str) -> Result<Scratch> {
        let dir = work.join(format!(
            "cascade-{what}-{}-{}",
            std::process::id(),
            crate::clock::now_ns()
        ));
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create scratch space", &dir))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What makes two paths the same file or device, now and after a reboot. A block
/// device is named by what it is ([`crate::sys::stable_id`]: a loop device's backing
/// file, a device-mapper uuid, a disk's wwid), because its node is recreated at
/// every boot; a file by [`node_identity`]; a missing path by its absolute path.
pub fn file_identity(p: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match std::fs::metadata(p) {
        Ok(m) if m.file_type().is_block_device() => format!(
            "block {}",
            crate::sys::stable_id(libc::major(m.rdev()), libc::minor(m.rdev()))
        ),
        _ => node_identity(p),
    }
}

/// The inode a path names: device, inode and birth time when it exists (an inode
/// number alone is reused as soon as a file is deleted), else the absolute path.
/// For a block device this names only its node; cursors written before
/// [`file_identity`] knew devices hold it.
pub fn node_identity(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => {
            let born = crate::sys::birth_ns(&m);
            format!("inode {}:{} born {born}", m.dev(), m.ino())
        }
        Err(_) => std::path::absolute(p)
            .map_or_else(|_| p.display().to_string(), |a| a.display().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cursor.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cursor.json"]);
    }

    #[test]
    fn scratch_removes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::create(dir.path(), "t").unwrap();
        std::fs::write(s.0.join("f"), b"x").unwrap();
        let path = s.0.clone();
        drop(s);
        assert!(!path.exists());
    }
}
