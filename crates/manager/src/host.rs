//! The host around the dataplane: the interface that holds the VIPs, the
//! VIPs themselves (an address, or the control-plane route), and the sysctls
//! the dataplane needs. One definition of each, used by the daemon (at start
//! and on every repair) and by `apiserver-proxy-tools` (init, reload).

use std::fmt;
use std::net::IpAddr;

use apiserver_proxy_dataplane::sysctl::IpvsSysctl;
use apiserver_proxy_dataplane::{Change, Placement};
use apiserver_proxy_types::Endpoint;

use crate::config::VipMode;

/// The IPVS sysctls and the values we need:
/// - `expire_nodest_conn=1`: a deleted real server's connections are reset
///   on their next packet instead of hanging;
/// - `conntrack=1`: stateful host firewalls see the replies (measured:
///   `ct state invalid drop` drops them otherwise).
pub const IPVS_SYSCTLS: [(IpvsSysctl, i32); 2] = [
    (IpvsSysctl::ExpireNodestConn, 1),
    (IpvsSysctl::Conntrack, 1),
];

/// One VIP the host must make reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipSpec {
    pub ip: IpAddr,
    /// The address the node's own route-mode source is chosen towards (a
    /// backend of the VIP): see [`route_towards`].
    pub towards: IpAddr,
}

/// What the host must hold: the interface, and each VIP in the given mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub interface: String,
    pub vip_mode: VipMode,
    pub vips: Vec<VipSpec>,
    /// The outside control-plane VIPs, whose address the election holds
    /// (not this spec) but whose NAT the host needs on every candidate:
    /// their source NAT, and on nftables their prerouting jump. `None`
    /// leaves those rules as they are (the CLI, which does not run the
    /// election).
    pub outside: Option<Vec<Endpoint>>,
}

/// The address a route-mode VIP's source is chosen towards: the first
/// backend of the virtual server (the local apiserver answers through IPVS
/// only when the node uses its own address towards the apiservers), else the
/// VIP itself. The daemon and the CLI both decide it here.
pub fn route_towards(vip: Endpoint, backends: &[Endpoint]) -> IpAddr {
    backends.first().map_or(vip.ip(), |b| b.ip())
}

/// One thing [`Kernel::ensure_host`](crate::kernel::Kernel::ensure_host)
/// changed, as a person would say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostChange {
    InterfaceCreated {
        interface: String,
    },
    InterfaceUp {
        interface: String,
    },
    Vip {
        ip: IpAddr,
        placement: Placed,
        change: Change,
    },
    Sysctl {
        name: &'static str,
        previous: i32,
        now: i32,
    },
    /// The outside VIP's NAT rules, as the dataplane said it.
    Outside(String),
}

/// Where a VIP went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    OnInterface(String),
    RoutedViaLo { src: IpAddr },
}

impl Placed {
    pub fn placement(&self) -> Placement {
        match self {
            Placed::OnInterface(_) => Placement::Address,
            Placed::RoutedViaLo { src } => Placement::Route { src: *src },
        }
    }
}

impl fmt::Display for HostChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostChange::InterfaceCreated { interface } => {
                write!(f, "created the dummy interface {interface}")
            }
            HostChange::InterfaceUp { interface } => {
                write!(f, "brought the interface {interface} up")
            }
            HostChange::Vip {
                ip,
                placement,
                change,
            } => match placement {
                Placed::OnInterface(i) => write!(f, "VIP {ip} on {i}: {change}"),
                Placed::RoutedViaLo { src } => {
                    write!(f, "VIP {ip} routed via lo, source {src}: {change}")
                }
            },
            HostChange::Sysctl {
                name,
                previous,
                now,
            } => write!(f, "set {name} = {now} (was {previous})"),
            HostChange::Outside(what) => f.write_str(what),
        }
    }
}

/// A sysctl that is wrong and could not be set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlUnset {
    pub name: &'static str,
    pub want: i32,
    /// Why it could not be written.
    pub error: String,
}

/// What one [`ensure_host`](crate::kernel::Kernel::ensure_host) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// What was changed, in order; empty when the host was already right.
    pub changes: Vec<HostChange>,
    /// Sysctls that are wrong but read-only here (an unprivileged pod): the
    /// rules work without them, only failover is slower. Not an error, so
    /// that a node is never left with no one reconciling.
    pub sysctls_unset: Vec<SysctlUnset>,
}
