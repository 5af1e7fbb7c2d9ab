//! Secrets kept in files: the first line of a file only its owner can read or write
//! (the grid's shared secret, an encrypted replica's key), and the hex text random
//! bytes and digests are written as. Whoever can read such a file holds what it
//! guards, so a file others can reach is refused, and the messages never quote it.
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The first line of `path`, trimmed, if only its owner can read or write it; else
/// why not, naming it as `what` (the caller says where the path came from).
pub fn private_line(path: &Path, what: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{what} is readable or writable by others (mode {:o}): anyone who can read it \
             holds what it guards; `chmod 600` it",
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of hex text, if it is hex of exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_others_can_reach_is_refused_without_quoting_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, "  hush-hush-hush  \nignored\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = private_line(&p, "the key file").unwrap_err();
        assert!(
            e.contains("readable or writable by others (mode 640)"),
            "{e}"
        );
        assert!(!e.contains("hush"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(private_line(&p, "the key file").unwrap(), "hush-hush-hush");
    }

    #[test]
    fn hex_round_trips_and_refuses_other_lengths() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex::<3>("00ab10"), Some([0, 0xab, 0x10]));
        assert_eq!(unhex::<3>("00ab1"), None);
        assert_eq!(unhex::<2>("zz00"), None);
    }
}
