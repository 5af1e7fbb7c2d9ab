//! Taking a grid bookmark, from any host: the next counter value, then the
//! two-phase hold across every stream.
//!
//! 1. At once: take the counter's next value (a conditional create), read which
//!    streams are registered, and connect to every stream's listener.
//! 2. Ask every stream to hold; wait at most the hold budget for all of them.
//! 3. Only if every registered stream held: ask each to place the bookmark at its
//!    cut, which lets its writes go. Otherwise release them all: the value stays
//!    incomplete in the store, never offered for recovery.
//!
//! Why the cut is consistent: each stream that marks was held from its `held`
//! until its `mark`, and every `mark` is sent after the last `held` arrived, so at
//! that instant every stream was held at once. A write B sent after write A's reply
//! was sent after A was numbered; if B is before its stream's cut, B was sent
//! before that instant, so A was numbered before it too: A is before its cut.
use super::conn::{self, Conn};
use super::counter::Counter;
use super::secret::GridSecret;
use super::wire::{FromStream, ToStream};
use crate::error::{Error, Result};
use crate::journal::BookmarkEntry;
use futures_util::future::join_all;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long connecting to and authenticating with one stream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stream's journal may take to hold the bookmark once asked.
const MARKED_TIMEOUT: Duration = Duration::from_secs(65);

/// Who asks, and where the streams are.
pub struct Asker<'a> {
    pub grid: &'a str,
    pub counter: &'a Counter,
    pub secret: &'a GridSecret,
    /// Every stream's listener, `HOST:PORT`.
    pub streams: Vec<String>,
    pub budget: Duration,
    /// For the store: who asked (host and stream).
    pub by: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    pub grid: String,
    pub name: String,
    pub value: u64,
    /// Every registered stream's journal holds it and the store has every mark.
    pub complete: bool,
    pub streams: Vec<StreamOutcome>,
    /// Registered streams that did not mark it.
    pub missing: Vec<String>,
    /// How long writes were held: from asking the streams to hold to asking them
    /// to mark (which lets them go) or to release.
    pub hold_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StreamOutcome {
    pub peer: String,
    pub stream: Option<String>,
    /// A split stream's cut: its last write before the bookmark.
    pub held_at: Option<u64>,
    pub bookmark: Option<BookmarkEntry>,
    pub recorded: bool,
    pub error: Option<String>,
}

struct Peer {
    conn: Option<Conn>,
    out: StreamOutcome,
}

impl Peer {
    fn fail(&mut self, e: impl Into<Failure>) {
        self.conn = None;
        let Failure(why) = e.into();
        self.out.error.get_or_insert(why);
    }
}

/// Why a stream did not mark, without repeating the peer's address.
struct Failure(String);

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure(match e {
            Error::Peer { reason, .. } => reason,
            e => e.to_string(),
        })
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure(s)
    }
}

