//! The election's decisions, with no I/O and no clock of its own: what was
//! read and when goes in, what to write and until when we lead comes out.

use std::time::{Duration, Instant};

use crate::Timings;

/// What a Lease holds that the election reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; `None` (or empty) when released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds` as the writer set it.
    pub lease_duration_seconds: Option<i32>,
    /// The writer's lease duration to the millisecond (an annotation: the
    /// field above has whole seconds only, and 1.5 s is not 2 s).
    pub lease_duration_ms: Option<u64>,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
    /// `spec.acquireTime`, RFC 3339, for people reading the object.
    pub acquire_time: Option<String>,
    /// `spec.renewTime`, RFC 3339, for people reading the object.
    pub renew_time: Option<String>,
    /// `metadata.resourceVersion`: a write carrying it succeeds only if
    /// nobody wrote in between (the apiserver answers 409 otherwise).
    pub version: Option<String>,
}

impl LeaseRecord {
    /// The holder, with an empty identity read as none (client-go releases
    /// a lease by writing an empty one).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// What to do after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// No lease exists: create it, holding it.
    Create(LeaseRecord),
    /// Write this record (ours, renewed or taken over), conditional on the
    /// version read.
    Write(LeaseRecord),
    /// Someone else holds it until at least `expires` (by our clock).
    Follow { holder: String, expires: Instant },
    /// No lease exists, but one may have been deleted under a holder that
    /// still leads: wait until `until` (a lease duration after we first saw
    /// it absent) before creating it.
    WaitAbsent { until: Instant },
}

/// The longest lease duration a record may ask us to respect. A holder
/// writing more (a typo, or an hour-long lease) is respected only this
/// long: the election would otherwise stand still for as long as it says.
pub const MAX_RESPECTED_LEASE: Duration = Duration::from_secs(300);

/// What was last seen of the lease and when it was first seen so.
#[derive(Debug, Clone)]
struct Seen {
    /// `None`: the lease did not exist.
    version: Option<Option<String>>,
    since: Instant,
}

/// One candidate's view of the election.
#[derive(Debug, Clone)]
pub struct Tracker {
    identity: String,
    timings: Timings,
    seen: Option<Seen>,
    /// We hold the lease: the send time of our last successful write, and
    /// that plus the renew deadline, until when we lead.
    leader: Option<(Instant, Instant)>,
}

impl Tracker {
    pub fn new(identity: impl Into<String>, timings: Timings) -> Tracker {
        Tracker {
            identity: identity.into(),
            timings,
            seen: None,
            leader: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Until when we lead, if we do at `now`.
    pub fn leader_until(&self, now: Instant) -> Option<Instant> {
        self.leader_at(now).map(|(_, until)| until)
    }

    /// When our last successful write was sent and until when it makes us
    /// lead, if we do at `now`.
    pub fn leader_at(&self, now: Instant) -> Option<(Instant, Instant)> {
        self.leader.filter(|(_, until)| now < *until)
    }

    /// Takes in a read made at `now` (`None`: the lease does not exist) and
    /// says what to write, if anything. `wall_now` (RFC 3339) only stamps
    /// the record for people.
    pub fn observe(&mut self, read: Option<&LeaseRecord>, now: Instant, wall_now: &str) -> Next {
        // The lease's age is counted from the first time this version (or
        // its absence) was seen, by our clock: the holder's clock and the
        // record's renewTime are never trusted.
        let key = read.map(|r| r.version.clone());
        if self.seen.as_ref().is_none_or(|s| s.version != key) {
            self.seen = Some(Seen {
                version: key,
                since: now,
            });
        }
        let since = self.seen.as_ref().map_or(now, |s| s.since);
        let Some(record) = read else {
            // A lease deleted under its holder (by a person, or a namespace
            // being recreated) does not stop that holder at once: it keeps
            // the VIP until its renew deadline. So an absent lease is
            // created only once it has been absent for a whole lease
            // duration, as if it had been there and expired.
            let until = since + self.timings.lease_duration;
            return if now >= until {
                Next::Create(self.ours(None, wall_now))
            } else {
                Next::WaitAbsent { until }
            };
        };
        match record.holder() {
            // Ours: renew, even after our own deadline passed (we stopped
            // holding then); the version check makes a renewal that comes
            // after someone else's takeover fail.
            Some(h) if h == self.identity => Next::Write(self.ours(Some(record), wall_now)),
            None => Next::Write(self.ours(Some(record), wall_now)),
            Some(h) => {
                let expires = since + self.wait_for(record);
                if now >= expires {
                    Next::Write(self.ours(Some(record), wall_now))
                } else {
                    Next::Follow {
                        holder: h.to_string(),
                        expires,
                    }
                }
            }
        }
    }

    /// How long a holder's lease lasts from when we saw it: the longer of
    /// our configured duration and the one the holder wrote (it may be
    /// configured differently, in the middle of a change of settings, or
    /// be another tool), up to [`MAX_RESPECTED_LEASE`]. The holder's
    /// duration is read to the millisecond from our annotation when it is
    /// there, else from the whole seconds of `leaseDurationSeconds`.
    fn wait_for(&self, record: &LeaseRecord) -> Duration {
        let seconds = record
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        let theirs = match (record.lease_duration_ms.map(Duration::from_millis), seconds) {
            // Ours to the millisecond, as long as the seconds beside it are
            // its rounding: another tool writing the Lease (and keeping our
            // annotation) may have set a longer duration in seconds.
            (Some(ms), Some(s))
                if ms.as_secs() + u64::from(ms.subsec_nanos() > 0) >= s.as_secs() =>
            {
                ms
            }
            (Some(ms), Some(s)) => ms.max(s),
            (Some(ms), None) => ms,
            (None, Some(s)) => s,
            (None, None) => Duration::ZERO,
        };
        self.timings
            .lease_duration
            .max(theirs.min(MAX_RESPECTED_LEASE))
    }

    /// The record that makes us the holder, from `current` (`None`: none
    /// exists), conditional on its version.
    fn ours(&self, current: Option<&LeaseRecord>, wall_now: &str) -> LeaseRecord {
        let held = current.and_then(LeaseRecord::holder) == Some(self.identity.as_str());
        let transitions = current.map_or(0, |c| c.transitions);
        LeaseRecord {
            holder: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timings.lease_duration_seconds()),
            lease_duration_ms: Some(
                u64::try_from(self.timings.lease_duration.as_millis()).unwrap_or(u64::MAX),
            ),
            transitions: if held || current.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            },
            acquire_time: if held {
                current.and_then(|c| c.acquire_time.clone())
            } else {
                Some(wall_now.to_string())
            },
            renew_time: Some(wall_now.to_string()),
            version: current.and_then(|c| c.version.clone()),
        }
    }

