//! The host side of the VIP: the dummy interface, the VIP on it (as a local
//! address, or as a route only), and the node address used as the source.
//!
//! Everything goes over rtnetlink: the messages are built and parsed by the
//! pure codec (`codec`), and [`Rtnl`] sends them; a malformed reply from the
//! kernel becomes an [`Error::Decode`], never a panic.
//!
//! Two ways to make the VIP routable ([`Placement`]): a local `/32` (`/128`)
//! address on the dummy, or (IPv4) only a route `VIP/32 dev lo src NODE_IP`.
//! See [`Placement::Route`] for why the route goes via `lo` and not via the
//! dummy.

mod codec;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use crate::error::{Error, Result};
use crate::nl::{
    self, EADDRNOTAVAIL, EEXIST, EINVAL, ENODEV, EOPNOTSUPP, ESRCH, kernel_error, u32_at,
};
use codec::*;
pub(crate) use codec::{malformed, parse_address, parse_link, parse_route};

/// The dummy interface that holds the VIP unless configured otherwise.
pub const DEFAULT_INTERFACE: &str = "apiproxy0";

/// The loopback device, which route-only VIPs go through.
pub const LOOPBACK: &str = "lo";

/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Checks `name` against the kernel's rules for interface names
/// (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`, no `/`, `:`, NUL or
/// whitespace.
pub fn validate_interface_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_INTERFACE_NAME_LEN {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are reserved")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains(':') {
        Some("it contains ':'")
    } else if name.bytes().any(|b| b == 0 || b.is_ascii_whitespace()) {
        Some("it contains whitespace or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidInterfaceName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What an idempotent operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was missing and has been added.
    Added,
    /// It was there already, exactly as asked; nothing was done.
    AlreadyPresent,
    /// Something with the same key but other settings was replaced.
    Replaced,
    /// It was there and has been removed.
    Removed,
    /// It was not there; nothing was done.
    AlreadyAbsent,
}

impl Change {
    /// Whether the kernel's state was changed.
    pub fn changed(self) -> bool {
        matches!(self, Change::Added | Change::Replaced | Change::Removed)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Added => "added",
            Change::AlreadyPresent => "already present",
            Change::Replaced => "replaced",
            Change::Removed => "removed",
            Change::AlreadyAbsent => "already absent",
        })
    }
}

/// An interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `IFF_UP` is set.
    pub up: bool,
    /// `IFLA_INFO_KIND` ("dummy", "veth", ...); `None` for physical devices.
    pub kind: Option<String>,
}

/// What [`Rtnl::ensure_dummy`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredLink {
    pub link: LinkInfo,
    /// The interface did not exist and has been created as a dummy. When
    /// false, an existing interface (of whatever kind) was left as it was.
    pub created: bool,
    /// The interface was down and has been brought up.
    pub brought_up: bool,
}

/// An address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A route as the kernel reports it (only the fields we use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    pub table: u32,
    /// `rtm_protocol`: who installed it (2 kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    pub oif: Option<u32>,
    pub prefsrc: Option<IpAddr>,
}

/// How the VIP is made routable on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The VIP is a local address (`/32` or `/128`) on the interface. For
    /// worker nodes, whose apiservers are all remote.
    Address,
    /// IPv4 only. The VIP is no local address, only a route
    /// `VIP/32 dev lo src SRC` in the main table; `src` must be one of the
    /// node's own addresses (see [`Rtnl::preferred_source`]).
    ///
    /// The route goes via `lo`, not via the dummy: measured on Debian's 6.1
    /// kernel, when IPVS schedules a locally originated connection to a
    /// real server on this node, it keeps the packet's original route; with
    /// `dev DUMMY` every such connection vanishes into the dummy (all
    /// connections to the local apiserver time out), with `dev lo` they
    /// loop back and arrive. IPv6 turns routes via `lo` into reject routes,
    /// so there is no IPv6 form: use [`Placement::Address`] there.
    Route { src: IpAddr },
}

// ---------------------------------------------------------------------------
// The socket.
// ---------------------------------------------------------------------------

/// An rtnetlink connection in the calling thread's network namespace.
pub struct Rtnl {
    sock: nl::Socket,
    seq: u32,
}

impl fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rtnl").field("seq", &self.seq).finish()
    }
}

/// A kernel answer: the reply messages (type, payload), or an errno.
type Answer = std::result::Result<Vec<(u16, Vec<u8>)>, i32>;

