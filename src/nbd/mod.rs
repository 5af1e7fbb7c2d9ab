//! An NBD server (the protocol of NetworkBlockDevice/nbd `doc/proto.md`): the fixed
//! newstyle handshake, simple and structured replies, `base:allocation`, and many
//! requests in flight per connection with replies out of order.
//!
//! No crate serves NBD well enough to sit in a VM's write path, so this is ours. It
//! is built as layers (as mini-redis and nbdkit are): `wire` holds the protocol's
//! numbers, `option`, `request` and `reply` its bytes as pure encode and decode,
//! tested against the spec's layouts; `handshake` and `transmission` hold the state
//! of a connection; `server` accepts connections and stops them on one broadcast.
//! What is served is an `Export`: `FileExport` serves an image file or a block
//! device as it is, and the splitter (layer 3) serves a volume whose writes it also
//! journals. Nothing here knows of journals.
mod export;
mod handshake;
mod option;
mod reply;
mod request;
mod server;
mod transmission;
pub mod wire;

pub use export::{wire_error, Capabilities, Export, FileExport};
pub use handshake::{MAX_PAYLOAD, MIN_BLOCK, PREFERRED_BLOCK};
pub use request::ZeroFlags;
pub use server::{serve, uri, ExportEntry, Exports, ListenAddr, Listener};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads and drops `n` bytes: the payload of something refused, so the stream is
/// at the next message.
async fn skip<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut (&mut *r).take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
