//! The grid's shared secret: the first line of a file only its owner can read. It
//! proves a peer is of the grid (`wire::proof`); it is never logged, printed or sent.
use crate::error::{Error, Result};
use std::path::Path;

/// Fewer bytes than this are guessable: a secret is meant to be generated
/// (`head -c 32 /dev/urandom | base64`), not typed.
const MIN_LEN: usize = 16;

pub struct GridSecret(Vec<u8>);

impl GridSecret {
    /// Reads `path`, refusing a file that others can read or write: anyone who can
    /// read the secret can hold every stream's writers and place bookmarks.
    pub fn load(path: &Path) -> Result<GridSecret> {
        let bad = |reason: String| Error::Config {
            file: path.to_path_buf(),
            reason,
        };
        let line = crate::secret::private_line(path, "the grid secret").map_err(bad)?;
        if line.len() < MIN_LEN {
            return Err(bad(format!(
                "the grid secret's first line has {} bytes; it needs at least {MIN_LEN} (generate one: head -c 32 /dev/urandom | base64)",
                line.len()
            )));
        }
        Ok(GridSecret(line.into_bytes()))
    }

    pub fn from_bytes(b: &[u8]) -> GridSecret {
        GridSecret(b.to_vec())
    }

    pub(super) fn key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0)
    }
}

impl std::fmt::Debug for GridSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<grid secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_others_can_read_or_a_short_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, "0123456789abcdef0123\nignored\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = GridSecret::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("readable or writable by others") && !e.contains("0123456789"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(GridSecret::load(&p).unwrap().0, b"0123456789abcdef0123");
        std::fs::write(&p, "short\n").unwrap();
        let e = GridSecret::load(&p).unwrap_err().to_string();
        assert!(e.contains("at least 16") && !e.contains("short"), "{e}");
    }
}
