//! A stream's grid listener: it answers the bookmarks other hosts (or this one)
//! ask of it, one connection a bookmark, and records its marks in the counter
//! store. The stream lets its writes go on its own at twice the asker's budget, so
//! an asker that vanishes mid-bookmark never stalls the writers for longer.
use super::conn::{Acceptor, Conn};
use super::counter::{Counter, Mark, StreamInfo};
use super::stream::Stream;
use super::wire::{FromStream, ToStream};
use crate::error::{Error, Result};
use crate::journal::record::GridMark;
use crate::journal::{BookmarkEntry, Journal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long the handshake of a new connection may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream waits for its journal to take a bookmark.
const MARK_TIMEOUT: Duration = Duration::from_secs(60);
/// Between attempts to record marks the counter store did not take.
const RECORD_RETRY: Duration = Duration::from_secs(2);

/// What the listener serves.
pub struct Served {
    /// The longest hold this stream grants, whatever an asker's budget: its own
    /// hold-budget.
    pub budget: Duration,
    pub acceptor: Acceptor,
    pub stream: Stream,
    pub recorder: Recorder,
}

/// Records this stream's marks in the counter store, and those its journal holds
/// that the store lacks (a store that was down when the bookmark was placed).
pub struct Recorder {
    pub counter: Counter,
    pub info: StreamInfo,
    pub grid: String,
    pub journal: PathBuf,
}

impl Recorder {
    fn mark(&self, b: &BookmarkEntry, last_write: Option<u64>) -> Option<Mark> {
        let g = b.grid.as_ref().filter(|g| g.grid == self.grid)?;
        Some(Mark {
            stream: self.info.stream.clone(),
            value: g.value,
            name: b.name.clone(),
            after_delta: b.after_delta,
            last_write,
            time_ns: b.time_ns,
        })
    }

    /// Registers the stream, then puts every mark of the journal's grid bookmarks
    /// the store lacks; tries again until both are done or `stop`.
    pub async fn catch_up(&self, mut stop: watch::Receiver<bool>) {
        loop {
            match self.try_catch_up().await {
                Ok(()) => return,
                Err(e) => tracing::warn!(stream = %self.info.stream, error = %e,
                    "cannot register the stream or record its marks in the grid's counter store yet; trying again"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(RECORD_RETRY) => {}
            }
        }
    }

    async fn try_catch_up(&self) -> Result<()> {
        self.counter.register(&self.info).await?;
        let journal = Journal::open(&self.journal)?;
        let stored = self.counter.bookmarks().await?;
        let lacking: Vec<Mark> = journal
            .bookmarks()
            .iter()
            .filter_map(|b| self.mark(b, None))
            .filter(|m| {
                !stored.iter().any(|s| {
                    s.value.value == m.value && s.marks.iter().any(|x| x.stream == m.stream)
                })
            })
            .collect();
        drop(journal);
        for m in lacking {
            self.counter.record(&m).await?;
            tracing::info!(stream = %m.stream, bookmark = %m.name, value = m.value, "recorded a grid bookmark's mark the store lacked");
        }
        Ok(())
    }
}

/// Serves `listener` until `stop`.
pub async fn serve(listener: TcpListener, served: Arc<Served>, stop: watch::Receiver<bool>) {
    {
        let (s, stop) = (served.clone(), stop.clone());
        tokio::spawn(async move { s.recorder.catch_up(stop).await });
    }
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopping.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (s, stop) = (served.clone(), stop.clone());
        tokio::spawn(async move {
            let peer = peer.to_string();
            let conn =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, s.acceptor.accept(tcp, peer.clone()))
                    .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "grid connection refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "grid connection refused: no handshake within 10s");
                        return;
                    }
                };
            if let Err(e) = session(conn, &s, stop).await {
                tracing::debug!(%peer, error = %e, "grid connection ended");
            }
        });
    }
}

fn refused(e: &Error) -> FromStream {
    let kind = match e {
        Error::AlreadyExists(_) => "exists",
        Error::InvalidArgument(m) if m.contains("gap") => "gap",
        Error::Locked { .. } => "busy",
        _ => "failed",
    };
    FromStream::Refused {
        kind: kind.into(),
        message: e.to_string(),
    }
}

