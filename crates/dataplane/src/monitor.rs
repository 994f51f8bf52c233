//! Notifications of changes to the host's interfaces, addresses and routes
//! (rtnetlink multicast), so that the manager repairs a deleted VIP, a
//! deleted or downed interface or a deleted route as soon as it happens,
//! not on its next timer tick.
//!
//! [`HostMonitor::wait`] blocks until the kernel announces something, then
//! returns everything queued; the manager runs it on a thread of its own
//! (waiting on the raw descriptor in the async runtime would need `unsafe`).
//! [`HostMonitor::drain`] never blocks.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::error::{Error, Result};
use crate::link::{parse_address, parse_link, parse_route, split_messages};

// Multicast groups (`enum rtnetlink_groups` in include/uapi/linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

// Message types (include/uapi/linux/rtnetlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

const ENOBUFS: i32 = 105;

/// One change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    Link {
        index: u32,
        name: String,
        up: bool,
        removed: bool,
    },
    Address {
        index: u32,
        addr: IpAddr,
        removed: bool,
    },
    Route {
        dst: IpAddr,
        prefix_len: u8,
        removed: bool,
    },
    /// The kernel dropped notifications (the socket's buffer overflowed):
    /// the reader must re-check everything.
    Overrun,
}

/// Parses one datagram of notifications. Messages of other types (and
/// routes without a destination: default routes) are skipped; a malformed
/// message is an error naming what is wrong.
pub fn parse_events(datagram: &[u8]) -> Result<Vec<HostEvent>> {
    let op = "read host notifications";
    let bad = |detail: String| Error::Netlink { op, detail };
    let mut out = Vec::new();
    for m in split_messages(datagram).map_err(bad)? {
        let removed = matches!(m.ty, RTM_DELLINK | RTM_DELADDR | RTM_DELROUTE);
        match m.ty {
            RTM_NEWLINK | RTM_DELLINK => {
                let l = parse_link(m.payload).map_err(bad)?;
                out.push(HostEvent::Link {
                    index: l.index,
                    name: l.name,
                    up: l.up,
                    removed,
                });
            }
            RTM_NEWADDR | RTM_DELADDR => {
                let (index, a) = parse_address(m.payload).map_err(bad)?;
                out.push(HostEvent::Address {
                    index,
                    addr: a.addr,
                    removed,
                });
            }
            RTM_NEWROUTE | RTM_DELROUTE => {
                let r = parse_route(m.payload).map_err(bad)?;
                if let Some(dst) = r.dst {
                    out.push(HostEvent::Route {
                        dst,
                        prefix_len: r.dst_len,
                        removed,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A non-blocking rtnetlink socket joined to the link, address and route
/// groups, in the network namespace of the thread that opened it.
pub struct HostMonitor {
    sock: NlSocket,
    buf: Vec<u8>,
}

impl std::fmt::Debug for HostMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMonitor")
            .field("fd", &self.sock.as_raw_fd())
            .finish()
    }
}

impl HostMonitor {
    pub fn open() -> Result<HostMonitor> {
        let op = "subscribe to host notifications";
        let groups = Groups::new_groups(&[
            RTNLGRP_LINK,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
        ]);
        let sock = NlSocket::connect(NlFamily::Route, None, groups)
            .map_err(|source| Error::Io { op, source })?;
        Ok(HostMonitor {
            sock,
            // A notification datagram is one message, at most a page or so.
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits for the next notification, then returns it with everything
    /// else queued by then.
    pub fn wait(&mut self) -> Result<Vec<HostEvent>> {
        let op = "wait for host notifications";
        self.sock
            .block()
            .map_err(|source| Error::Io { op, source })?;
        let mut out = Vec::new();
        self.receive(&mut out)?;
        let mut rest = self.drain()?;
        out.append(&mut rest);
        Ok(out)
    }

    /// Every notification queued now, parsed; empty if none. Never blocks.
    pub fn drain(&mut self) -> Result<Vec<HostEvent>> {
        let op = "read host notifications";
        self.sock
            .nonblock()
            .map_err(|source| Error::Io { op, source })?;
        let mut out = Vec::new();
        while self.receive(&mut out)? {}
        Ok(out)
    }

    /// Receives one datagram into `out`; false when none was queued (on a
    /// non-blocking socket).
    fn receive(&mut self, out: &mut Vec<HostEvent>) -> Result<bool> {
        let op = "read host notifications";
        loop {
            return match self.sock.recv(&mut self.buf[..], Msg::empty()) {
                Ok((n, _)) => {
                    let n = n.min(self.buf.len());
                    out.extend(parse_events(&self.buf[..n])?);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The socket's buffer overflowed and notifications were
                // lost; the socket stays usable.
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    if out.last() != Some(&HostEvent::Overrun) {
                        out.push(HostEvent::Overrun);
                    }
                    Ok(true)
                }
                Err(source) => Err(Error::Io { op, source }),
            };
        }
    }
}

impl AsRawFd for HostMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // Datagrams the kernel (6.18) sent to a socket joined to the link,
    // address and route groups, in a fresh `unshare -n` namespace with `lo` up.

    /// `ip addr add 10.103.97.2/32 dev lo`, then `ip addr del ...`.
    const NEWADDR: &str = "4c000000140000003bf9126bef2d00000220800001000000080001000a676102080002000a676102070003006c6f0000080008008000000014000600ffffffffffffffffa8d50300a8d50300";
    const DELADDR: &str = "4c000000150000003cf9126bf42d00000220800001000000080001000a676102080002000a676102070003006c6f0000080008008000000014000600ffffffffffffffffa8d50300a8d50300";
    /// `ip route add 10.103.97.3/32 dev lo src 127.0.0.1`, then `ip route del ...`.
    const NEWROUTE: &str = "3c000000180000063df9126bfa2d000002200000fe03fd010000000008000f00fe000000080001000a676103080007007f0000010800040001000000";
    const DELROUTE: &str = "3c000000190000003ef9126b8d2e000002200000fe03fd010000000008000f00fe000000080001000a676103080007007f0000010800040001000000";
    /// The local table's route for the address `ip addr add 10.103.97.2/32 dev lo` adds.
    const LOCAL_ROUTE: &str = "3c00000018000006000000000000000002200000ff02fe020000000008000f00ff000000080001000a676102080007000a6761020800040001000000";
    /// `ip link del apx0` of a veth pair made by `ip link add apx0 type veth peer name apx1`.
    const DELLINK: &[&str] = &[
        "ac020000110000000000000000000000000001000300000002100000ffffffff09000300617078300000000008000d00",
        "e803000005001000020000000500110000000000050043000000000008000400dc050000080032004400000008003300",
        "ffff000008001b000000000008001e000000000008003d000000000008001f000200000008002800ffff000008002900",
        "0000010008003a000000010008003f0000000100080040000000010008003b00f8ff070008003c00ffff000008004200",
        "0000000008002000020000000500210000000000080023000100000008002f0000000000080030000100000006004400",
        "00000000060045000000000005002700000000000a000100aa9389dd086000000a000200ffffffffffff0000cc001700",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000064000700000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000c002b000500020000000000100012000900010076657468000000000800050000000000",
        "090006006e6f6f700000000004001a0024000e0000000000000000000000000000000000000000000000000000000000",
        "0000000004003e8004004180",
    ];

    #[test]
    fn parses_address_route_and_link_notifications_from_the_kernel() {
        let vip: IpAddr = "10.103.97.2".parse().expect("ip");
        assert_eq!(
            parse_events(&hex(NEWADDR)).expect("newaddr"),
            vec![HostEvent::Address {
                index: 1,
                addr: vip,
                removed: false
            }]
        );
        assert_eq!(
            parse_events(&hex(DELADDR)).expect("deladdr"),
            vec![HostEvent::Address {
                index: 1,
                addr: vip,
                removed: true
            }]
        );
        let route = |removed| {
            vec![HostEvent::Route {
                dst: "10.103.97.3".parse().expect("ip"),
                prefix_len: 32,
                removed,
            }]
        };
        assert_eq!(
            parse_events(&hex(NEWROUTE)).expect("newroute"),
            route(false)
        );
        assert_eq!(parse_events(&hex(DELROUTE)).expect("delroute"), route(true));
        assert_eq!(
            parse_events(&hex(LOCAL_ROUTE)).expect("local"),
            vec![HostEvent::Route {
                dst: vip,
                prefix_len: 32,
                removed: false
            }]
        );
        match parse_events(&hex(&DELLINK.concat()))
            .expect("dellink")
            .as_slice()
        {
            [
                HostEvent::Link {
                    name,
                    removed: true,
                    ..
                },
            ] => assert_eq!(name, "apx0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_notification_is_an_error_not_a_panic() {
        let mut bytes = hex(NEWADDR);
        for cut in 0..bytes.len() {
            let _ = parse_events(&bytes[..cut]);
        }
        // A length field that points past the datagram.
        bytes[0] = 0xff;
        let err = parse_events(&bytes).expect_err("too long").to_string();
        assert!(err.contains("host notifications"), "{err}");
    }
}
