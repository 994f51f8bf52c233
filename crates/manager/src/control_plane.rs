//! The outside control-plane VIP: the election composed with the host.
//!
//! The election (`apiserver_proxy_election`) says who leads and until when;
//! this module turns that into the address on the node's real interface:
//! added with a kernel-enforced lifetime on taking over and refreshed on
//! each renewal (so that a holder killed without a word loses it by
//! itself), announced to the link a few times, and removed on letting go.
//! The host is behind [`VipHost`], so the sequence is tested on any machine
//! with a fake; the real kernel proves [`NetlinkVipHost`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use apiserver_proxy_dataplane::announce::Announcer;
use apiserver_proxy_dataplane::{Change, Rtnl};
use apiserver_proxy_election::{
    Elector, Holder, KubeLeases, Leadership, LeaseStore, Step, Timings, now,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::DataplaneError;
use crate::config::{ADDRESS_LIFETIME_BUDGET, Config, ControlPlaneSettings};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The address lifetime the holder sets, in the kernel's unit (seconds):
/// the shortest there is. [`ADDRESS_LIFETIME_BUDGET`] is how long it may
/// really last.
pub const ADDRESS_LIFETIME_SECS: u32 = 1;

/// When a new holder tells the link, counted from the take: at once, then
/// again in case the first frames were lost or a switch was still learning
/// (keepalived sends five at once; spreading them covers a short loss).
pub const ANNOUNCE_AT: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(200),
    Duration::from_millis(1000),
];

/// What the holder does to the host: hold the address, let it go, tell the
/// link.
pub trait VipHost: Send + 'static {
    /// Adds `ip`, or refreshes it, with a lifetime of `seconds`.
    fn hold(&mut self, ip: IpAddr, seconds: u32) -> std::result::Result<(), DataplaneError>;
    /// Removes `ip`; `false` if it was not there.
    fn release(&mut self, ip: IpAddr) -> std::result::Result<bool, DataplaneError>;
    /// Tells the link that `ip` is here now.
    fn announce(&mut self, ip: IpAddr) -> std::result::Result<(), DataplaneError>;
}

/// [`VipHost`] on the kernel: rtnetlink for the address, a packet socket
/// and a raw ICMPv6 socket for the announcements (CAP_NET_RAW).
pub struct NetlinkVipHost {
    interface: String,
    rtnl: Rtnl,
    announcer: Announcer,
}

impl std::fmt::Debug for NetlinkVipHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkVipHost")
            .field("interface", &self.interface)
            .finish()
    }
}

impl NetlinkVipHost {
    pub fn open(interface: &str) -> std::result::Result<NetlinkVipHost, DataplaneError> {
        Ok(NetlinkVipHost {
            interface: interface.to_string(),
            rtnl: Rtnl::connect()?,
            announcer: Announcer::open(interface)?,
        })
    }
}

impl VipHost for NetlinkVipHost {
    fn hold(&mut self, ip: IpAddr, seconds: u32) -> std::result::Result<(), DataplaneError> {
        self.rtnl.hold_address(&self.interface, ip, seconds)
    }

    fn release(&mut self, ip: IpAddr) -> std::result::Result<bool, DataplaneError> {
        Ok(self.rtnl.del_vip(&self.interface, ip)? == Change::Removed)
    }

    fn announce(&mut self, ip: IpAddr) -> std::result::Result<(), DataplaneError> {
        match ip {
            IpAddr::V4(v4) => self.announcer.announce_v4(v4),
            IpAddr::V6(v6) => self.announcer.announce_v6(v6),
        }
    }
}

/// Follows [`Step`]s with the address, until the election stops and the
/// address is gone.
pub struct VipKeeper<H> {
    host: H,
    vip: IpAddr,
    timings: Timings,
    metrics: Metrics,
    /// The address is on the interface (as far as we set it).
    held: bool,
    /// When the current holding began, for the announcements.
    taken_at: Option<tokio::time::Instant>,
    announced: usize,
}

impl<H> std::fmt::Debug for VipKeeper<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VipKeeper")
            .field("vip", &self.vip)
            .field("held", &self.held)
            .finish()
    }
}

impl<H: VipHost> VipKeeper<H> {
    pub fn new(host: H, vip: IpAddr, timings: Timings, metrics: Metrics) -> VipKeeper<H> {
        VipKeeper {
            host,
            vip,
            timings,
            metrics,
            held: false,
            taken_at: None,
            announced: 0,
        }
    }

