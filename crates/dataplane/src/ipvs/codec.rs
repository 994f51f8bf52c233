//! The IPVS generic-netlink wire format, with no socket.
//!
//! [`encode`] turns a [`Request`] into the bytes of one netlink message;
//! the `parse_*` functions turn reply bytes into our types. Parsing uses
//! checked slicing only: truncated or malformed input is an
//! [`Error::Decode`], never a panic.
//!
//! Byte order: every number is in host order except ports, which are
//! big-endian (network order), as the kernel's `nla_put_be16` sends them.
//! Addresses are sent and received as 16 bytes (`union nf_inet_addr`); an
//! IPv4 address is the first 4 of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use apiserver_proxy_types::Family;

use super::{
    DestSpec, Destination, Forward, Info, Protocol, Service, ServiceKey, ServiceSpec, Stats,
};
use crate::error::{Error, Result};
use crate::nl::{self, align4, u32_at};

// include/uapi/linux/netlink.h
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const NLMSG_HDRLEN: usize = 16;
pub const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;

// include/uapi/linux/genetlink.h
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_NEWFAMILY: u8 = 1;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_VERSION: u8 = 2;

// include/uapi/linux/ip_vs.h
pub const IPVS_GENL_VERSION: u8 = 1;
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
pub const IPVS_CMD_SET_DEST: u8 = 6;
pub const IPVS_CMD_DEL_DEST: u8 = 7;
pub const IPVS_CMD_GET_DEST: u8 = 8;
pub const IPVS_CMD_SET_INFO: u8 = 14;
pub const IPVS_CMD_GET_INFO: u8 = 15;

pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;

pub const IPVS_SVC_ATTR_AF: u16 = 1;
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;

pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;

pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// `AF_INET` / `AF_INET6` (Linux).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `IP_VS_SCHEDNAME_MAXLEN`, including the terminating NUL.
pub const SCHEDNAME_MAXLEN: usize = 16;

