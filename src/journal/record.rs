//! Record payloads: typed values and their little-endian encodings.
use serde::Serialize;

pub const BEGIN: u8 = 1;
pub const DATA: u8 = 2;
pub const ZERO: u8 = 3;
pub const COMMIT: u8 = 4;
pub const BOOKMARK: u8 = 5;

/// Uncompressed bytes in one Data record; the unit of replay memory.
pub const MAX_EXTENT: usize = 1 << 20;

pub const FLAG_FULL: u32 = 1;

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
}

/// A decoded record; Data borrows its compressed bytes from the read buffer.
#[derive(Debug)]
pub enum Record<'a> {
    Begin(Begin),
    Data {
        delta: u64,
        volume: u16,
        offset: u64,
        length: u32,
        compressed: &'a [u8],
    },
    Zero {
        delta: u64,
        volume: u16,
        offset: u64,
        length: u64,
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
        e.0
    }
}

/// Encodes a Zero record's payload.
pub fn encode_zero(delta: u64, volume: u16, offset: u64, length: u64) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(delta).u16(volume).u64(offset).u64(length);
    e.0
}

/// The fixed fields in front of a Data record's compressed bytes.
pub fn encode_data_head(out: &mut Vec<u8>, delta: u64, volume: u16, offset: u64, length: u32) {
    out.extend_from_slice(&delta.to_le_bytes());
    out.extend_from_slice(&volume.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
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

    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<Record<'a>, String> {
        let mut d = Dec::new(payload);
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
                Record::Begin(Begin {
                    delta,
                    time_ns,
                    flags,
                    volumes,
                })
            }
            DATA => {
                let (delta, volume, offset, length) = (d.u64()?, d.u16()?, d.u64()?, d.u32()?);
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
                });
            }
            ZERO => Record::Zero {
                delta: d.u64()?,
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
        };
        match Record::decode(BEGIN, &b.encode()).unwrap() {
            Record::Begin(x) => assert_eq!(x, b),
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
        };
        match Record::decode(BOOKMARK, &m.encode()).unwrap() {
            Record::Bookmark(x) => assert_eq!(x, m),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn short_and_unknown_payloads_are_errors() {
        assert!(Record::decode(COMMIT, &[1, 2, 3]).is_err());
        assert!(Record::decode(99, &[]).is_err());
        let mut z = encode_zero(1, 0, 0, 4096);
        z.push(0);
        assert!(Record::decode(ZERO, &z).is_err());
    }
}
