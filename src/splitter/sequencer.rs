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
//! The queue is bounded in bytes: past the bound a write, once numbered, waits for
//! the shipper to take it before it is acknowledged (in this version a journal that
//! falls behind slows the writers down). It waits after its number, not before, so a
//! hold never waits on a full queue.
//!
//! Writers and the shipper wait on condvars of their own, and each is woken only
//! when something it waits for may have changed (writers only while one waits; the
//! shipper when the queue stops being empty, fills a batch, or it is asked
//! something), so a busy group does not pay a wake-up per write.
use crate::clock;
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
    fn cost(&self) -> u64 {
        match &self.change {
            Change::Data(d) => d.len() as u64,
            Change::Zero(_) => 64,
        }
    }
}

/// A write that entered and is not numbered yet.
#[must_use = "a ticket must be numbered or abandoned, or overlapping writes wait forever"]
pub struct Ticket {
    id: u64,
    volume: u16,
    offset: u64,
}

struct Range {
    id: u64,
    volume: u16,
    start: u64,
    end: u64,
}

/// What the shipper takes: writes in number order, and what it was asked to do (place
/// a bookmark, lend the journal writer), each to be done after them.
pub struct Batch<B> {
    pub writes: Vec<Write>,
    pub asked: Vec<B>,
    /// No more writes will come: ship these and stop.
    pub closed: bool,
}

struct State<B> {
    last: u64,
    next_ticket: u64,
    in_flight: Vec<Range>,
    holds: u32,
    /// The last write numbered when the latest hold began.
    held_at: u64,
    queue: VecDeque<Write>,
    queued: u64,
    /// The last write the shipper took.
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
}

/// One per split group; every volume's export shares it. `B` is what a request of
/// the shipper (a bookmark, work on the journal writer) carries to it.
pub struct Sequencer<B> {
    st: Mutex<State<B>>,
    /// Writers wait here: for an overlapping write, a hold, the queue.
    writers: Condvar,
    /// The shipper waits here for writes to take.
    shipper: Condvar,
    max_queued: u64,
}

