//! Discovery driven through the real kube client against the testkit's fake
//! apiserver. Assertions are on the desired sets emitted (order, sources,
//! generations) and on counters, never on how fast things happen.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use apiserver_proxy_discovery::{
    CountersSnapshot, DesiredSet, Discovery, DiscoveryConfig, Source, VirtualServer, cache,
};
use apiserver_proxy_testkit::apiserver::{FakeApiServer, kubernetes_endpoints, kubernetes_slice};
use apiserver_proxy_testkit::tls::Ca;
use apiserver_proxy_types::Endpoint;

/// Generous: only reached when something is wrong.
const WAIT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ep(ip_: &str, port: u16) -> Endpoint {
    Endpoint::new(ip(ip_), port)
}

fn set(items: &[Endpoint]) -> BTreeSet<Endpoint> {
    items.iter().copied().collect()
}

fn vip4() -> Endpoint {
    ep("10.96.0.1", 443)
}

async fn fake() -> FakeApiServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    FakeApiServer::plain(addr).await.expect("fake apiserver")
}

/// A base config whose own server (a ClusterIP) does not work here; only
/// its scheme matters. Discovery connects to known backends.
fn base(server: &FakeApiServer) -> kube::Config {
    let scheme = if server.url().starts_with("https") {
        "https"
    } else {
        "http"
    };
    kube::Config::new(format!("{scheme}://10.96.0.1:443").parse().expect("url"))
}

fn config(vss: Vec<VirtualServer>) -> DiscoveryConfig {
    let mut c = DiscoveryConfig::new(vss);
    c.backoff_initial = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c.connect_timeout = Duration::from_secs(2);
    c.use_config_server_as_last_resort = false;
    c.stale_after = Duration::from_secs(120);
    c
}

fn vs(vip: Endpoint, seeds: &[Endpoint]) -> VirtualServer {
    let mut v = VirtualServer::new(vip);
    v.seeds = set(seeds);
    v
}

async fn next(d: &mut Discovery) -> DesiredSet {
    match tokio::time::timeout(WAIT, d.recv()).await {
        Ok(Some(s)) => s,
        Ok(None) => panic!("discovery stopped"),
        Err(_) => panic!(
            "no desired set within {WAIT:?}; counters: {:?}",
            d.counters().snapshot()
        ),
    }
}

/// Nothing is emitted for a while (used after answers that must be ignored).
async fn quiet(d: &mut Discovery, dur: Duration) {
    if let Ok(got) = tokio::time::timeout(dur, d.recv()).await {
        panic!("expected no desired set, got {got:?}");
    }
}

async fn until(d: &Discovery, what: &str, f: impl Fn(&CountersSnapshot) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = d.counters().snapshot();
        if f(&snap) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {what}; counters: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_set(
    got: &DesiredSet,
    vip: Endpoint,
    backends: &[Endpoint],
    source: Source,
    generation: u64,
) {
    assert_eq!(
        (got.vs, &got.backends, got.source, got.generation),
        (vip, &set(backends), source, generation),
        "unexpected desired set {got:?}"
    );
}

fn slice(name: &str, port: u16, ips: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let eps: Vec<(IpAddr, Option<bool>)> = ips.iter().map(|s| (ip(s), Some(true))).collect();
    kubernetes_slice(name, "IPv4", port, &eps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_added_removed_and_changing_ip() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    let mut d = Discovery::start(
        config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]),
        base(&server),
    )
    .expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    // The cluster confirms the seed: same backends, new source.
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        2,
    );

    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        3,
    );
    server.apply_slice(slice(
        "kubernetes",
        p,
        &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
    ));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p), ep("127.0.0.3", p)],
        Source::Cluster,
        4,
    );
    // Master .2 removed.
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.3"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.3", p)],
        Source::Cluster,
        5,
    );
    // Master .3 changes its IP to .4.
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.4"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.4", p)],
        Source::Cluster,
        6,
    );
    // A master going not-ready is removed.
    server.apply_slice(kubernetes_slice(
        "kubernetes",
        "IPv4",
        p,
        &[
            (ip("127.0.0.1"), Some(true)),
            (ip("127.0.0.4"), Some(false)),
        ],
    ));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        7,
    );
    let c = d.counters().snapshot();
    assert_eq!(c.desired_sets_emitted, 7);
    assert_eq!(c.empty_answers_ignored, 0);
}

