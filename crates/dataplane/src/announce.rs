//! Telling the link that an address moved here: a gratuitous ARP request
//! (IPv4) and an unsolicited neighbour advertisement (IPv6), as the node
//! that takes over the outside VIP sends them so that the other hosts'
//! neighbour entries point at it at once instead of after they expire.
//!
//! The frames are built by pure functions, checked against what the
//! kernel and arping send; [`Announcer`] sends them. Both sockets need
//! CAP_NET_RAW.
//!
//! The IPv4 announcement is an ARP *request* for the address from the
//! address (RFC 5227 §2.4, as `arping -U` sends it): every host on the link
//! receives it, and Linux updates an existing entry from a request as well
//! as from a reply. The IPv6 one is a neighbour advertisement to all nodes
//! with the override flag and our link-layer address (RFC 4861 §7.2.6).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike, sendto, socket,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{Error, Result};

/// A MAC address.
pub type Mac = [u8; 6];

const ETH_P_ARP: u16 = 0x0806;
const ARP_HRD_ETHER: u16 = 1;
const ETH_P_IP: u16 = 0x0800;
const ARP_REQUEST: u16 = 1;
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// The override flag: replace whatever link-layer address is cached.
const NA_FLAG_OVERRIDE: u32 = 0x2000_0000;
const ND_OPT_TARGET_LINK_ADDRESS: u8 = 2;
/// RFC 4861 §7.1.2: a receiver drops a neighbour advertisement whose hop
/// limit is not 255 (it would have come from off the link).
const ND_HOP_LIMIT: u32 = 255;

/// The Ethernet frame of a gratuitous ARP request announcing that `ip` is
/// at `mac`: broadcast, sender and target address both `ip`, target
/// hardware address broadcast (as `arping -U` sends it).
pub fn arp_announcement(mac: Mac, ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARP_HRD_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Who a gratuitous ARP frame says is where: `(mac, ip)`, or `None` if
/// `frame` is not one (any other ARP, not ARP, or too short).
pub fn parse_arp_announcement(frame: &[u8]) -> Option<(Mac, Ipv4Addr)> {
    let f: &[u8; 42] = frame.get(..42)?.try_into().ok()?;
    let u16_at = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    if u16_at(12) != ETH_P_ARP
        || u16_at(14) != ARP_HRD_ETHER
        || u16_at(16) != ETH_P_IP
        || f[18] != 6
        || f[19] != 4
    {
        return None;
    }
    let sender = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
    let target = Ipv4Addr::new(f[38], f[39], f[40], f[41]);
    if sender != target {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    Some((mac, sender))
}

/// The ICMPv6 message of an unsolicited neighbour advertisement that
/// `target` is at `mac`, sent from `source` to all nodes (ff02::1), with its
/// checksum (the kernel fills it in again for a raw ICMPv6 socket).
pub fn neighbour_advertisement(source: Ipv6Addr, target: Ipv6Addr, mac: Mac) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = ICMPV6_NEIGHBOUR_ADVERTISEMENT;
    m[4..8].copy_from_slice(&NA_FLAG_OVERRIDE.to_be_bytes());
    m[8..24].copy_from_slice(&target.octets());
    m[24] = ND_OPT_TARGET_LINK_ADDRESS;
    m[25] = 1; // in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(source, ALL_NODES, &m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// ff02::1.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The Internet checksum of an ICMPv6 message over the IPv6 pseudo-header
/// (RFC 8200 §8.1), with the message's checksum field taken as zero.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(&msg[..2]);
    add(msg.get(4..).unwrap_or_default());
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends announcements on one interface.
#[derive(Debug)]
pub struct Announcer {
    interface: String,
    link: LinkAddr,
    packet: OwnedFd,
    index: u32,
}

impl Announcer {
    /// Finds `interface`'s index and MAC and opens a packet socket that
    /// only sends (protocol 0: it receives nothing). Needs CAP_NET_RAW.
    pub fn open(interface: &str) -> Result<Announcer> {
        let link = link_address(interface)?;
        let packet = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| socket_error("open a packet socket (needs CAP_NET_RAW)", e))?;
        let index = u32::try_from(link.ifindex()).map_err(|_| Error::InterfaceNotFound {
            name: interface.to_string(),
        })?;
        // An interface without an Ethernet address (a tunnel, loopback, a
        // dummy without one) has no neighbours to tell.
        if link.halen() != 6 || link.addr().is_none_or(|mac| mac == [0; 6]) {
            return Err(Error::InvalidArgument {
                op: "announce a VIP",
                detail: format!(
                    "interface {interface} has no Ethernet address to announce the VIP with"
                ),
            });
        }
        Ok(Announcer {
            interface: interface.to_string(),
            link,
            packet,
            index,
        })
    }

    /// The interface's MAC address, which the announcements carry.
    pub fn mac(&self) -> Mac {
        self.link.addr().unwrap_or_default()
    }

    /// Sends one gratuitous ARP request for `ip`.
    pub fn announce_v4(&self, ip: Ipv4Addr) -> Result<()> {
        let frame = arp_announcement(self.mac(), ip);
        // For a raw packet socket the address only names the interface:
        // the frame carries its own Ethernet header.
        sendto(
            self.packet.as_raw_fd(),
            &frame,
            &self.link,
            MsgFlags::empty(),
        )
        .map_err(|e| socket_error("send a gratuitous ARP", e))?;
        Ok(())
    }

    /// Sends one unsolicited neighbour advertisement for `ip`, from `ip`
    /// (which must be on the interface, without duplicate address
    /// detection pending).
    pub fn announce_v6(&self, ip: Ipv6Addr) -> Result<()> {
        let io = |op: &'static str| move |source| Error::Io { op, source };
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .map_err(io("open a raw ICMPv6 socket (needs CAP_NET_RAW)"))?;
        s.set_multicast_hops_v6(ND_HOP_LIMIT)
            .map_err(io("set the hop limit of a neighbour advertisement"))?;
        s.set_multicast_if_v6(self.index)
            .map_err(io("choose the interface of a neighbour advertisement"))?;
        s.bind(&SocketAddrV6::new(ip, 0, 0, 0).into())
            .map_err(io("send a neighbour advertisement from the VIP"))?;
        let msg = neighbour_advertisement(ip, ip, self.mac());
        s.send_to(&msg, &SocketAddrV6::new(ALL_NODES, 0, 0, self.index).into())
            .map_err(io("send a neighbour advertisement"))?;
        Ok(())
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }
}

/// The link-layer address the kernel reports for `interface`: its index
/// and MAC, usable as the destination of a packet socket's send.
fn link_address(interface: &str) -> Result<LinkAddr> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| socket_error("list the interfaces", e))?;
    for a in addrs {
        if a.interface_name != interface {
            continue;
        }
        if let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr())
            && link.family() == Some(AddressFamily::Packet)
        {
            return Ok(*link);
        }
    }
    Err(Error::InterfaceNotFound {
        name: interface.to_string(),
    })
}

