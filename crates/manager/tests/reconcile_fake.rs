//! The daemon's decisions on the testkit's in-memory kernel: what a pass
//! does to the table, in which order, what it repairs on the host, and what
//! it saves for the boot-time restore. The same behaviour is proven against
//! the real kernel in the VM (`kernel_reconcile.rs`, the daemon's e2e tests).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use apiserver_proxy_discovery::{DesiredSet, Source};
use apiserver_proxy_health::{HealthEvent, Reason, State};
use apiserver_proxy_manager::config::{Config, VipMode, VirtualServerConfig};
use apiserver_proxy_manager::host::HostChange;
use apiserver_proxy_manager::http::Status;
use apiserver_proxy_manager::metrics::Metrics;
use apiserver_proxy_manager::plan::{DeleteReason, Op};
use apiserver_proxy_manager::reconcile::Reconciler;
use apiserver_proxy_manager::state::{self, NodeState, SavedVs};
use apiserver_proxy_testkit::fake_kernel::{Call, FakeKernel};
use apiserver_proxy_types::Endpoint;

const VIP: &str = "10.103.97.2:6443";

fn ep(s: &str) -> Endpoint {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn config(state_dir: &Path, seeds: &[&str]) -> Config {
    Config {
        virtual_servers: vec![VirtualServerConfig {
            vip: ep(VIP),
            scheduler: "rr".into(),
            seeds: seeds.iter().map(|s| ep(s)).collect(),
            port_name: "https".into(),
        }],
        state_dir: state_dir.to_path_buf(),
        ..Config::default()
    }
}

fn reconciler(
    c: Config,
    kernel: FakeKernel,
    saved: Option<NodeState>,
) -> (Reconciler<FakeKernel>, Metrics) {
    let metrics = Metrics::new();
    let status = Arc::new(Status::new(c.resync_interval));
    (
        Reconciler::new(c, metrics.clone(), status, kernel, saved),
        metrics,
    )
}

fn cluster(backends: &[&str], generation: u64) -> DesiredSet {
    DesiredSet {
        vs: ep(VIP),
        backends: backends.iter().map(|b| ep(b)).collect(),
        source: Source::Cluster,
        generation,
    }
}

fn health(backend: &str, state: State) -> HealthEvent {
    HealthEvent {
        backend: ep(backend),
        state,
        previous: None,
        reason: match state {
            State::Dead => Reason::Refused,
            State::NotReady => Reason::Status(500),
            _ => Reason::Status(200),
        },
        at: Instant::now(),
        at_system: SystemTime::now(),
    }
}

fn metric(m: &Metrics, series: &str) -> Option<f64> {
    m.render()
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn what_the_cli_put_there_stays_until_the_cluster_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `apiserver-proxy-tools init` left one backend the seeds do not list.
    let kernel = FakeKernel::new().with_service(ep(VIP), &[(ep("192.168.1.9:6443"), 1)]);
    let (mut r, _) = reconciler(config(dir.path(), &["192.168.1.10:6443"]), kernel, None);
    r.pass().await;
    assert_eq!(
        r.kernel_mut().weights(ep(VIP)),
        vec![(ep("192.168.1.9:6443"), 1), (ep("192.168.1.10:6443"), 1)],
        "the seed joins, the CLI's backend stays"
    );

    // The cluster's answer is the whole truth: the other one drains, and
    // with no connection left it goes.
    r.on_set(cluster(&["192.168.1.10:6443"], 1));
    r.pass().await;
    let ops = r.kernel_mut().take_ops();
    assert!(
        ops.contains(&Op::SetWeight {
            vip: ep(VIP),
            backend: ep("192.168.1.9:6443"),
            weight: 0
        }),
        "{ops:?}"
    );
    r.pass().await;
    assert_eq!(
        r.kernel_mut().weights(ep(VIP)),
        vec![(ep("192.168.1.10:6443"), 1)]
    );
}

/// Out of rotation first (weight 0): reading the connection table can take
/// long on a busy node, and must never delay the failover. The read comes
/// before the delete, which would expire the entries it needs.
#[tokio::test]
async fn a_dead_backend_leaves_rotation_first_then_its_connections_are_read_deleted_and_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = ("192.168.1.10:6443", "192.168.1.11:6443");
    let mut kernel = FakeKernel::new().with_service(ep(VIP), &[(ep(a), 1), (ep(b), 1)]);
    let client: SocketAddr = "10.103.97.2:40000".parse().expect("addr");
    kernel.connect(client, ep(VIP), ep(b));
    let (mut r, m) = reconciler(config(dir.path(), &[]), kernel, None);
    r.on_set(cluster(&[a, b], 1));
    r.on_health(health(a, State::Ready));
    r.on_health(health(b, State::Dead));
    r.pass().await;

    let k = r.kernel_mut();
    let calls: Vec<&Call> = k
        .journal
        .iter()
        .filter(|c| !matches!(c, Call::ReadOurs(_)))
        .collect();
    assert_eq!(
        calls,
        vec![
            &Call::Apply(Op::SetWeight {
                vip: ep(VIP),
                backend: ep(b),
                weight: 0
            }),
            &Call::Connections {
                vip: ep(VIP),
                backend: ep(b)
            },
            &Call::Apply(Op::DelDest {
                vip: ep(VIP),
                backend: ep(b),
                why: DeleteReason::Dead
            }),
            &Call::Cut(1),
        ]
    );
    assert_eq!(k.cut.len(), 1);
    assert_eq!(
        metric(&m, "apiserver_proxy_sockets_destroyed_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn every_backend_dead_keeps_them_all_in_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = ("192.168.1.10:6443", "192.168.1.11:6443");
    let kernel = FakeKernel::new().with_service(ep(VIP), &[(ep(a), 1), (ep(b), 1)]);
    let (mut r, m) = reconciler(config(dir.path(), &[]), kernel, None);
    r.on_set(cluster(&[a, b], 1));
    r.on_health(health(a, State::Dead));
    r.on_health(health(b, State::Dead));
    let out = r.pass().await;
    assert!(out.plan.ops.is_empty(), "{:?}", out.plan.ops);
    assert_eq!(
        r.kernel_mut().weights(ep(VIP)),
        vec![(ep(a), 1), (ep(b), 1)]
    );
    assert_eq!(
        metric(&m, "apiserver_proxy_fail_open{vs=\"10.103.97.2:6443\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_daemon_that_never_learned_a_backend_keeps_what_init_saved() {
    // The chart's default: no seeds. Discovery never gives a usable answer.
    let dir = tempfile::tempdir().expect("tempdir");
    let init = NodeState::new(
        "apiproxy0",
        VipMode::Address,
        vec![
            SavedVs::new(ep(VIP), "rr", vec![ep("192.168.1.10:6443")]),
            // A VIP `init` saved that the daemon's configuration does not list.
            SavedVs::new(ep("10.103.97.3:6443"), "rr", vec![ep("192.168.1.10:6443")]),
        ],
    );
    state::save(dir.path(), &init).expect("save");
    let kernel = FakeKernel::new().with_service(ep(VIP), &[(ep("192.168.1.10:6443"), 1)]);
    let saved = state::load(dir.path()).expect("load");
    let (mut r, _) = reconciler(config(dir.path(), &[]), kernel, saved);
    r.pass().await;
    r.pass().await;
    let on_disk = state::load(dir.path()).expect("load").expect("present");
    assert_eq!(on_disk.virtual_servers, init.virtual_servers, "{on_disk:?}");
    assert_eq!(
        r.kernel_mut().weights(ep(VIP)),
        vec![(ep("192.168.1.10:6443"), 1)],
        "and the kernel keeps it too"
    );
}

#[tokio::test]
async fn the_host_is_built_then_repaired_after_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut r, m) = reconciler(
        config(dir.path(), &["192.168.1.10:6443"]),
        FakeKernel::new(),
        None,
    );
    let first = r.ensure_host().await.expect("ensure");
    assert!(matches!(
        first.changes.first(),
        Some(HostChange::InterfaceCreated { .. })
    ));
    assert!(r.ensure_host().await.expect("again").changes.is_empty());

    // `ip addr del` of the VIP, then `ip link set apiproxy0 down`.
    let vip = ep(VIP).ip();
    let link = r.kernel_mut().host.interface.as_mut().expect("link");
    link.addresses.remove(&vip);
    link.up = false;
    let repaired = r.ensure_host().await.expect("repair");
    let said: Vec<String> = repaired.changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        vec![
            "brought the interface apiproxy0 up".to_string(),
            "VIP 10.103.97.2 on apiproxy0: added".to_string(),
        ]
    );
    // `ip link del apiproxy0`.
    r.kernel_mut().host.interface = None;
    r.ensure_host().await.expect("repair");
    assert!(
        r.kernel_mut()
            .host
            .interface
            .as_ref()
            .is_some_and(|l| l.up && l.addresses.contains(&vip))
    );
    assert!(metric(&m, "apiserver_proxy_host_repairs_total").is_some_and(|n| n >= 6.0));
}

#[tokio::test]
async fn route_mode_places_a_route_and_read_only_sysctls_are_a_metric_not_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path(), &["192.168.1.10:6443"]);
    c.vip_mode = VipMode::Route;
    let mut kernel = FakeKernel::new();
    kernel.host.sysctls_read_only = true;
    let (mut r, m) = reconciler(c, kernel, None);
    let report = r.ensure_host().await.expect("ensure");
    assert_eq!(report.sysctls_unset.len(), 2);
    let k = r.kernel_mut();
    assert!(k.host.routes.contains_key(&ep(VIP).ip()));
    assert!(
        k.host
            .interface
            .as_ref()
            .is_some_and(|l| l.addresses.is_empty())
    );
    assert_eq!(
        metric(
            &m,
            "apiserver_proxy_sysctl_unset{sysctl=\"net.ipv4.vs.conntrack\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_flushed_table_is_rebuilt_and_a_failing_kernel_is_survived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut r, m) = reconciler(
        config(dir.path(), &["192.168.1.10:6443"]),
        FakeKernel::new(),
        None,
    );
    let last = "apiserver_proxy_reconcile_last_success_timestamp_seconds ";
    assert_eq!(metric(&m, last), Some(0.0), "no pass yet");
    r.pass().await;
    assert_eq!(r.kernel_mut().weights(ep(VIP)).len(), 1);
    // `ipvsadm -C`.
    r.kernel_mut().services.clear();
    r.pass().await;
    assert_eq!(r.kernel_mut().weights(ep(VIP)).len(), 1);
    let succeeded = metric(&m, last).expect("timestamp");
    assert!(succeeded > 1.7e9, "a Unix time: {succeeded}");

    r.kernel_mut().failing = Some(105);
    let out = r.pass().await;
    assert!(out.plan.ops.is_empty());
    // A failed pass leaves the last success where it was.
    assert_eq!(metric(&m, last), Some(succeeded));
    assert_eq!(
        metric(&m, "apiserver_proxy_reconcile_total{result=\"error\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "apiserver_proxy_errors_total{during=\"read\",error=\"kernel\"}"
        ),
        Some(1.0)
    );
    r.kernel_mut().failing = None;
    r.kernel_mut().services.clear();
    r.pass().await;
    assert_eq!(r.kernel_mut().weights(ep(VIP)).len(), 1);
}

#[tokio::test]
async fn a_backend_that_left_leaves_no_series_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = ("192.168.1.10:6443", "192.168.1.11:6443");
    let (mut r, m) = reconciler(config(dir.path(), &[]), FakeKernel::new(), None);
    r.on_set(cluster(&[a, b], 1));
    r.on_health(health(b, State::Ready));
    r.pass().await;
    let series = |m: &Metrics| {
        m.render()
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("192.168.1.11"))
            .count()
    };
    assert!(series(&m) > 0, "{}", m.render());
    // The master is replaced: its IP leaves the cluster's answer, drains
    // (no connection left) and is deleted.
    r.on_set(cluster(&[a], 2));
    r.pass().await;
    r.pass().await;
    assert_eq!(r.kernel_mut().weights(ep(VIP)), vec![(ep(a), 1)]);
    // A pass exports what it read before applying: the next one no longer
    // sees the deleted destination.
    r.pass().await;
    assert_eq!(series(&m), 0, "{}", m.render());
}

