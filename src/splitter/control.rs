//! The splitter's control socket, `STATE/CG/splitter.sock`: a running splitter holds
//! its journal's writer lock, so other commands ask it (a bookmark) instead of
//! opening the journal themselves, and `cascade status` asks it how it stands. One
//! JSON line each way per connection.
use super::sequencer::Sequencer;
use super::{Asked, BookmarkRequest, Live, SplitStatus};
use crate::error::{Error, Result};
use crate::journal::BookmarkEntry;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

pub fn socket_path(state: &Path) -> PathBuf {
    state.join("splitter.sock")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Request {
    Bookmark { name: String },
    Status,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Reply {
    Bookmark(BookmarkEntry),
    Status(SplitStatus),
    /// `kind` keeps the error's meaning (and the CLI's exit code) across the socket.
    Error {
        kind: String,
        message: String,
    },
}

/// Serves the control socket until `stop` turns true.
pub async fn serve(
    listener: tokio::net::UnixListener,
    seq: Arc<Sequencer<Asked>>,
    live: Arc<Live>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else {
            // Out of descriptors, most likely: do not spin on it.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (seq, live) = (seq.clone(), live.clone());
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            if tokio::io::BufReader::new(r)
                .read_line(&mut line)
                .await
                .is_err()
            {
                return;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Bookmark { name }) if let Some(after) = seq.lag().gap_after => {
                    // Its writes would include marked ones: it would lie in the gap.
                    error_reply(&super::shipper::in_gap(&name, after))
                }
                Ok(Request::Bookmark { name }) if let Some(e) = live.journal_error() => {
                    // It would wait for a journal that refuses writes.
                    error_reply(&Error::Stopped(format!(
                        "bookmark `{name}`: the journal refuses writes ({e}); try again once it takes them"
                    )))
                }
                Ok(Request::Bookmark { name }) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    seq.ask(Asked::Bookmark(BookmarkRequest {
                        name,
                        grid: None,
                        reply: tx,
                    }));
                    match rx.await {
                        Ok(Ok(b)) => Reply::Bookmark(b),
                        Ok(Err(e)) => error_reply(&e),
                        Err(_) => Reply::Error {
                            kind: "stopped".into(),
                            message: "the splitter stopped before placing the bookmark".into(),
                        },
                    }
                }
                Ok(Request::Status) => Reply::Status(live.status(&seq)),
                Err(e) => Reply::Error {
                    kind: "invalid".into(),
                    message: format!("not a control request: {e}"),
                },
            };
            let mut out = serde_json::to_string(&reply).expect("replies serialise");
            out.push('\n');
            let _ = w.write_all(out.as_bytes()).await;
        });
    }
}

fn error_reply(e: &Error) -> Reply {
    let kind = match e {
        Error::AlreadyExists(_) => "exists",
        Error::InvalidArgument(_) => "invalid",
        _ => "failed",
    };
    Reply::Error {
        kind: kind.into(),
        message: e.to_string(),
    }
}

/// How long a status question may take: a splitter that does not answer by then is
/// wedged, and `cascade status` or a metrics scrape must not hang on it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a bookmark may take: it waits for the commit of every write before it,
/// which a journal that fails holds back.
const BOOKMARK_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `req` to the splitter whose state directory is `state` and reads its reply,
/// waiting at most `timeout`.
fn ask(state: &Path, req: &Request, timeout: Duration) -> Result<Reply> {
    let path = socket_path(state);
    let io = |what| Error::io(what, path.clone());
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        Error::NotFound(format!(
            "no splitter answers on {} ({e}): is the group served (`cascade split` or `cascade run`)?",
            path.display()
        ))
    })?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(timeout)))
        .map_err(io("cannot set a timeout on"))?;
    let mut line = serde_json::to_string(req).expect("requests serialise");
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(io("cannot ask the splitter at"))?;
    line.clear();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(io("no answer from the splitter at"))?;
    serde_json::from_str::<Reply>(&line).map_err(|e| Error::Io {
        what: "a reply that is not one from the splitter at",
        path,
        cause: std::io::Error::other(e.to_string()),
    })
}

/// Asks the splitter serving the group whose state directory is `state` to place
/// bookmark `name` after every write acknowledged so far.
pub fn request_bookmark(state: &Path, name: &str) -> Result<BookmarkEntry> {
    match ask(
        state,
        &Request::Bookmark { name: name.into() },
        BOOKMARK_TIMEOUT,
    )? {
        Reply::Bookmark(b) => Ok(b),
        Reply::Error { kind, message } => Err(match kind.as_str() {
            "exists" => Error::AlreadyExists(message),
            "invalid" => Error::InvalidArgument(message),
            _ => Error::Io {
                what: "the splitter could not place the bookmark:",
                path: socket_path(state),
                cause: std::io::Error::other(message),
            },
        }),
        Reply::Status(_) => Err(unexpected(state)),
    }
}

/// How the splitter serving the group whose state directory is `state` stands; None
/// when no splitter answers there.
pub fn request_status(state: &Path) -> Result<Option<SplitStatus>> {
    match ask(state, &Request::Status, STATUS_TIMEOUT) {
        Ok(Reply::Status(s)) => Ok(Some(s)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
        Ok(_) => Err(unexpected(state)),
    }
}

fn unexpected(state: &Path) -> Error {
    Error::Io {
        what: "a reply to another question from the splitter at",
        path: socket_path(state),
        cause: std::io::Error::other("unexpected reply"),
    }
}
