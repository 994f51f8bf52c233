//! The daemon's loop: discovery and health in, the kernel out.
//!
//! One task owns all state. It wakes on a new desired set, a health change,
//! or the resync tick, and runs a pass: read our services from the kernel,
//! plan, apply (netlink calls run on a blocking thread). Nothing here ever
//! deletes a service on shutdown: rules stay in the kernel so that nodes
//! keep reaching the API while the daemon is restarted or upgraded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver_proxy_dataplane::sysctl::{IpvsSysctl, Sysctls};
use apiserver_proxy_dataplane::{Rtnl, VipMode as LinkVipMode};
use apiserver_proxy_discovery::{DesiredSet, Discovery, DiscoveryConfig, Source, VirtualServer};
use apiserver_proxy_health::{
    Checker, ClientCert, HealthConfig, HealthEvent, Mode, Outcome, ProbeKind, ProbeRecord, State,
};
use apiserver_proxy_types::Endpoint;
use tokio::sync::mpsc;

use crate::config::{Config, HealthMode, VipMode};
use crate::error::{Error, Result};
use crate::http::{self, Status};
use crate::kernel::{Kernel, Netlink, apply_plan};
use crate::lock::StateLock;
use crate::metrics::{Metrics, gauge_value};
use crate::plan::{Condition, DesiredVs, Drains, Op, plan};
use crate::state::{self, NodeState, SavedVs};

/// The health crate's configuration from ours.
pub fn health_config(c: &Config) -> HealthConfig {
    let h = &c.health;
    let defaults = HealthConfig::default();
    let mut tls = defaults.tls.clone();
    tls.ca_file = h.ca_file.clone();
    tls.server_name = h.server_name.clone();
    tls.insecure_skip_verify = h.insecure_skip_verify;
    if let (Some(cert), Some(key)) = (&h.client_cert, &h.client_key) {
        tls.client_cert = Some(ClientCert {
            cert_file: cert.clone(),
            key_file: key.clone(),
        });
    }
    HealthConfig {
        mode: match h.mode {
            HealthMode::Https => Mode::Https,
            HealthMode::Http => Mode::Http,
            HealthMode::Tcp => Mode::Tcp,
        },
        path: h.path.clone(),
        interval: h.interval,
        // Nodes drift apart instead of probing in lock-step.
        jitter: h.interval / 10,
        timeout: h.timeout,
        rise: h.rise,
        fall: h.fall,
        success_statuses: h.success_statuses.iter().copied().collect(),
        tls,
        ..defaults
    }
}

fn condition(state: Option<State>) -> Condition {
    match state {
        None => Condition::Unprobed,
        Some(State::Ready) => Condition::Ready,
        Some(State::Unknown) => Condition::AliveUnknown,
        Some(State::NotReady) => Condition::NotReady,
        Some(State::Dead) => Condition::Dead,
    }
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Seed => "seed",
        Source::Cache => "cache",
        Source::Cluster => "cluster",
    }
}

