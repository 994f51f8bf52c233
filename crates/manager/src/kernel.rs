//! The manager's view of the kernel: read our services, apply a plan, and
//! keep the host around them (interface, VIPs, sysctls) right.
//!
//! [`Kernel`] is the one seam between the manager and a dataplane: the
//! loop and the CLI only ever talk to it, so the loop's decisions are tested
//! on any host against the in-memory fake in the testkit
//! (`apiserver_proxy_testkit::fake_kernel`), and the real kernel
//! ([`Netlink`], IPVS) proves the fake in the VM. A second dataplane is a
//! second implementation of this trait.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use apiserver_proxy_dataplane::conntable::{self, IpvsConn};
use apiserver_proxy_dataplane::conntrack::{Conntrack, CtEntry};
/// Our nftables table's name, for messages.
pub use apiserver_proxy_dataplane::nft::table::TABLE as NFT_TABLE;
use apiserver_proxy_dataplane::nft::table::{NftService, NftTable, SCHEDULERS as NFT_SCHEDULERS};
use apiserver_proxy_dataplane::sockdiag::SockDiag;
use apiserver_proxy_dataplane::sysctl::Sysctls;
use apiserver_proxy_dataplane::tcp_table;
use apiserver_proxy_dataplane::{
    Change, DestSpec, Error as DpError, Ipvs, Placement, Protocol, Rtnl, ServiceKey, ServiceSpec,
};
use apiserver_proxy_types::Endpoint;

use crate::config::{DataplaneChoice, VipMode};
use crate::error::{Error, Result};
use crate::host::{HostChange, HostReport, HostSpec, IPVS_SYSCTLS, Placed, SysctlUnset};
use crate::plan::{ActualDest, ActualVs, DeleteReason, Op, Plan};

/// What the manager needs from the kernel. `&mut self` throughout: one
/// owner (the loop, or the CLI) holds it and moves it to a blocking thread
/// for each batch of calls, so there is nothing to lock.
pub trait Kernel: Send + 'static {
    /// Our services as the kernel holds them: one entry per VIP that exists.
    /// Only these VIPs are looked at; nothing else in the table is read.
    fn read_ours(&mut self, vips: &[Endpoint]) -> Result<Vec<ActualVs>>;
    /// Applies one operation, idempotently (creating what exists updates it,
    /// deleting what is gone succeeds).
    fn apply(&mut self, op: &Op) -> Result<()>;
    /// The connections through `vip` to `backend`, as IPVS's entries name
    /// them.
    fn connections(&mut self, vip: Endpoint, backend: Endpoint) -> Result<Vec<IpvsConn>>;
    /// The node's own established sockets to `vip` that IPVS holds no entry
    /// for: whatever removed the entry (a flush, a destination deleted by
    /// hand) left them on a path that no longer exists.
    fn orphaned_sockets(&mut self, vip: Endpoint) -> Result<Vec<IpvsConn>>;
    /// Destroys the node-local client sockets of these connections.
    fn cut(&mut self, conns: &[IpvsConn]) -> Result<usize>;
    /// Makes the host hold `spec` (interface up, every VIP placed, sysctls
    /// set), changing only what is wrong; idempotent, so the daemon calls
    /// it on every host event and resync to repair tampering.
    fn ensure_host(&mut self, spec: &HostSpec) -> Result<HostReport>;
}

/// One step of [`apply_plan`] that failed.
#[derive(Debug)]
pub enum Step {
    /// Reading the connections an operation orphans (they are then not
    /// cut); `backend: None` is every backend of the VIP.
    ReadConnections {
        vip: Endpoint,
        backend: Option<Endpoint>,
    },
    Apply(Op),
    /// Destroying the node's sockets on orphaned connections.
    Cut {
        backend: Endpoint,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ReadConnections {
                vip,
                backend: Some(backend),
            } => write!(f, "reading the connections through {vip} to {backend}"),
            Step::ReadConnections { vip, backend: None } => {
                write!(f, "reading the connections through {vip}")
            }
            Step::Apply(op) => write!(f, "{op}"),
            Step::Cut { backend } => write!(f, "cutting the node's sockets to {backend}"),
        }
    }
}

/// A failed step and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct StepError {
    pub step: Step,
    #[source]
    pub source: Error,
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    pub ops: usize,
    /// Node-local sockets destroyed because their backend died.
    pub sockets_destroyed: usize,
    /// Steps that failed. The next pass retries them.
    pub errors: Vec<StepError>,
}

