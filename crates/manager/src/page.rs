//! The daemon's own view for people and tools: the `/status` page (what
//! haproxy's stats page gives its users). Each virtual server, each backend
//! with its state, the reason, since when, its last probe and latency, its
//! weight and connections in the kernel; what discovery last said, from
//! which source and when; fail-open; the last reconcile pass.
//!
//! The reconcile loop and the health observer record into it as they
//! decide, from the same values that feed `/metrics`; the page only reads.
//! Nothing secret is in it (no certificate, token or kubeconfig path).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use apiserver_proxy_types::Endpoint;
use serde_json::{Value, json};

/// The page's JSON format: a field added keeps the version; renamed,
/// removed or changed in meaning gives a new one. Documented in
/// docs/operations.md.
pub const API_VERSION: &str = "bcs-apiserver-proxy/v1";
pub const KIND: &str = "DaemonStatus";

/// One backend as the health checker last judged it.
#[derive(Debug, Clone, Default)]
struct Health {
    state: Option<String>,
    reason: Option<String>,
    since: Option<SystemTime>,
    last_probe: Option<SystemTime>,
    last_probe_latency: Option<Duration>,
    last_probe_ok: Option<bool>,
}

/// What discovery last said for one virtual server.
#[derive(Debug, Clone)]
struct Said {
    source: &'static str,
    generation: u64,
    backends: BTreeSet<Endpoint>,
    at: SystemTime,
}

/// A backend of a virtual server after a pass: the manager's condition,
/// and the kernel's weight and connections (when the kernel holds it).
#[derive(Debug, Clone)]
pub struct PassBackend {
    pub address: Endpoint,
    pub condition: String,
    pub in_service: bool,
    pub weight: Option<u32>,
    pub active_conns: Option<u32>,
    pub inactive_conns: Option<u32>,
}

/// A virtual server after a pass.
#[derive(Debug, Clone)]
pub struct PassVs {
    pub vip: Endpoint,
    pub scheduler: String,
    pub in_kernel: bool,
    pub fail_open: bool,
    pub backends: Vec<PassBackend>,
}

#[derive(Debug, Default)]
struct State {
    health: BTreeMap<Endpoint, Health>,
    said: BTreeMap<Endpoint, Said>,
    vss: Vec<PassVs>,
    last_pass: Option<(SystemTime, bool)>,
    last_success: Option<SystemTime>,
}

/// The page's data, shared by the loop (writing) and the listener (reading).
#[derive(Debug, Default)]
pub struct Page {
    state: Mutex<State>,
}

impl Page {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere while holding the lock leaves data that is
        // still valid to show.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// A health change of `backend`.
    pub fn record_health(&self, backend: Endpoint, state: String, reason: String, at: SystemTime) {
        self.with(|s| {
            let h = s.health.entry(backend).or_default();
            h.state = Some(state);
            h.reason = Some(reason);
            h.since = Some(at);
        });
    }

    /// One probe of `backend` (connect or readiness) and how long it took.
    pub fn record_probe(&self, backend: Endpoint, ok: bool, latency: Duration, at: SystemTime) {
        self.with(|s| {
            let h = s.health.entry(backend).or_default();
            h.last_probe = Some(at);
            h.last_probe_latency = Some(latency);
            h.last_probe_ok = Some(ok);
        });
    }

    /// What discovery said for `vip`.
    pub fn record_set(
        &self,
        vip: Endpoint,
        source: &'static str,
        generation: u64,
        backends: BTreeSet<Endpoint>,
        at: SystemTime,
    ) {
        self.with(|s| {
            s.said.insert(
                vip,
                Said {
                    source,
                    generation,
                    backends,
                    at,
                },
            );
        });
    }

    /// A finished pass: its result and the virtual servers as it left them.
    pub fn record_pass(&self, ok: bool, vss: Vec<PassVs>, at: SystemTime) {
        self.with(|s| {
            s.last_pass = Some((at, ok));
            if ok {
                s.last_success = Some(at);
            }
            // Forget backends no virtual server has any more.
            let known: BTreeSet<Endpoint> = vss
                .iter()
                .flat_map(|v| v.backends.iter().map(|b| b.address))
                .collect();
            s.health.retain(|b, _| known.contains(b));
            s.vss = vss;
        });
    }

