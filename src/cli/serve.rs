use cascade::config::Config;
use cascade::export::LiveTarget;
use cascade::journal::Point;
use cascade::listen::ListenAddr;
use cascade::nbd::{self, ExportEntry, Exports, Listener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Serve a live block replica over NBD as it was at an earlier point, without
/// changing it: a test failover.
///
/// Each volume is an export named by its id (`nbdinfo --list nbd://127.0.0.1:10810`,
/// `qemu-img compare`, a VM's disk). Reads come from the undo data newer than the
/// point laid over the replica; writes go to a scratch file in the undo directory,
/// unlinked at once, so they are thrown away when serving stops (SIGTERM or Ctrl-C),
/// or if it is killed. Serving starts within a second whatever the volume's size:
/// what is read where is worked out from the undo data's maps, no data is read.
///
/// The point must be inside the target's window (`cascade status` shows it). While
/// a point is served the replica's exports wait: this holds the target's lock.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// The live block target.
    #[arg(long)]
    target: String,
    /// The consistency group, when several name the target.
    #[arg(long)]
    cg: Option<String>,
    /// The point to serve: delta id, bookmark, time or seq:N.
    #[arg(long, value_name = "POINT", value_parser = parse_point)]
    at: String,
    /// Where to listen: HOST:PORT, a bare port (loopback), or unix:PATH.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10810")]
    listen: ListenAddr,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let mut target = LiveTarget::open_serving(&cfg, &a.target, a.cg.as_deref(), &a.at.to_string())?;
    let (at, exports) = target.serve_at(&a.at.parse::<Point>()?)?;
    let entries: Vec<ExportEntry> = exports
        .into_iter()
        .map(|(id, export)| ExportEntry {
            description: format!(
                "volume {id} of target {} as at {}",
                a.target,
                cascade::export::undo::describe(at)
            ),
            name: id,
            export: Arc::new(export),
        })
        .collect();
    let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    tokio::runtime::Handle::current().block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listener = Listener::bind(&a.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
        let bound = listener.local_addr()?;
        if !bound.is_local() {
            tracing::warn!(addr = %bound, "serving beyond this host: anyone who can reach it can read the replica's past");
        }
        for n in &names {
            eprintln!(
                "serving {n} as at {} at {}",
                cascade::export::undo::describe(at),
                nbd::uri(&bound, n)
            );
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = tx.send(true);
        });
        nbd::serve(listener, Arc::new(Exports::new(entries)), rx).await?;
        anyhow::Ok(())
    })?;
    eprintln!("{}: stopped serving; what clients wrote is gone", a.target);
    Ok(ExitCode::SUCCESS)
}

/// Checks the point as clap parses the arguments; kept as written, to name it.
fn parse_point(s: &str) -> Result<String, cascade::Error> {
    s.parse::<Point>().map(|_| s.to_string())
}