impl Rtnl {
    /// Opens a `NETLINK_ROUTE` socket. The socket belongs to the network
    /// namespace of the calling thread, for its whole life.
    pub fn connect() -> Result<Rtnl> {
        let sock = nl::Socket::open(
            "open rtnetlink socket",
            nix::sys::socket::SockProtocol::NetlinkRoute,
        )?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends one request and collects its answer: reply messages until the
    /// ACK (requests) or NLMSG_DONE (dumps), or the kernel's errno.
    fn request(&mut self, op: &'static str, msg: Vec<u8>, seq: u32) -> Result<Answer> {
        self.sock.send(op, &msg)?;
        let mut replies = Vec::new();
        loop {
            let datagram = self.sock.recv(op)?;
            let messages = nl::split(datagram).map_err(|d| malformed(op, d))?;
            for m in messages {
                if m.seq != seq {
                    // A late answer to an earlier request (none expected).
                    continue;
                }
                match m.ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let code = u32_at(m.payload, 0)
                            .ok_or_else(|| malformed(op, "NLMSG_ERROR without errno"))?
                            as i32;
                        if code == 0 {
                            return Ok(Ok(replies));
                        }
                        return Ok(Err(code.checked_neg().unwrap_or(i32::MAX)));
                    }
                    NLMSG_DONE => {
                        // A dump's end; it may carry an error of its own.
                        if let Some(code) = u32_at(m.payload, 0).map(|c| c as i32)
                            && code < 0
                        {
                            return Ok(Err(code.checked_neg().unwrap_or(i32::MAX)));
                        }
                        return Ok(Ok(replies));
                    }
                    NLMSG_OVERRUN => return Err(malformed(op, "NLMSG_OVERRUN")),
                    ty => replies.push((ty, m.payload.to_vec())),
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Looks an interface up by name; `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        validate_interface_name(name)?;
        let op = "look up interface";
        let seq = self.next_seq();
        let msg = link_by_name_request(seq, name)?;
        match self.request(op, msg, seq)? {
            Ok(replies) => {
                for (ty, payload) in replies {
                    if ty == RTM_NEWLINK {
                        return parse_link(&payload).map(Some).map_err(|d| malformed(op, d));
                    }
                }
                Err(malformed(op, "no RTM_NEWLINK in the answer"))
            }
            Err(ENODEV) => Ok(None),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    fn require_link(&mut self, name: &str) -> Result<LinkInfo> {
        self.link(name)?.ok_or_else(|| Error::InterfaceNotFound {
            name: name.to_owned(),
        })
    }

    /// Makes sure interface `name` exists and is up: creates it as a dummy
    /// if missing; an existing interface is left as it is (only brought up
    /// if it was down).
    pub fn ensure_dummy(&mut self, name: &str) -> Result<EnsuredLink> {
        validate_interface_name(name)?;
        let mut created = false;
        let link = match self.link(name)? {
            Some(link) if link.kind.as_deref() == Some("dummy") => link,
            Some(link) => {
                return Err(Error::NotDummy {
                    name: name.to_owned(),
                    kind: match link.kind {
                        Some(k) => format!("a {k} interface"),
                        None => "a physical interface".into(),
                    },
                });
            }
            None => {
                let op = "create dummy interface";
                let seq = self.next_seq();
                let msg = create_dummy_request(seq, name)?;
                match self.request(op, msg, seq)? {
                    Ok(_) => created = true,
                    // Created by someone else between our look-up and now.
                    Err(EEXIST) => {}
                    Err(EOPNOTSUPP) => return Err(Error::DummyUnavailable),
                    Err(errno) => return Err(kernel_error(op, errno)),
                }
                self.require_link(name)?
            }
        };
        let mut brought_up = false;
        let link = if link.up {
            link
        } else {
            let op = "bring interface up";
            let seq = self.next_seq();
            let msg = set_up_request(seq, link.index)?;
            if let Err(errno) = self.request(op, msg, seq)? {
                return Err(kernel_error(op, errno));
            }
            brought_up = true;
            self.require_link(name)?
        };
        // Debug only: the caller reports changes (the daemon checks the
        // interface on every resync, so "left alone" would flood the log).
        if created {
            tracing::debug!(
                interface = name,
                index = link.index,
                "created dummy interface"
            );
        } else {
            tracing::debug!(
                interface = name,
                index = link.index,
                kind = link.kind.as_deref().unwrap_or("none"),
                brought_up,
                "interface already present, left alone"
            );
        }
        Ok(EnsuredLink {
            link,
            created,
            brought_up,
        })
    }

    /// Deletes interface `name` (explicit cleanup only). Deleting it also
    /// removes its addresses and routes.
    pub fn delete_link(&mut self, name: &str) -> Result<Change> {
        let Some(link) = self.link(name)? else {
            return Ok(Change::AlreadyAbsent);
        };
        let op = "delete interface";
        let seq = self.next_seq();
        let msg = delete_link_request(seq, link.index)?;
        match self.request(op, msg, seq)? {
            Ok(_) => Ok(Change::Removed),
            Err(ENODEV) => Ok(Change::AlreadyAbsent),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// The addresses on interface `name`.
    pub fn addresses(&mut self, name: &str) -> Result<Vec<IfAddress>> {
        let link = self.require_link(name)?;
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(index, _)| *index == link.index)
            .map(|(_, a)| a)
            .collect())
    }

    fn all_addresses(&mut self) -> Result<Vec<(u32, IfAddress)>> {
        let op = "list addresses";
        let seq = self.next_seq();
        let msg = dump_addresses_request(seq)?;
        let replies = self
            .request(op, msg, seq)?
            .map_err(|errno| kernel_error(op, errno))?;
        replies
            .into_iter()
            .filter(|(ty, _)| *ty == RTM_NEWADDR)
            .map(|(_, p)| parse_address(&p).map_err(|d| malformed(op, d)))
            .collect()
    }

    /// Adds `vip` as a host address (`/32`, or `/128` without DAD) on
    /// interface `name`. Already there: [`Change::AlreadyPresent`].
    pub fn add_vip(&mut self, name: &str, vip: IpAddr) -> Result<Change> {
        let op = "add VIP address";
        let link = self.require_link(name)?;
        let seq = self.next_seq();
        let msg = address_request(seq, true, link.index, vip)?;
        match self.request(op, msg, seq)? {
            Ok(_) => Ok(Change::Added),
            Err(EEXIST) => Ok(Change::AlreadyPresent),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Adds the host address `vip` on interface `name` (a real interface:
    /// the outside VIP), or refreshes it, with a lifetime of `seconds`
    /// after which the kernel removes it unless refreshed again. The
    /// holder of a lease refreshes it on each renewal, so that a holder
    /// killed without a word loses the address by itself.
    pub fn hold_address(&mut self, name: &str, vip: IpAddr, seconds: u32) -> Result<()> {
        let op = "hold VIP address";
        let link = self.require_link(name)?;
        let seq = self.next_seq();
        let msg = leased_address_request(seq, link.index, vip, seconds)?;
        match self.request(op, msg, seq)? {
            Ok(_) => Ok(()),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Removes the host address `vip` from interface `name` (explicit
    /// cleanup only). Not there, or no such interface:
    /// [`Change::AlreadyAbsent`].
    pub fn del_vip(&mut self, name: &str, vip: IpAddr) -> Result<Change> {
        let op = "delete VIP address";
        let Some(link) = self.link(name)? else {
            return Ok(Change::AlreadyAbsent);
        };
        let seq = self.next_seq();
        let msg = address_request(seq, false, link.index, vip)?;
        match self.request(op, msg, seq)? {
            Ok(_) => Ok(Change::Removed),
            Err(EADDRNOTAVAIL) | Err(ENODEV) => Ok(Change::AlreadyAbsent),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Routes of the main table whose destination is exactly `vip/32`
    /// (`/128`), except the kernel's own (`proto kernel`: the prefix route
    /// an IPv6 `/128` address brings along).
    pub fn vip_routes(&mut self, vip: IpAddr) -> Result<Vec<RouteInfo>> {
        let op = "list routes";
        let seq = self.next_seq();
        let msg = dump_routes_request(seq, vip.is_ipv6())?;
        let replies = self
            .request(op, msg, seq)?
            .map_err(|errno| kernel_error(op, errno))?;
        let mut out = Vec::new();
        for (ty, payload) in replies {
            if ty != RTM_NEWROUTE {
                continue;
            }
            let route = parse_route(&payload).map_err(|d| malformed(op, d))?;
            if route.table == RT_TABLE_MAIN
                && route.protocol != RTPROT_KERNEL
                && route.dst == Some(vip)
                && route.dst_len == full_prefix(vip)
            {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// Installs the route `vip/32 dev name src src` (`/128` for IPv6) in the
    /// main table. An identical route: [`Change::AlreadyPresent`]; one to
    /// the same VIP with another device or source is replaced.
    pub fn add_vip_route(&mut self, name: &str, vip: IpAddr, src: IpAddr) -> Result<Change> {
        let op = "add VIP route";
        if vip.is_ipv4() != src.is_ipv4() {
            return Err(Error::InvalidArgument {
                op,
                detail: format!("VIP {vip} and source {src} are of different address families"),
            });
        }
        let link = self.require_link(name)?;
        let existing = self.vip_routes(vip)?;
        if existing
            .iter()
            .any(|r| r.oif == Some(link.index) && r.prefsrc == Some(src))
        {
            return Ok(Change::AlreadyPresent);
        }
        let seq = self.next_seq();
        let msg = route_request(seq, true, vip, Some(link.index), Some(src))?;
        match self.request(op, msg, seq)? {
            Ok(_) if existing.is_empty() => Ok(Change::Added),
            Ok(_) => Ok(Change::Replaced),
            Err(errno @ (EADDRNOTAVAIL | EINVAL)) => Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "the kernel refused the route {vip} dev {name} src {src} ({}): the source \
                     must be one of this node's own addresses (see Rtnl::preferred_source)",
                    std::io::Error::from_raw_os_error(errno)
                ),
            }),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Removes the route to `vip/32` (`/128`) via interface `name` from the
    /// main table (explicit cleanup only).
    pub fn del_vip_route(&mut self, name: &str, vip: IpAddr) -> Result<Change> {
        let op = "delete VIP route";
        let Some(link) = self.link(name)? else {
            return Ok(Change::AlreadyAbsent);
        };
        let seq = self.next_seq();
        let msg = route_request(seq, false, vip, Some(link.index), None)?;
        match self.request(op, msg, seq)? {
            Ok(_) => Ok(Change::Removed),
            Err(ESRCH) | Err(ENODEV) => Ok(Change::AlreadyAbsent),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Makes the VIP routable in the given mode (an address on interface
    /// `name`, or a route via `lo`), and removes the other mode's form if it
    /// is there (a VIP that is also a local address defeats the route-only
    /// mode).
    pub fn ensure_vip(&mut self, name: &str, vip: IpAddr, mode: Placement) -> Result<Change> {
        match mode {
            Placement::Address => {
                let change = self.add_vip(name, vip)?;
                if self.del_vip_route(LOOPBACK, vip)?.changed() {
                    tracing::info!(%vip, "removed the VIP route of route mode");
                }
                Ok(change)
            }
            Placement::Route { src } => {
                if vip.is_ipv6() {
                    return Err(Error::InvalidArgument {
                        op: "add VIP route",
                        detail: format!(
                            "route-only VIP mode is IPv4 only (IPv6 makes routes via lo reject \
                             routes); use the address mode for {vip}"
                        ),
                    });
                }
                if self.del_vip(name, vip)?.changed() {
                    tracing::info!(%vip, interface = name, "removed the VIP address of address mode");
                }
                self.add_vip_route(LOOPBACK, vip, src)
            }
        }
    }

    /// Undoes [`Rtnl::ensure_vip`] (explicit cleanup only).
    pub fn remove_vip(&mut self, name: &str, vip: IpAddr, mode: Placement) -> Result<Change> {
        match mode {
            Placement::Address => self.del_vip(name, vip),
            Placement::Route { .. } => self.del_vip_route(LOOPBACK, vip),
        }
    }

    /// The source address the kernel would pick for traffic from this node
    /// to `backend` (what `ip route get BACKEND` shows as `src`): the node IP
    /// to use as `src` of a route-only VIP.
    pub fn preferred_source(&mut self, backend: IpAddr) -> Result<IpAddr> {
        let op = "look up the route to a backend";
        let seq = self.next_seq();
        let msg = route_get_request(seq, backend)?;
        let replies = self
            .request(op, msg, seq)?
            .map_err(|errno| kernel_error(op, errno))?;
        for (ty, payload) in replies {
            if ty == RTM_NEWROUTE {
                let route = parse_route(&payload).map_err(|d| malformed(op, d))?;
                if let Some(src) = route.prefsrc {
                    return Ok(src);
                }
            }
        }
        // No RTA_PREFSRC in the answer: ask the kernel the other way. A UDP
        // connect() picks the source address and sends nothing.
        udp_source_towards(backend)
    }
}

/// The local address a UDP socket connected to `dest` gets (no packet is
/// sent).
pub fn udp_source_towards(dest: IpAddr) -> Result<IpAddr> {
    let op = "find the source address towards a backend";
    let bind: SocketAddr = if dest.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|source| Error::Io { op, source })?;
    sock.connect((dest, 9))
        .map_err(|source| Error::Io { op, source })?;
    Ok(sock
        .local_addr()
        .map_err(|source| Error::Io { op, source })?
        .ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::{EACCES, EPERM, NlMessage};
    use neli::consts::nl::NlmF;

    fn parse_one(bytes: &[u8]) -> NlMessage<'_> {
        let msgs = nl::split(bytes).expect("well-formed");
        assert_eq!(msgs.len(), 1);
        msgs[0]
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(validate_interface_name(DEFAULT_INTERFACE).is_ok());
        assert!(validate_interface_name("a").is_ok());
        assert!(validate_interface_name("exactly15chars_").is_ok());
        for bad in [
            "",
            "sixteen_chars_xx",
            ".",
            "..",
            "a/b",
            "eth0:1",
            "a b",
            "a\tb",
            "a\0",
        ] {
            let err = validate_interface_name(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidInterfaceName { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("15 bytes"),
                "the rule is in the message: {msg}"
            );
        }
    }

    #[test]
    fn create_dummy_message_carries_name_and_kind() {
        let bytes = create_dummy_request(7, "apiproxy0").expect("build");
        let m = parse_one(&bytes);
        assert_eq!(m.ty, RTM_NEWLINK);
        assert_eq!(m.seq, 7);
        let want = (NlmF::REQUEST | NlmF::ACK | NlmF::CREATE | NlmF::EXCL).bits();
        assert_eq!(m.flags, want);
        // ifinfomsg: family 0, index 0, flags and change both IFF_UP.
        assert_eq!(m.payload[0], 0);
        assert_eq!(u32_at(m.payload, 4), Some(0));
        assert_eq!(u32_at(m.payload, 8), Some(IFF_UP));
        assert_eq!(u32_at(m.payload, 12), Some(IFF_UP));
        let attrs = nl::attributes(&m.payload[16..]).expect("attrs");
        assert_eq!(find_attr(&attrs, IFLA_IFNAME), Some(&b"apiproxy0\0"[..]));
        let info =
            nl::attributes(find_attr(&attrs, IFLA_LINKINFO).expect("linkinfo")).expect("nested");
        assert_eq!(find_attr(&info, IFLA_INFO_KIND), Some(&b"dummy\0"[..]));
        // Parsing our own request as a link gives the name back.
        let link = parse_link(m.payload).expect("parse");
        assert_eq!(link.name, "apiproxy0");
        assert_eq!(link.kind.as_deref(), Some("dummy"));
        assert!(link.up);
    }

    #[test]
    fn vip_address_messages_are_host_routes_and_v6_skips_dad() {
        let v4: IpAddr = "10.103.97.2".parse().expect("ip");
        let bytes = address_request(1, true, 42, v4).expect("build");
        let m = parse_one(&bytes);
        assert_eq!(m.ty, RTM_NEWADDR);
        assert_eq!(&m.payload[..4], &[AF_INET, 32, 0, 0]);
        assert_eq!(u32_at(m.payload, 4), Some(42));
        let (index, addr) = parse_address(m.payload).expect("parse");
        assert_eq!((index, addr.addr, addr.prefix_len), (42, v4, 32));

        let v6: IpAddr = "fd00::97:2".parse().expect("ip");
        let bytes = address_request(2, true, 42, v6).expect("build");
        let m = parse_one(&bytes);
        assert_eq!(m.payload[0], AF_INET6);
        assert_eq!(m.payload[1], 128);
        assert_eq!(u32::from(m.payload[2]), IFA_F_NODAD);
        let attrs = nl::attributes(&m.payload[8..]).expect("attrs");
        assert_eq!(
            find_attr(&attrs, IFA_FLAGS).map(parse_u32),
            Some(Ok(IFA_F_NODAD))
        );
        assert_eq!(parse_address(m.payload).expect("parse").1.addr, v6);

        let del = address_request(3, false, 42, v4).expect("build");
        assert_eq!(parse_one(&del).ty, 21); // RTM_DELADDR
    }

    #[test]
    fn vip_route_message_is_main_table_link_scope_with_prefsrc() {
        let vip: IpAddr = "10.103.97.2".parse().expect("ip");
        let src: IpAddr = "192.168.1.10".parse().expect("ip");
        let bytes = route_request(5, true, vip, Some(9), Some(src)).expect("build");
        let m = parse_one(&bytes);
        assert_eq!(m.ty, RTM_NEWROUTE);
        let want = (NlmF::REQUEST | NlmF::ACK | NlmF::CREATE | NlmF::REPLACE).bits();
        assert_eq!(m.flags, want);
        // family, dst_len, src_len, tos, table, protocol, scope, type
        assert_eq!(&m.payload[..8], &[AF_INET, 32, 0, 0, 254, 4, 253, 1]);
        let route = parse_route(m.payload).expect("parse");
        assert_eq!(
            route,
            RouteInfo {
                dst: Some(vip),
                dst_len: 32,
                table: 254,
                protocol: 4,
                oif: Some(9),
                prefsrc: Some(src),
            }
        );
        let del = route_request(6, false, vip, Some(9), None).expect("build");
        let m = parse_one(&del);
        assert_eq!(m.ty, 25); // RTM_DELROUTE
        assert_eq!(m.payload[6], 255, "delete matches any scope");
        assert_eq!(m.payload[5], 4, "delete touches only our (static) routes");
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        // Lengths that lie, in every position.
        assert!(nl::split(&[1, 2, 3]).is_err());
        let mut short = 8u32.to_ne_bytes().to_vec();
        short.extend_from_slice(&[0; 12]);
        assert!(nl::split(&short).is_err());
        let mut long = 400u32.to_ne_bytes().to_vec();
        long.extend_from_slice(&[0; 12]);
        assert!(nl::split(&long).is_err());
        assert!(nl::attributes(&[200, 0, 1, 0, 0, 0, 0, 0]).is_err());
        assert!(nl::attributes(&[2, 0, 1, 0]).is_err());
        assert!(parse_link(&[0; 10]).is_err());
        assert!(parse_address(&[2, 32, 0, 0]).is_err());
        assert!(parse_route(&[2; 11]).is_err());
        // An address attribute of the wrong size.
        let mut addr = vec![AF_INET, 32, 0, 0, 1, 0, 0, 0];
        addr.extend_from_slice(&[7, 0, 2, 0, 10, 0, 0, 0]);
        assert!(parse_address(&addr).is_err());
        // Every prefix of valid messages, and garbage: never a panic.
        let valid = [
            create_dummy_request(1, "apiproxy0").expect("build"),
            address_request(1, true, 3, "fd00::1".parse().expect("ip")).expect("build"),
            route_request(1, true, "10.0.0.1".parse().expect("ip"), Some(3), None).expect("build"),
        ];
        for v in &valid {
            for cut in 0..v.len() {
                let _ = nl::split(&v[..cut]);
                let body = &v[nl::NLMSG_HDRLEN.min(cut)..cut];
                let _ = parse_link(body);
                let _ = parse_address(body);
                let _ = parse_route(body);
            }
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8 % 24
                })
                .collect();
            let _ = nl::split(&bytes);
            let _ = nl::attributes(&bytes);
            let _ = parse_link(&bytes);
            let _ = parse_address(&bytes);
            let _ = parse_route(&bytes);
        }
    }

    #[test]
    fn errnos_become_actionable_errors() {
        assert!(matches!(
            kernel_error("x", EPERM),
            Error::PermissionDenied { op: "x" }
        ));
        assert!(matches!(
            kernel_error("x", EACCES),
            Error::PermissionDenied { .. }
        ));
        match kernel_error("x", EEXIST) {
            Error::Kernel { errno, msg, .. } => {
                assert_eq!(errno, EEXIST);
                assert!(msg.contains("exists"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn route_mode_is_refused_for_ipv6_before_asking_the_kernel() {
        let mut rtnl = Rtnl::connect().expect("rtnetlink exists on every Linux host");
        let err = rtnl
            .ensure_vip(
                "nosuch0",
                "fd00::2".parse().expect("ip"),
                Placement::Route {
                    src: "fd00::1".parse().expect("ip"),
                },
            )
            .expect_err("IPv6 route mode");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert!(err.to_string().contains("IPv4 only"), "{err}");
    }

    #[test]
    fn udp_source_picks_loopback_for_loopback() {
        let src = udp_source_towards("127.0.0.1".parse().expect("ip")).expect("udp");
        assert_eq!(src, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