/// Only the slice the apiserver writes for its own service (named as the
/// service) is read: another slice with the service-name label, which
/// anyone allowed to write EndpointSlices in `default` can add, must not
/// steer the node's traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_not_named_as_the_service_is_ignored() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice(
        "kubernetes",
        p,
        &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
    ));
    let mut d = Discovery::start(
        config_last_resort(vec![vs(vip4(), &[])]),
        base_seeded(&server),
    )
    .expect("start");
    let v = vip4();
    let all = [ep("127.0.0.1", p), ep("127.0.0.2", p), ep("127.0.0.3", p)];
    assert_set(&next(&mut d).await, v, &all, Source::Cluster, 1);
    // A look-alike slice listing another address: nothing changes.
    server.apply_slice(slice("kubernetes-abcde", p, &["127.0.0.66"]));
    quiet(&mut d, Duration::from_millis(500)).await;
    // The next emission is the apiserver's own next change.
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        2,
    );
    let asked = server.requests();
    assert!(
        asked
            .iter()
            .filter(|r| r.contains("endpointslices?"))
            .all(|r| r.contains("fieldSelector=metadata.name")),
        "every list and watch asks for the service's own slice: {asked:?}"
    );
}

/// An answer listing more apiservers than `max_backends` is not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_longer_than_the_cap_is_refused() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    let mut cfg = config_last_resort(vec![vs(vip4(), &[])]);
    cfg.max_backends = 2;
    let mut d = Discovery::start(cfg, base_seeded(&server)).expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        1,
    );
    server.apply_slice(slice(
        "kubernetes",
        p,
        &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
    ));
    until(&d, "the oversized answer refused", |c| {
        c.oversized_answers_ignored >= 1
    })
    .await;
    quiet(&mut d, Duration::from_millis(300)).await;
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        2,
    );
}

/// No seeds: the only way in is the fake's own address, given as the base
/// config's server (last resort).
fn base_seeded(server: &FakeApiServer) -> kube::Config {
    kube::Config::new(server.url().parse().expect("url"))
}

fn config_last_resort(vss: Vec<VirtualServer>) -> DiscoveryConfig {
    let mut c = config(vss);
    c.use_config_server_as_last_resort = true;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_answers_never_replace_a_set() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    let mut d = Discovery::start(
        config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]),
        base(&server),
    )
    .expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        2,
    );

    // An empty slice.
    server.apply_slice(slice("kubernetes", p, &[]));
    until(&d, "empty slice ignored", |c| c.empty_answers_ignored >= 1).await;
    // All endpoints not ready.
    server.apply_slice(kubernetes_slice(
        "kubernetes",
        "IPv4",
        p,
        &[
            (ip("127.0.0.1"), Some(false)),
            (ip("127.0.0.2"), Some(false)),
        ],
    ));
    until(&d, "not-ready slice ignored", |c| {
        c.empty_answers_ignored >= 2
    })
    .await;
    // No port named https.
    let mut wrong_port = slice("kubernetes", p, &["127.0.0.2"]);
    if let Some(ports) = wrong_port.ports.as_mut() {
        ports[0].name = Some("http".to_string());
    }
    server.apply_slice(wrong_port);
    until(&d, "slice without https port ignored", |c| {
        c.empty_answers_ignored >= 3
    })
    .await;
    // The slice deleted altogether.
    assert!(server.delete_slice("kubernetes"));
    until(&d, "deleted slice ignored", |c| {
        c.empty_answers_ignored >= 4
    })
    .await;
    quiet(&mut d, Duration::from_millis(300)).await;
    assert_eq!(
        d.latest().borrow().get(&v).map(|s| s.backends.clone()),
        Some(set(&[ep("127.0.0.1", p)]))
    );

    // A real answer is applied again.
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_slice_is_not_for_an_ipv4_virtual_server() {
    let server = fake().await;
    let p = server.addr().port();
    // An IPv6 cluster: the apiserver's own slice is IPv6.
    server.apply_slice(kubernetes_slice(
        "kubernetes",
        "IPv6",
        p,
        &[(ip("fd00::1"), Some(true))],
    ));
    let vip6 = ep("fd00::a", 443);
    let mut d = Discovery::start(
        config(vec![vs(vip4(), &[ep("127.0.0.1", p)]), vs(vip6, &[])]),
        base(&server),
    )
    .expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    // The IPv6 virtual server gets the IPv6 slice; the IPv4 one keeps its
    // seeds (the answer has no IPv4 backend: fail-static).
    assert_set(
        &next(&mut d).await,
        vip6,
        &[ep("fd00::1", p)],
        Source::Cluster,
        2,
    );
    until(&d, "IPv4 answer ignored", |c| c.empty_answers_ignored >= 1).await;
    // An IPv6 change touches only the IPv6 virtual server.
    server.apply_slice(kubernetes_slice(
        "kubernetes",
        "IPv6",
        p,
        &[(ip("fd00::1"), Some(true)), (ip("fd00::2"), None)],
    ));
    assert_set(
        &next(&mut d).await,
        vip6,
        &[ep("fd00::1", p), ep("fd00::2", p)],
        Source::Cluster,
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_during_a_watch_relists() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    let mut d = Discovery::start(
        config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]),
        base(&server),
    )
    .expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        2,
    );
    until(&d, "first list", |c| c.relists >= 1).await;
    wait_for_watch(&server).await;

    // 1. An ERROR event with a 410 Status inside the open watch.
    server.expire_watches();
    until(&d, "410 seen and relisted", |c| {
        c.gone_relists >= 1 && c.relists >= 2
    })
    .await;
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        3,
    );

    // 2. The watch connection drops and the history is compacted meanwhile:
    // re-watching from the old resourceVersion gets 410, then a relist.
    // (Watches are frozen so the change cannot arrive as an event first.)
    wait_for_watch(&server).await;
    server.freeze_watches(true);
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.3"]));
    server.compact();
    server.drop_connections();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.3", p)],
        Source::Cluster,
        4,
    );
    let c = d.counters().snapshot();
    assert!(c.gone_relists >= 2 && c.relists >= 3, "{c:?}");
    server.freeze_watches(false);
}

