//! Prometheus metrics. Every name starts with `apiserver_proxy_`; the list
//! with meanings is in docs/metrics.md.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics, registered in their own registry (not the global one, so
/// tests can create as many managers as they like).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub backend_healthy: IntGaugeVec,
    pub backend_transitions: IntCounterVec,
    pub probe_duration: HistogramVec,
    pub probe_failures: IntCounterVec,
    pub reconcile_total: IntCounterVec,
    pub reconcile_last_success: prometheus::Gauge,
    pub reconcile_duration: Histogram,
    pub reconcile_operations: IntCounterVec,
    pub ipvs_connections: IntGaugeVec,
    pub ipvs_bytes: KernelCounterVec,
    pub ipvs_packets: KernelCounterVec,
    pub sockets_destroyed: IntCounter,
    pub host_repairs: IntCounter,
    pub errors: IntCounterVec,
    pub http_connections: IntGauge,
    pub http_rejected: IntCounter,
    pub http_accept_errors: IntCounter,
    pub fail_open: IntGaugeVec,
    pub sysctl_unset: IntGaugeVec,
    pub discovery_source: IntGaugeVec,
    pub discovery_rejected: IntCounterVec,
    pub control_plane_vip_held: IntGauge,
    pub control_plane_vip_changes: IntCounterVec,
    pub build_info: IntGaugeVec,
}

const PREFIX: &str = "apiserver_proxy";

/// The `to` label of `backend_transitions_total`: the health state entered.
pub const STATE_LABELS: [&str; 4] = ["ready", "not_ready", "unknown", "dead"];

