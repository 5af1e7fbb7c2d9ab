//! The `grid:` section: this host's stream of a distributed consistency group. The
//! streams of one grid share a bookmark counter in an object store they can all
//! reach (`counter`), and each listens for the bookmarks another host asks of it
//! (`listen`), authenticating peers with a shared secret (`secret-file`).
use super::{Age, ObjectOptions, Secret};
use crate::listen::ListenAddr;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Where a stream listens for its grid's bookmarks when the config names no address.
pub const DEFAULT_GRID_LISTEN: &str = "127.0.0.1:7610";
/// How long a bookmark waits for every stream to hold its writers.
pub const DEFAULT_HOLD_BUDGET: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GridConfig {
    /// The grid's name, the same on every host.
    pub name: String,
    /// This host's stream: its name in the grid, unique there.
    pub stream: String,
    /// The consistency group of this config that is the stream; default: the only one.
    #[serde(default)]
    pub cg: Option<String>,
    /// The counter's object store: `s3://bucket/prefix` or `file:///dir` (one host).
    pub counter: String,
    /// The other streams' grid listeners, `HOST:PORT`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Where this stream listens: `HOST:PORT` or a port (loopback). Default
    /// 127.0.0.1:7610. Beyond loopback, peers talk TLS.
    #[serde(default)]
    pub listen: Option<String>,
    /// A file whose first line is the secret every stream of the grid shares; it
    /// must be readable by its owner only.
    pub secret_file: PathBuf,
    /// How long a bookmark waits for every stream to hold its writes; a stream that
    /// has not answered by then makes the bookmark incomplete. Default 50ms.
    #[serde(default)]
    pub hold_budget: Option<Age>,
    /// The counter store's S3 endpoint, region and credentials, as for object targets
    /// (otherwise the standard AWS environment variables).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
}

impl GridConfig {
    pub fn listen(&self) -> ListenAddr {
        self.listen
            .as_deref()
            .unwrap_or(DEFAULT_GRID_LISTEN)
            .parse()
            .expect("checked when the config was loaded")
    }

    pub fn hold_budget(&self) -> Duration {
        self.hold_budget
            .map_or(DEFAULT_HOLD_BUDGET, |a| a.duration())
    }

    pub fn counter_options(&self) -> ObjectOptions {
        ObjectOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            key: None,
            s3: Default::default(),
        }
    }

    pub(crate) fn check(&self, groups: &[super::ConsistencyGroup]) -> Result<(), String> {
        super::check_name(&self.name).map_err(|r| format!("grid.name: {r}"))?;
        super::check_name(&self.stream).map_err(|r| format!("grid.stream: {r}"))?;
        match &self.cg {
            Some(cg) if !groups.iter().any(|g| &g.name == cg) => {
                return Err(format!(
                    "grid.cg: no consistency group `{cg}` in this config"
                ))
            }
            None if groups.len() != 1 => {
                return Err(
                    "grid.cg: the config has several consistency groups; name the one that is the stream"
                        .into(),
                )
            }
            _ => {}
        }
        let cg = self.group(groups);
        if cg.splitter.is_none() && (cg.hooks.freeze.is_none() || cg.hooks.thaw.is_none()) {
            return Err(format!(
                "grid: stream `{}` snapshots group `{}`, which has no freeze and thaw hooks: nothing would \
                 stop its writes while the other streams hold theirs, so its bookmarks would not be \
                 consistent cuts; give it hooks.freeze and hooks.thaw (or a splitter)",
                self.stream, cg.name
            ));
        }
        if !(self.counter.starts_with("s3://")
            || self.counter.starts_with("file://")
            || self.counter.starts_with('/'))
        {
            return Err(format!(
                "grid.counter: `{}` is not s3://bucket/prefix, file:///dir or an absolute directory",
                self.counter
            ));
        }
        if let Some(l) = &self.listen {
            match l.parse::<ListenAddr>() {
                Ok(ListenAddr::Tcp(_)) => {}
                Ok(ListenAddr::Unix(_)) => {
                    return Err(
                        "grid.listen: peers on other hosts connect over TCP: write HOST:PORT"
                            .into(),
                    )
                }
                Err(e) => return Err(format!("grid.listen: {e}")),
            }
        }
        for (i, p) in self.peers.iter().enumerate() {
            let ok = p
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("grid.peers[{i}]: `{p}` is not HOST:PORT"));
            }
        }
        let b = self.hold_budget();
        if b < Duration::from_millis(1) || b > Duration::from_secs(10) {
            return Err(format!(
                "grid.hold-budget: {b:?} is outside 1ms..10s; writers wait that long at most for a bookmark"
            ));
        }
        Ok(())
    }

    /// The group of `groups` that is the stream (checked at load).
    pub fn group<'a>(&self, groups: &'a [super::ConsistencyGroup]) -> &'a super::ConsistencyGroup {
        match &self.cg {
            Some(n) => groups
                .iter()
                .find(|g| &g.name == n)
                .expect("checked at load"),
            None => &groups[0],
        }
    }
}
