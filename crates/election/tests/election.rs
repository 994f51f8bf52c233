//! The election on tokio's paused clock, against a lease kept in memory
//! that behaves as the apiserver's (a version per write, compare-and-swap)
//! and can be cut off from one candidate: a partition, an apiserver that
//! hangs, a holder killed without a word. Each candidate drives a
//! [`Holder`] as the VIP would be held, and a referee checks every
//! millisecond of virtual time that at most one holds.
//!
//! Virtual time makes the order of events exact; nothing here measures
//! the machine's speed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver_proxy_election::{
    Elector, Holder, Leadership, LeaseRecord, LeaseStore, Step, StoreError, Timings,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

/// How a candidate's requests fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// Every request fails at once (connection refused).
    Refused,
    /// Every request hangs (packets dropped).
    Hangs,
    /// Every request and every answer takes a while, differently each
    /// time: up to this many milliseconds each way.
    Slow(u64),
    /// Reads are answered; writes arrive and are carried out, but their
    /// answers are lost (the client sees a timeout after this many
    /// milliseconds).
    LosesWriteAnswers(u64),
}

#[derive(Debug, Default)]
struct Etcd {
    lease: Option<LeaseRecord>,
    version: u64,
    writes: usize,
    conflicts: usize,
}

#[derive(Debug, Clone)]
struct Mem {
    etcd: Arc<Mutex<Etcd>>,
    link: Arc<Mutex<Link>>,
    /// A small deterministic generator for the latencies of a slow link.
    seed: u64,
}

impl Mem {
    fn jitter(&mut self, max_ms: u64) -> Duration {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis((self.seed >> 33) % (max_ms + 1))
    }

    /// The way there.
    async fn reach(&mut self) -> Result<(), StoreError> {
        let link = *self.link.lock().expect("link");
        match link {
            Link::Up | Link::LosesWriteAnswers(_) => Ok(()),
            Link::Refused => Err(StoreError::Unavailable("refused".into())),
            Link::Hangs => {
                sleep(Duration::from_secs(3600)).await;
                Err(StoreError::Unavailable("hung".into()))
            }
            Link::Slow(ms) => {
                sleep(self.jitter(ms)).await;
                Ok(())
            }
        }
    }

    /// The way back, once the request was carried out.
    async fn answer<T>(&mut self, answer: T) -> Result<T, StoreError> {
        self.answer_to(false, answer).await
    }

    async fn answer_write<T>(&mut self, answer: T) -> Result<T, StoreError> {
        self.answer_to(true, answer).await
    }

    async fn answer_to<T>(&mut self, write: bool, answer: T) -> Result<T, StoreError> {
        let link = *self.link.lock().expect("link");
        match link {
            Link::LosesWriteAnswers(ms) if write => {
                sleep(Duration::from_millis(ms)).await;
                Err(StoreError::Unavailable("no answer".into()))
            }
            Link::Slow(ms) => {
                sleep(self.jitter(ms)).await;
                Ok(answer)
            }
            _ => Ok(answer),
        }
    }

    fn store(&self, mut r: LeaseRecord) -> LeaseRecord {
        let mut e = self.etcd.lock().expect("etcd");
        e.version += 1;
        e.writes += 1;
        r.version = Some(e.version.to_string());
        e.lease = Some(r.clone());
        r
    }
}

impl LeaseStore for Mem {
    async fn get(&mut self) -> Result<Option<LeaseRecord>, StoreError> {
        self.reach().await?;
        let read = self.etcd.lock().expect("etcd").lease.clone();
        // The answer travels back while others may be reading or writing.
        tokio::task::yield_now().await;
        self.answer(read).await
    }

    async fn create(&mut self, r: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.reach().await?;
        if self.etcd.lock().expect("etcd").lease.is_some() {
            return self.answer_write(()).await.and(Err(StoreError::Conflict));
        }
        let stored = self.store(r.clone());
        self.answer_write(stored).await
    }

    async fn replace(&mut self, r: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.reach().await?;
        let current = self.etcd.lock().expect("etcd").lease.clone();
        if current.and_then(|c| c.version) != r.version {
            self.etcd.lock().expect("etcd").conflicts += 1;
            return self.answer_write(()).await.and(Err(StoreError::Conflict));
        }
        let stored = self.store(r.clone());
        self.answer_write(stored).await
    }
}