/// Applies a plan in order. A failed operation does not stop the others:
/// each is independent, and the next pass retries what failed.
///
/// Some operations concern node-local sockets left on a path that no longer
/// exists (see [`Orphans`]); they are read *before* the operation and cut
/// *after* it, so that the client's reconnect goes through the table as it
/// now stands. An idle client, such as a kubelet watch or the daemon's own
/// watch through the VIP, would otherwise hang on its socket until its own
/// timeout.
///
/// A backend that is deleted first goes to weight 0: that takes it out of
/// rotation at once, so the read that follows (the whole connection table:
/// a minute for 200,000 entries under emulation) never delays a failover.
/// The read must come before the delete: since Linux 5.9, deleting a
/// destination with `expire_nodest_conn` expires its connections' entries
/// in the background, and they could no longer name the sockets to cut.
pub fn apply_plan<K: Kernel + ?Sized>(kernel: &mut K, plan: &Plan) -> Applied {
    let mut out = Applied::default();
    for op in &plan.ops {
        let orphans = Orphans::of(op);
        if let Op::DelDest {
            vip,
            backend,
            why: DeleteReason::Dead,
        } = op
        {
            let out_of_rotation = Op::SetWeight {
                vip: *vip,
                backend: *backend,
                weight: 0,
            };
            match kernel.apply(&out_of_rotation) {
                Ok(()) => out.ops += 1,
                Err(source) => out.errors.push(StepError {
                    step: Step::Apply(out_of_rotation),
                    source,
                }),
            }
        }
        let doomed = match orphans {
            Some(o) => o.read(kernel, &mut out),
            None => Vec::new(),
        };
        match kernel.apply(op) {
            Ok(()) => out.ops += 1,
            Err(source) => {
                out.errors.push(StepError {
                    step: Step::Apply(op.clone()),
                    source,
                });
                continue;
            }
        }
        if !doomed.is_empty() {
            match kernel.cut(&doomed) {
                Ok(n) => out.sockets_destroyed += n,
                Err(source) => out.errors.push(StepError {
                    step: Step::Cut {
                        backend: op.backend().unwrap_or_else(|| op.vip()),
                    },
                    source,
                }),
            }
        }
    }
    out
}

/// The node-local connections an operation leaves on a path that no longer
/// exists, and so must cut.
#[derive(Debug, Clone, Copy)]
enum Orphans {
    /// The connections IPVS lists to a backend the operation deletes. Only
    /// established ones: sockets still in their handshake recover by
    /// themselves.
    ToBackend { vip: Endpoint, backend: Endpoint },
    /// The node's sockets to the VIP whose IPVS entry is gone; read before
    /// an operation that repairs what someone else removed (after it, the
    /// repaired path would look like theirs again).
    WithoutEntry { vip: Endpoint },
}

impl Orphans {
    fn of(op: &Op) -> Option<Orphans> {
        match op {
            // A dead backend, or a drain that timed out: the established
            // connections to it are lost (a dead peer never answers; with
            // `expire_nodest_conn` IPVS drops a deleted destination's
            // entries on their next packet, and an idle watch sends none).
            // A socket still in its handshake is left alone: its next SYN
            // retransmission is balanced to a live backend and connects.
            Op::DelDest {
                vip,
                backend,
                why: DeleteReason::Dead | DeleteReason::DrainTimeout,
            } => Some(Orphans::ToBackend {
                vip: *vip,
                backend: *backend,
            }),
            // The service or a destination is (re)created: if someone
            // removed it (`ipvsadm -C`, kube-proxy's cleanup, `ipvsadm
            // -d`), IPVS dropped the entries of the node's connections
            // through it, and an idle client (a kubelet watch) would hang
            // on its socket. A destination or service that is new has no
            // such socket, and nothing is cut.
            Op::CreateService { vip, .. } | Op::AddDest { vip, .. } => {
                Some(Orphans::WithoutEntry { vip: *vip })
            }
            // A drained destination has no active connection left; the
            // other operations keep every destination.
            Op::DelDest {
                why: DeleteReason::Drained,
                ..
            }
            | Op::SetWeight { .. }
            | Op::SetScheduler { .. } => None,
        }
    }

