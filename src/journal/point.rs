//! Points in a journal's history that a user can name: a delta id, a bookmark, a
//! write of a split group, or a time (the newest delta taken at or before it, or in a
//! split delta the newest write acknowledged at or before it).
use crate::clock::{format_time, parse_time};
use crate::error::{Error, Result};
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    Delta(u64),
    Bookmark(String),
    /// Unix time in nanoseconds.
    Time(i64),
    /// Just after write N of a split group (its write sequence number).
    Write(u64),
}

impl FromStr for Point {
    type Err = Error;

    /// `delta:N`, `bookmark:NAME`, `time:T` and `seq:N` (or `write:N`) say which is
    /// meant; without a prefix a number is a delta id, an RFC 3339 time or `@SECONDS`
    /// is a time, and anything else is a bookmark name.
    fn from_str(s: &str) -> Result<Point> {
        let bad =
            |why: &str| Error::InvalidArgument(format!("`{s}` is not a journal point: {why}"));
        if let Some(n) = s.strip_prefix("seq:").or_else(|| s.strip_prefix("write:")) {
            return n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .map(Point::Write)
                .ok_or_else(|| bad("a write sequence number is a positive number"));
        }
        if let Some(n) = s.strip_prefix("delta:") {
            return n
                .parse()
                .map(Point::Delta)
                .map_err(|_| bad("a delta id is a positive number"));
        }
        if let Some(name) = s.strip_prefix("bookmark:") {
            return Ok(Point::Bookmark(name.to_string()));
        }
        if let Some(t) = s.strip_prefix("time:") {
            return parse_time(t)
                .ok_or_else(|| bad("use RFC 3339 (2026-11-26T10:00:00Z) or @UNIX-SECONDS"))
                .map(Point::Time);
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Point::Delta)
                .map_err(|_| bad("delta id out of range"));
        }
        if let Some(t) = parse_time(s) {
            return Ok(Point::Time(t));
        }
        if s.is_empty() {
            return Err(bad("empty"));
        }
        Ok(Point::Bookmark(s.to_string()))
    }
}

impl Point {
    /// The newest delta included at this point, among `deltas` (id and time, in
    /// order) and `bookmarks` (name and the delta it follows) kept in `place` (a
    /// journal or a replica, for messages). Journals and object replicas both resolve
    /// points here, so `--until` means the same for replay and restore.
    pub fn resolve_in<'a>(
        &self,
        deltas: &[(u64, i64)],
        mut bookmarks: impl Iterator<Item = (&'a str, u64)>,
        place: &str,
    ) -> Result<u64> {
        let span = match (deltas.first(), deltas.last()) {
            (Some(first), Some(last)) => format!("committed deltas are {}..={}", first.0, last.0),
            _ => "it has no committed deltas".into(),
        };
        match self {
            Point::Write(n) => Err(Error::InvalidArgument(format!(
                "seq:{n} names a write of a split group; {place} records whole deltas only: \
                 name a delta, a bookmark or a time"
            ))),
            Point::Delta(id) => deltas
                .iter()
                .find(|d| d.0 == *id)
                .map(|d| d.0)
                .ok_or_else(|| {
                    Error::NotFound(format!("delta {id} does not exist in {place} ({span})"))
                }),
            Point::Bookmark(name) => match bookmarks.find(|b| b.0 == name) {
                None => Err(Error::NotFound(format!("no bookmark `{name}` in {place}"))),
                Some((_, 0)) => Err(Error::NotFound(format!(
                    "bookmark `{name}` was placed before the first delta"
                ))),
                Some((_, after)) => Ok(after),
            },
            Point::Time(t) => deltas
                .iter()
                .rev()
                .find(|d| d.1 <= *t)
                .map(|d| d.0)
                .ok_or_else(|| {
                    let first = deltas.first().map_or("none".into(), |d| format_time(d.1));
                    Error::NotFound(format!(
                        "no delta was taken at or before {} (the first is at {first})",
                        format_time(*t)
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse() {
        assert_eq!("12".parse::<Point>().unwrap(), Point::Delta(12));
        assert_eq!("delta:3".parse::<Point>().unwrap(), Point::Delta(3));
        assert_eq!(
            "nightly".parse::<Point>().unwrap(),
            Point::Bookmark("nightly".into())
        );
        assert_eq!(
            "bookmark:42".parse::<Point>().unwrap(),
            Point::Bookmark("42".into())
        );
        assert_eq!("@10".parse::<Point>().unwrap(), Point::Time(10_000_000_000));
        let t = "2026-11-26T10:00:00Z".parse::<Point>().unwrap();
        let Point::Time(ns) = t else { panic!() };
        assert_eq!(format_time(ns), "2026-11-26T10:00:00.000Z");
        assert_eq!("seq:7".parse::<Point>().unwrap(), Point::Write(7));
        assert_eq!("write:7".parse::<Point>().unwrap(), Point::Write(7));
        assert!("seq:0".parse::<Point>().is_err());
        assert!("seq:x".parse::<Point>().is_err());
        assert!("delta:x".parse::<Point>().is_err());
        assert!("".parse::<Point>().is_err());
    }
}
