use cascade::schedule::{run_daemon, DaemonOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run as a service: cycle every consistency group on its schedule, keep every
/// target caught up, prune by retention, until stopped.
///
/// Each group with a `schedule:` (a cron expression, 5 fields or 6 with seconds
/// first, in `timezone`, default UTC) cycles at its ticks; groups run concurrently,
/// and a group's next tick is skipped (and logged) while its previous cycle still
/// runs. The last tick served is kept in STATE/CG/schedule.json, so a restarted
/// daemon neither repeats a cycle nor skips one silently: ticks missed while it was
/// down are served by one cycle at start-up (`missed: run-once`, the default) or
/// skipped with a log line (`missed: skip`).
///
/// Each group with a `splitter:` section is served over NBD instead, from start to
/// stop, as `cascade split` serves it (see `cascade split --help`): a base delta,
/// then every write journalled within its `commit-every`. Each delta it journals is
/// exported at once, so a block target stays within about a second of the volumes;
/// its journal retention runs between the splitter's commits, and `cascade bookmark`
/// and `cascade status` reach it through its control socket. A split group that
/// cannot be served (its address is taken, a volume is missing) is retried with
/// backoff; a reload that changes its volumes, `splitter:` or hooks serves it again,
/// one that changes only its targets or retention leaves the clients connected.
///
/// Every target is exported as soon as its group commits a delta, and on a poll of
/// the journal for cycles and bookmarks made with the CLI; then journal retention
/// prunes. A failed cycle or export is retried with backoff (5 s doubling to 5 min)
/// and never stops the other groups and targets; `cascade status` and the metrics
/// show the failures.
///
/// Signals: SIGTERM or Ctrl-C stops cleanly: a running cycle may finish and commit
/// within `daemon.stop-grace` (default 30s), after which it is abandoned and keeps
/// nothing (the next start makes its tick up); exports stop at a delta boundary; a
/// splitter stops accepting, answers the requests it read and journals what it
/// acknowledged. A second signal exits at once.
/// SIGHUP reloads the config, keeping the running one if the new one is invalid.
///
/// Only one daemon runs per state directory; a second one exits with code 6.
/// Logs go to stderr (`--log-format json` for one JSON object per line); the level is
/// info unless -v or RUST_LOG says otherwise. examples/cascade.service is a systemd
/// unit for it.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics (default when the flag has no
    /// value: 127.0.0.1:9464; a bare port means loopback). Overrides
    /// `daemon.metrics-listen` in the config. Off unless set in one of the two.
    #[arg(long, value_name = "ADDR", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9464", value_parser = cascade::config::parse_listen)]
    metrics_listen: Option<SocketAddr>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let opts = DaemonOptions {
        config: a.config,
        metrics_listen: a.metrics_listen,
    };
    tokio::runtime::Handle::current().block_on(run_daemon(opts))?;
    Ok(ExitCode::SUCCESS)
}
