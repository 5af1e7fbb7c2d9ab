//! Write numbering and the queue to the journal: the ordering core of a split group.
//!
//! A write *enters* (its range is registered; it waits while a write in flight
//! overlaps it, or while the group is held), reaches the volume, and is *numbered*:
//! under one lock it takes the group's next write number and joins the queue, and its
//! range is released. Only then is it acknowledged. So:
//! - numbers follow acknowledgement order, and a write sent after another's reply
//!   has a higher number (the other was numbered before its reply went out);
//! - of two overlapping writes, the one that reached the volume last has the higher
//!   number (the second waited for the first to be numbered before it began);
//! - the queue is in number order, so the journal is too.
//!
//! The queue is bounded in bytes, and a write never waits for it: one that would pass
//! the bound turns the group to **marking** (docs/journal-format.md, "Gaps"). From
//! then on writes are numbered but only marked in the dirty-region map, and the queue
//! carries a `GapBegin` after the last write it holds. Once the shipper has brought
//! the queue down (`shipped`), the group **resynchronises**: writes are queued again,
//! and the resynchroniser takes marked regions out of the map (`next_resync`), each
//! entered like a write so that no write in flight overlaps its read, and numbers
//! what it read like a write (`number_resync`). The read that empties the map is
//! followed in the queue by a `GapEnd`: the journal holds the volumes exactly there.
//!
//! Writers, the shipper and the resynchroniser wait on condvars of their own, and
//! each is woken only when something it waits for may have changed (writers only
//! while one waits; the shipper when the queue stops being empty, fills a batch, or
//! it is asked something), so a busy group does not pay a wake-up per write.
use super::dirty::DirtyMap;
use crate::clock;
use serde::Serialize;
use std::collections::VecDeque;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a write did to its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Data(Vec<u8>),
    /// The range reads as zeros (WRITE_ZEROES, TRIM).
    Zero(u64),
}

/// A numbered write, waiting to be journalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub write: u64,
    /// When it was numbered, just before its acknowledgement (Unix nanoseconds).
    pub time_ns: i64,
    pub volume: u16,
    pub offset: u64,
    pub change: Change,
}

impl Write {
    /// Bytes of memory the queue holds for it.
    pub(super) fn cost(&self) -> u64 {
        match &self.change {
            Change::Data(d) => d.len() as u64,
            Change::Zero(_) => 64,
        }
    }
}

/// What the queue carries to the shipper, in number order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Write(Write),
    /// Write order is lost after write `after`: the writes after it were marked.
    GapBegin {
        after: u64,
    },
    /// The journal holds the volumes exactly at write `at`, once what is queued
    /// before this is journalled: the gap ends.
    GapEnd {
        at: u64,
    },
}

impl Item {
    fn cost(&self) -> u64 {
        match self {
            Item::Write(w) => w.cost(),
            _ => 0,
        }
    }
}

/// Whether the group journals its writes one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Active,
    /// The journal fell behind: writes are only marked in the dirty-region map.
    Marking,
    /// Marked regions are read back into the journal; writes are queued again.
    Resyncing,
}

/// A write that entered and is not numbered yet.
#[must_use = "a ticket must be numbered or abandoned, or overlapping writes wait forever"]
pub struct Ticket {
    id: u64,
    volume: u16,
    offset: u64,
}

