//! A live block replica: one kept at the newest exported point with an undo journal
//! beside it ([`super::undo`]), so it can be rewound to any point of its window and
//! rolled forward again, or served as it was at one. The block exporter makes each
//! delta's entry before the delta's first byte reaches the replica, and retires
//! entries past the target's bounds after it. Undo that cannot be written (a full
//! or missing directory, a damaged file) never stops the export: the undo journal
//! is dropped (a new epoch makes its files stale), the window closes to the newest
//! point, and status says why until the window has grown back past it.
use super::cursor::{CursorState, FileCursor, Held, UndoLost};
use super::undo::{self, Limits, RecordStats, UndoStore, Window};
use crate::config::UndoConfig;
use crate::error::{Error, Result};
use crate::journal::{Journal, Point, Until, VolumeFile};
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

pub struct Live {
    /// The target's name, for messages.
    name: String,
    dir: PathBuf,
    limits: Limits,
    store: Option<UndoStore>,
    /// What the entries this exporter made cost (for `make bench`).
    pub made: RecordStats,
}

/// What `cascade status` shows of a live target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub dir: PathBuf,
    pub window: Window,
    /// The point a rewind left the replica at (exports wait meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// A rewind or roll-forward under way, or cut short: where it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
    /// The undo journal was dropped at this delta, and the window cannot reach
    /// before it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_lost: Option<UndoLost>,
    /// A point of the replica is being served (`cascade serve --at`): the exports
    /// wait until it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<String>,
    /// What the entries made by the export that reports this cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<RecordStats>,
}

impl LiveStatus {
    /// This status with where the replica is now, as its cursor (`cursor`, the
    /// target's cursor file) says: a rewind killed part way saves no status, but its
    /// cursor names the move. Read only: the undo journal is not opened.
    pub fn with_cursor(mut self, cursor: &std::path::Path) -> LiveStatus {
        if let Ok(state) = FileCursor::new(cursor.to_path_buf()).get() {
            self.held = state.held.map(|h| undo::describe(h.at));
            self.moving_to = state.held.and_then(|h| h.moving_to).map(undo::describe);
        }
        self
    }
}

/// Where a rewind goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewindTo {
    Point(Point),
    /// The newest exported point; the exports resume.
    Latest,
}

#[derive(Debug, Clone, Serialize)]
pub struct RewindReport {
    pub target: String,
    pub from: String,
    pub to: String,
    /// Entries undone or redone.
    pub steps: usize,
    /// Replica bytes written.
    pub bytes: u64,
    /// Whether the replica is now held (exports wait until `--latest`).
    pub held: bool,
    pub window: Window,
}

impl Live {
    pub fn new(name: &str, cfg: &UndoConfig) -> Live {
        Live {
            name: name.to_string(),
            dir: cfg.dir.clone(),
            limits: Limits {
                max_bytes: cfg.max_bytes.map(|s| s.0),
                max_age: cfg.max_age.map(|a| a.duration()),
            },
            store: None,
            made: RecordStats::default(),
        }
    }

    fn store(&mut self, state: &CursorState) -> Result<&mut UndoStore> {
        let epoch = state
            .undo_epoch
            .expect("an epoch is given before the store opens");
        if self.store.as_ref().is_none_or(|s| s.epoch() != epoch) {
            self.store = None;
            self.store = Some(UndoStore::open(&self.dir, &self.name, epoch, state.delta)?);
        }
        Ok(self.store.as_mut().expect("opened"))
    }

