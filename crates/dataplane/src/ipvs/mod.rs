//! IPVS over generic netlink (`include/uapi/linux/ip_vs.h`, family "IPVS",
//! version 1).
//!
//! [`codec`] is pure: it builds request bytes and parses reply bytes, with
//! no socket, and never panics on bad input. [`Ipvs`] is the blocking client
//! that sends those requests on a netlink socket.
//!
//! There is deliberately no flush: the proxy only ever changes the services
//! it owns and leaves everything else in the table alone.

use std::fmt;
use std::net::SocketAddr;

use apiserver_proxy_types::Family;

mod client;
pub mod codec;

pub use client::Ipvs;

/// The name the kernel registers the IPVS generic netlink family under.
pub const IPVS_GENL_NAME: &str = "IPVS";

/// A virtual service's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// Never created by the proxy, but other users' SCTP services show up in
    /// dumps and must not make them fail.
    Sctp,
}

impl Protocol {
    /// The IP protocol number (`IPPROTO_*`).
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol with IP protocol number `n`, if IPVS supports it.
    pub fn from_number(n: u16) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What identifies a virtual service: protocol, address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl ServiceKey {
    pub fn new(protocol: Protocol, addr: SocketAddr) -> ServiceKey {
        ServiceKey { protocol, addr }
    }

    pub fn tcp(addr: SocketAddr) -> ServiceKey {
        ServiceKey::new(Protocol::Tcp, addr)
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr.ip())
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPVS service {} {}", self.protocol, self.addr)
    }
}

/// `IP_VS_SVC_F_PERSISTENT`: connections from one client stick to one real
/// server for [`ServiceSpec::timeout`] seconds.
pub const SVC_F_PERSISTENT: u32 = 0x0001;
/// `IP_VS_SVC_F_HASHED`: the kernel's own bookkeeping ("the service is in
/// the hash table"). It reports it in every dump; the codec masks it off, so
/// [`ServiceSpec::flags`] read back equals what was set.
pub const SVC_F_HASHED: u32 = 0x0002;
/// `IP_VS_SVC_F_ONEPACKET`: one-packet scheduling (UDP).
pub const SVC_F_ONEPACKET: u32 = 0x0004;

/// A virtual service as the proxy asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    /// The scheduler's name (`rr`, `wrr`, `lc`, ...); the kernel module is
    /// `ip_vs_<name>`.
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` flags. Sent with an all-ones mask, so this is the
    /// whole flag word; the kernel's internal [`SVC_F_HASHED`] is masked off
    /// when reading.
    pub flags: u32,
    /// Persistence timeout in seconds (used with [`SVC_F_PERSISTENT`]).
    pub timeout: u32,
    /// Persistence netmask: a mask for IPv4 (`0xffffffff` is /32), a prefix
    /// length for IPv6 (`128`).
    pub netmask: u32,
}

impl ServiceSpec {
    /// A service with scheduler `scheduler`, no flags, no persistence and the
    /// full-length netmask of its family.
    pub fn new(key: ServiceKey, scheduler: &str) -> ServiceSpec {
        ServiceSpec {
            key,
            scheduler: scheduler.to_owned(),
            flags: 0,
            timeout: 0,
            netmask: default_netmask(key.family()),
        }
    }
}

/// The persistence netmask that means "one address" in `family`.
pub fn default_netmask(family: Family) -> u32 {
    match family {
        Family::Ipv4 => 0xffff_ffff,
        Family::Ipv6 => 128,
    }
}

/// Counters and rates the kernel keeps for a service or a destination
/// (`IPVS_*_ATTR_STATS64`). Rates are per second, estimated by the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A virtual service as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    pub spec: ServiceSpec,
    pub stats: Stats,
}

/// How packets reach a real server (`IP_VS_CONN_F_*` forwarding methods).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Forward {
    /// NAT (`-m`): the only method that works for a node-local balancer.
    #[default]
    Masquerade,
    /// IP-in-IP tunnelling (`-i`).
    Tunnel,
    /// Direct routing (`-g`).
    Route,
    /// `IP_VS_CONN_F_LOCALNODE`: the kernel reports this instead of the
    /// configured method when the destination is one of the node's own
    /// addresses (a control-plane node's local apiserver).
    Local,
}

impl Forward {
    /// The `IPVS_DEST_ATTR_FWD_METHOD` value.
    pub fn code(self) -> u32 {
        match self {
            Forward::Masquerade => 0,
            Forward::Local => 1,
            Forward::Tunnel => 2,
            Forward::Route => 3,
        }
    }

    pub fn from_code(code: u32) -> Option<Forward> {
        match code & 0x7 {
            0 => Some(Forward::Masquerade),
            1 => Some(Forward::Local),
            2 => Some(Forward::Tunnel),
            3 => Some(Forward::Route),
            _ => None,
        }
    }
}

/// A real server (destination) of a service, as the proxy asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestSpec {
    pub addr: SocketAddr,
    /// 0 takes the server out of rotation without breaking its connections.
    pub weight: u32,
    pub forward: Forward,
    /// Upper connection threshold; 0 means none.
    pub upper_threshold: u32,
    /// Lower connection threshold; 0 means none.
    pub lower_threshold: u32,
}

impl DestSpec {
    /// A masqueraded destination without thresholds.
    pub fn new(addr: SocketAddr, weight: u32) -> DestSpec {
        DestSpec {
            addr,
            weight,
            forward: Forward::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr.ip())
    }
}

/// A real server as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub spec: DestSpec,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: Stats,
}

/// What `IPVS_CMD_GET_INFO` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Info {
    /// (major, minor, patch), e.g. (1, 2, 1).
    pub version: (u8, u8, u8),
    /// Size of the connection hash table.
    pub conn_table_size: u32,
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version;
        write!(
            f,
            "IPVS {a}.{b}.{c} (connection table size {})",
            self.conn_table_size
        )
    }
}
