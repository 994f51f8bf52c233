//! Measures how long the checker takes to report a failure, with the
//! default configuration, against real servers in network namespaces.
//!
//! ```text
//! sudo cargo run --release -p apiserver-proxy-health --example failover_figures
//! ```
//!
//! Needs root (network namespaces, nft). Prints p50/p99 of the time from
//! the event (kill, black hole, `/readyz` turning 500) to the reported state
//! change, over `TRIALS` trials each (default 20). `HEARTBEAT_MS` and
//! `ACK_TIMEOUT_MS` replace the heartbeat's defaults.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apiserver_proxy_health::{Checker, HealthConfig, HealthEvent, State};
use apiserver_proxy_testkit::netns::Netns;
use apiserver_proxy_types::Endpoint;
use rand::RngExt as _;
use support::{Pki, in_netns, start_in};
use tokio::sync::mpsc::UnboundedReceiver;

fn main() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    in_netns(move || async move {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        // The defaults, but trusting the test CA.
        let mut config = HealthConfig::default();
        config.tls.ca_file = Some(pki.ca_file());
        // Other heartbeat settings, to weigh the trade-off (milliseconds).
        let ms = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        };
        if let Some(d) = ms("HEARTBEAT_MS") {
            config.heartbeat.interval = d;
        }
        if let Some(d) = ms("ACK_TIMEOUT_MS") {
            config.heartbeat.ack_timeout = d;
        }
        println!(
            "defaults: interval {:?} ± {:?}, timeout {:?}, connect_timeout {:?}, rise {}, fall {}, keepalive {:?}, heartbeat {:?}",
            config.interval,
            config.jitter,
            config.timeout,
            config.connect_timeout,
            config.rise,
            config.fall,
            config.keepalive,
            config.heartbeat
        );
        println!("trials per scenario: {trials}\n");
        let checker = Checker::new(config.clone()).expect("checker");
        let mut rx = checker.subscribe();

        crash(&ns, &pki, &checker, &mut rx, trials).await;
        black_hole(&ns, &pki, &checker, &mut rx, trials).await;
        readyz(&ns, &pki, &checker, &mut rx, trials, config.interval).await;
    });
}

async fn wait_for(
    rx: &mut UnboundedReceiver<HealthEvent>,
    backend: Endpoint,
    state: State,
) -> HealthEvent {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(ev)) if ev.backend == backend && ev.state == state => return ev,
            Ok(Some(_)) => continue,
            _ => panic!("{backend}: no {state} within 60 s"),
        }
    }
}

