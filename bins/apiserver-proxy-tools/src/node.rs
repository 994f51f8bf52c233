//! This node's kernel, through the dataplane and the manager: the dummy
//! interface and VIP, the IPVS sysctls, and our virtual servers.
//!
//! Changes go through the manager's planner (`plan::plan`) with
//! `keep_unlisted`, so the CLI can only ever create a service, add a
//! destination or put one back in rotation: it never removes a backend the
//! kernel holds. Deleting a whole virtual server is the one explicit
//! exception (`delete`, `cleanup`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use apiserver_proxy_dataplane::{
    Change, Error as DpError, IpvsSysctl, Protocol, Rtnl, ServiceKey, Sysctls, VipMode,
};
use apiserver_proxy_manager::kernel::{Kernel, Netlink};
use apiserver_proxy_manager::plan::{self, ActualVs, Condition, DesiredVs, Drains, Op};
use apiserver_proxy_types::Endpoint;

use crate::cli::VipModeArg;
use crate::fail::Failure;

/// The scheduler of a new virtual server unless one is given.
pub const DEFAULT_SCHEDULER: &str = "rr";

/// Netlink handles on this node's kernel.
#[derive(Debug)]
pub struct Node {
    kernel: Netlink,
    rtnl: Rtnl,
}

impl Node {
    /// Opens IPVS first and asks it one question: a kernel without IPVS or a
    /// caller without CAP_NET_ADMIN fails here, before anything changes.
    pub fn connect() -> Result<Node, Failure> {
        let kernel = Netlink::connect()?;
        kernel.ipvs().info()?;
        let rtnl = Rtnl::connect()?;
        Ok(Node { kernel, rtnl })
    }

    /// Makes sure the dummy interface exists and holds the VIP (or, in route
    /// mode, that the route to it exists). `towards` picks the node address
    /// a route-mode VIP uses as source (the first backend).
    pub fn place_vip(
        &mut self,
        interface: &str,
        vip: IpAddr,
        mode: VipModeArg,
        towards: Option<IpAddr>,
    ) -> Result<(), Failure> {
        let link = self.rtnl.ensure_dummy(interface)?;
        if link.created {
            outln!("created the dummy interface {interface}");
        } else if link.brought_up {
            outln!("brought the interface {interface} up");
        }
        let (mode, place) = match mode {
            VipModeArg::Address => (VipMode::Address, format!("on {interface}")),
            VipModeArg::Route => {
                let src = self.rtnl.preferred_source(towards.unwrap_or(vip))?;
                (
                    VipMode::Route { src },
                    format!("routed via lo, source {src}"),
                )
            }
        };
        let change = self.rtnl.ensure_vip(interface, vip, mode)?;
        outln!("VIP {vip} {place}: {change}");
        Ok(())
    }

    /// Brings the VIP's virtual server to hold at least `backends`, each in
    /// rotation, creating it if missing. `scheduler` None keeps the one an
    /// existing service has. Stops at the first kernel error: what was done
    /// stays. Returns the scheduler in use.
    pub fn converge(
        &self,
        vip: Endpoint,
        scheduler: Option<&str>,
        backends: &[Endpoint],
    ) -> Result<String, Failure> {
        let actual = self.kernel.read_ours(&[vip])?;
        let scheduler = scheduler
            .map(str::to_string)
            .or_else(|| actual.first().map(|a| a.scheduler.clone()))
            .unwrap_or_else(|| DEFAULT_SCHEDULER.to_string());
        let desired = DesiredVs {
            vip,
            scheduler: scheduler.clone(),
            backends: backends.iter().map(|b| (*b, Condition::Unprobed)).collect(),
            keep_unlisted: true,
        };
        let p = plan::plan(
            &[desired],
            &actual,
            &mut Drains::default(),
            Instant::now(),
            Duration::MAX,
        );
        for op in &p.ops {
            self.kernel.apply(op)?;
            outln!("{}", describe(op));
        }
        if p.ops.is_empty() {
            outln!(
                "virtual server {vip}: already in place ({scheduler}, every backend in rotation)"
            );
        }
        Ok(scheduler)
    }

    /// Our virtual servers as the kernel holds them (those of `vips` that
    /// exist).
    pub fn read(&self, vips: &[Endpoint]) -> Result<Vec<ActualVs>, Failure> {
        Ok(self.kernel.read_ours(vips)?)
    }

