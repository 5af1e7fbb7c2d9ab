//! Prometheus metrics of the daemon, in the text exposition format, served on an
//! opt-in address. Counters live here and grow while the daemon runs (they restart at
//! zero with it, which Prometheus' `rate()` expects); journal and lag gauges are
//! refreshed from [`group_report`](super::report::group_report) at every scrape, so
//! they say what `cascade status` says, and cost nothing when nobody scrapes.
use super::report::GroupReport;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

#[derive(Debug, Default, Clone)]
pub struct GroupMetrics {
    pub cycles_ok: u64,
    pub cycles_failed: u64,
    /// Ticks that came while the previous cycle still ran.
    pub ticks_skipped: u64,
    pub cycle_seconds_total: f64,
    pub last_cycle_seconds: f64,
    pub last_start_delay_seconds: f64,
    pub last_success_timestamp: f64,
    pub changed_bytes_total: u64,
    pub journal_bytes: u64,
    pub journal_first_delta: u64,
    pub journal_last_delta: u64,
    /// Split deltas (and bases) a served split group journalled.
    pub split_deltas: u64,
    /// Times serving a split group failed (and was retried).
    pub split_failures: u64,
    /// A served split group as its splitter tells it; None while it is not served.
    pub split: Option<crate::splitter::SplitStatus>,
}

#[derive(Debug, Default, Clone)]
pub struct TargetMetrics {
    pub exported_deltas: u64,
    pub exported_bytes: u64,
    pub errors: u64,
    pub cursor: u64,
    pub lag_deltas: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
}

