//! Host change notifications, on this machine's own kernel in a private
//! network namespace (rtnetlink needs no IPVS): what someone changing the
//! node with `ip` makes the monitor see.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use apiserver_proxy_dataplane::{HostEvent, HostMonitor};
use apiserver_proxy_testkit::kernel::run;
use apiserver_proxy_testkit::netns;

/// Drains until `want` matches an event (or fails after a generous bound).
fn expect_event(m: &mut HostMonitor, what: &str, want: impl Fn(&HostEvent) -> bool) {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        let events = m.drain().expect("drain");
        if events.iter().any(&want) {
            return;
        }
        seen.extend(events);
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no event for {what}; saw {seen:?}");
}

#[test]
fn sees_addresses_routes_and_links_come_and_go() {
    netns::isolate();
    let mut m = HostMonitor::open().expect("subscribe");
    assert_eq!(
        m.drain().expect("nothing yet"),
        vec![],
        "a quiet host says nothing"
    );

    let vip: IpAddr = "10.103.97.2".parse().expect("ip");
    run("ip", &["addr", "add", "10.103.97.2/32", "dev", "lo"]);
    expect_event(
        &mut m,
        "address added",
        |e| matches!(e, HostEvent::Address { addr, removed: false, .. } if *addr == vip),
    );
    run("ip", &["addr", "del", "10.103.97.2/32", "dev", "lo"]);
    expect_event(
        &mut m,
        "address removed",
        |e| matches!(e, HostEvent::Address { addr, removed: true, .. } if *addr == vip),
    );

    let v6: IpAddr = "fd00::2".parse().expect("ip");
    run("ip", &["addr", "add", "fd00::2/128", "dev", "lo", "nodad"]);
    expect_event(
        &mut m,
        "IPv6 address added",
        |e| matches!(e, HostEvent::Address { addr, removed: false, .. } if *addr == v6),
    );

    run(
        "ip",
        &[
            "route",
            "add",
            "10.103.97.3/32",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ],
    );
    expect_event(
        &mut m,
        "route added",
        |e| matches!(e, HostEvent::Route { dst, prefix_len: 32, removed: false } if *dst == "10.103.97.3".parse::<IpAddr>().expect("ip")),
    );
    run("ip", &["route", "del", "10.103.97.3/32", "dev", "lo"]);
    expect_event(&mut m, "route removed", |e| {
        matches!(
            e,
            HostEvent::Route {
                removed: true,
                prefix_len: 32,
                ..
            }
        )
    });

    // The host kernel has veth but no dummy: a veth plays the interface.
    run(
        "ip",
        &[
            "link", "add", "apx0", "type", "veth", "peer", "name", "apx1",
        ],
    );
    run("ip", &["link", "set", "apx0", "up"]);
    expect_event(
        &mut m,
        "link up",
        |e| matches!(e, HostEvent::Link { name, up: true, removed: false, .. } if name == "apx0"),
    );
    run("ip", &["link", "set", "apx0", "down"]);
    expect_event(
        &mut m,
        "link down",
        |e| matches!(e, HostEvent::Link { name, up: false, removed: false, .. } if name == "apx0"),
    );
    run("ip", &["link", "del", "apx0"]);
    expect_event(
        &mut m,
        "link removed",
        |e| matches!(e, HostEvent::Link { name, removed: true, .. } if name == "apx0"),
    );
}
