//! The splitter: a split group's volumes served over NBD, every write numbered when
//! it is acknowledged and shipped, asynchronously, into the group's journal.
//!
//! Write path, per request: the NBD server (`crate::nbd`) reads it and calls the
//! volume's `SplitExport`; the write enters the `Sequencer` (waiting while a write in
//! flight overlaps it), reaches the volume, is numbered and queued, and only then is
//! replied to. The `Shipper`, a thread of its own, takes what is queued every
//! `commit-every` (or sooner, at `shipper::MAX_BATCH` bytes) and journals it as one
//! split delta with one fsync (docs/journal-format.md, "Split deltas").
//!
//! A group starts with a base delta, taken by the caller's snapshot cycle while the
//! splitter already serves: the cycle holds the group (`Hold`) for the moment its
//! snapshot is captured, so the base is exact after write `held_at`, and the split
//! deltas that follow say so (`exact_from`). On stop: no new connections, the
//! requests read are answered, what was numbered is journalled, then it returns.
//!
//! Bookmarks of a running split group go through its control socket (`control`):
//! the shipper places each after every write numbered before it was asked for. One
//! sequence numbers the whole group, so that cut is consistent across its volumes
//! without holding the writers.
mod control;
mod dirty;
mod export;
mod intent;
mod restart;
mod resync;
mod sequencer;
mod shipper;

pub use control::{request_bookmark, request_status};
pub use dirty::DirtyMap;
pub use export::SplitExport;
pub use sequencer::{Change, Lag, Mode, Sequencer, Write};
pub use shipper::{ShipReport, MAX_BATCH};

use crate::config::{Config, ConsistencyGroup, DriverKind};
use crate::error::{Error, Result};
use crate::journal::record::VolumeInfo;
use crate::journal::{BookmarkEntry, Journal, JournalWriter};
use crate::nbd::{self, ExportEntry, Exports, FileExport, Listener};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// A bookmark asked of a running splitter, and where its answer goes.
pub struct BookmarkRequest {
    pub name: String,
    /// A grid bookmark's counter value.
    pub grid: Option<crate::journal::record::GridMark>,
    pub reply: tokio::sync::oneshot::Sender<Result<BookmarkEntry>>,
}

/// Work on the journal that needs its writer, which a running splitter holds (the
/// daemon's journal retention): the shipper runs it between two commits.
pub type WriterJob = Box<dyn FnOnce(&mut JournalWriter) + Send>;

/// What the shipper is asked to do after the writes numbered before the asking.
pub enum Asked {
    Bookmark(BookmarkRequest),
    Writer(WriterJob),
}

/// How a caller that runs beside the splitter (the daemon) follows and uses it.
#[derive(Default)]
pub struct Hooks {
    /// Called with the id of every delta journalled: the base, then each split delta.
    pub committed: Option<Box<dyn Fn(u64) + Send>>,
    /// Writer jobs to run between commits, until the splitter stops.
    pub jobs: Option<tokio::sync::mpsc::UnboundedReceiver<WriterJob>>,
    /// Called once the stream ships, with what a grid's bookmarks need of it.
    pub shipping: Option<Box<dyn FnOnce(GridHandle) + Send>>,
}

/// What a grid stream (`crate::grid`) needs of a running splitter: its writes held
/// for a cut, and a bookmark placed exactly there.
#[derive(Clone)]
pub struct GridHandle {
    seq: Arc<Sequencer<Asked>>,
    live: Arc<Live>,
}

impl GridHandle {
    /// Holds the group's writes, once those in flight are numbered; returns the last
    /// write of the cut. Refused (and not held) when no bookmark could lie there: a
    /// gap is open, the journal refuses writes, or the writes in flight are not all
    /// numbered within `limit`. Blocks: call it off the runtime.
    pub fn hold(&self, limit: std::time::Duration) -> Result<u64> {
        let Some(at) = self.seq.pause(limit) else {
            return Err(Error::Stopped(format!(
                "grid bookmark: a write in flight took longer than {limit:?}; the writes were not held"
            )));
        };
        let refused = if let Some(after) = self.seq.lag().gap_after {
            Some(shipper::in_gap("grid bookmark", after))
        } else {
            self.live
                .journal_error()
                .map(|e| Error::Stopped(format!("grid bookmark: the journal refuses writes ({e})")))
        };
        match refused {
            Some(e) => {
                self.seq.release();
                Err(e)
            }
            None => Ok(at),
        }
    }

