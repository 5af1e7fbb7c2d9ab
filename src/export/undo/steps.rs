//! Moving a replica between points of its window: undo entries newest first to go
//! back, redo them to go forward, a split delta's redo cut after one write to stop
//! inside it. Every step writes absolute bytes over the ranges its entry covers, so
//! running a whole path again over a replica that a crash left part way along it
//! ends exactly at the path's end (each byte ends as the last step that writes it
//! left it, whatever the steps before the crash did).
use super::map::Source;
use super::reader::{Bytes, Reader};
use super::UndoStore;
use crate::error::{Error, Result};
use crate::journal::{Until, VolumeFile};
use crate::progress::Progress;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Entry `0`'s undo: the replica goes from after its delta to before it.
    Undo(u64),
    /// Entry `delta`'s redo, of a split delta only the writes up to `until`.
    Redo { delta: u64, until: Option<u64> },
}

/// The steps from a replica at `from` to `to`.
pub fn path(from: Until, to: Until) -> Vec<Step> {
    let key = |u: Until| (u.delta, u.write.unwrap_or(u64::MAX));
    let mut steps = Vec::new();
    if key(to) < key(from) {
        // Back to the delta holding `to` (undone too when `to` is inside it).
        let stop = if to.write.is_some() {
            to.delta
        } else {
            to.delta + 1
        };
        steps.extend((stop..=from.delta).rev().map(Step::Undo));
        if to.write.is_some() {
            steps.push(Step::Redo {
                delta: to.delta,
                until: to.write,
            });
        }
    } else if key(to) > key(from) {
        let start = if from.write.is_some() {
            from.delta
        } else {
            from.delta + 1
        };
        steps.extend((start..to.delta).map(|delta| Step::Redo { delta, until: None }));
        steps.push(Step::Redo {
            delta: to.delta,
            until: to.write,
        });
    }
    steps
}

/// What a path does to one volume: sets its size (a file's), or makes a range
/// hold `bytes` (a run of one source, which `Reader::fill` turns into bytes).
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Size(u64),
    Run {
        start: u64,
        end: u64,
        bytes: Bytes,
        /// The uncompressed length of the blob the run is in.
        len_of: u64,
    },
}

/// Called for each [`Op`] of a path, in order, with the volume's id and its size
/// at that step; it may read the bytes through the reader.
pub type Visit<'v> = dyn FnMut(&mut Reader, &str, Op, u64) -> Result<()> + 'v;

impl UndoStore {
    /// Reads and checks every byte `steps` will write (checksums, lengths, the
    /// references), before the replica is touched; returns the bytes they write.
    pub fn check(&mut self, steps: &[Step], progress: &dyn Progress) -> Result<u64> {
        let mut total = 0;
        self.walk(steps, &mut |reader, _, op, _| {
            if let Op::Run {
                start,
                end,
                bytes,
                len_of,
            } = op
            {
                if let Bytes::Blob { entry, blob, .. } = bytes {
                    reader.blob(entry, blob, len_of)?;
                }
                total += end - start;
                progress.add_total(end - start);
                progress.inc(end - start);
            }
            Ok(())
        })?;
        Ok(total)
    }

    /// Runs `steps` on `replicas` (by volume id), then makes them durable.
    pub fn run(
        &mut self,
        steps: &[Step],
        replicas: &HashMap<String, VolumeFile>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut buf = Vec::new();
        let zeros = vec![0u8; crate::journal::record::MAX_EXTENT];
        self.walk(steps, &mut |reader, id, op, size| {
            let Some(r) = replicas.get(id) else {
                return Ok(());
            };
            match op {
                Op::Size(len) if !r.device => r
                    .file
                    .set_len(len)
                    .map_err(Error::io("cannot size", &r.path))?,
                Op::Size(_) => {}
                Op::Run {
                    start,
                    end,
                    bytes: Bytes::Zero,
                    ..
                } => crate::journal::zero_range(
                    r,
                    start,
                    end.min(size).saturating_sub(start),
                    &zeros,
                )?,
                Op::Run {
                    start,
                    end,
                    bytes,
                    len_of,
                } => {
                    buf.resize((end - start) as usize, 0);
                    reader.fill(bytes, start, &mut buf, len_of)?;
                    r.file
                        .write_all_at(&buf, start)
                        .map_err(Error::io("cannot write", &r.path))?;
                }
            }
            if let Op::Run { start, end, .. } = op {
                progress.inc(end - start);
            }
            Ok(())
        })?;
        for r in replicas.values() {
            r.file
                .sync_all()
                .map_err(Error::io("cannot sync replica", &r.path))?;
        }
        Ok(())
    }