    /// Makes the entry of `delta` before it is applied (durable when this returns),
    /// giving the replica an epoch first if it has none. Undo that cannot be made is
    /// dropped, and the export goes on.
    pub fn before_apply(
        &mut self,
        cursor: &FileCursor,
        state: &mut CursorState,
        journal: &Journal,
        delta: u64,
        replicas: &HashMap<String, VolumeFile>,
    ) -> Result<()> {
        if state.undo_epoch.is_none() {
            state.undo_epoch = Some(undo::new_epoch()?);
            cursor.set(state)?;
        }
        let made = self.store(state).and_then(|s| {
            // An apply cut short whose entry is not here (its undo was dropped, or
            // its directory came back empty): the replica holds part of the delta,
            // and undo read from it now would be wrong.
            if state.applying == Some(delta) && !s.has(delta) {
                return Err(Error::NotFound(format!(
                    "the replica holds part of delta {delta} (an apply was cut short) and its undo is not kept"
                )));
            }
            s.record(journal, delta, replicas)
        });
        match made {
            Ok(stats) => {
                self.made += stats;
                Ok(())
            }
            Err(e) => self.lose(cursor, state, delta, e),
        }
    }

    /// Retires entries past the bounds, once `delta` is applied.
    pub fn after_apply(
        &mut self,
        cursor: &FileCursor,
        state: &mut CursorState,
        delta: u64,
    ) -> Result<()> {
        let limits = self.limits;
        let retired = self
            .store(state)
            .and_then(|s| s.retire(limits, crate::clock::now_ns()));
        match retired {
            Ok(_) => Ok(()),
            Err(e) => self.lose(cursor, state, delta, e),
        }
    }

    /// Drops the undo journal: a new epoch, durably, before anything else; the old
    /// files are removed when the store next opens (if the directory is there).
    fn lose(
        &mut self,
        cursor: &FileCursor,
        state: &mut CursorState,
        delta: u64,
        e: Error,
    ) -> Result<()> {
        tracing::warn!(undo_dir = %self.dir.display(), delta, error = %e,
            "cannot keep undo data: the undo journal is dropped, the replica stays live, and its window starts again at this delta");
        state.undo_epoch = Some(undo::new_epoch()?);
        state.undo_lost = Some(UndoLost {
            delta,
            reason: e.to_string(),
        });
        cursor.set(state)?;
        self.store = None;
        Ok(())
    }

    /// The window and the state of moves, for status. A store that cannot open
    /// shows an empty window and the reason.
    pub fn status(&mut self, state: &CursorState) -> LiveStatus {
        let dir = self.dir.clone();
        let (window, error) = match state.undo_epoch {
            None => (empty(state.delta), None),
            Some(_) => match self.store(state) {
                Ok(s) => (s.window(state.delta), None),
                Err(e) => (empty(state.delta), Some(e.to_string())),
            },
        };
        let undo_lost = match error {
            Some(reason) => Some(UndoLost {
                delta: state.delta,
                reason,
            }),
            None => state.undo_lost.clone().filter(|l| window.oldest <= l.delta),
        };
        LiveStatus {
            dir,
            window,
            held: state.held.map(|h| undo::describe(h.at)),
            moving_to: state.held.and_then(|h| h.moving_to).map(undo::describe),
            undo_lost,
            served: None,
            made: (self.made != RecordStats::default()).then_some(self.made),
        }
    }