impl Ticket {
    pub fn volume(&self) -> u16 {
        self.volume
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

struct Range {
    id: u64,
    volume: u16,
    start: u64,
    end: u64,
}

/// What the shipper takes: items in number order, and what it was asked to do (place
/// a bookmark, lend the journal writer), each to be done after them.
pub struct Batch<B> {
    pub items: Vec<Item>,
    pub asked: Vec<B>,
    /// No more writes will come: ship these and stop.
    pub closed: bool,
}

/// How far behind the journal is, as `cascade status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Lag {
    pub mode: Option<Mode>,
    /// The last write journalled in order before the open gap, if one is open.
    pub gap_after: Option<u64>,
    /// Bytes of numbered writes queued for the journal.
    pub queued_bytes: u64,
    /// Bytes of volume marked and not read back yet.
    pub dirty_bytes: u64,
    /// Bytes read back into the journal by the resynchronisations so far.
    pub resynced_bytes: u64,
    /// Gaps opened since the splitter started.
    pub gaps: u64,
    /// Seconds since the oldest write acknowledged and not journalled in order was
    /// acknowledged (since the gap began, while one is open): what a loss of the
    /// primary would cost the journal, the recovery point objective.
    pub rpo_seconds: f64,
}

struct State<B> {
    last: u64,
    next_ticket: u64,
    in_flight: Vec<Range>,
    holds: u32,
    /// The last write numbered when the latest hold began.
    held_at: u64,
    queue: VecDeque<Item>,
    queued: u64,
    /// Every write up to this one is taken by the shipper, or was only marked.
    taken: u64,
    /// When the oldest queued write was numbered.
    oldest: Option<Instant>,
    /// What the shipper was asked to do, each with the last write numbered then.
    asked: Vec<(B, u64)>,
    closed: bool,
    /// Writers (and holds) waiting on `writers`.
    waiting: u32,
    /// The bytes at which the waiting shipper takes a batch at once.
    batch_at: u64,
    mode: Mode,
    dirty: DirtyMap,
    /// While a gap is open: the last write queued before it, and when it began.
    gap: Option<(u64, i64)>,
    gaps: u64,
    resynced: u64,
    /// Where the resynchroniser goes on in the map.
    cursor: (u16, u64),
}

/// One per split group; every volume's export shares it. `B` is what a request of
/// the shipper (a bookmark, work on the journal writer) carries to it.
pub struct Sequencer<B> {
    st: Mutex<State<B>>,
    /// Writers wait here: for an overlapping write, a hold.
    writers: Condvar,
    /// The shipper waits here for writes to take.
    shipper: Condvar,
    /// The resynchroniser waits here for marked regions to read back.
    resyncer: Condvar,
    max_queued: u64,
}

impl<B> Sequencer<B> {
    /// Numbers writes from `last + 1`; past `max_queued` bytes queued, writes are
    /// marked in `dirty` (an empty map of the group's volumes) instead.
    pub fn new(last: u64, max_queued: u64, dirty: DirtyMap) -> Sequencer<B> {
        Sequencer {
            st: Mutex::new(State {
                last,
                next_ticket: 0,
                in_flight: Vec::new(),
                holds: 0,
                held_at: last,
                queue: VecDeque::new(),
                queued: 0,
                taken: last,
                oldest: None,
                asked: Vec::new(),
                closed: false,
                waiting: 0,
                batch_at: u64::MAX,
                mode: Mode::Active,
                dirty,
                gap: None,
                gaps: 0,
                resynced: 0,
                cursor: (0, 0),
            }),
            writers: Condvar::new(),
            shipper: Condvar::new(),
            resyncer: Condvar::new(),
            max_queued,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A writer's (or a hold's) wait, counted so that nobody is woken in vain.
    fn wait<'a>(&self, mut g: MutexGuard<'a, State<B>>) -> MutexGuard<'a, State<B>> {
        g.waiting += 1;
        let mut g = self.writers.wait(g).unwrap_or_else(|e| e.into_inner());
        g.waiting -= 1;
        g
    }

    /// Wakes the writers, if one waits.
    fn wake_writers(&self, g: &State<B>) {
        if g.waiting > 0 {
            self.writers.notify_all();
        }
    }

    /// Whether a write of this range must wait: one in flight overlaps it, or the
    /// group is held.
    fn blocked(g: &State<B>, volume: u16, offset: u64, end: u64) -> bool {
        g.holds > 0
            || g.in_flight
                .iter()
                .any(|r| r.volume == volume && r.start < end && offset < r.end)
    }