fn socket_error(op: &'static str, e: nix::Error) -> Error {
    if e == nix::Error::EPERM || e == nix::Error::EACCES {
        return Error::PermissionDenied { op };
    }
    Error::Io {
        op,
        source: std::io::Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0x0a];

    // What `arping -U -c1 -I va 192.168.1.100` (iputils-arping, Debian 12)
    // sent on a veth whose MAC is 02:00:00:00:00:0a, as `tcpdump -i vb -xx
    // -n arp` printed it on the peer (host kernel 6.18, in `unshare -n`):
    // "ARP, Request who-has 192.168.1.100 (ff:ff:ff:ff:ff:ff) tell
    // 192.168.1.100, length 28".
    const ARPING_U: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0xc0, 0xa8,
        0x01, 0x64, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xa8, 0x01, 0x64,
    ];

    // The kernel's own unsolicited neighbour advertisement (ndisc_notify=1,
    // the link brought down and up) for fe80::ff:fe00:a on the same veth,
    // as tcpdump printed it: "IP6 fe80::ff:fe00:a > ff02::1: ICMP6,
    // neighbor advertisement, tgt is fe80::ff:fe00:a, length 32". The
    // ICMPv6 message after the Ethernet (14) and IPv6 (40) headers; the
    // IPv6 header had hop limit 255.
    const KERNEL_NA: [u8; 32] = [
        0x88, 0x00, 0x59, 0x80, 0x20, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x0a, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x0a,
    ];

    #[test]
    fn the_arp_announcement_is_what_arping_sends() {
        let ip = Ipv4Addr::new(192, 168, 1, 100);
        assert_eq!(arp_announcement(MAC_A, ip), ARPING_U);
        assert_eq!(parse_arp_announcement(&ARPING_U), Some((MAC_A, ip)));
    }

    #[test]
    fn the_neighbour_advertisement_is_what_the_kernel_sends() {
        let ll: Ipv6Addr = "fe80::ff:fe00:a".parse().expect("addr");
        assert_eq!(neighbour_advertisement(ll, ll, MAC_A), KERNEL_NA);
    }

    #[test]
    fn other_frames_are_not_announcements() {
        // A request for another address (an ordinary who-has).
        let mut who_has = ARPING_U;
        who_has[31] = 0x01;
        assert_eq!(parse_arp_announcement(&who_has), None);
        let mut not_arp = ARPING_U;
        not_arp[13] = 0x00;
        assert_eq!(parse_arp_announcement(&not_arp), None);
        for n in 0..ARPING_U.len() {
            assert_eq!(parse_arp_announcement(&ARPING_U[..n]), None);
        }
    }
}
