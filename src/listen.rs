//! Where a server listens: `HOST:PORT`, a bare port (loopback: a listener is exposed
//! beyond the host only by naming an address), or `unix:PATH`. The NBD server and the
//! config share this one spelling.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<ListenAddr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(p)));
        }
        let port = s.strip_prefix(':').unwrap_or(s);
        if let Ok(p) = port.parse::<u16>() {
            return Ok(ListenAddr::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                p,
            )));
        }
        s.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!("`{s}` is not a listen address: write HOST:PORT (an IP address and a port), a port, or unix:PATH")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl ListenAddr {
    /// Whether only this host can connect.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(a) => a.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let l = |s: &str| s.parse::<ListenAddr>();
        assert_eq!(l("10809").unwrap().to_string(), "127.0.0.1:10809");
        assert_eq!(l(":10809").unwrap().to_string(), "127.0.0.1:10809");
        assert_eq!(l("[::1]:10809").unwrap().to_string(), "[::1]:10809");
        assert!(l("0.0.0.0:10809").is_ok_and(|a| !a.is_local()));
        assert_eq!(
            l("unix:/run/x.sock").unwrap(),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert!(l("unix:").is_err());
        assert!(l("localhost:1")
            .unwrap_err()
            .contains("not a listen address"));
    }
}
