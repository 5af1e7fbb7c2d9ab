//! The journal's record of its repairs. `cascade journal repair` cuts a damaged
//! journal after a delta and gives it a new id; deltas after the cut will be written
//! again under the same numbers with other contents. The `cuts` file keeps, per repair,
//! the id the journal had and the last delta it kept, so a replica fed under an older
//! id is still accepted up to the cut and refused past it: it is never fed a different
//! delta under an id it already holds.
use crate::error::{Error, Result};
use std::path::Path;

pub(super) const CUTS_FILE: &str = "cuts";

/// One repair: under `id`, the journal's deltas up to `kept` are this journal's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cut {
    pub id: String,
    pub kept: u64,
}

/// The repairs of the journal in `dir`, oldest first; none when the file is missing.
pub(super) fn load(dir: &Path) -> Result<Vec<Cut>> {
    let path = dir.join(CUTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read journal cuts", path)(e)),
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let mut f = line.split(' ');
            match (f.next(), f.next().and_then(|k| k.parse().ok()), f.next()) {
                (Some(id), Some(kept), None) if !id.is_empty() => Ok(Cut {
                    id: id.to_string(),
                    kept,
                }),
                _ => Err(Error::Corrupt {
                    journal: dir.to_path_buf(),
                    segment: 0,
                    offset: 0,
                    reason: format!(
                        "{CUTS_FILE} line {}: `{line}` is not `ID LAST-KEPT-DELTA`",
                        i + 1
                    ),
                }),
            }
        })
        .collect()
}

/// Adds a repair durably (the whole file replaced atomically). A repair that a crash
/// interrupted before the journal got its new id is recorded once, not twice.
pub(super) fn record(dir: &Path, cuts: &[Cut], cut: Cut) -> Result<()> {
    let text: String = cuts
        .iter()
        .filter(|c| c.id != cut.id)
        .chain([&cut])
        .map(|c| format!("{} {}\n", c.id, c.kept))
        .collect();
    crate::fsutil::write_atomic(&dir.join(CUTS_FILE), text.as_bytes())
}

/// How far a replica fed under the journal id `fed_by` may hold this journal's
/// deltas: up to the lowest cut made since that id, or without bound for the
/// current id; `None` when the id is not this journal's at all.
pub(super) fn valid_up_to(cuts: &[Cut], current: &str, fed_by: &str) -> Option<u64> {
    if fed_by == current {
        return Some(u64::MAX);
    }
    let i = cuts.iter().position(|c| c.id == fed_by)?;
    cuts[i..].iter().map(|c| c.kept).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_valid_up_to_the_lowest_cut_since_its_id() {
        let cuts = [
            Cut {
                id: "a".into(),
                kept: 7,
            },
            Cut {
                id: "b".into(),
                kept: 5,
            },
        ];
        assert_eq!(valid_up_to(&cuts, "c", "c"), Some(u64::MAX));
        assert_eq!(valid_up_to(&cuts, "c", "b"), Some(5));
        assert_eq!(valid_up_to(&cuts, "c", "a"), Some(5));
        assert_eq!(valid_up_to(&cuts, "c", "x"), None);
    }

    #[test]
    fn cuts_read_back_and_a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let a = Cut {
            id: "a".into(),
            kept: 3,
        };
        record(dir.path(), &[], a.clone()).unwrap();
        record(dir.path(), std::slice::from_ref(&a), a.clone()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), [a]);
        std::fs::write(dir.path().join(CUTS_FILE), "a three\n").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cuts line 1"), "{e}");
    }
}
