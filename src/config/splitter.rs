//! The `splitter:` section of a consistency group: the group is served over NBD and
//! every write is journalled, instead of being snapshotted on a schedule.
use super::{Age, Size};
use crate::listen::ListenAddr;
use serde::Deserialize;
use std::time::Duration;

/// Where a splitter listens when the config names no address: loopback, NBD's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10809";
/// How long shipped writes wait to be group-committed when the config says nothing.
pub const DEFAULT_COMMIT_EVERY: Duration = Duration::from_millis(100);
/// Bytes of acknowledged writes held for the journal before the group marks instead.
pub const DEFAULT_QUEUE: u64 = 256 << 20;
/// Bytes of volume one bit of the dirty-region map stands for.
pub const DEFAULT_DIRTY_GRANULARITY: u64 = 64 << 10;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SplitterConfig {
    /// `HOST:PORT`, a port (loopback), or `unix:PATH`. Default 127.0.0.1:10809.
    #[serde(default)]
    pub listen: Option<String>,
    /// Group commit: writes acknowledged within this time go to the journal as one
    /// delta, one fsync (a byte bound also ends a delta). Default 100ms.
    #[serde(default)]
    pub commit_every: Option<Age>,
    /// Memory for acknowledged writes not yet journalled; past it the group stops
    /// queueing their data and marks the regions they change (marking mode), to
    /// read them back once the journal caught up. Default 256MiB.
    #[serde(default)]
    pub queue: Option<Size>,
    /// Bytes of volume one bit of the dirty-region map stands for: a power of two
    /// from 4KiB to 64MiB. Smaller reads back less after marking, and keeps more
    /// map (2 KiB per GiB at the default, 64KiB).
    #[serde(default)]
    pub dirty_granularity: Option<Size>,
}

impl SplitterConfig {
    pub fn listen(&self) -> ListenAddr {
        self.listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .expect("checked when the config was loaded")
    }

    pub fn queue(&self) -> u64 {
        self.queue.map_or(DEFAULT_QUEUE, |s| s.0)
    }

    pub fn dirty_granularity(&self) -> u64 {
        self.dirty_granularity
            .map_or(DEFAULT_DIRTY_GRANULARITY, |s| s.0)
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
        if self.queue() < 1 << 20 {
            return Err(format!(
                "{at}.queue: {} is below 1MiB; a write of up to 32MiB would turn the group to marking at once",
                Size(self.queue())
            ));
        }
        let g = self.dirty_granularity();
        if !g.is_power_of_two() || !(4096..=64 << 20).contains(&g) {
            return Err(format!(
                "{at}.dirty-granularity: {} is not a power of two from 4KiB to 64MiB",
                Size(g)
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
        assert!(serde_yaml::from_str::<SplitterConfig>("queues: 1\n").is_err());
        let q: SplitterConfig =
            serde_yaml::from_str("queue: 64MiB\ndirty-granularity: 4KiB\n").unwrap();
        q.check("x").unwrap();
        assert_eq!((q.queue(), q.dirty_granularity()), (64 << 20, 4096));
        assert_eq!((s.queue(), s.dirty_granularity()), (DEFAULT_QUEUE, 65536));
        let small: SplitterConfig = serde_yaml::from_str("queue: 4KiB\n").unwrap();
        assert!(small.check("g").unwrap_err().contains("g.queue"));
        let odd: SplitterConfig = serde_yaml::from_str("dirty-granularity: 5000\n").unwrap();
        assert!(odd.check("g").unwrap_err().contains("dirty-granularity"));
    }
}