/// Prepares the host once at start: the dummy interface, the VIPs, and the
/// sysctls IPVS needs. Reports what it changed in the log, and returns the
/// sysctls it found wrong but could not write.
fn prepare_host(c: &Config) -> Result<Vec<&'static str>> {
    let mut rtnl = Rtnl::connect()?;
    let link = rtnl.ensure_dummy(&c.interface)?;
    if link.created {
        tracing::info!(interface = %c.interface, "created the dummy interface");
    }
    for vs in &c.virtual_servers {
        let mode = match c.vip_mode {
            VipMode::Address => LinkVipMode::Address,
            VipMode::Route => {
                // The node's own address towards its apiservers: the source
                // that lets the local apiserver answer through IPVS.
                let towards = vs.seeds.first().map(|s| s.ip()).unwrap_or(vs.vip.ip());
                LinkVipMode::Route {
                    src: rtnl.preferred_source(towards)?,
                }
            }
        };
        let change = rtnl.ensure_vip(&c.interface, vs.vip.ip(), mode)?;
        tracing::info!(vip = %vs.vip.ip(), interface = %c.interface, ?mode, ?change, "VIP in place");
    }
    let sysctls = Sysctls::new();
    let mut unset = Vec::new();
    // A deleted real server's connections are reset on their next packet
    // instead of hanging; conntrack lets stateful host firewalls see the
    // replies (measured: `ct state invalid drop` drops them otherwise).
    for (s, v) in [
        (IpvsSysctl::ExpireNodestConn, 1),
        (IpvsSysctl::Conntrack, 1),
    ] {
        // In a pod with CAP_NET_ADMIN but not privileged, /proc/sys is
        // read-only. The node's boot-time `apiserver-proxy-tools reload`
        // sets these, so a wrong value here is a degraded node, not a
        // reason to crash-loop and leave it with no one reconciling.
        let change = match sysctls.ensure(s, v) {
            Ok(change) => change,
            Err(e @ apiserver_proxy_dataplane::Error::SysctlReadOnly { .. }) => {
                tracing::error!(sysctl = s.name(), want = v, error = %e, "sysctl NOT set: failover is slower until it is");
                unset.push(s.name());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if change.written {
            tracing::info!(
                sysctl = s.name(),
                previous = change.previous,
                now = v,
                "set"
            );
        }
    }
    Ok(unset)
}

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
    mut stop: mpsc::Receiver<Stop>,
) -> Result<Stop> {
    let _lock = StateLock::acquire(&config.state_dir, Duration::ZERO)?;
    {
        let c = config.clone();
        let unset = tokio::task::spawn_blocking(move || prepare_host(&c))
            .await
            .map_err(|e| Error::Runtime(e.to_string()))??;
        for s in [
            IpvsSysctl::ExpireNodestConn.name(),
            IpvsSysctl::Conntrack.name(),
        ] {
            metrics
                .sysctl_unset
                .with_label_values(&[s])
                .set(i64::from(unset.contains(&s)));
        }
    }
    let kernel = Arc::new(Mutex::new(
        tokio::task::spawn_blocking(Netlink::connect)
            .await
            .map_err(|e| Error::Runtime(e.to_string()))??,
    ));

    let observer_metrics = metrics.clone();
    let checker = Checker::with_observer(
        health_config(&config),
        Arc::new(move |r: &ProbeRecord| observe_probe(&observer_metrics, r)),
    )
    .map_err(|e| Error::Health(e.to_string()))?;
    let mut health_rx = checker.subscribe();

    let vss: Vec<VirtualServer> = config
        .virtual_servers
        .iter()
        .map(|vs| {
            let mut v = VirtualServer::new(vs.vip);
            v.port_name = vs.port_name.clone();
            v.seeds = vs.seeds.iter().copied().collect();
            v
        })
        .collect();
    let (seed_tx, seed_rx) = mpsc::channel(16);
    let mut discovery_guard = None;
    let mut sets_rx = if config.discovery.enabled {
        match kube_config(&config).await {
            Ok(base) => {
                let mut dc = DiscoveryConfig::new(vss.clone());
                dc.cache_path = Some(config.state_dir.join("backends.json"));
                dc.stale_after = config.discovery.stale_watch_timeout;
                let mut d =
                    Discovery::start(dc, base).map_err(|e| Error::Discovery(e.to_string()))?;
                let (tx, rx) = mpsc::channel(64);
                let mut updates = std::mem::replace(&mut d.updates, mpsc::channel(1).1);
                tokio::spawn(async move {
                    while let Some(s) = updates.recv().await {
                        if tx.send(s).await.is_err() {
                            break;
                        }
                    }
                });
                discovery_guard = Some(d);
                drop(seed_tx);
                rx
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster discovery is off: using the seeds only");
                send_seeds(&vss, &seed_tx).await;
                seed_rx
            }
        }
    } else {
        tracing::info!("discovery disabled: using the seeds only");
        send_seeds(&vss, &seed_tx).await;
        seed_rx
    };

    let l_state_dir = config.state_dir.clone();
    let mut l = Loop {
        config,
        metrics,
        status,
        kernel,
        checker,
        sets: BTreeMap::new(),
        health: BTreeMap::new(),
        drains: Drains::default(),
        fail_open: BTreeSet::new(),
        saved: load_saved_state(&l_state_dir),
        rejected_seen: 0,
    };
    let mut resync = tokio::time::interval(l.config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            biased;
            s = stop.recv() => break s.unwrap_or(Stop::Shutdown),
            Some(ev) = health_rx.recv() => {
                l.on_health(ev);
                // Drain whatever else arrived in the same instant: one pass.
                while let Ok(ev) = health_rx.try_recv() {
                    l.on_health(ev);
                }
                l.pass().await;
            }
            Some(set) = sets_rx.recv() => {
                l.on_set(set);
                while let Ok(set) = sets_rx.try_recv() {
                    l.on_set(set);
                }
                l.pass().await;
            }
            _ = resync.tick() => {
                if let Some(d) = &discovery_guard {
                    let rejected = d.counters().snapshot().empty_answers_ignored;
                    let new = rejected.saturating_sub(l.rejected_seen);
                    l.metrics.discovery_rejected.inc_by(new);
                    l.rejected_seen = rejected;
                }
                l.pass().await;
            }
        }
    };
    drop(discovery_guard);
    tracing::info!(?result, "stopping; every rule stays in the kernel");
    Ok(result)
}

