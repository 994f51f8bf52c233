//! The daemon's decisions, on any [`Kernel`]: what it wants from discovery
//! and health, one reconcile pass, the host repair, the metrics and the
//! state file. The event plumbing (signals, the discovery and health tasks,
//! timers) lives in [`crate::daemon`]; everything here is driven by plain
//! method calls, so the host tests run it on the testkit's fake kernel.
//!
//! A pass reads our services on the blocking pool, plans on the task (the
//! plan is pure and cheap), then applies on the blocking pool. The kernel is
//! owned, not shared: it moves to the pool and back, so nothing is locked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use apiserver_proxy_dataplane::HostEvent;
use apiserver_proxy_discovery::{DesiredSet, Source};
use apiserver_proxy_health::{HealthEvent, State};
use apiserver_proxy_types::Endpoint;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::host::{HostReport, HostSpec, IPVS_SYSCTLS, VipSpec, route_towards};
use crate::http::Status;
use crate::kernel::{Applied, Kernel, Step, apply_plan};
use crate::metrics::{Metrics, state_label};
use crate::page::{PassBackend, PassVs};
use crate::plan::{ActualVs, Condition, DesiredVs, Drains, Op, Plan, VsVerdict, plan, projected};
use crate::state::{self, NodeState, SavedVs};
use crate::throttle::{self, Throttle};

/// The manager's condition of a backend from the health checker's state.
pub fn condition(state: Option<State>) -> Condition {
    match state {
        None => Condition::Unprobed,
        Some(State::Ready) => Condition::Ready,
        Some(State::Unknown) => Condition::AliveUnknown,
        Some(State::NotReady) => Condition::NotReady,
        Some(State::Dead) => Condition::Dead,
    }
}

pub fn source_name(s: Source) -> &'static str {
    match s {
        Source::Seed => "seed",
        Source::Cache => "cache",
        Source::Cluster => "cluster",
    }
}

/// The condition's name on the status page.
fn condition_name(c: Condition) -> &'static str {
    match c {
        Condition::Unprobed => "unprobed",
        Condition::Ready => "ready",
        Condition::AliveUnknown => "alive-unknown",
        Condition::NotReady => "not-ready",
        Condition::Dead => "dead",
    }
}

