//! Real traffic through the VIP: TLS apiservers in network namespaces behind
//! an IPVS service on the VIP, and many TLS connections from the node (the
//! test's own namespace) to the VIP. Every connection must succeed, and the
//! connections must spread over every backend.
//!
//! Layouts:
//! - worker node: VIP as a local address on the dummy, three remote backends;
//! - control-plane node: the node itself is one backend (a server on the
//!   node's own address), VIP as a route only (`Placement::Route`);
//! - both again behind a firewall that drops `ct state invalid`, which needs
//!   `net.ipv4.vs.conntrack=1`;
//! - IPv6.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver_proxy_dataplane::{
    DEFAULT_INTERFACE, DestSpec, Ipvs, IpvsSysctl, Placement, Rtnl, ServiceKey, ServiceSpec,
    Sysctls,
};
use apiserver_proxy_testkit::kernel::run;
use apiserver_proxy_testkit::netns::Netns;
use apiserver_proxy_testkit::tls::{self, Ca};
use rustls::pki_types::ServerName;

const BACKEND_PORT: u16 = 6443;
const VIP_PORT: u16 = 443;
/// Connections per layout: 20 rounds over three backends.
const CONNECTIONS: usize = 60;
const TIMEOUT: Duration = Duration::from_secs(5);

fn vip(v6: bool) -> IpAddr {
    let s = if v6 { "fd00:103::2" } else { "10.103.97.2" };
    s.parse().expect("ip literal")
}

/// Serves TLS on `listener` (whatever namespace it was bound in): reads one
/// line, answers `identity`, closes.
fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, identity: String) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            let config = Arc::clone(&config);
            let identity = identity.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(TIMEOUT));
                let _ = tcp.set_write_timeout(Some(TIMEOUT));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 64];
                if matches!(tls.read(&mut buf), Ok(n) if n > 0) {
                    let _ = tls.write_all(identity.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
}

/// Starts an apiserver in `ns`, listening on both families; returns its
/// identity.
fn remote_backend(ns: &Netns, ca: &Ca) -> String {
    let identity = format!("remote-{}", ns.ipv4);
    let listener = ns
        .spawn(|| TcpListener::bind(("::", BACKEND_PORT)))
        .join()
        .expect("join")
        .expect("bind in the backend namespace");
    let cert = ca.apiserver_cert(&[ns.ip(false), ns.ip(true)]);
    serve(listener, tls::server_config(&cert, None), identity.clone());
    identity
}

/// Starts an apiserver on this node (the test's namespace), on `addr`.
fn local_backend(addr: IpAddr, ca: &Ca) -> String {
    let identity = format!("local-{addr}");
    let listener = TcpListener::bind((addr, BACKEND_PORT)).expect("bind on the node");
    let cert = ca.apiserver_cert(&[addr]);
    serve(listener, tls::server_config(&cert, None), identity.clone());
    identity
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(ca.root_store())
            .with_no_client_auth(),
    )
}