    /// Removes an address left from an earlier run (a holder restarted
    /// within its address lifetime, or one added by hand): a starting
    /// daemon does not lead yet.
    pub fn clear_leftover(&mut self) {
        match self.host.release(self.vip) {
            Ok(true) => {
                tracing::warn!(vip = %self.vip, "removed a leftover outside VIP: this node does not hold the lease yet")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(vip = %self.vip, error = %e, "cannot remove a leftover outside VIP")
            }
        }
    }

    /// Follows `holder` until the election stops. Returns whether the
    /// address is known to be gone (false: its last removal failed, and
    /// only its lifetime removes it; the lease must not be released then).
    pub async fn run(&mut self, mut holder: Holder) -> bool {
        loop {
            let next_announce = self
                .taken_at
                .filter(|_| self.held)
                .and_then(|at| ANNOUNCE_AT.get(self.announced).map(|d| at + *d));
            let step = tokio::select! {
                s = holder.next() => s,
                _ = sleep_until_opt(next_announce) => {
                    self.announce();
                    continue;
                }
            };
            match step {
                Some(Step::Take { sent, .. }) => {
                    self.taken_at = Some(tokio::time::Instant::now());
                    self.announced = 0;
                    self.metrics
                        .control_plane_vip_changes
                        .with_label_values(&["taken"])
                        .inc();
                    tracing::info!(vip = %self.vip, "took the lease: holding the outside VIP");
                    self.refresh(sent);
                }
                Some(Step::Renewed { sent, .. }) => self.refresh(sent),
                Some(Step::LetGo) => {
                    self.let_go("the lease is not ours any more");
                }
                None => return self.let_go("stopping"),
            }
        }
    }

    /// Sets or refreshes the address, if its lifetime ends before anyone
    /// else may take the lease from the write sent at `sent`; otherwise the
    /// renewal came back too late to be trusted with a fresh lifetime and
    /// the next one is waited for (the address, if held, lapses by itself
    /// meanwhile).
    fn refresh(&mut self, sent: Instant) {
        if !self
            .timings
            .outlived_by(sent, now(), ADDRESS_LIFETIME_BUDGET)
        {
            tracing::debug!(vip = %self.vip, "renewal came back too late to refresh the VIP's lifetime");
            return;
        }
        let held = self.host.hold(self.vip, ADDRESS_LIFETIME_SECS);
        // The refresh itself may have waited (the kernel's lock, a starved
        // process): checked again now that it is done, and undone if it
        // came too late.
        if held.is_ok()
            && !self
                .timings
                .outlived_by(sent, now(), ADDRESS_LIFETIME_BUDGET)
        {
            tracing::warn!(vip = %self.vip, "the VIP's refresh took too long to be safe: letting it go");
            self.let_go("a refresh that finished too late");
            return;
        }
        match held {
            Ok(()) => {
                if !self.held {
                    self.held = true;
                    self.metrics.control_plane_vip_held.set(1);
                    // Announce from the moment the address is there.
                    self.taken_at = Some(tokio::time::Instant::now());
                    self.announced = 0;
                    self.announce();
                }
            }
            Err(e) => {
                tracing::warn!(vip = %self.vip, error = %e, "cannot hold the outside VIP");
            }
        }
    }

    fn announce(&mut self) {
        self.announced += 1;
        if let Err(e) = self.host.announce(self.vip) {
            tracing::warn!(vip = %self.vip, error = %e, "cannot announce the outside VIP");
        }
    }

    /// Removes the address; whether it is known to be gone.
    fn let_go(&mut self, why: &str) -> bool {
        let was = self.held || self.taken_at.is_some();
        self.held = false;
        self.taken_at = None;
        self.metrics.control_plane_vip_held.set(0);
        // Removed whatever we think: the address must not outlive the
        // lease, and removing what is gone costs nothing.
        let gone = match self.host.release(self.vip) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(vip = %self.vip, error = %e, "cannot remove the outside VIP: its lifetime removes it within about a second");
                false
            }
        };
        if was {
            self.metrics
                .control_plane_vip_changes
                .with_label_values(&["released"])
                .inc();
            tracing::info!(vip = %self.vip, why, "let the outside VIP go");
        }
        gone
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The running control-plane mode: the election and the VIP keeper.
pub struct ControlPlane<S: LeaseStore + 'static> {
    stop: watch::Sender<bool>,
    elector: JoinHandle<Elector<S>>,
    /// Ends with whether the address is known to be gone.
    keeper: JoinHandle<bool>,
}

