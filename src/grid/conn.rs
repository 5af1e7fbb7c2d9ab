//! A connection between grid peers: TCP, under TLS unless the stream listens on
//! loopback, opened by the handshake of `wire` (hello, TLS, proofs both ways).
//!
//! Streams make a self-signed certificate at start. The asker accepts any
//! certificate, because what authenticates the peers is the secret, and the proofs
//! are bound to the TLS session's exported keying material (see `wire`): TLS gives
//! privacy and integrity, the proofs say who is at the other end. Both ends are
//! cascade, so TLS 1.3 only, whose exported keys are bound to the whole handshake.
use super::secret::GridSecret;
use super::wire::{self, FromStream, Side, ToStream};
use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An authenticated connection: JSON lines each way.
pub struct Conn {
    io: BufReader<Box<dyn Io>>,
    /// For messages: the address, and once known the stream's name.
    pub peer: String,
}

impl Conn {
    /// An error that names this peer.
    pub fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error::Peer {
            peer: self.peer.clone(),
            reason: reason.to_string(),
        }
    }

    pub async fn send<T: Serialize>(&mut self, m: &T) -> Result<()> {
        let line = wire::encode(m);
        let w = self.io.get_mut();
        match w.write_all(&line).await {
            Ok(()) => w
                .flush()
                .await
                .map_err(|e| self.err(format!("cannot send: {e}"))),
            Err(e) => Err(self.err(format!("cannot send: {e}"))),
        }
    }

    /// The next message; an error when the peer closed or sent something else.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(wire::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| self.err(format!("cannot read: {e}")))?;
        if n == 0 {
            return Err(self.err("closed the connection"));
        }
        if line.last() != Some(&b'\n') {
            return Err(self.err(format!(
                "sent a line over {} bytes or an unfinished one",
                wire::MAX_LINE
            )));
        }
        wire::decode(&line).map_err(|e| self.err(e))
    }
}

/// What a stream accepts connections with.
pub struct Acceptor {
    tls: Option<tokio_rustls::TlsAcceptor>,
    pub secret: Arc<GridSecret>,
    pub grid: String,
    pub stream: String,
}

impl Acceptor {
    /// TLS, with a fresh self-signed certificate, unless the listener is on loopback.
    pub fn new(secret: Arc<GridSecret>, grid: &str, stream: &str, tls: bool) -> Result<Acceptor> {
        let tls = if tls { Some(server_tls()?) } else { None };
        Ok(Acceptor {
            tls,
            secret,
            grid: grid.into(),
            stream: stream.into(),
        })
    }

    /// Runs the stream's side of the handshake on a connection just accepted.
    pub async fn accept(&self, mut tcp: TcpStream, peer: String) -> Result<Conn> {
        let _ = tcp.set_nodelay(true);
        let nonce = wire::nonce();
        let hello = wire::encode(&FromStream::Hello {
            version: wire::VERSION,
            tls: self.tls.is_some(),
            nonce: nonce.clone(),
        });
        let fail = |reason: String| Error::Peer {
            peer: peer.clone(),
            reason,
        };
        tcp.write_all(&hello)
            .await
            .map_err(|e| fail(format!("cannot send: {e}")))?;
        let (io, binding): (Box<dyn Io>, Vec<u8>) = match &self.tls {
            Some(acceptor) => {
                let s = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
                let binding = exported(s.get_ref().1).map_err(|e| fail(e.to_string()))?;
                (Box::new(s), binding)
            }
            None => (Box::new(tcp), Vec::new()),
        };
        let mut conn = Conn {
            io: BufReader::new(io),
            peer,
        };
        let ToStream::Auth {
            grid,
            nonce: theirs,
            proof,
        } = conn.recv().await?
        else {
            return Err(conn.err("spoke before it authenticated"));
        };
        let expected = wire::proof(
            &self.secret,
            Side::Asker,
            &self.grid,
            &binding,
            &nonce,
            &theirs,
        );
        if grid != self.grid || !wire::check(&expected, &proof) {
            let _ = conn
                .send(&FromStream::Refused {
                    kind: "auth".into(),
                    message: format!("not a peer of grid `{}`: wrong grid or secret", self.grid),
                })
                .await;
            return Err(conn.err(format!(
                "failed to prove it knows grid `{}`'s secret (it said grid `{grid}`)",
                self.grid
            )));
        }
        let mine = wire::proof(
            &self.secret,
            Side::Stream,
            &self.grid,
            &binding,
            &nonce,
            &theirs,
        );
        conn.send(&FromStream::Welcome {
            stream: self.stream.clone(),
            proof: mine,
        })
        .await?;
        Ok(conn)
    }
}

