//! Record payloads: typed values and their little-endian encodings.
use serde::Serialize;

pub const BEGIN: u8 = 1;
pub const DATA: u8 = 2;
pub const ZERO: u8 = 3;
pub const COMMIT: u8 = 4;
pub const BOOKMARK: u8 = 5;
/// Version 2: a write of a split delta, with its sequence number and time.
pub const WRITE_DATA: u8 = 6;
pub const WRITE_ZERO: u8 = 7;

/// Uncompressed bytes in one Data record; the unit of replay memory.
pub const MAX_EXTENT: usize = 1 << 20;

pub const FLAG_FULL: u32 = 1;
/// The delta holds ordered writes (WriteData, WriteZero) rather than a snapshot diff.
pub const FLAG_SPLIT: u32 = 2;
/// Version 3: the split delta lies in a gap or at its edge; its Begin says where
/// (`Writes::gap`).
pub const FLAG_GAP: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    pub id: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub delta: u64,
    pub time_ns: i64,
    pub flags: u32,
    pub volumes: Vec<VolumeInfo>,
    /// Present exactly when `flags` has `FLAG_SPLIT`.
    pub writes: Option<Writes>,
}

/// The writes a split delta holds, and from which write on replay is exact
/// (docs/journal-format.md, "Split deltas").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Writes {
    pub first_write: u64,
    pub last_write: u64,
    pub exact_from: u64,
    /// Where write order was lost, and whether it resumes here (`FLAG_GAP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
}

/// A split delta's place in a gap, where the splitter fell behind and only marked
/// what was written (docs/journal-format.md, "Gaps").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Gap {
    /// Writes up to this one are in order; after it, numbers may be skipped.
    pub lost_after: u64,
    /// The journal holds the volumes exactly at `last_write`: the gap ends there.
    pub resumes: bool,
}

impl Writes {
    /// The Begin flags beside `FLAG_SPLIT` that these writes need.
    pub fn flags(&self) -> u32 {
        FLAG_SPLIT | if self.gap.is_some() { FLAG_GAP } else { 0 }
    }

    pub(super) fn encode(&self, e: &mut Enc) {
        e.u64(self.first_write)
            .u64(self.last_write)
            .u64(self.exact_from);
        if let Some(g) = self.gap {
            e.u64(g.lost_after);
            e.0.push(u8::from(g.resumes));
        }
    }

    /// Decodes the fields of a split delta whose Begin has `flags`.
    pub(super) fn decode(d: &mut Dec<'_>, flags: u32) -> Result<Writes, String> {
        let mut w = Writes {
            first_write: d.u64()?,
            last_write: d.u64()?,
            exact_from: d.u64()?,
            gap: None,
        };
        if flags & FLAG_GAP != 0 {
            let lost_after = d.u64()?;
            let resumes = match d.u8()? {
                0 => false,
                1 => true,
                b => return Err(format!("split delta's resumes field is {b}, not 0 or 1")),
            };
            w.gap = Some(Gap {
                lost_after,
                resumes,
            });
        }
        w.check().map(|()| w)
    }

    /// Whether the fields make sense on their own; the reason when they do not.
    pub fn check(&self) -> Result<(), String> {
        let w = self;
        if w.first_write == 0 || w.first_write > w.last_write || w.exact_from >= w.first_write {
            return Err(format!(
                "split delta holds writes {}..={} exact from {}: not a range of write numbers after its base",
                w.first_write, w.last_write, w.exact_from
            ));
        }
        if let Some(g) = w.gap {
            if g.lost_after + 1 < w.first_write || g.lost_after > w.last_write {
                return Err(format!(
                    "split delta of writes {}..={} loses write order after write {}, outside them",
                    w.first_write, w.last_write, g.lost_after
                ));
            }
        }
        Ok(())
    }

    /// Whether a record of write `w` may come next in the delta, after one of write
    /// `last` (none yet: `None`): writes run `first_write..=last_write` in order, each
    /// in one or more records; past a gap's `lost_after`, numbers may be skipped.
    pub fn may_come(&self, last: Option<u64>, w: u64) -> bool {
        let next = last.map_or(self.first_write, |l| l + 1);
        let skipping = self.gap.is_some_and(|g| next > g.lost_after && w > next);
        w <= self.last_write && (w == next || Some(w) == last || skipping)
    }