    fn read<K: Kernel + ?Sized>(&self, kernel: &mut K, out: &mut Applied) -> Vec<IpvsConn> {
        let (read, vip, backend) = match *self {
            Orphans::ToBackend { vip, backend } => (
                kernel
                    .connections(vip, backend)
                    .map(|c| c.into_iter().filter(|c| c.state == "ESTABLISHED").collect()),
                vip,
                Some(backend),
            ),
            Orphans::WithoutEntry { vip } => (kernel.orphaned_sockets(vip), vip, None),
        };
        read.unwrap_or_else(|source| {
            out.errors.push(StepError {
                step: Step::ReadConnections { vip, backend },
                source,
            });
            Vec::new()
        })
    }
}

/// The kernel facility that balances the VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataplane {
    Ipvs,
    Nftables,
}

impl Dataplane {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Ipvs => "ipvs",
            Dataplane::Nftables => "nftables",
        }
    }
}

impl fmt::Display for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The virtual servers' side of the kernel: one of the two dataplanes.
#[derive(Debug)]
enum Services {
    Ipvs(Ipvs),
    Nftables {
        table: NftTable,
        /// None where ctnetlink is refused: dead backends' connections then
        /// end by their own timeouts.
        conntrack: Option<Conntrack>,
    },
}

/// The real kernel, over netlink: IPVS or nf_tables for the virtual
/// servers, rtnetlink for the host, sock_diag for the node's sockets.
#[derive(Debug)]
pub struct Netlink {
    services: Services,
    diag: Option<SockDiag>,
    rtnl: Rtnl,
    sysctls: Sysctls,
    /// Why this dataplane, for the log and `status`.
    why: String,
    /// On IPVS, the nf_tables table that holds the outside VIP's source
    /// NAT; opened the first time one is wanted.
    outside_nat: Option<NftTable>,
    /// On IPVS without an outside VIP: whether the NAT rules an earlier run
    /// left (the mode since turned off) were looked for, once.
    outside_nat_checked: bool,
}

