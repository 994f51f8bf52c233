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
}

/// The version of the lease last seen and when it was first seen.
#[derive(Debug, Clone)]
struct Seen {
    version: Option<String>,
    since: Instant,
}

/// One candidate's view of the election.
#[derive(Debug, Clone)]
pub struct Tracker {
    identity: String,
    timings: Timings,
    seen: Option<Seen>,
    /// We hold the lease until then (the send time of our last successful
    /// write plus the renew deadline).
    leader_until: Option<Instant>,
}

impl Tracker {
    pub fn new(identity: impl Into<String>, timings: Timings) -> Tracker {
        Tracker {
            identity: identity.into(),
            timings,
            seen: None,
            leader_until: None,
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
        self.leader_until.filter(|until| now < *until)
    }

    /// Takes in a read made at `now` (`None`: the lease does not exist) and
    /// says what to write, if anything. `wall_now` (RFC 3339) only stamps
    /// the record for people.
    pub fn observe(&mut self, read: Option<&LeaseRecord>, now: Instant, wall_now: &str) -> Next {
        let Some(record) = read else {
            self.seen = None;
            return Next::Create(self.ours(None, wall_now));
        };
        // The lease's age is counted from the first time this version was
        // seen, by our clock: the holder's clock and the record's renewTime
        // are never trusted.
        let changed = self
            .seen
            .as_ref()
            .is_none_or(|s| s.version != record.version);
        if changed {
            self.seen = Some(Seen {
                version: record.version.clone(),
                since: now,
            });
        }
        let since = self.seen.as_ref().map_or(now, |s| s.since);
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

    /// How long a holder's lease lasts from when we saw it: our configured
    /// duration, unless the holder wrote a longer one than ours rounds up
    /// to (it was configured so, for example in the middle of a change of
    /// settings), which is then respected.
    fn wait_for(&self, record: &LeaseRecord) -> Duration {
        let ours = self.timings.lease_duration;
        match record.lease_duration_seconds {
            Some(s) if s > self.timings.lease_duration_seconds() => {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            }
            _ => ours,
        }
    }

    /// The record that makes us the holder, from `current` (`None`: none
    /// exists), conditional on its version.
    fn ours(&self, current: Option<&LeaseRecord>, wall_now: &str) -> LeaseRecord {
        let held = current.and_then(LeaseRecord::holder) == Some(self.identity.as_str());
        let transitions = current.map_or(0, |c| c.transitions);
        LeaseRecord {
            holder: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timings.lease_duration_seconds()),
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
        self.leader_until = Some(self.leader_until.map_or(until, |u| u.max(until)));
        self.seen = Some(Seen {
            version: stored.version.clone(),
            since: now,
        });
    }

    /// Someone else wrote first (a conflict), or the lease is not ours
    /// anymore: we stop leading now, whatever the deadline said.
    pub fn lost(&mut self) {
        self.leader_until = None;
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
            transitions: 3,
            acquire_time: Some("2026-01-01T00:00:00Z".into()),
            renew_time: Some("2026-01-01T00:00:01Z".into()),
            version: Some(version.into()),
        }
    }

    #[test]
    fn no_lease_is_created_holding_it() {
        let mut t = Tracker::new("a", Timings::default());
        let Next::Create(r) = t.observe(None, Instant::now(), "W") else {
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
    fn a_longer_duration_written_by_the_holder_is_respected() {
        let mut t = Tracker::new("b", Timings::default());
        let t0 = Instant::now();
        let mut r = record("a", "7");
        r.lease_duration_seconds = Some(15);
        assert_eq!(
            t.observe(Some(&r), t0, "W"),
            Next::Follow {
                holder: "a".into(),
                expires: t0 + Duration::from_secs(15)
            }
        );
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
