//! The listener: accepts connections on TCP or a Unix socket, runs the handshake and
//! then the transmission phase on each, and stops on one broadcast (`shutdown`): no
//! new connections, and each connection answers the requests it read and closes.
use super::export::Export;
use super::handshake::{self, Ended};
use super::transmission::{self, End};
pub use crate::listen::ListenAddr;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Connections served at once; one more is closed at once, with a warning.
const MAX_CONNECTIONS: usize = 256;
/// Time a client has to pick an export.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One named export.
pub struct ExportEntry {
    pub name: String,
    pub description: String,
    pub export: Arc<dyn Export>,
}

/// The exports of one server, in the order `OPT_LIST` gives them.
pub struct Exports(Vec<ExportEntry>);

impl Exports {
    pub fn new(entries: Vec<ExportEntry>) -> Exports {
        Exports(entries)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ExportEntry> {
        self.0.iter()
    }

    /// The export named `name`; the empty name (the default export, what a URI
    /// without a path asks for) is the only export when there is just one.
    pub fn find(&self, name: &str) -> Option<&ExportEntry> {
        match self.0.iter().find(|e| e.name == name) {
            None if name.is_empty() && self.0.len() == 1 => self.0.first(),
            found => found,
        }
    }

    /// The message for a client that asked for an export that does not exist.
    pub fn unknown(&self, name: &str) -> String {
        let names: Vec<&str> = self.0.iter().map(|e| e.name.as_str()).collect();
        format!("no export named {name:?}; exports: {}", names.join(", "))
    }
}

/// A bound listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`. A Unix socket file left by a server that is gone (nothing
    /// accepts on it) is replaced; one that is in use is an error.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            ListenAddr::Unix(p) => {
                if p.exists() {
                    if tokio::net::UnixStream::connect(p).await.is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{} is in use by another server", p.display()),
                        ));
                    }
                    std::fs::remove_file(p)?;
                }
                Ok(Listener::Unix(UnixListener::bind(p)?, p.clone()))
            }
        }
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(_, p) => Ok(ListenAddr::Unix(p.clone())),
        }
    }
}

/// Serves `exports` on `listener` until `shutdown` turns true, then waits for every
/// connection to end (each answers what it read) and returns. A Unix socket file
/// is removed.
pub async fn serve(
    listener: Listener,
    exports: Arc<Exports>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            a = accept(&listener) => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // A failed accept (out of descriptors, a connection reset before it
                // was taken) ends that connection, not the server.
                tracing::warn!(error = %e, "accepting an NBD connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "closing an NBD connection: {MAX_CONNECTIONS} are open already");
            continue;
        };
        let exports = exports.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            connection(stream, &peer, &exports, shutdown).await;
        });
    }
    while conns.join_next().await.is_some() {}
    if let Listener::Unix(_, p) = &listener {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> io::Result<(Stream, String)> {
    match l {
        Listener::Tcp(l) => {
            let (s, a) = l.accept().await?;
            // Replies are small and latency matters more than packet count.
            s.set_nodelay(true)?;
            Ok((Stream::Tcp(s), a.to_string()))
        }
        Listener::Unix(l, p) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), format!("unix:{}", p.display())))
        }
    }
}

async fn connection(
    stream: Stream,
    peer: &str,
    exports: &Exports,
    shutdown: watch::Receiver<bool>,
) {
    let result = match stream {
        Stream::Tcp(s) => {
            let (r, w) = s.into_split();
            session(tokio::io::join(r, w), peer, exports, shutdown).await
        }
        Stream::Unix(s) => {
            let (r, w) = s.into_split();
            session(tokio::io::join(r, w), peer, exports, shutdown).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer, error = %e, "NBD connection ended with an I/O error");
    }
}

async fn session<R, W>(
    mut s: tokio::io::Join<R, W>,
    peer: &str,
    exports: &Exports,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shutdown.clone();
    let negotiate = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake::negotiate(&mut s, exports));
    let negotiated = tokio::select! {
        // A client still choosing has nothing in flight: it is closed at once.
        _ = stop.wait_for(|s| *s) => return Ok(()),
        n = negotiate => match n {
            Ok(n) => n?,
            Err(_) => {
                tracing::warn!(peer, "NBD client picked no export within {HANDSHAKE_TIMEOUT:?}; closed");
                return Ok(());
            }
        },
    };
    let session = match negotiated {
        Ok(session) => session,
        Err(Ended::Client) => return Ok(()),
        Err(Ended::Protocol(why)) => {
            tracing::warn!(peer, "NBD handshake broke the protocol, closed: {why}");
            return Ok(());
        }
    };
    let name = session.name.clone();
    tracing::debug!(peer, export = %name, structured = session.structured, "NBD client connected");
    let (r, w) = s.into_inner();
    match transmission::transmit(r, w, session, shutdown).await? {
        End::Protocol(why) => {
            tracing::warn!(peer, export = %name, "NBD client broke the protocol, closed: {why}")
        }
        end => tracing::debug!(peer, export = %name, ?end, "NBD client done"),
    }
    Ok(())
}

/// The URI of export `name` at `addr`, as qemu, libnbd and fio take it.
pub fn uri(addr: &ListenAddr, name: &str) -> String {
    match addr {
        ListenAddr::Tcp(a) => format!("nbd://{a}/{name}"),
        ListenAddr::Unix(p) => format!("nbd+unix:///{name}?socket={}", p.display()),
    }
}