/// Connects to the stream at `addr` (`HOST:PORT`) and authenticates both ways;
/// returns the connection and the stream's name.
pub async fn connect(addr: &str, secret: &GridSecret, grid: &str) -> Result<(Conn, String)> {
    let fail = |reason: String| Error::Peer {
        peer: addr.to_string(),
        reason,
    };
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let loopback = tcp.peer_addr().is_ok_and(|a| a.ip().is_loopback());
    let mut tcp = tcp;
    // Byte by byte: what follows the hello on this socket is TLS's, not ours.
    let mut line = Vec::new();
    loop {
        let b = tcp
            .read_u8()
            .await
            .map_err(|e| fail(format!("no hello: {e}")))?;
        if b == b'\n' {
            break;
        }
        if line.len() > 1024 {
            return Err(fail("is not a cascade grid stream (no hello)".into()));
        }
        line.push(b);
    }
    let FromStream::Hello {
        version,
        tls,
        nonce,
    } = wire::decode(&line).map_err(fail)?
    else {
        return Err(fail("is not a cascade grid stream (no hello)".into()));
    };
    if version != wire::VERSION {
        return Err(fail(format!(
            "speaks grid protocol version {version}; this cascade speaks {}",
            wire::VERSION
        )));
    }
    let (io, binding): (Box<dyn Io>, Vec<u8>) = if tls {
        let name = ServerName::try_from("cascade-grid").expect("a valid name");
        let s = client_tls()
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
        let binding = exported(s.get_ref().1).map_err(|e| fail(e.to_string()))?;
        (Box::new(s), binding)
    } else if loopback {
        (Box::new(tcp), Vec::new())
    } else {
        return Err(fail(
            "offers no TLS though it is not on loopback; refusing to send bookmarks in the clear"
                .into(),
        ));
    };
    let mut conn = Conn {
        io: BufReader::new(io),
        peer: addr.to_string(),
    };
    let mine = wire::nonce();
    conn.send(&ToStream::Auth {
        grid: grid.into(),
        nonce: mine.clone(),
        proof: wire::proof(secret, Side::Asker, grid, &binding, &nonce, &mine),
    })
    .await?;
    match conn.recv::<FromStream>().await? {
        FromStream::Welcome { stream, proof } => {
            let expected = wire::proof(secret, Side::Stream, grid, &binding, &nonce, &mine);
            if !wire::check(&expected, &proof) {
                return Err(conn.err("failed to prove it knows the grid's secret"));
            }
            conn.peer = format!("{stream} ({addr})");
            Ok((conn, stream))
        }
        FromStream::Refused { message, .. } => Err(conn.err(format!("refused us: {message}"))),
        other => Err(conn.err(format!("answered {other:?} to our proof"))),
    }
}

fn exported<D>(c: &rustls::ConnectionCommon<D>) -> std::result::Result<Vec<u8>, rustls::Error> {
    c.export_keying_material(vec![0u8; 32], wire::EXPORTER_LABEL, None)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_tls() -> Result<tokio_rustls::TlsAcceptor> {
    let bad = |e: String| Error::Stopped(format!("the grid listener's TLS setup failed: {e}"));
    let ck = rcgen::generate_simple_self_signed(vec!["cascade-grid".to_string()])
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

fn client_tls() -> tokio_rustls::TlsConnector {
    let p = provider();
    let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(p)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Accepts the stream's self-signed certificate (the proofs authenticate it) but
/// still checks the handshake's signatures, so the session is the certificate's.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