    fn register(g: &mut State<B>, volume: u16, offset: u64, end: u64) -> Ticket {
        let id = g.next_ticket;
        g.next_ticket += 1;
        g.in_flight.push(Range {
            id,
            volume,
            start: offset,
            end,
        });
        Ticket { id, volume, offset }
    }

    /// [`Sequencer::enter`] without waiting: None when it would wait.
    pub fn try_enter(&self, volume: u16, offset: u64, len: u64) -> io::Result<Option<Ticket>> {
        let end = offset + len;
        let mut g = self.lock();
        if g.closed {
            return Err(io::Error::from_raw_os_error(libc::ESHUTDOWN));
        }
        if Self::blocked(&g, volume, offset, end) {
            return Ok(None);
        }
        Ok(Some(Self::register(&mut g, volume, offset, end)))
    }

    /// Registers a write of `len` bytes at `offset` of `volume`, once no write in
    /// flight overlaps it and the group is not held. Fails with `ESHUTDOWN` once the
    /// group is closed.
    pub fn enter(&self, volume: u16, offset: u64, len: u64) -> io::Result<Ticket> {
        let end = offset + len;
        let mut g = self.lock();
        loop {
            if g.closed {
                return Err(io::Error::from_raw_os_error(libc::ESHUTDOWN));
            }
            if !Self::blocked(&g, volume, offset, end) {
                break;
            }
            g = self.wait(g);
        }
        Ok(Self::register(&mut g, volume, offset, end))
    }

    /// Numbers a write that reached its volume, and queues it or (marking) marks
    /// its range; returns its number. It may be acknowledged at once.
    pub fn number(&self, t: Ticket, change: Change) -> u64 {
        let len = match &change {
            Change::Data(d) => d.len() as u64,
            Change::Zero(n) => *n,
        };
        let w = Write {
            write: 0,
            time_ns: 0,
            volume: t.volume,
            offset: t.offset,
            change,
        };
        let cost = w.cost();
        let mut g = self.lock();
        g.last += 1;
        let n = g.last;
        // One write larger than the whole queue still goes in when it is empty.
        let over = g.queued > 0 && g.queued + cost > self.max_queued;
        match g.mode {
            Mode::Active if over => {
                // The bound would be passed: the gap begins after the last write queued.
                g.mode = Mode::Marking;
                g.gap = Some((n - 1, clock::now_ns()));
                g.gaps += 1;
                g.queue.push_back(Item::GapBegin { after: n - 1 });
                // The queue holds writes (it is over its bound): the shipper takes
                // the marker with them.
                self.shipper.notify_one();
                Self::mark(&mut g, t.volume, t.offset, len);
                tracing::warn!(after = n - 1, queued = g.queued,
                    "the journal fell behind: the splitter marks writes in its dirty-region map until it catches up");
            }
            Mode::Resyncing if over => {
                g.mode = Mode::Marking;
                Self::mark(&mut g, t.volume, t.offset, len);
            }
            Mode::Marking => Self::mark(&mut g, t.volume, t.offset, len),
            Mode::Active | Mode::Resyncing => {
                let w = Write {
                    write: n,
                    time_ns: clock::now_ns(),
                    ..w
                };
                self.queue(&mut g, Item::Write(w));
            }
        }
        g.in_flight.retain(|r| r.id != t.id);
        self.wake_writers(&g);
        n
    }

    fn mark(g: &mut State<B>, volume: u16, offset: u64, len: u64) {
        g.dirty.mark(volume, offset, len);
        // A marked write is journalled (read back) later: nothing waits for it.
        if g.queue.is_empty() {
            g.taken = g.last;
        }
    }

    fn queue(&self, g: &mut State<B>, item: Item) {
        let was_empty = g.queue.is_empty();
        g.queued += item.cost();
        g.oldest.get_or_insert_with(Instant::now);
        g.queue.push_back(item);
        if was_empty || g.queued >= g.batch_at {
            self.shipper.notify_one();
        }
    }