async fn wait_for_watch(server: &FakeApiServer) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.open_watches() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no watch opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_keep_the_set_and_resume() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    let mut d = Discovery::start(
        config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]),
        base(&server),
    )
    .expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        2,
    );
    for round in 0..3u16 {
        wait_for_watch(&server).await;
        server.drop_connections();
        let other = format!("127.0.0.{}", 10 + round);
        server.apply_slice(slice("kubernetes", p, &["127.0.0.1", &other]));
        assert_set(
            &next(&mut d).await,
            v,
            &[ep("127.0.0.1", p), ep(&other, p)],
            Source::Cluster,
            3 + u64::from(round),
        );
    }
    // kube-runtime resumed each watch from its resourceVersion: one list only.
    let c = d.counters().snapshot();
    assert_eq!((c.relists, c.endpoint_switches), (1, 0), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_at_start_without_cache_uses_seeds_until_it_answers() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    server.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("backends.json");
    let mut cfg = config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]);
    cfg.cache_path = Some(cache_path.clone());
    let mut d = Discovery::start(cfg, base(&server)).expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    until(&d, "failed attempts", |c| c.watch_errors >= 2).await;
    quiet(&mut d, Duration::from_millis(300)).await;
    assert!(!cache_path.exists(), "seeds are not written to the cache");
    server.start().expect("restart");
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        2,
    );
    until(&d, "cache written", |c| c.cache_writes >= 1).await;
    let cached = cache::load(&cache_path).expect("load").expect("exists");
    assert_eq!(
        cached.get(&v),
        Some(&set(&[ep("127.0.0.1", p), ep("127.0.0.2", p)]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_at_start_with_cache_uses_the_cache() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    server.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("backends.json");
    let v = vip4();
    let mut sets = cache::CachedSets::new();
    sets.insert(v, set(&[ep("127.0.0.1", p), ep("127.0.0.2", p)]));
    // An entry for a virtual server no longer configured is ignored.
    sets.insert(ep("10.96.0.2", 443), set(&[ep("127.0.0.9", p)]));
    cache::store(&cache_path, &sets).expect("store");

    // The seed points elsewhere: the cache (the last real set) wins.
    let mut cfg = config(vec![vs(v, &[ep("127.0.0.7", p)])]);
    cfg.cache_path = Some(cache_path.clone());
    let mut d = Discovery::start(cfg, base(&server)).expect("start");
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cache,
        1,
    );
    until(&d, "failed attempts", |c| c.watch_errors >= 2).await;
    quiet(&mut d, Duration::from_millis(300)).await;
    // The API comes back at a cached address; its answer replaces the cache.
    server.start().expect("restart");
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        2,
    );
    until(&d, "cache written", |c| c.cache_writes >= 1).await;
    let cached = cache::load(&cache_path).expect("load").expect("exists");
    assert_eq!(cached.get(&v), Some(&set(&[ep("127.0.0.1", p)])));
    assert_eq!(cached.len(), 1);
}