    /// Calls `visit` for everything `steps` do, in order. Entries missing from the
    /// journal are an error naming the delta.
    pub fn walk(&mut self, steps: &[Step], visit: &mut Visit) -> Result<()> {
        for step in steps {
            let delta = match *step {
                Step::Undo(d) | Step::Redo { delta: d, .. } => d,
            };
            let Some(map) = self.entries.get(&delta) else {
                return Err(Error::NotFound(format!(
                    "the undo journal in {} holds no entry for delta {delta}",
                    self.dir.display()
                )));
            };
            match *step {
                Step::Undo(_) => {
                    for v in &map.volumes {
                        if let Some(before) = v.before {
                            visit(&mut self.reader, &v.id, Op::Size(before), before)?;
                        }
                    }
                    for x in &map.undo {
                        let v = &map.volumes[x.volume as usize];
                        let size = v.before.unwrap_or(v.after);
                        let runs = self
                            .reader
                            .resolve(&self.entries, map, x, x.offset, x.end())?;
                        for (start, end, bytes, len_of) in runs {
                            let op = Op::Run {
                                start,
                                end,
                                bytes,
                                len_of,
                            };
                            visit(&mut self.reader, &v.id, op, size)?;
                        }
                    }
                }
                Step::Redo { until, .. } => {
                    for v in &map.volumes {
                        visit(&mut self.reader, &v.id, Op::Size(v.after), v.after)?;
                    }
                    for r in &map.redo {
                        let x = &r.extent;
                        let v = &map.volumes[x.volume as usize];
                        let end = x.end().min(v.after);
                        if until.is_some_and(|u| r.write > u) || x.offset >= end {
                            continue;
                        }
                        let bytes = match x.source {
                            Source::Data(blob) => Bytes::Blob {
                                entry: delta,
                                blob,
                                base: x.offset,
                            },
                            _ => Bytes::Zero,
                        };
                        let op = Op::Run {
                            start: x.offset,
                            end,
                            bytes,
                            len_of: x.length,
                        };
                        visit(&mut self.reader, &v.id, op, v.after)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(delta: u64, write: Option<u64>) -> Until {
        Until { delta, write }
    }

    #[test]
    fn paths_between_points() {
        use Step::*;
        assert_eq!(path(at(5, None), at(2, None)), [Undo(5), Undo(4), Undo(3)]);
        assert_eq!(
            path(at(5, None), at(3, Some(7))),
            [
                Undo(5),
                Undo(4),
                Undo(3),
                Redo {
                    delta: 3,
                    until: Some(7)
                }
            ]
        );
        assert_eq!(
            path(at(2, None), at(4, None)),
            [
                Redo {
                    delta: 3,
                    until: None
                },
                Redo {
                    delta: 4,
                    until: None
                }
            ]
        );
        assert_eq!(
            path(at(3, Some(7)), at(3, None)),
            [Redo {
                delta: 3,
                until: None
            }]
        );
        assert_eq!(
            path(at(3, Some(9)), at(3, Some(7))),
            [
                Undo(3),
                Redo {
                    delta: 3,
                    until: Some(7)
                }
            ]
        );
        assert_eq!(path(at(3, None), at(3, None)), []);
    }
}
