//! Progress of long work (a first full cycle, a replay, a restore, a verify), told to
//! whoever is watching.
//!
//! The library stays free of any user interface: it only says what it is doing and how
//! many bytes of how many are done. The caller decides what that looks like: the CLI
//! draws a bar for a person at a terminal, writes JSON lines for a supervisor, or shows
//! nothing; a daemon or a test passes [`NoProgress`].
//!
//! The contract, for implementations and callers alike:
//! - Work comes in phases. [`Progress::start`] opens one with the bytes it is expected
//!   to process and resets the count of done bytes to zero.
//! - [`Progress::inc`] adds bytes actually processed. Callers call it once per chunk
//!   or record (about a MiB), never per byte, so an implementation may take a lock
//!   or look at the clock in it.
//! - Where the work is found as it goes (the diff of an incremental cycle), the total
//!   grows with [`Progress::add_total`]; done never passes the total.
//! - [`Progress::finish`] ends the phase; a phase that completed has done == total.
//!   A failed operation may end without calling it.
//! - The watcher may ask the work to stop ([`Progress::stop_requested`]); a cycle
//!   and an export honour it, and other work may.

use std::sync::atomic::{AtomicBool, Ordering};

/// Receives progress of long operations. Methods take `&self` so one observer can be
/// shared; implementations keep their counts behind atomics or a lock.
pub trait Progress: Send + Sync {
    /// A phase named `phase` ("cycle", "check", "replay", ...) begins, expected to
    /// process `total_bytes`; done restarts at zero.
    fn start(&self, phase: &str, total_bytes: u64);
    /// The phase found `bytes` more to process than it expected.
    fn add_total(&self, bytes: u64);
    /// `bytes` more were processed.
    fn inc(&self, bytes: u64);
    /// The phase is over.
    fn finish(&self);
    /// Whoever watches wants the work to stop. Work that can stop safely asks where it
    /// can: a cycle between chunks, then fails with
    /// [`Error::Stopped`](crate::Error::Stopped) keeping nothing of itself (it drops
    /// its uncommitted records and its snapshot); an export between deltas, then
    /// reports that it stopped. The daemon asks through [`StopWhen`].
    fn stop_requested(&self) -> bool {
        false
    }
    /// Whether anyone looks at the counts. Work may skip passes that exist only to
    /// find a total up front (the metadata pass of a first full cycle) when nobody does.
    fn watched(&self) -> bool {
        true
    }
}

/// Shows nothing: for daemons, tests and library callers that do not watch.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _phase: &str, _total_bytes: u64) {}
    fn add_total(&self, _bytes: u64) {}
    fn inc(&self, _bytes: u64) {}
    fn finish(&self) {}
    fn watched(&self) -> bool {
        false
    }
}

/// Shows nothing, and asks the work to stop once the flag is set: how the daemon
/// stops the cycles and exports it runs.
pub struct StopWhen<'a>(pub &'a AtomicBool);

impl Progress for StopWhen<'_> {
    fn start(&self, _phase: &str, _total_bytes: u64) {}
    fn add_total(&self, _bytes: u64) {}
    fn inc(&self, _bytes: u64) {}
    fn finish(&self) {}
    fn stop_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn watched(&self) -> bool {
        false
    }
}

/// The caller's progress, asking the work to stop also once `flag` is set: how a
/// cycle stops at max-freeze, and `cascade split` stops its base on a signal.
pub struct StopAlso<'a> {
    pub progress: &'a dyn Progress,
    pub flag: &'a AtomicBool,
}

impl Progress for StopAlso<'_> {
    fn start(&self, phase: &str, total_bytes: u64) {
        self.progress.start(phase, total_bytes)
    }
    fn add_total(&self, bytes: u64) {
        self.progress.add_total(bytes)
    }
    fn inc(&self, bytes: u64) {
        self.progress.inc(bytes)
    }
    fn finish(&self) {
        self.progress.finish()
    }
    fn stop_requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || self.progress.stop_requested()
    }
    fn watched(&self) -> bool {
        self.progress.watched()
    }
}
