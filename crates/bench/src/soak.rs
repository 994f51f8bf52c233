//! False alarms and cost: our daemon and its three masters left alone for a
//! long time under a lossy, jittery network and apiserver stalls, with a
//! client going through the VIP. Every time a healthy master leaves
//! rotation is a false alarm; the levels of loss and stall at which they
//! begin are found by raising each until they do. Before that, the traffic
//! the daemon sends each master while idle, with the heartbeat and
//! without it: what liveness costs the apiservers.
//!
//! The network is `netem` on both ends of each master's veth (both
//! directions). A stall stops the fake apiserver's only thread, as SIGSTOP
//! stops a process: its kernel still acknowledges, nothing is answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use apiserver_proxy_dataplane::Ipvs;

use crate::client;
use crate::failover::{Ours, VIP_OURS, addr};
use crate::lb;
use crate::results::{self, Cost, SoakPhase};
use crate::util::{Env, now, sleep_s};

/// The soak's network: the 1 % loss, 2 ms ± 1 ms delay.
const NETEM: &str = "loss 1% delay 2ms 1ms";
/// Stalls during the soak: this long, one every `STALL_EVERY` seconds.
const STALL: Duration = Duration::from_millis(500);
const STALL_EVERY: f64 = 10.0;
/// Raised until false alarms begin.
const LOSSES: [u32; 4] = [3, 5, 10, 20];
const STALLS_MS: [u64; 4] = [1000, 2000, 3000, 5000];

/// Masters leaving rotation (weight 0 or deleted), as seen in the kernel
/// every 10 ms: (run-clock time, master).
struct Removals {
    events: Arc<Mutex<Vec<(f64, SocketAddr)>>>,
    stop: Arc<AtomicBool>,
}

