//! How long to wait before retrying a failed cycle or export: doubling from a few
//! seconds, capped, so a broken target is retried often at first and then without
//! flooding logs or servers.
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(5);
const MAX: Duration = Duration::from_secs(300);

/// The wait after the `failures`-th failure in a row (1 → 5 s, 2 → 10 s, … ≤ 5 min).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST * (1u32 << doublings)).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(9), MAX);
        assert_eq!(backoff(u32::MAX), MAX);
    }
}