async fn corrupt_cache_case(contents: &[u8]) {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("backends.json");
    std::fs::write(&cache_path, contents).expect("write");
    let mut cfg = config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]);
    cfg.cache_path = Some(cache_path.clone());
    let mut d = Discovery::start(cfg, base(&server)).expect("start never fails on a bad cache");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_eq!(d.counters().snapshot().cache_load_failures, 1);
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        2,
    );
    until(&d, "cache rewritten", |c| c.cache_writes >= 1).await;
    assert!(
        cache::load(&cache_path).is_ok(),
        "the bad file was replaced by a good one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cache_is_ignored() {
    corrupt_cache_case(b"{\"kind\": \"ApiserverProxyBackendCache\", \"version\": 1, \"virtualSer")
        .await;
    corrupt_cache_case(&[0xff, 0x00, 0x13, 0x37]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_cache_file_is_ignored() {
    corrupt_cache_case(b"{\"apiVersion\": \"v1\", \"kind\": \"Config\", \"clusters\": []}").await;
    corrupt_cache_case(b"{\"kind\": \"ApiserverProxyBackendCache\", \"version\": 99}").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslice_api_not_served_falls_back_to_endpoints() {
    let server = fake().await;
    let p = server.addr().port();
    server.set_serve_endpoint_slices(false);
    // A slice exists in storage but is not served: must not be used.
    server.apply_slice(slice("kubernetes", p, &["127.0.0.9"]));
    server.apply_endpoints(kubernetes_endpoints(
        p,
        &[ip("127.0.0.1"), ip("127.0.0.2")],
        &[ip("127.0.0.3")],
    ));
    let mut d = Discovery::start(
        config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]),
        base(&server),
    )
    .expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        2,
    );
    assert_eq!(d.counters().snapshot().endpoints_fallbacks, 1);
    server.apply_endpoints(kubernetes_endpoints(
        p,
        &[ip("127.0.0.1"), ip("127.0.0.3")],
        &[],
    ));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.3", p)],
        Source::Cluster,
        3,
    );
    // Fail-static applies here too.
    server.apply_endpoints(kubernetes_endpoints(p, &[], &[ip("127.0.0.1")]));
    until(&d, "empty Endpoints ignored", |c| {
        c.empty_answers_ignored >= 1
    })
    .await;
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains("/api/v1/namespaces/default/endpoints?")
                && r.contains("fieldSelector=metadata.name%3Dkubernetes")),
        "{:?}",
        server.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_watch_relists() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    let mut cfg = config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]);
    cfg.stale_after = Duration::from_secs(1);
    let mut d = Discovery::start(cfg, base(&server)).expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        2,
    );
    // The watch goes silent: the change reaches discovery only by a relist.
    server.freeze_watches(true);
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        3,
    );
    let c = d.counters().snapshot();
    assert!(c.stale_relists >= 1 && c.relists >= 2, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_backend_by_ip_verifies_the_name_kubernetes() {
    let ca = Ca::new("kubernetes");
    // No IP SANs at all: only the name `kubernetes` can verify.
    let leaf = ca.apiserver_cert(&[]);
    let server = FakeApiServer::tls("127.0.0.1:0".parse().expect("addr"), &leaf)
        .await
        .expect("tls fake");
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    // The base config points at a ClusterIP that does not work here.
    let mut base = kube::Config::new("https://10.96.0.1:443".parse().expect("url"));
    base.root_cert = Some(vec![ca.cert.cert_der.to_vec()]);
    let mut d = Discovery::start(
        config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]),
        base.clone(),
    )
    .expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        2,
    );
    drop(d);

    // A server whose certificate another CA signed is refused.
    let stranger = Ca::new("kubernetes").apiserver_cert(&[ip("127.0.0.1")]);
    let other = FakeApiServer::tls("127.0.0.1:0".parse().expect("addr"), &stranger)
        .await
        .expect("tls fake");
    let q = other.addr().port();
    other.apply_slice(slice("kubernetes", q, &["127.0.0.1"]));
    let mut d =
        Discovery::start(config(vec![vs(vip4(), &[ep("127.0.0.1", q)])]), base).expect("start");
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", q)],
        Source::Seed,
        1,
    );
    until(&d, "TLS failures", |c| c.watch_errors >= 3).await;
    quiet(&mut d, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_known_apiserver() {
    let a = fake().await;
    let p = a.addr().port();
    let b = FakeApiServer::plain(SocketAddr::new(ip("127.0.0.2"), p))
        .await
        .expect("second fake");
    for s in [&a, &b] {
        s.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    }
    let mut d =
        Discovery::start(config(vec![vs(vip4(), &[ep("127.0.0.1", p)])]), base(&a)).expect("start");
    let v = vip4();
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p)],
        Source::Seed,
        1,
    );
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cluster,
        2,
    );
    // A dies; B (known from the cluster's answer, not a seed) now tells.
    a.stop();
    b.apply_slice(slice("kubernetes", p, &["127.0.0.2", "127.0.0.3"]));
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.2", p), ep("127.0.0.3", p)],
        Source::Cluster,
        3,
    );
    assert!(d.counters().snapshot().endpoint_switches >= 1);
    assert!(b.requests().iter().any(|r| r.contains("endpointslices")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_seeds_uses_the_config_server_as_last_resort() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    let mut d = Discovery::start(
        config_last_resort(vec![vs(vip4(), &[])]),
        base_seeded(&server),
    )
    .expect("start");
    assert_set(
        &next(&mut d).await,
        vip4(),
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_that_accepts_but_never_answers_is_left_for_the_next() {
    // 127.0.0.1 sorts first, so the hung one is tried first.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hung_addr = hung.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hung.accept().await {
            conns.push(c); // accept, then say nothing
        }
    });
    let good = FakeApiServer::plain("127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("fake");
    let p = good.addr().port();
    good.apply_slice(slice("kubernetes", p, &["127.0.0.2"]));
    let seeds = [Endpoint::from(hung_addr), ep("127.0.0.2", p)];
    let mut cfg = config(vec![vs(vip4(), &seeds)]);
    cfg.list_timeout = Duration::from_secs(1);
    let mut d = Discovery::start(cfg, base(&good)).expect("start");
    let v = vip4();
    assert_set(&next(&mut d).await, v, &seeds, Source::Seed, 1);
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.2", p)],
        Source::Cluster,
        2,
    );
    assert!(d.counters().snapshot().endpoint_switches >= 1);
    held.abort();
}