impl<S: LeaseStore + 'static> std::fmt::Debug for ControlPlane<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl<S: LeaseStore + 'static> ControlPlane<S> {
    /// Starts the election on `store` and a keeper of `vip` on `host`.
    pub fn start<H: VipHost>(
        store: S,
        identity: String,
        vip: IpAddr,
        timings: Timings,
        host: H,
        metrics: Metrics,
    ) -> Result<ControlPlane<S>> {
        let mut elector =
            Elector::new(store, identity, timings).map_err(|e| Error::ControlPlane {
                detail: e.to_string(),
            })?;
        let (tx, rx) = watch::channel(Leadership::Unknown);
        let (stop, stop_rx) = watch::channel(false);
        let mut keeper = VipKeeper::new(host, vip, timings, metrics);
        keeper.clear_leftover();
        let keeper = tokio::spawn(async move { keeper.run(Holder::new(rx)).await });
        let elector = tokio::spawn(async move {
            elector.run(&tx, stop_rx).await;
            elector
        });
        Ok(ControlPlane {
            stop,
            elector,
            keeper,
        })
    }

    /// Stops in order: the election ends, the VIP is let go, then the lease
    /// is released so that another node takes it at its next read.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let elector = self.elector.await;
        match self.keeper.await {
            Ok(true) => {}
            Ok(false) => {
                // Released, the lease is taken at the next read while our
                // address may live on until its lifetime ends.
                tracing::error!(
                    "the outside VIP could not be removed: not releasing the lease (another node takes it when it expires)"
                );
                return;
            }
            Err(_) => {
                tracing::error!("the outside VIP keeper failed: not releasing the lease");
                return;
            }
        }
        match elector {
            Ok(mut e) => match e.release().await {
                Ok(true) => tracing::info!("released the control-plane lease"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release the control-plane lease: another node takes it when it expires")
                }
            },
            Err(e) => tracing::error!(error = %e, "the election task failed"),
        }
    }
}

/// The candidate's name: configured, else `NODE_NAME` (the chart sets it
/// from the pod's node), else the host name.
pub fn identity(cp: &ControlPlaneSettings) -> Result<String> {
    if !cp.identity.is_empty() {
        return Ok(cp.identity.clone());
    }
    if let Ok(name) = std::env::var("NODE_NAME")
        && !name.is_empty()
    {
        return Ok(name);
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::ControlPlane {
            detail: "controlPlane.identity: none given, NODE_NAME unset and no host name".into(),
        })
}

