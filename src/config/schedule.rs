//! When a consistency group cycles: a cron expression read in a time zone, and what a
//! daemon does about ticks that passed while it was not running.
//!
//! ```yaml
//! schedule:
//!   cron: "*/15 * * * *"     # minute hour day-of-month month day-of-week
//!   timezone: Europe/Berlin  # IANA name; default UTC
//!   missed: run-once         # or skip
//! ```
//!
//! Expressions are parsed by croner (POSIX/Vixie semantics, with an optional leading
//! seconds field, names, `L`, `#` and `W`), chosen because it is maintained and reads
//! both 5- and 6-field expressions; times are computed in the named zone so a daily
//! cycle stays at its wall-clock hour across daylight-saving changes.
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    pub cron: CronSpec,
    #[serde(default)]
    pub timezone: TimeZone,
    #[serde(default)]
    pub missed: Missed,
}

/// What a daemon that starts after one or more ticks passed unserved does: run one
/// cycle at once (the default: a journal point is owed), or wait for the next tick.
/// Either way it says how many it missed; it never runs one cycle per missed tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    #[default]
    RunOnce,
    Skip,
}

/// A parsed cron expression, with the text it came from for messages.
#[derive(Debug, Clone)]
pub struct CronSpec {
    text: String,
    cron: croner::Cron,
}

impl std::str::FromStr for CronSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<CronSpec, String> {
        let fields = s.split_whitespace().count();
        let hint = "write minute hour day-of-month month day-of-week, or six fields with seconds first, as in `*/15 * * * *`";
        if !s.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!("`{s}` has {fields} fields: {hint}"));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(s)
            .map_err(|e| format!("`{s}` is not a cron schedule ({e}): {hint}"))?;
        Ok(CronSpec {
            text: s.to_string(),
            cron,
        })
    }
}

impl<'de> Deserialize<'de> for CronSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CronSpec, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for CronSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// An IANA time zone; UTC unless named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub Tz);

impl Default for TimeZone {
    fn default() -> TimeZone {
        TimeZone(Tz::UTC)
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TimeZone, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Tz>().map(TimeZone).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not an IANA time zone name such as UTC or Europe/Berlin"
            ))
        })
    }
}

/// At most this many passed ticks are counted one by one; beyond it a report says
/// "at least".
const COUNT_LIMIT: u64 = 100_000;

impl Schedule {
    pub(crate) fn check(&self, at: &str) -> Result<(), String> {
        if self.next_after(Utc::now()).is_none() {
            return Err(format!(
                "{at}.cron: `{}` never fires after now",
                self.cron.text
            ));
        }
        Ok(())
    }

    /// The first tick strictly after `t`; None if the expression never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .cron
            .find_next_occurrence(&t.with_timezone(&self.timezone.0), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The ticks in `(after, until]`: how many there were (capped at a large number)
    /// and the newest of them.
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> (u64, Option<DateTime<Utc>>) {
        let mut count = 0;
        let mut newest = None;
        let mut t = after;
        while let Some(n) = self.next_after(t).filter(|n| *n <= until) {
            count += 1;
            newest = Some(n);
            t = n;
            if count == COUNT_LIMIT {
                // Jump to the end: the newest tick is what matters from here.
                let last = self.last_at_or_before(until);
                return (count, last.or(newest));
            }
        }
        (count, newest)
    }

    fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .cron
            .find_previous_occurrence(&t.with_timezone(&self.timezone.0), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// How the schedule reads in messages: `*/15 * * * * (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.cron.text, self.timezone.0.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn sched(cron: &str, tz: &str) -> Schedule {
        Schedule {
            cron: cron.parse().unwrap(),
            timezone: TimeZone(tz.parse().unwrap()),
            missed: Missed::RunOnce,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn five_and_six_fields() {
        let s = sched("*/15 * * * *", "UTC");
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 10, 7, 30)),
            Some(utc(2026, 1, 1, 10, 15, 0))
        );
        let s = sched("*/10 * * * * *", "UTC");
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 10, 7, 30)),
            Some(utc(2026, 1, 1, 10, 7, 40))
        );
    }

    #[test]
    fn time_zone_keeps_the_wall_clock_hour() {
        // 02:30 in Berlin is 01:30 UTC in winter and 00:30 UTC in summer.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 12, 0, 0)),
            Some(utc(2026, 1, 11, 1, 30, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 7, 10, 12, 0, 0)),
            Some(utc(2026, 7, 11, 0, 30, 0))
        );
    }

    #[test]
    fn ticks_between_counts_and_names_the_newest() {
        let s = sched("* * * * *", "UTC");
        let (n, newest) = s.ticks_between(utc(2026, 1, 1, 10, 0, 0), utc(2026, 1, 1, 10, 5, 30));
        assert_eq!((n, newest), (5, Some(utc(2026, 1, 1, 10, 5, 0))));
        assert_eq!(
            s.ticks_between(utc(2026, 1, 1, 10, 0, 0), utc(2026, 1, 1, 10, 0, 59)),
            (0, None)
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let e = "* * *".parse::<CronSpec>().unwrap_err();
        assert!(e.contains("has 3 fields"), "{e}");
        let e = "61 * * * *".parse::<CronSpec>().unwrap_err();
        assert!(e.contains("is not a cron schedule"), "{e}");
        let e = "* * * * * * 2030".parse::<CronSpec>().unwrap_err();
        assert!(e.contains("7 fields"), "{e}");
        assert!("@hourly".parse::<CronSpec>().is_ok());
    }
}
