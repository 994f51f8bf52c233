//! The three durations of the election and the rule between them that
//! makes two holders impossible.

use std::time::{Duration, Instant};

/// How long a lease lasts, how long its holder keeps it without a renewal,
/// and how often everyone looks.
///
/// A holder counts its leadership from the moment it *sent* its last
/// successful write and gives the VIP up `renew_deadline` later. Another
/// node counts from the moment it first *saw* that write (which is later
/// than the sending) and may take the lease only `lease_duration` after.
/// So as long as `lease_duration - renew_deadline` covers the holder's
/// removal of the address and any difference in the two machines' clock
/// rates, the old holder has let go before the new one takes over, whatever
/// the network does. [`Timings::check`] enforces a floor for that margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long after last seeing the lease change a candidate may take it.
    pub lease_duration: Duration,
    /// How long after sending its last successful renewal the holder stops
    /// holding.
    pub renew_deadline: Duration,
    /// How often the holder renews and the others read the lease.
    pub retry_period: Duration,
}

/// The least gap between `lease_duration` and `renew_deadline`: removing
/// an address takes a netlink round trip (well under a millisecond on a
/// node), and clocks that drift by 100 ppm lose 0.1 ms a second; 100 ms is
/// far above both and still lets a dead holder be replaced in about a
/// second.
pub const MIN_SAFETY_MARGIN: Duration = Duration::from_millis(100);

impl Default for Timings {
    /// A dead holder is replaced within about `lease_duration +
    /// 2 * retry_period` (1.9 s); a live one survives three lost renewals in
    /// a row before it gives the VIP up. The gap of 0.7 s between the lease
    /// and the deadline also leaves room for a killed holder's address to
    /// expire by its one-second kernel lifetime when a renewal came back
    /// quickly (see docs/control-plane.md).
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_millis(800),
            retry_period: Duration::from_millis(200),
        }
    }
}

impl Timings {
    /// Every problem with these timings, each naming the setting to change.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let ms = |d: Duration| d.as_millis();
        if self.retry_period.is_zero() {
            problems.push("retryPeriod must be more than zero".to_string());
        }
        if self.retry_period >= self.renew_deadline {
            problems.push(format!(
                "retryPeriod ({} ms) must be less than renewDeadline ({} ms): the holder \
                 must get at least one more try before its deadline",
                ms(self.retry_period),
                ms(self.renew_deadline)
            ));
        }
        let least_lease = self.renew_deadline.checked_add(MIN_SAFETY_MARGIN);
        if least_lease.is_none_or(|least| least > self.lease_duration) {
            problems.push(format!(
                "leaseDuration ({} ms) must exceed renewDeadline ({} ms) by at least {} ms: \
                 a holder that cannot renew gives the VIP up at its renew deadline, and \
                 nobody may take it before the lease duration",
                ms(self.lease_duration),
                ms(self.renew_deadline),
                ms(MIN_SAFETY_MARGIN)
            ));
        }
        // Other candidates respect a holder's duration only up to this;
        // a longer one would let them take over while the holder leads.
        if self.lease_duration > crate::MAX_RESPECTED_LEASE {
            problems.push(format!(
                "leaseDuration ({} ms) must be at most {} s",
                ms(self.lease_duration),
                crate::MAX_RESPECTED_LEASE.as_secs()
            ));
        }
        problems
    }

    /// Whether something that outlives us by `lifetime` at most (an
    /// address with a kernel-enforced lifetime, set or refreshed `now`)
    /// is gone before any other candidate may take over from our write
    /// sent at `sent`. Every other candidate counts the lease from when it
    /// first saw that write, which is after `sent`.
    pub fn outlived_by(&self, sent: Instant, now: Instant, lifetime: Duration) -> bool {
        match (
            now.checked_add(lifetime),
            sent.checked_add(self.lease_duration),
        ) {
            (Some(gone), Some(earliest_takeover)) => gone <= earliest_takeover,
            _ => false,
        }
    }

    /// What the Lease object's `leaseDurationSeconds` says: whole seconds,
    /// rounded up, for `kubectl` readers and other tools. Our candidates
    /// count with their own configured duration (see
    /// [`crate::Tracker`]).
    pub fn lease_duration_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(whole.max(1)).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_sound() {
        assert_eq!(Timings::default().check(), Vec::<String>::new());
        assert_eq!(Timings::default().lease_duration_seconds(), 2);
    }

    #[test]
    fn each_broken_rule_names_its_setting() {
        let t = Timings {
            lease_duration: Duration::from_millis(800),
            renew_deadline: Duration::from_millis(800),
            retry_period: Duration::from_millis(900),
        };
        let p = t.check();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("retryPeriod (900 ms) must be less than renewDeadline"));
        assert!(p[1].starts_with("leaseDuration (800 ms) must exceed renewDeadline"));
        let zero = Timings {
            retry_period: Duration::ZERO,
            ..Timings::default()
        };
        assert_eq!(zero.check(), ["retryPeriod must be more than zero"]);
    }

    #[test]
    fn a_lease_longer_than_others_respect_is_refused() {
        let t = Timings {
            lease_duration: Duration::from_secs(400),
            renew_deadline: Duration::from_secs(390),
            ..Timings::default()
        };
        assert_eq!(
            t.check(),
            ["leaseDuration (400000 ms) must be at most 300 s"]
        );
    }

    #[test]
    fn overflowing_timings_are_refused_not_a_panic() {
        let t = Timings {
            renew_deadline: Duration::MAX,
            ..Timings::default()
        };
        assert_eq!(t.check().len(), 1, "{:?}", t.check());
    }

    #[test]
    fn a_lifetime_fits_only_if_gone_before_the_earliest_takeover() {
        let t = Timings::default();
        let sent = Instant::now();
        let ms = Duration::from_millis;
        let life = ms(1300);
        assert!(t.outlived_by(sent, sent, life));
        assert!(t.outlived_by(sent, sent + ms(200), life));
        assert!(!t.outlived_by(sent, sent + ms(201), life));
        assert!(!t.outlived_by(sent, sent, Duration::MAX));
    }

    #[test]
    fn whole_seconds_round_up() {
        let t = |ms| Timings {
            lease_duration: Duration::from_millis(ms),
            ..Timings::default()
        };
        assert_eq!(t(15_000).lease_duration_seconds(), 15);
        assert_eq!(t(15_001).lease_duration_seconds(), 16);
        assert_eq!(t(300).lease_duration_seconds(), 1);
    }
}