impl Removals {
    fn start(vip: SocketAddr, masters: Vec<SocketAddr>) -> Result<Removals> {
        let ipvs = Ipvs::connect()?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (events.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut serving: BTreeMap<SocketAddr, bool> =
                masters.iter().map(|m| (*m, true)).collect();
            while !s.load(Ordering::Relaxed) {
                let now_in: Vec<SocketAddr> = lb::dests(&ipvs, vip)
                    .into_iter()
                    .filter(|(_, w)| *w > 0)
                    .map(|(a, _)| a)
                    .collect();
                for (m, was) in serving.iter_mut() {
                    let is = now_in.contains(m);
                    if *was && !is {
                        e.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((now(), *m));
                    }
                    *was = is;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Ok(Removals { events, stop })
    }

    fn between(&self, from: f64, to: f64) -> usize {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .count()
    }
}

impl Drop for Removals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn run(env: &Env, ours: &mut Ours) -> Result<results::Soak> {
    println!("bench: soak");
    let _ = std::process::Command::new("modprobe")
        .arg("sch_netem")
        .status();
    let vip = addr(VIP_OURS);
    let window = if env.quick { 10.0 } else { 30.0 };

    // Cost: the daemon alone (no client), heartbeat on, then off.
    let mut cost = vec![measure_cost(ours, "heartbeat on (default)", window)?];
    let off = env.path("soak").join("heartbeat-off.yaml");
    std::fs::create_dir_all(env.path("soak"))?;
    std::fs::write(&off, "health:\n  heartbeatInterval: 0s\n")?;
    let off_flag = off.display().to_string();
    ours.restart(env, &["--config", &off_flag])?;
    cost.push(measure_cost(ours, "heartbeat off", window)?);
    ours.restart(env, &[])?;
    settle(ours)?;

    let removals = Removals::start(vip, ours.addrs())?;
    let stop = Arc::new(AtomicBool::new(false));
    let log = client::start_loop(
        env.rt.handle(),
        vip,
        env.tls.clone(),
        ours.certs.clone(),
        Duration::from_millis(300),
        Duration::from_secs(10),
        stop.clone(),
    );
    let phase = |label: String, netem: &str, stall_ms: u64, stalls: usize, t0: f64| {
        let t1 = now();
        let reqs: Vec<client::Req> = client::snapshot(&log)
            .into_iter()
            .filter(|r| r.start >= t0 && r.start < t1 && r.done)
            .collect();
        let p = SoakPhase {
            label,
            netem: netem.to_string(),
            stall_ms,
            stalls,
            seconds: t1 - t0,
            removals: removals.between(t0, t1),
            requests: reqs.len(),
            failed: reqs.iter().filter(|r| r.backend.is_none()).count(),
        };
        println!(
            "bench: soak: {}: {} removals, {} of {} requests failed",
            p.label, p.removals, p.failed, p.requests
        );
        p
    };

    // The soak: 1 % loss everywhere, a 500 ms stall every 10 s.
    let soak_s = if env.quick { 60.0 } else { 600.0 };
    for m in &ours.masters {
        m.ns().netem(NETEM);
    }
    let t0 = now();
    let mut stalls = 0;
    while now() - t0 < soak_s {
        sleep_s(STALL_EVERY);
        ours.masters[stalls % ours.masters.len()].freeze(STALL);
        stalls += 1;
    }
    let soak = phase(
        format!("{:.0} min soak", soak_s / 60.0),
        NETEM,
        STALL.as_millis() as u64,
        stalls,
        t0,
    );

    // Loss raised until masters are removed.
    let level_s = if env.quick { 15.0 } else { 60.0 };
    let mut losses = Vec::new();
    for loss in LOSSES {
        let netem = format!("loss {loss}% delay 2ms 1ms");
        for m in &ours.masters {
            m.ns().netem(&netem);
        }
        let t0 = now();
        sleep_s(level_s);
        losses.push(phase(format!("{loss} % loss"), &netem, 0, 0, t0));
        for m in &ours.masters {
            m.ns().clear_netem();
        }
        // A removed master comes back before the next level.
        settle(ours)?;
    }

    // Stalls lengthened until masters are removed: each master in turn,
    // with time to come back between them.
    let mut stall_levels = Vec::new();
    let rounds = if env.quick { 1 } else { 3 };
    for ms in STALLS_MS {
        let t0 = now();
        let mut n = 0;
        for _ in 0..rounds {
            for m in &ours.masters {
                m.freeze(Duration::from_millis(ms));
                n += 1;
                sleep_s(ms as f64 / 1000.0 + 2.0);
                settle(ours)?;
            }
        }
        stall_levels.push(phase(format!("{ms} ms stalls"), "", ms, n, t0));
    }
    stop.store(true, Ordering::Relaxed);
    Ok(results::Soak {
        heartbeat: "a PING after 200 ms without reading, given up 100 ms after the kernel's first timed retransmission, then a confirming SYN answered within 150 ms".into(),
        cost,
        soak,
        losses,
        stalls: stall_levels,
    })
}

/// Waits until all three masters are in rotation again.
fn settle(ours: &Ours) -> Result<()> {
    lb::wait_in_rotation(addr(VIP_OURS), &ours.addrs(), Duration::from_secs(60))?;
    Ok(())
}

/// What the daemon sends each master over `window` seconds while nothing
/// else goes on: packets and bytes on the master's link (the node end's
/// transmit counters: probes, PINGs, acknowledgements, and the discovery
/// watch on the one master it rides on) and `/readyz` requests received.
fn measure_cost(ours: &Ours, label: &str, window: f64) -> Result<Cost> {
    settle(ours)?;
    sleep_s(2.0);
    // Per master: packets and bytes sent, `/readyz` requests received.
    let read = || -> Result<Vec<[f64; 3]>> {
        ours.masters
            .iter()
            .map(|m| {
                let (packets, bytes) = m.ns().sent_to().with_context(|| {
                    format!(
                        "no transmit counters for {} in /proc/net/dev",
                        m.ns().host_if
                    )
                })?;
                let readyz = m.count_requests("GET /readyz");
                Ok([packets as f64, bytes as f64, readyz as f64])
            })
            .collect()
    };
    let before = read()?;
    let t0 = now();
    sleep_s(window);
    let after = read()?;
    let secs = now() - t0;
    let rate = |i: usize| -> Vec<f64> {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a[i] - b[i]) / secs)
            .collect()
    };
    let cost = Cost {
        label: label.to_string(),
        window_s: secs,
        packets_per_s: rate(0),
        bytes_per_s: rate(1),
        readyz_per_s: rate(2),
    };
    println!(
        "bench: soak: cost, {label}: packets/s per master {:?}, bytes/s {:?}, /readyz/s {:?}",
        cost.packets_per_s, cost.bytes_per_s, cost.readyz_per_s
    );
    Ok(cost)
}
