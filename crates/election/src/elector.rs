//! The election loop: read, decide, write, publish.

use std::future::Future;
use std::time::Instant;

use tokio::time::Instant as Clock;

use tokio::sync::watch;
use tokio::time::timeout;

use crate::{LeaseRecord, Next, Timings, Tracker};

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone wrote between our read and our write (HTTP 409).
    #[error("the lease changed since it was read")]
    Conflict,
    /// The API could not be asked or did not answer in time.
    #[error("the lease could not be read or written: {0}")]
    Unavailable(String),
}

/// Where the lease lives: the Kubernetes API ([`crate::KubeLeases`]) or, in
/// tests, memory.
pub trait LeaseStore: Send {
    /// The lease, or `None` if it does not exist.
    fn get(&mut self) -> impl Future<Output = Result<Option<LeaseRecord>, StoreError>> + Send;
    /// Creates it; [`StoreError::Conflict`] if it exists.
    fn create(
        &mut self,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
    /// Replaces it if its version is still `record.version`;
    /// [`StoreError::Conflict`] otherwise.
    fn replace(
        &mut self,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
}

/// What the election says about us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Not known yet (no read has answered).
    Unknown,
    /// We hold the lease until `until`; not a moment longer unless a later
    /// value extends it. `sent` is when the write that made it so was
    /// sent: no other candidate may take the lease before `sent` plus the
    /// lease duration.
    Leader { sent: Instant, until: Instant },
    /// Someone else holds it (`None`: nobody, as far as the last read
    /// went, and we could not take it).
    Follower { holder: Option<String> },
}

impl Leadership {
    /// Whether this says we lead at `now`.
    pub fn leads_at(&self, now: Instant) -> bool {
        matches!(self, Leadership::Leader { until, .. } if now < *until)
    }
}

/// One candidate: a [`Tracker`] driven against a [`LeaseStore`].
#[derive(Debug)]
pub struct Elector<S> {
    store: S,
    tracker: Tracker,
    last_read: Option<LeaseRecord>,
    /// When the lease we follow may be taken (by our clock), if a round
    /// said so: the next round is then made at that moment rather than at
    /// the next retry period, so a dead holder is replaced as soon as the
    /// rule allows and not up to a retry period later.
    takeover_at: Option<Instant>,
}

/// Why an [`Elector`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum InvalidElection {
    /// An empty identity would read as a released lease.
    #[error("the candidate's identity is empty: give each node a unique one (its node name)")]
    EmptyIdentity,
    /// The timings break the rule that makes two holders impossible.
    #[error("unsafe election timings: {}", .0.join("; "))]
    Timings(Vec<String>),
}

impl<S: LeaseStore> Elector<S> {
    /// A candidate named `identity` (unique among the candidates: two
    /// with the same name would both think they hold the lease).
    pub fn new(
        store: S,
        identity: impl Into<String>,
        timings: Timings,
    ) -> Result<Elector<S>, InvalidElection> {
        let identity = identity.into();
        if identity.is_empty() {
            return Err(InvalidElection::EmptyIdentity);
        }
        let problems = timings.check();
        if !problems.is_empty() {
            return Err(InvalidElection::Timings(problems));
        }
        Ok(Elector {
            store,
            tracker: Tracker::new(identity, timings),
            last_read: None,
            takeover_at: None,
        })
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// One round: read, and write if the decision says so. Every request
    /// is bounded by the renew deadline: an answer later than that is of no
    /// use to the holder.
    pub async fn round(&mut self) -> Leadership {
        self.takeover_at = None;
        let t = self.tracker.timings();
        let sent = now();
        let read = match timeout(t.renew_deadline, self.store.get()).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return self.failed(&e),
            Err(_) => return self.failed(&StoreError::Unavailable("read timed out".into())),
        };
        self.last_read = read.clone();
        let wall = wall_now();
        let next = self.tracker.observe(read.as_ref(), now(), &wall);
        let write = match next {
            Next::Follow { holder, expires } => {
                self.tracker.lost();
                self.takeover_at = Some(expires);
                return Leadership::Follower {
                    holder: Some(holder),
                };
            }
            Next::WaitAbsent { until } => {
                self.tracker.lost();
                self.takeover_at = Some(until);
                return Leadership::Follower { holder: None };
            }
            Next::Create(record) => timeout(t.renew_deadline, self.store.create(&record)).await,
            Next::Write(record) => timeout(t.renew_deadline, self.store.replace(&record)).await,
        };
        // A write counts from when the round began: the read and the write
        // both happened after that, so our deadline is early, never late.
        match write {
            Ok(Ok(stored)) => {
                self.tracker.written(&stored, sent, now());
                self.last_read = Some(stored);
            }
            Ok(Err(StoreError::Conflict)) => {
                tracing::debug!("lease write lost a race; reading again");
                self.tracker.lost();
            }
            Ok(Err(e)) => return self.failed(&e),
            Err(_) => return self.failed(&StoreError::Unavailable("write timed out".into())),
        }
        self.leadership()
    }

