//! Failover side by side: five load balancers, each in front of three fake
//! apiservers of its own, all running at once in one VM. Each trial crashes,
//! black-holes or drains one master of a trio while a client sends a new
//! TLS request through that trio's balancer every 300 ms and an idle
//! connection sits on the victim.
//!
//! Also here, because they reuse our daemon and its trio: convergence
//! (endpoint change in the fake API to the kernel rule) and footprint.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Result;
use apiserver_proxy_dataplane::Ipvs;
use apiserver_proxy_testkit::master::Master;
use rustls::pki_types::CertificateDer;

use crate::client::{self, Log, Req};
use crate::lb::{self, Daemon, Proc};
use crate::results::{self, SetupInfo, Timeline, Trial};
use crate::util::{self, Env, now, sleep_s};

pub const VIP_OURS: &str = "10.103.97.2:6443";
pub const OUR_INTERFACE: &str = "apiproxy0";
const VIP_BARE: &str = "10.103.97.3:6443";
const PORT: u16 = 6443;

const PERIOD: Duration = Duration::from_millis(300);
const CLIENT_TIMEOUT: f64 = 10.0;
const SLOW: f64 = 1.0;
const SETTLE: f64 = 2.0;
const CAP: f64 = 45.0;
const IDLE_CAP: f64 = 25.0;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

/// Three fake apiservers, each with its own certificate.
fn trio(env: &Env) -> (Vec<Arc<Master>>, Arc<Vec<CertificateDer<'static>>>) {
    let mut masters = Vec::new();
    let mut certs = Vec::new();
    for _ in 0..3 {
        let leaf = env.ca.apiserver_cert(&[]);
        certs.push(leaf.cert_der.clone());
        masters.push(Arc::new(Master::remote(leaf, false, PORT)));
    }
    (masters, Arc::new(certs))
}

fn publish(masters: &[Arc<Master>], ips: &[IpAddr]) {
    let eps: Vec<(IpAddr, Option<bool>)> = ips.iter().map(|ip| (*ip, Some(true))).collect();
    for m in masters {
        m.publish(eps.clone());
    }
}

/// Our daemon, its trio, and a fourth master for the convergence test.
#[derive(Debug)]
pub struct Ours {
    pub conf: OursConf,
    pub daemon: Daemon,
    pub masters: Vec<Arc<Master>>,
    pub certs: Arc<Vec<CertificateDer<'static>>>,
    pub extra: Arc<Master>,
    pub peers_rss: Vec<(String, u64)>,
}

/// Where one of our daemons runs: its dataplane, VIP, dummy interface,
/// metrics address and folder. Two can run side by side, one per dataplane.
#[derive(Debug, Clone, Copy)]
pub struct OursConf {
    pub dataplane: &'static str,
    pub vip: &'static str,
    pub interface: &'static str,
    pub metrics: &'static str,
    pub dir: &'static str,
}

/// The daemon every section measures: IPVS.
pub const OURS_IPVS: OursConf = OursConf {
    dataplane: "ipvs",
    vip: VIP_OURS,
    interface: OUR_INTERFACE,
    metrics: "127.0.0.1:18004",
    dir: "ours",
};

/// The same daemon on the nftables dataplane, beside it.
pub const OURS_NFT: OursConf = OursConf {
    dataplane: "nftables",
    vip: "10.103.97.4:6443",
    interface: "apiproxy1",
    metrics: "127.0.0.1:18005",
    dir: "ours-nft",
};

impl Ours {
    pub fn start(env: &Env) -> Result<Ours> {
        Ours::start_with(env, OURS_IPVS)
    }

