//! The `splitter:` section of a consistency group: the group is served over NBD and
//! every write is journalled, instead of being snapshotted on a schedule.
use super::Age;
use crate::listen::ListenAddr;
use serde::Deserialize;
use std::time::Duration;

/// Where a splitter listens when the config names no address: loopback, NBD's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10809";
/// How long shipped writes wait to be group-committed when the config says nothing.
pub const DEFAULT_COMMIT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SplitterConfig {
    /// `HOST:PORT`, a port (loopback), or `unix:PATH`. Default 127.0.0.1:10809.
    #[serde(default)]
    pub listen: Option<String>,
    /// Group commit: writes acknowledged within this time go to the journal as one
    /// delta, one fsync (a byte bound also ends a delta). Default 100ms.
    #[serde(default)]
    pub commit_every: Option<Age>,
}

impl SplitterConfig {
    pub fn listen(&self) -> ListenAddr {
        self.listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .expect("checked when the config was loaded")
    }

    pub fn commit_every(&self) -> Duration {
        self.commit_every
            .map_or(DEFAULT_COMMIT_EVERY, |a| a.duration())
    }

    pub(crate) fn check(&self, at: &str) -> Result<(), String> {
        if let Some(l) = &self.listen {
            l.parse::<ListenAddr>()
                .map_err(|e| format!("{at}.listen: {e}"))?;
        }
        let every = self.commit_every();
        if every > Duration::from_secs(60) {
            return Err(format!(
                "{at}.commit-every: {every:?} is longer than a minute; writes would wait that long to be journalled"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let s: SplitterConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(s.listen().to_string(), DEFAULT_LISTEN);
        assert_eq!(s.commit_every(), DEFAULT_COMMIT_EVERY);
        s.check("x").unwrap();
        let s: SplitterConfig =
            serde_yaml::from_str("listen: unix:/run/v.sock\ncommit-every: 20ms\n").unwrap();
        assert_eq!(s.listen(), ListenAddr::Unix("/run/v.sock".into()));
        assert_eq!(s.commit_every(), Duration::from_millis(20));
        let bad: SplitterConfig = serde_yaml::from_str("listen: nowhere\n").unwrap();
        assert!(bad
            .check("cg.splitter")
            .unwrap_err()
            .contains("cg.splitter.listen"));
        let slow: SplitterConfig = serde_yaml::from_str("commit-every: 2m\n").unwrap();
        assert!(slow.check("x").is_err());
        assert!(serde_yaml::from_str::<SplitterConfig>("queue: 1\n").is_err());
    }
}