    /// Moves the replica to `to` (a point of the window, or back to the newest).
    /// A move a crash cut short is finished first. Everything the move writes is
    /// read and checked before the replica changes.
    pub fn rewind(
        &mut self,
        cursor: &FileCursor,
        state: &mut CursorState,
        journal: &Journal,
        to: &RewindTo,
        replicas: &HashMap<String, VolumeFile>,
        progress: &dyn Progress,
    ) -> Result<RewindReport> {
        let target = self.name.clone();
        ready(&target, state)?;
        if let Some(Held {
            at,
            moving_to: Some(m),
        }) = state.held
        {
            eprintln!(
                "{target}: finishing the move from {} to {} that was cut short",
                undo::describe(at),
                undo::describe(m)
            );
            self.walk(state, at, m, replicas, progress)?;
            state.held = Some(Held {
                at: m,
                moving_to: None,
            });
            cursor.set(state)?;
        }
        let newest = Until::from(state.delta);
        let from = state.held.map_or(newest, |h| h.at);
        let dest = match to {
            RewindTo::Latest => newest,
            RewindTo::Point(p) => resolve(journal, p)?,
        };
        self.store(state)?.check_reach(dest, state.delta)?;
        // Checked before the replica is touched, and before the move is recorded.
        let steps = undo::path(from, dest);
        let total = self.walk_check(state, &steps, progress)?;
        state.held = Some(Held {
            at: from,
            moving_to: Some(dest),
        });
        cursor.set(state)?;
        progress.start("rewind", total);
        self.store(state)?.run(&steps, replicas, progress)?;
        progress.finish();
        let held = !matches!(to, RewindTo::Latest);
        state.held = held.then_some(Held {
            at: dest,
            moving_to: None,
        });
        cursor.set(state)?;
        Ok(RewindReport {
            target,
            from: undo::describe(from),
            to: undo::describe(dest),
            steps: steps.len(),
            bytes: total,
            held,
            window: self.store(state)?.window(state.delta),
        })
    }

    fn walk_check(
        &mut self,
        state: &CursorState,
        steps: &[undo::Step],
        progress: &dyn Progress,
    ) -> Result<u64> {
        let store = self.store(state)?;
        progress.start("check", 0);
        let total = store.check(steps, progress);
        progress.finish();
        total
    }

    fn walk(
        &mut self,
        state: &CursorState,
        from: Until,
        to: Until,
        replicas: &HashMap<String, VolumeFile>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let steps = undo::path(from, to);
        self.walk_check(state, &steps, progress)?;
        self.store(state)?.run(&steps, replicas, progress)
    }

    /// The exports of the replica as it was at `at`, for `cascade serve --at`.
    pub fn serve_at(
        &mut self,
        state: &CursorState,
        journal: &Journal,
        at: &Point,
        replicas: &HashMap<String, PathBuf>,
    ) -> Result<(Until, Vec<(String, undo::serve::PointExport)>)> {
        let target = self.name.clone();
        ready(&target, state)?;
        if let Some(Held {
            moving_to: Some(m), ..
        }) = state.held
        {
            return Err(Error::InvalidArgument(format!(
                "target `{target}` is part way through a move to {}: run `cascade rewind` to finish it first",
                undo::describe(m)
            )));
        }
        let dest = resolve(journal, at)?;
        let from = state.held.map_or(Until::from(state.delta), |h| h.at);
        let dir = self.dir.clone();
        let store = self.store(state)?;
        store.check_reach(dest, state.delta)?;
        let exports = store.serve_at(from, dest, replicas, &dir)?;
        Ok((dest, exports))
    }
}

/// Refuses to move or serve a replica with no undo yet, or one an apply left
/// part way into a delta.
fn ready(target: &str, state: &CursorState) -> Result<()> {
    if state.undo_epoch.is_none() {
        return Err(Error::NotFound(format!(
            "target `{target}` holds no undo yet: its window opens with the next delta it applies"
        )));
    }
    if let Some(a) = state.applying {
        return Err(Error::InvalidArgument(format!(
            "target `{target}` holds part of delta {a} (an export was cut short): \
             run `cascade export --target {target}` to finish it first"
        )));
    }
    Ok(())
}

/// Where `point` is in the journal; a delta the journal's retention pruned is
/// taken as named (the window says whether the undo journal still reaches it).
fn resolve(journal: &Journal, point: &Point) -> Result<Until> {
    match (journal.resolve_until(point), point) {
        (Err(Error::NotFound(_)), Point::Delta(d)) if *d < journal.first_delta() => {
            Ok(Until::from(*d))
        }
        (r, _) => r,
    }
}

fn empty(cursor: u64) -> Window {
    Window {
        oldest: cursor,
        newest: cursor,
        bytes: 0,
        entries: 0,
    }
}