    /// Our daemon as `conf` says, with three masters of its own.
    pub fn start_with(env: &Env, conf: OursConf) -> Result<Ours> {
        let (masters, certs) = trio(env);
        let extra = Arc::new(Master::remote(env.ca.apiserver_cert(&[]), false, PORT));
        let ips: Vec<IpAddr> = masters.iter().map(|m| m.addr().ip()).collect();
        publish(&masters, &ips);
        extra.publish(ips.iter().map(|ip| (*ip, Some(true))).collect());
        let daemon = Ours::spawn(env, conf, &masters, &[])?;
        let want: Vec<SocketAddr> = masters.iter().map(|m| m.addr()).collect();
        let t = lb::wait_in_rotation(addr(conf.vip), &want, Duration::from_secs(180))?;
        println!(
            "bench: our daemon ({}) has its three masters in the kernel after {t:.1} s",
            conf.dataplane
        );
        Ok(Ours {
            conf,
            daemon,
            masters,
            certs,
            extra,
            peers_rss: Vec::new(),
        })
    }

    fn spawn(env: &Env, conf: OursConf, masters: &[Arc<Master>], extra: &[&str]) -> Result<Daemon> {
        let mut args = vec!["--dataplane", conf.dataplane];
        args.extend_from_slice(extra);
        Daemon::spawn(
            &env.daemon,
            &env.path(conf.dir),
            addr(conf.vip),
            masters[0].addr(),
            &env.ca_file,
            conf.interface,
            addr(conf.metrics),
            &args,
        )
    }

    /// Stops our daemon and starts it again with `extra` flags; the rules
    /// stay in the kernel meanwhile. Returns once it answers `/healthz`.
    pub fn restart(&mut self, env: &Env, extra: &[&str]) -> Result<()> {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
        self.daemon = Ours::spawn(env, self.conf, &self.masters, extra)?;
        let t0 = now();
        while !util::http_get(self.daemon.metrics, "/healthz").contains("ok") {
            if now() - t0 > 60.0 {
                anyhow::bail!("our daemon did not answer /healthz within 60 s of a restart");
            }
            sleep_s(0.05);
        }
        Ok(())
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.masters.iter().map(|m| m.addr()).collect()
    }
}

struct Setup {
    info: SetupInfo,
    target: SocketAddr,
    masters: Vec<Arc<Master>>,
    certs: Arc<Vec<CertificateDer<'static>>>,
    kernel_vip: Option<SocketAddr>,
    log: Log,
    proc: Option<Proc>,
    ours: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Crash,
    BlackHole,
    Drain,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Crash => "crash",
            Scenario::BlackHole => "blackhole",
            Scenario::Drain => "drain",
        }
    }
}