#[derive(Default)]
struct Inner {
    groups: BTreeMap<String, GroupMetrics>,
    targets: BTreeMap<(String, String), TargetMetrics>,
    reloads_ok: u64,
    reloads_failed: u64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn group(&self, cg: &str, f: impl FnOnce(&mut GroupMetrics)) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(i.groups.entry(cg.to_string()).or_default())
    }

    pub fn target(&self, cg: &str, target: &str, f: impl FnOnce(&mut TargetMetrics)) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(i.targets
            .entry((cg.to_string(), target.to_string()))
            .or_default())
    }

    pub fn reloaded(&self, ok: bool) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            i.reloads_ok += 1
        } else {
            i.reloads_failed += 1
        }
    }

    /// Takes the journal and lag gauges of a group from its report.
    pub fn refresh(&self, r: &GroupReport) {
        self.group(&r.cg, |g| {
            g.journal_bytes = r.journal_bytes;
            g.journal_first_delta = r.first_delta;
            g.journal_last_delta = r.last_delta;
            g.split = r
                .splitter
                .as_ref()
                .and_then(|s| s.serving.as_ref())
                .cloned();
        });
        for t in &r.targets {
            self.target(&r.cg, &t.target, |m| {
                m.cursor = t.cursor;
                m.lag_deltas = t.lag_deltas;
                m.lag_bytes = t.lag_bytes;
                m.lag_seconds = t.lag_seconds;
            });
        }
    }

    /// Forgets groups and targets no longer in the config, so their series end.
    pub fn retain(&self, keep: impl Fn(&str, Option<&str>) -> bool) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.groups.retain(|g, _| keep(g, None));
        i.targets.retain(|(g, t), _| keep(g, Some(t)));
    }

    pub fn render(&self) -> String {
        let i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let g = |f: fn(&GroupMetrics) -> f64| {
            i.groups
                .iter()
                .map(move |(cg, m)| (format!("cg=\"{}\"", escape(cg)), f(m)))
                .collect::<Vec<_>>()
        };
        let t = |f: fn(&TargetMetrics) -> f64| {
            i.targets
                .iter()
                .map(move |((cg, t), m)| {
                    (
                        format!("cg=\"{}\",target=\"{}\"", escape(cg), escape(t)),
                        f(m),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut cycles = g(|m| m.cycles_ok as f64);
        for (l, _) in &mut cycles {
            l.push_str(",result=\"ok\"");
        }
        cycles.extend(g(|m| m.cycles_failed as f64).into_iter().map(|(mut l, v)| {
            l.push_str(",result=\"failed\"");
            (l, v)
        }));
        family(
            &mut out,
            "cascade_cycles_total",
            "counter",
            "Cycles run, by result.",
            cycles,
        );
        family(
            &mut out,
            "cascade_cycle_ticks_skipped_total",
            "counter",
            "Schedule ticks skipped because the previous cycle of the group still ran.",
            g(|m| m.ticks_skipped as f64),
        );
        family(
            &mut out,
            "cascade_cycle_seconds_total",
            "counter",
            "Time spent in cycles.",
            g(|m| m.cycle_seconds_total),
        );
        family(
            &mut out,
            "cascade_last_cycle_seconds",
            "gauge",
            "Duration of the last cycle.",
            g(|m| m.last_cycle_seconds),
        );
        family(
            &mut out,
            "cascade_last_cycle_start_delay_seconds",
            "gauge",
            "How late the last scheduled cycle started against its cron time.",
            g(|m| m.last_start_delay_seconds),
        );
        family(
            &mut out,
            "cascade_last_cycle_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful cycle.",
            g(|m| m.last_success_timestamp),
        );
        family(
            &mut out,
            "cascade_changed_bytes_total",
            "counter",
            "Bytes the cycles found changed (data and zeroed).",
            g(|m| m.changed_bytes_total as f64),
        );
        family(
            &mut out,
            "cascade_journal_bytes",
            "gauge",
            "Bytes of the deltas the journal holds.",
            g(|m| m.journal_bytes as f64),
        );
        family(
            &mut out,
            "cascade_journal_first_delta",
            "gauge",
            "The oldest delta the journal holds.",
            g(|m| m.journal_first_delta as f64),
        );
        family(
            &mut out,
            "cascade_journal_last_delta",
            "gauge",
            "The newest committed delta.",
            g(|m| m.journal_last_delta as f64),
        );
        family(
            &mut out,
            "cascade_split_deltas_total",
            "counter",
            "Deltas a served split group journalled (its base, then its split deltas).",
            g(|m| m.split_deltas as f64),
        );
        family(
            &mut out,
            "cascade_split_failures_total",
            "counter",
            "Times serving a split group failed and was retried.",
            g(|m| m.split_failures as f64),
        );
        let split = |f: fn(&crate::splitter::SplitStatus) -> f64| {
            i.groups
                .iter()
                .filter_map(move |(cg, m)| {
                    m.split
                        .as_ref()
                        .map(|s| (format!("cg=\"{}\"", escape(cg)), f(s)))
                })
                .collect::<Vec<_>>()
        };
        family(
            &mut out,
            "cascade_split_last_write",
            "gauge",
            "The last write a served split group numbered (acknowledged or about to be).",
            split(|s| s.last_numbered as f64),
        );
        family(
            &mut out,
            "cascade_split_last_journalled_write",
            "gauge",
            "The last write of a served split group in its journal.",
            split(|s| s.last_journalled as f64),
        );
        family(
            &mut out,
            "cascade_split_queued_bytes",
            "gauge",
            "Bytes of numbered writes a served split group has not journalled yet.",
            split(|s| s.lag.queued_bytes as f64),
        );
        family(
            &mut out,
            "cascade_split_state",
            "gauge",
            "How a served split group journals: 0 active (write by write), 1 marking (the journal fell behind; writes only marked), 2 resynchronising.",
            split(|s| match s.lag.mode {
                Some(crate::splitter::Mode::Marking) => 1.0,
                Some(crate::splitter::Mode::Resyncing) => 2.0,
                _ => 0.0,
            }),
        );
        family(
            &mut out,
            "cascade_split_dirty_bytes",
            "gauge",
            "Bytes of volume a served split group marked and has not read back into its journal yet.",
            split(|s| s.lag.dirty_bytes as f64),
        );
        family(
            &mut out,
            "cascade_split_resynced_bytes_total",
            "counter",
            "Bytes a served split group read back into its journal after marking.",
            split(|s| s.lag.resynced_bytes as f64),
        );
        family(
            &mut out,
            "cascade_split_gaps_total",
            "counter",
            "Times a served split group's journal fell behind and write order was lost until it resynchronised.",
            split(|s| s.lag.gaps as f64),
        );
        family(
            &mut out,
            "cascade_split_lag_writes",
            "gauge",
            "Writes a served split group acknowledged and has not journalled yet.",
            split(|s| s.last_numbered.saturating_sub(s.last_journalled) as f64),
        );
        family(
            &mut out,
            "cascade_split_rpo_seconds",
            "gauge",
            "Seconds since the oldest write a served split group acknowledged and has not journalled in order: what losing the primary would lose.",
            split(|s| s.lag.rpo_seconds),
        );
        family(
            &mut out,
            "cascade_export_cursor",
            "gauge",
            "The newest delta the target holds.",
            t(|m| m.cursor as f64),
        );
        family(
            &mut out,
            "cascade_export_lag_deltas",
            "gauge",
            "Committed deltas the target does not hold yet.",
            t(|m| m.lag_deltas as f64),
        );
        family(
            &mut out,
            "cascade_export_lag_bytes",
            "gauge",
            "Journal bytes the target does not hold yet.",
            t(|m| m.lag_bytes as f64),
        );
        family(
            &mut out,
            "cascade_export_lag_seconds",
            "gauge",
            "Age of the oldest delta the target does not hold (0 when current).",
            t(|m| m.lag_seconds),
        );
        family(
            &mut out,
            "cascade_exported_deltas_total",
            "counter",
            "Deltas applied to the target.",
            t(|m| m.exported_deltas as f64),
        );
        family(
            &mut out,
            "cascade_exported_bytes_total",
            "counter",
            "Journal bytes carried to the target.",
            t(|m| m.exported_bytes as f64),
        );
        family(
            &mut out,
            "cascade_export_errors_total",
            "counter",
            "Exports of the target that failed.",
            t(|m| m.errors as f64),
        );
        family(
            &mut out,
            "cascade_config_reloads_total",
            "counter",
            "Config reloads on SIGHUP, by result.",
            vec![
                ("result=\"ok\"".into(), i.reloads_ok as f64),
                ("result=\"refused\"".into(), i.reloads_failed as f64),
            ],
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// Label values escape backslash, double quote and newline (exposition format).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_series() {
        let m = Metrics::default();
        m.group("db", |g| g.cycles_ok = 3);
        m.target("db", "vault", |t| t.lag_deltas = 2);
        let text = m.render();
        assert!(
            text.contains("cascade_cycles_total{cg=\"db\",result=\"ok\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("cascade_export_lag_deltas{cg=\"db\",target=\"vault\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE cascade_cycles_total counter\n"),
            "{text}"
        );
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