/// One TLS connection: handshake (verifying `kubernetes` against the CA),
/// ask, read the backend's identity.
fn fetch_identity(
    to: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<String, String> {
    let tcp = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("kubernetes").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::clone(config), name)
        .map_err(|e| format!("tls client: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"who\n")
        .map_err(|e| format!("handshake/write: {e}"))?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if answer.is_empty() {
        return Err("empty answer".into());
    }
    Ok(answer)
}

#[derive(Debug, Default)]
struct Tally {
    per_backend: BTreeMap<String, usize>,
    failures: Vec<String>,
}

fn hammer(
    to: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    n: usize,
    timeout: Duration,
) -> Tally {
    let mut tally = Tally::default();
    for i in 0..n {
        match fetch_identity(to, config, timeout) {
            Ok(id) => *tally.per_backend.entry(id).or_default() += 1,
            Err(e) => tally.failures.push(format!("#{i}: {e}")),
        }
    }
    tally
}

/// The VIP on the dummy in `mode`, an IPVS service VIP:443 rr with the
/// backends as masquerade destinations (weight 1).
fn program_vip(
    rtnl: &mut Rtnl,
    ipvs: &Ipvs,
    vip: IpAddr,
    mode: Placement,
    backends: &[IpAddr],
) -> ServiceKey {
    rtnl.ensure_dummy(DEFAULT_INTERFACE).expect("dummy");
    rtnl.ensure_vip(DEFAULT_INTERFACE, vip, mode)
        .expect("VIP on the dummy");
    let key = ServiceKey::tcp(SocketAddr::new(vip, VIP_PORT));
    ipvs.new_service(&ServiceSpec::new(key, "rr"))
        .expect("IPVS service");
    for b in backends {
        ipvs.new_dest(&key, &DestSpec::new(SocketAddr::new(*b, BACKEND_PORT), 1))
            .expect("IPVS destination");
    }
    key
}

fn unprogram_vip(rtnl: &mut Rtnl, ipvs: &Ipvs, key: ServiceKey, mode: Placement) {
    ipvs.del_service(&key).expect("delete IPVS service");
    rtnl.remove_vip(DEFAULT_INTERFACE, key.addr.ip(), mode)
        .expect("remove VIP");
}

/// Runs [`CONNECTIONS`] connections to the VIP and checks that all succeed
/// and that round robin spread them evenly over `identities`.
fn assert_all_succeed_and_spread(
    label: &str,
    key: ServiceKey,
    config: &Arc<rustls::ClientConfig>,
    identities: &[String],
) {
    let started = Instant::now();
    let tally = hammer(key.addr, config, CONNECTIONS, TIMEOUT);
    eprintln!(
        "[{label}] {CONNECTIONS} TLS connections to {} in {:?}: per backend {:?}, failures {}",
        key.addr,
        started.elapsed(),
        tally.per_backend,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "[{label}] failed connections: {:?}",
        tally.failures
    );
    for id in identities {
        let got = tally.per_backend.get(id).copied().unwrap_or(0);
        assert_eq!(
            got,
            CONNECTIONS / identities.len(),
            "[{label}] rr spreads evenly: {:?}",
            tally.per_backend
        );
    }
    assert_eq!(
        tally.per_backend.len(),
        identities.len(),
        "{:?}",
        tally.per_backend
    );
}

struct Cluster {
    ca: Ca,
    config: Arc<rustls::ClientConfig>,
    namespaces: Vec<Netns>,
    remote_ids: Vec<String>,
}

/// Three apiserver namespaces joined to the test's namespace by veths.
fn three_apiservers() -> Cluster {
    let ca = Ca::new("kubernetes");
    let namespaces: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
    let remote_ids = namespaces
        .iter()
        .map(|ns| remote_backend(ns, &ca))
        .collect();
    let config = client_config(&ca);
    Cluster {
        ca,
        config,
        namespaces,
        remote_ids,
    }
}

/// Worker node: VIP as a local address, three remote apiservers.
fn worker_layout(cluster: &Cluster, v6: bool, label: &str) {
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    let ipvs = Ipvs::connect().expect("ipvs");
    let backends: Vec<IpAddr> = cluster.namespaces.iter().map(|ns| ns.ip(v6)).collect();
    let key = program_vip(&mut rtnl, &ipvs, vip(v6), Placement::Address, &backends);
    assert_all_succeed_and_spread(label, key, &cluster.config, &cluster.remote_ids);
    unprogram_vip(&mut rtnl, &ipvs, key, Placement::Address);
}

/// Control-plane node: the node's own address (the test side of the first
/// veth) serves as one apiserver, the other two namespaces as the others.
/// With `route_only` the VIP is a route via `lo` with the node's address as
/// source (IPv4 only), otherwise a local address on the dummy.
fn control_plane_layout(cluster: &Cluster, v6: bool, route_only: bool, label: &str) {
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    let ipvs = Ipvs::connect().expect("ipvs");
    let first = &cluster.namespaces[0];
    let node_ip = if v6 {
        IpAddr::V6(first.peer_ipv6)
    } else {
        IpAddr::V4(first.peer_ipv4)
    };
    let local_id = local_backend(node_ip, &cluster.ca);
    // What the proxy does: ask the kernel which source it uses towards the
    // local apiserver's address (the node IP).
    let src = rtnl.preferred_source(node_ip).expect("preferred source");
    assert_eq!(src, node_ip);
    let mode = if route_only {
        Placement::Route { src }
    } else {
        Placement::Address
    };
    let backends = [
        node_ip,
        cluster.namespaces[1].ip(v6),
        cluster.namespaces[2].ip(v6),
    ];
    let key = program_vip(&mut rtnl, &ipvs, vip(v6), mode, &backends);
    let ids = [
        local_id,
        cluster.remote_ids[1].clone(),
        cluster.remote_ids[2].clone(),
    ];
    assert_all_succeed_and_spread(label, key, &cluster.config, &ids);
    unprogram_vip(&mut rtnl, &ipvs, key, mode);
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn worker_node_tls_through_the_vip_reaches_all_three_apiservers() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let cluster = three_apiservers();
    worker_layout(&cluster, false, "worker v4");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn control_plane_node_with_route_only_vip_loses_no_connection() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let cluster = three_apiservers();
    control_plane_layout(
        &cluster,
        false,
        true,
        "control-plane v4, route-only VIP via lo",
    );
}

/// Measured on Debian's 6.1 kernel, contrary to our earlier notes: with the
/// VIP as a local address, a control-plane node loses no connection either.
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn control_plane_node_with_vip_as_address_loses_no_connection() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let cluster = three_apiservers();
    control_plane_layout(&cluster, false, false, "control-plane v4, VIP as address");
}

/// Why the route-only VIP goes via `lo`: via the dummy, every connection
/// IPVS schedules to the node's own apiserver vanishes (IPVS keeps the
/// packet's original route, which leads into the dummy).
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn route_via_the_dummy_loses_every_connection_to_the_local_apiserver() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let cluster = three_apiservers();
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    let ipvs = Ipvs::connect().expect("ipvs");
    let node_ip = IpAddr::V4(cluster.namespaces[0].peer_ipv4);
    let local_id = local_backend(node_ip, &cluster.ca);
    rtnl.ensure_dummy(DEFAULT_INTERFACE).expect("dummy");
    rtnl.add_vip_route(DEFAULT_INTERFACE, vip(false), node_ip)
        .expect("route via the dummy");
    let key = ServiceKey::tcp(SocketAddr::new(vip(false), VIP_PORT));
    ipvs.new_service(&ServiceSpec::new(key, "rr"))
        .expect("IPVS service");
    for b in [
        node_ip,
        cluster.namespaces[1].ip(false),
        cluster.namespaces[2].ip(false),
    ] {
        ipvs.new_dest(&key, &DestSpec::new(SocketAddr::new(b, BACKEND_PORT), 1))
            .expect("IPVS destination");
    }
    let tally = hammer(key.addr, &cluster.config, 6, Duration::from_secs(2));
    eprintln!(
        "[control-plane v4, route via the dummy] 6 connections: per backend {:?}, failures {:?}",
        tally.per_backend, tally.failures
    );
    assert_eq!(tally.failures.len(), 2, "{tally:?}");
    assert!(!tally.per_backend.contains_key(&local_id), "{tally:?}");
    assert_eq!(tally.per_backend.values().sum::<usize>(), 4, "{tally:?}");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn conntrack_state_firewall_works_with_vs_conntrack_on() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let cluster = three_apiservers();
    apiserver_proxy_testkit::kernel::ct_state_firewall();
    let sysctls = Sysctls::new();

    // Without vs.conntrack the firewall drops the replies.
    let off = sysctls.ensure(IpvsSysctl::Conntrack, 0).expect("sysctl");
    assert_eq!(off.previous, 0, "a fresh namespace starts with conntrack=0");
    {
        let mut rtnl = Rtnl::connect().expect("rtnetlink");
        let ipvs = Ipvs::connect().expect("ipvs");
        let backends: Vec<IpAddr> = cluster.namespaces.iter().map(|ns| ns.ip(false)).collect();
        let key = program_vip(&mut rtnl, &ipvs, vip(false), Placement::Address, &backends);
        let tally = hammer(key.addr, &cluster.config, 3, Duration::from_secs(2));
        eprintln!(
            "[firewall, vs.conntrack=0] 3 connections: per backend {:?}, failures {:?}",
            tally.per_backend, tally.failures
        );
        assert_eq!(
            tally.failures.len(),
            3,
            "the ct-state rule must bite without vs.conntrack: {tally:?}"
        );
        unprogram_vip(&mut rtnl, &ipvs, key, Placement::Address);
    }

    let on = sysctls.ensure(IpvsSysctl::Conntrack, 1).expect("sysctl");
    assert!(on.written && on.previous == 0, "{on:?}");
    worker_layout(&cluster, false, "worker v4 behind ct-state firewall");
    control_plane_layout(
        &cluster,
        false,
        true,
        "control-plane v4, route-only VIP via lo, behind ct-state firewall",
    );
    eprintln!("{}", run("nft", &["list", "table", "inet", "nodefw"]));
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn ipv6_worker_and_control_plane_layouts() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let cluster = three_apiservers();
    worker_layout(&cluster, true, "worker v6");
    // IPv6 has no route-only mode: the control plane holds the VIP as address.
    control_plane_layout(&cluster, true, false, "control-plane v6, VIP as address");
}