    /// Whether a delta may end after a record of write `last`: at `last_write`, or
    /// (a resuming delta, whose last writes were marked and read back) before it,
    /// once past `lost_after`; a resuming delta wholly inside its gap may hold no
    /// record at all.
    pub fn may_end(&self, last: Option<u64>) -> bool {
        match (last, self.gap) {
            (Some(l), _) if l == self.last_write => true,
            (Some(l), Some(g)) => g.resumes && l >= g.lost_after,
            // A restart found nothing to read back: the gap ends with no record.
            (None, Some(g)) => g.resumes && g.lost_after + 1 == self.first_write,
            _ => false,
        }
    }

    /// Whether write `n` of this delta is a consistent point: in order, or where a
    /// gap resumes.
    pub fn consistent(&self, n: u64) -> bool {
        self.gap
            .is_none_or(|g| n <= g.lost_after || (g.resumes && n == self.last_write))
    }

    /// Whether a gap is open after this delta: the next of its stream goes on in it.
    pub fn gap_open(&self) -> bool {
        self.gap.is_some_and(|g| !g.resumes)
    }

    /// Whether a delta of these writes may follow one of `prev`: the same stream goes
    /// on at the next write (inside a gap, when `prev` left one open); a new stream
    /// (after a base) starts just after its base's write, which is at or past where
    /// the old one stopped.
    pub fn may_follow(&self, prev: &Writes) -> bool {
        let goes_on = !prev.gap_open()
            || self
                .gap
                .is_some_and(|g| g.lost_after + 1 == self.first_write);
        let same = self.first_write == prev.last_write + 1
            && self.exact_from == prev.exact_from
            && goes_on;
        let new = self.first_write == self.exact_from + 1 && self.exact_from >= prev.last_write;
        same || new
    }
}

/// Which write a WriteData or WriteZero record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub write: u64,
    pub time_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub delta: u64,
    pub records: u64,
    pub changed_bytes: u64,
    pub stored_bytes: u64,
    pub digest: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookmark {
    pub seq: u64,
    pub after_delta: u64,
    pub time_ns: i64,
    pub name: String,
    /// A grid bookmark's counter value, and the grid's name.
    pub grid: Option<GridMark>,
}

/// What makes a bookmark one of a grid's: the value of the grid-wide counter every
/// stream's bookmark of that name carries (docs/grid.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GridMark {
    pub grid: String,
    pub value: u64,
}

impl GridMark {
    /// Optional trailing fields: a journal without grid bookmarks reads as before.
    pub fn encode(mark: &Option<GridMark>, e: &mut Enc) {
        if let Some(g) = mark {
            e.str(&g.grid).u64(g.value);
        }
    }
    pub fn decode(d: &mut Dec) -> Result<Option<GridMark>, String> {
        if d.end().is_ok() {
            return Ok(None);
        }
        Ok(Some(GridMark {
            grid: d.str()?,
            value: d.u64()?,
        }))
    }
}

/// A decoded record; Data borrows its compressed bytes from the read buffer. A
/// WriteData or WriteZero record decodes as Data or Zero with its `stamp`.
#[derive(Debug)]
pub enum Record<'a> {
    Begin(Begin),
    Data {
        delta: u64,
        volume: u16,
        offset: u64,
        length: u32,
        compressed: &'a [u8],
        stamp: Option<Stamp>,
    },
    Zero {
        delta: u64,
        volume: u16,
        offset: u64,
        length: u64,
        stamp: Option<Stamp>,
    },
    Commit(Commit),
    Bookmark(Bookmark),
}

/// Appends little-endian fields to a payload.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

/// Reads little-endian fields; every shortfall is a named error, never a panic.
pub struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("record payload is shorter than its fields".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn str(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| "string field is not UTF-8".to_string())
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    pub fn end(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the record's fields",
                self.buf.len()
            ))
        }
    }
}

