//! A group's `hooks:`: the commands that quiesce its applications around the group
//! snapshot, and the limits that keep a hang from leaving them frozen.
use serde::Deserialize;
use std::time::Duration;

/// How long a freeze or thaw hook may run when the config names no `timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a group may stay frozen when the config names no `max-freeze`: far more
/// than a snapshot takes (seconds), short enough that applications blocked on a
/// frozen file system survive it.
pub const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(300);

/// Commands run around the group snapshot: `freeze` before the first volume is
/// snapshotted, `thaw` after the last one (and after a failure), so the set is
/// consistent as a whole for applications that can quiesce.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hooks {
    #[serde(default)]
    pub freeze: Option<Vec<String>>,
    #[serde(default)]
    pub thaw: Option<Vec<String>>,
    /// A hook still running after this is killed (with every process it started)
    /// and the cycle fails naming it; the thaw hook runs all the same. Default 60s.
    #[serde(default)]
    pub timeout: Option<super::Age>,
    /// A group frozen for longer than this is thawed and its cycle abandoned,
    /// keeping nothing, whatever the cycle was waiting for. Default 5m.
    #[serde(default)]
    pub max_freeze: Option<super::Age>,
}

impl Hooks {
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_HOOK_TIMEOUT, |a| a.duration())
    }

    pub fn max_freeze(&self) -> Duration {
        self.max_freeze.map_or(DEFAULT_MAX_FREEZE, |a| a.duration())
    }

    /// `at` names the section in errors (`consistency-groups[0].hooks`).
    pub(crate) fn check(&self, at: &str) -> Result<(), String> {
        for (name, hook) in [("freeze", &self.freeze), ("thaw", &self.thaw)] {
            if hook.as_ref().is_some_and(|h| h.is_empty()) {
                return Err(format!("{at}.{name}: an empty command; give a program and its arguments or leave it out"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_parse() {
        let h: Hooks = serde_yaml::from_str("freeze: [true]\n").unwrap();
        assert_eq!(
            (h.timeout(), h.max_freeze()),
            (DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_FREEZE)
        );
        let h: Hooks = serde_yaml::from_str("timeout: 5s\nmax-freeze: 2m\n").unwrap();
        assert_eq!(
            (h.timeout(), h.max_freeze()),
            (Duration::from_secs(5), Duration::from_secs(120))
        );
        let e = serde_yaml::from_str::<Hooks>("timeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`soon` is not an age"), "{e}");
        let e = serde_yaml::from_str::<Hooks>("freeze: []\n")
            .unwrap()
            .check("hooks")
            .unwrap_err();
        assert!(e.contains("hooks.freeze: an empty command"), "{e}");
    }
}
