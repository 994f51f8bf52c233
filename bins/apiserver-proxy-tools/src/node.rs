//! This node's kernel, through the manager: the dummy interface and VIP,
//! the IPVS sysctls (the manager's `Kernel::ensure_host`, the same the
//! daemon runs), and our virtual servers.
//!
//! Changes go through the manager's planner (`plan::plan`) with
//! `keep_unlisted`, so the CLI can only ever create a service, add a
//! destination or put one back in rotation: it never removes a backend the
//! kernel holds. Deleting a whole virtual server is the one explicit
//! exception (`delete`, `cleanup`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use apiserver_proxy_manager::config::{DataplaneChoice, VipMode};
use apiserver_proxy_manager::host::{HostChange, HostSpec, VipSpec, route_towards};
use apiserver_proxy_manager::kernel::{Dataplane, InterfaceKind, Kernel, NFT_TABLE, Netlink};
use apiserver_proxy_manager::plan::{self, ActualVs, Condition, DesiredVs, Drains};
use apiserver_proxy_types::Endpoint;

use crate::fail::Failure;

/// The scheduler of a new virtual server unless one is given.
pub const DEFAULT_SCHEDULER: &str = "rr";

/// This node's kernel, through the manager.
#[derive(Debug)]
pub struct Node {
    kernel: Netlink,
}

impl Node {
    /// Opens the kernel with the dataplane `choice` asks for (and asks it
    /// one question): a kernel without it, or a caller without
    /// CAP_NET_ADMIN, fails here, before anything changes.
    pub fn connect(choice: DataplaneChoice) -> Result<Node, Failure> {
        let kernel = Netlink::connect(choice)?;
        Ok(Node { kernel })
    }

    /// The dataplane in use.
    pub fn dataplane(&self) -> Dataplane {
        self.kernel.dataplane()
    }

    /// Why that dataplane (the configuration, or what `auto` found).
    pub fn why(&self) -> &str {
        self.kernel.why()
    }

    /// Says which dataplane changes go to, and why (for the commands that
    /// change the kernel).
    pub fn say_dataplane(&self) {
        outln!(
            "dataplane: {} ({})",
            self.kernel.dataplane(),
            self.kernel.why()
        );
    }

    /// Makes sure the interface exists and is up, holds the VIP (or, in
    /// route mode, that the route to it exists) and that the sysctls are
    /// set, as the daemon does (`Kernel::ensure_host`). A sysctl that cannot
    /// be written is a warning: the rules work without it.
    pub fn place_vip(
        &mut self,
        interface: &str,
        vip: Endpoint,
        mode: VipMode,
        backends: &[Endpoint],
    ) -> Result<(), Failure> {
        let spec = HostSpec {
            interface: interface.to_string(),
            vip_mode: mode,
            vips: vec![VipSpec {
                ip: vip.ip(),
                towards: route_towards(vip, backends),
            }],
            outside: None,
        };
        let report = self.kernel.ensure_host(&spec)?;
        for change in &report.changes {
            outln!("{change}");
        }
        if !report
            .changes
            .iter()
            .any(|c| matches!(c, HostChange::Vip { .. }))
        {
            outln!("VIP {}: already in place", vip.ip());
        }
        for unset in &report.sysctls_unset {
            eprintln!("warning: {}", unset.error);
        }
        Ok(())
    }

    /// Brings the VIP's virtual server to hold at least `backends`, each in
    /// rotation, creating it if missing. `scheduler` None keeps the one an
    /// existing service has. Stops at the first kernel error: what was done
    /// stays. Returns the scheduler in use.
    pub fn converge(
        &mut self,
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
            outln!("{op}");
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
    pub fn read(&mut self, vips: &[Endpoint]) -> Result<Vec<ActualVs>, Failure> {
        Ok(self.kernel.read_ours(vips)?)
    }

    /// Whether `ip` is an address on `interface`.
    pub fn vip_on(&mut self, interface: &str, ip: IpAddr) -> Result<bool, Failure> {
        Ok(self.kernel.addresses(interface)?.contains(&ip))
    }

    /// Which virtual servers are ours: the VIPs the state files name, plus
    /// every TCP service whose address is on our interface (made by `add`).
    /// kube-proxy keeps its addresses on kube-ipvs0, so its services are
    /// never among them.
    pub fn ours(&mut self, interface: &str, saved: &[Endpoint]) -> Result<Vec<Endpoint>, Failure> {
        let mut out: BTreeSet<Endpoint> = saved.iter().copied().collect();
        let on_interface = self.kernel.addresses(interface)?;
        if !on_interface.is_empty() {
            out.extend(self.kernel.tcp_services_on(&on_interface)?);
        }
        Ok(out.into_iter().collect())
    }

    /// Whether the kernel has the virtual server `vip`.
    pub fn exists(&mut self, vip: Endpoint) -> Result<bool, Failure> {
        Ok(self.kernel.exists(vip)?)
    }

    /// Deletes the virtual server `vip` and its destinations. False if there
    /// was none.
    pub fn delete_service(&mut self, vip: Endpoint) -> Result<bool, Failure> {
        let deleted = self.kernel.delete_service(vip)?;
        if deleted {
            outln!("deleted virtual server {vip}");
        }
        Ok(deleted)
    }

    /// Removes the VIP (address on `interface`, and an IPv4 route-mode route
    /// via lo) unless another virtual server still uses its address.
    pub fn release_vip(&mut self, interface: &str, ip: IpAddr) -> Result<(), Failure> {
        let users = self.kernel.services_on(ip)?;
        if !users.is_empty() {
            outln!("kept VIP {ip}: still used by {}", users.join(", "));
            return Ok(());
        }
        let (address, route) = self.kernel.remove_vip(interface, ip)?;
        if address.changed() {
            outln!("removed VIP {ip} from {interface}");
        }
        if route.changed() {
            outln!("removed the route to VIP {ip} via lo");
        }
        if !address.changed() && !route.changed() {
            outln!("VIP {ip}: already gone");
        }
        Ok(())
    }

    /// Deletes our nftables table once it holds no virtual server (with
    /// IPVS there is nothing to do).
    pub fn remove_table_if_empty(&mut self) -> Result<(), Failure> {
        if self.kernel.delete_empty_table()? {
            outln!("deleted the nftables table inet {}", NFT_TABLE);
        }
        Ok(())
    }

    /// Deletes `interface` if it is a dummy holding no address but IPv6
    /// link-local ones (what `ensure_host` made and nothing else uses).
    pub fn remove_interface_if_unused(&mut self, interface: &str) -> Result<(), Failure> {
        match self.kernel.interface_kind(interface)? {
            InterfaceKind::Missing => return Ok(()),
            InterfaceKind::Other => {
                outln!("kept interface {interface}: not a dummy interface");
                return Ok(());
            }
            InterfaceKind::Dummy => {}
        }
        let used: Vec<IpAddr> = self
            .kernel
            .addresses(interface)?
            .into_iter()
            .filter(|a| !is_link_local(a))
            .collect();
        if used.is_empty() {
            if self.kernel.delete_interface(interface)?.changed() {
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