    /// Starts in a gap, as a restart after a crash does: the journal holds the
    /// writes in order up to `after` (or it is in a gap already, `open`), numbers
    /// go on after the `last` this sequencer was made with, and `dirty` marks where
    /// the volumes may differ from the journal. Those are read back first.
    pub fn resume_gap(&self, after: u64, open: bool, dirty: &DirtyMap) {
        let mut g = self.lock();
        g.gaps += 1;
        g.gap = Some((after, clock::now_ns()));
        if !open {
            g.queue.push_back(Item::GapBegin { after });
        }
        g.dirty.union(dirty);
        if g.dirty.is_empty() {
            // Nothing to read back: the journal holds the volumes at the last number.
            let at = g.last;
            g.queue.push_back(Item::GapEnd { at });
            g.gap = None;
        } else {
            g.mode = Mode::Resyncing;
        }
        g.oldest = Some(Instant::now());
        g.taken = g.last;
        self.shipper.notify_one();
        self.resyncer.notify_one();
    }

    /// Numbers a write that failed on its volume, which may have changed part of its
    /// range, and marks the range: the journal reads back what the volume holds
    /// there. A group journalling write by write opens a gap for it.
    pub fn number_failed(&self, t: Ticket, len: u64) -> u64 {
        let mut g = self.lock();
        g.last += 1;
        let n = g.last;
        if g.mode == Mode::Active {
            g.mode = Mode::Marking;
            g.gap = Some((n - 1, clock::now_ns()));
            g.gaps += 1;
            g.queue.push_back(Item::GapBegin { after: n - 1 });
            g.oldest.get_or_insert_with(Instant::now);
            self.shipper.notify_one();
        }
        Self::mark(&mut g, t.volume, t.offset, len);
        g.in_flight.retain(|r| r.id != t.id);
        self.wake_writers(&g);
        n
    }

    /// Lets go of a write that failed before it changed anything known: it is not
    /// numbered.
    pub fn abandon(&self, t: Ticket) {
        let mut g = self.lock();
        g.in_flight.retain(|r| r.id != t.id);
        self.wake_writers(&g);
    }

    /// Stops new writes from entering and waits until every write in flight is
    /// numbered: from then until `release`, the volumes hold exactly writes
    /// `1..=held_at()`. The holder captures them whole (a base delta), so what is
    /// queued or marked so far is dropped, and a gap open is closed.
    pub fn hold(&self) {
        let mut g = self.paused();
        g.held_at = g.last;
        g.queue.clear();
        g.queued = 0;
        g.oldest = None;
        g.taken = g.last;
        g.mode = Mode::Active;
        g.gap = None;
        g.dirty.clear();
    }