    /// Our write, sent at `sent`, succeeded and the apiserver stored
    /// `stored`: we lead until `sent` plus the renew deadline.
    pub fn written(&mut self, stored: &LeaseRecord, sent: Instant, now: Instant) {
        let until = sent + self.timings.renew_deadline;
        if self.leader.is_none_or(|(_, u)| u < until) {
            self.leader = Some((sent, until));
        }
        self.seen = Some(Seen {
            version: Some(stored.version.clone()),
            since: now,
        });
    }

    /// Someone else wrote first (a conflict), or the lease is not ours
    /// anymore: we stop leading now, whatever the deadline said.
    pub fn lost(&mut self) {
        self.leader = None;
    }

    /// The record that releases our lease, if we hold `current`: no holder,
    /// so that a candidate takes it at its next read instead of waiting the
    /// lease out. Send it only after the VIP is gone.
    pub fn release(&self, current: &LeaseRecord, wall_now: &str) -> Option<LeaseRecord> {
        (current.holder() == Some(self.identity.as_str())).then(|| LeaseRecord {
            holder: None,
            renew_time: Some(wall_now.to_string()),
            ..current.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn record(holder: &str, version: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            lease_duration_seconds: Some(2),
            lease_duration_ms: Some(1500),
            transitions: 3,
            acquire_time: Some("2026-01-01T00:00:00Z".into()),
            renew_time: Some("2026-01-01T00:00:01Z".into()),
            version: Some(version.into()),
        }
    }

    #[test]
    fn an_absent_lease_is_created_a_lease_duration_after_it_was_first_seen_absent() {
        let mut t = Tracker::new("a", Timings::default());
        let t0 = Instant::now();
        assert_eq!(
            t.observe(None, t0, "W"),
            Next::WaitAbsent {
                until: t0 + 1500 * MS
            }
        );
        assert!(matches!(
            t.observe(None, t0 + 1499 * MS, "W"),
            Next::WaitAbsent { .. }
        ));
        let Next::Create(r) = t.observe(None, t0 + 1500 * MS, "W") else {
            panic!("create")
        };
        assert_eq!(r.holder.as_deref(), Some("a"));
        assert_eq!(r.version, None);
        assert_eq!(r.transitions, 0);
        assert_eq!(r.acquire_time.as_deref(), Some("W"));
    }

    #[test]
    fn another_holder_is_followed_for_our_lease_duration_from_when_we_saw_it() {
        let mut t = Tracker::new("b", Timings::default());
        let t0 = Instant::now();
        let r = record("a", "7");
        assert_eq!(
            t.observe(Some(&r), t0, "W"),
            Next::Follow {
                holder: "a".into(),
                expires: t0 + 1500 * MS
            }
        );
        // The same version seen later does not restart the count...
        assert!(matches!(
            t.observe(Some(&r), t0 + 1499 * MS, "W"),
            Next::Follow { .. }
        ));
        // ...and at its end we take it over, on the version we read.
        let Next::Write(w) = t.observe(Some(&r), t0 + 1500 * MS, "W") else {
            panic!("take over")
        };
        assert_eq!(w.holder.as_deref(), Some("b"));
        assert_eq!(w.version.as_deref(), Some("7"));
        assert_eq!(w.transitions, 4);
        assert_eq!(w.acquire_time.as_deref(), Some("W"));
        // A renewal (a new version) restarts it.
        let r2 = record("a", "8");
        assert_eq!(
            t.observe(Some(&r2), t0 + 1300 * MS, "W"),
            Next::Follow {
                holder: "a".into(),
                expires: t0 + 2800 * MS
            }
        );
    }

    #[test]
    fn a_deleted_lease_is_not_taken_while_its_holder_may_still_lead() {
        let mut t = Tracker::new("b", Timings::default());
        let t0 = Instant::now();
        t.observe(Some(&record("a", "7")), t0, "W");
        // Deleted at t0 + 1 s: the count starts again from there.
        assert_eq!(
            t.observe(None, t0 + 1000 * MS, "W"),
            Next::WaitAbsent {
                until: t0 + 2500 * MS
            }
        );
        assert!(matches!(
            t.observe(None, t0 + 2500 * MS, "W"),
            Next::Create(_)
        ));
    }

    #[test]
    fn a_longer_duration_written_by_the_holder_is_respected() {
        let t0 = Instant::now();
        let follow = |ms: Option<u64>, secs: Option<i32>| {
            let mut t = Tracker::new("b", Timings::default());
            let mut r = record("a", "7");
            r.lease_duration_ms = ms;
            r.lease_duration_seconds = secs;
            match t.observe(Some(&r), t0, "W") {
                Next::Follow { expires, .. } => expires - t0,
                other => panic!("{other:?}"),
            }
        };
        // Another tool's whole seconds, longer than ours.
        assert_eq!(follow(None, Some(15)), Duration::from_secs(15));
        // A holder configured 2.0 s / 1.9 s writes 2 s: a candidate
        // configured 1.5 s must still wait 2 s, or the two would overlap.
        assert_eq!(follow(Some(2000), Some(2)), 2000 * MS);
        // Our own annotation beats the rounded-up seconds...
        assert_eq!(follow(Some(1500), Some(2)), 1500 * MS);
        // ...unless the seconds are not its rounding: another tool wrote
        // 15 s and kept our annotation.
        assert_eq!(follow(Some(1500), Some(15)), Duration::from_secs(15));
        // Shorter than ours, or nothing: ours.
        assert_eq!(follow(Some(300), Some(1)), 1500 * MS);
        assert_eq!(follow(None, None), 1500 * MS);
        assert_eq!(follow(None, Some(-5)), 1500 * MS);
        // A huge one is respected only up to the cap.
        assert_eq!(follow(None, Some(i32::MAX)), MAX_RESPECTED_LEASE);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut t = Tracker::new("b", Timings::default());
        let mut r = record("a", "7");
        r.holder = Some(String::new());
        let Next::Write(w) = t.observe(Some(&r), Instant::now(), "W") else {
            panic!("take")
        };
        assert_eq!(w.holder.as_deref(), Some("b"));
    }

    #[test]
    fn we_lead_from_the_sending_of_a_successful_write_until_the_renew_deadline() {
        let mut t = Tracker::new("a", Timings::default());
        let sent = Instant::now();
        assert_eq!(t.leader_until(sent), None);
        t.written(&record("a", "9"), sent, sent + 50 * MS);
        assert_eq!(t.leader_until(sent + 799 * MS), Some(sent + 800 * MS));
        assert_eq!(
            t.leader_until(sent + 800 * MS),
            None,
            "dropped at the deadline"
        );
        // Renewing what we hold keeps the acquire time and the count.
        let Next::Write(w) = t.observe(Some(&record("a", "9")), sent + 900 * MS, "W2") else {
            panic!("renew")
        };
        assert_eq!(w.acquire_time.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(w.transitions, 3);
        assert_eq!(w.renew_time.as_deref(), Some("W2"));
        t.lost();
        assert_eq!(t.leader_until(sent), None);
    }

    #[test]
    fn only_the_holder_releases() {
        let t = Tracker::new("a", Timings::default());
        let r = t.release(&record("a", "9"), "W").expect("ours");
        assert_eq!(r.holder(), None);
        assert_eq!(r.version.as_deref(), Some("9"));
        assert_eq!(t.release(&record("b", "9"), "W"), None);
    }
}