pub fn run(env: &Env, ours: &mut Ours) -> Result<results::Failover> {
    println!(
        "bench: failover: starting haproxy, nginx and bare IPVS, each with its own three masters"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let rt = env.rt.handle().clone();
    let tls = env.tls.clone();
    let start_log = |target: SocketAddr, certs: &Arc<Vec<CertificateDer<'static>>>| {
        client::start_loop(
            &rt,
            target,
            tls.clone(),
            certs.clone(),
            PERIOD,
            Duration::from_secs_f64(CLIENT_TIMEOUT),
            stop.clone(),
        )
    };
    let mut setups = Vec::new();
    setups.push(Setup {
        info: SetupInfo {
            id: "ours".into(),
            label: "bcs-apiserver-proxy (ours)".into(),
            config: "defaults: persistent HTTP/2 connection, a PING after 200 ms without reading that its kernel must acknowledge (given up 100 ms after the first timed retransmission, then a SYN answered within 150 ms), /readyz every 5 s ±10 %, timeout 2 s, rise 2, fall 1".into(),
        },
        target: addr(VIP_OURS),
        masters: ours.masters.clone(),
        certs: ours.certs.clone(),
        kernel_vip: Some(addr(VIP_OURS)),
        log: start_log(addr(VIP_OURS), &ours.certs),
        proc: None,
        ours: true,
    });
    // The same daemon on the nftables dataplane, with masters of its own.
    let nft = Ours::start_with(env, OURS_NFT)?;
    let nft_vip = addr(OURS_NFT.vip);
    setups.push(Setup {
        info: SetupInfo {
            id: "ours-nft".into(),
            label: "bcs-apiserver-proxy (ours), nftables dataplane".into(),
            config: "the same defaults, dataplane: nftables".into(),
        },
        target: nft_vip,
        masters: nft.masters.clone(),
        certs: nft.certs.clone(),
        kernel_vip: Some(nft_vip),
        log: start_log(nft_vip, &nft.certs),
        proc: None,
        ours: true,
    });
    let peers: [(&str, &str, &str, &str); 4] = [
        (
            "haproxy-seed",
            "haproxy, seed document timing",
            "127.0.0.1:7001",
            "inter 10s downinter 5s fall 2 rise 2",
        ),
        (
            "haproxy-kubeadm",
            "haproxy, kubeadm guide timing",
            "127.0.0.1:7002",
            "inter 2s fall 3 rise 2",
        ),
        (
            "nginx",
            "nginx stream, passive checks",
            "127.0.0.1:7003",
            "",
        ),
        ("bare", "bare IPVS, no health checks", VIP_BARE, ""),
    ];
    for (id, label, listen, check) in peers {
        let (masters, certs) = trio(env);
        let backends: Vec<SocketAddr> = masters.iter().map(|m| m.addr()).collect();
        let listen = addr(listen);
        let (proc, config) = match id {
            "nginx" => (
                Some(lb::nginx(env.dir.path(), id, listen, &backends)?),
                "round robin, max_fails=3 fail_timeout=30s, proxy_connect_timeout 1s, proxy_timeout 30s".to_string(),
            ),
            "bare" => {
                lb::bare_ipvs("bare0", listen, &backends)?;
                (None, "rr, masquerade, three destinations, nothing checks them".to_string())
            }
            _ => (
                Some(lb::haproxy(env.dir.path(), id, listen, &backends, check)?),
                format!("mode tcp, roundrobin, option httpchk GET /readyz over TLS, {check}, timeout connect 5s, client/server 20s, check 10s, retries 1, option redispatch"),
            ),
        };
        setups.push(Setup {
            info: SetupInfo {
                id: id.into(),
                label: label.into(),
                config,
            },
            target: listen,
            log: start_log(listen, &certs),
            masters,
            certs,
            kernel_vip: None,
            proc,
            ours: false,
        });
    }
    for s in &setups {
        let ok = wait_ready(&s.log, now(), 90.0);
        println!(
            "bench: failover: {} {}",
            s.info.id,
            if ok {
                "serves from all three masters"
            } else {
                "NOT READY after 90 s"
            }
        );
    }

    let mut out = results::Failover {
        setups: setups.iter().map(|s| s.info.clone()).collect(),
        client_period_ms: PERIOD.as_millis() as u64,
        client_timeout_s: CLIENT_TIMEOUT,
        slow_threshold_s: SLOW,
        settle_s: SETTLE,
        cap_s: CAP,
        idle_cap_s: IDLE_CAP,
        ..Default::default()
    };
    for scenario in [Scenario::Crash, Scenario::BlackHole, Scenario::Drain] {
        let budget = match (env.quick, scenario) {
            (true, _) => 60.0,
            (false, Scenario::Crash) => 180.0,
            (false, Scenario::BlackHole) => 200.0,
            (false, Scenario::Drain) => 220.0,
        };
        out.budgets.push((scenario.name().into(), budget));
        println!(
            "bench: failover: scenario {} (budget {budget:.0} s for the peers)",
            scenario.name()
        );
        let t_scn = now();
        let per_setup: Vec<Vec<(Trial, Vec<Req>, f64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = setups
                .iter()
                .map(|s| scope.spawn(move || trials(env, s, scenario, budget)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        out.scenario_wall_s
            .push((scenario.name().into(), now() - t_scn));
        for trials in per_setup {
            if let Some(median) = median_trial(&trials) {
                let (t, reqs, t0) = &trials[median];
                out.timelines.push(Timeline {
                    setup: t.setup.clone(),
                    scenario: t.scenario.clone(),
                    trial: t.n,
                    victim: t.victim,
                    failover_s: t.failover_s,
                    kernel_s: t.kernel_s,
                    idle_stuck_s: t.idle_stuck_s,
                    requests: reqs
                        .iter()
                        .map(|r| (r.start - t0, r.latency, r.backend.map_or(-1, |b| b as i32)))
                        .collect(),
                });
            }
            out.trials.extend(trials.into_iter().map(|(t, _, _)| t));
        }
    }
    ours.peers_rss = setups
        .iter()
        .filter_map(|s| s.proc.as_ref().map(|p| (s.info.id.clone(), p.rss_kib())))
        .collect();
    stop.store(true, Ordering::Relaxed);
    sleep_s(0.5);
    for s in &mut setups {
        s.proc = None;
    }
    if let Ok(ipvs) = Ipvs::connect() {
        let _ = ipvs.del_service(&apiserver_proxy_dataplane::ServiceKey::tcp(addr(VIP_BARE)));
    }
    Ok(out)
}

fn median_trial(trials: &[(Trial, Vec<Req>, f64)]) -> Option<usize> {
    if trials.is_empty() {
        return None;
    }
    let mut idx: Vec<usize> = (0..trials.len()).collect();
    idx.sort_by(|a, b| {
        let fa = trials[*a].0.failover_s.unwrap_or(f64::INFINITY);
        let fb = trials[*b].0.failover_s.unwrap_or(f64::INFINITY);
        fa.total_cmp(&fb)
    });
    Some(idx[(idx.len() - 1) / 2])
}

/// True once the last nine finished requests started after `since` all
/// succeeded and came from all three masters.
fn wait_ready(log: &Log, since: f64, limit: f64) -> bool {
    let t0 = now();
    while now() - t0 < limit {
        let reqs = client::snapshot(log);
        let mut done: Vec<&Req> = reqs.iter().filter(|r| r.start >= since && r.done).collect();
        done.sort_by(|a, b| a.start.total_cmp(&b.start));
        let last: Vec<&&Req> = done.iter().rev().take(9).collect();
        if last.len() == 9 && last.iter().all(|r| r.backend.is_some()) {
            let seen: std::collections::BTreeSet<usize> =
                last.iter().filter_map(|r| r.backend).collect();
            if seen.len() == 3 {
                return true;
            }
        }
        sleep_s(0.2);
    }
    let reqs = client::snapshot(log);
    let last: Vec<String> = reqs
        .iter()
        .rev()
        .filter(|r| r.done)
        .take(9)
        .map(|r| format!("{:?}@{:.2}s", r.backend, r.latency))
        .collect();
    println!("bench: not ready: last requests {last:?}");
    false
}

fn inject(scenario: Scenario, m: &Master) {
    match scenario {
        Scenario::Crash => m.stop(),
        Scenario::BlackHole => m.ns().black_hole(),
        Scenario::Drain => m.set_ready(false),
    }
}

fn restore(scenario: Scenario, m: &Master) {
    match scenario {
        Scenario::Crash => m.start(),
        Scenario::BlackHole => m.ns().restore(),
        Scenario::Drain => m.set_ready(true),
    }
}

/// Watches the kernel for `victim` leaving rotation of `vip`; run-clock time.
fn kernel_watch(vip: SocketAddr, victim: SocketAddr, until: f64) -> mpsc::Receiver<Option<f64>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut view = lb::KernelView::open();
        while now() < until {
            let d = view.dests(vip);
            if !d.iter().any(|(a, w)| *a == victim && *w > 0) {
                let _ = tx.send(Some(now()));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = tx.send(None);
    });
    rx
}

/// One set-up's trials of one scenario: (trial, requests around it, failure time).
fn trials(env: &Env, s: &Setup, scenario: Scenario, budget: f64) -> Vec<(Trial, Vec<Req>, f64)> {
    let start = now();
    let mut longest: f64 = 0.0;
    let mut out = Vec::new();
    let mut ready = wait_ready(&s.log, now(), 90.0);
    for n in 0..env.trials {
        let elapsed = now() - start;
        if !s.ours && n > 0 && elapsed + longest > budget {
            break;
        }
        let t_begin = now();
        let victim = 1 + n % 2;
        let m = &s.masters[victim];
        let idle = if scenario == Scenario::Drain {
            None
        } else {
            client::idle_on(
                s.target,
                &env.tls,
                &s.certs,
                victim,
                Duration::from_secs_f64(IDLE_CAP),
            )
        };
        // "Slow" is relative to this set-up's own latency just before: at
        // least SLOW, and at least three times the median of the last 5 s.
        let base: Vec<f64> = client::snapshot(&s.log)
            .iter()
            .filter(|r| r.done && r.backend.is_some() && r.start >= now() - 5.0)
            .map(|r| r.latency)
            .collect();
        let slow = util::percentile(&base, 50.0).map_or(SLOW, |m| (3.0 * m).max(SLOW));
        let before = now();
        inject(scenario, m);
        let t0 = now();
        let kernel = s
            .kernel_vip
            .map(|vip| kernel_watch(vip, m.addr(), t0 + CAP));
        let mut idle_end: Option<Option<f64>> = if idle.is_some() { None } else { Some(None) };
        let (end, last_bad, clean) = loop {
            sleep_s(0.1);
            let t = now();
            if let (Some(rx), None) = (&idle, &idle_end)
                && let Ok(v) = rx.try_recv()
            {
                idle_end = Some(v);
            }
            let reqs = client::snapshot(&s.log);
            let after: Vec<&Req> = reqs.iter().filter(|r| r.start >= t0).collect();
            let p = after
                .iter()
                .filter(|r| !r.done)
                .map(|r| r.start)
                .fold(t, f64::min);
            let last_bad = after
                .iter()
                .filter(|r| r.start < p && is_bad(r, victim, slow))
                .map(|r| r.start)
                .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
            let l = last_bad.unwrap_or(t0);
            if p - l >= SETTLE && idle_end.is_some() {
                break (p, last_bad, true);
            }
            if t - t0 >= CAP {
                if let (Some(rx), None) = (&idle, &idle_end) {
                    idle_end = Some(
                        rx.recv_timeout(Duration::from_secs_f64(IDLE_CAP))
                            .ok()
                            .flatten(),
                    );
                }
                break (p, last_bad, p - l >= SETTLE);
            }
        };
        restore(scenario, m);
        let reqs = client::snapshot(&s.log);
        let window: Vec<&Req> = reqs
            .iter()
            .filter(|r| r.start >= t0 && r.start < end && r.done)
            .collect();
        let kernel_s = kernel
            .and_then(|rx| {
                rx.recv_timeout(Duration::from_secs_f64(CAP + 5.0))
                    .ok()
                    .flatten()
            })
            .map(|k| k - t0);
        let idle_stuck_s = match idle_end {
            Some(Some(t)) => Some((t - t0).max(0.0)),
            _ => None,
        };
        let trial = Trial {
            setup: s.info.id.clone(),
            scenario: scenario.name().into(),
            n,
            victim,
            failover_s: clean.then(|| last_bad.map_or(0.0, |l| l - t0)),
            failed: window.iter().filter(|r| r.backend.is_none()).count(),
            slow: window
                .iter()
                .filter(|r| r.backend.is_some() && r.latency >= slow)
                .count(),
            slow_s: slow,
            to_victim: window.iter().filter(|r| r.backend == Some(victim)).count(),
            requests: window.len(),
            idle_stuck_s,
            idle_measured: idle.is_some(),
            kernel_s,
            inject_s: t0 - before,
            ready_before: ready,
        };
        println!(
            "bench: {:<16} {:<9} #{n:<2} failover {:>8} failed {:>3} idle {:>8} kernel {:>8}",
            s.info.id,
            scenario.name(),
            fmt_opt(trial.failover_s),
            trial.failed,
            if trial.idle_measured {
                fmt_opt(trial.idle_stuck_s)
            } else {
                "-".into()
            },
            fmt_opt(trial.kernel_s)
        );
        let around: Vec<Req> = reqs
            .iter()
            .filter(|r| r.start >= t0 - 2.0 && r.start < end + 1.0 && r.done)
            .cloned()
            .collect();
        out.push((trial, around, t0));
        ready = wait_ready(&s.log, now(), 90.0);
        longest = longest.max(now() - t_begin);
    }
    out
}

fn is_bad(r: &Req, victim: usize, slow: f64) -> bool {
    r.done && (r.backend.is_none() || r.backend == Some(victim) || r.latency >= slow)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("> cap".into(), |v| format!("{v:.3}s"))
}

/// Endpoint change in the fake API to the kernel rule, both ways.
pub fn convergence(env: &Env, ours: &mut Ours) -> Result<results::Convergence> {
    println!("bench: convergence");
    let vip = addr(VIP_OURS);
    let ipvs = Ipvs::connect()?;
    let three: Vec<IpAddr> = ours.masters.iter().map(|m| m.addr().ip()).collect();
    let mut four = three.clone();
    four.push(ours.extra.addr().ip());
    let extra = ours.extra.addr();
    let n = if env.quick { 3 } else { 10 };
    let mut out = results::Convergence::default();
    let wait = |want_in: bool| -> Option<f64> {
        let t0 = now();
        while now() - t0 < 30.0 {
            let d = lb::dests(&ipvs, vip);
            let in_rotation = d.iter().any(|(a, w)| *a == extra && *w > 0);
            if in_rotation == want_in {
                return Some(now() - t0);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    };
    for _ in 0..n {
        // The daemon watches the API through master 0: publish there first.
        let all = [ours.masters.clone(), vec![ours.extra.clone()]].concat();
        publish(&all, &four);
        if let Some(t) = wait(true) {
            out.add_s.push(t);
        }
        sleep_s(1.0);
        publish(&all, &three);
        if let Some(t) = wait(false) {
            out.remove_s.push(t);
        }
        sleep_s(1.0);
    }
    println!(
        "bench: convergence add {:?} remove {:?}",
        out.add_s, out.remove_s
    );
    Ok(out)
}

/// Our daemon's memory and CPU idle, and while masters crash and the API changes.
pub fn footprint(env: &Env, ours: &mut Ours) -> Result<results::Footprint> {
    println!("bench: footprint");
    let pid = ours.daemon.pid();
    let window = if env.quick { 10.0 } else { 30.0 };
    sleep_s(2.0);
    let (idle_cpu, idle_rss) = util::watch_process(pid, window, |_| {});
    let three: Vec<IpAddr> = ours.masters.iter().map(|m| m.addr().ip()).collect();
    let mut four = three.clone();
    four.push(ours.extra.addr().ip());
    let all = [ours.masters.clone(), vec![ours.extra.clone()]].concat();
    let mut events = 0usize;
    let mut next = 0.0;
    let victim = ours.masters[2].clone();
    let mut stopped = false;
    let (churn_cpu, churn_rss) = util::watch_process(pid, window, |t| {
        if t < next {
            return;
        }
        next += 1.0;
        match events % 4 {
            0 => {
                victim.stop();
                stopped = true;
            }
            1 => publish(&all, &four),
            2 => {
                victim.start();
                stopped = false;
            }
            _ => publish(&all, &three),
        }
        events += 1;
    });
    if stopped {
        victim.start();
    }
    publish(&all, &three);
    let _ = lb::wait_in_rotation(addr(VIP_OURS), &ours.addrs(), Duration::from_secs(60));
    Ok(results::Footprint {
        idle_window_s: window,
        idle_rss_kib: idle_rss,
        idle_cpu_pct: idle_cpu,
        churn_window_s: window,
        churn_events: events,
        churn_rss_kib: churn_rss,
        churn_cpu_pct: churn_cpu,
        peers_rss_kib: ours.peers_rss.clone(),
    })
}