fn random_phase(max: Duration) -> Duration {
    max.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// Kill with reset: every connection of the server is reset and its
/// listener closed, as when the process dies.
async fn crash(
    ns: &Netns,
    pki: &Pki,
    checker: &Checker,
    rx: &mut UnboundedReceiver<HealthEvent>,
    trials: usize,
) {
    let mut samples = Vec::new();
    let mut reasons = BTreeMap::new();
    for i in 0..trials {
        let backend = Endpoint::new(ns.ip(false), 10_000 + i as u16);
        let server = start_in(ns, backend.0, pki.server());
        checker.watch(backend);
        wait_for(rx, backend, State::Ready).await;
        tokio::time::sleep(random_phase(Duration::from_secs(1))).await;
        let t0 = Instant::now();
        server.kill();
        let ev = wait_for(rx, backend, State::Dead).await;
        samples.push(ev.at.duration_since(t0));
        *reasons.entry(ev.reason.to_string()).or_insert(0) += 1;
        checker.unwatch(backend);
    }
    report("crash with reset -> Dead", "300ms", samples, reasons);
}

/// Black hole: every packet to and from the server's host is dropped.
async fn black_hole(
    ns: &Netns,
    pki: &Pki,
    checker: &Checker,
    rx: &mut UnboundedReceiver<HealthEvent>,
    trials: usize,
) {
    let mut samples = Vec::new();
    let mut reasons = BTreeMap::new();
    for i in 0..trials {
        let backend = Endpoint::new(ns.ip(false), 11_000 + i as u16);
        let server = start_in(ns, backend.0, pki.server());
        checker.watch(backend);
        wait_for(rx, backend, State::Ready).await;
        // Any phase of the readiness interval.
        tokio::time::sleep(random_phase(checker.config().interval)).await;
        let t0 = Instant::now();
        black_hole_both_ways(ns);
        let ev = wait_for(rx, backend, State::Dead).await;
        samples.push(ev.at.duration_since(t0));
        *reasons.entry(ev.reason.to_string()).or_insert(0) += 1;
        checker.unwatch(backend);
        ns.restore();
        server.kill();
    }
    report("black hole -> Dead", "1s", samples, reasons);
}

/// Drops every packet into and out of the namespace at once, as a host that
/// loses power or a full partition does. (`Netns::black_hole` drops only
/// inbound packets: the server can then still retransmit an answer whose ACK
/// was lost, and each such packet rightly tells our kernel that the host is
/// alive, delaying keepalive by seconds.) `Netns::restore` removes it.
fn black_hole_both_ways(ns: &Netns) {
    ns.exec_ok(
        "nft",
        &["add table inet apxhole; \
             add chain inet apxhole in { type filter hook input priority -100; policy drop; }; \
             add chain inet apxhole out { type filter hook output priority -100; policy drop; }"],
    );
}

/// `/readyz` turns 500. Trials run side by side, each backend at its own
/// random phase.
async fn readyz(
    ns: &Netns,
    pki: &Pki,
    checker: &Checker,
    rx: &mut UnboundedReceiver<HealthEvent>,
    trials: usize,
    interval: Duration,
) {
    let mut servers = Vec::new();
    for i in 0..trials {
        let backend = Endpoint::new(ns.ip(false), 12_000 + i as u16);
        servers.push((
            backend,
            std::sync::Arc::new(start_in(ns, backend.0, pki.server())),
        ));
        checker.watch(backend);
    }
    let mut ready = std::collections::BTreeSet::new();
    while ready.len() < servers.len() {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(ev)) if ev.state == State::Ready => {
                ready.insert(ev.backend);
            }
            Ok(Some(_)) => {}
            _ => panic!("readyz: not all backends became ready"),
        }
    }
    let mut flips = tokio::task::JoinSet::new();
    for (backend, server) in &servers {
        let (backend, server) = (*backend, server.clone());
        flips.spawn(async move {
            tokio::time::sleep(random_phase(interval)).await;
            let t0 = Instant::now();
            server.set_readyz(500);
            (backend, t0)
        });
    }
    let mut started = BTreeMap::new();
    while let Some(r) = flips.join_next().await {
        let (b, t0) = r.expect("flip");
        started.insert(b, t0);
    }
    let mut samples = Vec::new();
    let mut reasons = BTreeMap::new();
    while samples.len() < trials {
        let ev = match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(ev)) => ev,
            _ => panic!("readyz: missing NotReady events"),
        };
        if ev.state != State::NotReady {
            continue;
        }
        let Some(t0) = started.get(&ev.backend) else {
            continue;
        };
        samples.push(ev.at.duration_since(*t0));
        *reasons.entry(ev.reason.to_string()).or_insert(0) += 1;
    }
    for (b, _) in &servers {
        checker.unwatch(*b);
    }
    let goal = format!("{:?}", interval + Duration::from_secs(1));
    report("/readyz 200 -> 500 -> NotReady", &goal, samples, reasons);
}

fn report(name: &str, goal: &str, mut samples: Vec<Duration>, reasons: BTreeMap<String, u32>) {
    samples.sort();
    let n = samples.len();
    let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{name}: n={n} min {} p50 {} p99 {} max {} (goal p99 <= {goal})",
        ms(samples[0]),
        ms(rank(0.50)),
        ms(rank(0.99)),
        ms(samples[n - 1])
    );
    for (reason, count) in reasons {
        println!("    {count:>3} x {reason}");
    }
    println!();
}
