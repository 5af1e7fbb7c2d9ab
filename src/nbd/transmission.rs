//! The transmission phase: requests are read one after another (through a buffer, so
//! small requests that arrive together cost one read), each is checked
//! (`request::check`) and run against the export, on the server's own threads when
//! the export says it is quick (`Export::quick`) and on a blocking thread otherwise,
//! and its reply is written when it is done, so replies go out of order and many
//! requests are in flight at once. A byte budget bounds the memory held by requests
//! in flight.
use super::export::wire_error;
use super::handshake::{Session, BASE_ALLOCATION_ID, MAX_PAYLOAD};
use super::reply;
use super::request::{self, Command, Limits, Request, REQUEST_LEN};
use super::wire::*;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{watch, Mutex, Semaphore};
use tokio::task::JoinSet;

/// Bytes of payload that requests in flight on one connection may hold; a request
/// counts at least `MIN_COST`, so this also bounds how many are in flight.
const IN_FLIGHT_BYTES: u32 = 64 << 20;
const MIN_COST: u32 = 4096;
/// A refused WRITE's payload is read and dropped up to this size (twice the
/// largest payload, as nbdkit does); beyond it the connection is closed, since
/// reading gigabytes to find the next request helps no client.
const MAX_SKIP: u32 = 2 * MAX_PAYLOAD;

/// How a transmission phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `CMD_DISC`, or the client closed the connection between requests.
    Disconnect,
    /// The server is stopping: the requests read were answered, no more were read.
    Shutdown,
    /// The client broke the framing (a bad magic, a connection cut inside a
    /// request); the connection was closed after the requests in flight ended.
    Protocol(String),
}

type Writer<W> = Arc<Mutex<BufWriter<W>>>;

/// Serves `session` until the client disconnects or `shutdown` turns true.
pub async fn transmit<R, W>(
    r: R,
    w: W,
    session: Session,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<End>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let caps = session.export.capabilities();
    let limits = Limits {
        size: session.export.size(),
        flags: caps.flags(session.structured),
        max_payload: MAX_PAYLOAD,
        structured: session.structured,
        block_status: session.block_status,
    };
    let mut r = tokio::io::BufReader::with_capacity(256 << 10, r);
    let w: Writer<W> = Arc::new(Mutex::new(BufWriter::with_capacity(256 << 10, w)));
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES as usize));
    let session = Arc::new(session);
    let mut tasks = JoinSet::new();
    let end = loop {
        while tasks.try_join_next().is_some() {}
        let mut header = [0u8; REQUEST_LEN];
        let read = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
            read = r.read_exact(&mut header) => read,
        };
        if let Err(e) = read {
            break match e.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => End::Disconnect,
                _ => End::Protocol(format!("reading a request: {e}")),
            };
        }
        let req = match request::decode_request(&header) {
            Ok(req) => req,
            Err(magic) => break End::Protocol(format!("request with bad magic {magic:#010x}")),
        };
        let checked = request::check(&req, &limits);
        if req.command == CMD_WRITE {
            // The payload follows whatever the answer; a refused one is read and
            // dropped so the next request is found.
            let len = req.length;
            match checked {
                Ok(cmd) => {
                    // The budget is taken before the payload is read, so what waits
                    // in memory is bounded.
                    let permit = budget
                        .clone()
                        .acquire_many_owned(len.clamp(MIN_COST, IN_FLIGHT_BYTES))
                        .await
                        .expect("never closed");
                    let mut data = Vec::with_capacity(len as usize);
                    if let Err(e) = read_payload(&mut r, &mut data, len as usize).await {
                        break End::Protocol(format!("reading a write's payload: {e}"));
                    }
                    tasks.spawn(run(session.clone(), w.clone(), req, cmd, data, permit));
                    continue;
                }
                Err(_) if len > MAX_SKIP => {
                    break End::Protocol(format!("write of {len} bytes (at most {MAX_PAYLOAD})"));
                }
                Err(_) => {
                    if let Err(e) = super::skip(&mut r, len as u64).await {
                        break End::Protocol(format!("reading a refused write's payload: {e}"));
                    }
                }
            }
        }
        match checked {
            Err(code) => {
                if let Err(e) = send_error(&w, &session, &req, code, refusal(code)).await {
                    break End::Protocol(format!("writing a reply: {e}"));
                }
            }
            Ok(Command::Disconnect) => break End::Disconnect,
            Ok(cmd) => {
                let cost = match cmd {
                    Command::Read { length, .. } => length.max(MIN_COST),
                    _ => MIN_COST,
                };
                let permit = budget
                    .clone()
                    .acquire_many_owned(cost)
                    .await
                    .expect("never closed");
                tasks.spawn(run(
                    session.clone(),
                    w.clone(),
                    req,
                    cmd,
                    Vec::new(),
                    permit,
                ));
            }
        }
    };
    while tasks.join_next().await.is_some() {}
    let mut w = w.lock().await;
    // The client may be gone already; nothing is left to tell it.
    let _ = w.flush().await;
    let _ = w.shutdown().await;
    Ok(end)
}

