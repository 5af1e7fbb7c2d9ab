//! The daemon's supervisor: takes the state directory's lock, starts a task per group
//! and per target, serves metrics, and handles signals (stop, reload).
use super::metrics::Metrics;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::splitter::WriterJob;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct DaemonOptions {
    pub config: PathBuf,
    /// Overrides `daemon.metrics-listen` of the config.
    pub metrics_listen: Option<SocketAddr>,
}

/// What every task of the daemon shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// The running config; replaced on a successful reload.
    pub config: watch::Receiver<Arc<Config>>,
    /// Becomes true when the daemon stops.
    pub shutdown: watch::Receiver<bool>,
    /// The same, for blocking code (an export checks it between deltas).
    pub stop: Arc<AtomicBool>,
    /// Set when the stop grace has passed: a running cycle is abandoned.
    pub abandon: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

/// One group's rendezvous between its cycle task and its target tasks.
pub(crate) struct GroupHandle {
    /// Held by whoever writes the journal inside the daemon (a cycle, a prune).
    pub writer: tokio::sync::Mutex<()>,
    /// The newest delta a cycle of the daemon committed; wakes the exporters.
    pub committed: watch::Sender<u64>,
    /// While the daemon serves the group's splitter, which holds the journal's
    /// writer: where a prune goes instead of opening the writer itself.
    pub splitter: std::sync::Mutex<Option<UnboundedSender<WriterJob>>>,
    /// When a prune was last sent to the splitter.
    pub last_split_prune: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A task: a group's cycles or splitter (no target), or one target's exports.
type Key = (String, Option<String>);

/// The lock file of a state directory; it holds the running daemon's pid.
fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.lock")
}

/// The pid of the daemon running on `state_dir`, if one is.
pub fn daemon_pid(state_dir: &Path) -> Option<u32> {
    let mut f = File::open(lock_path(state_dir)).ok()?;
    if f.try_lock_shared().is_ok() {
        return None;
    }
    // A daemon that has just taken the lock writes its pid a moment later.
    for _ in 0..25 {
        let mut s = String::new();
        f.rewind().and_then(|_| f.read_to_string(&mut s)).ok()?;
        if let Ok(pid) = s.trim().parse() {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// The daemon's hold on its state directory; the pid is cleared on a clean exit, so
/// the next daemon's pid is never confused with it.
struct StateLock(File);

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.0.set_len(0);
    }
}

/// Locks `state_dir` for this daemon, or says which daemon has it. The lock's short
/// patience also waits out `cascade status` taking it for a moment to look.
fn lock_state(state_dir: &Path) -> Result<StateLock> {
    std::fs::create_dir_all(state_dir)
        .map_err(Error::io("cannot create state directory", state_dir))?;
    let path = lock_path(state_dir);
    let mut f = match crate::lock::lock(&path, state_dir) {
        Ok(f) => f,
        Err(Error::Locked { .. }) => {
            return Err(Error::DaemonRunning {
                state_dir: state_dir.to_path_buf(),
                pid: daemon_pid(state_dir),
            })
        }
        Err(e) => return Err(e),
    };
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| writeln!(f, "{}", std::process::id()))
        .and_then(|_| f.sync_all())
        .map_err(Error::io("cannot write lock", &path))?;
    Ok(StateLock(f))
}

pub async fn run_daemon(opts: DaemonOptions) -> Result<()> {
    let cfg = Arc::new(Config::load(&opts.config)?);
    let _lock = lock_state(&cfg.state_dir)?;
    let metrics = Arc::new(Metrics::default());
    let listen = match opts.metrics_listen {
        Some(a) => Some(a),
        None => cfg
            .daemon
            .metrics_listen
            .as_deref()
            .map(crate::config::parse_listen)
            .transpose()
            .map_err(Error::InvalidArgument)?,
    };
    let mut http = None;
    if let Some(addr) = listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(Error::io("cannot listen for metrics on", addr.to_string()))?;
        let addr = l.local_addr().unwrap_or(addr);
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        http = Some(l);
    }
    let mut term =
        signal(SignalKind::terminate()).map_err(Error::io("cannot handle", "SIGTERM"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::io("cannot handle", "SIGINT"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(Error::io("cannot handle", "SIGHUP"))?;

    let (config_tx, config_rx) = watch::channel(cfg.clone());
    if let Some(l) = http {
        tokio::spawn(super::http::serve(l, metrics.clone(), config_rx.clone()));
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ctx = Ctx {
        config: config_rx,
        shutdown: shutdown_rx,
        stop: Arc::new(AtomicBool::new(false)),
        abandon: Arc::new(AtomicBool::new(false)),
        metrics,
    };
    let mut sup = Supervisor {
        ctx: ctx.clone(),
        tasks: JoinSet::new(),
        running: HashMap::new(),
        handles: HashMap::new(),
    };
    sup.start_missing(&cfg);
    serve_snapshot_stream(&cfg, ctx.shutdown.clone()).await?;
    tracing::info!(config = %opts.config.display(), pid = std::process::id(),
        groups = cfg.consistency_groups.len(), "cascade daemon started");

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let current = config_tx.borrow().clone();
                if let Some(new) = reload(&opts.config, &current, &ctx.metrics) {
                    config_tx.send_replace(new.clone());
                    sup.start_missing(&new);
                }
            }
            Some(done) = sup.tasks.join_next_with_id() => sup.ended(done),
        }
    }

    let grace = config_tx.borrow().daemon.stop_grace();
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "stopping: running cycles may finish within the grace, exports stop at a delta boundary"
    );
    ctx.stop.store(true, Ordering::Relaxed);
    shutdown_tx.send_replace(true);
    let abandon = ctx.abandon.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        tracing::warn!(grace_s = grace.as_secs_f64(),
            "the stop grace has passed: abandoning running cycles (they keep nothing; the next start makes their ticks up)");
        abandon.store(true, Ordering::Relaxed);
    });
    loop {
        tokio::select! {
            next = sup.tasks.join_next() => if next.is_none() { break },
            _ = term.recv() => exit_now(),
            _ = int.recv() => exit_now(),
        }
    }
    tracing::info!("cascade daemon stopped");
    Ok(())
}

