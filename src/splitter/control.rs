//! The splitter's control socket, `STATE/CG/splitter.sock`: a running splitter holds
//! its journal's writer lock, so other commands ask it (a bookmark) instead of
//! opening the journal themselves. One JSON line each way per connection.
use super::sequencer::Sequencer;
use super::BookmarkRequest;
use crate::error::{Error, Result};
use crate::journal::BookmarkEntry;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

pub fn socket_path(state: &Path) -> PathBuf {
    state.join("splitter.sock")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Request {
    Bookmark { name: String },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Reply {
    Bookmark(BookmarkEntry),
    /// `kind` keeps the error's meaning (and the CLI's exit code) across the socket.
    Error {
        kind: String,
        message: String,
    },
}

/// Serves the control socket until `stop` turns true.
pub async fn serve(
    listener: tokio::net::UnixListener,
    seq: Arc<Sequencer<BookmarkRequest>>,
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
        let seq = seq.clone();
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
                Ok(Request::Bookmark { name }) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    seq.request_bookmark(BookmarkRequest { name, reply: tx });
                    match rx.await {
                        Ok(Ok(b)) => Reply::Bookmark(b),
                        Ok(Err(e)) => error_reply(&e),
                        Err(_) => Reply::Error {
                            kind: "stopped".into(),
                            message: "the splitter stopped before placing the bookmark".into(),
                        },
                    }
                }
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

/// Asks the splitter serving the group whose state directory is `state` to place
/// bookmark `name` after every write acknowledged so far.
pub fn request_bookmark(state: &Path, name: &str) -> Result<BookmarkEntry> {
    let path = socket_path(state);
    let io = |what| Error::io(what, path.clone());
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        Error::NotFound(format!(
            "no splitter answers on {} ({e}): a split group's bookmarks are placed by its running splitter (`cascade split` or `cascade run`)",
            path.display()
        ))
    })?;
    let mut req = serde_json::to_string(&Request::Bookmark { name: name.into() })
        .expect("requests serialise");
    req.push('\n');
    s.write_all(req.as_bytes())
        .map_err(io("cannot ask the splitter at"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(io("no answer from the splitter at"))?;
    match serde_json::from_str::<Reply>(&line) {
        Ok(Reply::Bookmark(b)) => Ok(b),
        Ok(Reply::Error { kind, message }) => Err(match kind.as_str() {
            "exists" => Error::AlreadyExists(message),
            "invalid" => Error::InvalidArgument(message),
            _ => Error::Io {
                what: "the splitter could not place the bookmark:",
                path,
                cause: std::io::Error::other(message),
            },
        }),
        Err(e) => Err(Error::Io {
            what: "a reply that is not one from the splitter at",
            path,
            cause: std::io::Error::other(e.to_string()),
        }),
    }
}