impl Begin {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.delta)
            .i64(self.time_ns)
            .u32(self.flags)
            .u16(self.volumes.len() as u16);
        for v in &self.volumes {
            e.str(&v.id).u64(v.size);
        }
        if let Some(w) = &self.writes {
            w.encode(&mut e);
        }
        e.0
    }
    pub fn is_full(&self) -> bool {
        self.flags & FLAG_FULL != 0
    }
}

impl Commit {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.delta)
            .u64(self.records)
            .u64(self.changed_bytes)
            .u64(self.stored_bytes)
            .u32(self.digest);
        e.0
    }
}

impl Bookmark {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.seq)
            .u64(self.after_delta)
            .i64(self.time_ns)
            .str(&self.name);
        GridMark::encode(&self.grid, &mut e);
        e.0
    }
}

/// Encodes a Zero record's payload, or a WriteZero's with a stamp; the record kind.
pub fn encode_zero(
    delta: u64,
    stamp: Option<Stamp>,
    volume: u16,
    offset: u64,
    length: u64,
) -> (u8, Vec<u8>) {
    let mut e = Enc::default();
    e.u64(delta);
    if let Some(s) = stamp {
        e.u64(s.write).i64(s.time_ns);
    }
    e.u16(volume).u64(offset).u64(length);
    (if stamp.is_some() { WRITE_ZERO } else { ZERO }, e.0)
}