/// One request to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `CTRL_CMD_GETFAMILY` for "IPVS", sent to the generic netlink
    /// controller (not to the IPVS family).
    ResolveFamily,
    GetInfo,
    DumpServices,
    GetService(&'a ServiceKey),
    NewService(&'a ServiceSpec),
    SetService(&'a ServiceSpec),
    DelService(&'a ServiceKey),
    DumpDests(&'a ServiceKey),
    NewDest(&'a ServiceKey, &'a DestSpec),
    SetDest(&'a ServiceKey, &'a DestSpec),
    DelDest(&'a ServiceKey, SocketAddr),
}

impl Request<'_> {
    /// The generic netlink command.
    pub fn cmd(&self) -> u8 {
        match self {
            Request::ResolveFamily => CTRL_CMD_GETFAMILY,
            Request::GetInfo => IPVS_CMD_GET_INFO,
            Request::DumpServices | Request::GetService(_) => IPVS_CMD_GET_SERVICE,
            Request::NewService(_) => IPVS_CMD_NEW_SERVICE,
            Request::SetService(_) => IPVS_CMD_SET_SERVICE,
            Request::DelService(_) => IPVS_CMD_DEL_SERVICE,
            Request::DumpDests(_) => IPVS_CMD_GET_DEST,
            Request::NewDest(..) => IPVS_CMD_NEW_DEST,
            Request::SetDest(..) => IPVS_CMD_SET_DEST,
            Request::DelDest(..) => IPVS_CMD_DEL_DEST,
        }
    }

    /// Whether the kernel answers with a multi-part dump ending in
    /// `NLMSG_DONE` (otherwise: at most one reply, then an ACK).
    pub fn is_dump(&self) -> bool {
        matches!(self, Request::DumpServices | Request::DumpDests(_))
    }

    /// The netlink header flags. Dumps carry `NLM_F_ACK` too, as ipvsadm
    /// sends them; the kernel ends a dump with `NLMSG_DONE` only.
    pub fn flags(&self) -> u16 {
        if self.is_dump() {
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        }
    }
}

/// Serializes `request` as one netlink message. `family_id` is the IPVS
/// family's id (ignored for [`Request::ResolveFamily`]); the port id is 0
/// (the kernel fills in the sender).
pub fn encode(family_id: u16, seq: u32, request: &Request<'_>) -> Vec<u8> {
    let mut attrs = Vec::with_capacity(128);
    let (ty, version) = match request {
        Request::ResolveFamily => {
            put_attr(
                &mut attrs,
                CTRL_ATTR_FAMILY_NAME,
                &nul_terminated(super::IPVS_GENL_NAME),
            );
            (GENL_ID_CTRL, CTRL_VERSION)
        }
        Request::GetInfo | Request::DumpServices => (family_id, IPVS_GENL_VERSION),
        Request::GetService(key) | Request::DelService(key) | Request::DumpDests(key) => {
            nest(&mut attrs, IPVS_CMD_ATTR_SERVICE, |a| {
                put_service_key(a, key)
            });
            (family_id, IPVS_GENL_VERSION)
        }
        Request::NewService(spec) | Request::SetService(spec) => {
            nest(&mut attrs, IPVS_CMD_ATTR_SERVICE, |a| put_service(a, spec));
            (family_id, IPVS_GENL_VERSION)
        }
        Request::NewDest(key, dest) | Request::SetDest(key, dest) => {
            nest(&mut attrs, IPVS_CMD_ATTR_SERVICE, |a| {
                put_service_key(a, key)
            });
            nest(&mut attrs, IPVS_CMD_ATTR_DEST, |a| put_dest(a, dest));
            (family_id, IPVS_GENL_VERSION)
        }
        Request::DelDest(key, addr) => {
            nest(&mut attrs, IPVS_CMD_ATTR_SERVICE, |a| {
                put_service_key(a, key)
            });
            nest(&mut attrs, IPVS_CMD_ATTR_DEST, |a| put_dest_key(a, *addr));
            (family_id, IPVS_GENL_VERSION)
        }
    };
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&request.flags().to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.push(request.cmd());
    msg.push(version);
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&attrs);
    msg
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = NLA_HDRLEN + payload.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

/// A nested attribute, flagged `NLA_F_NESTED` as ipvsadm (libnl) sends it.
fn nest(buf: &mut Vec<u8>, ty: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    fill(buf);
    let len = u16::try_from(buf.len() - start)
        .unwrap_or(u16::MAX)
        .to_ne_bytes();
    buf[start] = len[0];
    buf[start + 1] = len[1];
}

fn af(ip: IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            a
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn put_service_key(a: &mut Vec<u8>, key: &ServiceKey) {
    put_attr(a, IPVS_SVC_ATTR_AF, &af(key.addr.ip()).to_ne_bytes());
    put_attr(
        a,
        IPVS_SVC_ATTR_PROTOCOL,
        &key.protocol.number().to_ne_bytes(),
    );
    put_attr(a, IPVS_SVC_ATTR_ADDR, &addr16(key.addr.ip()));
    put_attr(a, IPVS_SVC_ATTR_PORT, &key.addr.port().to_be_bytes());
}

fn put_service(a: &mut Vec<u8>, spec: &ServiceSpec) {
    put_service_key(a, &spec.key);
    put_attr(
        a,
        IPVS_SVC_ATTR_SCHED_NAME,
        &nul_terminated(&spec.scheduler),
    );
    // struct ip_vs_flags { __u32 flags; __u32 mask; }
    let mut flags = [0u8; 8];
    flags[..4].copy_from_slice(&spec.flags.to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    put_attr(a, IPVS_SVC_ATTR_FLAGS, &flags);
    put_attr(a, IPVS_SVC_ATTR_TIMEOUT, &spec.timeout.to_ne_bytes());
    put_attr(a, IPVS_SVC_ATTR_NETMASK, &spec.netmask.to_ne_bytes());
}

// Destination attributes go in ipvsadm's order (family first), without its
// tunnel attributes, which only matter for `Forward::Tunnel` with GUE/GRE.
fn put_dest_key(a: &mut Vec<u8>, addr: SocketAddr) {
    put_attr(a, IPVS_DEST_ATTR_ADDR_FAMILY, &af(addr.ip()).to_ne_bytes());
    put_attr(a, IPVS_DEST_ATTR_ADDR, &addr16(addr.ip()));
    put_attr(a, IPVS_DEST_ATTR_PORT, &addr.port().to_be_bytes());
}

fn put_dest(a: &mut Vec<u8>, dest: &DestSpec) {
    put_dest_key(a, dest.addr);
    put_attr(
        a,
        IPVS_DEST_ATTR_FWD_METHOD,
        &dest.forward.code().to_ne_bytes(),
    );
    put_attr(a, IPVS_DEST_ATTR_WEIGHT, &dest.weight.to_ne_bytes());
    put_attr(
        a,
        IPVS_DEST_ATTR_U_THRESH,
        &dest.upper_threshold.to_ne_bytes(),
    );
    put_attr(
        a,
        IPVS_DEST_ATTR_L_THRESH,
        &dest.lower_threshold.to_ne_bytes(),
    );
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

fn decode_err(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Decode {
        op,
        detail: detail.into(),
    }
}

pub use crate::nl::NlMessage;

/// Splits a datagram into netlink messages.
pub fn split_messages(buf: &[u8]) -> Result<Vec<NlMessage<'_>>> {
    nl::split(buf).map_err(|d| decode_err("split netlink datagram", d))
}

/// The errno of an `NLMSG_ERROR` (0 for an ACK) or of a `NLMSG_DONE` that
/// carries one, as a positive number.
pub fn error_code(msg: &NlMessage<'_>) -> Result<i32> {
    let code = u32_at(msg.payload, 0)
        .ok_or_else(|| decode_err("read netlink error", "NLMSG_ERROR without an errno"))?
        as i32;
    match code.checked_neg() {
        Some(errno) if errno >= 0 => Ok(errno),
        _ => Err(decode_err(
            "read netlink error",
            format!("error code {code} is not a negative errno"),
        )),
    }
}

/// Splits a generic netlink payload into its command and attributes.
pub fn genl_header<'a>(op: &'static str, payload: &'a [u8]) -> Result<(u8, &'a [u8])> {
    let cmd = *payload
        .first()
        .ok_or_else(|| decode_err(op, "empty generic netlink message"))?;
    let attrs = payload
        .get(GENL_HDRLEN..)
        .ok_or_else(|| decode_err(op, "generic netlink header truncated"))?;
    Ok((cmd, attrs))
}

/// Walks attributes, calling `f` with (type, payload) for each.
fn walk<'a>(op: &'static str, buf: &'a [u8], f: impl FnMut(u16, &'a [u8])) -> Result<()> {
    nl::walk(buf, f).map_err(|d| decode_err(op, d))
}

/// Splits attributes into (type, payload), type without the nested and
/// byte-order flags.
pub fn attributes<'a>(op: &'static str, buf: &'a [u8]) -> Result<Vec<(u16, &'a [u8])>> {
    let mut out = Vec::new();
    walk(op, buf, |ty, p| out.push((ty, p)))?;
    Ok(out)
}

/// Attributes by type (the first of each; types above the table are
/// ignored). No allocation: dumps of 10,000 services parse this way.
type Table<'a> = [Option<&'a [u8]>; 16];

fn table<'a>(op: &'static str, buf: &'a [u8]) -> Result<Table<'a>> {
    let mut t: Table<'a> = [None; 16];
    walk(op, buf, |ty, p| {
        if let Some(slot @ None) = t.get_mut(usize::from(ty)) {
            *slot = Some(p);
        }
    })?;
    Ok(t)
}

fn find<'a>(attrs: &Table<'a>, ty: u16) -> Option<&'a [u8]> {
    attrs.get(usize::from(ty)).copied().flatten()
}

