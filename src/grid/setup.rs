//! A grid as this host's config names it: its counter store, its secret, where
//! its streams listen, and this host's stream served.
use super::bookmark::Asker;
use super::conn::Acceptor;
use super::counter::{Counter, ReplicaRef, StreamInfo, VolumeRef};
use super::secret::GridSecret;
use super::server::{self, Recorder, Served};
use super::stream::Stream;
use crate::config::{Config, ConsistencyGroup, GridConfig};
use crate::error::{Error, Result};
use crate::listen::ListenAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

pub struct Grid {
    pub cfg: GridConfig,
    pub counter: Counter,
    pub secret: Arc<GridSecret>,
}

impl Grid {
    /// The config's grid; `name`, when given, must be its name.
    pub fn open(cfg: &Config, name: Option<&str>) -> Result<Grid> {
        let g = match (&cfg.grid, name) {
            (None, _) => {
                return Err(Error::InvalidArgument(
                    "the config has no grid: section".into(),
                ))
            }
            (Some(g), Some(n)) if g.name != n => {
                return Err(Error::NotFound(format!(
                    "the config's grid is `{}`, not `{n}`",
                    g.name
                )))
            }
            (Some(g), _) => g.clone(),
        };
        let counter = Counter::open(&g.counter, &g.counter_options())?;
        let secret = Arc::new(GridSecret::load(&g.secret_file)?);
        Ok(Grid {
            cfg: g,
            counter,
            secret,
        })
    }

    /// The grid whose stream `cg` is, if it is one, with its listener bound.
    pub async fn for_group(
        cfg: &Config,
        cg: &ConsistencyGroup,
    ) -> Result<Option<(Grid, tokio::net::TcpListener)>> {
        match &cfg.grid {
            Some(g) if g.group(&cfg.consistency_groups).name == cg.name => {
                let grid = Grid::open(cfg, None)?;
                let l = grid.bind().await?;
                Ok(Some((grid, l)))
            }
            _ => Ok(None),
        }
    }

    /// The splitter's hook that serves the grid once the stream ships.
    pub fn on_shipping(
        self,
        listener: tokio::net::TcpListener,
        cfg: Config,
        cg: ConsistencyGroup,
        stop: watch::Receiver<bool>,
    ) -> Box<dyn FnOnce(crate::splitter::GridHandle) + Send> {
        Box::new(move |h| {
            if let Err(e) = self.serve(listener, &cfg, &cg, Stream::Split(h), stop) {
                tracing::error!(grid = %self.cfg.name, error = %e, "cannot serve the grid's bookmarks");
            }
        })
    }

    /// Every stream's listener: this host's first (an unspecified address is
    /// reached on loopback), then the peers.
    pub fn listeners(&self) -> Vec<String> {
        let ListenAddr::Tcp(mut own) = self.cfg.listen() else {
            unreachable!("checked at load: TCP")
        };
        if own.ip().is_unspecified() {
            own = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), own.port());
        }
        let mut all = vec![own.to_string()];
        all.extend(self.cfg.peers.iter().cloned());
        all
    }

    pub fn asker(&self) -> Asker<'_> {
        Asker {
            grid: &self.cfg.name,
            counter: &self.counter,
            secret: &self.secret,
            streams: self.listeners(),
            budget: self.cfg.hold_budget(),
            by: format!("{} on {}", self.cfg.stream, host_name()),
        }
    }

    /// What the store says of this host's stream.
    pub fn stream_info(&self, cfg: &Config) -> StreamInfo {
        let cg = self.cfg.group(&cfg.consistency_groups);
        StreamInfo {
            stream: self.cfg.stream.clone(),
            cg: cg.name.clone(),
            host: host_name(),
            since_ns: crate::clock::now_ns(),
            volumes: cg
                .volumes
                .iter()
                .map(|v| VolumeRef { id: v.id.clone() })
                .collect(),
            replicas: cg
                .targets
                .iter()
                .filter_map(|t| cfg.targets.get(t))
                .filter_map(|t| t.spec.object_options())
                .map(|(url, o)| ReplicaRef {
                    url: url.to_string(),
                    endpoint: o.endpoint,
                    region: o.region,
                    allow_http: o.allow_http,
                })
                .collect(),
        }
    }

    /// Binds this host's grid listener (before the stream starts, so a bind error
    /// stops it).
    pub async fn bind(&self) -> Result<tokio::net::TcpListener> {
        let ListenAddr::Tcp(sock) = self.cfg.listen() else {
            unreachable!("checked at load: TCP")
        };
        tokio::net::TcpListener::bind(sock)
            .await
            .map_err(Error::io("cannot listen for the grid on", sock.to_string()))
    }

    /// Serves this host's stream `stream` (the group `cg`) on `listener` until
    /// `stop`. Needs a runtime.
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
        cfg: &Config,
        cg: &ConsistencyGroup,
        stream: Stream,
        stop: watch::Receiver<bool>,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let sock = listener
            .local_addr()
            .map_err(Error::io("cannot read the address of", "the grid listener"))?;
        let local = sock.ip().is_loopback();
        if !local {
            tracing::info!(grid = %self.cfg.name, %sock, "the grid listener is beyond loopback: peers talk TLS");
        }
        let served = Arc::new(Served {
            budget: self.cfg.hold_budget(),
            acceptor: Acceptor::new(
                self.secret.clone(),
                &self.cfg.name,
                &self.cfg.stream,
                !local,
            )?,
            stream,
            recorder: Recorder {
                counter: self.counter.clone(),
                info: self.stream_info(cfg),
                grid: self.cfg.name.clone(),
                journal: cfg.journal_path(cg),
            },
        });
        tracing::info!(grid = %self.cfg.name, stream = %self.cfg.stream, %sock, "serving grid bookmarks");
        eprintln!(
            "grid {}: stream {} takes bookmarks at {sock}{}",
            self.cfg.name,
            self.cfg.stream,
            if local { "" } else { " (TLS)" }
        );
        Ok(tokio::spawn(server::serve(listener, served, stop)))
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}