    /// Places bookmark `name` at the held cut and lets the writes go; the receiver
    /// answers once the journal holds it.
    pub fn mark(
        &self,
        name: String,
        grid: crate::journal::record::GridMark,
    ) -> tokio::sync::oneshot::Receiver<Result<BookmarkEntry>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.seq.ask(Asked::Bookmark(BookmarkRequest {
            name,
            grid: Some(grid),
            reply: tx,
        }));
        self.seq.release();
        rx
    }

    /// Lets the writes go without a bookmark.
    pub fn release(&self) {
        self.seq.release();
    }
}

/// A running splitter, as `cascade status` asks it over the control socket.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SplitStatus {
    pub pid: u32,
    /// Where it serves, as `nbd://HOST:PORT` or `nbd+unix:///?socket=PATH`.
    pub uri: String,
    pub base_delta: Option<u64>,
    /// The last write numbered (acknowledged or about to be).
    pub last_numbered: u64,
    /// The last write journalled.
    pub last_journalled: u64,
    /// Active, marking or resynchronising; gap, dirty bytes and RPO.
    #[serde(flatten)]
    pub lag: Lag,
    /// Why the journal refuses the shipper's last attempt, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
}

/// What a snapshot cycle holds while it captures a split group: new writes wait,
/// those in flight finish first, and the volumes are flushed (so a snapshot taken
/// below the page cache, an LVM one, has them).
pub trait Hold: Send + Sync {
    fn hold(&self) -> Result<()>;
    fn release(&self);
}

/// The group's `Hold`: its sequencer and its volumes.
struct GroupHold {
    seq: Arc<Sequencer<Asked>>,
    volumes: Vec<Arc<SplitExport<Asked>>>,
    paths: Vec<PathBuf>,
}

impl Hold for GroupHold {
    fn hold(&self) -> Result<()> {
        self.seq.hold();
        for (v, p) in self.volumes.iter().zip(&self.paths) {
            nbd::Export::flush(&**v).map_err(Error::io("cannot flush volume", p))?;
        }
        Ok(())
    }
    fn release(&self) {
        self.seq.release()
    }
}

#[derive(Debug, Serialize)]
pub struct SplitReport {
    pub cg: String,
    /// The ordinary delta the stream began with; none when it went on after a crash.
    pub base_delta: Option<u64>,
    /// The last write the base holds; the stream is exact from it on.
    pub exact_from: u64,
    pub shipped: ShipReport,
}

/// The device or image file of each volume of `cg`, in config order.
pub fn volume_paths(cg: &ConsistencyGroup) -> Vec<PathBuf> {
    cg.volumes
        .iter()
        .map(|v| match v.driver {
            DriverKind::File => v.path.clone().expect("checked at load"),
            DriverKind::LvmThin => v.device_paths().remove(0),
        })
        .collect()
}

