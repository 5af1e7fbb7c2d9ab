//! This host's stream, as a bookmark holds and marks it. A split stream holds its
//! writers in the sequencer: the cut is the writes numbered so far. A snapshot
//! stream takes the bookmark as a cycle of its own: it freezes (the group's freeze
//! hook) and reports held; on `mark` it snapshots, thaws, journals the delta and
//! places the bookmark after it; on `release` it thaws and journals nothing.
use crate::config::{Config, ConsistencyGroup};
use crate::error::{Error, Result};
use crate::journal::record::GridMark;
use crate::journal::{BookmarkEntry, JournalWriter};
use crate::splitter::{GridHandle, Hold};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

pub enum Stream {
    Split(GridHandle),
    Snapshot {
        cfg: Box<Config>,
        cg: Box<ConsistencyGroup>,
    },
}

/// A stream held for a bookmark: `mark` or `release` it.
pub enum Held {
    Split {
        handle: GridHandle,
        at: u64,
    },
    Snapshot {
        go: mpsc::Sender<Option<(String, GridMark)>>,
        done: mpsc::Receiver<Result<Option<BookmarkEntry>>>,
    },
}

impl Held {
    /// A split stream's cut: the last write before the bookmark.
    pub fn at(&self) -> Option<u64> {
        match self {
            Held::Split { at, .. } => Some(*at),
            Held::Snapshot { .. } => None,
        }
    }

    /// Places the bookmark at the cut and lets the writes go; returns once the
    /// journal holds it. Blocks.
    pub fn mark(self, name: String, grid: GridMark) -> Result<BookmarkEntry> {
        match self {
            Held::Split { handle, .. } => handle
                .mark(name.clone(), grid)
                .blocking_recv()
                .unwrap_or_else(|_| {
                    Err(Error::Stopped(format!(
                        "grid bookmark `{name}`: the splitter"
                    )))
                }),
            Held::Snapshot { go, done } => {
                let _ = go.send(Some((name.clone(), grid)));
                match done.recv() {
                    Ok(Ok(Some(b))) => Ok(b),
                    Ok(Err(e)) => Err(e),
                    _ => Err(Error::Stopped(format!("grid bookmark `{name}`: its cycle"))),
                }
            }
        }
    }

    /// Lets the writes go without a bookmark.
    pub fn release(self) {
        match self {
            Held::Split { handle, .. } => handle.release(),
            Held::Snapshot { go, done } => {
                let _ = go.send(None);
                // The cycle thaws and ends; its outcome is no one's.
                std::thread::spawn(move || drop(done.recv()));
            }
        }
    }
}

impl Stream {
    /// Holds the stream's writes, or freezes it for a snapshot, waiting at most
    /// `limit` for `mark` or `release` afterwards. Blocks.
    pub fn hold(&self, limit: Duration) -> Result<Held> {
        match self {
            Stream::Split(h) => Ok(Held::Split {
                at: h.hold(limit / 2)?,
                handle: h.clone(),
            }),
            Stream::Snapshot { cfg, cg } => {
                let (held_tx, held_rx) = mpsc::channel();
                let (go, go_rx) = mpsc::channel();
                let (done_tx, done) = mpsc::channel();
                let (cfg, cg) = (cfg.clone(), cg.clone());
                std::thread::spawn(move || {
                    let barrier = Barrier {
                        held: Mutex::new(Some(held_tx)),
                        go: Mutex::new(go_rx),
                        mark: Mutex::new(None),
                        limit,
                    };
                    let r = snapshot_cycle(&cfg, &cg, &barrier);
                    let _ = done_tx.send(r);
                });
                match held_rx.recv() {
                    Ok(()) => Ok(Held::Snapshot { go, done }),
                    // The cycle ended before it froze: its error says why.
                    Err(_) => Err(match done.recv() {
                        Ok(Err(e)) => e,
                        _ => Error::Stopped("grid bookmark: the snapshot cycle".into()),
                    }),
                }
            }
        }
    }
}

/// A cycle whose freeze waits for the bookmark's decision, then the bookmark.
fn snapshot_cycle(
    cfg: &Config,
    cg: &ConsistencyGroup,
    barrier: &Barrier,
) -> Result<Option<BookmarkEntry>> {
    let mut writer = JournalWriter::open(&cfg.journal_path(cg), cg.segment_size_mib << 20)?;
    crate::cycle::run_cycle_held(
        cfg,
        cg,
        &mut writer,
        &crate::progress::NoProgress,
        Some(barrier),
    )?;
    let mark = barrier
        .mark
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match mark {
        Some((name, grid)) => writer
            .add_bookmark(&name, crate::clock::now_ns(), Some(grid))
            .map(Some),
        None => Ok(None),
    }
}

/// The cycle's hold: taken after the freeze hook ran and before the snapshot, it
/// says "held" and waits for the bookmark's decision.
struct Barrier {
    held: Mutex<Option<mpsc::Sender<()>>>,
    go: Mutex<mpsc::Receiver<Option<(String, GridMark)>>>,
    mark: Mutex<Option<(String, GridMark)>>,
    limit: Duration,
}

impl Hold for Barrier {
    fn hold(&self) -> Result<()> {
        if let Some(tx) = self.held.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
        let go = self.go.lock().unwrap_or_else(|e| e.into_inner());
        match go.recv_timeout(self.limit) {
            Ok(Some(m)) => {
                *self.mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
                Ok(())
            }
            _ => Err(Error::Stopped(
                "grid bookmark: released (another stream did not hold in time); the cycle".into(),
            )),
        }
    }
    fn release(&self) {}
}