impl Netlink {
    /// Opens the kernel with the dataplane `choice` asks for: `auto` takes
    /// IPVS where the kernel has it and nftables otherwise. Asks the chosen
    /// one a question, so a kernel without it, or a caller without
    /// CAP_NET_ADMIN, fails here before anything changes.
    pub fn connect(choice: DataplaneChoice) -> Result<Netlink> {
        let (services, why) = match choice {
            DataplaneChoice::Ipvs => (ipvs()?, "asked for in the configuration".to_string()),
            DataplaneChoice::Nftables => {
                (nftables()?, "asked for in the configuration".to_string())
            }
            DataplaneChoice::Auto => match ipvs() {
                Ok(s) => (s, "auto: the kernel has IPVS".to_string()),
                Err(Error::Dataplane(DpError::IpvsUnavailable)) => (
                    nftables()?,
                    "auto: the kernel has no IPVS (no generic netlink family \"IPVS\")".to_string(),
                ),
                Err(e) => return Err(e),
            },
        };
        let rtnl = Rtnl::connect()?;
        // Without sock_diag the manager still works; idle clients then only
        // notice a dead backend through their own timeouts.
        let diag = match SockDiag::connect() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open sock_diag: connections to dead apiservers will not be cut");
                None
            }
        };
        Ok(Netlink {
            services,
            diag,
            rtnl,
            sysctls: Sysctls::new(),
            why,
            outside_nat: None,
            outside_nat_checked: false,
        })
    }

    /// The dataplane in use.
    pub fn dataplane(&self) -> Dataplane {
        match self.services {
            Services::Ipvs(_) => Dataplane::Ipvs,
            Services::Nftables { .. } => Dataplane::Nftables,
        }
    }

    /// Why this dataplane was chosen.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// The addresses on `interface` (none if it does not exist).
    pub fn addresses(&mut self, interface: &str) -> Result<Vec<IpAddr>> {
        match self.rtnl.addresses(interface) {
            Ok(a) => Ok(a.into_iter().map(|a| a.addr).collect()),
            Err(DpError::InterfaceNotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every virtual server on `ip` (with IPVS: TCP, UDP or SCTP, ours or
    /// not), named as a person reads it.
    pub fn services_on(&mut self, ip: IpAddr) -> Result<Vec<String>> {
        Ok(match &mut self.services {
            Services::Ipvs(ipvs) => ipvs
                .services()?
                .into_iter()
                .map(|s| s.spec.key)
                .filter(|k| k.addr.ip() == ip)
                .map(|k| k.to_string())
                .collect(),
            Services::Nftables { table, .. } => table
                .list()?
                .into_iter()
                .filter(|v| v.ip() == ip)
                .map(|v| format!("TCP {v}"))
                .collect(),
        })
    }

    /// The TCP virtual servers whose address is one of `ips`.
    pub fn tcp_services_on(&mut self, ips: &[IpAddr]) -> Result<Vec<Endpoint>> {
        let all: Vec<Endpoint> = match &mut self.services {
            Services::Ipvs(ipvs) => ipvs
                .services()?
                .into_iter()
                .map(|s| s.spec.key)
                .filter(|k| k.protocol == Protocol::Tcp)
                .map(|k| Endpoint(k.addr))
                .collect(),
            Services::Nftables { table, .. } => table.list()?.into_iter().map(Endpoint).collect(),
        };
        Ok(all.into_iter().filter(|e| ips.contains(&e.ip())).collect())
    }

    /// Whether the kernel has the virtual server `vip`.
    pub fn exists(&mut self, vip: Endpoint) -> Result<bool> {
        Ok(match &mut self.services {
            Services::Ipvs(ipvs) => ipvs.service(&key(vip))?.is_some(),
            Services::Nftables { table, .. } => !table.read(&[vip.0])?.is_empty(),
        })
    }

    /// Deletes the virtual server `vip` with its destinations. False if there
    /// was none. Only for an explicit cleanup: the daemon never deletes one.
    pub fn delete_service(&mut self, vip: Endpoint) -> Result<bool> {
        match &mut self.services {
            Services::Ipvs(ipvs) => match ipvs.del_service(&key(vip)) {
                Ok(()) => Ok(true),
                Err(DpError::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            },
            Services::Nftables { table, .. } => Ok(table.delete(vip.0)?),
        }
    }

    /// Deletes our nftables table when it holds no virtual server any more
    /// (the cleanup's last step); true if it was deleted. Nothing to do
    /// with IPVS, which has no container of ours.
    pub fn delete_empty_table(&mut self) -> Result<bool> {
        match &mut self.services {
            Services::Ipvs(_) => Ok(false),
            Services::Nftables { table, .. } => {
                if table.list()?.is_empty() {
                    Ok(table.delete_table()?)
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Removes the VIP's address from `interface` and, for IPv4, its
    /// route-mode route via lo. Returns (address change, route change).
    pub fn remove_vip(&mut self, interface: &str, ip: IpAddr) -> Result<(Change, Change)> {
        let address = self.rtnl.remove_vip(interface, ip, Placement::Address)?;
        let route = if ip.is_ipv4() {
            // The source does not matter for a removal.
            self.rtnl
                .remove_vip(interface, ip, Placement::Route { src: ip })?
        } else {
            Change::AlreadyAbsent
        };
        Ok((address, route))
    }

    /// Whether `interface` exists, and whether it is a dummy.
    pub fn interface_kind(&mut self, interface: &str) -> Result<InterfaceKind> {
        Ok(match self.rtnl.link(interface)? {
            None => InterfaceKind::Missing,
            Some(l) if l.kind.as_deref() == Some("dummy") => InterfaceKind::Dummy,
            Some(_) => InterfaceKind::Other,
        })
    }

    pub fn delete_interface(&mut self, interface: &str) -> Result<Change> {
        Ok(self.rtnl.delete_link(interface)?)
    }
}

/// What kind of interface a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceKind {
    Missing,
    Dummy,
    /// A real or other virtual interface: never ours to delete.
    Other,
}

fn key(vip: Endpoint) -> ServiceKey {
    ServiceKey::tcp(vip.0)
}

fn ipvs() -> Result<Services> {
    let ipvs = Ipvs::connect()?;
    ipvs.info()?;
    Ok(Services::Ipvs(ipvs))
}

fn nftables() -> Result<Services> {
    let mut table = NftTable::connect()?;
    table.check()?;
    let conntrack = match Conntrack::connect() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open ctnetlink: connections to dead apiservers will end by their own timeouts");
            None
        }
    };
    Ok(Services::Nftables { table, conntrack })
}

impl Kernel for Netlink {
    fn read_ours(&mut self, vips: &[Endpoint]) -> Result<Vec<ActualVs>> {
        match &mut self.services {
            Services::Ipvs(ipvs) => ipvs_read(ipvs, vips),
            Services::Nftables { table, conntrack } => {
                let addrs: Vec<SocketAddr> = vips.iter().map(|v| v.0).collect();
                let mut out = Vec::new();
                for s in table.read(&addrs)? {
                    // Active and inactive connections as IPVS counts them:
                    // established, and every other state.
                    let entries = match conntrack {
                        Some(c) => c.entries_to(s.vip, None)?,
                        None => Vec::new(),
                    };
                    let dests = s
                        .backends
                        .iter()
                        .map(|(addr, b)| {
                            let (active, inactive) = entries
                                .iter()
                                .filter(|e| e.backend == *addr)
                                .fold((0, 0), |(a, i), e| {
                                    if e.state == "ESTABLISHED" {
                                        (a + 1, i)
                                    } else {
                                        (a, i + 1)
                                    }
                                });
                            (
                                Endpoint(*addr),
                                ActualDest {
                                    weight: b.weight,
                                    active_conns: active,
                                    inactive_conns: inactive,
                                    conns: b.connections,
                                    // From the counting chains, which see
                                    // every packet (the NAT chain's counter
                                    // sees a connection's first only).
                                    in_packets: b.in_packets,
                                    out_packets: b.out_packets,
                                    in_bytes: b.in_bytes,
                                    out_bytes: b.out_bytes,
                                },
                            )
                        })
                        .collect();
                    out.push(ActualVs {
                        vip: Endpoint(s.vip),
                        scheduler: s.scheduler,
                        dests,
                    });
                }
                Ok(out)
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<()> {
        match &mut self.services {
            Services::Ipvs(ipvs) => ipvs_apply(ipvs, op),
            Services::Nftables { table, conntrack } => {
                nft_apply(table, op)?;
                // The connections through a dead backend keep their NAT in
                // conntrack: remove their entries, so a SYN retransmission
                // goes to a live backend and an established connection
                // gets a reset instead of silence.
                if let (
                    Op::DelDest {
                        vip,
                        backend,
                        why: DeleteReason::Dead | DeleteReason::DrainTimeout,
                    },
                    Some(c),
                ) = (op, conntrack)
                {
                    let entries = c.entries_to(vip.0, Some(backend.0))?;
                    c.delete(&entries)?;
                }
                Ok(())
            }
        }
    }

    fn connections(&mut self, vip: Endpoint, backend: Endpoint) -> Result<Vec<IpvsConn>> {
        match &mut self.services {
            Services::Ipvs(_) => Ok(conntable::read_through(vip.0, Some(backend.0))?),
            Services::Nftables { conntrack, .. } => match conntrack {
                Some(c) => Ok(c
                    .entries_to(vip.0, Some(backend.0))?
                    .into_iter()
                    .map(conn_of)
                    .collect()),
                None => Ok(Vec::new()),
            },
        }
    }

    fn orphaned_sockets(&mut self, vip: Endpoint) -> Result<Vec<IpvsConn>> {
        let sockets = tcp_table::established_to(vip.0)?;
        if sockets.is_empty() {
            return Ok(Vec::new());
        }
        // Measured on Debian's 6.1 kernel: `ipvsadm -C` and `ipvsadm -d`
        // take the entries of the connections through what they remove,
        // while the node's sockets stay open. With nftables, a removed rule
        // leaves conntrack's entries (and the connections) alone; a flushed
        // conntrack table is what orphans them.
        let clients: Vec<SocketAddr> = match &mut self.services {
            Services::Ipvs(_) => conntable::read_through(vip.0, None)?
                .into_iter()
                .map(|e| e.client)
                .collect(),
            Services::Nftables { conntrack, .. } => match conntrack {
                Some(c) => c
                    .entries_to(vip.0, None)?
                    .into_iter()
                    .map(|e| e.client)
                    .collect(),
                // Without ctnetlink nothing can tell: cut nothing.
                None => return Ok(Vec::new()),
            },
        };
        Ok(sockets
            .into_iter()
            .filter(|s| !clients.contains(&s.local))
            .map(|s| IpvsConn {
                protocol: "TCP".into(),
                client: s.local,
                virtual_addr: vip.0,
                // Unknown: the entry that named it is gone.
                dest: vip.0,
                state: "ESTABLISHED".into(),
                expires: 0,
            })
            .collect())
    }

    fn cut(&mut self, conns: &[IpvsConn]) -> Result<usize> {
        match &self.diag {
            Some(d) => Ok(d.destroy_clients(conns)?),
            None => Ok(0),
        }
    }

    fn ensure_host(&mut self, spec: &HostSpec) -> Result<HostReport> {
        let mut report = HostReport::default();
        // With nftables a route-mode VIP needs no interface of ours (the
        // route is via lo and the NAT is in the output hook), so such a
        // node does not need the dummy driver at all.
        let needs_interface =
            !(spec.vip_mode == VipMode::Route && self.dataplane() == Dataplane::Nftables);
        if needs_interface {
            let link = self.rtnl.ensure_dummy(&spec.interface)?;
            let interface = spec.interface.clone();
            if link.created {
                report
                    .changes
                    .push(HostChange::InterfaceCreated { interface });
            } else if link.brought_up {
                report.changes.push(HostChange::InterfaceUp { interface });
            }
        }
        for vip in &spec.vips {
            let placed = match spec.vip_mode {
                VipMode::Address => Placed::OnInterface(spec.interface.clone()),
                VipMode::Route => Placed::RoutedViaLo {
                    src: self.rtnl.preferred_source(vip.towards)?,
                },
            };
            let change = self
                .rtnl
                .ensure_vip(&spec.interface, vip.ip, placed.placement())?;
            if change.changed() {
                report.changes.push(HostChange::Vip {
                    ip: vip.ip,
                    placement: placed,
                    change,
                });
            }
        }
        if let Some(outside) = &spec.outside {
            let vips: Vec<std::net::SocketAddr> = outside.iter().map(|e| e.0).collect();
            let changes = match &mut self.services {
                // nftables balances the outside VIP itself: its prerouting
                // jump, and the masquerade.
                Services::Nftables { table, .. } => table.ensure_outside(&vips, true)?,
                // IPVS balances it (its virtual server catches the VIP's
                // packets on the holder) and only needs the masquerade,
                // which nf_tables does on IPVS's conntrack entries
                // (`net.ipv4.vs.conntrack`, set below).
                // Without the mode, the NAT an earlier run left is removed
                // once; a node without nf_tables has none to remove.
                Services::Ipvs(_) if vips.is_empty() && self.outside_nat.is_none() => {
                    if self.outside_nat_checked {
                        Vec::new()
                    } else {
                        self.outside_nat_checked = true;
                        match NftTable::connect().and_then(|mut t| t.ensure_outside(&[], false)) {
                            Ok(changes) => changes,
                            Err(e) => {
                                tracing::debug!(error = %e, "no nf_tables to look for an outside VIP's NAT in");
                                Vec::new()
                            }
                        }
                    }
                }
                Services::Ipvs(_) => {
                    if self.outside_nat.is_none() {
                        self.outside_nat = Some(NftTable::connect()?);
                    }
                    match self.outside_nat.as_mut() {
                        Some(t) => t.ensure_outside(&vips, false)?,
                        None => Vec::new(),
                    }
                }
            };
            report
                .changes
                .extend(changes.into_iter().map(HostChange::Outside));
        }
        let sysctls: &[_] = match self.services {
            Services::Ipvs(_) => &IPVS_SYSCTLS,
            // nf_tables needs none: conntrack is how its NAT works.
            Services::Nftables { .. } => &[],
        };
        for &(s, want) in sysctls {
            match self.sysctls.ensure(s, want) {
                Ok(c) if c.written => report.changes.push(HostChange::Sysctl {
                    name: s.name(),
                    previous: c.previous,
                    now: want,
                }),
                Ok(_) => {}
                // In a pod with CAP_NET_ADMIN but not privileged, /proc/sys
                // is read-only; the node's boot-time `reload` sets them.
                Err(e @ DpError::SysctlReadOnly { .. }) => report.sysctls_unset.push(SysctlUnset {
                    name: s.name(),
                    want,
                    error: e.to_string(),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }
}

fn conn_of(e: CtEntry) -> IpvsConn {
    IpvsConn {
        protocol: "TCP".into(),
        client: e.client,
        virtual_addr: e.target,
        dest: e.backend,
        state: e.state.into(),
        expires: u64::from(e.timeout),
    }
}

fn ipvs_read(ipvs: &Ipvs, vips: &[Endpoint]) -> Result<Vec<ActualVs>> {
    let mut out = Vec::new();
    for vip in vips {
        // One GET per VIP: the cost does not grow with foreign services.
        let Some(svc) = ipvs.service(&key(*vip))? else {
            continue;
        };
        let dests = ipvs
            .destinations(&key(*vip))?
            .into_iter()
            .map(|d| {
                (
                    Endpoint(d.spec.addr),
                    ActualDest {
                        weight: d.spec.weight,
                        active_conns: d.active_conns,
                        inactive_conns: d.inactive_conns,
                        conns: d.stats.conns,
                        in_packets: d.stats.inpkts,
                        out_packets: d.stats.outpkts,
                        in_bytes: d.stats.inbytes,
                        out_bytes: d.stats.outbytes,
                    },
                )
            })
            .collect();
        out.push(ActualVs {
            vip: *vip,
            scheduler: svc.spec.scheduler,
            dests,
        });
    }
    Ok(out)
}

fn ipvs_apply(ipvs: &Ipvs, op: &Op) -> Result<()> {
    let r = match op {
        Op::CreateService { vip, scheduler } => {
            let spec = ServiceSpec::new(key(*vip), scheduler);
            match ipvs.new_service(&spec) {
                Err(DpError::Exists { .. }) => ipvs.set_service(&spec),
                other => other,
            }
        }
        Op::SetScheduler { vip, scheduler } => {
            let spec = ServiceSpec::new(key(*vip), scheduler);
            match ipvs.set_service(&spec) {
                Err(DpError::NotFound { .. }) => ipvs.new_service(&spec),
                other => other,
            }
        }
        Op::AddDest {
            vip,
            backend,
            weight,
        }
        | Op::SetWeight {
            vip,
            backend,
            weight,
        } => {
            let dest = DestSpec::new(backend.0, *weight);
            let first = if matches!(op, Op::AddDest { .. }) {
                ipvs.new_dest(&key(*vip), &dest)
            } else {
                ipvs.set_dest(&key(*vip), &dest)
            };
            match first {
                Err(DpError::Exists { .. }) => ipvs.set_dest(&key(*vip), &dest),
                Err(DpError::NotFound { .. }) if matches!(op, Op::SetWeight { .. }) => {
                    ipvs.new_dest(&key(*vip), &dest)
                }
                other => other,
            }
        }
        Op::DelDest { vip, backend, .. } => match ipvs.del_dest(&key(*vip), backend.0) {
            Err(DpError::NotFound { .. }) => Ok(()),
            other => other,
        },
    };
    r.map_err(Error::from)
}

/// One operation on the nftables table: the virtual server is read, changed
/// and written whole in one batch (one dump of our rules), with the same
/// idempotence as IPVS's (creating what exists updates it, deleting what is
/// gone succeeds).
fn nft_apply(table: &mut NftTable, op: &Op) -> Result<()> {
    if let Op::CreateService { scheduler, .. } | Op::SetScheduler { scheduler, .. } = op {
        check_nft_scheduler(scheduler)?;
    }
    let vip = op.vip();
    table
        .update(vip.0, |found| {
            let existed = found.is_some();
            let mut s = found.unwrap_or_else(|| NftService {
                vip: vip.0,
                // A destination for a service someone removed: created
                // with the scheduler IPVS would have (the plan creates
                // services first).
                scheduler: "rr".into(),
                backends: Default::default(),
            });
            match op {
                Op::CreateService { scheduler, .. } | Op::SetScheduler { scheduler, .. } => {
                    s.scheduler = scheduler.clone();
                }
                Op::AddDest {
                    backend, weight, ..
                }
                | Op::SetWeight {
                    backend, weight, ..
                } => {
                    s.backends.entry(backend.0).or_default().weight = *weight;
                }
                Op::DelDest { backend, .. } => {
                    if s.backends.remove(&backend.0).is_none() && !existed {
                        return None;
                    }
                }
            }
            Some(s)
        })
        .map_err(Error::from)
}

/// The nftables dataplane balances round robin by weight: `rr` and `wrr`.
pub fn check_nft_scheduler(scheduler: &str) -> Result<()> {
    if NFT_SCHEDULERS.contains(&scheduler) {
        Ok(())
    } else {
        Err(Error::Dataplane(DpError::InvalidArgument {
            op: "create nftables virtual server",
            detail: format!(
                "scheduler {scheduler:?} needs IPVS; the nftables dataplane has {}",
                NFT_SCHEDULERS.join(" and ")
            ),
        }))
    }
}
