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
    Elector, Holder, Leadership, LeaseRecord, LeaseStore, StoreError, Timings,
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
}

impl Mem {
    async fn reach(&self) -> Result<(), StoreError> {
        let link = *self.link.lock().expect("link");
        match link {
            Link::Up => Ok(()),
            Link::Refused => Err(StoreError::Unavailable("refused".into())),
            Link::Hangs => {
                sleep(Duration::from_secs(3600)).await;
                Err(StoreError::Unavailable("hung".into()))
            }
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
        Ok(read)
    }

    async fn create(&mut self, r: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.reach().await?;
        if self.etcd.lock().expect("etcd").lease.is_some() {
            return Err(StoreError::Conflict);
        }
        Ok(self.store(r.clone()))
    }

    async fn replace(&mut self, r: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.reach().await?;
        let current = self.etcd.lock().expect("etcd").lease.clone();
        if current.and_then(|c| c.version) != r.version {
            self.etcd.lock().expect("etcd").conflicts += 1;
            return Err(StoreError::Conflict);
        }
        Ok(self.store(r.clone()))
    }
}

/// Who holds the VIP at each moment, and every moment two did.
#[derive(Debug, Default)]
struct Vip {
    holders: BTreeSet<usize>,
    /// (candidate, virtual time) of each take.
    takes: Vec<(usize, Instant)>,
    lets_go: Vec<(usize, Instant)>,
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
        let etcd = Arc::new(Mutex::new(Etcd::default()));
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
    };
    let (tx, rx) = watch::channel(Leadership::Unknown);
    let (stop, stop_rx) = watch::channel(false);
    let elector = tokio::spawn(async move {
        let mut e = Elector::new(store, format!("node-{i}"), timings);
        e.run(&tx, stop_rx).await;
        Some(e)
    });
    let v = vip.clone();
    let holder = tokio::spawn(async move {
        let mut h = Holder::new(rx);
        while let Some(take) = h.next().await {
            let mut vip = v.lock().expect("vip");
            let now = Instant::now();
            if take {
                vip.holders.insert(i);
                vip.takes.push((i, now));
            } else {
                vip.holders.remove(&i);
                vip.lets_go.push((i, now));
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

const T: Timings = Timings {
    lease_duration: Duration::from_millis(1500),
    renew_deadline: Duration::from_millis(800),
    retry_period: Duration::from_millis(200),
};

#[tokio::test(start_paused = true)]
async fn three_candidates_elect_exactly_one_which_keeps_the_lease() {
    let c = Cluster::new(3, T);
    sleep(Duration::from_secs(1)).await;
    let holders = c.holders();
    assert_eq!(holders.len(), 1, "one holder: {holders:?}");
    let name = c.holder_name().expect("a holder");
    assert_eq!(holders[0], index_of(&name));
    // It renews: a minute later it is still the one, never interrupted.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(c.holders(), holders);
    assert_eq!(c.vip.lock().expect("vip").takes.len(), 1);
    assert!(c.vip.lock().expect("vip").lets_go.is_empty());
    // Renewing every retry period: about five writes a second.
    let writes = c.etcd.lock().expect("etcd").writes;
    assert!((290..=310).contains(&writes), "{writes} writes in 61 s");
    assert_eq!(c.overlaps(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_killed_holder_is_replaced_after_the_lease_duration_and_never_overlapped() {
    let c = Cluster::new(3, T);
    sleep(Duration::from_secs(1)).await;
    let old = c.holders()[0];
    let killed_at = Instant::now();
    c.kill(old);
    sleep(Duration::from_secs(5)).await;
    let (new, taken_at) = c.last_take().expect("a take");
    assert_ne!(new, old);
    assert_eq!(c.holders(), [new]);
    let gap = taken_at - killed_at;
    // Not before the lease ran out from the last renewal seen (at most
    // one retry period before the kill), and within a retry period or two
    // of that.
    assert!(
        gap >= T.lease_duration - T.retry_period,
        "taken {gap:?} after the kill"
    );
    assert!(
        gap <= T.lease_duration + 2 * T.retry_period,
        "taken {gap:?} after the kill"
    );
    assert_eq!(c.overlaps(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_holder_lets_go_before_anyone_takes_over() {
    for link in [Link::Refused, Link::Hangs] {
        let c = Cluster::new(3, T);
        sleep(Duration::from_secs(1)).await;
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
    sleep(Duration::from_secs(1)).await;
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
    let c = {
        let etcd = Arc::new(Mutex::new(Etcd::default()));
        etcd.lock().expect("etcd").lease = Some(LeaseRecord {
            holder: Some("gone".into()),
            lease_duration_seconds: Some(2),
            version: Some("1".into()),
            ..LeaseRecord::default()
        });
        etcd.lock().expect("etcd").version = 1;
        let vip = Arc::new(Mutex::new(Vip::default()));
        let candidates = (0..5).map(|i| start(i, &etcd, &vip, T)).collect();
        Cluster {
            etcd,
            vip,
            candidates,
            referee: tokio::spawn(async {}),
        }
    };
    sleep(Duration::from_secs(5)).await;
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
