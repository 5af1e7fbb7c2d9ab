//! The shipper: takes batches of numbered writes from the sequencer and journals each
//! as one split delta (group commit: one fsync per delta, not per write), then places
//! the bookmarks asked for after them.
use super::intent::Intents;
use super::sequencer::{Change, Item, Sequencer, Write};
use super::{Asked, Live};
use crate::error::{Error, Result};
use crate::journal::record::{Gap, Stamp, VolumeInfo, Writes};
use crate::journal::JournalWriter;
use std::sync::Arc;
use std::time::Duration;

/// Largest batch journalled as one delta: bounds the time one commit takes, and so
/// how long a bookmark or a stop waits.
pub const MAX_BATCH: u64 = 64 << 20;
/// A batch whose first write has waited this long (or that leaves another full
/// batch queued behind it, or that is read back after marking) is stored without
/// compression: the shipper is behind, and
/// a copy is several times cheaper than zstd on data that barely compresses. It
/// compresses again once it has caught up.
const STORE_WHEN_BEHIND: Duration = Duration::from_millis(500);
/// The longest wait between attempts at a failing commit: the group marks
/// meanwhile, and a journal that has room again should be used again soon.
const RETRY_AT_MOST: Duration = Duration::from_millis(250);
/// Attempts at a failing commit once the group is stopping, before the writes still
/// queued are given up (the next base holds them: they are on the volumes).
const STOP_ATTEMPTS: u32 = 5;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ShipReport {
    pub deltas: u64,
    pub writes: u64,
    /// The last write journalled (0 when none was).
    pub last_write: u64,
    pub bookmarks: u64,
    /// Deltas whose data was stored without compression, the shipper being behind.
    pub stored_deltas: u64,
    /// Gaps opened: times the journal fell behind and writes were only marked.
    pub gaps: u64,
    /// The journal ends in a gap: the next start reads the marked regions back.
    pub ends_in_gap: bool,
    /// From each write's numbering (just before its acknowledgement) to its delta's
    /// durable commit: what a crash of the primary could lose from the journal.
    pub commit_lag: CommitLag,
}

/// A histogram of the time from numbering to commit, in milliseconds: fixed buckets,
/// so its memory does not grow with the writes.
#[derive(Debug, Clone, Default)]
pub struct CommitLag {
    /// counts[i]: writes committed within i..i+1 ms; the last bucket holds the rest.
    counts: Vec<u64>,
    max_ms: f64,
}

const LAG_BUCKETS: usize = 10_000;

impl CommitLag {
    fn add(&mut self, ms: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LAG_BUCKETS];
        }
        self.counts[(ms.max(0.0) as usize).min(LAG_BUCKETS - 1)] += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    pub fn max_ms(&self) -> f64 {
        self.max_ms
    }

    /// The upper bound, in ms, of the bucket holding quantile `q` (0 with no writes).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.counts.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want && total > 0 {
                // The last bucket has no upper bound but the largest lag seen.
                if i == LAG_BUCKETS - 1 {
                    return self.max_ms;
                }
                return ((i + 1) as f64).min(self.max_ms.max(1.0));
            }
        }
        0.0
    }
}

impl serde::Serialize for CommitLag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CommitLag", 3)?;
        st.serialize_field("p50_ms", &self.quantile_ms(0.5))?;
        st.serialize_field("p99_ms", &self.quantile_ms(0.99))?;
        st.serialize_field("max_ms", &self.max_ms)?;
        st.end()
    }
}

pub struct Shipper {
    pub writer: JournalWriter,
    pub seq: Arc<Sequencer<Asked>>,
    pub volumes: Vec<VolumeInfo>,
    pub exact_from: u64,
    pub commit_every: Duration,
    /// Told each split delta's id once it is committed.
    pub committed: Option<Box<dyn Fn(u64) + Send>>,
    pub live: Arc<Live>,
    /// The first write of the next split delta.
    pub next_first: u64,
    /// A gap is open: the next split delta goes on in it...
    pub gap_open: bool,
    /// ...after this write (the last in order).
    pub gap_from: u64,
    /// The journal holds every write up to this one in order (the write-intent
    /// map's older epoch is cleared past it).
    pub consistent: u64,
    pub intents: Arc<Intents>,
}