fn need<'a>(op: &'static str, attrs: &Table<'a>, ty: u16, name: &str) -> Result<&'a [u8]> {
    find(attrs, ty).ok_or_else(|| decode_err(op, format!("{name} missing")))
}

fn exact<const N: usize>(op: &'static str, p: &[u8], name: &str) -> Result<[u8; N]> {
    // Longer is tolerated (a future kernel may widen a field); shorter is not.
    p.get(..N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| decode_err(op, format!("{name} has {} bytes, expected {N}", p.len())))
}

fn get_u16(op: &'static str, attrs: &Table<'_>, ty: u16, name: &str) -> Result<u16> {
    Ok(u16::from_ne_bytes(exact(
        op,
        need(op, attrs, ty, name)?,
        name,
    )?))
}

fn get_u32(op: &'static str, attrs: &Table<'_>, ty: u16, name: &str) -> Result<u32> {
    Ok(u32::from_ne_bytes(exact(
        op,
        need(op, attrs, ty, name)?,
        name,
    )?))
}

fn get_port(op: &'static str, attrs: &Table<'_>, ty: u16) -> Result<u16> {
    Ok(u16::from_be_bytes(exact(
        op,
        need(op, attrs, ty, "port")?,
        "port",
    )?))
}

fn family_from_af(op: &'static str, af: u16) -> Result<Family> {
    match af {
        AF_INET => Ok(Family::Ipv4),
        AF_INET6 => Ok(Family::Ipv6),
        other => Err(decode_err(op, format!("unknown address family {other}"))),
    }
}