/// The fixed fields in front of a Data (or, with a stamp, WriteData) record's
/// compressed bytes; the record kind.
pub fn encode_data_head(
    out: &mut Vec<u8>,
    delta: u64,
    stamp: Option<Stamp>,
    volume: u16,
    offset: u64,
    length: u32,
) -> u8 {
    out.extend_from_slice(&delta.to_le_bytes());
    if let Some(s) = stamp {
        out.extend_from_slice(&s.write.to_le_bytes());
        out.extend_from_slice(&s.time_ns.to_le_bytes());
    }
    out.extend_from_slice(&volume.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    if stamp.is_some() {
        WRITE_DATA
    } else {
        DATA
    }
}

impl<'a> Record<'a> {
    /// The bytes of a volume a Data or Zero record sets; none for the others. Summed
    /// over a delta, this is its `changed_bytes`.
    pub fn extent_len(&self) -> u64 {
        match self {
            Record::Data { length, .. } => *length as u64,
            Record::Zero { length, .. } => *length,
            _ => 0,
        }
    }

    /// The write a WriteData or WriteZero record belongs to.
    pub fn stamp(&self) -> Option<Stamp> {
        match self {
            Record::Data { stamp, .. } | Record::Zero { stamp, .. } => *stamp,
            _ => None,
        }
    }

    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<Record<'a>, String> {
        let mut d = Dec::new(payload);
        let stamped = |d: &mut Dec<'_>| -> Result<Option<Stamp>, String> {
            Ok(match kind {
                WRITE_DATA | WRITE_ZERO => Some(Stamp {
                    write: d.u64()?,
                    time_ns: d.i64()?,
                }),
                _ => None,
            })
        };
        let rec = match kind {
            BEGIN => {
                let delta = d.u64()?;
                let time_ns = d.i64()?;
                let flags = d.u32()?;
                let n = d.u16()?;
                let mut volumes = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    volumes.push(VolumeInfo {
                        id: d.str()?,
                        size: d.u64()?,
                    });
                }
                if flags & FLAG_GAP != 0 && flags & FLAG_SPLIT == 0 {
                    return Err("a delta that is not split has the GAP flag".into());
                }
                let writes = if flags & FLAG_SPLIT != 0 {
                    Some(Writes::decode(&mut d, flags)?)
                } else {
                    None
                };
                Record::Begin(Begin {
                    delta,
                    time_ns,
                    flags,
                    volumes,
                    writes,
                })
            }
            DATA | WRITE_DATA => {
                let delta = d.u64()?;
                let stamp = stamped(&mut d)?;
                let (volume, offset, length) = (d.u16()?, d.u64()?, d.u32()?);
                if length as usize > MAX_EXTENT || length == 0 {
                    return Err(format!(
                        "data record length {length} is outside 1..={MAX_EXTENT}"
                    ));
                }
                return Ok(Record::Data {
                    delta,
                    volume,
                    offset,
                    length,
                    compressed: d.rest(),
                    stamp,
                });
            }
            ZERO | WRITE_ZERO => Record::Zero {
                delta: d.u64()?,
                stamp: stamped(&mut d)?,
                volume: d.u16()?,
                offset: d.u64()?,
                length: d.u64()?,
            },
            COMMIT => Record::Commit(Commit {
                delta: d.u64()?,
                records: d.u64()?,
                changed_bytes: d.u64()?,
                stored_bytes: d.u64()?,
                digest: d.u32()?,
            }),
            BOOKMARK => Record::Bookmark(Bookmark {
                seq: d.u64()?,
                after_delta: d.u64()?,
                time_ns: d.i64()?,
                name: d.str()?,
                grid: GridMark::decode(&mut d)?,
            }),
            k => return Err(format!("unknown record kind {k}")),
        };
        d.end()?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let b = Begin {
            delta: 7,
            time_ns: -3,
            flags: FLAG_FULL,
            volumes: vec![VolumeInfo {
                id: "a".into(),
                size: 9,
            }],
            writes: None,
        };
        match Record::decode(BEGIN, &b.encode()).unwrap() {
            Record::Begin(x) => assert_eq!(x, b),
            r => panic!("{r:?}"),
        }
        let split = Begin {
            flags: FLAG_SPLIT,
            writes: Some(Writes {
                first_write: 10,
                last_write: 12,
                exact_from: 3,
                gap: None,
            }),
            ..b.clone()
        };
        match Record::decode(BEGIN, &split.encode()).unwrap() {
            Record::Begin(x) => assert_eq!(x, split),
            r => panic!("{r:?}"),
        }
        let stamp = Some(Stamp {
            write: 11,
            time_ns: -5,
        });
        let (kind, z) = encode_zero(7, stamp, 1, 4096, 512);
        assert_eq!(kind, WRITE_ZERO);
        match Record::decode(kind, &z).unwrap() {
            Record::Zero {
                delta: 7,
                stamp: s,
                volume: 1,
                offset: 4096,
                length: 512,
            } => assert_eq!(s, stamp),
            r => panic!("{r:?}"),
        }
        let mut data = Vec::new();
        let kind = encode_data_head(&mut data, 7, stamp, 0, 0, 3);
        data.extend_from_slice(b"zst");
        match Record::decode(kind, &data).unwrap() {
            Record::Data {
                stamp: s,
                length: 3,
                compressed,
                ..
            } => {
                assert_eq!(s, stamp);
                assert_eq!(compressed, b"zst");
            }
            r => panic!("{r:?}"),
        }
        let c = Commit {
            delta: 7,
            records: 2,
            changed_bytes: 3,
            stored_bytes: 4,
            digest: 5,
        };
        match Record::decode(COMMIT, &c.encode()).unwrap() {
            Record::Commit(x) => assert_eq!(x, c),
            r => panic!("{r:?}"),
        }
        let m = Bookmark {
            seq: 1,
            after_delta: 7,
            time_ns: 8,
            name: "before-upgrade".into(),
            grid: None,
        };
        match Record::decode(BOOKMARK, &m.encode()).unwrap() {
            Record::Bookmark(x) => assert_eq!(x, m),
            r => panic!("{r:?}"),
        }
        // A grid's bookmark carries its counter value; the plain one stays as it was.
        let g = Bookmark {
            grid: Some(GridMark {
                grid: "shop".into(),
                value: 42,
            }),
            ..m.clone()
        };
        assert_eq!(g.encode().len(), m.encode().len() + 2 + 4 + 8);
        match Record::decode(BOOKMARK, &g.encode()).unwrap() {
            Record::Bookmark(x) => assert_eq!(x, g),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn write_order_within_and_across_split_deltas() {
        let w = Writes {
            first_write: 5,
            last_write: 7,
            exact_from: 4,
            gap: None,
        };
        assert!(w.may_come(None, 5));
        assert!(
            !w.may_come(None, 6),
            "the first record is of the first write"
        );
        assert!(w.may_come(Some(5), 5), "a long write is several records");
        assert!(w.may_come(Some(5), 6));
        assert!(!w.may_come(Some(5), 7), "no write is skipped");
        assert!(!w.may_come(Some(6), 5), "no write goes back");
        assert!(!w.may_come(Some(7), 8), "none past the range");
        let next = Writes {
            first_write: 8,
            last_write: 9,
            exact_from: 4,
            gap: None,
        };
        assert!(next.may_follow(&w));
        let gap = Writes {
            first_write: 9,
            ..next
        };
        assert!(!gap.may_follow(&w));
        // A new stream after a base that took writes 8..=10 in.
        let restarted = Writes {
            first_write: 11,
            last_write: 11,
            exact_from: 10,
            gap: None,
        };
        assert!(restarted.may_follow(&w));
        let reused = Writes {
            first_write: 7,
            last_write: 8,
            exact_from: 6,
            gap: None,
        };
        assert!(!reused.may_follow(&w), "numbers are never used twice");
    }

    #[test]
    fn a_gap_lets_numbers_skip_after_it_and_is_carried_on_until_it_resumes() {
        let opens = Writes {
            first_write: 5,
            last_write: 20,
            exact_from: 4,
            gap: Some(Gap {
                lost_after: 6,
                resumes: false,
            }),
        };
        assert!(opens.may_come(Some(5), 6));
        assert!(!opens.may_come(Some(5), 9), "in order up to lost_after");
        assert!(opens.may_come(Some(6), 9), "skips after it");
        assert!(!opens.may_come(Some(9), 8), "never back");
        assert!(!opens.may_come(Some(9), 21));
        assert!(opens.may_end(Some(20)) && !opens.may_end(Some(19)));
        assert!(opens.consistent(6) && !opens.consistent(7) && !opens.consistent(20));
        // The next delta must go on in the gap; one that does, then resumes.
        let plain = Writes {
            first_write: 21,
            last_write: 30,
            exact_from: 4,
            gap: None,
        };
        assert!(!plain.may_follow(&opens), "a gap is not left silently");
        let resumes = Writes {
            gap: Some(Gap {
                lost_after: 20,
                resumes: true,
            }),
            ..plain
        };
        assert!(resumes.may_follow(&opens));
        assert!(resumes.may_come(None, 25), "skips from its start");
        assert!(resumes.may_end(Some(28)), "its last writes were marked");
        assert!(resumes.consistent(30) && !resumes.consistent(29));
        assert!(Writes {
            first_write: 31,
            last_write: 31,
            ..plain
        }
        .may_follow(&resumes));
        // A base ends a gap too.
        assert!(Writes {
            first_write: 41,
            last_write: 41,
            exact_from: 40,
            gap: None
        }
        .may_follow(&opens));
        // Its fields round-trip, and lost_after must lie in the range.
        let b = Begin {
            delta: 3,
            time_ns: 0,
            flags: opens.flags(),
            volumes: vec![],
            writes: Some(opens),
        };
        match Record::decode(BEGIN, &b.encode()).unwrap() {
            Record::Begin(got) => assert_eq!(got, b),
            r => panic!("{r:?}"),
        }
        let outside = Writes {
            gap: Some(Gap {
                lost_after: 3,
                resumes: false,
            }),
            ..opens
        };
        assert!(outside.check().is_err());
    }

    #[test]
    fn short_and_unknown_payloads_are_errors() {
        assert!(Record::decode(COMMIT, &[1, 2, 3]).is_err());
        assert!(Record::decode(99, &[]).is_err());
        let (_, mut z) = encode_zero(1, None, 0, 0, 4096);
        z.push(0);
        assert!(Record::decode(ZERO, &z).is_err());
        // A split Begin without its write range, or with an empty one.
        let mut b = Begin {
            delta: 2,
            time_ns: 0,
            flags: FLAG_SPLIT,
            volumes: vec![],
            writes: None,
        };
        assert!(Record::decode(BEGIN, &b.encode()).is_err());
        b.writes = Some(Writes {
            first_write: 5,
            last_write: 4,
            exact_from: 1,
            gap: None,
        });
        assert!(Record::decode(BEGIN, &b.encode()).is_err());
        b.writes = Some(Writes {
            first_write: 5,
            last_write: 6,
            exact_from: 5,
            gap: None,
        });
        assert!(
            Record::decode(BEGIN, &b.encode()).is_err(),
            "exact only after its base"
        );
    }
}
