//! The rtnetlink codec: request builders and reply (and notification)
//! parsers, bytes in and structs out, no sockets. Requests are built with
//! `neli`'s `rtnl` types; replies are parsed with checked arithmetic only,
//! so a malformed reply is an error describing it, never a panic.

use std::fmt;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::ToBytes;
use neli::consts::nl::NlmF;
use neli::consts::rtnl::{
    Ifa, IfaF, Ifla, IflaInfo, RtAddrFamily, RtScope, RtTable, Rta, Rtm, Rtn, Rtprot,
};
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{
    Ifaddrmsg, IfaddrmsgBuilder, IfinfomsgBuilder, Rtattr, RtattrBuilder, RtmsgBuilder,
};
use neli::types::{Buffer, RtBuffer};

use super::{IfAddress, LinkInfo, RouteInfo};
use crate::error::{Error, Result};
use crate::nl::{self, u32_at};

/// The routing table our VIP routes live in (`RT_TABLE_MAIN`).
pub(crate) const RT_TABLE_MAIN: u32 = 254;

/// `rtm_protocol` of routes the kernel adds for addresses.
pub(crate) const RTPROT_KERNEL: u8 = 2;

// Netlink message types and attribute numbers used while parsing
// (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h).
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const IFLA_IFNAME: u16 = 3;
pub(crate) const IFLA_LINKINFO: u16 = 18;
pub(crate) const IFLA_INFO_KIND: u16 = 1;
pub(crate) const IFA_ADDRESS: u16 = 1;
pub(crate) const IFA_LOCAL: u16 = 2;
#[cfg(test)]
pub(crate) const IFA_FLAGS: u16 = 8;
pub(crate) const RTA_DST: u16 = 1;
pub(crate) const RTA_OIF: u16 = 4;
pub(crate) const RTA_PREFSRC: u16 = 7;
pub(crate) const RTA_TABLE: u16 = 15;
pub(crate) const IFF_UP: u32 = 1;
pub(crate) const IFA_F_NODAD: u32 = 0x02;
pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;

pub(crate) fn full_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

pub(crate) fn family(ip: IpAddr) -> RtAddrFamily {
    if ip.is_ipv4() {
        RtAddrFamily::Inet
    } else {
        RtAddrFamily::Inet6
    }
}

pub(crate) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub(crate) fn malformed(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Decode {
        op,
        detail: detail.into(),
    }
}

// ---------------------------------------------------------------------------
// Message building (neli) and parsing (checked, by hand).
// ---------------------------------------------------------------------------

pub(crate) fn attr<T>(op: &'static str, ty: T, payload: Vec<u8>) -> Result<Rtattr<T, Buffer>>
where
    T: neli::consts::rtnl::RtaType,
{
    RtattrBuilder::default()
        .rta_type(ty)
        .rta_payload(payload)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: format!("cannot build attribute: {e}"),
        })
}

pub(crate) fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub(crate) fn encode<P>(
    op: &'static str,
    ty: Rtm,
    flags: NlmF,
    seq: u32,
    payload: P,
) -> Result<Vec<u8>>
where
    P: neli::Size + ToBytes + fmt::Debug,
{
    let msg = NlmsghdrBuilder::default()
        .nl_type(ty)
        .nl_flags(flags | NlmF::REQUEST)
        .nl_seq(seq)
        .nl_pid(0)
        .nl_payload(NlPayload::Payload(payload))
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: format!("cannot build request: {e}"),
        })?;
    let mut cursor = Cursor::new(Vec::new());
    msg.to_bytes(&mut cursor).map_err(|e| Error::Netlink {
        op,
        detail: format!("cannot serialize request: {e}"),
    })?;
    Ok(cursor.into_inner())
}

pub(crate) fn link_by_name_request(seq: u32, name: &str) -> Result<Vec<u8>> {
    let op = "look up interface";
    let mut attrs = RtBuffer::new();
    attrs.push(attr(op, Ifla::Ifname, nul_terminated(name))?);
    let msg = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .rtattrs(attrs)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    encode(op, Rtm::Getlink, NlmF::ACK, seq, msg)
}