    /// The addresses on `interface` (none if it does not exist).
    fn addresses(&mut self, interface: &str) -> Result<BTreeSet<IpAddr>, Failure> {
        match self.rtnl.addresses(interface) {
            Ok(a) => Ok(a.into_iter().map(|a| a.addr).collect()),
            Err(DpError::InterfaceNotFound { .. }) => Ok(BTreeSet::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `ip` is an address on `interface`.
    pub fn vip_on(&mut self, interface: &str, ip: IpAddr) -> Result<bool, Failure> {
        Ok(self.addresses(interface)?.contains(&ip))
    }

    /// Every TCP/UDP/SCTP virtual server on `ip`, ours or not.
    fn services_on(&self, ip: IpAddr) -> Result<Vec<ServiceKey>, Failure> {
        Ok(self
            .kernel
            .ipvs()
            .services()?
            .into_iter()
            .map(|s| s.spec.key)
            .filter(|k| k.addr.ip() == ip)
            .collect())
    }

    /// Which virtual servers are ours: the VIPs the state files name, plus
    /// every TCP service whose address is on our interface (made by `add`).
    /// kube-proxy keeps its addresses on kube-ipvs0, so its services are
    /// never among them.
    pub fn ours(&mut self, interface: &str, saved: &[Endpoint]) -> Result<Vec<Endpoint>, Failure> {
        let mut out: BTreeSet<Endpoint> = saved.iter().copied().collect();
        let on_interface = self.addresses(interface)?;
        if !on_interface.is_empty() {
            for s in self.kernel.ipvs().services()? {
                let key = s.spec.key;
                if key.protocol == Protocol::Tcp && on_interface.contains(&key.addr.ip()) {
                    out.insert(Endpoint(key.addr));
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Whether the kernel has the virtual server `vip`.
    pub fn exists(&self, vip: Endpoint) -> Result<bool, Failure> {
        Ok(self
            .kernel
            .ipvs()
            .service(&ServiceKey::tcp(vip.0))?
            .is_some())
    }

    /// Deletes the virtual server `vip` and its destinations. False if there
    /// was none.
    pub fn delete_service(&self, vip: Endpoint) -> Result<bool, Failure> {
        match self.kernel.ipvs().del_service(&ServiceKey::tcp(vip.0)) {
            Ok(()) => {
                outln!("deleted virtual server {vip}");
                Ok(true)
            }
            Err(DpError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the VIP (address on `interface`, and an IPv4 route-mode route
    /// via lo) unless another virtual server still uses its address.
    pub fn release_vip(&mut self, interface: &str, ip: IpAddr) -> Result<(), Failure> {
        let users = self.services_on(ip)?;
        if !users.is_empty() {
            let names: Vec<String> = users.iter().map(|k| k.to_string()).collect();
            outln!("kept VIP {ip}: still used by {}", names.join(", "));
            return Ok(());
        }
        let address = self.rtnl.remove_vip(interface, ip, VipMode::Address)?;
        if address.changed() {
            outln!("removed VIP {ip} from {interface}");
        }
        let route = if ip.is_ipv4() {
            // The source does not matter for a removal.
            self.rtnl
                .remove_vip(interface, ip, VipMode::Route { src: ip })?
        } else {
            Change::AlreadyAbsent
        };
        if route.changed() {
            outln!("removed the route to VIP {ip} via lo");
        }
        if !address.changed() && !route.changed() {
            outln!("VIP {ip}: already gone");
        }
        Ok(())
    }

    /// Deletes `interface` if it is a dummy holding no address but IPv6
    /// link-local ones (what `ensure_dummy` made and nothing else uses).
    pub fn remove_interface_if_unused(&mut self, interface: &str) -> Result<(), Failure> {
        let Some(link) = self.rtnl.link(interface)? else {
            return Ok(());
        };
        if link.kind.as_deref() != Some("dummy") {
            outln!("kept interface {interface}: not a dummy interface");
            return Ok(());
        }
        let used: Vec<IpAddr> = self
            .addresses(interface)?
            .into_iter()
            .filter(|a| !is_link_local(a))
            .collect();
        if used.is_empty() {
            if self.rtnl.delete_link(interface)?.changed() {
                outln!("deleted the dummy interface {interface}");
            }
        } else {
            let list: Vec<String> = used.iter().map(|a| a.to_string()).collect();
            outln!(
                "kept interface {interface}: it still holds {}",
                list.join(", ")
            );
        }
        Ok(())
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

/// Sets the IPVS sysctls the daemon wants (a deleted backend's connections
/// are reset at once; stateful firewalls see the replies). A daemon in an
/// unprivileged pod can read but not write them, so the CLI setting them at
/// boot matters. A failure is a warning: the rules work without them.
pub fn tune_sysctls() {
    let sysctls = Sysctls::new();
    for (s, want) in [
        (IpvsSysctl::ExpireNodestConn, 1),
        (IpvsSysctl::Conntrack, 1),
    ] {
        match sysctls.ensure(s, want) {
            Ok(c) if c.written => outln!("set {} = {want} (was {})", s.name(), c.previous),
            Ok(_) => {}
            Err(e) => eprintln!("warning: {e}"),
        }
    }
}

/// One kernel change, as a person would say it.
fn describe(op: &Op) -> String {
    match op {
        Op::CreateService { vip, scheduler } => {
            format!("created virtual server {vip} (scheduler {scheduler})")
        }
        Op::SetScheduler { vip, scheduler } => {
            format!("changed the scheduler of {vip} to {scheduler}")
        }
        Op::AddDest {
            vip,
            backend,
            weight,
        } => format!("added backend {backend} to {vip} (weight {weight})"),
        Op::SetWeight {
            vip,
            backend,
            weight,
        } => format!("set backend {backend} of {vip} to weight {weight}"),
        Op::DelDest { vip, backend, .. } => format!("removed backend {backend} from {vip}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_do_not_count_as_use() {
        assert!(is_link_local(&"fe80::1".parse().expect("ip")));
        assert!(!is_link_local(&"fd00::2".parse().expect("ip")));
        assert!(!is_link_local(&"10.103.97.2".parse().expect("ip")));
    }
}