/// The virtual servers for the status page: the desired backends with
/// their condition, and the kernel's weights and connections as the pass
/// read them (before its own changes).
fn page_view(
    desired: &[DesiredVs],
    actual: &[ActualVs],
    verdicts: &BTreeMap<Endpoint, VsVerdict>,
) -> Vec<PassVs> {
    desired
        .iter()
        .map(|d| {
            let a = actual.iter().find(|a| a.vip == d.vip);
            let dest = |b: &Endpoint| a.and_then(|a| a.dests.get(b));
            let mut addresses: BTreeSet<Endpoint> = d.backends.keys().copied().collect();
            addresses.extend(a.into_iter().flat_map(|a| a.dests.keys().copied()));
            PassVs {
                vip: d.vip,
                scheduler: d.scheduler.clone(),
                in_kernel: a.is_some(),
                fail_open: verdicts.get(&d.vip).is_some_and(|v| v.fail_open),
                backends: addresses
                    .into_iter()
                    .map(|b| {
                        let c = d.backends.get(&b).copied();
                        PassBackend {
                            address: b,
                            // In the kernel but no longer wanted: draining.
                            condition: c.map_or("unlisted", condition_name).to_string(),
                            in_service: c.is_some_and(Condition::in_service),
                            weight: dest(&b).map(|x| x.weight),
                            active_conns: dest(&b).map(|x| x.active_conns),
                            inactive_conns: dest(&b).map(|x| x.inactive_conns),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// What one pass did, for the caller and the tests.
#[derive(Debug, Default)]
pub struct PassOutcome {
    pub plan: Plan,
    pub applied: Applied,
}

/// The daemon's state between events, and the kernel it owns.
#[derive(Debug)]
pub struct Reconciler<K: Kernel> {
    config: Config,
    metrics: Metrics,
    status: Arc<Status>,
    /// `None` only while a batch of calls runs on the blocking pool.
    kernel: Option<K>,
    sets: BTreeMap<Endpoint, DesiredSet>,
    health: BTreeMap<Endpoint, State>,
    drains: Drains,
    fail_open: BTreeSet<Endpoint>,
    /// The state file as last read or written (the daemon holds the state
    /// lock, so no one else writes it meanwhile).
    saved: Option<NodeState>,
    /// The (virtual server, backend) pairs whose series were exported last.
    exported: BTreeSet<(Endpoint, Endpoint)>,
    /// Failures that repeat on every pass are said once a minute.
    warnings: Throttle,
}

impl<K: Kernel> Reconciler<K> {
    /// `saved` is the state file as found at start (see
    /// `daemon::load_saved_state`).
    pub fn new(
        config: Config,
        metrics: Metrics,
        status: Arc<Status>,
        kernel: K,
        saved: Option<NodeState>,
    ) -> Reconciler<K> {
        Reconciler {
            config,
            metrics,
            status,
            kernel: Some(kernel),
            sets: BTreeMap::new(),
            health: BTreeMap::new(),
            drains: Drains::default(),
            fail_open: BTreeSet::new(),
            saved,
            exported: BTreeSet::new(),
            warnings: Throttle::new(throttle::DEFAULT_PERIOD),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The kernel, between passes (tests inspect or tamper with the fake).
    pub fn kernel_mut(&mut self) -> &mut K {
        self.kernel
            .as_mut()
            .expect("the kernel is only away during a pass, which holds &mut self")
    }

    /// The state file as the daemon last wrote or read it.
    pub fn saved(&self) -> Option<&NodeState> {
        self.saved.as_ref()
    }

    /// Runs `f` on the kernel on the blocking pool (netlink calls block).
    async fn on_pool<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut K) -> T + Send + 'static,
    ) -> Result<T> {
        let mut k = self
            .kernel
            .take()
            .expect("the kernel is only away during a pass, which holds &mut self");
        let joined = tokio::task::spawn_blocking(move || {
            let out = f(&mut k);
            (k, out)
        })
        .await;
        match joined {
            Ok((k, out)) => {
                self.kernel = Some(k);
                Ok(out)
            }
            // A panic on the pool loses the kernel handle; the caller exits
            // and the daemon restarts, rules in place.
            Err(e) => Err(Error::Task(e)),
        }
    }

    /// A new desired set from discovery. Returns every backend of every
    /// virtual server, for the health checker.
    pub fn on_set(&mut self, set: DesiredSet) -> Option<BTreeSet<Endpoint>> {
        let vs = self
            .config
            .virtual_servers
            .iter()
            .find(|v| v.vip == set.vs)?;
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
        self.status.page.record_set(
            set.vs,
            source_name(set.source),
            set.generation,
            set.backends.clone(),
            std::time::SystemTime::now(),
        );
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
        self.health.retain(|b, _| all.contains(b));
        Some(all)
    }

    pub fn on_health(&mut self, ev: HealthEvent) {
        tracing::info!(
            backend = %ev.backend,
            from = ?ev.previous.map(|s| s.to_string()),
            to = %ev.state,
            reason = %ev.reason,
            "backend state changed"
        );
        self.status.page.record_health(
            ev.backend,
            ev.state.to_string(),
            ev.reason.to_string(),
            ev.at_system,
        );
        let to = state_label(ev.state);
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

    /// The backends a virtual server wants now: discovery's set, else the
    /// seeds (the CLI put them in the kernel already).
    fn backends_of(&self, vip: Endpoint) -> BTreeSet<Endpoint> {
        match self.sets.get(&vip) {
            Some(s) => s.backends.clone(),
            None => self
                .config
                .virtual_servers
                .iter()
                .find(|v| v.vip == vip)
                .map(|v| v.seeds.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    pub fn desired(&self) -> Vec<DesiredVs> {
        self.config
            .virtual_servers
            .iter()
            .map(|vs| {
                let answered = self
                    .sets
                    .get(&vs.vip)
                    .is_some_and(|s| s.source == Source::Cluster);
                DesiredVs {
                    keep_unlisted: !answered,
                    vip: vs.vip,
                    scheduler: vs.scheduler.clone(),
                    backends: self
                        .backends_of(vs.vip)
                        .into_iter()
                        .filter(|b| b.family() == vs.vip.family())
                        .map(|b| (b, condition(self.health.get(&b).copied())))
                        .collect(),
                }
            })
            .collect()
    }

    /// What the host must hold. A route-mode VIP's source is chosen towards
    /// its first backend: the desired one, else the one the state file saved.
    pub fn host_spec(&self) -> HostSpec {
        let vips = self
            .config
            .virtual_servers
            .iter()
            .filter(|vs| !self.config.is_outside_vip(vs.vip))
            .map(|vs| {
                let mut backends: Vec<Endpoint> = self.backends_of(vs.vip).into_iter().collect();
                if backends.is_empty()
                    && let Some(saved) = self
                        .saved
                        .iter()
                        .flat_map(|st| st.virtual_servers.iter())
                        .find(|s| s.vip == vs.vip)
                {
                    backends = saved.backends.clone();
                }
                VipSpec {
                    ip: vs.vip.ip(),
                    towards: route_towards(vs.vip, &backends),
                }
            })
            .collect();
        HostSpec {
            interface: self.config.interface.clone(),
            vip_mode: self.config.vip_mode,
            vips,
            outside: Some(self.config.control_plane.vip.into_iter().collect()),
        }
    }

    /// Whether a host change can have undone what the host must hold: our
    /// interface changed or went, a VIP's address or route went, or the
    /// kernel dropped notifications. Other interfaces' and routes' churn (a
    /// CNI, kube-proxy) is not worth a check.
    pub fn host_event_matters(&self, e: &HostEvent) -> bool {
        let is_vip = |ip: &std::net::IpAddr| {
            self.config
                .virtual_servers
                .iter()
                .any(|v| v.vip.ip() == *ip)
        };
        match e {
            HostEvent::Link { name, .. } => *name == self.config.interface,
            HostEvent::Address { addr, removed, .. } => *removed && is_vip(addr),
            HostEvent::Route { dst, removed, .. } => *removed && is_vip(dst),
            HostEvent::Overrun => true,
            // Rules, not the host: see `rules_event_matters`.
            HostEvent::OurRulesChanged { .. } => false,
        }
    }

    /// Whether an event can have undone our rules: someone else changed
    /// our nftables table, or notifications were lost. The pass that
    /// follows reads the kernel and puts back what is missing.
    pub fn rules_event_matters(e: &HostEvent) -> bool {
        matches!(e, HostEvent::OurRulesChanged { .. } | HostEvent::Overrun)
    }

    /// Makes the host hold what it must (the interface, every VIP, the
    /// sysctls), reporting each repair in the log and the sysctls it could
    /// not set in the metrics. Called at start, on host events, and on the
    /// resync tick.
    pub async fn ensure_host(&mut self) -> Result<HostReport> {
        let spec = self.host_spec();
        let report = match self.on_pool(move |k| k.ensure_host(&spec)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) | Err(e) => {
                self.count_error("host", &e);
                if let Some(held) = self.warnings.allow(&format!("host: {e}"), Instant::now()) {
                    tracing::warn!(error = %e, repeated = held, "host repair failed: will retry");
                }
                return Err(e);
            }
        };
        for change in &report.changes {
            tracing::info!(change = %change, "host changed");
            self.metrics.host_repairs.inc();
        }
        for (s, _) in IPVS_SYSCTLS {
            let unset = report.sysctls_unset.iter().find(|u| u.name == s.name());
            if let Some(u) = unset
                && self.metrics.sysctl_unset.with_label_values(&[u.name]).get() == 0
            {
                tracing::error!(sysctl = u.name, want = u.want, error = %u.error, "sysctl NOT set: failover is slower until it is");
            }
            self.metrics
                .sysctl_unset
                .with_label_values(&[s.name()])
                .set(i64::from(unset.is_some()));
        }
        Ok(report)
    }

    /// One reconcile pass: read ours, plan, apply, export, save the state.
    pub async fn pass(&mut self) -> PassOutcome {
        let desired = self.desired();
        let vips: Vec<Endpoint> = desired.iter().map(|d| d.vip).collect();
        let started = Instant::now();
        let actual = match self.on_pool(move |k| k.read_ours(&vips)).await {
            Ok(Ok(actual)) => actual,
            Ok(Err(e)) | Err(e) => {
                self.count_error("read", &e);
                if let Some(held) = self.warnings.allow(&format!("read: {e}"), Instant::now()) {
                    tracing::error!(error = %e, repeated = held, "reconcile pass failed: will retry");
                }
                self.metrics
                    .reconcile_total
                    .with_label_values(&["error"])
                    .inc();
                self.status.pass_done(false);
                self.status
                    .page
                    .record_failed_pass(std::time::SystemTime::now());
                return PassOutcome::default();
            }
        };
        let p = plan(
            &desired,
            &actual,
            &mut self.drains,
            Instant::now(),
            self.config.drain_timeout,
        );
        let applied = if p.ops.is_empty() {
            Applied::default()
        } else {
            let ops = p.clone();
            match self.on_pool(move |k| apply_plan(k, &ops)).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "reconcile task failed: will retry");
                    self.status.pass_done(false);
                    self.status
                        .page
                        .record_failed_pass(std::time::SystemTime::now());
                    return PassOutcome::default();
                }
            }
        };
        self.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        for op in &p.ops {
            tracing::info!(op = %op, "kernel change");
            self.metrics
                .reconcile_operations
                .with_label_values(&[op.name()])
                .inc();
        }
        for e in &applied.errors {
            self.count_error("apply", &e.source);
            if let Some(held) = self.warnings.allow(&e.to_string(), Instant::now()) {
                tracing::warn!(error = %e, repeated = held, "kernel change failed: will retry");
            }
        }
        if applied.sockets_destroyed > 0 {
            tracing::info!(
                count = applied.sockets_destroyed,
                "cut the node's connections orphaned by a dead or timed-out backend or a re-created virtual server"
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
        if ok {
            // An alert on `time() - this` finds a node whose loop is stuck
            // or failing, which the pass counters alone do not show.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.metrics.reconcile_last_success.set(now);
        }
        // Converged: nothing was needed, or everything needed was applied
        // (the next pass will confirm it).
        self.status.pass_done(ok);
        // What the kernel holds now: the operations that failed are left
        // out, so a view never claims a change the kernel refused.
        let failed: Vec<&Op> = applied
            .errors
            .iter()
            .filter_map(|e| match &e.step {
                Step::Apply(op) => Some(op),
                _ => None,
            })
            .collect();
        let done: Vec<&Op> = p.ops.iter().filter(|op| !failed.contains(op)).collect();
        let actual = projected(&actual, &done);
        self.status.page.record_pass(
            ok,
            page_view(&desired, &actual, &p.verdicts),
            std::time::SystemTime::now(),
        );
        self.export(&desired, &actual, &p.verdicts);
        self.save_state(&desired);
        PassOutcome { plan: p, applied }
    }

    fn count_error(&self, during: &str, e: &Error) {
        self.metrics
            .errors
            .with_label_values(&[during, e.label()])
            .inc();
    }

    fn export(
        &mut self,
        desired: &[DesiredVs],
        actual: &[ActualVs],
        verdicts: &BTreeMap<Endpoint, VsVerdict>,
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
                m.backend_healthy
                    .with_label_values(&[&vs, &b.to_string()])
                    .set(i64::from(c.in_service()));
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
                m.ipvs_bytes.set(&[&vs, &b, "in"], d.in_bytes);
                m.ipvs_bytes.set(&[&vs, &b, "out"], d.out_bytes);
                m.ipvs_packets.set(&[&vs, &b, "in"], d.in_packets);
                m.ipvs_packets.set(&[&vs, &b, "out"], d.out_packets);
            }
        }
        let now: BTreeSet<(Endpoint, Endpoint)> = desired
            .iter()
            .flat_map(|d| d.backends.keys().map(|b| (d.vip, *b)))
            .chain(
                actual
                    .iter()
                    .flat_map(|a| a.dests.keys().map(|b| (a.vip, *b))),
            )
            .collect();
        for (vs, b) in self.exported.difference(&now) {
            m.forget_backend_of(&vs.to_string(), &b.to_string());
            if !now.iter().any(|(_, other)| other == b) {
                m.forget_backend(&b.to_string());
            }
        }
        self.exported = now;
    }

    /// Keeps the node's state file (what `apiserver-proxy-tools reload`
    /// restores at boot) in step with what the daemon serves, merged with
    /// what it holds already (see `state::merge_served`).
    fn save_state(&mut self, desired: &[DesiredVs]) {
        let served: Vec<SavedVs> = desired
            .iter()
            .filter(|d| !self.config.is_outside_vip(d.vip))
            .map(|d| {
                SavedVs::new(
                    d.vip,
                    d.scheduler.clone(),
                    d.backends.keys().copied().collect(),
                )
            })
            .collect();
        let st = state::merge_served(
            self.saved.clone(),
            &self.config.interface,
            self.config.vip_mode,
            &served,
        );
        if self.saved.as_ref() == Some(&st) {
            return;
        }
        match state::save(&self.config.state_dir, &st) {
            Ok(_) => self.saved = Some(st),
            Err(e) => {
                if let Some(held) = self.warnings.allow(&format!("state: {e}"), Instant::now()) {
                    tracing::warn!(error = %e, repeated = held, "cannot write the state file");
                }
            }
        }
    }
}
