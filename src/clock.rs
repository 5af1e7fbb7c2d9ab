//! Wall-clock time as the journal records it: nanoseconds since the Unix epoch in an
//! i64, shown and read back as RFC 3339 in UTC. One clock for every layer, so a
//! delta's time, a bookmark's, a status's and a lag computed from them all agree.

/// Now, in nanoseconds since the epoch (saturating far in the future).
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// RFC 3339 in UTC with milliseconds, the form `--until` accepts back.
pub fn format_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Reads RFC 3339 (any offset) or `@SECONDS` since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Some(secs) = s.strip_prefix('@') {
        return secs.parse::<i64>().ok()?.checked_mul(1_000_000_000);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back_as_written() {
        let ns = parse_time("2026-11-26T10:00:00Z").unwrap();
        assert_eq!(format_time(ns), "2026-11-26T10:00:00.000Z");
        assert_eq!(parse_time("@10"), Some(10_000_000_000));
        assert_eq!(parse_time("yesterday"), None);
    }
}