fn get_ip(op: &'static str, p: &[u8], family: Family) -> Result<IpAddr> {
    Ok(match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(exact::<4>(op, p, "IPv4 address")?)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(exact::<16>(op, p, "IPv6 address")?)),
    })
}

fn socket_addr(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
    }
}

/// Reads a nested stats attribute. Each counter is 4 or 8 bytes: the old
/// `*_ATTR_STATS` mixes both, `*_ATTR_STATS64` has only 8-byte ones.
pub fn parse_stats(op: &'static str, nested: &[u8]) -> Result<Stats> {
    let t = table(op, nested)?;
    let counter = |ty: u16| -> Result<u64> {
        match find(&t, ty) {
            None => Ok(0),
            Some(p) if p.len() == 4 => Ok(u64::from(u32::from_ne_bytes(exact(op, p, "counter")?))),
            Some(p) if p.len() == 8 => Ok(u64::from_ne_bytes(exact(op, p, "counter")?)),
            Some(p) => Err(decode_err(
                op,
                format!(
                    "stats attribute {ty} has {} bytes, expected 4 or 8",
                    p.len()
                ),
            )),
        }
    };
    // IPVS_STATS_ATTR_PAD (11) and anything newer carry no counter.
    Ok(Stats {
        conns: counter(IPVS_STATS_ATTR_CONNS)?,
        inpkts: counter(IPVS_STATS_ATTR_INPKTS)?,
        outpkts: counter(IPVS_STATS_ATTR_OUTPKTS)?,
        inbytes: counter(IPVS_STATS_ATTR_INBYTES)?,
        outbytes: counter(IPVS_STATS_ATTR_OUTBYTES)?,
        cps: counter(IPVS_STATS_ATTR_CPS)?,
        inpps: counter(IPVS_STATS_ATTR_INPPS)?,
        outpps: counter(IPVS_STATS_ATTR_OUTPPS)?,
        inbps: counter(IPVS_STATS_ATTR_INBPS)?,
        outbps: counter(IPVS_STATS_ATTR_OUTBPS)?,
    })
}

fn stats_of(op: &'static str, attrs: &Table<'_>, ty64: u16, ty32: u16) -> Result<Stats> {
    match find(attrs, ty64).or_else(|| find(attrs, ty32)) {
        Some(nested) => parse_stats(op, nested),
        None => Ok(Stats::default()),
    }
}

/// The single nested attribute of type `ty` in a generic netlink payload
/// (after the genl header).
fn top_nest<'a>(op: &'static str, payload: &'a [u8], ty: u16, name: &str) -> Result<&'a [u8]> {
    let (_, attrs) = genl_header(op, payload)?;
    let top = table(op, attrs)?;
    need(op, &top, ty, name)
}