/// A grid's snapshot stream takes the grid's bookmarks as cycles of its own for as
/// long as the daemon runs (a split stream's splitter serves them instead). A
/// reload does not move its listener.
async fn serve_snapshot_stream(cfg: &Arc<Config>, stop: watch::Receiver<bool>) -> Result<()> {
    let Some(g) = &cfg.grid else { return Ok(()) };
    let cg = g.group(&cfg.consistency_groups);
    if cg.splitter.is_some() {
        return Ok(());
    }
    let grid = crate::grid::Grid::open(cfg, None)?;
    let listener = grid.bind().await?;
    let stream = crate::grid::stream::Stream::Snapshot {
        cfg: Box::new((**cfg).clone()),
        cg: Box::new(cg.clone()),
    };
    grid.serve(listener, cfg, cg, stream, stop)?;
    Ok(())
}

/// A second stop signal: leave without waiting, but never with a group frozen: the
/// thaw hooks of running cycles run first (each within its hooks.timeout), since
/// nothing would thaw those applications after the exit. A cycle cut short leaves an
/// uncommitted tail and a snapshot, which the next cycle removes; an export resumes
/// from its durable cursor.
fn exit_now() -> ! {
    tracing::warn!(
        "second stop signal: thawing frozen groups, then exiting at once; the next start recovers"
    );
    crate::cycle::thaw_frozen_groups();
    std::process::exit(130)
}

/// Loads the config again; on any problem keeps the running one and says why.
fn reload(path: &Path, current: &Config, metrics: &Metrics) -> Option<Arc<Config>> {
    let refuse = |why: String| {
        tracing::error!(config = %path.display(), error = %why,
            "config reload refused; the running config stays in force");
        metrics.reloaded(false);
        None
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return refuse(e.to_string()),
    };
    if new.state_dir != current.state_dir {
        return refuse(format!(
            "state-dir changed from {} to {}; the daemon holds the old one's lock, so restart it to move",
            current.state_dir.display(),
            new.state_dir.display()
        ));
    }
    if new.daemon != current.daemon {
        tracing::warn!(
            "daemon settings (metrics-listen) take effect at the next start, not on reload"
        );
    }
    metrics.reloaded(true);
    metrics.retain(|g, t| {
        new.group(g)
            .is_ok_and(|cg| t.is_none_or(|t| cg.targets.iter().any(|x| x == t)))
    });
    tracing::info!(config = %path.display(), groups = new.consistency_groups.len(), "config reloaded");
    Some(Arc::new(new))
}

struct Supervisor {
    ctx: Ctx,
    tasks: JoinSet<()>,
    running: HashMap<tokio::task::Id, Key>,
    handles: HashMap<String, Arc<GroupHandle>>,
}

impl Supervisor {
    /// Starts the tasks the config asks for that are not running. Tasks whose group
    /// or target left the config end by themselves.
    fn start_missing(&mut self, cfg: &Config) {
        let have: HashSet<Key> = self.running.values().cloned().collect();
        for cg in &cfg.consistency_groups {
            let handle = self
                .handles
                .entry(cg.name.clone())
                .or_insert_with(|| {
                    Arc::new(GroupHandle {
                        writer: tokio::sync::Mutex::new(()),
                        committed: watch::channel(0).0,
                        splitter: std::sync::Mutex::new(None),
                        last_split_prune: std::sync::Mutex::new(None),
                    })
                })
                .clone();
            let key = (cg.name.clone(), None);
            if !have.contains(&key) {
                let job = super::group_job::run(cg.name.clone(), handle.clone(), self.ctx.clone());
                let id = self.tasks.spawn(job).id();
                self.running.insert(id, key);
            }
            for t in &cg.targets {
                let key = (cg.name.clone(), Some(t.clone()));
                if !have.contains(&key) {
                    let job = super::target_job::run(
                        cg.name.clone(),
                        t.clone(),
                        handle.clone(),
                        self.ctx.clone(),
                    );
                    let id = self.tasks.spawn(job).id();
                    self.running.insert(id, key);
                }
            }
        }
    }

    /// A task ended: its group or target left the config, or it panicked. Whatever
    /// the config names is running again afterwards, so one bad job does not end
    /// the daemon's care of it.
    fn ended(&mut self, done: std::result::Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match &done {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let key = self.running.remove(&id);
        if let (Err(e), Some((cg, target))) = (done, key) {
            tracing::error!(cg = %cg, target = ?target, error = %e, "a daemon task panicked; starting it again");
        }
        // A task that ended because a reload dropped its group may have been named
        // again by a later reload, before its end was seen here.
        let cfg = self.ctx.config.borrow().clone();
        self.start_missing(&cfg);
    }
}
