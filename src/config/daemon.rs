//! The `daemon:` section of the config: settings of `cascade run` itself.
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where Prometheus metrics are served when asked for without an address.
const DEFAULT_METRICS_PORT: u16 = 9464;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// Serve Prometheus metrics on this address (`127.0.0.1:9464`, `[::1]:9464`; a
    /// bare port means loopback). Off unless set here or with `--metrics-listen`.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// How long a stopping daemon lets a running cycle finish before abandoning it
    /// (it then keeps nothing of it, and the next start makes the tick up). Default
    /// 30s; longer suits large first cycles, within the service manager's own timeout.
    #[serde(default)]
    pub stop_grace: Option<super::Age>,
}

/// The stop grace when the config names none.
pub const DEFAULT_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl DaemonConfig {
    pub fn stop_grace(&self) -> std::time::Duration {
        self.stop_grace.map_or(DEFAULT_STOP_GRACE, |a| a.duration())
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(l) = &self.metrics_listen {
            parse_listen(l).map_err(|e| format!("daemon.metrics-listen: {e}"))?;
        }
        Ok(())
    }
}

/// Reads a listen address. A bare port (`9464` or `:9464`) binds loopback only:
/// metrics name volumes and targets, so exposing them is a choice made by address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let port = s.strip_prefix(':').unwrap_or(s);
    if let Ok(p) = port.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
    }
    s.parse().map_err(|_| {
        format!("`{s}` is not a listen address: write HOST:PORT such as 127.0.0.1:{DEFAULT_METRICS_PORT}, or a port")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_loopback() {
        assert_eq!(parse_listen("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_listen(":9000").unwrap().to_string(), "127.0.0.1:9000");
        assert_eq!(
            parse_listen("[::1]:9464").unwrap().to_string(),
            "[::1]:9464"
        );
        assert!(parse_listen("localhost:x")
            .unwrap_err()
            .contains("not a listen address"));
    }
}