async fn send_seeds(vss: &[VirtualServer], tx: &mpsc::Sender<DesiredSet>) {
    for (i, vs) in vss.iter().enumerate() {
        let _ = tx
            .send(DesiredSet {
                vs: vs.vip,
                backends: vs.seeds.clone(),
                source: Source::Seed,
                generation: i as u64 + 1,
            })
            .await;
    }
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

struct Loop {
    config: Config,
    metrics: Metrics,
    status: Arc<Status>,
    kernel: Arc<Mutex<Netlink>>,
    checker: Checker,
    sets: BTreeMap<Endpoint, DesiredSet>,
    health: BTreeMap<Endpoint, State>,
    drains: Drains,
    fail_open: BTreeSet<Endpoint>,
    saved: Option<NodeState>,
    rejected_seen: u64,
}

impl Loop {
    fn on_set(&mut self, set: DesiredSet) {
        let Some(vs) = self.config.virtual_servers.iter().find(|v| v.vip == set.vs) else {
            return;
        };
        let before = self.sets.get(&set.vs).map(|s| s.backends.clone());
        if before.as_ref() != Some(&set.backends) {
            tracing::info!(
                vs = %vs.vip,
                source = source_name(set.source),
                generation = set.generation,
                backends = ?set.backends.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
                "desired backends changed"
            );
        }
        for s in ["seed", "cache", "cluster"] {
            self.metrics
                .discovery_source
                .with_label_values(&[&set.vs.to_string(), s])
                .set(i64::from(s == source_name(set.source)));
        }
        self.sets.insert(set.vs, set);
        let all: BTreeSet<Endpoint> = self
            .sets
            .values()
            .flat_map(|s| s.backends.iter().copied())
            .collect();
        self.checker.set_backends(&all);
        self.health.retain(|b, _| all.contains(b));
    }

    fn on_health(&mut self, ev: HealthEvent) {
        tracing::info!(
            backend = %ev.backend,
            from = ?ev.previous.map(|s| s.to_string()),
            to = %ev.state,
            reason = %ev.reason,
            "backend state changed"
        );
        let to = match ev.state {
            State::Ready => "ready",
            State::NotReady => "not_ready",
            State::Unknown => "unknown",
            State::Dead => "dead",
        };
        for vs in self
            .sets
            .values()
            .filter(|s| s.backends.contains(&ev.backend))
        {
            self.metrics
                .backend_transitions
                .with_label_values(&[&vs.vs.to_string(), &ev.backend.to_string(), to])
                .inc();
        }
        self.health.insert(ev.backend, ev.state);
    }

    fn desired(&self) -> Vec<DesiredVs> {
        self.config
            .virtual_servers
            .iter()
            .map(|vs| {
                // Until discovery speaks, the seeds (the CLI put them in the
                // kernel already) are what we want.
                let backends: BTreeSet<Endpoint> = match self.sets.get(&vs.vip) {
                    Some(s) => s.backends.clone(),
                    None => vs.seeds.iter().copied().collect(),
                };
                let answered = self
                    .sets
                    .get(&vs.vip)
                    .is_some_and(|s| s.source == Source::Cluster);
                DesiredVs {
                    keep_unlisted: !answered,
                    vip: vs.vip,
                    scheduler: vs.scheduler.clone(),
                    backends: backends
                        .into_iter()
                        .filter(|b| b.family() == vs.vip.family())
                        .map(|b| (b, condition(self.health.get(&b).copied())))
                        .collect(),
                }
            })
            .collect()
    }

    async fn pass(&mut self) {
        let desired = self.desired();
        let vips: Vec<Endpoint> = desired.iter().map(|d| d.vip).collect();
        let kernel = self.kernel.clone();
        let mut drains = std::mem::take(&mut self.drains);
        let timeout = self.config.drain_timeout;
        let started = Instant::now();
        let d2 = desired.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let k = kernel.lock().unwrap_or_else(|p| p.into_inner());
            let actual = k.read_ours(&vips)?;
            let p = plan(&d2, &actual, &mut drains, Instant::now(), timeout);
            let applied = apply_plan(&*k, &p);
            Ok::<_, Error>((actual, p, applied, drains))
        })
        .await;
        let elapsed = started.elapsed();
        self.metrics
            .reconcile_duration
            .observe(elapsed.as_secs_f64());
        let (actual, p, applied, drains) = match outcome {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reconcile pass failed: will retry");
                self.metrics
                    .reconcile_total
                    .with_label_values(&["error"])
                    .inc();
                self.status.pass_done(false);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile task failed: will retry");
                self.metrics
                    .reconcile_total
                    .with_label_values(&["error"])
                    .inc();
                self.status.pass_done(false);
                return;
            }
        };
        self.drains = drains;
        for op in &p.ops {
            tracing::info!(op = ?op, "kernel change");
            self.metrics
                .reconcile_operations
                .with_label_values(&[op_name(op)])
                .inc();
        }
        for e in &applied.errors {
            tracing::warn!(error = %e, "kernel change failed: will retry");
        }
        if applied.sockets_destroyed > 0 {
            tracing::info!(
                count = applied.sockets_destroyed,
                "cut node-local connections to a dead apiserver"
            );
            self.metrics
                .sockets_destroyed
                .inc_by(applied.sockets_destroyed as u64);
        }
        let ok = applied.errors.is_empty();
        self.metrics
            .reconcile_total
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        // Converged: nothing was needed, or everything needed was applied
        // (the next pass will confirm it).
        self.status.pass_done(ok);
        self.export(&desired, &actual, &p.verdicts);
        self.save_state(&desired);
    }

    fn export(
        &mut self,
        desired: &[DesiredVs],
        actual: &[crate::plan::ActualVs],
        verdicts: &BTreeMap<Endpoint, crate::plan::VsVerdict>,
    ) {
        let m = &self.metrics;
        for d in desired {
            let vs = d.vip.to_string();
            let fail_open = verdicts.get(&d.vip).is_some_and(|v| v.fail_open);
            m.fail_open
                .with_label_values(&[&vs])
                .set(i64::from(fail_open));
            if fail_open && self.fail_open.insert(d.vip) {
                tracing::error!(vs = %d.vip, "FAIL-OPEN: every apiserver fails its checks; keeping them all in rotation");
            } else if !fail_open && self.fail_open.remove(&d.vip) {
                tracing::info!(vs = %d.vip, "fail-open over: some apiserver passes its checks again");
            }
            for (b, c) in &d.backends {
                let healthy = matches!(
                    c,
                    Condition::Ready | Condition::AliveUnknown | Condition::Unprobed
                );
                m.backend_healthy
                    .with_label_values(&[&vs, &b.to_string()])
                    .set(i64::from(healthy));
            }
        }
        for a in actual {
            let vs = a.vip.to_string();
            for (b, d) in &a.dests {
                let b = b.to_string();
                m.ipvs_connections
                    .with_label_values(&[&vs, &b, "active"])
                    .set(i64::from(d.active_conns));
                m.ipvs_connections
                    .with_label_values(&[&vs, &b, "inactive"])
                    .set(i64::from(d.inactive_conns));
                m.ipvs_bytes
                    .with_label_values(&[&vs, &b, "in"])
                    .set(gauge_value(d.in_bytes));
                m.ipvs_bytes
                    .with_label_values(&[&vs, &b, "out"])
                    .set(gauge_value(d.out_bytes));
                m.ipvs_packets
                    .with_label_values(&[&vs, &b, "in"])
                    .set(gauge_value(d.in_packets));
                m.ipvs_packets
                    .with_label_values(&[&vs, &b, "out"])
                    .set(gauge_value(d.out_packets));
            }
        }
    }

    /// Keeps the node's state file (what `apiserver-proxy-tools reload`
    /// restores at boot) in step with what the daemon serves, merged with
    /// what it holds already (see `state::merge_served`).
    fn save_state(&mut self, desired: &[DesiredVs]) {
        let served: Vec<SavedVs> = desired
            .iter()
            .map(|d| {
                SavedVs::new(
                    d.vip,
                    d.scheduler.clone(),
                    d.backends.keys().copied().collect(),
                )
            })
            .collect();
        let mode = match self.config.vip_mode {
            VipMode::Address => "address",
            VipMode::Route => "route",
        };
        let st = state::merge_served(self.saved.clone(), &self.config.interface, mode, &served);
        if self.saved.as_ref() == Some(&st) {
            return;
        }
        match state::save(&self.config.state_dir, &st) {
            Ok(_) => self.saved = Some(st),
            Err(e) => tracing::warn!(error = %e, "cannot write the state file"),
        }
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

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::CreateService { .. } => "create_service",
        Op::SetScheduler { .. } => "set_scheduler",
        Op::AddDest { .. } => "add_dest",
        Op::SetWeight { .. } => "set_weight",
        Op::DelDest { .. } => "del_dest",
    }
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
