//! Scale: a reconcile pass with 10,000 foreign IPVS services in the table
//! (and on the nftables dataplane, 10,000 rules in a foreign table), one
//! virtual server with as many backends as the daemon accepts (16), and the
//! readiness load 1,000 nodes put on one apiserver.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, Result};
use apiserver_proxy_dataplane::{Ipvs, ServiceKey, ServiceSpec};
use apiserver_proxy_health::{Checker, HealthConfig, State};
use apiserver_proxy_testkit::apiserver::{FakeApiServer, kubernetes_slice};
use apiserver_proxy_testkit::netns::Netns;
use apiserver_proxy_types::Endpoint;

use crate::failover::{OURS_NFT, Ours};
use crate::lb::{self, Daemon};
use crate::results::Scale;
use crate::util::{self, Env, now, sleep_s};

const FOREIGN: usize = 10_000;
/// The most apiservers the daemon accepts from the cluster for one virtual
/// server (discovery's `DEFAULT_MAX_BACKENDS`: a longer answer is refused
/// as hostile and the current set kept).
const BACKENDS: usize = 16;
const NODES: usize = 1_000;

fn foreign_key(i: usize) -> ServiceKey {
    let ip = Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8);
    ServiceKey::tcp(SocketAddr::new(IpAddr::V4(ip), 80))
}

fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, (10 + i) as u8)
}

