//! Host change notifications against the host kernel, each test in a private
//! network namespace (veth, lo, addresses and routes exist there; dummy
//! interfaces do not, so the dummy case is the real-kernel test at the end).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use apiserver_proxy_dataplane::{HostEvent, HostMonitor, Rtnl};
use apiserver_proxy_testkit::kernel::run;
use apiserver_proxy_testkit::netns::isolate;

/// Generous upper bound for a notification to arrive; never a figure.
const WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

/// Drains until an event matching `want` arrives; panics with everything
/// seen if none does within [`WAIT`].
fn wait_for(mon: &mut HostMonitor, what: &str, want: impl Fn(&HostEvent) -> bool) -> HostEvent {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        for e in mon.drain().expect("drain") {
            if want(&e) {
                return e;
            }
            seen.push(e);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no {what} within {WAIT:?}; saw {seen:?}");
}

/// The interface's index in the calling thread's namespace (/sys/class/net
/// shows the mount's namespace, not the thread's).
fn index_of(name: &str) -> u32 {
    Rtnl::connect()
        .expect("rtnetlink")
        .link(name)
        .expect("look up link")
        .unwrap_or_else(|| panic!("no interface {name}"))
        .index
}

#[test]
fn drain_is_empty_and_does_not_block_when_nothing_happened() {
    isolate();
    let mut mon = HostMonitor::open().expect("open");
    // Nothing changes after open: the queue is empty and drain returns.
    assert_eq!(mon.drain().expect("drain"), Vec::new());
}

#[test]
fn address_added_and_removed_on_lo() {
    isolate();
    let mut mon = HostMonitor::open().expect("open");
    let lo = index_of("lo");
    run("ip", &["addr", "add", "10.96.0.1/32", "dev", "lo"]);
    wait_for(&mut mon, "address added", |e| {
        *e == HostEvent::Address {
            index: lo,
            addr: ip("10.96.0.1"),
            removed: false,
        }
    });
    run("ip", &["addr", "del", "10.96.0.1/32", "dev", "lo"]);
    wait_for(&mut mon, "address removed", |e| {
        *e == HostEvent::Address {
            index: lo,
            addr: ip("10.96.0.1"),
            removed: true,
        }
    });
    run("ip", &["addr", "add", "fd00:96::1/128", "dev", "lo"]);
    wait_for(&mut mon, "IPv6 address added", |e| {
        *e == HostEvent::Address {
            index: lo,
            addr: ip("fd00:96::1"),
            removed: false,
        }
    });
}

#[test]
fn control_plane_route_added_and_removed() {
    isolate();
    run("ip", &["addr", "add", "192.0.2.10/32", "dev", "lo"]);
    let mut mon = HostMonitor::open().expect("open");
    run(
        "ip",
        &[
            "route",
            "add",
            "10.96.0.1/32",
            "dev",
            "lo",
            "src",
            "192.0.2.10",
        ],
    );
    wait_for(&mut mon, "route added", |e| {
        *e == HostEvent::Route {
            dst: ip("10.96.0.1"),
            prefix_len: 32,
            removed: false,
        }
    });
    run("ip", &["route", "del", "10.96.0.1/32", "dev", "lo"]);
    wait_for(&mut mon, "route removed", |e| {
        *e == HostEvent::Route {
            dst: ip("10.96.0.1"),
            prefix_len: 32,
            removed: true,
        }
    });
}

#[test]
fn veth_down_and_deleted() {
    isolate();
    run(
        "ip",
        &[
            "link", "add", "mon0", "type", "veth", "peer", "name", "mon1",
        ],
    );
    run("ip", &["link", "set", "mon0", "up"]);
    let index = index_of("mon0");
    let mut mon = HostMonitor::open().expect("open");
    run("ip", &["link", "set", "mon0", "down"]);
    wait_for(&mut mon, "link down", |e| {
        *e == HostEvent::Link {
            index,
            name: "mon0".into(),
            up: false,
            removed: false,
        }
    });
    run("ip", &["link", "del", "mon0"]);
    wait_for(&mut mon, "link removed", |e| {
        matches!(e, HostEvent::Link { index: i, name, removed: true, .. }
            if *i == index && name == "mon0")
    });
}

#[test]
fn a_full_queue_is_reported_as_overrun() {
    isolate();
    let mon = HostMonitor::open().expect("open");
    // The kernel doubles the value and has a floor; the smallest queue
    // overflows after a few notifications.
    mon.set_recv_buffer(1).expect("shrink queue");
    let mut mon = mon;
    // Many changes without reading: each address brings an address and a
    // route notification.
    let mut batch = String::new();
    for i in 1..=200u32 {
        batch.push_str(&format!(
            "addr add 10.97.{}.{}/32 dev lo\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let path = std::env::temp_dir().join(format!("host-monitor-{}.batch", std::process::id()));
    std::fs::write(&path, batch).expect("write batch");
    run("ip", &["-batch", path.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&path);
    let events = mon.drain().expect("drain");
    assert!(
        events.contains(&HostEvent::Overrun),
        "200 changes into a minimal queue without an Overrun: {} events",
        events.len()
    );
}

#[test]
#[ignore = "real-kernel: dummy interfaces need the VM kernel"]
fn kernel_monitor_dummy_deleted() {
    let _ns = apiserver_proxy_testkit::kernel::enter();
    run("ip", &["link", "add", "apiproxy0", "type", "dummy"]);
    run("ip", &["link", "set", "apiproxy0", "up"]);
    let index = index_of("apiproxy0");
    let mut mon = HostMonitor::open().expect("open");
    run("ip", &["link", "set", "apiproxy0", "down"]);
    wait_for(&mut mon, "dummy down", |e| {
        *e == HostEvent::Link {
            index,
            name: "apiproxy0".into(),
            up: false,
            removed: false,
        }
    });
    run("ip", &["link", "del", "apiproxy0"]);
    wait_for(&mut mon, "dummy removed", |e| {
        matches!(e, HostEvent::Link { index: i, name, removed: true, .. }
            if *i == index && name == "apiproxy0")
    });
}
