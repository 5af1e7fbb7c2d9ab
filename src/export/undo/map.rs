//! One applied delta's entry in the undo journal, as bytes: `NNNN.map` lists what the
//! delta wrote (its redo, copied from the change journal) and what the replica held
//! there before (its undo), each extent pointing into `NNNN.data` or at an earlier
//! entry. Pure encode and decode; the map file is written whole and atomically, and
//! ends with a CRC-32C of everything before it, so a torn or damaged map is refused.
use crate::journal::record::{Dec, Enc};

const MAGIC: &[u8; 8] = b"CSCUNDO1";

/// Compressed bytes (one zstd frame) in the entry's data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub at: u64,
    pub len: u32,
    /// CRC-32C of the compressed bytes.
    pub crc: u32,
}

/// Where the bytes of an extent come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Data(Blob),
    Zero,
    /// The bytes entry `delta` wrote there (its redo), not copied: that entry was the
    /// last to write them before this one. Made into `Data` or `Zero` when entry
    /// `delta` retires (the retirement of the seed's algorithm).
    Ref(u64),
}

/// One extent of one volume (an index into [`EntryMap::volumes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub volume: u16,
    pub offset: u64,
    pub length: u64,
    pub source: Source,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// A redo extent: what the delta wrote, in journal order, and the split write it
/// belongs to (0 for a snapshot delta). Its source is never `Ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redo {
    pub extent: Extent,
    pub write: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSizes {
    pub id: String,
    /// The replica's size before the delta (None: the volume is new in it).
    pub before: Option<u64>,
    pub after: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMap {
    pub delta: u64,
    pub time_ns: i64,
    /// The last write of a split delta (0 for a snapshot delta).
    pub last_write: u64,
    pub volumes: Vec<VolumeSizes>,
    pub redo: Vec<Redo>,
    /// The replica's bytes before the delta, over every byte the redo covers that
    /// existed then (clipped to `before`).
    pub undo: Vec<Extent>,
    /// Bytes of the data file that the map points into.
    pub data_len: u64,
}

impl EntryMap {
    pub fn volume(&self, id: &str) -> Option<u16> {
        self.volumes
            .iter()
            .position(|v| v.id == id)
            .map(|i| i as u16)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.0.extend_from_slice(MAGIC);
        e.u64(self.delta)
            .i64(self.time_ns)
            .u64(self.last_write)
            .u64(self.data_len)
            .u16(self.volumes.len() as u16);
        for v in &self.volumes {
            e.str(&v.id)
                .u64(v.before.map_or(u64::MAX, |b| b))
                .u64(v.after);
        }
        e.u32(self.redo.len() as u32);
        for r in &self.redo {
            extent(&mut e, &r.extent);
            e.u64(r.write);
        }
        e.u32(self.undo.len() as u32);
        for x in &self.undo {
            extent(&mut e, x);
        }
        let crc = crc32c::crc32c(&e.0);
        e.u32(crc);
        e.0
    }

    /// Decodes a map, or says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<EntryMap, String> {
        if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not an undo map (bad magic)".into());
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes(tail.try_into().unwrap());
        if crc32c::crc32c(body) != crc {
            return Err("checksum mismatch (torn or damaged)".into());
        }
        let mut d = Dec::new(&body[MAGIC.len()..]);
        let (delta, time_ns, last_write, data_len) = (d.u64()?, d.i64()?, d.u64()?, d.u64()?);
        let volumes = (0..d.u16()?)
            .map(|_| {
                let id = d.str()?;
                let before = Some(d.u64()?).filter(|b| *b != u64::MAX);
                Ok(VolumeSizes {
                    id,
                    before,
                    after: d.u64()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let redo = (0..d.u32()?)
            .map(|_| {
                let extent = read_extent(&mut d, volumes.len())?;
                if matches!(extent.source, Source::Ref(_)) {
                    return Err("a redo extent refers to another entry".to_string());
                }
                Ok(Redo {
                    extent,
                    write: d.u64()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let undo = (0..d.u32()?)
            .map(|_| {
                let x = read_extent(&mut d, volumes.len())?;
                match x.source {
                    Source::Ref(j) if j >= delta => {
                        Err(format!("undo refers to entry {j}, not an earlier one"))
                    }
                    _ => Ok(x),
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        d.end()?;
        let map = EntryMap {
            delta,
            time_ns,
            last_write,
            volumes,
            redo,
            undo,
            data_len,
        };
        let past = map
            .redo
            .iter()
            .map(|r| &r.extent)
            .chain(&map.undo)
            .find(|x| matches!(x.source, Source::Data(b) if b.at.checked_add(b.len as u64).is_none_or(|e| e > data_len)));
        if let Some(x) = past {
            return Err(format!(
                "extent at {} points past the data file's {data_len} bytes",
                x.offset
            ));
        }
        Ok(map)
    }
}

fn extent(e: &mut Enc, x: &Extent) {
    e.u16(x.volume).u64(x.offset).u64(x.length);
    match x.source {
        Source::Data(b) => {
            e.0.push(0);
            e.u64(b.at).u32(b.len).u32(b.crc);
        }
        Source::Zero => e.0.push(1),
        Source::Ref(j) => {
            e.0.push(2);
            e.u64(j);
        }
    }
}

fn read_extent(d: &mut Dec, volumes: usize) -> Result<Extent, String> {
    let (volume, offset, length) = (d.u16()?, d.u64()?, d.u64()?);
    if volume as usize >= volumes {
        return Err(format!("extent names volume {volume} of {volumes}"));
    }
    if length == 0 || offset.checked_add(length).is_none() {
        return Err(format!("extent at {offset} has length {length}"));
    }
    let source = match d.u8()? {
        0 => Source::Data(Blob {
            at: d.u64()?,
            len: d.u32()?,
            crc: d.u32()?,
        }),
        1 => Source::Zero,
        2 => Source::Ref(d.u64()?),
        k => return Err(format!("unknown extent source {k}")),
    };
    Ok(Extent {
        volume,
        offset,
        length,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EntryMap {
        let blob = Blob {
            at: 0,
            len: 10,
            crc: 7,
        };
        EntryMap {
            delta: 5,
            time_ns: 123,
            last_write: 0,
            volumes: vec![
                VolumeSizes {
                    id: "v0".into(),
                    before: Some(4096),
                    after: 8192,
                },
                VolumeSizes {
                    id: "v1".into(),
                    before: None,
                    after: 4096,
                },
            ],
            redo: vec![Redo {
                extent: Extent {
                    volume: 1,
                    offset: 0,
                    length: 4096,
                    source: Source::Data(blob),
                },
                write: 0,
            }],
            undo: vec![
                Extent {
                    volume: 0,
                    offset: 0,
                    length: 512,
                    source: Source::Ref(3),
                },
                Extent {
                    volume: 0,
                    offset: 512,
                    length: 512,
                    source: Source::Zero,
                },
            ],
            data_len: 10,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(EntryMap::decode(&bytes).unwrap(), m);
        for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(EntryMap::decode(&bad).is_err(), "flip at {at}");
        }
        assert!(EntryMap::decode(&bytes[..bytes.len() - 3]).is_err());
        let mut forward = sample();
        forward.undo[0].source = Source::Ref(5);
        let err = EntryMap::decode(&forward.encode()).unwrap_err();
        assert!(err.contains("not an earlier one"), "{err}");
        let mut past = sample();
        past.data_len = 9;
        let err = EntryMap::decode(&past.encode()).unwrap_err();
        assert!(err.contains("past the data file"), "{err}");
    }
}