pub fn run(env: &Env, ours: &mut Ours) -> Result<Scale> {
    let mut out = Scale {
        foreign_services: FOREIGN,
        backends: BACKENDS,
        nodes: NODES,
        probe_interval_s: HealthConfig::default().interval.as_secs_f64(),
        ..Scale::default()
    };
    out.probe_rps_computed = NODES as f64 / out.probe_interval_s;
    let window = if env.quick { 8.0 } else { 15.0 };

    // 1. Foreign services: our pass reads only our own service.
    println!("bench: scale: reconcile with {FOREIGN} foreign services");
    let metrics = ours.daemon.metrics;
    out.reconcile_mean_ms_before = passes(metrics, window).0;
    let ipvs = Ipvs::connect()?;
    let t = now();
    for i in 0..FOREIGN {
        ipvs.new_service(&ServiceSpec::new(foreign_key(i), "rr"))
            .with_context(|| format!("create foreign service {i}"))?;
    }
    out.create_foreign_s = now() - t;
    sleep_s(2.0);
    (
        out.reconcile_mean_ms_with_foreign,
        out.reconcile_max_bucket_ms_with_foreign,
        out.reconcile_passes_with_foreign,
    ) = passes(metrics, window);
    let mut dumps = Vec::new();
    for _ in 0..3 {
        let t = now();
        let n = ipvs.services().map(|s| s.len()).unwrap_or(0);
        if n >= FOREIGN {
            dumps.push((now() - t) * 1000.0);
        }
    }
    out.full_dump_ms = util::percentile(&dumps, 50.0);
    for i in 0..FOREIGN {
        let _ = ipvs.del_service(&foreign_key(i));
    }
    println!(
        "bench: scale: reconcile mean {:?} ms before, {:?} ms with {FOREIGN} foreign; full dump {:?} ms",
        out.reconcile_mean_ms_before, out.reconcile_mean_ms_with_foreign, out.full_dump_ms
    );

    // 1b. The same on the nftables dataplane.
    foreign_nft(env, window, &mut out)?;

    // 2. One virtual server with the most backends the daemon accepts, and
    // 3. 1,000 nodes' probes: fake apiservers on 17 addresses of one
    // namespace.
    println!("bench: scale: {BACKENDS} backends");
    let ns = Netns::new();
    let mut batch = String::new();
    for i in 0..=BACKENDS {
        batch.push_str(&format!("addr add {}/32 dev lo\n", backend_ip(i)));
    }
    let batch_file = env.path("addrs.batch");
    std::fs::write(&batch_file, batch)?;
    util::sh(
        "ip",
        &["-n", ns.name(), "-batch", &batch_file.to_string_lossy()],
    )?;
    util::sh(
        "ip",
        &["route", "add", "10.78.0.0/24", "via", &ns.ipv4.to_string()],
    )?;
    let leaf = env.ca.apiserver_cert(&[]);
    let (tx, rx) = mpsc::channel::<Arc<FakeApiServer>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut servers = Vec::new();
            for i in 0..=BACKENDS {
                let s = FakeApiServer::tls(SocketAddr::new(IpAddr::V4(backend_ip(i)), 6443), &leaf)
                    .await
                    .expect("serve");
                servers.push(Arc::new(s));
            }
            let eps: Vec<(IpAddr, Option<bool>)> = (0..BACKENDS)
                .map(|i| (IpAddr::V4(backend_ip(i)), Some(true)))
                .collect();
            servers[0].apply_slice(kubernetes_slice("kubernetes", "IPv4", 6443, &eps));
            let _ = tx.send(servers[0].clone());
            let _ = tx.send(servers[BACKENDS].clone());
            let _ = stop_rx.await;
        });
    });
    let _first = rx.recv_timeout(Duration::from_secs(120))?;
    let prober_target = rx.recv_timeout(Duration::from_secs(120))?;
    // Its own VIP, interface and metrics port: the nftables daemons of
    // the other sections use 10.103.97.4 and .5, and their rules stay in
    // the kernel after they stop.
    let vip: SocketAddr = "10.103.97.6:6443".parse()?;
    let seed = SocketAddr::new(IpAddr::V4(backend_ip(0)), 6443);
    let t = now();
    let daemon = Daemon::spawn(
        &env.daemon,
        &env.path("scale"),
        vip,
        seed,
        &env.ca_file,
        "apiproxy3",
        "127.0.0.1:18007".parse()?,
        &[],
    )?;
    let want: Vec<SocketAddr> = (0..BACKENDS)
        .map(|i| SocketAddr::new(IpAddr::V4(backend_ip(i)), 6443))
        .collect();
    out.backends_converge_s = lb::wait_in_rotation(vip, &want, Duration::from_secs(240))
        .ok()
        .map(|_| now() - t);
    sleep_s(3.0);
    let a = util::reconcile_histogram(daemon.metrics);
    let (cpu, rss) = util::watch_process(daemon.pid(), window, |_| {});
    let b = util::reconcile_histogram(daemon.metrics);
    if let (Some(a), Some(b)) = (&a, &b) {
        out.reconcile_mean_ms_backends = util::reconcile_window(a, b).0;
    }
    out.cpu_pct_backends = cpu;
    out.rss_kib_backends = rss;
    println!(
        "bench: scale: {BACKENDS} backends in the kernel after {:?} s; pass {:?} ms; cpu {:?} %; rss {:?} KiB",
        out.backends_converge_s, out.reconcile_mean_ms_backends, cpu, rss
    );
    drop(daemon);
    if let Ok(ipvs) = Ipvs::connect() {
        let _ = ipvs.del_service(&ServiceKey::tcp(vip));
    }

    // 3. 1,000 simulated nodes probing one apiserver with the default health
    // settings (one persistent TLS connection each, /readyz every 5 s ± 10 %).
    // They skip the procfs socket inspection: it costs the prober, not the
    // apiserver, and 1,000 of them share this one VM.
    println!("bench: scale: {NODES} simulated nodes probing one apiserver");
    if let Err(e) = probers(env, &mut out, &prober_target) {
        println!("bench: scale: the simulated nodes could not be measured: {e:#}");
        out.probe_error = Some(format!("{e:#}"));
    }
    drop(prober_target);
    drop(_first);
    let _ = stop_tx.send(());
    let _ = server_thread.join();
    let _ = util::sh("ip", &["route", "del", "10.78.0.0/24"]);
    Ok(out)
}

