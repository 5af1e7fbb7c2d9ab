//! The "journaling off" figure of the NBD benchmark of `make bench` (tests/bench/nbd.sh):
//! cascade's NBD server serving image files as they are (`FileExport`), with no
//! journal behind it, so it can be set beside nbdkit and qemu-nbd. It is also a
//! manual way to try the server with any NBD client.
//!
//! ```text
//! nbd-serve --listen ADDR NAME=PATH...
//! ```
//!
//! Serves each file (or block device) `PATH` as export `NAME` on `ADDR` (`HOST:PORT`
//! or `unix:PATH`) until SIGTERM or SIGINT, then answers the requests in flight and
//! exits. It prints nothing but problems (the server's warnings and errors;
//! `RUST_LOG=debug` shows connections). Try it with e.g.
//! `nbdinfo nbd://127.0.0.1:10809/NAME` or `qemu-io -f raw nbd://127.0.0.1:10809/NAME`.
use anyhow::{Context, Result};
use cascade::nbd::{self, ExportEntry, Exports, FileExport, ListenAddr, Listener};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(clap::Parser)]
struct Args {
    /// HOST:PORT or unix:PATH.
    #[arg(long)]
    listen: ListenAddr,
    /// The exports, as NAME=PATH.
    #[arg(required = true, value_parser = export_arg)]
    exports: Vec<(String, PathBuf)>,
}

fn export_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
        _ => Err(format!("{s:?} is not NAME=PATH")),
    }
}

fn main() -> Result<()> {
    let a = <Args as clap::Parser>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut entries = Vec::new();
    for (name, path) in &a.exports {
        let export = FileExport::open(path, false)
            .with_context(|| format!("cannot open {}", path.display()))?;
        entries.push(ExportEntry {
            name: name.clone(),
            description: path.display().to_string(),
            export: Arc::new(export),
        });
    }
    let exports = Arc::new(Exports::new(entries));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = Listener::bind(&a.listen)
                .await
                .with_context(|| format!("cannot listen on {}", a.listen))?;
            let (stop, stopped) = watch::channel(false);
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = stop.send(true);
            });
            nbd::serve(listener, exports, stopped).await?;
            Ok(())
        })
}
