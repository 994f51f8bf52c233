//! How long from a change being written to the (fake) apiserver's watch to
//! the new desired set leaving discovery. This bounds the "watch event
//! arrives -> desired set emitted" time from above: it also includes the
//! server's serialization and the HTTP transfer over loopback.
//!
//! `cargo run --release -p apiserver-proxy-discovery --example convergence [TRIALS]`

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use apiserver_proxy_discovery::{Discovery, DiscoveryConfig, Source, VirtualServer};
use apiserver_proxy_testkit::apiserver::{FakeApiServer, kubernetes_slice};
use apiserver_proxy_types::Endpoint;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    for with_cache in [false, true] {
        let mut samples = run(trials, with_cache).await;
        samples.sort();
        let pct = |p: f64| {
            let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
            samples[i]
        };
        println!(
            "cache={:<5} trials={} p50={:?} p90={:?} p99={:?} max={:?}",
            with_cache,
            samples.len(),
            pct(0.50),
            pct(0.90),
            pct(0.99),
            samples[samples.len() - 1]
        );
    }
}

async fn run(trials: usize, with_cache: bool) -> Vec<Duration> {
    let server = FakeApiServer::plain("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake apiserver");
    let p = server.addr().port();
    let me: IpAddr = "127.0.0.1".parse().expect("ip");
    server.apply_slice(kubernetes_slice(
        "kubernetes",
        "IPv4",
        p,
        &[(me, Some(true))],
    ));
    let mut vs = VirtualServer::new("10.96.0.1:443".parse().expect("vip"));
    vs.seeds = BTreeSet::from([Endpoint::new(me, p)]);
    let mut config = DiscoveryConfig::new(vec![vs]);
    let dir = tempfile::tempdir().expect("tempdir");
    if with_cache {
        config.cache_path = Some(dir.path().join("backends.json"));
    }
    let base = kube::Config::new("http://10.96.0.1:443".parse().expect("url"));
    let mut d = Discovery::start(config, base).expect("start");
    // Seed, then the first cluster answer.
    loop {
        let s = d.recv().await.expect("update");
        if s.source == Source::Cluster {
            break;
        }
    }
    let mut samples = Vec::with_capacity(trials);
    for i in 0..trials {
        let other: IpAddr = format!("127.0.{}.{}", 1 + (i / 250) % 250, 2 + i % 250)
            .parse()
            .expect("ip");
        let started = Instant::now();
        server.apply_slice(kubernetes_slice(
            "kubernetes",
            "IPv4",
            p,
            &[(me, Some(true)), (other, Some(true))],
        ));
        let s = d.recv().await.expect("update");
        samples.push(started.elapsed());
        assert!(s.backends.contains(&Endpoint::new(other, p)));
    }
    samples
}