pub(crate) fn create_dummy_request(seq: u32, name: &str) -> Result<Vec<u8>> {
    let op = "create dummy interface";
    let kind = attr(op, IflaInfo::Kind, nul_terminated("dummy"))?;
    let linkinfo = attr(op, Ifla::Linkinfo, Vec::new())?
        .nest(&kind)
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    let mut attrs = RtBuffer::new();
    attrs.push(attr(op, Ifla::Ifname, nul_terminated(name))?);
    attrs.push(linkinfo);
    let msg = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .up()
        .rtattrs(attrs)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    encode(
        op,
        Rtm::Newlink,
        NlmF::ACK | NlmF::CREATE | NlmF::EXCL,
        seq,
        msg,
    )
}

pub(crate) fn set_up_request(seq: u32, index: u32) -> Result<Vec<u8>> {
    let op = "bring interface up";
    let msg = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(index as i32)
        .up()
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    encode(op, Rtm::Newlink, NlmF::ACK, seq, msg)
}

pub(crate) fn delete_link_request(seq: u32, index: u32) -> Result<Vec<u8>> {
    let op = "delete interface";
    let msg = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(index as i32)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    encode(op, Rtm::Dellink, NlmF::ACK, seq, msg)
}

/// RTM_NEWADDR / RTM_DELADDR for a host address (`/32`, `/128`) on `index`.
pub(crate) fn address_request(seq: u32, add: bool, index: u32, ip: IpAddr) -> Result<Vec<u8>> {
    let op = if add {
        "add VIP address"
    } else {
        "delete VIP address"
    };
    let msg = host_address(op, index, ip, None)?;
    if add {
        encode(
            op,
            Rtm::Newaddr,
            NlmF::ACK | NlmF::CREATE | NlmF::EXCL,
            seq,
            msg,
        )
    } else {
        encode(op, Rtm::Deladdr, NlmF::ACK, seq, msg)
    }
}

/// RTM_NEWADDR that creates the host address `ip` on `index`, or refreshes
/// it, with a lifetime of `seconds` (valid and preferred): the kernel
/// deletes it that long after the last refresh, whether or not the process
/// that holds it is still alive.
pub(crate) fn leased_address_request(
    seq: u32,
    index: u32,
    ip: IpAddr,
    seconds: u32,
) -> Result<Vec<u8>> {
    let op = "hold VIP address";
    // 0 would be expired at once; u32::MAX is "forever" to the kernel,
    // which would defeat the point of a lifetime.
    if seconds == 0 || seconds == u32::MAX {
        return Err(Error::InvalidArgument {
            op,
            detail: format!("an address lifetime of {seconds} s is not a finite lifetime"),
        });
    }
    let msg = host_address(op, index, ip, Some(seconds))?;
    encode(
        op,
        Rtm::Newaddr,
        NlmF::ACK | NlmF::CREATE | NlmF::REPLACE,
        seq,
        msg,
    )
}

/// The ifaddrmsg of a host address, with `struct ifa_cacheinfo` (preferred
/// and valid lifetime, then two timestamps the kernel ignores on input)
/// when it has a lifetime.
fn host_address(
    op: &'static str,
    index: u32,
    ip: IpAddr,
    lifetime: Option<u32>,
) -> Result<Ifaddrmsg> {
    let mut attrs = RtBuffer::new();
    attrs.push(attr(op, Ifa::Local, ip_bytes(ip))?);
    attrs.push(attr(op, Ifa::Address, ip_bytes(ip))?);
    let mut flags = IfaF::empty();
    if ip.is_ipv6() {
        // No duplicate address detection: the VIP is usable at once, and it
        // is the same on every node by design.
        flags |= IfaF::NODAD;
        attrs.push(attr(op, Ifa::Flags, IFA_F_NODAD.to_ne_bytes().to_vec())?);
    }
    if let Some(seconds) = lifetime {
        let mut info = Vec::with_capacity(16);
        for v in [seconds, seconds, 0, 0] {
            info.extend_from_slice(&v.to_ne_bytes());
        }
        attrs.push(attr(op, Ifa::Cacheinfo, info)?);
    }
    IfaddrmsgBuilder::default()
        .ifa_family(family(ip))
        .ifa_prefixlen(full_prefix(ip))
        .ifa_flags(flags)
        .ifa_scope(RtScope::Universe)
        .ifa_index(index)
        .rtattrs(attrs)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })
}

