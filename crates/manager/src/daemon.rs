//! The daemon's loop: discovery and health in, the kernel out.
//!
//! One task owns all state (a [`Reconciler`]). It wakes on a new desired
//! set, a health change, or the resync tick, and runs a pass (see
//! `reconcile`); on a host notification (our interface, a VIP's address or
//! route changed) and on the tick it repairs the host. Nothing here ever
//! deletes a service on shutdown: rules stay in the kernel so that nodes
//! keep reaching the API while the daemon is restarted or upgraded.

use std::sync::Arc;
use std::time::Duration;

use apiserver_proxy_dataplane::{HostEvent, HostMonitor};
use apiserver_proxy_discovery::{DesiredSet, Discovery, Source, VirtualServer};
use apiserver_proxy_health::{Checker, Outcome, ProbeKind, ProbeRecord};
use tokio::sync::mpsc;

use apiserver_proxy_election::KubeLeases;

use crate::config::{Config, discovery_config, health_config};
use crate::control_plane::{self, ControlPlane, NetlinkVipHost};
use crate::error::{Error, Result};
use crate::http::{self, Status};
use crate::kernel::{Dataplane, Netlink, check_nft_scheduler};
use crate::lock::StateLock;
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::state::{self, NodeState};

/// Builds the kube client configuration: the kubeconfig given, else the
/// in-cluster service account, else whatever `kube` infers.
async fn kube_config(c: &Config) -> std::result::Result<kube::Config, String> {
    if let Some(path) = &c.kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
        return kube::Config::from_custom_kubeconfig(
            kc,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()));
    }
    kube::Config::infer()
        .await
        .map_err(|e| format!("no kubeconfig and no in-cluster credentials: {e}"))
}

/// Discovery's refusal counters as last exported, so that each resync adds
/// only what is new.
#[derive(Default)]
struct RejectedSeen {
    empty: u64,
    oversized: u64,
    foreign: u64,
}

impl RejectedSeen {
    fn export(&mut self, c: &apiserver_proxy_discovery::CountersSnapshot, metrics: &Metrics) {
        for (reason, now, seen) in [
            ("empty", c.empty_answers_ignored, &mut self.empty),
            ("too_many", c.oversized_answers_ignored, &mut self.oversized),
            (
                "foreign_object",
                c.foreign_objects_ignored,
                &mut self.foreign,
            ),
        ] {
            metrics
                .discovery_rejected
                .with_label_values(&[reason])
                .inc_by(now.saturating_sub(*seen));
            *seen = now;
        }
    }
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM/SIGINT: exit, leaving every rule in place.
    Shutdown,
    /// SIGHUP: read the configuration again and start over (rules stay).
    Reload,
}