/// Who holds the VIP at each moment, and every moment two did.
#[derive(Debug, Default)]
struct Vip {
    holders: BTreeSet<usize>,
    /// (candidate, virtual time) of each take.
    takes: Vec<(usize, Instant)>,
    lets_go: Vec<(usize, Instant)>,
    renewals: usize,
    overlaps: usize,
}

struct Candidate {
    link: Arc<Mutex<Link>>,
    stop: watch::Sender<bool>,
    elector: JoinHandle<Option<Elector<Mem>>>,
    holder: JoinHandle<()>,
}

struct Cluster {
    etcd: Arc<Mutex<Etcd>>,
    vip: Arc<Mutex<Vip>>,
    candidates: Vec<Candidate>,
    referee: JoinHandle<()>,
}

impl Cluster {
    fn new(n: usize, timings: Timings) -> Cluster {
        Cluster::with(n, timings, Etcd::default())
    }

    fn with(n: usize, timings: Timings, etcd: Etcd) -> Cluster {
        let etcd = Arc::new(Mutex::new(etcd));
        let vip = Arc::new(Mutex::new(Vip::default()));
        let candidates = (0..n).map(|i| start(i, &etcd, &vip, timings)).collect();
        let v = vip.clone();
        let referee = tokio::spawn(async move {
            loop {
                sleep(Duration::from_millis(1)).await;
                let mut vip = v.lock().expect("vip");
                if vip.holders.len() > 1 {
                    vip.overlaps += 1;
                }
            }
        });
        Cluster {
            etcd,
            vip,
            candidates,
            referee,
        }
    }

    fn holders(&self) -> Vec<usize> {
        self.vip
            .lock()
            .expect("vip")
            .holders
            .iter()
            .copied()
            .collect()
    }

    fn holder_name(&self) -> Option<String> {
        let e = self.etcd.lock().expect("etcd");
        e.lease
            .as_ref()
            .and_then(|l| l.holder().map(str::to_string))
    }

    fn set_link(&self, i: usize, link: Link) {
        *self.candidates[i].link.lock().expect("link") = link;
    }

    /// The holder's process killed: no release, no letting go (its
    /// address would then expire by its lifetime, which this model leaves
    /// out: the holder is simply gone from the referee's table).
    fn kill(&self, i: usize) {
        let c = &self.candidates[i];
        c.elector.abort();
        c.holder.abort();
        self.vip.lock().expect("vip").holders.remove(&i);
    }

    /// An orderly stop: the election ends, the VIP is let go, then the
    /// lease is released.
    async fn stop(&mut self, i: usize) -> bool {
        let c = &mut self.candidates[i];
        let _ = c.stop.send(true);
        let elector = (&mut c.elector).await.expect("elector task");
        // The holder sees the sender gone and lets go first.
        (&mut c.holder).await.expect("holder task");
        assert!(!self.vip.lock().expect("vip").holders.contains(&i));
        let mut elector = elector.expect("stopped, not killed");
        elector.release().await.expect("release")
    }

    fn overlaps(&self) -> usize {
        self.vip.lock().expect("vip").overlaps
    }

    fn last_take(&self) -> Option<(usize, Instant)> {
        self.vip.lock().expect("vip").takes.last().copied()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.referee.abort();
        for c in &self.candidates {
            c.elector.abort();
            c.holder.abort();
        }
    }
}

fn start(i: usize, etcd: &Arc<Mutex<Etcd>>, vip: &Arc<Mutex<Vip>>, timings: Timings) -> Candidate {
    let link = Arc::new(Mutex::new(Link::Up));
    let store = Mem {
        etcd: etcd.clone(),
        link: link.clone(),
        seed: i as u64 + 1,
    };
    let (tx, rx) = watch::channel(Leadership::Unknown);
    let (stop, stop_rx) = watch::channel(false);
    let elector = tokio::spawn(async move {
        let mut e = Elector::new(store, format!("node-{i}"), timings).expect("valid election");
        e.run(&tx, stop_rx).await;
        Some(e)
    });
    let v = vip.clone();
    let holder = tokio::spawn(async move {
        let mut h = Holder::new(rx);
        while let Some(step) = h.next().await {
            let mut vip = v.lock().expect("vip");
            let now = Instant::now();
            match step {
                Step::Take { .. } => {
                    // Checked at the very moment of each take, as well as
                    // by the referee's tick.
                    assert!(
                        vip.holders.is_empty(),
                        "node-{i} takes the VIP while {:?} hold it",
                        vip.holders
                    );
                    vip.holders.insert(i);
                    vip.takes.push((i, now));
                }
                Step::Renewed { .. } => vip.renewals += 1,
                Step::LetGo => {
                    vip.holders.remove(&i);
                    vip.lets_go.push((i, now));
                }
            }
        }
    });
    Candidate {
        link,
        stop,
        elector,
        holder,
    }
}

