//! The fixed newstyle handshake: the greeting, then one option after another until
//! the client picks an export (`OPT_GO`, `OPT_EXPORT_NAME`), gives up (`OPT_ABORT`)
//! or goes away. One function per option, as nbdkit's
//! `protocol-handshake-newstyle.c` has it; the bytes are `option.rs`'s.
use super::export::Export;
use super::option::{self, ClientOption, MAX_OPTION_DATA};
use super::server::Exports;
use super::wire::*;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The id of `base:allocation`, the one metadata context served.
pub const BASE_ALLOCATION_ID: u32 = 1;
/// Options a client may send before it must pick an export: a bound on a client
/// that loops, not a limit a real one meets.
const MAX_OPTIONS: usize = 1024;
/// The block sizes announced: any alignment works (positional I/O on a file or
/// device through the page cache), 4 KiB is what it likes, 32 MiB the largest
/// payload (what qemu and the kernel assume without being told).
pub const MIN_BLOCK: u32 = 1;
pub const PREFERRED_BLOCK: u32 = 4096;
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// What the handshake settled for the transmission phase.
pub struct Session {
    pub name: String,
    pub export: Arc<dyn Export>,
    pub structured: bool,
    /// `base:allocation` was selected for this export.
    pub block_status: bool,
}

/// How a handshake ended without a session.
#[derive(Debug)]
pub enum Ended {
    /// The client aborted (`OPT_ABORT`) or closed the connection.
    Client,
    /// The client broke the protocol; the connection is closed (the message says how).
    Protocol(String),
}

/// What the options so far selected.
#[derive(Default)]
struct State {
    no_zeroes: bool,
    structured: bool,
    /// `base:allocation` selected, for this export name.
    meta: Option<String>,
    options: usize,
}

/// Runs the handshake on `s`. I/O errors other than the client closing are
/// returned as such.
pub async fn negotiate<S>(s: &mut S, exports: &Exports) -> io::Result<Result<Session, Ended>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(&option::greeting()).await?;
    s.flush().await?;
    let mut flags = [0u8; 4];
    if let Err(e) = s.read_exact(&mut flags).await {
        return closed(e);
    }
    let mut st = State::default();
    match option::decode_client_flags(flags) {
        Ok(f) => st.no_zeroes = f & FLAG_C_NO_ZEROES != 0,
        Err(why) => return Ok(Err(Ended::Protocol(why))),
    }
    loop {
        st.options += 1;
        if st.options > MAX_OPTIONS {
            return Ok(Err(Ended::Protocol(format!(
                "more than {MAX_OPTIONS} options without picking an export"
            ))));
        }
        let mut header = [0u8; 16];
        if let Err(e) = s.read_exact(&mut header).await {
            return closed(e);
        }
        let (opt, len) = match option::decode_option_header(&header) {
            Ok(h) => h,
            Err(why) => return Ok(Err(Ended::Protocol(why))),
        };
        if len > MAX_OPTION_DATA {
            if opt == OPT_EXPORT_NAME {
                // No error reply exists for EXPORT_NAME: the spec's answer is to close.
                return Ok(Err(Ended::Protocol(format!("export name of {len} bytes"))));
            }
            super::skip(s, len as u64).await?;
            let msg = format!("option data of {len} bytes (at most {MAX_OPTION_DATA})");
            reply(s, opt, REP_ERR_TOO_BIG, msg.as_bytes()).await?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        if let Err(e) = s.read_exact(&mut data).await {
            return closed(e);
        }
        let decoded = match option::decode_option(opt, &data) {
            Ok(o) => o,
            Err(why) if opt == OPT_EXPORT_NAME => return Ok(Err(Ended::Protocol(why))),
            Err(why) => {
                reply(s, opt, REP_ERR_INVALID, why.as_bytes()).await?;
                continue;
            }
        };
        match decoded {
            ClientOption::ExportName(name) => {
                let Some(entry) = exports.find(&name) else {
                    return Ok(Err(Ended::Protocol(format!(
                        "EXPORT_NAME of an unknown export {name:?}"
                    ))));
                };
                let e = &entry.export;
                let b = option::export_name_reply(
                    e.size(),
                    e.capabilities().flags(st.structured),
                    st.no_zeroes,
                );
                s.write_all(&b).await?;
                s.flush().await?;
                return Ok(Ok(st.session(entry.name.clone(), e.clone())));
            }
            ClientOption::Abort => {
                // The client may close before reading the ACK; that is its right.
                let _ = reply(s, opt, REP_ACK, &[]).await;
                return Ok(Err(Ended::Client));
            }
            ClientOption::List => {
                for e in exports.iter() {
                    reply(
                        s,
                        opt,
                        REP_SERVER,
                        &option::server_entry(&e.name, &e.description),
                    )
                    .await?;
                }
                reply(s, opt, REP_ACK, &[]).await?;
            }
            ClientOption::Info {
                go,
                export,
                requests,
            } => {
                let Some(entry) = exports.find(&export) else {
                    reply(s, opt, REP_ERR_UNKNOWN, exports.unknown(&export).as_bytes()).await?;
                    continue;
                };
                let e = &entry.export;
                // Sent whether asked or not, as it tells every client the payload
                // limit, and before INFO_EXPORT: qemu checks the size against the
                // minimum block only in that order.
                let sizes = option::info_block_size(MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD);
                reply(s, opt, REP_INFO, &sizes).await?;
                let flags = e.capabilities().flags(st.structured);
                reply(s, opt, REP_INFO, &option::info_export(e.size(), flags)).await?;
                if requests.contains(&INFO_NAME) {
                    reply(s, opt, REP_INFO, &option::info_text(INFO_NAME, &entry.name)).await?;
                }
                if requests.contains(&INFO_DESCRIPTION) && !entry.description.is_empty() {
                    let d = option::info_text(INFO_DESCRIPTION, &entry.description);
                    reply(s, opt, REP_INFO, &d).await?;
                }
                reply(s, opt, REP_ACK, &[]).await?;
                if go {
                    return Ok(Ok(st.session(entry.name.clone(), e.clone())));
                }
            }
            ClientOption::StructuredReply => {
                if st.structured {
                    reply(
                        s,
                        opt,
                        REP_ERR_INVALID,
                        b"structured replies are already on",
                    )
                    .await?;
                } else {
                    st.structured = true;
                    reply(s, opt, REP_ACK, &[]).await?;
                }
            }
            ClientOption::MetaContext {
                set,
                export,
                queries,
            } => meta_context(s, exports, &mut st, opt, set, export, queries).await?,
            ClientOption::Unsupported(o) => {
                let msg = format!("option {o} is not supported by this server");
                reply(s, opt, REP_ERR_UNSUP, msg.as_bytes()).await?;
            }
        }
    }
}