#[tokio::test]
async fn only_host_changes_that_can_undo_ours_trigger_a_repair() {
    use apiserver_proxy_dataplane::HostEvent;
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, _) = reconciler(config(dir.path(), &[]), FakeKernel::new(), None);
    let vip = ep(VIP).ip();
    let other: std::net::IpAddr = "10.244.1.7".parse().expect("ip");
    let link = |name: &str, removed| HostEvent::Link {
        index: 7,
        name: name.into(),
        up: false,
        removed,
    };
    assert!(r.host_event_matters(&link("apiproxy0", true)));
    assert!(r.host_event_matters(&link("apiproxy0", false)), "set down");
    assert!(
        !r.host_event_matters(&link("cali1234", true)),
        "a CNI's churn"
    );
    let addr = |addr, removed| HostEvent::Address {
        index: 7,
        addr,
        removed,
    };
    assert!(r.host_event_matters(&addr(vip, true)));
    assert!(!r.host_event_matters(&addr(vip, false)), "our own repair");
    assert!(!r.host_event_matters(&addr(other, true)));
    let route = |dst, removed| HostEvent::Route {
        dst,
        prefix_len: 32,
        removed,
    };
    assert!(r.host_event_matters(&route(vip, true)));
    assert!(!r.host_event_matters(&route(other, true)));
    assert!(r.host_event_matters(&HostEvent::Overrun));
}

