//! What grid peers say to each other: one JSON object a line, as pure encode and
//! decode, and the proofs of the shared secret. The asker of a bookmark connects to
//! each stream; the stream speaks first.
//!
//! ```text
//! stream → asker  hello {version, tls, nonce}        (plain text; then TLS if tls)
//! asker → stream  auth {grid, nonce, proof}           proof = HMAC(secret, "asker", …)
//! stream → asker  welcome {stream, proof}             proof = HMAC(secret, "stream", …)
//! asker → stream  hold {budget-ms}      stream → held {stream, at}   (writes wait)
//! asker → stream  mark {value, name}    stream → marked {stream, bookmark, recorded}
//!              or release                stream → released
//! ```
//! Each proof covers the grid's name, both nonces and, under TLS, keying material
//! exported from the session (RFC 5705): a relay in the middle holds two sessions
//! with different material, so it can pass neither proof on. That is why the
//! streams' self-signed certificates need no authority to vouch for them.
use super::secret::GridSecret;
use crate::journal::BookmarkEntry;
use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;
/// A line longer than this is not one of ours.
pub const MAX_LINE: usize = 64 << 10;
/// The label of the keying material a proof binds to (RFC 5705).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-cascade-grid";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToStream {
    Auth {
        grid: String,
        nonce: String,
        proof: String,
    },
    /// Hold the writes (a split stream) or freeze for a snapshot (a snapshot
    /// stream), and say so; let them go on your own after twice the budget.
    #[serde(rename_all = "kebab-case")]
    Hold { budget_ms: u64 },
    /// Place bookmark `name` with counter value `value` at the held cut, then let
    /// the writes go.
    Mark { value: u64, name: String },
    /// Let the writes go without a bookmark: another stream did not hold in time.
    Release,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FromStream {
    Hello {
        version: u32,
        tls: bool,
        nonce: String,
    },
    Welcome {
        stream: String,
        proof: String,
    },
    /// Writes are held; `at` is the last write of a split stream's cut.
    Held {
        stream: String,
        at: Option<u64>,
    },
    /// The stream's journal holds the bookmark; `recorded` says whether the counter
    /// store has its mark yet (the stream keeps trying when not).
    Marked {
        stream: String,
        bookmark: BookmarkEntry,
        recorded: bool,
    },
    Released,
    /// What was asked cannot be done; `kind` is `auth`, `busy`, `gap`, `exists` or
    /// `failed`.
    Refused {
        kind: String,
        message: String,
    },
}

pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).expect("messages serialise");
    v.push(b'\n');
    v
}

pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|e| format!("not a grid message: {e}"))
}

/// A fresh nonce, hex.
pub fn nonce() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source works");
    hex(&b)
}

pub use crate::secret::hex;

/// Which side a proof is of: the asker's proof cannot be replayed as the stream's.
#[derive(Clone, Copy)]
pub enum Side {
    Asker,
    Stream,
}

/// HMAC-SHA256 under the secret of the side, the grid, the binding and both nonces.
pub fn proof(
    secret: &GridSecret,
    side: Side,
    grid: &str,
    binding: &[u8],
    stream_nonce: &str,
    asker_nonce: &str,
) -> String {
    let mut ctx = ring::hmac::Context::with_key(&secret.key());
    let side = match side {
        Side::Asker => b"cascade-grid asker\0".as_slice(),
        Side::Stream => b"cascade-grid stream\0".as_slice(),
    };
    for part in [
        side,
        grid.as_bytes(),
        b"\0",
        binding,
        stream_nonce.as_bytes(),
        b"\0",
        asker_nonce.as_bytes(),
    ] {
        ctx.update(part);
    }
    hex(ctx.sign().as_ref())
}

/// Checks a proof in constant time.
pub fn check(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_one_line_each() {
        let m = ToStream::Hold { budget_ms: 50 };
        let line = encode(&m);
        assert_eq!(line, b"{\"type\":\"hold\",\"budget-ms\":50}\n");
        assert_eq!(decode::<ToStream>(&line[..line.len() - 1]).unwrap(), m);
        let r = FromStream::Refused {
            kind: "gap".into(),
            message: "in a gap".into(),
        };
        let line = encode(&r);
        assert_eq!(decode::<FromStream>(&line).unwrap(), r);
        assert!(decode::<ToStream>(b"{\"type\":\"format-disk\"}").is_err());
    }

    #[test]
    fn a_proof_depends_on_secret_side_grid_binding_and_nonces() {
        let s = GridSecret::from_bytes(b"0123456789abcdef");
        let p = proof(&s, Side::Asker, "shop", b"ekm", "n1", "n2");
        assert!(check(
            &p,
            &proof(&s, Side::Asker, "shop", b"ekm", "n1", "n2")
        ));
        for other in [
            proof(
                &GridSecret::from_bytes(b"0123456789abcdeX"),
                Side::Asker,
                "shop",
                b"ekm",
                "n1",
                "n2",
            ),
            proof(&s, Side::Stream, "shop", b"ekm", "n1", "n2"),
            proof(&s, Side::Asker, "shoq", b"ekm", "n1", "n2"),
            proof(&s, Side::Asker, "shop", b"ekn", "n1", "n2"),
            proof(&s, Side::Asker, "shop", b"ekm", "n3", "n2"),
            proof(&s, Side::Asker, "shop", b"ekm", "n1", "n3"),
        ] {
            assert!(!check(&p, &other));
        }
    }
}