/// Runs the daemon until `stop` yields. The caller holds the returned
/// metrics/HTTP across reloads by passing them back in.
pub async fn run(
    config: Config,
    metrics: Metrics,
    status: Arc<Status>,
    stop: &mut mpsc::Receiver<Stop>,
    mut host_events: Option<&mut mpsc::Receiver<Vec<HostEvent>>>,
) -> Result<Stop> {
    let config = config.with_outside_virtual_server();
    let _lock = StateLock::acquire(&config.state_dir, Duration::ZERO)?;
    let choice = config.dataplane;
    let kernel = tokio::task::spawn_blocking(move || Netlink::connect(choice)).await??;
    tracing::info!(dataplane = %kernel.dataplane(), why = kernel.why(), "dataplane chosen");
    if kernel.dataplane() == Dataplane::Nftables {
        for vs in &config.virtual_servers {
            check_nft_scheduler(&vs.scheduler)?;
        }
    }
    let saved = load_saved_state(&config.state_dir);
    let mut r = Reconciler::new(
        config.clone(),
        metrics.clone(),
        status.clone(),
        kernel,
        saved,
    );
    // The host first: without the interface and the VIP, no rule helps.
    r.ensure_host().await?;

    let observer_metrics = metrics.clone();
    let observer_status = status.clone();
    let checker = Checker::with_observer(
        health_config(&config),
        Arc::new(move |r: &ProbeRecord| {
            observe_probe(&observer_metrics, r);
            if r.kind != ProbeKind::ConnectionLost {
                observer_status.page.record_probe(
                    r.backend,
                    r.outcome == Outcome::Ok,
                    r.latency,
                    std::time::SystemTime::now(),
                );
            }
        }),
    )?;
    let mut health_rx = checker.subscribe();

    let base_discovery = discovery_config(&config);
    let vss: Vec<VirtualServer> = base_discovery.virtual_servers.clone();
    let mut discovery = if config.discovery.enabled {
        match kube_config(&config).await {
            Ok(base) => {
                let mut dc = base_discovery;
                dc.cache_path = Some(state::cache_path_in(&config.state_dir));
                Some(Discovery::start(dc, base)?)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster discovery is off: using the seeds only");
                None
            }
        }
    } else {
        tracing::info!("discovery disabled: using the seeds only");
        None
    };
    if discovery.is_none() {
        let mut all = None;
        for set in seed_sets(&vss) {
            all = r.on_set(set).or(all);
        }
        if let Some(all) = all {
            checker.set_backends(&all);
        }
    }

    let control_plane = start_control_plane(&config, &metrics).await?;

    let mut resync = tokio::time::interval(config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rejected_seen = RejectedSeen::default();
    let result = loop {
        let next_set = async {
            match discovery.as_mut() {
                Some(d) => d.recv().await,
                None => std::future::pending().await,
            }
        };
        let host_changed = async {
            match host_events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            s = stop.recv() => break s.unwrap_or(Stop::Shutdown),
            events = host_changed => {
                match events {
                    // Repair at once: a node without its VIP or its rules
                    // has no API.
                    Some(events) => {
                        if events.iter().any(|e| r.host_event_matters(e)) {
                            let _ = r.ensure_host().await;
                        }
                        if let Some(HostEvent::OurRulesChanged { by_pid }) = events
                            .iter()
                            .find(|e| matches!(e, HostEvent::OurRulesChanged { .. }))
                        {
                            tracing::info!(by_pid, "our nftables table was changed by another process: repairing");
                        }
                        if events.iter().any(Reconciler::<Netlink>::rules_event_matters) {
                            r.pass().await;
                        }
                    }
                    None => {
                        tracing::warn!("host notifications stopped: the host is repaired on the resync tick only");
                        host_events = None;
                    }
                }
            }
            Some(ev) = health_rx.recv() => {
                r.on_health(ev);
                // Drain whatever else arrived in the same instant: one pass.
                while let Ok(ev) = health_rx.try_recv() {
                    r.on_health(ev);
                }
                r.pass().await;
            }
            Some(set) = next_set => {
                let mut all = r.on_set(set);
                while let Some(set) = discovery.as_mut().and_then(Discovery::try_recv) {
                    all = r.on_set(set).or(all);
                }
                if let Some(all) = all {
                    checker.set_backends(&all);
                }
                r.pass().await;
            }
            _ = resync.tick() => {
                if let Some(d) = &discovery {
                    rejected_seen.export(&d.counters().snapshot(), &metrics);
                }
                // A failure is logged (once a minute) and counted inside.
                let _ = r.ensure_host().await;
                r.pass().await;
            }
        }
    };
    drop(discovery);
    // The outside VIP is the one thing let go on the way out: another
    // control-plane node must take it at once, and no address may outlive
    // the lease.
    if let Some(cp) = control_plane {
        cp.shutdown().await;
    }
    tracing::info!(?result, "stopping; every rule stays in the kernel");
    Ok(result)
}

/// The outside control-plane VIP's election and keeper, when configured.
async fn start_control_plane(
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<ControlPlane<KubeLeases>>> {
    let cp = &config.control_plane;
    let Some(vip) = cp.vip else {
        return Ok(None);
    };
    let base = kube_config(config)
        .await
        .map_err(|detail| Error::ControlPlane {
            detail: format!("the election needs credentials for the apiservers: {detail}"),
        })?;
    let store = control_plane::lease_store(config, &base)?;
    let identity = control_plane::identity(cp)?;
    let interface = cp.interface.clone();
    let host = tokio::task::spawn_blocking(move || NetlinkVipHost::open(&interface)).await??;
    tracing::info!(vip = %vip.ip(), interface = cp.interface, identity, lease = %format!("{}/{}", cp.lease_namespace, cp.lease_name), "control-plane mode: electing the outside VIP's holder");
    ControlPlane::start(store, identity, vip.ip(), cp.timings, host, metrics.clone()).map(Some)
}

/// The seeds as desired sets, for a daemon without cluster discovery.
fn seed_sets(vss: &[VirtualServer]) -> impl Iterator<Item = DesiredSet> + '_ {
    vss.iter().map(|vs| DesiredSet {
        vs: vs.vip,
        backends: vs.seeds.clone(),
        source: Source::Seed,
        generation: 1,
    })
}

fn observe_probe(m: &Metrics, r: &ProbeRecord) {
    let backend = r.backend.to_string();
    if r.kind == ProbeKind::Readiness {
        m.probe_duration
            .with_label_values(&[&backend])
            .observe(r.latency.as_secs_f64());
    }
    if let Outcome::Failed(kind) = r.outcome {
        m.probe_failures
            .with_label_values(&[&backend, kind.as_str()])
            .inc();
    }
}

/// The state file as the daemon finds it at start. A file it cannot read is
/// moved aside (never silently overwritten), so that what it held can still
/// be recovered by hand.
fn load_saved_state(state_dir: &std::path::Path) -> Option<NodeState> {
    match state::load(state_dir) {
        Ok(st) => st,
        Err(e) => {
            let path = state::path_in(state_dir);
            let aside = path.with_extension("json.unreadable");
            match std::fs::rename(&path, &aside) {
                Ok(()) => {
                    tracing::error!(error = %e, moved_to = %aside.display(), "the state file is unreadable: moved it aside and writing a new one")
                }
                Err(re) => {
                    tracing::error!(error = %e, rename_error = %re, "the state file is unreadable and could not be moved aside")
                }
            }
            None
        }
    }
}

/// Host change notifications (links, addresses, routes), batched, from a
/// thread of their own for the life of the process: they outlive a
/// SIGHUP's restart of the loop. `None` where the kernel refuses the
/// subscription; the resync tick then repairs the host alone.
pub fn host_notifications() -> Option<mpsc::Receiver<Vec<HostEvent>>> {
    let monitor = match HostMonitor::open() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to host notifications: the host is repaired on the resync tick only");
            return None;
        }
    };
    let (tx, rx) = mpsc::channel(16);
    // nf_tables' own notifications, for the nftables dataplane's rules (a
    // kernel without nf_tables has no rules of ours to watch).
    match HostMonitor::open_nftables() {
        Ok(m) => {
            if !watch(m, "nftables-notifications", tx.clone()) {
                tracing::warn!("our nftables rules are repaired on the resync tick only");
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "no nf_tables notifications");
        }
    }
    if watch(monitor, "host-notifications", tx) {
        Some(rx)
    } else {
        tracing::warn!(
            "cannot start the host notification thread: the host is repaired on the resync tick only"
        );
        None
    }
}

/// Forwards `monitor`'s events to `tx` from a thread named `name`; false if
/// the thread could not start.
fn watch(mut monitor: HostMonitor, name: &str, tx: mpsc::Sender<Vec<HostEvent>>) -> bool {
    let what = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                match monitor.wait() {
                    Ok(events) => {
                        if tx.blocking_send(events).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, thread = what, "notifications failed");
                        return;
                    }
                }
            }
        })
        .is_ok()
}

/// Serves `/metrics`, `/healthz` and `/readyz`.
pub async fn serve_http(
    config: &Config,
    metrics: Metrics,
    status: Arc<Status>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (addr, task) = http::serve(config.metrics_addr, metrics, status)
        .await
        .map_err(|source| Error::Io {
            op: "listen on",
            path: config.metrics_addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(task)
}