impl Shipper {
    /// Ships until the group closes and its queue is empty.
    pub fn run(mut self) -> Result<ShipReport> {
        let mut report = ShipReport::default();
        loop {
            let batch = self.seq.next_batch(self.commit_every, MAX_BATCH);
            let first_time = batch.items.iter().find_map(|i| match i {
                Item::Write(w) => Some(w.time_ns),
                _ => None,
            });
            // Resynchronising (a gap is open) is being behind too.
            let behind = self.gap_open
                || self.seq.queued() >= MAX_BATCH
                || first_time.is_some_and(|t| {
                    crate::clock::now_ns() - t > STORE_WHEN_BEHIND.as_nanos() as i64
                });
            // One delta per part: a GapEnd ends one, so that it resumes at its end.
            let mut part: Vec<&Write> = Vec::new();
            let mut lost_after = self.gap_open.then(|| self.next_first - 1);
            let mut shipped = Ok(());
            for item in &batch.items {
                match item {
                    Item::Write(w) => part.push(w),
                    Item::GapBegin { after } => {
                        lost_after.get_or_insert(*after);
                        self.gap_open = true;
                        self.gap_from = *after;
                        report.gaps += 1;
                    }
                    Item::GapEnd { at } => {
                        shipped = shipped.and_then(|()| {
                            self.ship_part(&part, lost_after, Some(*at), !behind, &mut report)
                        });
                        part.clear();
                        lost_after = None;
                        self.gap_open = false;
                    }
                }
            }
            if !part.is_empty() {
                shipped = shipped
                    .and_then(|()| self.ship_part(&part, lost_after, None, !behind, &mut report));
            }
            if let Err(e) = shipped {
                // Stopping, and the journal still fails: what is queued is on the
                // volumes, and the next start's base holds it.
                self.seq.drop_queue();
                for a in batch.asked {
                    if let Asked::Bookmark(b) = a {
                        let _ = b.reply.send(Err(Error::Stopped(format!(
                            "bookmark `{}`: the journal failed",
                            b.name
                        ))));
                    }
                }
                return Err(e);
            }
            for a in batch.asked {
                match a {
                    Asked::Bookmark(b) if self.gap_open => {
                        let _ = b.reply.send(Err(in_gap(&b.name, self.gap_from)));
                    }
                    Asked::Bookmark(b) => {
                        let placed =
                            self.writer
                                .add_bookmark(&b.name, crate::clock::now_ns(), b.grid);
                        if placed.is_ok() {
                            report.bookmarks += 1;
                        }
                        // The asker may have given up; the bookmark stays all the same.
                        let _ = b.reply.send(placed);
                    }
                    Asked::Writer(job) => {
                        // A job that panics (a prune) fails alone, not the shipping.
                        let run = std::panic::AssertUnwindSafe(|| job(&mut self.writer));
                        if std::panic::catch_unwind(run).is_err() {
                            tracing::error!("a journal job of the splitter (a prune) panicked; shipping goes on");
                        }
                    }
                }
            }
            if batch.closed {
                report.ends_in_gap = self.gap_open;
                return Ok(report);
            }
            // A batch of markers only commits nothing, but may be what marking waited for.
            self.seq.shipped();
        }
    }