/// 1,000 health checkers with the default settings against one fake
/// apiserver; counts the `/readyz` requests it receives.
fn probers(env: &Env, out: &mut Scale, prober_target: &FakeApiServer) -> Result<()> {
    let mut cfg = HealthConfig::default();
    cfg.tls.ca_file = Some(env.ca_file.clone());
    cfg.keepalive.inspect_socket = false;
    let ep = Endpoint(SocketAddr::new(prober_target.addr().ip(), 6443));
    let mut checkers = Vec::new();
    {
        let _guard = env.rt.enter();
        for i in 0..NODES {
            let c = Checker::new(cfg.clone())?;
            c.watch(ep);
            checkers.push(c);
            if i % 25 == 24 {
                sleep_s(0.5);
            }
        }
    }
    let t0 = now();
    while now() - t0 < 60.0 {
        let ready = checkers
            .iter()
            .filter(|c| c.state(ep) == Some(State::Ready))
            .count();
        if ready == NODES {
            break;
        }
        sleep_s(1.0);
    }
    out.probers_ready = checkers
        .iter()
        .filter(|c| c.state(ep) == Some(State::Ready))
        .count();
    sleep_s(6.0);
    let count = |s: &FakeApiServer| {
        s.requests()
            .iter()
            .filter(|r| r.contains("/readyz"))
            .count()
    };
    let r0 = count(prober_target);
    let t_a = now();
    let pwin = if env.quick { 10.0 } else { 20.0 };
    sleep_s(pwin);
    let r1 = count(prober_target);
    out.probe_window_s = now() - t_a;
    out.probe_rps_measured = Some((r1 - r0) as f64 / out.probe_window_s);
    println!(
        "bench: scale: {} of {NODES} probers ready; the apiserver saw {:.1} /readyz per second (computed {:.1})",
        out.probers_ready,
        out.probe_rps_measured.unwrap_or(0.0),
        out.probe_rps_computed
    );
    drop(checkers);
    Ok(())
}

/// The daemon's reconcile passes over the next `window` seconds: their
/// mean, the smallest histogram bucket holding them all, and how many.
fn passes(metrics: SocketAddr, window: f64) -> (Option<f64>, Option<f64>, u64) {
    let a = util::reconcile_histogram(metrics);
    sleep_s(window);
    let b = util::reconcile_histogram(metrics);
    match (&a, &b) {
        (Some(a), Some(b)) => util::reconcile_window(a, b),
        _ => (None, None, 0),
    }
}

/// A pass of the nftables daemon with 10,000 rules in a foreign table (as
/// kube-proxy's nftables mode keeps its services): it dumps our table
/// only, so they should not change it.
fn foreign_nft(env: &Env, window: f64, out: &mut Scale) -> Result<()> {
    println!("bench: scale: nftables reconcile with {FOREIGN} foreign rules");
    let nft = Ours::start_with(env, OURS_NFT)?;
    let metrics = nft.daemon.metrics;
    sleep_s(2.0);
    out.nft_reconcile_mean_ms_before = passes(metrics, window).0;
    let mut rules = String::from(
        "table ip bench-foreign {\n chain services {\n  type nat hook output priority -100; policy accept;\n",
    );
    for i in 0..FOREIGN {
        let ip = foreign_key(i).addr.ip();
        rules.push_str(&format!(
            "  ip daddr {ip} tcp dport 80 dnat to 172.16.0.1:80\n"
        ));
    }
    rules.push_str(" }\n}\n");
    let file = env.path("foreign.nft");
    std::fs::write(&file, rules)?;
    let t = now();
    util::sh("nft", &["-f", &file.to_string_lossy()])?;
    out.nft_create_foreign_s = now() - t;
    out.nft_foreign_rules = FOREIGN;
    sleep_s(2.0);
    (
        out.nft_reconcile_mean_ms_with_foreign,
        out.nft_reconcile_max_bucket_ms_with_foreign,
        out.nft_reconcile_passes_with_foreign,
    ) = passes(metrics, window);
    util::sh("nft", &["delete", "table", "ip", "bench-foreign"])?;
    drop(nft);
    // Its rules stay when it stops (as they must on a node): gone with
    // the table, so that nothing of it is left for the steps after.
    let _ = util::sh("nft", &["delete", "table", "inet", "bcs-apiserver-proxy"]);
    println!(
        "bench: scale: nftables reconcile mean {:?} ms before, {:?} ms with {FOREIGN} foreign rules",
        out.nft_reconcile_mean_ms_before, out.nft_reconcile_mean_ms_with_foreign
    );
    Ok(())
}