/// Serves `cg` on `listener` until `stop` turns true: `base` (the caller's snapshot
/// cycle, on the journal writer it is lent, holding the group through the `Hold` it
/// is given while it captures) journals the base delta and returns its id; then
/// numbered writes are shipped. The writer stays open throughout, so no other
/// writer (a cycle, a prune) gets in between.
pub async fn run<F>(
    cfg: &Config,
    cg: &ConsistencyGroup,
    listener: Listener,
    base: F,
    mut stop: watch::Receiver<bool>,
    hooks: Hooks,
) -> Result<SplitReport>
where
    F: FnOnce(&mut JournalWriter, &dyn Hold) -> Result<u64> + Send + 'static,
{
    let mut writer = JournalWriter::open(&cfg.journal_path(cg), cg.segment_size_mib << 20)?;
    let split = cg.splitter.clone().unwrap_or_default();
    let paths = volume_paths(cg);
    let mut files = Vec::new();
    for path in &paths {
        files.push(FileExport::open(path, false).map_err(Error::io("cannot open volume", path))?);
    }
    let sizes: Vec<u64> = files.iter().map(nbd::Export::size).collect();
    let state = cfg.state_path(cg);
    crate::fsutil::create_dir_durable(&state)?;
    let grain = split.dirty_granularity();
    let start = restart::start(
        writer.journal(),
        &state.join("write-intent"),
        &cg.name,
        &sizes,
        grain,
    )?;
    let last = start.last;
    let intents = start.intents.clone();
    // However serving ends from here on, short of a crash, the next start takes a
    // base: the volumes may be written while nothing serves them.
    let _stopped = StopGuard(intents.clone());
    let seq = Arc::new(Sequencer::<Asked>::new(
        last,
        split.queue(),
        DirtyMap::new(&sizes, grain),
    ));
    if let Some(r) = &start.resume {
        seq.resume_gap(r.after, r.open, &r.dirty);
    }
    let mut entries = Vec::new();
    let mut volumes = Vec::new();
    let mut exports = Vec::new();
    for (i, (v, file)) in cg.volumes.iter().zip(files).enumerate() {
        volumes.push(VolumeInfo {
            id: v.id.clone(),
            size: sizes[i],
        });
        let export = Arc::new(SplitExport::new(
            file,
            i as u16,
            seq.clone(),
            intents.clone(),
        ));
        exports.push(export.clone());
        entries.push(ExportEntry {
            name: v.id.clone(),
            description: format!("volume {} of consistency group {}", v.id, cg.name),
            export,
        });
    }
    let sock = control::socket_path(&state);
    let control = nbd::Listener::bind(&crate::listen::ListenAddr::Unix(sock.clone()))
        .await
        .map_err(Error::io("cannot listen on", &sock))?;
    let nbd::Listener::Unix(control, _) = control else {
        unreachable!("a Unix address binds a Unix listener")
    };
    let listener_addr = listener.local_addr().map_err(Error::io(
        "cannot read the address it listens on:",
        "the NBD listener",
    ))?;
    if !listener_addr.is_local() {
        tracing::warn!(cg = %cg.name, addr = %listener_addr, "the splitter listens beyond this host: anyone who can reach it can read and write the volumes");
    }
    let (server_stop, server_stopped) = watch::channel(false);
    let server = tokio::spawn(nbd::serve(
        listener,
        Arc::new(Exports::new(entries)),
        server_stopped.clone(),
    ));
    let live = Arc::new(Live {
        uri: nbd::uri(&listener_addr, "")
            .trim_end_matches('/')
            .to_string(),
        base_delta: AtomicU64::new(0),
        last_journalled: AtomicU64::new(last_write(writer.journal())),
        journal_error: std::sync::Mutex::new(None),
    });
    let control = tokio::spawn(control::serve(
        control,
        seq.clone(),
        live.clone(),
        server_stopped,
    ));
    if let Some(mut jobs) = hooks.jobs {
        let seq = seq.clone();
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                seq.ask(Asked::Writer(job));
            }
        });
    }

    let (writer, base_delta, exact_from, next_first, gap_open, consistent) = match start.resume {
        Some(r) => {
            tracing::info!(cg = %cg.name, after = r.after, dirty_bytes = r.dirty.dirty_bytes(),
                "the splitter crashed: its stream goes on, reading back what its write-intent map marks");
            eprintln!(
                "{}: going on with its stream after a crash: write order lost after write {}; reading back {} bytes \
                 its write-intent map marks, then journalling the writes after it",
                cg.name,
                r.after,
                r.dirty.dirty_bytes()
            );
            let consistent = if r.open { 0 } else { r.after };
            (writer, None, r.exact_from, r.next_first, r.open, consistent)
        }
        None => {
            let hold = GroupHold {
                seq: seq.clone(),
                volumes: exports.clone(),
                paths,
            };
            let based = tokio::task::spawn_blocking(move || {
                let d = base(&mut writer, &hold);
                (writer, d)
            })
            .await;
            let (writer, base_delta) = match based {
                Ok((w, Ok(d))) => (w, d),
                Ok((_, Err(e))) => {
                    return Err(stop_serving(server_stop, server, control, &seq, e).await)
                }
                Err(e) => {
                    let e = Error::Stopped(format!("the base cycle of `{}` failed: {e}", cg.name));
                    return Err(stop_serving(server_stop, server, control, &seq, e).await);
                }
            };
            // From now on a crash is followed by reading back what the map marks.
            let exact_from = seq.held_at();
            intents.stream_began(base_delta, exact_from);
            live.base_delta.store(base_delta, Ordering::Relaxed);
            if let Some(c) = &hooks.committed {
                c(base_delta);
            }
            // Writes numbered before the capture are in the base (the hold dropped
            // them from the queue); the stream goes on after it.
            tracing::info!(cg = %cg.name, base_delta, exact_from, "split group journals its writes");
            eprintln!("{}: base delta {base_delta} holds the volumes after write {exact_from}; journalling the writes after it", cg.name);
            (
                writer,
                Some(base_delta),
                exact_from,
                exact_from + 1,
                false,
                exact_from,
            )
        }
    };
    let shipper = shipper::Shipper {
        writer,
        seq: seq.clone(),
        volumes,
        exact_from,
        commit_every: cg
            .splitter
            .as_ref()
            .map_or(crate::config::DEFAULT_COMMIT_EVERY, |s| s.commit_every()),
        committed: hooks.committed,
        live: live.clone(),
        next_first,
        gap_open,
        gap_from: consistent,
        consistent,
        intents: intents.clone(),
    };
    // A shipper that ends on its own (the journal refused a delta outright) stops the
    // serving too: nothing would journal the writes.
    let (shipper_done, mut shipper_ended) = tokio::sync::oneshot::channel::<()>();
    let shipping = std::thread::spawn(move || {
        let r = shipper.run();
        let _ = shipper_done.send(());
        r
    });
    let resyncing = {
        let seq = seq.clone();
        let intents = intents.clone();
        std::thread::spawn(move || resync::run(seq, exports, intents))
    };
    if let Some(f) = hooks.shipping {
        f(GridHandle {
            seq: seq.clone(),
            live: live.clone(),
        });
    }
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = &mut shipper_ended => {
            tracing::error!(cg = %cg.name, "the shipper stopped: the splitter stops serving");
        }
    }
    let _ = server_stop.send(true);
    let served = server.await;
    let _ = control.await;
    seq.close();
    let shipped = tokio::task::spawn_blocking(move || shipping.join())
        .await
        .expect("joining does not panic")
        .map_err(|_| Error::Stopped(format!("the shipper of `{}` panicked", cg.name)))??;
    let _ = tokio::task::spawn_blocking(move || resyncing.join()).await;
    let _ = std::fs::remove_file(&sock);
    if let Ok(Err(e)) = served {
        tracing::warn!(cg = %cg.name, error = %e, "the NBD server ended with an error");
    }
    Ok(SplitReport {
        cg: cg.name.clone(),
        base_delta,
        exact_from,
        shipped,
    })
}

