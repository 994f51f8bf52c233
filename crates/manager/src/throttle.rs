//! Repeated warnings, said once a period. A kernel change that fails on
//! every resync would otherwise log several lines a second for as long as
//! it fails, and bury everything else; every failure is still counted in
//! the metrics (`errors_total`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the same warning is said again while it repeats.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    /// Per message: when it was last said, and how often it was held back
    /// since.
    seen: BTreeMap<String, (Instant, u64)>,
}

impl Throttle {
    pub fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            seen: BTreeMap::new(),
        }
    }

    /// Whether the message `key` should be said now: `Some(n)` with the
    /// number of times it was held back since it was last said, or `None`
    /// while it is held back.
    pub fn allow(&mut self, key: &str, now: Instant) -> Option<u64> {
        let period = self.period;
        // Messages not seen for a while are forgotten, so that a problem
        // that comes back after a recovery is said at once, and the map
        // stays as small as the set of current problems.
        self.seen
            .retain(|_, (said, _)| now.saturating_duration_since(*said) < period * 2);
        match self.seen.get_mut(key) {
            Some((said, held)) if now.saturating_duration_since(*said) < period => {
                *held += 1;
                None
            }
            Some((said, held)) => {
                let n = *held;
                *said = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.seen.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_once_a_period_and_counts_what_it_held_back() {
        let mut t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.allow("a", t0), Some(0));
        assert_eq!(t.allow("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(
            t.allow("b", t0 + Duration::from_secs(2)),
            Some(0),
            "another message is said"
        );
        assert_eq!(t.allow("a", t0 + Duration::from_secs(61)), Some(2));
        assert_eq!(t.allow("a", t0 + Duration::from_secs(62)), None);
        // Gone quiet for two periods: forgotten, said again at once.
        assert_eq!(t.allow("a", t0 + Duration::from_secs(300)), Some(0));
    }
}
