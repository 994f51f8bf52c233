//! Host change notifications: the rtnetlink multicast groups that report
//! links, addresses and routes coming and going, so the manager can repair
//! the VIP, the dummy interface or the control-plane route as soon as
//! someone else removes them, instead of at its next periodic check.
//!
//! The socket is non-blocking: [`HostMonitor::drain`] takes what is queued
//! and returns; a reader waits for readiness on the descriptor (tokio's
//! `AsyncFd`) between drains.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};

use crate::error::{Error, Result};
use crate::link::{malformed, parse_address, parse_link, parse_route};
use crate::nl;

// rtnetlink multicast groups (enum rtnetlink_groups, rtnetlink.h). All are
// below 32, so the legacy bind() group mask reaches them.
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_OVERRUN: u16 = 4;
const AF_INET6: u8 = 10;

/// Start size of the receive buffer; a datagram that does not fit is
/// measured with MSG_PEEK first, so this is only the common case.
const INITIAL_BUF: usize = 32 * 1024;

/// One change on the host, as rtnetlink announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// An interface appeared, changed (e.g. went up or down) or was removed.
    Link {
        index: u32,
        name: String,
        up: bool,
        removed: bool,
    },
    /// An address was added to or removed from interface `index`.
    Address {
        index: u32,
        addr: IpAddr,
        removed: bool,
    },
    /// A route to `dst/prefix_len` was added, replaced or removed (any table).
    Route {
        dst: IpAddr,
        prefix_len: u8,
        removed: bool,
    },
    /// Our nftables table (or something in it) was changed by another
    /// process than this one: the rules must be read again.
    OurRulesChanged { by_pid: u32 },
    /// The kernel dropped notifications (ENOBUFS): the reader must re-check
    /// everything.
    Overrun,
}

/// Whether `tid` is a thread of this process. The kernel names the thread
/// that committed a change (`task_pid_nr`), not its process, and the
/// daemon writes from a pool of threads. In a PID namespace of its own the
/// kernel's number is not ours to look up: every change then reads as
/// someone else's, which costs a pass that finds nothing to do.
fn is_own_thread(tid: u32) -> bool {
    tid != 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// `NFNLGRP_NFTABLES` (`nfnetlink.h`): every committed nf_tables change.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFT_MSG_NEWGEN` (`nf_tables.h`): closes each transaction's
/// notifications, naming the process that committed it.
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_PROC_PID: u16 = 2;

/// Parses one datagram of nf_tables notifications. `pending` carries across
/// datagrams whether the transaction being announced touched `table`; its
/// closing `NFT_MSG_NEWGEN` then gives one event, naming the thread that
/// committed it, unless `is_own` says that thread is ours. Every object
/// message (table, chain, rule, set, element) names its table in
/// attribute 1.
pub fn parse_nft_notifications(
    buf: &[u8],
    table: &str,
    is_own: impl Fn(u32) -> bool,
    pending: &mut bool,
) -> Result<Vec<HostEvent>, String> {
    let mut events = Vec::new();
    for m in nl::split(buf)? {
        if m.ty == NLMSG_OVERRUN {
            events.push(HostEvent::Overrun);
            continue;
        }
        if m.ty >> 8 != crate::nft::codec::NFNL_SUBSYS_NFTABLES {
            continue;
        }
        let attrs = nl::attributes(m.payload.get(4..).unwrap_or_default())?;
        if m.ty & 0xff == NFT_MSG_NEWGEN {
            let pid = attrs
                .iter()
                .find(|(ty, _)| *ty == NFTA_GEN_PROC_PID)
                .and_then(|(_, v)| <[u8; 4]>::try_from(*v).ok())
                .map_or(0, u32::from_be_bytes);
            if std::mem::take(pending) && !is_own(pid) {
                events.push(HostEvent::OurRulesChanged { by_pid: pid });
            }
            continue;
        }
        let names_table = attrs
            .iter()
            .any(|(ty, v)| *ty == 1 && v.strip_suffix(&[0]).unwrap_or(v) == table.as_bytes());
        *pending |= names_table;
    }
    Ok(events)
}

/// Parses one datagram of rtnetlink notifications. Pure: bytes in, events
/// out; messages of other types are skipped. A malformed datagram is an
/// [`Error::Decode`] naming the problem.
pub fn parse_notifications(buf: &[u8]) -> Result<Vec<HostEvent>> {
    parse_datagram(buf).map_err(|d| malformed("parse host notification", d))
}

fn parse_datagram(buf: &[u8]) -> Result<Vec<HostEvent>, String> {
    let mut events = Vec::new();
    for m in nl::split(buf)? {
        match m.ty {
            RTM_NEWLINK | RTM_DELLINK => {
                let link = parse_link(m.payload)?;
                events.push(HostEvent::Link {
                    index: link.index,
                    name: link.name,
                    up: link.up,
                    removed: m.ty == RTM_DELLINK,
                });
            }
            RTM_NEWADDR | RTM_DELADDR => {
                let (index, a) = parse_address(m.payload)?;
                events.push(HostEvent::Address {
                    index,
                    addr: a.addr,
                    removed: m.ty == RTM_DELADDR,
                });
            }
            RTM_NEWROUTE | RTM_DELROUTE => {
                let route = parse_route(m.payload)?;
                // A default route carries no RTA_DST: its destination is the
                // family's unspecified address.
                let dst = match route.dst {
                    Some(dst) => dst,
                    None if m.payload.first() == Some(&AF_INET6) => {
                        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                    }
                    None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                };
                events.push(HostEvent::Route {
                    dst,
                    prefix_len: route.dst_len,
                    removed: m.ty == RTM_DELROUTE,
                });
            }
            NLMSG_OVERRUN => events.push(HostEvent::Overrun),
            _ => {}
        }
    }
    Ok(events)
}

/// An rtnetlink socket subscribed to link, address and route changes (IPv4
/// and IPv6) in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct HostMonitor {
    fd: OwnedFd,
    buf: Vec<u8>,
    kind: Kind,
}

