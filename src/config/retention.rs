//! Retention policies: which restore points to keep. One policy type serves the
//! journal (`journal-retention` of a consistency group) and object replicas
//! (`retention` of an object target), so both read the same way in YAML:
//!
//! ```yaml
//! retention:
//!   keep-deltas: 48   # the newest 48 restore points, whatever their age
//!   keep-age: 7d      # and every point taken in the 7 days before the newest one
//! ```
//!
//! Ages count back from the newest point, or from the clock when that point claims
//! a later time: a source that stops cycling loses no history, and one point
//! stamped in the future (a clock that stepped ahead for one cycle) ages nothing.
//!
//! A point is kept when either rule keeps it; with no rule, everything is kept.
//! Deleting is then bounded by what the kept points need (a full delta to start
//! from, the cursors of targets that still read the journal), which the callers add.
use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    #[serde(default)]
    pub keep_deltas: Option<u64>,
    #[serde(default)]
    pub keep_age: Option<Age>,
}

/// A duration written as a number and a unit: `100ms`, `90s`, `45m`, `36h`, `7d`, `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age {
    pub ns: i64,
}

impl Age {
    /// The age as a duration (it is positive by construction).
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.ns as u64)
    }
}

impl std::str::FromStr for Age {
    type Err = String;
    fn from_str(s: &str) -> Result<Age, String> {
        let bad =
            || format!("`{s}` is not an age: write a number and ms, s, m, h, d or w, as in 7d");
        if let Some(ms) = s.strip_suffix("ms") {
            let n: i64 = ms.parse().map_err(|_| bad())?;
            let ns = n
                .checked_mul(1_000_000)
                .filter(|v| *v > 0)
                .ok_or_else(bad)?;
            return Ok(Age { ns });
        }
        let unit = s.chars().last().ok_or_else(bad)?;
        let secs: i64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
        let ns = n
            .checked_mul(secs)
            .and_then(|v| v.checked_mul(1_000_000_000))
            .filter(|v| *v > 0)
            .ok_or_else(bad)?;
        Ok(Age { ns })
    }
}

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Age, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Retention {
    /// Checks the policy's numbers; `at` names it in messages.
    pub fn check(&self, at: &str) -> Result<(), String> {
        if self.keep_deltas == Some(0) {
            return Err(format!(
                "{at}.keep-deltas: 0 would keep no restore point; the least is 1"
            ));
        }
        Ok(())
    }

    /// Whether the policy lets anything go at all.
    pub fn prunes(&self) -> bool {
        self.keep_deltas.is_some() || self.keep_age.is_some()
    }

    /// The oldest restore point the policy keeps among `points` (ids and times,
    /// ascending) when the clock says `now_ns`; None when there are no points.
    pub fn oldest_kept(&self, points: &[(u64, i64)], now_ns: i64) -> Option<u64> {
        let first = points.first()?.0;
        if !self.prunes() {
            return Some(first);
        }
        let by_count = self.keep_deltas.map_or(u64::MAX, |n| {
            let n = (n as usize).min(points.len());
            points[points.len() - n].0
        });
        // Ages count back from the newest point, not from the clock: when cycles stop
        // (a source offline for longer than keep-age) the history stays. But never
        // from a time later than the clock: a point stamped in the future (a clock
        // that stepped ahead, then back) would make every earlier point old. A point
        // is young when it and every later point are.
        let (newest, newest_t) = *points.last().expect("not empty");
        let from = newest_t.min(now_ns);
        let by_age = self.keep_age.map_or(u64::MAX, |age| {
            match points
                .iter()
                .rposition(|(_, t)| from.saturating_sub(*t) >= age.ns)
            {
                Some(i) => points[i + 1].0,
                None => first,
            }
        });
        // Keep the newest point whatever the rules say: it is the replica's present.
        Some(by_count.min(by_age).min(newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    fn points() -> Vec<(u64, i64)> {
        (1..=10).map(|i| (i, i as i64 * H)).collect()
    }

    /// A clock well past every point: the rules alone decide.
    const LATER: i64 = 2000 * H;

    #[test]
    fn a_point_is_kept_when_either_rule_keeps_it() {
        let count = Retention {
            keep_deltas: Some(3),
            keep_age: None,
        };
        assert_eq!(count.oldest_kept(&points(), LATER), Some(8));
        let age = |a: &str| Retention {
            keep_deltas: None,
            keep_age: Some(a.parse().unwrap()),
        };
        // Within 5 h of the newest point (10 h): points 6..=10.
        assert_eq!(age("5h").oldest_kept(&points(), LATER), Some(6));
        let both = Retention {
            keep_deltas: Some(3),
            keep_age: Some("5h".parse().unwrap()),
        };
        assert_eq!(both.oldest_kept(&points(), LATER), Some(6));
        assert_eq!(
            Retention::default().oldest_kept(&points(), LATER),
            Some(1),
            "no rule keeps everything"
        );
        assert_eq!(
            age("1s").oldest_kept(&points(), LATER),
            Some(10),
            "the newest point always stays"
        );
        assert_eq!(count.oldest_kept(&[], LATER), None);
    }

    /// Ages count from the newest point, not the clock: while cycles are paused (a
    /// source offline longer than keep-age) nothing ages out; once a new point
    /// arrives, ages count back from it. A point stamped in the future does not hold
    /// the history after it hostage.
    #[test]
    fn ages_count_back_from_the_newest_point() {
        let age = Retention {
            keep_deltas: None,
            keep_age: Some("5h".parse().unwrap()),
        };
        let mut paused = points();
        paused.push((11, 1000 * H));
        assert_eq!(age.oldest_kept(&paused, LATER), Some(11));
        assert_eq!(
            age.oldest_kept(&points(), LATER),
            Some(6),
            "the clock far ahead changes nothing"
        );
        let mut skewed = points();
        skewed[2].1 = 500 * H; // point 3 claims a time far ahead
        assert_eq!(age.oldest_kept(&skewed, LATER), Some(6));
    }

    /// The newest point stamped later than the clock (the clock stepped ahead for a
    /// cycle, then back): ages count from the clock, so the earlier points age as
    /// they would have, and none goes because of that one stamp.
    #[test]
    fn ages_never_count_from_a_point_later_than_the_clock() {
        let age = Retention {
            keep_deltas: None,
            keep_age: Some("5h".parse().unwrap()),
        };
        let mut future = points();
        future.push((11, 1000 * H));
        // The clock reads 10 h: within 5 h of it, points 6..=10, and 11.
        assert_eq!(age.oldest_kept(&future, 10 * H), Some(6));
        // A clock behind every point makes every age negative: all young.
        assert_eq!(age.oldest_kept(&future, 0), Some(1));
        // Once the clock reaches the stamp, ages count from it as from any point.
        assert_eq!(age.oldest_kept(&future, 1000 * H), Some(11));
    }

    #[test]
    fn ages_parse_with_units_and_bad_ones_are_named() {
        assert_eq!("90s".parse::<Age>().unwrap().ns, 90_000_000_000);
        assert_eq!("2w".parse::<Age>().unwrap().ns, 14 * 24 * H);
        assert_eq!("100ms".parse::<Age>().unwrap().ns, 100_000_000);
        assert!("0ms".parse::<Age>().is_err());
        for bad in ["", "7", "d", "7x", "-1d", "0h", "99999999999999w"] {
            let e = bad.parse::<Age>().unwrap_err();
            assert!(e.contains("is not an age"), "{bad}: {e}");
        }
    }
}