/// The election's clients: the daemon's credentials (`base`), pointed at
/// each configured apiserver in turn. Their requests are bounded below the
/// renew deadline so that a holder whose apiserver hangs still has time to
/// ask another.
pub fn lease_store(config: &Config, base: &kube::Config) -> Result<KubeLeases> {
    let cp = &config.control_plane;
    let configs = cp
        .apiservers
        .iter()
        .map(|a| {
            let mut c = base.clone();
            let url = format!("https://{a}");
            c.cluster_url = url.parse().map_err(|e| Error::ControlPlane {
                detail: format!("controlPlane.apiservers: {url}: {e}"),
            })?;
            // The apiserver's certificate names itself "kubernetes" among
            // others; its address may not be in it.
            if c.tls_server_name.is_none() {
                c.tls_server_name = Some("kubernetes".into());
            }
            Ok(c)
        })
        .collect::<Result<Vec<_>>>()?;
    let timeout = cp.timings.renew_deadline / 2;
    KubeLeases::new(configs, &cp.lease_namespace, &cp.lease_name, timeout).map_err(|e| {
        Error::ControlPlane {
            detail: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// What the keeper did to the host, with the virtual time of each.
    #[derive(Debug, Clone, Default)]
    struct Fake {
        log: Arc<Mutex<Vec<(u128, String)>>>,
        start: Option<tokio::time::Instant>,
        /// Removing the address fails (a netlink error).
        release_fails: bool,
    }

    impl Fake {
        fn note(&self, what: String) {
            let at = self.start.map_or(0, |s| s.elapsed().as_millis());
            self.log.lock().expect("log").push((at, what));
        }
        fn log(&self) -> Vec<(u128, String)> {
            std::mem::take(&mut *self.log.lock().expect("log"))
        }
    }

    impl VipHost for Fake {
        fn hold(&mut self, ip: IpAddr, seconds: u32) -> std::result::Result<(), DataplaneError> {
            self.note(format!("hold {ip} {seconds}s"));
            Ok(())
        }
        fn release(&mut self, ip: IpAddr) -> std::result::Result<bool, DataplaneError> {
            self.note(format!("release {ip}"));
            if self.release_fails {
                return Err(DataplaneError::PermissionDenied {
                    op: "delete VIP address",
                });
            }
            Ok(true)
        }
        fn announce(&mut self, ip: IpAddr) -> std::result::Result<(), DataplaneError> {
            self.note(format!("announce {ip}"));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_address_follows_the_lease_with_its_lifetime_and_announcements() {
        let fake = Fake {
            start: Some(tokio::time::Instant::now()),
            ..Fake::default()
        };
        let vip: IpAddr = "192.168.1.100".parse().expect("ip");
        let t = Timings::default();
        let metrics = Metrics::new();
        let (tx, rx) = watch::channel(Leadership::Unknown);
        let mut keeper = VipKeeper::new(fake.clone(), vip, t, metrics.clone());
        let task = tokio::spawn(async move { keeper.run(Holder::new(rx)).await });
        let lead = |sent: Instant| Leadership::Leader {
            sent,
            until: sent + t.renew_deadline,
        };
        // Taken: held for a second at once, announced at once.
        tx.send_replace(lead(now()));
        tokio::time::sleep(MS).await;
        assert_eq!(
            fake.log(),
            [
                (0, "hold 192.168.1.100 1s".to_string()),
                (0, "announce 192.168.1.100".to_string())
            ]
        );
        assert_eq!(metrics.control_plane_vip_held.get(), 1);
        // Renewed every 200 ms: each refreshes the lifetime; the
        // announcements go out again at 200 ms and 1 s.
        for _ in 0..6 {
            tokio::time::sleep(200 * MS - MS).await;
            tx.send_replace(lead(now()));
            tokio::time::sleep(MS).await;
        }
        let log = fake.log();
        let holds = log.iter().filter(|(_, w)| w.starts_with("hold")).count();
        let announced: Vec<u128> = log
            .iter()
            .filter(|(_, w)| w.starts_with("announce"))
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(holds, 6, "{log:?}");
        assert_eq!(announced, [200, 1000], "{log:?}");
        // A renewal whose answer came back 300 ms after it was sent is too
        // late to trust with a fresh one-second lifetime (1.3 s budget
        // against a 1.5 s lease): no refresh.
        let sent = now();
        tokio::time::sleep(300 * MS).await;
        tx.send_replace(lead(sent));
        tokio::time::sleep(MS).await;
        assert_eq!(fake.log(), []);
        // No more renewals: let go at the deadline, by the holder's timer.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = fake.log();
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].1, "release 192.168.1.100");
        assert_eq!(metrics.control_plane_vip_held.get(), 0);
        assert_eq!(
            metrics
                .control_plane_vip_changes
                .with_label_values(&["released"])
                .get(),
            1
        );
        // The election stops: the keeper removes the address once more and
        // ends, saying it is gone.
        drop(tx);
        assert!(task.await.expect("keeper"));
        assert_eq!(fake.log().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_could_not_be_removed_is_reported_so_the_lease_is_kept() {
        let fake = Fake {
            release_fails: true,
            ..Fake::default()
        };
        let vip: IpAddr = "192.168.1.100".parse().expect("ip");
        let t = Timings::default();
        let (tx, rx) = watch::channel(Leadership::Unknown);
        let mut keeper = VipKeeper::new(fake.clone(), vip, t, Metrics::new());
        let task = tokio::spawn(async move { keeper.run(Holder::new(rx)).await });
        let sent = now();
        tx.send_replace(Leadership::Leader {
            sent,
            until: sent + t.renew_deadline,
        });
        tokio::time::sleep(MS).await;
        drop(tx);
        assert!(
            !task.await.expect("keeper"),
            "a failed removal must not read as the address gone"
        );
    }
}