pub(crate) fn dump_addresses_request(seq: u32) -> Result<Vec<u8>> {
    let op = "list addresses";
    let msg = IfaddrmsgBuilder::default()
        .ifa_family(RtAddrFamily::Unspecified)
        .ifa_prefixlen(0)
        .ifa_scope(RtScope::Universe)
        .ifa_index(0)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    encode(op, Rtm::Getaddr, NlmF::DUMP, seq, msg)
}

/// RTM_NEWROUTE (create or replace) / RTM_DELROUTE for `dst/32` (`/128`)
/// `dev index src prefsrc` in the main table.
pub(crate) fn route_request(
    seq: u32,
    add: bool,
    dst: IpAddr,
    index: Option<u32>,
    prefsrc: Option<IpAddr>,
) -> Result<Vec<u8>> {
    let op = if add {
        "add VIP route"
    } else {
        "delete VIP route"
    };
    let mut attrs = RtBuffer::new();
    attrs.push(attr(op, Rta::Dst, ip_bytes(dst))?);
    if let Some(index) = index {
        attrs.push(attr(op, Rta::Oif, index.to_ne_bytes().to_vec())?);
    }
    if let Some(src) = prefsrc {
        attrs.push(attr(op, Rta::Prefsrc, ip_bytes(src))?);
    }
    let (protocol, scope, kind) = if add {
        // A device route without a gateway: scope link for IPv4, as
        // `ip route add VIP/32 dev IFACE src SRC` does.
        let scope = if dst.is_ipv4() {
            RtScope::Link
        } else {
            RtScope::Universe
        };
        (Rtprot::Static, scope, Rtn::Unicast)
    } else {
        // Only ours (protocol static): never the kernel's own prefix route
        // that an IPv6 address on the interface brings along.
        (Rtprot::Static, RtScope::Nowhere, Rtn::Unspec)
    };
    let msg = RtmsgBuilder::default()
        .rtm_family(family(dst))
        .rtm_dst_len(full_prefix(dst))
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Main)
        .rtm_protocol(protocol)
        .rtm_scope(scope)
        .rtm_type(kind)
        .rtattrs(attrs)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    if add {
        encode(
            op,
            Rtm::Newroute,
            NlmF::ACK | NlmF::CREATE | NlmF::REPLACE,
            seq,
            msg,
        )
    } else {
        encode(op, Rtm::Delroute, NlmF::ACK, seq, msg)
    }
}

pub(crate) fn dump_routes_request(seq: u32, v6: bool) -> Result<Vec<u8>> {
    let op = "list routes";
    let msg = RtmsgBuilder::default()
        .rtm_family(if v6 {
            RtAddrFamily::Inet6
        } else {
            RtAddrFamily::Inet
        })
        .rtm_dst_len(0)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Unspec)
        .rtm_protocol(Rtprot::Unspec)
        .rtm_scope(RtScope::Universe)
        .rtm_type(Rtn::Unspec)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    encode(op, Rtm::Getroute, NlmF::DUMP, seq, msg)
}

/// RTM_GETROUTE for one destination: what `ip route get DEST` asks.
pub(crate) fn route_get_request(seq: u32, dst: IpAddr) -> Result<Vec<u8>> {
    let op = "look up the route to a backend";
    let mut attrs = RtBuffer::new();
    attrs.push(attr(op, Rta::Dst, ip_bytes(dst))?);
    let msg = RtmsgBuilder::default()
        .rtm_family(family(dst))
        .rtm_dst_len(full_prefix(dst))
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Unspec)
        .rtm_protocol(Rtprot::Unspec)
        .rtm_scope(RtScope::Universe)
        .rtm_type(Rtn::Unspec)
        .rtattrs(attrs)
        .build()
        .map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
    encode(op, Rtm::Getroute, NlmF::ACK, seq, msg)
}