/// What a monitor listens to.
#[derive(Debug)]
enum Kind {
    Host,
    /// Changes to our nftables table by other processes.
    OurRules {
        pending: bool,
    },
}

impl HostMonitor {
    /// Opens the socket, non-blocking, joined to RTNLGRP_LINK,
    /// RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE and
    /// RTNLGRP_IPV6_ROUTE.
    pub fn open() -> Result<HostMonitor> {
        let groups = [
            RTNLGRP_LINK,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
        ]
        .iter()
        .fold(0u32, |mask, g| mask | (1 << (g - 1)));
        Self::joined(
            SockProtocol::NetlinkRoute,
            groups,
            (
                "open rtnetlink monitor socket",
                "join rtnetlink notification groups",
            ),
            Kind::Host,
        )
    }

    /// Opens a socket joined to `NFNLGRP_NFTABLES`: its events are
    /// [`HostEvent::OurRulesChanged`] (and overruns), so that someone
    /// deleting our table, a chain, a rule or a map element is repaired at
    /// once rather than on the next periodic check.
    pub fn open_nftables() -> Result<HostMonitor> {
        Self::joined(
            SockProtocol::NetlinkNetFilter,
            1 << (NFNLGRP_NFTABLES - 1),
            (
                "open nf_tables monitor socket",
                "join the nf_tables notification group",
            ),
            Kind::OurRules { pending: false },
        )
    }

    /// A non-blocking netlink socket of `protocol` bound to the multicast
    /// `groups` (a bit mask); `ops` name the two steps in errors.
    fn joined(
        protocol: SockProtocol,
        groups: u32,
        ops: (&'static str, &'static str),
        kind: Kind,
    ) -> Result<HostMonitor> {
        let io = |op: &'static str| {
            move |e: Errno| Error::Io {
                op,
                source: std::io::Error::from(e),
            }
        };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(io(ops.0))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).map_err(io(ops.1))?;
        Ok(HostMonitor {
            fd,
            buf: vec![0; INITIAL_BUF],
            kind,
        })
    }

    /// Every notification queued now, parsed; empty if none. Never blocks.
    ///
    /// If the kernel had to drop notifications because the socket's queue
    /// was full, the result contains [`HostEvent::Overrun`].
    pub fn drain(&mut self) -> Result<Vec<HostEvent>> {
        const OP: &str = "read host notifications";
        let mut events = Vec::new();
        loop {
            // Measure the next datagram without taking it, so a large one
            // is never cut short.
            let flags = MsgFlags::MSG_DONTWAIT;
            let peek = flags | MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC;
            let peeked = match recv_step(self.fd.as_raw_fd(), &mut self.buf, peek)? {
                Received::Bytes(n) => n,
                Received::Nothing => return Ok(events),
                Received::Again => continue,
                Received::Overrun => {
                    // The error is reported once; the queue keeps working.
                    events.push(HostEvent::Overrun);
                    continue;
                }
            };
            if peeked > self.buf.len() {
                self.buf.resize(peeked, 0);
            }
            let n = match recv_step(self.fd.as_raw_fd(), &mut self.buf, flags)? {
                Received::Bytes(n) => n,
                Received::Nothing => return Ok(events),
                Received::Again => continue,
                Received::Overrun => {
                    events.push(HostEvent::Overrun);
                    continue;
                }
            };
            let datagram = &self.buf[..n];
            let batch = match &mut self.kind {
                Kind::Host => parse_datagram(datagram),
                Kind::OurRules { pending } => parse_nft_notifications(
                    datagram,
                    crate::nft::table::TABLE,
                    is_own_thread,
                    pending,
                ),
            }
            .map_err(|d| malformed(OP, d))?;
            events.extend(batch);
        }
    }

    /// Waits until the kernel announces something, then returns everything
    /// queued by then (the daemon runs it on a thread of its own: waiting
    /// on the descriptor in the async runtime would need `unsafe`).
    pub fn wait(&mut self) -> Result<Vec<HostEvent>> {
        loop {
            let mut fds = [nix::poll::PollFd::new(
                self.fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::Io {
                        op: "wait for host notifications",
                        source: std::io::Error::from(e),
                    });
                }
            }
            let events = self.drain()?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// Sets the socket's receive queue size (SO_RCVBUF). A small queue
    /// overruns sooner; only tests want that.
    #[doc(hidden)]
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<()> {
        nix::sys::socket::setsockopt(&self.fd, nix::sys::socket::sockopt::RcvBuf, &bytes).map_err(
            |e| Error::Io {
                op: "size the host notification queue",
                source: std::io::Error::from(e),
            },
        )
    }
}