/// Regression: a cache write used to keep only cluster-sourced sets, so a
/// virtual server still on its cached set (the cluster gave it nothing
/// usable) lost its entry when another virtual server's set changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keeps_the_last_real_set_of_a_virtual_server_the_cluster_left_empty() {
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.3"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("backends.json");
    let (a, b) = (vip4(), ep("10.96.0.2", 443));
    let mut sets = cache::CachedSets::new();
    sets.insert(a, set(&[ep("127.0.0.1", p)]));
    sets.insert(b, set(&[ep("127.0.0.1", p), ep("127.0.0.2", p)]));
    cache::store(&cache_path, &sets).expect("store");

    // B balances to a port the cluster does not publish: its answers are
    // always empty and rejected (fail-static).
    let mut vs_b = vs(b, &[ep("127.0.0.9", p)]);
    vs_b.port_name = "not-published".to_string();
    let mut cfg = config(vec![vs(a, &[]), vs_b]);
    cfg.cache_path = Some(cache_path.clone());
    let mut d = Discovery::start(cfg, base(&server)).expect("start");
    assert_set(
        &next(&mut d).await,
        a,
        &[ep("127.0.0.1", p)],
        Source::Cache,
        1,
    );
    assert_set(
        &next(&mut d).await,
        b,
        &[ep("127.0.0.1", p), ep("127.0.0.2", p)],
        Source::Cache,
        2,
    );
    assert_set(
        &next(&mut d).await,
        a,
        &[ep("127.0.0.1", p), ep("127.0.0.3", p)],
        Source::Cluster,
        3,
    );
    until(&d, "B's empty answer rejected and the cache written", |c| {
        c.empty_answers_ignored >= 1 && c.cache_writes >= 1
    })
    .await;
    let cached = cache::load(&cache_path).expect("load").expect("exists");
    assert_eq!(
        cached,
        [
            (a, set(&[ep("127.0.0.1", p), ep("127.0.0.3", p)])),
            (b, set(&[ep("127.0.0.1", p), ep("127.0.0.2", p)])),
        ]
        .into_iter()
        .collect::<cache::CachedSets>()
    );

    // A later change of A still keeps B's last real set.
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1"]));
    assert_set(
        &next(&mut d).await,
        a,
        &[ep("127.0.0.1", p)],
        Source::Cluster,
        4,
    );
    until(&d, "cache written again", |c| c.cache_writes >= 2).await;
    let cached = cache::load(&cache_path).expect("load").expect("exists");
    assert_eq!(cached.get(&a), Some(&set(&[ep("127.0.0.1", p)])));
    assert_eq!(
        cached.get(&b),
        Some(&set(&[ep("127.0.0.1", p), ep("127.0.0.2", p)]))
    );
    assert_eq!(
        d.latest().borrow().get(&b).map(|s| s.source),
        Some(Source::Cache)
    );
}