/// Reads `len` bytes into `data`'s spare room (not zeroed first: zeroing a 1 MiB
/// buffer costs as much as filling it): what the buffer holds, then a large rest
/// straight from the socket.
async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    data: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    let buffered = r.buffer();
    let n = buffered.len().min(len);
    data.extend_from_slice(&buffered[..n]);
    std::pin::Pin::new(&mut *r).consume(n);
    while data.len() < len {
        let want = (len - data.len()) as u64;
        let got = if want >= 64 << 10 {
            r.get_mut().take(want).read_buf(data).await?
        } else {
            (&mut *r).take(want).read_buf(data).await?
        };
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// What a refused request's error chunk says.
fn refusal(code: u32) -> &'static str {
    match code {
        ENOSPC => "request beyond the end of the export",
        EOVERFLOW => "read larger than the maximum payload (32 MiB)",
        EPERM => "the export is read-only",
        _ => "invalid request: unknown command or flag, zero length, out of range, over 32 MiB, or not offered",
    }
}

/// Runs one command against the export (on a blocking thread unless it is quick),
/// then replies.
async fn run<W: AsyncWrite + Unpin + Send + 'static>(
    session: Arc<Session>,
    w: Writer<W>,
    req: Request,
    cmd: Command,
    data: Vec<u8>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let quick = match cmd {
        Command::Read { .. } => session.export.quick(false),
        Command::Write { fua: false, .. } => session.export.quick(true),
        _ => false,
    };
    let result = if quick {
        execute(&*session.export, cmd, data)
    } else {
        let s = session.clone();
        match tokio::task::spawn_blocking(move || execute(&*s.export, cmd, data)).await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!("the request's task failed: {e}"))),
        }
    };
    let sent = match result {
        Ok(Output::Nothing) => {
            if session.structured {
                send(&w, &[&reply::done(req.cookie)]).await
            } else {
                send(&w, &[&reply::simple(req.cookie, 0)]).await
            }
        }
        Ok(Output::Data(buf)) => {
            if session.structured {
                let h = reply::offset_data(req.cookie, req.offset, buf.len() as u32);
                send(&w, &[&h, &buf]).await
            } else {
                send(&w, &[&reply::simple(req.cookie, 0), &buf]).await
            }
        }
        Ok(Output::Extents(extents)) => {
            let b = reply::block_status(req.cookie, BASE_ALLOCATION_ID, &extents);
            send(&w, &[&b]).await
        }
        Err(e) => {
            tracing::debug!(export = %session.name, error = %e, "request failed");
            send_error(&w, &session, &req, wire_error(&e), &e.to_string()).await
        }
    };
    if let Err(e) = sent {
        tracing::debug!(export = %session.name, error = %e, "could not send a reply");
    }
}

enum Output {
    Nothing,
    Data(Vec<u8>),
    Extents(Vec<(u32, u32)>),
}

fn execute(e: &dyn super::Export, cmd: Command, data: Vec<u8>) -> io::Result<Output> {
    let len = |l: u32| l as u64;
    match cmd {
        Command::Read { offset, length } => {
            let mut buf = vec![0u8; length as usize];
            e.read(offset, &mut buf)?;
            return Ok(Output::Data(buf));
        }
        Command::Write { offset, fua, .. } => e.write(offset, data, fua)?,
        Command::Flush => e.flush()?,
        Command::Trim {
            offset,
            length,
            fua,
        } => e.trim(offset, len(length), fua)?,
        Command::Cache { offset, length } => e.cache(offset, len(length))?,
        Command::WriteZeroes {
            offset,
            length,
            fua,
            zero,
        } => e.zero(offset, len(length), zero, fua)?,
        Command::BlockStatus {
            offset,
            length,
            one,
        } => {
            let mut runs = e.block_status(offset, len(length))?;
            runs.truncate(if one { 1 } else { runs.len() });
            let mut out = Vec::with_capacity(runs.len());
            let mut total = 0u64;
            for (l, state) in runs {
                // The export promised runs inside the request; hold it to that.
                let l = l.min(len(length) - total);
                if l == 0 {
                    break;
                }
                out.push((l as u32, state));
                total += l;
            }
            if out.is_empty() {
                return Err(io::Error::other("block status found no extent"));
            }
            return Ok(Output::Extents(out));
        }
        Command::Disconnect => unreachable!("DISC is not run"),
    }
    Ok(Output::Nothing)
}

async fn send_error<W: AsyncWrite + Unpin>(
    w: &Writer<W>,
    session: &Session,
    req: &Request,
    code: u32,
    message: &str,
) -> io::Result<()> {
    if session.structured {
        send(w, &[&reply::error(req.cookie, code, message)]).await
    } else {
        send(w, &[&reply::simple(req.cookie, code)]).await
    }
}

/// Writes one reply's pieces together and flushes.
async fn send<W: AsyncWrite + Unpin>(w: &Writer<W>, parts: &[&[u8]]) -> io::Result<()> {
    let mut w = w.lock().await;
    for p in parts {
        w.write_all(p).await?;
    }
    w.flush().await
}
