//! Golden tests: rtnetlink notifications a real kernel multicast (see
//! `tests/golden/rtnl_notify.rs` for how they were captured) parse to the
//! events the commands that caused them mean.

use std::net::IpAddr;

use apiserver_proxy_dataplane::monitor::parse_notifications;
use apiserver_proxy_dataplane::{Error, HostEvent};

#[path = "golden/rtnl_notify.rs"]
mod golden;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

fn parse(s: &str) -> Vec<HostEvent> {
    parse_notifications(&hex(s)).expect("golden datagram parses")
}

#[test]
fn address_notifications() {
    // lo is interface 1 in every namespace.
    assert_eq!(
        parse(golden::ADDR_ADD_V4),
        [HostEvent::Address {
            index: 1,
            addr: ip("10.96.0.1"),
            removed: false
        }]
    );
    assert_eq!(
        parse(golden::ADDR_DEL_V4),
        [HostEvent::Address {
            index: 1,
            addr: ip("10.96.0.1"),
            removed: true
        }]
    );
    assert_eq!(
        parse(golden::ADDR_ADD_V6),
        [HostEvent::Address {
            index: 1,
            addr: ip("fd00:96::1"),
            removed: false
        }]
    );
}

#[test]
fn route_notifications() {
    assert_eq!(
        parse(golden::ROUTE_ADD_V4),
        [HostEvent::Route {
            dst: ip("10.96.0.1"),
            prefix_len: 32,
            removed: false
        }]
    );
    assert_eq!(
        parse(golden::ROUTE_DEL_V4),
        [HostEvent::Route {
            dst: ip("10.96.0.1"),
            prefix_len: 32,
            removed: true
        }]
    );
    assert_eq!(
        parse(golden::ROUTE_ADD_V6),
        [HostEvent::Route {
            dst: ip("fd00:96::1"),
            prefix_len: 128,
            removed: false
        }]
    );
}

#[test]
fn link_notifications() {
    let down = parse(golden::LINK_DOWN);
    let [
        HostEvent::Link {
            name, up, removed, ..
        },
    ] = &down[..]
    else {
        panic!("one link event expected: {down:?}");
    };
    assert_eq!((name.as_str(), *up, *removed), ("mon0", false, false));
    let del = parse(golden::LINK_DEL);
    let [HostEvent::Link { name, removed, .. }] = &del[..] else {
        panic!("one link event expected: {del:?}");
    };
    assert_eq!((name.as_str(), *removed), ("mon0", true));
}

#[test]
fn truncated_notifications_are_errors_not_panics() {
    for golden in [golden::ADDR_ADD_V4, golden::ROUTE_ADD_V6, golden::LINK_DOWN] {
        let bytes = hex(golden);
        for cut in 1..bytes.len() {
            let mut b = bytes[..cut].to_vec();
            // Keep the header's length honest so the cut reaches the payload
            // parser, not only the framing check.
            if b.len() >= 4 {
                let len = u32::try_from(b.len()).expect("small").to_ne_bytes();
                b[..4].copy_from_slice(&len);
            }
            match parse_notifications(&b) {
                Ok(_) | Err(Error::Decode { .. }) => {}
                Err(e) => panic!("cut at {cut}: unexpected error kind {e}"),
            }
        }
    }
}