/// `list_timeout` bounds the whole list (from asking to the complete
/// answer): an apiserver that accepts the connection and then crawls is
/// left for the next one. (Discovery asks for the one object named as the
/// service, so a list is one page; the bound is the list's, not a page's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_slower_than_list_timeout_is_left_for_the_next_apiserver() {
    let crawling = fake().await;
    let p = crawling.addr().port();
    crawling.apply_slice(slice("kubernetes", p, &["127.0.0.6"]));
    crawling.set_list_delay(Duration::from_millis(1500));
    let good = FakeApiServer::plain("127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("fake");
    let q = good.addr().port();
    good.apply_slice(slice("kubernetes", q, &["127.0.0.2"]));
    // 127.0.0.1 sorts first: the crawling apiserver is tried first.
    let seeds = [ep("127.0.0.1", p), ep("127.0.0.2", q)];
    let mut cfg = config(vec![vs(vip4(), &seeds)]);
    cfg.list_timeout = Duration::from_secs(1);
    let mut d = Discovery::start(cfg, base(&good)).expect("start");
    let v = vip4();
    assert_set(&next(&mut d).await, v, &seeds, Source::Seed, 1);
    // The first answer comes from the good apiserver; the crawling one's
    // (127.0.0.6) never completes.
    assert_set(
        &next(&mut d).await,
        v,
        &[ep("127.0.0.2", q)],
        Source::Cluster,
        2,
    );
    let c = d.counters().snapshot();
    assert!(c.endpoint_switches >= 1 && c.watch_errors >= 1, "{c:?}");
    // The crawling apiserver was asked for a list (it was tried first), and
    // never got as far as a watch.
    let asked = crawling.requests();
    assert!(
        asked.iter().any(|r| r.contains("endpointslices?")),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|r| r.contains("watch=true")), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_server_kept_out_of_the_cache_is_never_written_to_it() {
    // The outside control-plane VIP: the boot-time restore reads the cache
    // and would place every VIP in it on the node.
    let server = fake().await;
    let p = server.addr().port();
    server.apply_slice(slice("kubernetes", p, &["127.0.0.1", "127.0.0.2"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("backends.json");
    let outside: Endpoint = "192.168.1.100:6443".parse().expect("vip");
    let mut kept_out = vs(outside, &[ep("127.0.0.1", p)]);
    kept_out.cached = false;
    let mut cfg = config(vec![vs(vip4(), &[ep("127.0.0.1", p)]), kept_out]);
    cfg.cache_path = Some(cache_path.clone());
    let mut d = Discovery::start(cfg, base(&server)).expect("start");
    until(&d, "cache written", |c| c.cache_writes >= 1).await;
    let _ = next(&mut d).await;
    let cached = cache::load(&cache_path).expect("load").expect("exists");
    assert!(cached.contains_key(&vip4()), "{cached:?}");
    assert!(!cached.contains_key(&outside), "{cached:?}");
}