    fn failed(&mut self, e: &StoreError) -> Leadership {
        tracing::warn!(error = %e, "lease round failed");
        self.leadership()
    }

    /// What we are now, from the tracker's deadline.
    pub fn leadership(&self) -> Leadership {
        match self.tracker.leader_at(now()) {
            Some((sent, until)) => Leadership::Leader { sent, until },
            None => Leadership::Follower {
                holder: self
                    .last_read
                    .as_ref()
                    .and_then(|r| r.holder().map(str::to_string))
                    .filter(|h| h != self.tracker.identity()),
            },
        }
    }

    /// Rounds every retry period, each result published on `tx`, until
    /// `stop` turns true (or its sender is gone); then publishes
    /// [`Leadership::Unknown`], so that a [`Holder`](crate::Holder) lets
    /// go at once. Does not release the lease: the caller lets the VIP go
    /// first, then calls [`Elector::release`].
    pub async fn run(&mut self, tx: &watch::Sender<Leadership>, stop: watch::Receiver<bool>) {
        self.rounds(tx, stop).await;
        tx.send_replace(Leadership::Unknown);
    }

    async fn rounds(&mut self, tx: &watch::Sender<Leadership>, mut stop: watch::Receiver<bool>) {
        let period = self.tracker.timings().retry_period;
        loop {
            if *stop.borrow() {
                return;
            }
            let started = tokio::time::Instant::now();
            let lead = tokio::select! {
                l = self.round() => l,
                _ = stop.changed() => return,
            };
            tx.send_if_modified(|old| {
                let changed = *old != lead;
                *old = lead;
                changed
            });
            // Waking early changes nothing about safety: the tracker takes
            // over only once the lease has expired by its count.
            let next = match self.takeover_at.map(Clock::from_std) {
                Some(at) if at > Clock::now() && at < started + period => at,
                _ => started + period,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }

    /// Gives the lease up if we hold it, so that another candidate takes it
    /// at its next read rather than after the lease duration. Call it only
    /// once the VIP is gone from this node.
    pub async fn release(&mut self) -> Result<bool, StoreError> {
        self.tracker.lost();
        let t = self.tracker.timings();
        let current = match timeout(t.renew_deadline, self.store.get()).await {
            Ok(r) => r?,
            Err(_) => return Err(StoreError::Unavailable("read timed out".into())),
        };
        let Some(current) = current else {
            return Ok(false);
        };
        let Some(released) = self.tracker.release(&current, &wall_now()) else {
            return Ok(false);
        };
        match timeout(t.renew_deadline, self.store.replace(&released)).await {
            Ok(r) => r.map(|_| true),
            Err(_) => Err(StoreError::Unavailable("write timed out".into())),
        }
    }
}

/// Now by tokio's clock (which tests may pause and advance), as the
/// tracker's instants.
pub fn now() -> Instant {
    Clock::now().into_std()
}

/// Now, as the Lease's `renewTime` and `acquireTime` show it.
fn wall_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}