    /// Journals `writes` as one split delta after the last one; inside a gap from
    /// `lost_after` on, and resuming at `resumes_at` when the gap ends with it.
    fn ship_part(
        &mut self,
        writes: &[&Write],
        lost_after: Option<u64>,
        resumes_at: Option<u64>,
        compress: bool,
        report: &mut ShipReport,
    ) -> Result<()> {
        let Some(last) = resumes_at.or(writes.last().map(|w| w.write)) else {
            return Ok(());
        };
        let range = Writes {
            first_write: self.next_first,
            last_write: last,
            exact_from: self.exact_from,
            gap: lost_after.map(|l| Gap {
                lost_after: l,
                resumes: resumes_at.is_some(),
            }),
        };
        let time_ns = writes
            .first()
            .map_or_else(crate::clock::now_ns, |w| w.time_ns);
        report.stored_deltas += u64::from(!compress);
        let delta = self.ship_retrying(writes, range, time_ns, compress)?;
        if let (Some(c), Some(d)) = (&self.committed, delta) {
            c(d);
        }
        self.next_first = last + 1;
        match lost_after {
            None => self.consistent = last,
            Some(_) if resumes_at.is_some() => self.consistent = last,
            // In a gap: no further than where it began (writes after it may be only
            // marked, not read back yet).
            Some(l) => self.consistent = self.consistent.min(l),
        }
        self.intents.rotate(self.consistent);
        self.seq.shipped();
        let now = crate::clock::now_ns();
        for w in writes {
            report.commit_lag.add((now - w.time_ns) as f64 / 1e6);
        }
        report.deltas += 1;
        report.writes += writes.len() as u64;
        report.last_write = last;
        self.live
            .last_journalled
            .store(last, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Journals `writes`, trying again with backoff while the journal fails: the
    /// queue fills meanwhile, and the group marks writes instead. Returns the
    /// delta's id, unless it was committed without its index entry.
    fn ship_retrying(
        &mut self,
        writes: &[&Write],
        range: Writes,
        time_ns: i64,
        compress: bool,
    ) -> Result<Option<u64>> {
        let mut wait = Duration::from_millis(100);
        let mut attempts = 0;
        let bytes: u64 = writes.iter().map(|w| w.cost()).sum();
        let mut full = false;
        loop {
            // A full journal disk is retried often (room should be used soon), but an
            // attempt while it is still full is skipped: each would copy the batch.
            if full && !self.seq.is_closed() {
                let free = crate::sys::available_bytes(self.writer.journal().dir());
                if free.is_ok_and(|free| free < bytes + (1 << 20)) {
                    std::thread::sleep(wait);
                    continue;
                }
            }
            match self.ship(writes, range, time_ns, compress) {
                Ok(delta) => return Ok(Some(delta)),
                Err(e @ Error::Unindexed { .. }) => {
                    tracing::warn!(error = %e, "split delta committed without its index entry");
                    return Ok(None);
                }
                // The writer refuses the delta itself: trying again cannot help.
                Err(e @ Error::InvalidArgument(_)) => return Err(e),
                Err(e) => {
                    attempts += 1;
                    full = matches!(&e, Error::Io { cause, .. } if cause.raw_os_error() == Some(libc::ENOSPC));
                    if self.seq.is_closed() && attempts >= STOP_ATTEMPTS {
                        return Err(e);
                    }
                    // Said at the first failure and then every half minute or so, not
                    // at every retry.
                    if attempts % 120 == 1 {
                        tracing::error!(error = %e, writes = writes.len(), attempts, retry_in = ?wait,
                            "cannot journal shipped writes; the splitter marks new writes until it can");
                    }
                    *self
                        .live
                        .journal_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(RETRY_AT_MOST);
                }
            }
        }
    }

    fn ship(
        &mut self,
        writes: &[&Write],
        range: Writes,
        time_ns: i64,
        compress: bool,
    ) -> Result<u64> {
        let mut d = self
            .writer
            .begin_split_delta(time_ns, self.volumes.clone(), range)?;
        d.compress(compress);
        for w in writes {
            let stamp = Stamp {
                write: w.write,
                time_ns: w.time_ns,
            };
            match &w.change {
                Change::Data(bytes) => d.write_data(stamp, w.volume, w.offset, bytes)?,
                Change::Zero(len) => d.write_zero(stamp, w.volume, w.offset, *len)?,
            }
        }
        let entry = d.commit()?;
        *self
            .live
            .journal_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        Ok(entry.delta)
    }
}

/// The refusal of a bookmark asked while write order is lost after write `after`.
pub(super) fn in_gap(name: &str, after: u64) -> Error {
    Error::InvalidArgument(format!(
        "bookmark `{name}`: the split group is in a gap (its journal fell behind, and write order \
         was lost after write {after}); a bookmark can be placed once it has resynchronised"
    ))
}

#[cfg(test)]
mod tests {
    use super::CommitLag;

    #[test]
    fn commit_lag_quantiles_are_bucket_bounds() {
        let mut l = CommitLag::default();
        assert_eq!(l.quantile_ms(0.99), 0.0);
        for _ in 0..98 {
            l.add(3.2);
        }
        l.add(250.0);
        l.add(20_000.0);
        assert_eq!(l.quantile_ms(0.5), 4.0);
        assert_eq!(l.quantile_ms(0.99), 251.0);
        assert_eq!(l.quantile_ms(1.0), 20_000.0);
        assert_eq!(l.max_ms, 20_000.0);
    }
}