/// The `to` label of a health state.
pub fn state_label(state: apiserver_proxy_health::State) -> &'static str {
    use apiserver_proxy_health::State;
    match state {
        State::Ready => STATE_LABELS[0],
        State::NotReady => STATE_LABELS[1],
        State::Unknown => STATE_LABELS[2],
        State::Dead => STATE_LABELS[3],
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on an invalid name or a duplicate registration: both are
    // bugs in this file, caught by the tests below.
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let latency_buckets = vec![
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let m = Metrics {
            backend_healthy: must(IntGaugeVec::new(
                opts(
                    "backend_healthy",
                    "1 if the backend is in rotation (alive, and ready or of unknown readiness), else 0",
                ),
                &["vs", "backend"],
            )),
            backend_transitions: must(IntCounterVec::new(
                opts(
                    "backend_transitions_total",
                    "Backend state changes, by the state entered",
                ),
                &["vs", "backend", "to"],
            )),
            probe_duration: must(HistogramVec::new(
                HistogramOpts::new("probe_duration_seconds", "Readiness probe round trips")
                    .namespace(PREFIX)
                    .buckets(latency_buckets.clone()),
                &["backend"],
            )),
            probe_failures: must(IntCounterVec::new(
                opts(
                    "probe_failures_total",
                    "Failed probes and liveness events, by kind",
                ),
                &["backend", "kind"],
            )),
            reconcile_total: must(IntCounterVec::new(
                opts("reconcile_total", "Reconcile passes, by result (ok, error)"),
                &["result"],
            )),
            reconcile_last_success: must(prometheus::Gauge::with_opts(opts(
                "reconcile_last_success_timestamp_seconds",
                "Unix time of the end of the last reconcile pass that applied everything it had to (kube-proxy's sync_proxy_rules_last_timestamp_seconds)",
            ))),
            reconcile_duration: must(Histogram::with_opts(
                HistogramOpts::new(
                    "reconcile_duration_seconds",
                    "Time of one reconcile pass: read our services, plan, apply",
                )
                .namespace(PREFIX)
                .buckets(latency_buckets),
            )),
            reconcile_operations: must(IntCounterVec::new(
                opts(
                    "reconcile_operations_total",
                    "IPVS changes applied, by operation",
                ),
                &["op"],
            )),
            ipvs_connections: must(IntGaugeVec::new(
                opts(
                    "ipvs_connections",
                    "IPVS connections per real server, by state (active, inactive)",
                ),
                &["vs", "backend", "state"],
            )),
            ipvs_bytes: must(KernelCounterVec::new(
                "ipvs_bytes_total",
                "Bytes through a real server since it was added to IPVS, by direction (in, out)",
                ["vs", "backend", "direction"],
            )),
            ipvs_packets: must(KernelCounterVec::new(
                "ipvs_packets_total",
                "Packets through a real server since it was added to IPVS, by direction (in, out)",
                ["vs", "backend", "direction"],
            )),
            sockets_destroyed: must(IntCounter::with_opts(opts(
                "sockets_destroyed_total",
                "Node-local sockets cut because the path they were on was removed: their apiserver died, its drain timed out, or the virtual server had to be created again",
            ))),

            host_repairs: must(IntCounter::with_opts(opts(
                "host_repairs_total",
                "Changes made to put the host back as the daemon needs it: the interface created or brought up, a VIP or its route restored, a sysctl set",
            ))),

            errors: must(IntCounterVec::new(
                opts(
                    "errors_total",
                    "Failed kernel or host operations, by what the daemon was doing (read, apply, host) and the error's kind",
                ),
                &["during", "error"],
            )),
            http_connections: must(IntGauge::with_opts(opts(
                "http_connections",
                "Connections to the daemon's HTTP listener being served now",
            ))),
            http_rejected: must(IntCounter::with_opts(opts(
                "http_connections_rejected_total",
                "Connections to the HTTP listener closed to make room: at its maximum, the oldest connection is closed for each new one",
            ))),
            http_accept_errors: must(IntCounter::with_opts(opts(
                "http_accept_errors_total",
                "Failed accepts on the HTTP listener (out of file descriptors, ...); each is followed by a pause",
            ))),
            fail_open: must(IntGaugeVec::new(
                opts(
                    "fail_open",
                    "1 while every backend of the virtual server fails its checks and all are kept in rotation",
                ),
                &["vs"],
            )),
            sysctl_unset: must(IntGaugeVec::new(
                opts(
                    "sysctl_unset",
                    "1 when an IPVS sysctl the daemon needs is wrong and it could not set it (read-only /proc/sys)",
                ),
                &["sysctl"],
            )),
            discovery_source: must(IntGaugeVec::new(
                opts(
                    "discovery_source",
                    "1 for where the virtual server's backend set comes from now (seed, cache, cluster)",
                ),
                &["vs", "source"],
            )),
            discovery_rejected: must(IntCounterVec::new(
                opts(
                    "discovery_rejected_total",
                    "Answers or objects from the cluster not applied: no usable endpoint (fail-static), more apiservers than allowed, or an object not named as the service",
                ),
                &["reason"],
            )),
            control_plane_vip_held: must(IntGauge::with_opts(opts(
                "control_plane_vip_held",
                "1 while this node holds the outside control-plane VIP, else 0",
            ))),
            control_plane_vip_changes: must(IntCounterVec::new(
                opts(
                    "control_plane_vip_changes_total",
                    "The outside control-plane VIP taken or let go by this node, by change (taken, released)",
                ),
                &["change"],
            )),
            build_info: must(IntGaugeVec::new(
                opts("build_info", "Always 1; labels say which build runs"),
                &["version", "revision", "rustc"],
            )),
            registry: registry.clone(),
        };
        for c in [
            Box::new(m.backend_healthy.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.backend_transitions.clone()),
            Box::new(m.probe_duration.clone()),
            Box::new(m.probe_failures.clone()),
            Box::new(m.reconcile_total.clone()),
            Box::new(m.reconcile_last_success.clone()),
            Box::new(m.reconcile_duration.clone()),
            Box::new(m.reconcile_operations.clone()),
            Box::new(m.ipvs_connections.clone()),
            Box::new(m.ipvs_bytes.clone()),
            Box::new(m.ipvs_packets.clone()),
            Box::new(m.sockets_destroyed.clone()),
            Box::new(m.host_repairs.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.http_connections.clone()),
            Box::new(m.http_rejected.clone()),
            Box::new(m.http_accept_errors.clone()),
            Box::new(m.fail_open.clone()),
            Box::new(m.sysctl_unset.clone()),
            Box::new(m.discovery_source.clone()),
            Box::new(m.discovery_rejected.clone()),
            Box::new(m.control_plane_vip_held.clone()),
            Box::new(m.control_plane_vip_changes.clone()),
            Box::new(m.build_info.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            reg(c);
        }
        m.build_info
            .with_label_values(&[
                crate::build::VERSION,
                crate::build::GIT_REVISION,
                crate::build::RUSTC_VERSION,
            ])
            .set(1);
        m
    }

    /// The text exposition format, for `/metrics`.
    /// Removes the series of `backend` in virtual server `vs`, once it has
    /// left it (not desired, not in the kernel): without this the series
    /// count grows with every control-plane IP a cluster ever had.
    pub fn forget_backend_of(&self, vs: &str, backend: &str) {
        let _ = self.backend_healthy.remove_label_values(&[vs, backend]);
        for to in STATE_LABELS {
            let _ = self
                .backend_transitions
                .remove_label_values(&[vs, backend, to]);
        }
        for state in ["active", "inactive"] {
            let _ = self
                .ipvs_connections
                .remove_label_values(&[vs, backend, state]);
        }
        for direction in ["in", "out"] {
            self.ipvs_bytes.remove(&[vs, backend, direction]);
            self.ipvs_packets.remove(&[vs, backend, direction]);
        }
    }

    /// Removes the probe series of a backend no virtual server has any more.
    pub fn forget_backend(&self, backend: &str) {
        let _ = self.probe_duration.remove_label_values(&[backend]);
        for kind in apiserver_proxy_health::FailureKind::ALL {
            let _ = self
                .probe_failures
                .remove_label_values(&[backend, kind.as_str()]);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# error encoding metrics: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counters whose values the kernel keeps (IPVS byte and packet counts):
/// exported as Prometheus counters with the kernel's number as it is, as
/// node-exporter does for interface counters. The kernel restarts them when
/// a real server is added again; `rate()` reads that as a counter reset.
/// (The `prometheus` crate's counters can only be incremented.)
#[derive(Debug, Clone)]
pub struct KernelCounterVec {
    desc: Desc,
    labels: [&'static str; 3],
    values: Arc<Mutex<BTreeMap<[String; 3], u64>>>,
}

impl KernelCounterVec {
    /// `name` without the common prefix; it ends in `_total`.
    pub fn new(
        name: &str,
        help: &str,
        labels: [&'static str; 3],
    ) -> prometheus::Result<KernelCounterVec> {
        let desc = Desc::new(
            format!("{PREFIX}_{name}"),
            help.to_string(),
            labels.iter().map(|l| l.to_string()).collect(),
            Default::default(),
        )?;
        Ok(KernelCounterVec {
            desc,
            labels,
            values: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<[String; 3], u64>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kernel's current count for these label values.
    pub fn set(&self, values: &[&str; 3], count: u64) {
        self.lock().insert(values.map(str::to_string), count);
    }

    /// Forgets a series (its real server is gone).
    pub fn remove(&self, values: &[&str; 3]) {
        self.lock().remove(&values.map(str::to_string));
    }

    /// The count exported for these label values, if any.
    pub fn get(&self, values: &[&str; 3]) -> Option<u64> {
        self.lock().get(&values.map(str::to_string)).copied()
    }
}

impl Collector for KernelCounterVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let metrics: Vec<Metric> = self
            .lock()
            .iter()
            .map(|(values, count)| {
                // Sorted by name, as the crate renders its own vectors.
                let mut pairs: Vec<LabelPair> = self
                    .labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.to_string());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                pairs.sort_by(|a, b| a.name().cmp(b.name()));
                let mut m = Metric::from_label(pairs);
                let mut counter = prometheus::proto::Counter::default();
                // f64 holds every count below 2^53 exactly: 9 PB.
                counter.set_value(*count as f64);
                m.set_counter(counter);
                m
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the kernel's cumulative IPVS counts were exported as
    /// gauges (`ipvs_bytes`), which `rate()` must not be applied to.
    #[test]
    fn kernel_counts_are_counters_with_the_kernels_value_and_can_be_forgotten() {
        let m = Metrics::new();
        m.ipvs_bytes
            .set(&["10.103.97.2:6443", "10.0.0.11:6443", "in"], 1 << 40);
        m.ipvs_bytes
            .set(&["10.103.97.2:6443", "10.0.0.11:6443", "out"], 7);
        m.ipvs_packets
            .set(&["10.103.97.2:6443", "10.0.0.11:6443", "in"], u64::MAX);
        let text = m.render();
        assert!(
            text.contains("# TYPE apiserver_proxy_ipvs_bytes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE apiserver_proxy_ipvs_packets_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "apiserver_proxy_ipvs_bytes_total{backend=\"10.0.0.11:6443\",direction=\"in\",vs=\"10.103.97.2:6443\"} 1099511627776"
            ),
            "{text}"
        );
        // The kernel restarted its count (the real server was re-added):
        // the series goes down, which Prometheus reads as a counter reset.
        m.ipvs_bytes
            .set(&["10.103.97.2:6443", "10.0.0.11:6443", "in"], 3);
        assert_eq!(
            m.ipvs_bytes
                .get(&["10.103.97.2:6443", "10.0.0.11:6443", "in"]),
            Some(3)
        );
        m.forget_backend_of("10.103.97.2:6443", "10.0.0.11:6443");
        let text = m.render();
        assert!(
            !text.contains("apiserver_proxy_ipvs_bytes_total{"),
            "{text}"
        );
        assert!(
            !text.contains("apiserver_proxy_ipvs_packets_total{"),
            "{text}"
        );
    }

    #[test]
    fn build_info_names_the_version_revision_and_compiler() {
        let text = Metrics::new().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("apiserver_proxy_build_info{"))
            .expect("build_info");
        for want in [
            format!("version=\"{}\"", crate::build::VERSION),
            format!("revision=\"{}\"", crate::build::GIT_REVISION),
            "rustc=\"rustc ".to_string(),
        ] {
            assert!(line.contains(&want), "{want} in {line}");
        }
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[test]
    fn every_name_has_the_prefix_and_the_required_ones_exist() {
        let m = Metrics::new();
        m.backend_healthy.with_label_values(&["vs", "b"]).set(1);
        m.backend_transitions
            .with_label_values(&["vs", "b", "dead"])
            .inc();
        m.probe_duration.with_label_values(&["b"]).observe(0.01);
        m.reconcile_total.with_label_values(&["ok"]).inc();
        m.reconcile_last_success.set(1.0);
        m.reconcile_duration.observe(0.001);
        m.ipvs_connections
            .with_label_values(&["vs", "b", "active"])
            .set(3);
        m.ipvs_bytes.set(&["vs", "b", "in"], 10);
        m.ipvs_packets.set(&["vs", "b", "in"], 1);
        m.sockets_destroyed.inc();
        m.host_repairs.inc();
        m.errors.with_label_values(&["apply", "dataplane"]).inc();
        m.http_connections.inc();
        m.http_rejected.inc();
        m.http_accept_errors.inc();
        m.fail_open.with_label_values(&["vs"]).set(0);
        m.sysctl_unset.with_label_values(&["s"]).set(1);
        m.discovery_source
            .with_label_values(&["vs", "cluster"])
            .set(1);
        m.control_plane_vip_changes
            .with_label_values(&["taken"])
            .inc();
        let text = m.render();
        for name in [
            "apiserver_proxy_backend_healthy{",
            "apiserver_proxy_backend_transitions_total{",
            "apiserver_proxy_probe_duration_seconds_bucket{",
            "apiserver_proxy_reconcile_total{",
            "apiserver_proxy_reconcile_last_success_timestamp_seconds ",
            "apiserver_proxy_reconcile_duration_seconds_bucket{",
            "apiserver_proxy_ipvs_connections{",
            "apiserver_proxy_ipvs_bytes_total{",
            "apiserver_proxy_ipvs_packets_total{",
            "apiserver_proxy_sockets_destroyed_total ",
            "apiserver_proxy_host_repairs_total ",
            "apiserver_proxy_errors_total{",
            "apiserver_proxy_http_connections ",
            "apiserver_proxy_http_connections_rejected_total ",
            "apiserver_proxy_http_accept_errors_total ",
            "apiserver_proxy_fail_open{",
            "apiserver_proxy_sysctl_unset{",
            "apiserver_proxy_discovery_source{",
            "apiserver_proxy_control_plane_vip_held ",
            "apiserver_proxy_control_plane_vip_changes_total{",
            "apiserver_proxy_build_info{revision=",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.starts_with("apiserver_proxy_") || line.starts_with("process_"),
                "{line}"
            );
        }
    }
}