/// Parses the attributes inside `IPVS_CMD_ATTR_SERVICE`. `Ok(None)` for a
/// service this crate cannot represent (a firewall-mark service, an unknown
/// protocol or address family): such services belong to someone else and
/// are skipped, not treated as errors.
pub fn parse_service_attrs(nested: &[u8]) -> Result<Option<Service>> {
    const OP: &str = "decode IPVS service";
    let a = table(OP, nested)?;
    let af = get_u16(OP, &a, IPVS_SVC_ATTR_AF, "address family")?;
    if find(&a, IPVS_SVC_ATTR_ADDR).is_none() && find(&a, IPVS_SVC_ATTR_FWMARK).is_some() {
        return Ok(None);
    }
    let Ok(family) = family_from_af(OP, af) else {
        return Ok(None);
    };
    let Some(protocol) =
        Protocol::from_number(get_u16(OP, &a, IPVS_SVC_ATTR_PROTOCOL, "protocol")?)
    else {
        return Ok(None);
    };
    let ip = get_ip(OP, need(OP, &a, IPVS_SVC_ATTR_ADDR, "address")?, family)?;
    let port = get_port(OP, &a, IPVS_SVC_ATTR_PORT)?;
    let sched = need(OP, &a, IPVS_SVC_ATTR_SCHED_NAME, "scheduler name")?;
    let sched = sched.split(|b| *b == 0).next().unwrap_or_default();
    let scheduler = std::str::from_utf8(sched)
        .map_err(|_| decode_err(OP, "scheduler name is not UTF-8"))?
        .to_owned();
    let flags = need(OP, &a, IPVS_SVC_ATTR_FLAGS, "flags")?;
    let flags = u32::from_ne_bytes(exact(OP, flags, "flags")?) & !super::SVC_F_HASHED;
    Ok(Some(Service {
        spec: ServiceSpec {
            key: ServiceKey {
                protocol,
                addr: socket_addr(ip, port),
            },
            scheduler,
            flags,
            timeout: get_u32(OP, &a, IPVS_SVC_ATTR_TIMEOUT, "timeout")?,
            netmask: get_u32(OP, &a, IPVS_SVC_ATTR_NETMASK, "netmask")?,
        },
        stats: stats_of(OP, &a, IPVS_SVC_ATTR_STATS64, IPVS_SVC_ATTR_STATS)?,
    }))
}

/// Parses one `IPVS_CMD_NEW_SERVICE` reply (genl header onwards).
pub fn parse_service_message(payload: &[u8]) -> Result<Option<Service>> {
    const OP: &str = "decode IPVS service";
    parse_service_attrs(top_nest(
        OP,
        payload,
        IPVS_CMD_ATTR_SERVICE,
        "IPVS_CMD_ATTR_SERVICE",
    )?)
}

/// Parses the attributes inside `IPVS_CMD_ATTR_DEST`. `service_family` is
/// used when the kernel does not send the destination's own family (older
/// than 4.x).
pub fn parse_dest_attrs(nested: &[u8], service_family: Family) -> Result<Destination> {
    const OP: &str = "decode IPVS destination";
    let a = table(OP, nested)?;
    let family = match find(&a, IPVS_DEST_ATTR_ADDR_FAMILY) {
        Some(p) => family_from_af(OP, u16::from_ne_bytes(exact(OP, p, "address family")?))?,
        None => service_family,
    };
    let ip = get_ip(OP, need(OP, &a, IPVS_DEST_ATTR_ADDR, "address")?, family)?;
    let port = get_port(OP, &a, IPVS_DEST_ATTR_PORT)?;
    let fwd = get_u32(OP, &a, IPVS_DEST_ATTR_FWD_METHOD, "forwarding method")?;
    let forward = Forward::from_code(fwd)
        .ok_or_else(|| decode_err(OP, format!("unknown forwarding method {fwd}")))?;
    Ok(Destination {
        spec: DestSpec {
            addr: socket_addr(ip, port),
            weight: get_u32(OP, &a, IPVS_DEST_ATTR_WEIGHT, "weight")?,
            forward,
            upper_threshold: get_u32(OP, &a, IPVS_DEST_ATTR_U_THRESH, "upper threshold")?,
            lower_threshold: get_u32(OP, &a, IPVS_DEST_ATTR_L_THRESH, "lower threshold")?,
        },
        active_conns: get_u32(OP, &a, IPVS_DEST_ATTR_ACTIVE_CONNS, "active connections")?,
        inactive_conns: get_u32(OP, &a, IPVS_DEST_ATTR_INACT_CONNS, "inactive connections")?,
        persist_conns: get_u32(
            OP,
            &a,
            IPVS_DEST_ATTR_PERSIST_CONNS,
            "persistent connections",
        )?,
        stats: stats_of(OP, &a, IPVS_DEST_ATTR_STATS64, IPVS_DEST_ATTR_STATS)?,
    })
}