    /// Stops new writes from entering and waits until every write in flight is
    /// numbered, keeping what is queued: until `release`, no write is numbered, so
    /// a bookmark asked meanwhile lies after exactly the writes numbered so far (a
    /// grid's cut). Returns the last of them; None (and not paused) when the
    /// writes in flight are not all numbered within `limit`: a stalled write must
    /// not hold the whole group back for long.
    pub fn pause(&self, limit: Duration) -> Option<u64> {
        let deadline = Instant::now() + limit;
        let mut g = self.lock();
        g.holds += 1;
        while !g.in_flight.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                g.holds -= 1;
                self.wake_writers(&g);
                return None;
            }
            g.waiting += 1;
            g = self
                .writers
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            g.waiting -= 1;
        }
        Some(g.last)
    }

    fn paused(&self) -> MutexGuard<'_, State<B>> {
        let mut g = self.lock();
        g.holds += 1;
        while !g.in_flight.is_empty() {
            g = self.wait(g);
        }
        g
    }

    /// Ends a `hold` or a `pause`.
    pub fn release(&self) {
        let mut g = self.lock();
        g.holds = g.holds.saturating_sub(1);
        self.wake_writers(&g);
    }

    /// Drops everything queued: the journal will not take it (it failed while the
    /// group stops; the next base holds what the writes did).
    pub fn drop_queue(&self) {
        let mut g = self.lock();
        g.queue.clear();
        g.queued = 0;
        g.oldest = None;
        g.taken = g.last;
        self.wake_writers(&g);
    }

    /// The last write numbered when the latest `hold` took effect.
    pub fn held_at(&self) -> u64 {
        self.lock().held_at
    }

    /// The last write numbered.
    pub fn last(&self) -> u64 {
        self.lock().last
    }

    /// Bytes of numbered writes the shipper has not taken yet.
    pub fn queued(&self) -> u64 {
        self.lock().queued
    }

    pub fn mode(&self) -> Mode {
        self.lock().mode
    }

    /// How far behind the journal is.
    pub fn lag(&self) -> Lag {
        let g = self.lock();
        let now = clock::now_ns();
        let rpo_ns = match (g.gap, g.queue.front()) {
            (Some((_, since)), _) => now - since,
            (None, _) => g.oldest.map_or(0, |t| t.elapsed().as_nanos() as i64),
        };
        Lag {
            mode: Some(g.mode),
            gap_after: g.gap.map(|(a, _)| a),
            queued_bytes: g.queued,
            dirty_bytes: g.dirty.dirty_bytes(),
            resynced_bytes: g.resynced,
            gaps: g.gaps,
            rpo_seconds: rpo_ns.max(0) as f64 / 1e9,
        }
    }

    /// Told by the shipper after each commit: once a marking group's queue is down
    /// to a quarter of its bound, it resynchronises.
    pub fn shipped(&self) {
        let mut g = self.lock();
        if g.mode == Mode::Marking && g.queued <= self.max_queued / 4 && !g.closed {
            g.mode = Mode::Resyncing;
            tracing::info!(
                dirty_bytes = g.dirty.dirty_bytes(),
                "the journal caught up: resynchronising the marked regions"
            );
            self.resyncer.notify_one();
        }
    }

    /// The next marked region to read back, entered like a write: waits until the
    /// group resynchronises and its queue is under half its bound. Its range is out
    /// of the map. None once the group closes.
    pub fn next_resync(&self, max_len: u64) -> Option<(Ticket, u64)> {
        let mut g = self.lock();
        loop {
            if g.closed {
                return None;
            }
            let ready = g.mode == Mode::Resyncing
                && g.queued < self.max_queued / 2
                && !g.dirty.is_empty()
                && g.holds == 0;
            if ready {
                let from = g.cursor;
                let (volume, offset, len) = g.dirty.take_run(from, max_len).expect("not empty");
                if !Self::blocked(&g, volume, offset, offset + len) {
                    g.cursor = (volume, offset + len);
                    return Some((Self::register(&mut g, volume, offset, offset + len), len));
                }
                // A write in flight overlaps it: put it back, and wait for a change.
                g.dirty.mark(volume, offset, len);
            }
            g = self
                .resyncer
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Numbers what a resynchronisation read (ticket `t`) and queues it; if the map
    /// is empty then, the gap ends at it.
    pub fn number_resync(&self, t: Ticket, change: Change) -> u64 {
        let mut g = self.lock();
        g.last += 1;
        let n = g.last;
        let w = Write {
            write: n,
            time_ns: clock::now_ns(),
            volume: t.volume,
            offset: t.offset,
            change,
        };
        g.resynced += match &w.change {
            Change::Data(d) => d.len() as u64,
            Change::Zero(l) => *l,
        };
        self.queue(&mut g, Item::Write(w));
        if g.mode == Mode::Resyncing && g.dirty.is_empty() {
            // Right behind the read, so that one batch takes both.
            g.queue.push_back(Item::GapEnd { at: n });
            g.mode = Mode::Active;
            g.gap = None;
            tracing::info!(
                at = n,
                "resynchronised: the journal holds the volumes again at this write"
            );
        }
        g.in_flight.retain(|r| r.id != t.id);
        self.wake_writers(&g);
        n
    }

    /// Puts a region whose read failed back in the map, and lets its ticket go.
    pub fn abandon_resync(&self, t: Ticket, len: u64) {
        let mut g = self.lock();
        let (volume, offset) = (t.volume, t.offset);
        g.dirty.mark(volume, offset, len);
        g.in_flight.retain(|r| r.id != t.id);
        self.wake_writers(&g);
    }

    /// Asks the shipper to do `b` (place a bookmark, say) after every write numbered
    /// so far.
    pub fn ask(&self, b: B) {
        let mut g = self.lock();
        // Closed: the shipper may be gone. What is dropped here tells its asker so
        // (a bookmark's reply channel closes), instead of waiting forever.
        if g.closed {
            return;
        }
        let after = g.last;
        g.asked.push((b, after));
        drop(g);
        self.shipper.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// No write enters from now on; the shipper takes what is queued and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.writers.notify_all();
        self.shipper.notify_one();
        self.resyncer.notify_all();
    }

    /// The next batch for the journal: waits until a write is queued (or the shipper
    /// is asked something, or the group closes), then until the oldest queued write
    /// has waited `commit_every`, `max_bytes` are queued, something is asked or the
    /// group closes; takes queued items up to `max_bytes` (at least one).
    pub fn next_batch(&self, commit_every: Duration, max_bytes: u64) -> Batch<B> {
        let mut g = self.lock();
        loop {
            let ready = !g.asked.is_empty()
                || g.closed
                || g.queued >= max_bytes
                || g.oldest.is_some_and(|t| t.elapsed() >= commit_every);
            if ready {
                break;
            }
            g.batch_at = max_bytes;
            g = match g.oldest {
                None => self.shipper.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let left = commit_every.saturating_sub(t.elapsed());
                    self.shipper
                        .wait_timeout(g, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            g.batch_at = u64::MAX;
        }
        let mut items = Vec::new();
        let mut taken = 0;
        // A bookmark lies exactly after the writes numbered when it was asked for (a
        // grid's cut), so a batch ends there; the writes after it go in the next.
        let cut = g.asked.iter().map(|(_, after)| *after).min();
        let mut stopped_at = None;
        while let Some(w) = g.queue.front() {
            // A marker costs nothing: one right behind the last write taken goes too.
            if !items.is_empty() && taken + w.cost() > max_bytes {
                break;
            }
            let past_cut = match (cut, w) {
                (Some(cut), Item::Write(w)) if w.write > cut => {
                    stopped_at = Some(w.write);
                    true
                }
                // A gap that begins after the cut begins after the bookmark.
                (Some(cut), Item::GapBegin { after }) => *after >= cut,
                (Some(cut), Item::GapEnd { at }) => *at > cut,
                _ => false,
            };
            if past_cut {
                break;
            }
            taken += w.cost();
            items.push(g.queue.pop_front().expect("front exists"));
        }
        g.queued -= taken;
        if g.queue.is_empty() {
            // What was numbered and not queued was marked.
            g.taken = g.last;
            g.oldest = None;
        } else if let Some(n) = items.iter().rev().find_map(|i| match i {
            Item::Write(w) => Some(w.write),
            _ => None,
        }) {
            g.taken = n;
        }
        // Stopped at the cut: every write before the one left first in the queue
        // was taken or only marked, so requests up to it are ready (a request whose
        // writes were marked must not wait for ever).
        if let Some(w) = stopped_at {
            g.taken = g.taken.max(w - 1);
        }
        // A request (a bookmark) goes after every write numbered before it was made,
        // and before the later ones: once the shipper has taken those, this batch's
        // commit covers them.
        let taken_through = g.taken;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut g.asked)
            .into_iter()
            .partition(|(_, after)| *after <= taken_through);
        g.asked = waiting;
        let asked = ready.into_iter().map(|(b, _)| b).collect();
        let closed = g.closed && g.queue.is_empty() && g.asked.is_empty();
        if g.queued < self.max_queued / 2 && g.mode == Mode::Resyncing {
            self.resyncer.notify_one();
        }
        drop(g);
        Batch {
            items,
            asked,
            closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type Seq = Sequencer<&'static str>;

    fn map() -> DirtyMap {
        DirtyMap::new(&[1 << 20, 1 << 20], 4096)
    }

    fn writes(b: &Batch<&'static str>) -> Vec<u64> {
        b.items
            .iter()
            .filter_map(|i| match i {
                Item::Write(w) => Some(w.write),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn numbers_follow_numbering_order_and_batches_keep_it() {
        let s = Seq::new(10, 1 << 20, map());
        let a = s.enter(0, 0, 4).unwrap();
        let b = s.enter(0, 100, 4).unwrap();
        // b reaches the volume first and is acknowledged first: it gets 11.
        assert_eq!(s.number(b, Change::Data(vec![2; 4])), 11);
        assert_eq!(s.number(a, Change::Zero(4)), 12);
        let batch = s.next_batch(Duration::ZERO, 1 << 20);
        let got: Vec<(u64, u64)> = batch
            .items
            .iter()
            .map(|i| match i {
                Item::Write(w) => (w.write, w.offset),
                i => panic!("{i:?}"),
            })
            .collect();
        assert_eq!(got, [(11, 100), (12, 0)]);
        assert!(!batch.closed);
    }

    #[test]
    fn an_overlapping_write_waits_for_the_one_in_flight() {
        let s = Arc::new(Seq::new(0, 1 << 20, map()));
        let first = s.enter(1, 0, 4096).unwrap();
        let s2 = s.clone();
        let second = std::thread::spawn(move || {
            let t = s2.enter(1, 2048, 4096).unwrap();
            s2.number(t, Change::Data(vec![9; 4096]))
        });
        std::thread::sleep(Duration::from_millis(50));
        // Another volume, or a range beside it, does not wait.
        let other = s.enter(0, 0, 4096).unwrap();
        s.abandon(other);
        let beside = s.enter(1, 8192, 10).unwrap();
        assert!(!second.is_finished());
        assert_eq!(s.number(first, Change::Zero(4096)), 1);
        assert_eq!(second.join().unwrap(), 2);
        assert_eq!(s.number(beside, Change::Zero(10)), 3);
    }

    #[test]
    fn a_hold_waits_for_writes_in_flight_and_stops_new_ones() {
        let s = Arc::new(Seq::new(0, 1 << 20, map()));
        let t = s.enter(0, 0, 1).unwrap();
        let s2 = s.clone();
        let holder = std::thread::spawn(move || {
            s2.hold();
            s2.held_at()
        });
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !holder.is_finished(),
            "the hold waits for the write in flight"
        );
        s.number(t, Change::Zero(1));
        assert_eq!(holder.join().unwrap(), 1);
        let s3 = s.clone();
        let late = std::thread::spawn(move || {
            let t = s3.enter(0, 8, 1).unwrap();
            s3.number(t, Change::Zero(1))
        });
        std::thread::sleep(Duration::from_millis(30));
        assert!(!late.is_finished(), "a held group admits no write");
        s.release();
        assert_eq!(late.join().unwrap(), 2);
    }

    #[test]
    fn past_its_bound_the_group_marks_then_resynchronises_and_the_gap_ends() {
        let s = Arc::new(Seq::new(0, 256, map()));
        let t = s.enter(0, 0, 200).unwrap();
        assert_eq!(s.number(t, Change::Data(vec![1; 200])), 1);
        // Over the bound: numbered, acknowledged at once, only marked.
        let t = s.enter(1, 5000, 100).unwrap();
        assert_eq!(s.number(t, Change::Data(vec![2; 100])), 2);
        assert_eq!(s.mode(), Mode::Marking);
        assert_eq!(s.lag().gap_after, Some(1));
        let b = s.next_batch(Duration::ZERO, 1 << 20);
        assert_eq!(b.items[1], Item::GapBegin { after: 1 });
        assert_eq!(writes(&b), [1]);
        // Nothing to read back until the shipper says it caught up.
        s.shipped();
        assert_eq!(s.mode(), Mode::Resyncing);
        // A write while resynchronising is queued again, in order.
        let t = s.enter(0, 100, 4).unwrap();
        assert_eq!(s.number(t, Change::Zero(4)), 3);
        let (r, len) = s.next_resync(1 << 20).unwrap();
        assert_eq!(len, 4096, "the grain write 2 touched");
        // A write overlapping the read waits for it.
        let s2 = s.clone();
        let late = std::thread::spawn(move || {
            let t = s2.enter(1, 4096, 10).unwrap();
            s2.number(t, Change::Zero(10))
        });
        std::thread::sleep(Duration::from_millis(30));
        assert!(!late.is_finished());
        assert_eq!(s.number_resync(r, Change::Zero(4096)), 4);
        assert_eq!(late.join().unwrap(), 5);
        assert_eq!(s.mode(), Mode::Active);
        let b = s.next_batch(Duration::ZERO, 1 << 20);
        assert_eq!(writes(&b), [3, 4, 5]);
        assert_eq!(b.items[2], Item::GapEnd { at: 4 }, "right behind the read");
        assert_eq!(s.lag().resynced_bytes, 4096);
    }

    #[test]
    fn a_write_larger_than_the_whole_queue_goes_in_when_it_is_empty() {
        let s = Seq::new(0, 64, map());
        let t = s.enter(0, 0, 100).unwrap();
        s.number(t, Change::Data(vec![1; 100]));
        assert_eq!((s.mode(), s.queued()), (Mode::Active, 100));
        let t = s.enter(0, 4096, 1).unwrap();
        s.number(t, Change::Data(vec![2]));
        assert_eq!(
            s.mode(),
            Mode::Marking,
            "behind it, the queue is over its bound"
        );
    }

    #[test]
    fn a_hold_drops_what_is_queued_or_marked_and_closing_drains() {
        let s = Seq::new(0, 8, map());
        for i in 0..3 {
            let t = s.enter(0, i * 4096, 8).unwrap();
            s.number(t, Change::Data(vec![1; 8]));
        }
        assert_eq!(s.mode(), Mode::Marking);
        s.hold();
        s.release();
        assert_eq!(
            (s.mode(), s.queued(), s.lag().dirty_bytes),
            (Mode::Active, 0, 0)
        );
        s.ask("b");
        s.close();
        assert!(s.enter(0, 0, 1).is_err());
        assert!(s.next_resync(1 << 20).is_none());
        let last = s.next_batch(Duration::from_secs(60), 1 << 20);
        assert_eq!(last.items.len(), 0);
        assert_eq!(last.asked, ["b"]);
        assert!(last.closed);
    }

    #[test]
    fn a_bookmark_waits_until_the_writes_before_it_are_taken() {
        let s = Seq::new(0, 1 << 20, map());
        for i in 0..3 {
            let t = s.enter(0, i * 10, 10).unwrap();
            s.number(t, Change::Data(vec![1; 10]));
        }
        s.ask("x");
        // Writes numbered after the request do not hold the bookmark back.
        for i in 3..6 {
            let t = s.enter(0, i * 10, 10).unwrap();
            s.number(t, Change::Data(vec![1; 10]));
        }
        let first = s.next_batch(Duration::from_secs(60), 20);
        assert_eq!((first.items.len(), first.asked.len()), (2, 0));
        // The batch ends at the bookmark: it lies after write 3 exactly, not after
        // whatever later write the batch could also have taken.
        let second = s.next_batch(Duration::from_secs(60), 20);
        assert_eq!((second.items.len(), second.asked), (1, vec!["x"]));
        let third = s.next_batch(Duration::from_secs(60), 20);
        assert_eq!((third.items.len(), third.asked.len()), (2, 0));
    }
}