/// Says in the write-intent map, when serving ends (an error, a panic or a stop),
/// that the next start takes a base.
struct StopGuard(Arc<intent::Intents>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stopped_clean();
    }
}

/// What the control socket tells of a running splitter, beside its sequencer.
pub(crate) struct Live {
    uri: String,
    /// 0 until the base is journalled.
    base_delta: AtomicU64,
    last_journalled: AtomicU64,
    /// The journal's error while the shipper retries (a full disk, say).
    journal_error: std::sync::Mutex<Option<String>>,
}

impl Live {
    fn journal_error(&self) -> Option<String> {
        self.journal_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn status(&self, seq: &Sequencer<Asked>) -> SplitStatus {
        let base = self.base_delta.load(Ordering::Relaxed);
        SplitStatus {
            pid: std::process::id(),
            uri: self.uri.clone(),
            base_delta: (base > 0).then_some(base),
            last_numbered: seq.last(),
            last_journalled: self.last_journalled.load(Ordering::Relaxed),
            lag: seq.lag(),
            journal_error: self.journal_error(),
        }
    }
}

/// Ends serving after the base failed: the writes numbered meanwhile are not
/// journalled (the next start's base holds them: they are on the volumes).
async fn stop_serving(
    server_stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    control: tokio::task::JoinHandle<()>,
    seq: &Sequencer<Asked>,
    e: Error,
) -> Error {
    let _ = server_stop.send(true);
    // Writers waiting for the full queue are let go: nothing will ship it, and the
    // next start's base holds what they wrote.
    seq.close();
    seq.drop_queue();
    let _ = server.await;
    let _ = control.await;
    e
}

/// The last write numbered in `j` (0 for none).
fn last_write(j: &Journal) -> u64 {
    j.deltas()
        .iter()
        .rev()
        .find_map(|d| d.writes.map(|w| w.last_write))
        .unwrap_or(0)
}