/// Parses one `IPVS_CMD_NEW_DEST` reply (genl header onwards).
pub fn parse_dest_message(payload: &[u8], service_family: Family) -> Result<Destination> {
    const OP: &str = "decode IPVS destination";
    parse_dest_attrs(
        top_nest(OP, payload, IPVS_CMD_ATTR_DEST, "IPVS_CMD_ATTR_DEST")?,
        service_family,
    )
}

/// Parses the `IPVS_CMD_SET_INFO` reply to `GET_INFO` (genl header onwards).
pub fn parse_info_message(payload: &[u8]) -> Result<Info> {
    const OP: &str = "decode IPVS info";
    let (_, attrs) = genl_header(OP, payload)?;
    let a = table(OP, attrs)?;
    let v = get_u32(OP, &a, IPVS_INFO_ATTR_VERSION, "version")?;
    Ok(Info {
        version: ((v >> 16) as u8, (v >> 8) as u8, v as u8),
        conn_table_size: get_u32(
            OP,
            &a,
            IPVS_INFO_ATTR_CONN_TAB_SIZE,
            "connection table size",
        )?,
    })
}

/// Parses the controller's `CTRL_CMD_NEWFAMILY` reply: the family id.
pub fn parse_family_message(payload: &[u8]) -> Result<u16> {
    const OP: &str = "decode generic netlink family";
    let (_, attrs) = genl_header(OP, payload)?;
    get_u16(OP, &table(OP, attrs)?, CTRL_ATTR_FAMILY_ID, "family id")
}

/// Sorts one datagram's messages for request `seq`: appends replies to
/// `replies` and says whether the answer is complete, or the kernel's errno.
/// Messages with another sequence number (late answers) are skipped.
pub fn collect<'a>(
    datagram: &'a [u8],
    seq: u32,
    replies: &mut Vec<&'a [u8]>,
) -> Result<std::result::Result<bool, i32>> {
    for m in split_messages(datagram)? {
        if m.seq != seq {
            continue;
        }
        match m.ty {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let errno = error_code(&m)?;
                return Ok(if errno == 0 { Ok(true) } else { Err(errno) });
            }
            NLMSG_DONE => {
                // A dump may end with an error of its own.
                let errno = if m.payload.len() >= 4 {
                    error_code(&m)?
                } else {
                    0
                };
                return Ok(if errno == 0 { Ok(true) } else { Err(errno) });
            }
            NLMSG_OVERRUN => {
                return Err(decode_err("read netlink reply", "NLMSG_OVERRUN"));
            }
            _ => replies.push(m.payload),
        }
    }
    Ok(Ok(false))
}

/// Parses a whole service dump (the datagrams the kernel sent for
/// [`Request::DumpServices`] with sequence number `seq`). Used by tests and
/// fuzzing; the client does the same one datagram at a time.
pub fn parse_service_dump(datagrams: &[&[u8]], seq: u32) -> Result<Vec<Service>> {
    let mut replies = Vec::new();
    for d in datagrams {
        if let Err(errno) = collect(d, seq, &mut replies)? {
            return Err(Error::Kernel {
                op: "dump IPVS services",
                errno,
                msg: std::io::Error::from_raw_os_error(errno).to_string(),
            });
        }
    }
    let mut out = Vec::new();
    for r in replies {
        if let Some(s) = parse_service_message(r)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Parses a whole destination dump; see [`parse_service_dump`].
pub fn parse_dest_dump(
    datagrams: &[&[u8]],
    seq: u32,
    service_family: Family,
) -> Result<Vec<Destination>> {
    let mut replies = Vec::new();
    for d in datagrams {
        if let Err(errno) = collect(d, seq, &mut replies)? {
            return Err(Error::Kernel {
                op: "dump IPVS destinations",
                errno,
                msg: std::io::Error::from_raw_os_error(errno).to_string(),
            });
        }
    }
    replies
        .into_iter()
        .map(|r| parse_dest_message(r, service_family))
        .collect()
}

#[cfg(test)]
mod tests;