impl<B> Sequencer<B> {
    /// Numbers writes from `last + 1`; past `max_queued` bytes queued, a numbered
    /// write waits for the shipper to take it before it is acknowledged.
    pub fn new(last: u64, max_queued: u64) -> Sequencer<B> {
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
            }),
            writers: Condvar::new(),
            shipper: Condvar::new(),
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

    /// Numbers a write that reached its volume and queues it; returns its number,
    /// and whether the queue is over its bound, when the write may be acknowledged
    /// only after [`Sequencer::wait_taken`].
    pub fn number(&self, t: Ticket, change: Change) -> (u64, bool) {
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
        let w = Write {
            write: g.last,
            time_ns: clock::now_ns(),
            ..w
        };
        let was_empty = g.queue.is_empty();
        g.queued += cost;
        g.oldest.get_or_insert_with(Instant::now);
        g.queue.push_back(w);
        let n = g.last;
        g.in_flight.retain(|r| r.id != t.id);
        self.wake_writers(&g);
        if was_empty || g.queued >= g.batch_at {
            self.shipper.notify_one();
        }
        (n, Self::over(&g, self.max_queued, n))
    }

    /// Whether write `n` must wait for the shipper before its acknowledgement.
    /// Closed: nothing will take it, and the next base holds what it did.
    fn over(g: &State<B>, max_queued: u64, n: u64) -> bool {
        g.queued > max_queued && g.taken < n && !g.closed
    }

    /// Waits until the shipper took write `n`, or the queue is back under its bound.
    pub fn wait_taken(&self, n: u64) {
        let mut g = self.lock();
        while Self::over(&g, self.max_queued, n) {
            g = self.wait(g);
        }
    }

    /// Numbers and queues a write, waiting as [`Sequencer::number`] says.
    #[cfg(test)]
    pub fn number_and_wait(&self, t: Ticket, change: Change) -> u64 {
        let (n, over) = self.number(t, change);
        if over {
            self.wait_taken(n);
        }
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
    /// `1..=held_at()`.
    pub fn hold(&self) {
        let mut g = self.lock();
        g.holds += 1;
        while !g.in_flight.is_empty() {
            g = self.wait(g);
        }
        g.held_at = g.last;
    }

    pub fn release(&self) {
        let mut g = self.lock();
        g.holds = g.holds.saturating_sub(1);
        self.wake_writers(&g);
    }

    /// Drops the queued writes numbered up to `n`: a base delta captured after them
    /// holds what they did.
    pub fn drop_through(&self, n: u64) {
        let mut g = self.lock();
        let mut dropped = 0;
        while g.queue.front().is_some_and(|w| w.write <= n) {
            let w = g.queue.pop_front().expect("front exists");
            dropped += w.cost();
        }
        g.queued -= dropped;
        g.taken = g.taken.max(n);
        if g.queue.is_empty() {
            g.oldest = None;
        }
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
    }

    /// The next batch for the journal: waits until a write is queued (or the shipper
    /// is asked something, or the group closes), then until the oldest queued write
    /// has waited `commit_every`, `max_bytes` are queued, something is asked or the
    /// group closes; takes queued writes up to `max_bytes` (at least one).
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
        let mut writes = Vec::new();
        let mut taken = 0;
        while let Some(w) = g.queue.front() {
            if !writes.is_empty() && taken + w.cost() > max_bytes {
                break;
            }
            taken += w.cost();
            writes.push(g.queue.pop_front().expect("front exists"));
        }
        g.queued -= taken;
        if let Some(w) = writes.last() {
            g.taken = w.write;
        }
        // What is left is at least as old as what was taken: it goes next at once.
        if g.queue.is_empty() {
            g.oldest = None;
        }
        // A request (a bookmark) goes after every write numbered before it was made:
        // once the shipper has taken those, this batch's commit covers them.
        let taken_through = g.taken;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut g.asked)
            .into_iter()
            .partition(|(_, after)| *after <= taken_through);
        g.asked = waiting;
        let asked = ready.into_iter().map(|(b, _)| b).collect();
        let closed = g.closed && g.queue.is_empty() && g.asked.is_empty();
        // Writers waiting for the queue to shrink may go on.
        self.wake_writers(&g);
        drop(g);
        Batch {
            writes,
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

    #[test]
    fn numbers_follow_numbering_order_and_batches_keep_it() {
        let s = Seq::new(10, 1 << 20);
        let a = s.enter(0, 0, 4).unwrap();
        let b = s.enter(0, 100, 4).unwrap();
        // b reaches the volume first and is acknowledged first: it gets 11.
        assert_eq!(s.number_and_wait(b, Change::Data(vec![2; 4])), 11);
        assert_eq!(s.number_and_wait(a, Change::Zero(4)), 12);
        let batch = s.next_batch(Duration::ZERO, 1 << 20);
        let got: Vec<(u64, u64)> = batch.writes.iter().map(|w| (w.write, w.offset)).collect();
        assert_eq!(got, [(11, 100), (12, 0)]);
        assert!(!batch.closed);
    }

    #[test]
    fn an_overlapping_write_waits_for_the_one_in_flight() {
        let s = Arc::new(Seq::new(0, 1 << 20));
        let first = s.enter(1, 0, 4096).unwrap();
        let s2 = s.clone();
        let second = std::thread::spawn(move || {
            let t = s2.enter(1, 2048, 4096).unwrap();
            s2.number_and_wait(t, Change::Data(vec![9; 4096]))
        });
        std::thread::sleep(Duration::from_millis(50));
        // Another volume, or a range beside it, does not wait.
        let other = s.enter(0, 0, 4096).unwrap();
        s.abandon(other);
        let beside = s.enter(1, 8192, 10).unwrap();
        assert!(!second.is_finished());
        assert_eq!(s.number_and_wait(first, Change::Zero(4096)), 1);
        assert_eq!(second.join().unwrap(), 2);
        assert_eq!(s.number_and_wait(beside, Change::Zero(10)), 3);
    }

    #[test]
    fn a_hold_waits_for_writes_in_flight_and_stops_new_ones() {
        let s = Arc::new(Seq::new(0, 1 << 20));
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
        s.number_and_wait(t, Change::Zero(1));
        assert_eq!(holder.join().unwrap(), 1);
        let s3 = s.clone();
        let late = std::thread::spawn(move || {
            let t = s3.enter(0, 8, 1).unwrap();
            s3.number_and_wait(t, Change::Zero(1))
        });
        std::thread::sleep(Duration::from_millis(30));
        assert!(!late.is_finished(), "a held group admits no write");
        s.release();
        assert_eq!(late.join().unwrap(), 2);
    }

    #[test]
    fn the_queue_is_bounded_and_closing_drains_it() {
        let s = Arc::new(Seq::new(0, 8));
        let t = s.enter(0, 0, 8).unwrap();
        s.number_and_wait(t, Change::Data(vec![1; 8]));
        let s2 = s.clone();
        let blocked = std::thread::spawn(move || {
            let t = s2.enter(0, 100, 8).unwrap();
            s2.number_and_wait(t, Change::Data(vec![2; 8]))
        });
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !blocked.is_finished(),
            "over the bound: the write waits to be taken"
        );
        assert_eq!(s.last(), 2, "it was numbered all the same");
        assert_eq!(s.next_batch(Duration::ZERO, 1 << 20).writes.len(), 2);
        assert_eq!(blocked.join().unwrap(), 2);
        s.drop_through(1);
        s.ask("b");
        s.close();
        assert!(s.enter(0, 0, 1).is_err());
        let last = s.next_batch(Duration::from_secs(60), 1 << 20);
        assert_eq!(last.writes.len(), 0);
        assert_eq!(last.asked, ["b"]);
        assert!(last.closed);
    }

    #[test]
    fn a_bookmark_waits_until_the_writes_before_it_are_taken() {
        let s = Seq::new(0, 1 << 20);
        for i in 0..3 {
            let t = s.enter(0, i * 10, 10).unwrap();
            s.number_and_wait(t, Change::Data(vec![1; 10]));
        }
        s.ask("x");
        // Writes numbered after the request do not hold the bookmark back.
        for i in 3..6 {
            let t = s.enter(0, i * 10, 10).unwrap();
            s.number_and_wait(t, Change::Data(vec![1; 10]));
        }
        let first = s.next_batch(Duration::from_secs(60), 20);
        assert_eq!((first.writes.len(), first.asked.len()), (2, 0));
        let second = s.next_batch(Duration::from_secs(60), 20);
        assert_eq!((second.writes.len(), second.asked), (2, vec!["x"]));
    }
}