/// Takes grid bookmark `name`. An error means no stream was asked to hold (the
/// value could not be taken); an incomplete bookmark is an `Outcome` that says so.
pub async fn bookmark(a: &Asker<'_>, name: &str) -> Result<Outcome> {
    let started = Instant::now();
    let connecting = join_all(a.streams.iter().map(|addr| async move {
        let c = tokio::time::timeout(CONNECT_TIMEOUT, conn::connect(addr, a.secret, a.grid)).await;
        let mut p = Peer {
            conn: None,
            out: StreamOutcome {
                peer: addr.clone(),
                stream: None,
                held_at: None,
                bookmark: None,
                recorded: false,
                error: None,
            },
        };
        match c {
            Ok(Ok((c, stream))) => {
                p.conn = Some(c);
                p.out.stream = Some(stream);
            }
            Ok(Err(e)) => p.fail(e),
            Err(_) => p.fail(format!("no connection within {CONNECT_TIMEOUT:?}")),
        }
        p
    }));
    // Writes are held only once the value is taken: a slow store must not hold
    // them (nor make the bookmark miss the budget).
    let (value, registered, mut peers) = tokio::join!(
        a.counter.take(name, &a.by),
        a.counter.stream_names(),
        connecting
    );
    let value = value?;
    let registered: Vec<String> = registered?;
    let hold_started = Instant::now();
    hold(a, &mut peers).await;
    let held: Vec<&str> = peers
        .iter()
        .filter(|p| p.out.held_at.is_some() && p.conn.is_some())
        .filter_map(|p| p.out.stream.as_deref())
        .collect();
    let unheld: Vec<String> = registered
        .iter()
        .filter(|s| !held.contains(&s.as_str()))
        .cloned()
        .collect();
    let all_held = unheld.is_empty() && peers.iter().all(|p| p.out.error.is_none());
    let hold_ms = hold_started.elapsed().as_secs_f64() * 1e3;

    // Phase 2: mark everywhere, or release everywhere.
    if !all_held {
        release(&mut peers).await;
    } else {
        let marking = join_all(peers.iter_mut().map(|p| mark(p, value.value, name)));
        tokio::join!(marking, a.counter.advance_head(value.value));
    }
    let marked: Vec<&str> = peers
        .iter()
        .filter(|p| p.out.bookmark.is_some() && p.out.recorded)
        .filter_map(|p| p.out.stream.as_deref())
        .collect();
    let missing: Vec<String> = registered
        .iter()
        .filter(|s| !marked.contains(&s.as_str()))
        .cloned()
        .collect();
    Ok(Outcome {
        grid: a.grid.to_string(),
        name: name.to_string(),
        value: value.value,
        complete: all_held && missing.is_empty() && !registered.is_empty(),
        streams: peers.into_iter().map(|p| p.out).collect(),
        missing,
        hold_ms,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// `Error` for an incomplete outcome, naming each stream's trouble.
pub fn incomplete(o: &Outcome) -> Error {
    let why: Vec<String> = o
        .streams
        .iter()
        .filter_map(|s| {
            s.error
                .as_ref()
                .map(|e| format!("{}: {e}", s.stream.as_deref().unwrap_or(&s.peer)))
        })
        .collect();
    Error::Incomplete(format!(
        "grid bookmark `{}` (value {}) is incomplete: not in {}{}{}; it is never offered for recovery",
        o.name,
        o.value,
        if o.missing.is_empty() { "every stream's mark".to_string() } else { o.missing.join(", ") },
        if why.is_empty() { "" } else { "; " },
        why.join("; ")
    ))
}

/// Phase 1: asks every connected stream to hold, waiting at most the budget.
async fn hold(a: &Asker<'_>, peers: &mut [Peer]) {
    let budget_ms = a.budget.as_millis().max(1) as u64;
    join_all(peers.iter_mut().map(|p| async move {
        let Some(c) = p.conn.as_mut() else { return };
        let r = tokio::time::timeout(a.budget, async {
            c.send(&ToStream::Hold { budget_ms }).await?;
            c.recv::<FromStream>().await
        })
        .await;
        match r {
            Ok(Ok(FromStream::Held { at, .. })) => p.out.held_at = Some(at.unwrap_or(0)),
            Ok(Ok(FromStream::Refused { message, .. })) => p.fail(message),
            Ok(Ok(other)) => p.fail(format!("answered {other:?} to hold")),
            Ok(Err(e)) => p.fail(e),
            Err(_) => p.fail(format!("did not hold within the budget of {:?}", a.budget)),
        }
    }))
    .await;
}

/// Lets every stream still connected go without a bookmark.
async fn release(peers: &mut [Peer]) {
    join_all(peers.iter_mut().map(|p| async move {
        let Some(c) = p.conn.as_mut() else { return };
        let _ = c.send(&ToStream::Release).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), c.recv::<FromStream>()).await;
        if p.out.error.is_none() {
            p.out.error = Some("released: another stream did not hold in time".into());
        }
    }))
    .await;
}

/// Phase 2 for one stream: the bookmark at its cut, and its writes let go.
async fn mark(p: &mut Peer, value: u64, name: &str) {
    let Some(c) = p.conn.as_mut() else { return };
    let r = tokio::time::timeout(MARKED_TIMEOUT, async {
        c.send(&ToStream::Mark {
            value,
            name: name.to_string(),
        })
        .await?;
        c.recv::<FromStream>().await
    })
    .await;
    match r {
        Ok(Ok(FromStream::Marked {
            bookmark, recorded, ..
        })) => {
            p.out.bookmark = Some(bookmark);
            p.out.recorded = recorded;
        }
        Ok(Ok(FromStream::Refused { message, .. })) => p.fail(message),
        Ok(Ok(other)) => p.fail(format!("answered {other:?} to mark")),
        Ok(Err(e)) => p.fail(e),
        Err(_) => p.fail(format!("did not mark within {MARKED_TIMEOUT:?}")),
    }
}