#[tokio::test]
async fn after_a_flush_the_nodes_established_connections_through_the_vip_are_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = "192.168.1.10:6443";
    let mut kernel = FakeKernel::new().with_service(ep(VIP), &[(ep(a), 1)]);
    let watch: SocketAddr = "10.103.97.2:40000".parse().expect("addr");
    kernel.connect(watch, ep(VIP), ep(a));
    let (mut r, m) = reconciler(config(dir.path(), &[a]), kernel, None);
    r.pass().await;
    assert!(
        r.kernel_mut().cut.is_empty(),
        "nothing to cut while the service stands"
    );
    // `ipvsadm -C`: the service goes, the connection's entry stays orphaned.
    let k = r.kernel_mut();
    k.services.clear();
    k.journal.clear();
    r.pass().await;
    let k = r.kernel_mut();
    assert_eq!(k.weights(ep(VIP)), vec![(ep(a), 1)], "rebuilt");
    assert_eq!(k.cut.len(), 1, "the idle watch is cut: {:?}", k.journal);
    assert!(
        k.journal.contains(&Call::OrphanedSockets(ep(VIP))),
        "{:?}",
        k.journal
    );
    assert_eq!(
        metric(&m, "apiserver_proxy_sockets_destroyed_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_drain_that_times_out_cuts_the_connections_it_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = ("192.168.1.10:6443", "192.168.1.11:6443");
    let mut kernel = FakeKernel::new().with_service(ep(VIP), &[(ep(a), 1), (ep(b), 1)]);
    // The daemon's own watch, idle on `b`, which the cluster then removes.
    let watch: SocketAddr = "10.103.97.2:40000".parse().expect("addr");
    kernel.connect(watch, ep(VIP), ep(b));
    let mut c = config(dir.path(), &[]);
    c.drain_timeout = std::time::Duration::ZERO;
    let (mut r, m) = reconciler(c, kernel, None);
    r.on_set(cluster(&[a], 1));
    r.on_health(health(a, State::Ready));
    r.pass().await;
    r.pass().await;

    let k = r.kernel_mut();
    assert_eq!(k.weights(ep(VIP)), vec![(ep(a), 1)], "{:?}", k.journal);
    let tail: Vec<&Call> = k
        .journal
        .iter()
        .filter(|c| !matches!(c, Call::ReadOurs(_)))
        .skip_while(|c| !matches!(c, Call::Connections { .. }))
        .collect();
    assert_eq!(
        tail,
        vec![
            &Call::Connections {
                vip: ep(VIP),
                backend: ep(b)
            },
            &Call::Apply(Op::DelDest {
                vip: ep(VIP),
                backend: ep(b),
                why: DeleteReason::DrainTimeout
            }),
            &Call::Cut(1),
        ],
        "read before the delete (it expires the entries), cut after it"
    );
    assert_eq!(
        metric(&m, "apiserver_proxy_sockets_destroyed_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_destination_deleted_by_hand_is_re_added_and_its_orphaned_sockets_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = ("192.168.1.10:6443", "192.168.1.11:6443");
    let mut kernel = FakeKernel::new().with_service(ep(VIP), &[(ep(a), 1), (ep(b), 1)]);
    let watch: SocketAddr = "10.103.97.2:40000".parse().expect("addr");
    let other: SocketAddr = "10.103.97.2:40001".parse().expect("addr");
    kernel.connect(watch, ep(VIP), ep(b));
    kernel.connect(other, ep(VIP), ep(a));
    let (mut r, _) = reconciler(config(dir.path(), &[a, b]), kernel, None);
    r.on_health(health(a, State::Ready));
    r.on_health(health(b, State::Ready));
    r.pass().await;
    assert!(r.kernel_mut().cut.is_empty(), "nothing to cut while whole");
    // `ipvsadm -d -t VIP -r b`: b's connection loses its entry.
    r.kernel_mut()
        .services
        .get_mut(&ep(VIP))
        .expect("service")
        .dests
        .remove(&ep(b));
    r.pass().await;
    let k = r.kernel_mut();
    assert_eq!(k.weights(ep(VIP)), vec![(ep(a), 1), (ep(b), 1)], "re-added");
    assert_eq!(
        k.cut.iter().map(|c| c.client).collect::<Vec<_>>(),
        vec![watch],
        "only the orphaned socket is cut: {:?}",
        k.journal
    );
}

/// A client still in its handshake with a dead backend recovers by itself
/// (its next SYN goes to a live one); cutting it would fail its request.
#[tokio::test]
async fn a_dead_backends_connections_still_in_their_handshake_are_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = ("192.168.1.10:6443", "192.168.1.11:6443");
    let mut kernel = FakeKernel::new().with_service(ep(VIP), &[(ep(a), 1), (ep(b), 1)]);
    let watch: SocketAddr = "10.103.97.2:40000".parse().expect("addr");
    let connecting: SocketAddr = "10.103.97.2:40001".parse().expect("addr");
    kernel.connect(watch, ep(VIP), ep(b));
    kernel.connect(connecting, ep(VIP), ep(b));
    kernel
        .conns
        .iter_mut()
        .find(|c| c.client == connecting)
        .expect("conn")
        .state = "SYN_RECV".into();
    let (mut r, _) = reconciler(config(dir.path(), &[]), kernel, None);
    r.on_set(cluster(&[a, b], 1));
    r.on_health(health(a, State::Ready));
    r.on_health(health(b, State::Dead));
    r.pass().await;
    let k = r.kernel_mut();
    assert_eq!(
        k.cut.iter().map(|c| c.client).collect::<Vec<_>>(),
        vec![watch],
        "only the established connection is cut"
    );
}

/// The `/status` page shows what the loop decided: discovery's answer and
/// its source, each backend's condition and reason, the kernel's weights,
/// the pass result.
#[tokio::test]
async fn the_status_page_shows_the_loops_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = config(dir.path(), &["192.168.1.10:6443"]);
    let status = Arc::new(Status::new(c.resync_interval));
    let mut r = Reconciler::new(c, Metrics::new(), status.clone(), FakeKernel::new(), None);
    r.on_set(cluster(&["192.168.1.10:6443", "192.168.1.11:6443"], 3));
    r.on_health(health("192.168.1.10:6443", State::Ready));
    r.on_health(health("192.168.1.11:6443", State::Dead));
    r.pass().await;
    r.pass().await;
    let page = status
        .page
        .json(SystemTime::now(), status.alive(), status.ready());
    assert_eq!(page["lastPass"]["ok"], true, "{page}");
    let vs = &page["virtualServers"][0];
    assert_eq!(vs["vip"], VIP);
    assert_eq!(vs["inKernel"], true);
    assert_eq!(vs["discovery"]["source"], "cluster");
    assert_eq!(vs["discovery"]["generation"], 3);
    let backend = |addr: &str| {
        vs["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["address"] == addr))
            .cloned()
            .unwrap_or_else(|| panic!("{addr} missing: {page}"))
    };
    let ready = backend("192.168.1.10:6443");
    assert_eq!(ready["condition"], "ready");
    assert_eq!(ready["weight"], 1, "{page}");
    let dead = backend("192.168.1.11:6443");
    assert_eq!(dead["condition"], "dead");
    assert_eq!(dead["inService"], false);
    assert!(
        dead["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{page}"
    );
    assert!(
        dead["weight"].is_null(),
        "a dead backend is not in the kernel: {page}"
    );
}

#[tokio::test]
async fn the_outside_vip_is_balanced_and_natted_but_never_placed_nor_saved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = ep("192.168.1.100:6443");
    let mut c = config(dir.path(), &["192.168.1.11:6443"]);
    c.control_plane.vip = Some(outside);
    c.control_plane.interface = "eth0".into();
    c.control_plane.apiservers = vec![ep("192.168.1.11:6443"), ep("192.168.1.12:6443")];
    let c = c.with_outside_virtual_server();
    assert_eq!(c.virtual_servers.len(), 2);
    let (mut r, _m) = reconciler(c, FakeKernel::new(), None);
    r.ensure_host().await.expect("ensure");
    r.pass().await;
    let k = r.kernel_mut();
    let link = k.host.interface.as_ref().expect("link");
    assert!(
        !link.addresses.contains(&outside.ip()),
        "the outside VIP is the election's to hold, not the dummy interface's"
    );
    assert!(link.addresses.contains(&ep(VIP).ip()));
    assert_eq!(
        k.host.outside.iter().copied().collect::<Vec<_>>(),
        [outside]
    );
    let backends: Vec<String> = k
        .services
        .get(&outside)
        .expect("the outside virtual server")
        .dests
        .keys()
        .map(ToString::to_string)
        .collect();
    assert_eq!(backends, ["192.168.1.11:6443", "192.168.1.12:6443"]);
    let saved = state::load(dir.path()).expect("read").expect("saved");
    assert_eq!(
        saved
            .virtual_servers
            .iter()
            .map(|s| s.vip)
            .collect::<Vec<_>>(),
        [ep(VIP)],
        "the boot-time restore must never place the outside VIP"
    );
}