impl State {
    fn session(&self, name: String, export: Arc<dyn Export>) -> Session {
        Session {
            block_status: self.meta.as_deref() == Some(name.as_str()),
            name,
            export,
            structured: self.structured,
        }
    }
}

/// `OPT_LIST_META_CONTEXT` and `OPT_SET_META_CONTEXT`. Only `base:allocation`
/// exists: a query for it (or, when listing, for the `base:` namespace, or none at
/// all) matches it; any other query matches nothing, which is not an error. A SET
/// needs structured replies first and replaces what an earlier one selected, even
/// when it fails; a LIST is answered either way (as nbdkit and qemu do).
async fn meta_context<S>(
    s: &mut S,
    exports: &Exports,
    st: &mut State,
    opt: u32,
    set: bool,
    export: String,
    queries: Vec<String>,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if set {
        st.meta = None;
        if !st.structured {
            let msg = "metadata contexts need structured replies first";
            return reply(s, opt, REP_ERR_INVALID, msg.as_bytes()).await;
        }
    }
    let Some(entry) = exports.find(&export) else {
        return reply(s, opt, REP_ERR_UNKNOWN, exports.unknown(&export).as_bytes()).await;
    };
    let matches = if set {
        queries.iter().any(|q| q == BASE_ALLOCATION)
    } else {
        queries.is_empty() || queries.iter().any(|q| q == BASE_ALLOCATION || q == "base:")
    };
    if set && matches {
        st.meta = Some(entry.name.clone());
    }
    if matches {
        let id = if set { BASE_ALLOCATION_ID } else { 0 };
        reply(
            s,
            opt,
            REP_META_CONTEXT,
            &option::meta_context(id, BASE_ALLOCATION),
        )
        .await?;
    }
    reply(s, opt, REP_ACK, &[]).await
}

async fn reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    opt: u32,
    kind: u32,
    data: &[u8],
) -> io::Result<()> {
    s.write_all(&option::option_reply(opt, kind, data)).await?;
    s.flush().await
}

fn closed<T>(e: io::Error) -> io::Result<Result<T, Ended>> {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe => Ok(Err(Ended::Client)),
        _ => Err(e),
    }
}