    /// A failed pass that left nothing new to show.
    pub fn record_failed_pass(&self, at: SystemTime) {
        self.with(|s| s.last_pass = Some((at, false)));
    }

    /// The page as JSON, at `now`.
    pub fn json(&self, now: SystemTime, alive: bool, ready: bool) -> Value {
        self.with(|s| {
            let vss: Vec<Value> = s
                .vss
                .iter()
                .map(|vs| {
                    let said = s.said.get(&vs.vip);
                    json!({
                        "vip": vs.vip.to_string(),
                        "scheduler": vs.scheduler,
                        "inKernel": vs.in_kernel,
                        "failOpen": vs.fail_open,
                        "discovery": said.map(|d| json!({
                            "source": d.source,
                            "generation": d.generation,
                            "at": time(d.at),
                            "backends": d.backends.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        })),
                        "backends": vs.backends.iter().map(|b| {
                            let h = s.health.get(&b.address).cloned().unwrap_or_default();
                            json!({
                                "address": b.address.to_string(),
                                "condition": b.condition,
                                "inService": b.in_service,
                                "health": h.state,
                                "reason": h.reason,
                                "since": h.since.map(time),
                                "sinceSeconds": h.since.map(|t| age(now, t)),
                                "lastProbe": h.last_probe.map(time),
                                "lastProbeOk": h.last_probe_ok,
                                "lastProbeLatencySeconds": h.last_probe_latency.map(|d| d.as_secs_f64()),
                                "weight": b.weight,
                                "activeConns": b.active_conns,
                                "inactiveConns": b.inactive_conns,
                            })
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "apiVersion": API_VERSION,
                "kind": KIND,
                "version": crate::build::VERSION,
                "revision": crate::build::GIT_REVISION,
                "now": time(now),
                "alive": alive,
                "ready": ready,
                "lastPass": s.last_pass.map(|(t, ok)| json!({"at": time(t), "ok": ok})),
                "lastSuccess": s.last_success.map(time),
                "virtualServers": vss,
            })
        })
    }

    /// The page for a terminal: one block per virtual server, a row per
    /// backend.
    pub fn text(&self, now: SystemTime, alive: bool, ready: bool) -> String {
        let j = self.json(now, alive, ready);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "bcs-apiserver-proxy {} ({}): {}",
            crate::build::VERSION,
            crate::build::GIT_REVISION,
            match (alive, ready) {
                (true, true) => "ready",
                (true, false) => "alive, the kernel does not match the desired state yet",
                _ => "the reconcile loop has not finished a pass recently",
            }
        );
        if let Some(p) = j["lastPass"].as_object() {
            let _ = writeln!(
                out,
                "last pass: {} ({}), last success: {}",
                p["at"].as_str().unwrap_or("-"),
                if p["ok"] == true { "ok" } else { "error" },
                j["lastSuccess"].as_str().unwrap_or("never")
            );
        }
        for vs in j["virtualServers"].as_array().into_iter().flatten() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{} ({}){}",
                vs["vip"].as_str().unwrap_or("?"),
                vs["scheduler"].as_str().unwrap_or("?"),
                if vs["failOpen"] == true {
                    "  FAIL-OPEN: no backend passes its checks; all kept"
                } else if vs["inKernel"] == false {
                    "  not in the kernel"
                } else {
                    ""
                }
            );
            match vs["discovery"].as_object() {
                Some(d) => {
                    let _ = writeln!(
                        out,
                        "  discovery: {} (generation {}) at {}: {}",
                        d["source"].as_str().unwrap_or("?"),
                        d["generation"],
                        d["at"].as_str().unwrap_or("?"),
                        d["backends"]
                            .as_array()
                            .map(|b| b
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default()
                    );
                }
                None => {
                    let _ = writeln!(out, "  discovery: nothing yet (the seeds apply)");
                }
            }
            for b in vs["backends"].as_array().into_iter().flatten() {
                let dash = |v: &Value| match v {
                    Value::Null => "-".to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let latency = b["lastProbeLatencySeconds"]
                    .as_f64()
                    .map_or("-".to_string(), |s| format!("{:.1}ms", s * 1000.0));
                let since = b["sinceSeconds"]
                    .as_f64()
                    .map_or("-".to_string(), |s| format!("{s:.0}s"));
                let _ = writeln!(
                    out,
                    "  {:<24} {:<10} weight {:<2} conns {}/{}  for {:<6} probe {}  {}",
                    dash(&b["address"]),
                    dash(&b["condition"]),
                    dash(&b["weight"]),
                    dash(&b["activeConns"]),
                    dash(&b["inactiveConns"]),
                    since,
                    latency,
                    dash(&b["reason"]),
                );
            }
        }
        out
    }
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Seconds from `then` to `now`, 0 if the clock went back.
fn age(now: SystemTime, then: SystemTime) -> f64 {
    now.duration_since(then).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().expect("endpoint")
    }

    fn page() -> (Page, SystemTime) {
        let p = Page::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let vip = ep("10.103.97.2:6443");
        let (a, b) = (ep("192.168.1.10:6443"), ep("192.168.1.11:6443"));
        p.record_set(vip, "cluster", 7, [a, b].into(), t0);
        p.record_health(
            a,
            "alive+ready".into(),
            "readiness answered HTTP 200".into(),
            t0,
        );
        p.record_health(b, "dead".into(), "connection refused".into(), t0);
        p.record_probe(
            a,
            true,
            Duration::from_millis(3),
            t0 + Duration::from_secs(5),
        );
        p.record_pass(
            true,
            vec![PassVs {
                vip,
                scheduler: "rr".into(),
                in_kernel: true,
                fail_open: false,
                backends: vec![
                    PassBackend {
                        address: a,
                        condition: "ready".into(),
                        in_service: true,
                        weight: Some(1),
                        active_conns: Some(4),
                        inactive_conns: Some(0),
                    },
                    PassBackend {
                        address: b,
                        condition: "dead".into(),
                        in_service: false,
                        weight: None,
                        active_conns: None,
                        inactive_conns: None,
                    },
                ],
            }],
            t0 + Duration::from_secs(6),
        );
        (p, t0)
    }

    #[test]
    fn the_page_says_what_the_loop_recorded() {
        let (p, t0) = page();
        let j = p.json(t0 + Duration::from_secs(10), true, true);
        assert_eq!(j["apiVersion"], API_VERSION);
        assert_eq!(j["kind"], KIND);
        assert_eq!(j["lastPass"]["ok"], true);
        let vs = &j["virtualServers"][0];
        assert_eq!(vs["discovery"]["source"], "cluster");
        assert_eq!(vs["discovery"]["generation"], 7);
        let a = &vs["backends"][0];
        assert_eq!(a["condition"], "ready");
        assert_eq!(a["reason"], "readiness answered HTTP 200");
        assert_eq!(a["sinceSeconds"], 10.0);
        assert_eq!(a["weight"], 1);
        assert_eq!(a["activeConns"], 4);
        assert_eq!(a["lastProbeOk"], true);
        let b = &vs["backends"][1];
        assert_eq!(b["condition"], "dead");
        assert!(b["weight"].is_null(), "not in the kernel");
        let text = p.text(t0 + Duration::from_secs(10), true, true);
        assert!(text.contains("10.103.97.2:6443 (rr)"), "{text}");
        assert!(text.contains("discovery: cluster (generation 7)"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("192.168.1.11:6443") && l.contains("connection refused")),
            "{text}"
        );
    }

    /// Every field of the page is in docs/operations.md's table and the
    /// table names no field the page lacks: the format cannot drift.
    #[test]
    fn the_page_format_is_documented() {
        let (p, t0) = page();
        apiserver_proxy_testkit::doc_schema::check(
            include_str!("../../../docs/operations.md"),
            "### The daemon's status page",
            &p.json(t0, true, true),
        )
        .unwrap_or_else(|e| panic!("docs/operations.md: {e}"));
    }

    #[test]
    fn a_backend_no_longer_served_is_forgotten() {
        let (p, t0) = page();
        p.record_pass(true, Vec::new(), t0);
        let j = p.json(t0, true, true);
        assert_eq!(j["virtualServers"].as_array().map(Vec::len), Some(0));
        p.with(|s| assert!(s.health.is_empty()));
    }
}
