//! The kernel side of bcs-apiserver-proxy: IPVS services and destinations,
//! the dummy interface holding the VIP, and the IPVS sysctls.
//!
//! Everything goes over netlink. There is no mature IPVS crate, so the IPVS
//! generic-netlink protocol (`include/uapi/linux/ip_vs.h`) is implemented here
//! on top of `neli`.

mod error;
mod ipvs;

pub use error::{Error, Result};
pub use ipvs::Ipvs;