impl AsFd for HostMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for HostMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What one non-blocking `recv` on the notification socket gave.
enum Received {
    Bytes(usize),
    /// The queue is empty (`EAGAIN`).
    Nothing,
    /// Interrupted (`EINTR`): try again.
    Again,
    /// The kernel dropped notifications (`ENOBUFS`).
    Overrun,
}

fn recv_step(fd: std::os::fd::RawFd, buf: &mut [u8], flags: MsgFlags) -> Result<Received> {
    match recv(fd, buf, flags) {
        Ok(n) => Ok(Received::Bytes(n)),
        Err(Errno::EAGAIN) => Ok(Received::Nothing),
        Err(Errno::EINTR) => Ok(Received::Again),
        Err(Errno::ENOBUFS) => Ok(Received::Overrun),
        Err(e) => Err(Error::Io {
            op: "read host notifications",
            source: std::io::Error::from(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The two datagrams a socket joined to NFNLGRP_NFTABLES received for
    // `nft add table inet bcs-apiserver-proxy` (nft's pid 11927 = 0x2e97),
    // captured in `unshare -rn` on the build host (kernel 6.18) with a
    // Python socket (AF_NETLINK, NETLINK_NETFILTER, bound to 1 << 6): the
    // table's NFT_MSG_NEWTABLE, then the transaction's NFT_MSG_NEWGEN.
    const NFT_NEWTABLE: [u8; 72] = [
        0x48, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x97, 0x2e, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x02, 0x18, 0x00, 0x01, 0x00, 0x62, 0x63, 0x73, 0x2d, 0x61, 0x70,
        0x69, 0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0x2d, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x00, 0x08,
        0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    const NFT_NEWGEN: [u8; 44] = [
        0x2c, 0x00, 0x00, 0x00, 0x0f, 0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x97, 0x2e, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x2e, 0x97, 0x08, 0x00, 0x03, 0x00, 0x6e, 0x66, 0x74, 0x00,
    ];

    #[test]
    fn a_change_to_our_table_by_another_process_is_one_event() {
        let mut pending = false;
        let none = parse_nft_notifications(
            &NFT_NEWTABLE,
            "bcs-apiserver-proxy",
            |_| false,
            &mut pending,
        )
        .expect("parses");
        assert!(none.is_empty() && pending);
        let ev =
            parse_nft_notifications(&NFT_NEWGEN, "bcs-apiserver-proxy", |_| false, &mut pending)
                .expect("parses");
        assert_eq!(ev, [HostEvent::OurRulesChanged { by_pid: 11927 }]);
        assert!(!pending);
        // Our own thread's change, and another table's: nothing.
        let mut pending = false;
        parse_nft_notifications(&NFT_NEWTABLE, "bcs-apiserver-proxy", |_| true, &mut pending)
            .expect("parses");
        let own = parse_nft_notifications(
            &NFT_NEWGEN,
            "bcs-apiserver-proxy",
            |p| p == 11927,
            &mut pending,
        )
        .expect("parses");
        assert!(own.is_empty());
        let mut pending = false;
        parse_nft_notifications(&NFT_NEWTABLE, "kube-proxy", |_| false, &mut pending)
            .expect("parses");
        let other = parse_nft_notifications(&NFT_NEWGEN, "kube-proxy", |_| false, &mut pending)
            .expect("parses");
        assert!(other.is_empty());
        for n in 0..NFT_NEWTABLE.len() {
            let _ = parse_nft_notifications(&NFT_NEWTABLE[..n], "x", |_| false, &mut pending);
        }
    }

    proptest::proptest! {
        #![proptest_config(apiserver_proxy_testkit::fuzz::parser_config(2_000))]
        /// Notifications mutated at random, or noise: never a panic.
        #[test]
        fn mutated_notifications_never_panic(
            at in 0usize..128,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..128,
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let mut pending = false;
            for golden in [&NFT_NEWTABLE[..], &NFT_NEWGEN[..]] {
                let b = apiserver_proxy_testkit::fuzz::mutate(golden, at, byte, cut);
                let _ = parse_nft_notifications(&b, "bcs-apiserver-proxy", |_| false, &mut pending);
            }
            let _ = parse_nft_notifications(&noise, "bcs-apiserver-proxy", |_| false, &mut pending);
        }
    }
}
