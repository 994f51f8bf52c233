//! What the holder of the outside VIP does to the host, on a real kernel
//! (the host's; it has veth and bridges): the address held with a lifetime
//! that the kernel enforces, and the announcements (a client namespace
//! whose neighbour entry for the VIP points at another machine's MAC sees
//! it point at ours after one gratuitous ARP, and after one unsolicited
//! neighbour advertisement for IPv6). Run as root (`cargo xtask test` does);
//! without namespaces the tests panic, never pass.

use apiserver_proxy_dataplane::Rtnl;
use apiserver_proxy_dataplane::announce::Announcer;
use apiserver_proxy_testkit::kernel;
use apiserver_proxy_testkit::netns::Netns;

const ELSEWHERE: &str = "02:00:00:00:00:ff";

/// The MAC the client's neighbour table holds for `ip`, if any.
fn client_entry(client: &Netns, ip: &str) -> Option<String> {
    let out = client.exec_ok("ip", &["neigh", "show", ip, "dev", &client.ns_if]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "lladdr")
        .and_then(|i| words.get(i + 1))
        .map(|m| m.to_string())
}

/// Waits (up to 10 s) until neither end of the client's veth has a
/// tentative IPv6 address.
fn settle(client: &Netns) {
    for _ in 0..1000 {
        let ours = kernel::run(
            "ip",
            &["-6", "addr", "show", "dev", &client.host_if, "tentative"],
        );
        let theirs = client.exec_ok(
            "ip",
            &["-6", "addr", "show", "dev", &client.ns_if, "tentative"],
        );
        if ours.trim().is_empty() && theirs.trim().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the veth's IPv6 addresses stayed tentative");
}

fn mac_of(dev: &str) -> String {
    let out = kernel::run("ip", &["-br", "link", "show", dev]);
    out.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_client_entry_for_the_vip_moves_to_us_on_one_announcement() {
    let _netns = kernel::enter_without_ipvs();
    let client = Netns::new();
    let n = client.ipv4.octets()[2];
    let vip4 = format!("10.77.{n}.100");
    let vip6 = format!("fd77:0:0:{n:x}::100");
    kernel::run(
        "ip",
        &["addr", "add", &format!("{vip4}/32"), "dev", &client.host_if],
    );
    kernel::run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{vip6}/128"),
            "dev",
            &client.host_if,
            "nodad",
        ],
    );
    for vip in [&vip4, &vip6] {
        client.exec_ok(
            "ip",
            &[
                "neigh",
                "replace",
                vip,
                "lladdr",
                ELSEWHERE,
                "dev",
                &client.ns_if,
                "nud",
                "stale",
            ],
        );
        assert_eq!(client_entry(&client, vip).as_deref(), Some(ELSEWHERE));
    }

    // A veth this new is still running duplicate address detection on its
    // link-local addresses; an advertisement that arrived then was not
    // taken in (observed on 6.18). A node's interface is long past that.
    settle(&client);
    let a = Announcer::open(&client.host_if).expect("announcer");
    let ours = mac_of(&client.host_if);
    assert_eq!(
        a.mac()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        ours
    );
    a.announce_v4(vip4.parse().expect("v4"))
        .expect("gratuitous ARP");
    a.announce_v6(vip6.parse().expect("v6"))
        .expect("neighbour advertisement");
    for vip in [&vip4, &vip6] {
        // Delivery over a veth is synchronous with the send, but the
        // client's kernel processes it in its softirq: look a few times.
        let mut seen = None;
        for _ in 0..200 {
            seen = client_entry(&client, vip);
            if seen.as_deref() == Some(ours.as_str()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            seen.as_deref(),
            Some(ours.as_str()),
            "the client's entry for {vip}"
        );
    }
}

#[test]
fn an_unknown_interface_is_named() {
    let _netns = kernel::enter_without_ipvs();
    let e = Announcer::open("nosuch0").expect_err("no such interface");
    assert!(e.to_string().contains("\"nosuch0\" does not exist"), "{e}");
    // Loopback has no Ethernet address to announce with.
    let e = Announcer::open("lo").expect_err("no MAC");
    assert!(e.to_string().contains("no Ethernet address"), "{e}");
}

#[test]
fn a_held_address_lives_as_long_as_it_is_refreshed() {
    let _netns = kernel::enter_without_ipvs();
    kernel::run("ip", &["link", "add", "holder0", "type", "bridge"]);
    kernel::run("ip", &["link", "set", "holder0", "up"]);
    let mut rtnl = Rtnl::connect().expect("rtnetlink");
    for vip in ["192.168.1.100", "fd00::100"] {
        let ip = vip.parse().expect("ip");
        rtnl.hold_address("holder0", ip, 1).expect("hold");
        let shown = kernel::addresses_of("holder0");
        assert!(shown.contains(vip), "{vip} held: {shown}");
        // A refresh of what is there is not an error (NLM_F_REPLACE).
        rtnl.hold_address("holder0", ip, 1).expect("refresh");
        let line = kernel::run("ip", &["addr", "show", "dev", "holder0"]);
        assert!(
            line.contains("valid_lft 1sec") || line.contains("valid_lft 0sec"),
            "{vip}: a one-second lifetime, not forever: {line}"
        );
        // A refresh restarts the lifetime: held for 2 s, refreshed after
        // 1.5 s, it is still there 2.5 s after it was first set.
        rtnl.hold_address("holder0", ip, 2).expect("hold for 2 s");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        rtnl.hold_address("holder0", ip, 2).expect("refresh");
        std::thread::sleep(std::time::Duration::from_millis(1000));
        assert!(
            kernel::addresses_of("holder0").contains(vip),
            "{vip}: a refresh extends the lifetime"
        );
        // Not refreshed any more: the kernel removes it by itself.
        let mut gone = false;
        for _ in 0..1000 {
            if !kernel::addresses_of("holder0").contains(vip) {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(gone, "{vip} was never removed by its lifetime");
    }
    let e = rtnl
        .hold_address("nosuch0", "192.168.1.100".parse().expect("ip"), 1)
        .expect_err("no such interface");
    assert!(e.to_string().contains("\"nosuch0\" does not exist"), "{e}");
    for seconds in [0, u32::MAX] {
        let e = rtnl
            .hold_address("holder0", "192.168.1.100".parse().expect("ip"), seconds)
            .expect_err("not a finite lifetime");
        assert!(e.to_string().contains("not a finite lifetime"), "{e}");
    }
}