/// One asker's requests, in order, until it closes.
async fn session(mut conn: Conn, s: &Arc<Served>, stop: watch::Receiver<bool>) -> Result<()> {
    let me = s.acceptor.stream.clone();
    loop {
        let budget_ms = match conn.recv::<ToStream>().await? {
            ToStream::Hold { budget_ms } => budget_ms,
            ToStream::Mark { name, .. } => {
                conn.send(&FromStream::Refused {
                    kind: "failed".into(),
                    message: format!("grid bookmark `{name}`: stream `{me}` is not held (it let its writes go at twice the budget)"),
                })
                .await?;
                continue;
            }
            ToStream::Release => {
                conn.send(&FromStream::Released).await?;
                continue;
            }
            ToStream::Auth { .. } => return Err(conn.err("authenticated twice")),
        };
        let limit = Duration::from_millis(budget_ms.max(1)).min(s.budget) * 2;
        let mut held = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || s.stream.hold(limit))
        };
        let held = match tokio::time::timeout(limit, &mut held).await {
            Ok(Ok(Ok(h))) => h,
            Ok(Ok(Err(e))) => {
                conn.send(&refused(&e)).await?;
                continue;
            }
            Ok(Err(_)) => {
                conn.send(&refused(&Error::Stopped("grid hold panicked".into())))
                    .await?;
                continue;
            }
            Err(_) => {
                // The hold may still come: let it go as soon as it does.
                tokio::spawn(async move {
                    if let Ok(Ok(h)) = held.await {
                        h.release();
                    }
                });
                conn.send(&FromStream::Refused {
                    kind: "busy".into(),
                    message: format!("stream `{me}` could not hold its writes within {limit:?}"),
                })
                .await?;
                continue;
            }
        };
        let said = conn
            .send(&FromStream::Held {
                stream: me.clone(),
                at: held.at(),
            })
            .await;
        if let Err(e) = said {
            held.release();
            return Err(e);
        }
        match tokio::time::timeout(limit, conn.recv::<ToStream>()).await {
            Ok(Ok(ToStream::Mark { value, name })) => {
                let at = held.at();
                let grid = GridMark {
                    grid: s.recorder.grid.clone(),
                    value,
                };
                let placed = tokio::task::spawn_blocking(move || held.mark(name, grid));
                let placed = match tokio::time::timeout(MARK_TIMEOUT, placed).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(Error::Stopped("grid bookmark panicked".into())),
                    Err(_) => Err(Error::Stopped(format!(
                        "grid bookmark: the journal did not take it within {MARK_TIMEOUT:?}"
                    ))),
                };
                match placed {
                    Ok(b) => {
                        let recorded = record(s, &b, at, stop.clone()).await;
                        conn.send(&FromStream::Marked {
                            stream: me.clone(),
                            bookmark: b,
                            recorded,
                        })
                        .await?;
                    }
                    Err(e) => conn.send(&refused(&e)).await?,
                }
            }
            Ok(Ok(ToStream::Release)) => {
                held.release();
                conn.send(&FromStream::Released).await?;
            }
            Ok(Ok(_)) | Ok(Err(_)) => {
                held.release();
                return Ok(());
            }
            Err(_) => {
                held.release();
                tracing::warn!(stream = %me, ?limit, "a grid bookmark's asker neither marked nor released in time: writes let go");
            }
        }
    }
}

/// Records the mark of bookmark `b`; when the store does not take it, keeps trying
/// in the background, so the bookmark becomes complete once the store is back.
async fn record(
    s: &Arc<Served>,
    b: &BookmarkEntry,
    at: Option<u64>,
    stop: watch::Receiver<bool>,
) -> bool {
    let Some(m) = s.recorder.mark(b, at) else {
        return false;
    };
    match s.recorder.counter.record(&m).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(stream = %m.stream, bookmark = %m.name, error = %e,
                "the counter store did not take the mark; trying again in the background");
            let s = s.clone();
            tokio::spawn(async move { s.recorder.catch_up(stop).await });
            false
        }
    }
}