pub(crate) fn find_attr<'a>(attrs: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
}

pub(crate) fn parse_ip(bytes: &[u8]) -> Result<IpAddr, String> {
    match bytes.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        }
        n => Err(format!("address of {n} bytes")),
    }
}

pub(crate) fn parse_string(bytes: &[u8]) -> Result<String, String> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).map_err(|_| "name is not UTF-8".to_owned())
}

pub(crate) fn parse_u32(bytes: &[u8]) -> Result<u32, String> {
    if bytes.len() != 4 {
        return Err(format!("u32 attribute of {} bytes", bytes.len()));
    }
    u32_at(bytes, 0).ok_or_else(|| "short u32".to_owned())
}

/// Parses an RTM_NEWLINK payload (struct ifinfomsg + attributes).
pub(crate) fn parse_link(payload: &[u8]) -> Result<LinkInfo, String> {
    const IFINFOMSG_LEN: usize = 16;
    if payload.len() < IFINFOMSG_LEN {
        return Err(format!("ifinfomsg of {} bytes", payload.len()));
    }
    let index = u32_at(payload, 4).ok_or("short ifinfomsg")?;
    let flags = u32_at(payload, 8).ok_or("short ifinfomsg")?;
    let attrs = nl::attributes(&payload[IFINFOMSG_LEN..])?;
    let name = parse_string(find_attr(&attrs, IFLA_IFNAME).ok_or("link without IFLA_IFNAME")?)?;
    let kind = match find_attr(&attrs, IFLA_LINKINFO) {
        Some(info) => match find_attr(&nl::attributes(info)?, IFLA_INFO_KIND) {
            Some(kind) => Some(parse_string(kind)?),
            None => None,
        },
        None => None,
    };
    Ok(LinkInfo {
        index,
        name,
        up: flags & IFF_UP != 0,
        kind,
    })
}

/// Parses an RTM_NEWADDR payload into (interface index, address).
pub(crate) fn parse_address(payload: &[u8]) -> Result<(u32, IfAddress), String> {
    const IFADDRMSG_LEN: usize = 8;
    if payload.len() < IFADDRMSG_LEN {
        return Err(format!("ifaddrmsg of {} bytes", payload.len()));
    }
    let prefix_len = payload[1];
    let index = u32_at(payload, 4).ok_or("short ifaddrmsg")?;
    let attrs = nl::attributes(&payload[IFADDRMSG_LEN..])?;
    // IFA_LOCAL is the interface's own address; IPv6 often sends only
    // IFA_ADDRESS (which then is the same).
    let raw = find_attr(&attrs, IFA_LOCAL)
        .or_else(|| find_attr(&attrs, IFA_ADDRESS))
        .ok_or("address without IFA_LOCAL or IFA_ADDRESS")?;
    let addr = parse_ip(raw)?;
    let family = payload[0];
    if (family == AF_INET) != addr.is_ipv4() || (family != AF_INET && family != AF_INET6) {
        return Err(format!("address family {family} does not match {addr}"));
    }
    Ok((index, IfAddress { addr, prefix_len }))
}

/// Parses an RTM_NEWROUTE payload (struct rtmsg + attributes).
pub(crate) fn parse_route(payload: &[u8]) -> Result<RouteInfo, String> {
    const RTMSG_LEN: usize = 12;
    if payload.len() < RTMSG_LEN {
        return Err(format!("rtmsg of {} bytes", payload.len()));
    }
    let dst_len = payload[1];
    let attrs = nl::attributes(&payload[RTMSG_LEN..])?;
    let table = match find_attr(&attrs, RTA_TABLE) {
        Some(t) => parse_u32(t)?,
        None => u32::from(payload[4]),
    };
    Ok(RouteInfo {
        dst: find_attr(&attrs, RTA_DST).map(parse_ip).transpose()?,
        dst_len,
        table,
        protocol: payload[5],
        oif: find_attr(&attrs, RTA_OIF).map(parse_u32).transpose()?,
        prefsrc: find_attr(&attrs, RTA_PREFSRC).map(parse_ip).transpose()?,
    })
}
