use super::print_json;
use cascade::config::Config;
use cascade::listen::ListenAddr;
use cascade::nbd::{self, Listener};
use cascade::progress::StopAlso;
use cascade::splitter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Serve a split group over NBD and journal every write, in the foreground.
///
/// The group's `splitter:` section says where (`listen`, default 127.0.0.1:10809; a
/// bare port is loopback; `unix:PATH` for a Unix socket) and how often shipped writes
/// are group-committed (`commit-every`, default 100ms). Each volume is an export named
/// by its id: `nbdinfo --list nbd://127.0.0.1:10809`, `qemu-io -f raw
/// nbd://127.0.0.1:10809/ID`, or a VM's disk. Every write reaches the volume, gets the
/// group's next write number, is acknowledged, and is journalled within about
/// commit-every; FLUSH and FUA make it durable on the volume.
///
/// It starts with a base delta (a full image, or the change since the last snapshot)
/// while it already serves: writes are held back only while the snapshot is captured
/// (on a file system without reflinks, until the base is journalled). Then
/// `cascade replay --until seq:N` rebuilds the volumes as they were just after write
/// N, and `cascade bookmark --cg NAME --name X` marks a point across all of them.
///
/// SIGTERM or Ctrl-C stops: no new connections, requests read are answered, what was
/// acknowledged is journalled, exit 0. The volumes must not be written by anything
/// else while the group is served.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// The consistency group to serve; it needs a `splitter:` section.
    #[arg(long)]
    cg: String,
    /// Listen here instead of the group's `splitter.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<ListenAddr>,
    /// Print the report at the end (base delta, writes and deltas journalled) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let cg = cfg.group(&a.cg)?.clone();
    let Some(split) = &cg.splitter else {
        anyhow::bail!(cascade::Error::InvalidArgument(format!(
            "consistency group `{}` has no splitter: section; `cascade split` serves only split groups",
            cg.name
        )));
    };
    let addr = a.listen.clone().unwrap_or_else(|| split.listen());
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let report = tokio::runtime::Handle::current().block_on(async {
        // Handled from before the first line is printed: a SIGTERM sent as soon as the
        // splitter says it serves must stop it cleanly, not kill it.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listener = Listener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        for v in &cg.volumes {
            eprintln!("serving {} at {}", v.id, nbd::uri(&bound, &v.id));
        }
        let mut hooks = splitter::Hooks::default();
        if let Some((grid, l)) = cascade::grid::Grid::for_group(&cfg, &cg).await? {
            hooks.shipping = Some(grid.on_shipping(l, cfg.clone(), cg.clone(), rx.clone()));
        }
        let flag = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            flag.store(true, Ordering::Relaxed);
            let _ = tx.send(true);
        });
        let (cfg2, cg2) = (cfg.clone(), cg.clone());
        let base = move |writer: &mut cascade::journal::JournalWriter,
                         hold: &dyn splitter::Hold| {
            // The CLI's progress for the base cycle, which also stops it on a signal.
            let observer = super::progress::observer();
            let progress = StopAlso {
                progress: observer.as_ref(),
                flag: &stop,
            };
            cascade::cycle::run_cycle_held(&cfg2, &cg2, writer, &progress, Some(hold))
                .map(|r| r.delta)
        };
        anyhow::Ok(splitter::run(&cfg, &cg, listener, base, rx, hooks).await)
    })?;
    let report = match report {
        // Stopped while the base was read: a clean stop that journalled nothing.
        Err(cascade::Error::Stopped(why)) if stopped.load(Ordering::Relaxed) => {
            eprintln!(
                "{}: stopped before its base was journalled ({why}); nothing was journalled",
                cg.name
            );
            return Ok(ExitCode::SUCCESS);
        }
        r => r?,
    };
    if a.json {
        print_json(&report);
    } else {
        let s = &report.shipped;
        println!(
            "{}: {} (after write {}); journalled {} writes in {} deltas (last write {}), {} bookmarks, {} gaps{}; acknowledgement to journal commit p99 {} ms, max {:.0} ms",
            report.cg,
            report.base_delta.map_or("went on after a crash".to_string(), |d| format!("base delta {d}")),
            report.exact_from, s.writes, s.deltas, s.last_write, s.bookmarks, s.gaps,
            if s.ends_in_gap { " (it ends in one: the next start takes a base)" } else { "" },
            s.commit_lag.quantile_ms(0.99), s.commit_lag.max_ms()
        );
    }
    Ok(ExitCode::SUCCESS)
}
