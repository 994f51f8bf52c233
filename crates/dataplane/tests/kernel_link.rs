//! Real-kernel tests of the host side of the VIP: the dummy interface, the
//! VIP as an address or as a route, and the IPVS sysctls. Each test gets its
//! own network namespace; results are cross-checked with `ip -j`.

use std::net::IpAddr;

use apiserver_proxy_dataplane::{
    Change, DEFAULT_INTERFACE, Error, IpvsSysctl, Placement, Rtnl, Sysctls, link::LOOPBACK,
};
use apiserver_proxy_testkit::kernel::run;
use serde_json::Value;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

fn json(program_args: &[&str]) -> Value {
    let out = run("ip", program_args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip {program_args:?}: {e}: {out}"))
}

/// The addresses `ip -j addr show dev IFACE` reports, as (local, prefixlen).
fn ip_addrs(iface: &str) -> Vec<(IpAddr, u64)> {
    let v = json(&["-j", "addr", "show", "dev", iface]);
    let mut out = Vec::new();
    for link in v.as_array().expect("array") {
        for a in link["addr_info"].as_array().cloned().unwrap_or_default() {
            let local = a["local"].as_str().expect("local");
            out.push((ip(local), a["prefixlen"].as_u64().expect("prefixlen")));
        }
    }
    out
}

fn add_node_interface() -> (IpAddr, IpAddr) {
    // A second interface with this "node's" own addresses.
    run("ip", &["link", "add", "node0", "type", "dummy"]);
    run("ip", &["addr", "add", "192.0.2.10/24", "dev", "node0"]);
    run(
        "ip",
        &["addr", "add", "fd00:2::10/64", "dev", "node0", "nodad"],
    );
    run("ip", &["link", "set", "node0", "up"]);
    (ip("192.0.2.10"), ip("fd00:2::10"))
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn dummy_is_created_when_missing_and_left_alone_when_present() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    assert_eq!(rtnl.link(DEFAULT_INTERFACE).expect("look up"), None);

    let first = rtnl.ensure_dummy(DEFAULT_INTERFACE).expect("create");
    assert!(first.created, "{first:?}");
    assert!(first.link.up, "{first:?}");
    assert_eq!(first.link.kind.as_deref(), Some("dummy"));
    let v = json(&["-j", "-d", "link", "show", DEFAULT_INTERFACE]);
    assert_eq!(v[0]["linkinfo"]["info_kind"], "dummy", "{v}");
    let flags = v[0]["flags"].to_string();
    assert!(flags.contains("\"UP\""), "{flags}");

    let second = rtnl.ensure_dummy(DEFAULT_INTERFACE).expect("again");
    assert!(!second.created && !second.brought_up, "{second:?}");
    assert_eq!(second.link.index, first.link.index);

    run(
        "ip",
        &[
            "link", "add", "other0", "type", "veth", "peer", "name", "other1",
        ],
    );
    // An existing interface of another kind is refused, not used: a VIP
    // on it would be announced on its network.
    let err = rtnl
        .ensure_dummy("other0")
        .expect_err("a veth is not ours")
        .to_string();
    assert!(err.contains("a veth interface, not a dummy"), "{err}");

    let err = rtnl
        .ensure_dummy("much-too-long-name")
        .expect_err("invalid");
    assert!(matches!(err, Error::InvalidInterfaceName { .. }), "{err:?}");

    assert_eq!(
        rtnl.delete_link(DEFAULT_INTERFACE).expect("del"),
        Change::Removed
    );
    assert_eq!(
        rtnl.delete_link(DEFAULT_INTERFACE).expect("del again"),
        Change::AlreadyAbsent
    );
    let out = std::process::Command::new("ip")
        .args(["link", "show", DEFAULT_INTERFACE])
        .output()
        .expect("ip");
    assert!(!out.status.success(), "the dummy is gone");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn vip_address_add_and_del_are_idempotent_v4_and_v6() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    rtnl.ensure_dummy(DEFAULT_INTERFACE).expect("dummy");
    let v4 = ip("10.103.97.2");
    let v6 = ip("fd00:103::2");

    for vip in [v4, v6] {
        let full = if vip.is_ipv4() { 32 } else { 128 };
        assert_eq!(
            rtnl.add_vip(DEFAULT_INTERFACE, vip).expect("add"),
            Change::Added
        );
        assert_eq!(
            rtnl.add_vip(DEFAULT_INTERFACE, vip).expect("add again"),
            Change::AlreadyPresent
        );
        assert!(ip_addrs(DEFAULT_INTERFACE).contains(&(vip, full)), "{vip}");
        let ours = rtnl.addresses(DEFAULT_INTERFACE).expect("list");
        assert!(
            ours.iter()
                .any(|a| a.addr == vip && u64::from(a.prefix_len) == full),
            "{ours:?}"
        );
    }
    // IPv6 without DAD: usable at once, never "tentative".
    let v = json(&["-j", "-6", "addr", "show", "dev", DEFAULT_INTERFACE]);
    let text = v.to_string();
    assert!(!text.contains("tentative"), "{text}");
    // A connect to the VIP works right away (it is a local address).
    let l = std::net::TcpListener::bind((v6, 7000)).expect("bind the v6 VIP at once");
    drop(l);

    for vip in [v4, v6] {
        assert_eq!(
            rtnl.del_vip(DEFAULT_INTERFACE, vip).expect("del"),
            Change::Removed
        );
        assert_eq!(
            rtnl.del_vip(DEFAULT_INTERFACE, vip).expect("del again"),
            Change::AlreadyAbsent
        );
        assert!(!ip_addrs(DEFAULT_INTERFACE).iter().any(|(a, _)| *a == vip));
    }
    // No interface at all: deleting is a no-op, adding says what is wrong.
    assert_eq!(
        rtnl.del_vip("nosuch0", v4).expect("no interface"),
        Change::AlreadyAbsent
    );
    let err = rtnl.add_vip("nosuch0", v4).expect_err("no interface");
    assert!(matches!(err, Error::InterfaceNotFound { .. }), "{err:?}");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn route_mode_vip_is_a_route_via_lo_with_the_node_ip_as_source() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    rtnl.ensure_dummy(DEFAULT_INTERFACE).expect("dummy");
    let (node4, node6) = add_node_interface();

    // The kernel's own choice of source towards a backend on that link.
    assert_eq!(rtnl.preferred_source(ip("192.0.2.20")).expect("src"), node4);
    assert_eq!(rtnl.preferred_source(ip("fd00:2::20")).expect("src"), node6);
    // Towards the node itself (a local apiserver): its own address.
    assert_eq!(rtnl.preferred_source(node4).expect("src"), node4);

    let vip = ip("10.103.97.2");
    let mode = Placement::Route { src: node4 };
    // Start from address mode: switching removes the address.
    rtnl.ensure_vip(DEFAULT_INTERFACE, vip, Placement::Address)
        .expect("address mode");
    assert_eq!(
        rtnl.ensure_vip(DEFAULT_INTERFACE, vip, mode)
            .expect("route"),
        Change::Added
    );
    assert!(!ip_addrs(DEFAULT_INTERFACE).iter().any(|(a, _)| *a == vip));
    assert_eq!(
        rtnl.ensure_vip(DEFAULT_INTERFACE, vip, mode)
            .expect("again"),
        Change::AlreadyPresent
    );
    let routes = json(&[
        "-4",
        "-j",
        "route",
        "show",
        "table",
        "main",
        "exact",
        "10.103.97.2",
    ]);
    assert_eq!(routes.as_array().map(Vec::len), Some(1), "{routes}");
    assert_eq!(routes[0]["dev"], "lo", "{routes}");
    assert_eq!(routes[0]["prefsrc"], node4.to_string(), "{routes}");
    assert_eq!(routes[0]["scope"], "link", "{routes}");
    let get = json(&["-4", "-j", "route", "get", "10.103.97.2"]);
    assert_eq!(get[0]["dev"], "lo", "{get}");
    assert_eq!(get[0]["prefsrc"], node4.to_string(), "{get}");
    let listed = rtnl.vip_routes(vip).expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].prefsrc, Some(node4));

    // A source that is not ours is refused with a clear error.
    let err = rtnl
        .add_vip_route(LOOPBACK, vip, ip("198.51.100.1"))
        .expect_err("foreign source");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    // A source of another family is refused before asking the kernel.
    let err = rtnl
        .add_vip_route(LOOPBACK, vip, node6)
        .expect_err("mixed families");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");

    // Back to address mode removes the route; then clean up.
    assert_eq!(
        rtnl.ensure_vip(DEFAULT_INTERFACE, vip, Placement::Address)
            .expect("address"),
        Change::Added
    );
    assert!(rtnl.vip_routes(vip).expect("list").is_empty());
    assert_eq!(
        rtnl.ensure_vip(DEFAULT_INTERFACE, vip, mode)
            .expect("route"),
        Change::Added
    );
    assert_eq!(
        rtnl.remove_vip(DEFAULT_INTERFACE, vip, mode)
            .expect("remove"),
        Change::Removed
    );
    assert_eq!(
        rtnl.remove_vip(DEFAULT_INTERFACE, vip, mode)
            .expect("remove again"),
        Change::AlreadyAbsent
    );
    let routes = json(&[
        "-4",
        "-j",
        "route",
        "show",
        "table",
        "main",
        "exact",
        "10.103.97.2",
    ]);
    assert_eq!(routes.as_array().map(Vec::len), Some(0), "{routes}");

    // IPv6 has no route-only mode (routes via lo are reject routes there).
    let vip6 = ip("fd00:103::2");
    let err = rtnl
        .ensure_vip(DEFAULT_INTERFACE, vip6, Placement::Route { src: node6 })
        .expect_err("v6 route mode");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    // The route primitive itself works for IPv6 on any device.
    assert_eq!(
        rtnl.add_vip_route(DEFAULT_INTERFACE, vip6, node6)
            .expect("v6 route"),
        Change::Added
    );
    assert_eq!(
        rtnl.add_vip_route(DEFAULT_INTERFACE, vip6, node6)
            .expect("v6 again"),
        Change::AlreadyPresent
    );
    let routes = json(&[
        "-6",
        "-j",
        "route",
        "show",
        "table",
        "main",
        "exact",
        "fd00:103::2",
    ]);
    assert_eq!(routes.as_array().map(Vec::len), Some(1), "{routes}");
    assert_eq!(routes[0]["dev"], DEFAULT_INTERFACE, "{routes}");
    assert_eq!(routes[0]["prefsrc"], node6.to_string(), "{routes}");
    assert_eq!(
        rtnl.del_vip_route(DEFAULT_INTERFACE, vip6).expect("del"),
        Change::Removed
    );
    assert_eq!(
        rtnl.del_vip_route(DEFAULT_INTERFACE, vip6)
            .expect("del again"),
        Change::AlreadyAbsent
    );
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn a_changed_route_source_is_replaced() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    rtnl.ensure_dummy(DEFAULT_INTERFACE).expect("dummy");
    let (node4, _) = add_node_interface();
    run("ip", &["addr", "add", "192.0.2.11/24", "dev", "node0"]);
    let vip = ip("10.103.97.2");
    assert_eq!(
        rtnl.add_vip_route(DEFAULT_INTERFACE, vip, node4)
            .expect("add"),
        Change::Added
    );
    assert_eq!(
        rtnl.add_vip_route(DEFAULT_INTERFACE, vip, ip("192.0.2.11"))
            .expect("replace"),
        Change::Replaced
    );
    let routes = rtnl.vip_routes(vip).expect("list");
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].prefsrc, Some(ip("192.0.2.11")));
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn ipvs_sysctls_report_previous_value_and_write_only_when_different() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let sysctls = Sysctls::new();
    let sysctl_n = |name: &str| run("sysctl", &["-n", name]).trim().to_owned();
    for s in IpvsSysctl::ALL {
        let start = sysctls.read(s).expect("read");
        assert_eq!(start.to_string(), sysctl_n(s.name()), "{}", s.name());
        let target = if start == 0 { 1 } else { 0 };

        let set = sysctls.ensure(s, target).expect("set");
        assert_eq!(
            (set.previous, set.current, set.written),
            (start, target, true)
        );
        assert_eq!(sysctl_n(s.name()), target.to_string());

        let same = sysctls.ensure(s, target).expect("set again");
        assert_eq!(
            (same.previous, same.current, same.written),
            (target, target, false)
        );

        let back = sysctls.ensure(s, start).expect("restore");
        assert_eq!((back.previous, back.written), (target, true));
        assert_eq!(sysctl_n(s.name()), start.to_string());
    }
    // The sysctls are per network namespace: a fresh one starts from the
    // defaults again, whatever this one holds.
    sysctls.ensure(IpvsSysctl::Conntrack, 1).expect("set");
    let fresh = std::thread::spawn(|| {
        let _inner = apiserver_proxy_testkit::kernel::enter();
        Sysctls::new().read(IpvsSysctl::Conntrack).expect("read")
    })
    .join()
    .expect("thread");
    assert_eq!(fresh, 0);
    assert_eq!(sysctls.read(IpvsSysctl::Conntrack).expect("read"), 1);
}