fn index_of(name: &str) -> usize {
    name.trim_start_matches("node-").parse().expect("node-N")
}

/// A lease whose holder (`gone`, with the default timings) stopped
/// renewing it before anyone here saw it.
fn held_by_a_node_that_is_gone() -> Etcd {
    Etcd {
        lease: Some(LeaseRecord {
            holder: Some("gone".into()),
            lease_duration_seconds: Some(2),
            lease_duration_ms: Some(1500),
            version: Some("1".into()),
            ..LeaseRecord::default()
        }),
        version: 1,
        ..Etcd::default()
    }
}

const T: Timings = Timings {
    lease_duration: Duration::from_millis(1500),
    renew_deadline: Duration::from_millis(800),
    retry_period: Duration::from_millis(200),
};

#[tokio::test(start_paused = true)]
async fn three_candidates_elect_exactly_one_which_keeps_the_lease() {
    let c = Cluster::new(3, T);
    // An absent lease is created after a lease duration.
    sleep(Duration::from_secs(2)).await;
    let holders = c.holders();
    assert_eq!(holders.len(), 1, "one holder: {holders:?}");
    let name = c.holder_name().expect("a holder");
    assert_eq!(holders[0], index_of(&name));
    // It renews: a minute later it is still the one, never interrupted.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(c.holders(), holders);
    assert_eq!(c.vip.lock().expect("vip").takes.len(), 1);
    assert!(c.vip.lock().expect("vip").lets_go.is_empty());
    // Each renewal reached the holder (to refresh the address lifetime).
    let renewals = c.vip.lock().expect("vip").renewals;
    assert!((285..=310).contains(&renewals), "{renewals} renewals");
    // Renewing every retry period: about five writes a second.
    let writes = c.etcd.lock().expect("etcd").writes;
    assert!((290..=310).contains(&writes), "{writes} writes in 61 s");
    assert_eq!(c.overlaps(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_killed_holder_is_replaced_after_the_lease_duration_and_never_overlapped() {
    let c = Cluster::new(3, T);
    // An absent lease is created after a lease duration.
    sleep(Duration::from_secs(2)).await;
    let old = c.holders()[0];
    let killed_at = Instant::now();
    c.kill(old);
    sleep(Duration::from_secs(5)).await;
    let (new, taken_at) = c.last_take().expect("a take");
    assert_ne!(new, old);
    assert_eq!(c.holders(), [new]);
    let gap = taken_at - killed_at;
    // Not before the lease ran out from the last renewal seen (at most
    // one retry period before the kill), and at the moment it ran out from
    // when the others first saw that renewal (their reads are a retry
    // period apart): a follower makes a round when the lease it follows
    // expires, not at its next retry period.
    assert!(
        gap >= T.lease_duration - T.retry_period,
        "taken {gap:?} after the kill"
    );
    assert!(
        gap <= T.lease_duration + T.retry_period,
        "taken {gap:?} after the kill"
    );
    assert_eq!(c.overlaps(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_holder_lets_go_before_anyone_takes_over() {
    for link in [Link::Refused, Link::Hangs] {
        let c = Cluster::new(3, T);
        // An absent lease is created after a lease duration.
        sleep(Duration::from_secs(2)).await;
        let old = c.holders()[0];
        c.set_link(old, link);
        sleep(Duration::from_secs(5)).await;
        let (let_go, new, taken) = {
            let v = c.vip.lock().expect("vip");
            let let_go = v.lets_go.iter().find(|(i, _)| *i == old).expect("let go").1;
            let (new, taken) = *v.takes.last().expect("taken over");
            (let_go, new, taken)
        };
        assert_ne!(new, old, "{link:?}");
        assert!(
            taken - let_go >= T.lease_duration - T.renew_deadline,
            "{link:?}: taken {:?} after the old holder let go",
            taken - let_go
        );
        assert_eq!(c.overlaps(), 0, "{link:?}");
        // Healed, the old holder follows the new one.
        c.set_link(old, Link::Up);
        sleep(Duration::from_secs(2)).await;
        assert_eq!(c.holders(), [new], "{link:?}");
        assert_eq!(c.overlaps(), 0, "{link:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_orderly_stop_lets_go_releases_and_is_taken_over_at_the_next_read() {
    let mut c = Cluster::new(2, T);
    // An absent lease is created after a lease duration.
    sleep(Duration::from_secs(2)).await;
    let old = c.holders()[0];
    let stopped_at = Instant::now();
    assert!(c.stop(old).await, "the holder released its lease");
    sleep(Duration::from_secs(1)).await;
    let (new, taken) = c.last_take().expect("taken over");
    assert_ne!(new, old);
    assert!(
        taken - stopped_at <= T.retry_period + Duration::from_millis(10),
        "a released lease is taken at the next read, not after {:?}",
        taken - stopped_at
    );
    assert_eq!(c.overlaps(), 0);
}

#[tokio::test(start_paused = true)]
async fn candidates_racing_for_an_expired_lease_get_one_winner() {
    // Everyone starts at once against a lease held by a node that is gone:
    // they all see it expire at the same instant and write together; the
    // version check lets exactly one through.
    let c = Cluster::with(5, T, held_by_a_node_that_is_gone());
    sleep(Duration::from_secs(5)).await;
    assert_eq!(c.overlaps(), 0);
    let v = c.vip.lock().expect("vip");
    assert_eq!(v.takes.len(), 1, "one take: {:?}", v.takes);
    assert_eq!(v.holders.len(), 1);
    let e = c.etcd.lock().expect("etcd");
    let lease = e.lease.as_ref().expect("lease");
    assert_eq!(lease.transitions, 1, "gone -> winner");
    assert!(
        e.conflicts >= 4,
        "the others lost the race: {} conflicts",
        e.conflicts
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_apiserver_may_cost_leadership_but_never_makes_two_holders() {
    // Every request and answer of every candidate takes up to 450 ms each
    // way (more than the renew deadline for a round trip, at worst): the
    // lease changes hands, and nobody may overlap.
    let c = Cluster::new(3, T);
    for i in 0..3 {
        c.set_link(i, Link::Slow(450));
    }
    sleep(Duration::from_secs(120)).await;
    let v = c.vip.lock().expect("vip");
    assert!(!v.takes.is_empty(), "someone led at times");
    assert_eq!(v.overlaps, 0);
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_answers_are_lost_lets_go_and_nobody_takes_over_meanwhile() {
    // Its renewals reach the apiserver and are stored, but it never hears
    // back: it must let go at its deadline, while the others see the lease
    // renewed and follow. Nobody holds the VIP then, which is the price of
    // never having two.
    let c = Cluster::new(3, T);
    // An absent lease is created after a lease duration.
    sleep(Duration::from_secs(2)).await;
    let old = c.holders()[0];
    c.set_link(old, Link::LosesWriteAnswers(300));
    sleep(Duration::from_secs(3)).await;
    assert_eq!(c.holders(), Vec::<usize>::new());
    assert_eq!(c.holder_name(), Some(format!("node-{old}")));
    c.set_link(old, Link::Up);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(c.holders(), [old]);
    assert_eq!(c.overlaps(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_a_dead_holders_lease_the_moment_it_expires() {
    // The lease was first seen at the start; it expires 1.5 s later, in the
    // middle of the follower's 0.2 s rounds: it is taken then, not at the
    // round after (1.6 s).
    let started = Instant::now();
    let c = Cluster::with(1, T, held_by_a_node_that_is_gone());
    sleep(Duration::from_secs(3)).await;
    let (_, taken) = c.last_take().expect("taken");
    assert_eq!(taken - started, T.lease_duration);
    assert_eq!(c.overlaps(), 0);
}
