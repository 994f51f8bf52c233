//! The kernel side of bcs-apiserver-proxy: IPVS services and destinations,
//! the dummy interface holding the VIP, and the IPVS sysctls.
//!
//! Everything goes over netlink. There is no mature IPVS crate, so the IPVS
//! generic-netlink protocol (`include/uapi/linux/ip_vs.h`) is implemented here
//! on top of `neli`.

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
