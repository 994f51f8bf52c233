//! The kernel side of bcs-apiserver-proxy: IPVS services and destinations,
//! our nftables table, conntrack, the dummy interface holding the VIP, the
//! IPVS sysctls, and the announcements of an address that moved here.
//!
//! Almost everything goes over netlink. There is no mature IPVS or
//! nf_tables crate we may link, so those protocols
//! (`include/uapi/linux/ip_vs.h`, `netfilter/nf_tables.h`) are implemented
//! here as pure codecs. The announcements ([`announce`]) are an Ethernet
//! frame on a packet socket and an ICMPv6 message on a raw socket.

pub mod announce;
mod choice;
pub mod conntable;
pub mod conntrack;
mod error;
pub mod ipvs;
pub mod link;
pub mod monitor;
pub mod nft;
mod nl;
pub mod sockdiag;
pub mod sysctl;
pub mod tcp_table;
mod vip;

pub use choice::{DataplaneChoice, UnknownDataplane};
pub use error::{Error, Result};
pub use ipvs::{
    DestSpec, Destination, Forward, Info, Ipvs, Protocol, Service, ServiceKey, ServiceSpec, Stats,
};
pub use link::{
    Change, DEFAULT_INTERFACE, EnsuredLink, IfAddress, LinkInfo, Placement, RouteInfo, Rtnl,
    validate_interface_name,
};
pub use monitor::{HostEvent, HostMonitor};
pub use sysctl::{IpvsSysctl, SysctlChange, Sysctls};
pub use vip::{UnknownVipMode, VipMode};
