//! An in-memory kernel behind the manager's `Kernel` trait, so the loop's
//! decisions (fail-open, keep-unlisted, the order of read-connections /
//! delete / cut, host repair, the state file) are tested on any host. The
//! VM tests against the real kernel prove that the real implementation
//! behaves as this one does.
//!
//! It keeps every call in a journal, so a test can assert the order of
//! operations, and it lets a test tamper with the "kernel" between passes as
//! a person with `ipvsadm` or `ip` would.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use apiserver_proxy_dataplane::Error as DpError;
use apiserver_proxy_dataplane::VipMode;
use apiserver_proxy_dataplane::conntable::IpvsConn;
use apiserver_proxy_manager::host::{HostChange, HostReport, HostSpec, IPVS_SYSCTLS, Placed};
use apiserver_proxy_manager::kernel::Kernel;
use apiserver_proxy_manager::plan::{ActualDest, ActualVs, Op};
use apiserver_proxy_manager::{Error, Result};
use apiserver_proxy_types::Endpoint;

/// One virtual server in the fake table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeService {
    pub scheduler: String,
    pub dests: BTreeMap<Endpoint, ActualDest>,
}

/// A call the manager made, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ReadOurs(Vec<Endpoint>),
    Apply(Op),
    Connections { vip: Endpoint, backend: Endpoint },
    OrphanedSockets(Endpoint),
    Cut(usize),
    EnsureHost,
}

/// The host around the table: the interface, its addresses, the routes via
/// lo, and the sysctls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeHost {
    /// The interface exists (and its state).
    pub interface: Option<FakeLink>,
    /// VIP routes via lo, with their source.
    pub routes: BTreeMap<IpAddr, IpAddr>,
    pub sysctls: BTreeMap<&'static str, i32>,
    /// `/proc/sys` is read-only (an unprivileged pod).
    pub sysctls_read_only: bool,
    /// The address the kernel would choose towards any destination.
    pub node_ip: IpAddr,
    /// The outside VIPs whose NAT rules are in place.
    pub outside: BTreeSet<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub name: String,
    pub up: bool,
    pub addresses: BTreeSet<IpAddr>,
}

/// The fake kernel.
#[derive(Debug, Clone)]
pub struct FakeKernel {
    pub services: BTreeMap<Endpoint, FakeService>,
    /// Connections through the table, as `/proc/net/ip_vs_conn` would list.
    pub conns: Vec<IpvsConn>,
    /// Node-local sockets destroyed so far.
    pub cut: Vec<IpvsConn>,
    pub host: FakeHost,
    pub journal: Vec<Call>,
    /// Every call fails with this errno until cleared (a broken netlink).
    pub failing: Option<i32>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        FakeKernel {
            services: BTreeMap::new(),
            conns: Vec::new(),
            cut: Vec::new(),
            host: FakeHost {
                interface: None,
                routes: BTreeMap::new(),
                sysctls: IPVS_SYSCTLS.iter().map(|(s, _)| (s.name(), 0)).collect(),
                sysctls_read_only: false,
                node_ip: IpAddr::from([192, 168, 1, 100]),
                outside: BTreeSet::new(),
            },
            journal: Vec::new(),
            failing: None,
        }
    }
}

impl FakeKernel {
    pub fn new() -> FakeKernel {
        FakeKernel::default()
    }

    /// A service as `ipvsadm -A` would make it, with destinations at the
    /// given weights (tests seed the table with what the CLI put there).
    pub fn with_service(mut self, vip: Endpoint, dests: &[(Endpoint, u32)]) -> FakeKernel {
        self.services.insert(
            vip,
            FakeService {
                scheduler: "rr".into(),
                dests: dests
                    .iter()
                    .map(|(b, w)| {
                        (
                            *b,
                            ActualDest {
                                weight: *w,
                                ..ActualDest::default()
                            },
                        )
                    })
                    .collect(),
            },
        );
        self
    }

    /// An established connection from `client` through `vip` to `backend`.
    pub fn connect(&mut self, client: SocketAddr, vip: Endpoint, backend: Endpoint) {
        self.conns.push(IpvsConn {
            protocol: "TCP".into(),
            client,
            virtual_addr: vip.0,
            dest: backend.0,
            state: "ESTABLISHED".into(),
            expires: 900,
        });
        if let Some(d) = self
            .services
            .get_mut(&vip)
            .and_then(|s| s.dests.get_mut(&backend))
        {
            d.active_conns += 1;
        }
    }

    /// The destinations of `vip` with their weights, sorted.
    pub fn weights(&self, vip: Endpoint) -> Vec<(Endpoint, u32)> {
        self.services
            .get(&vip)
            .map(|s| s.dests.iter().map(|(b, d)| (*b, d.weight)).collect())
            .unwrap_or_default()
    }

    /// The operations applied so far, in order, and forgets them.
    pub fn take_ops(&mut self) -> Vec<Op> {
        let ops = self
            .journal
            .iter()
            .filter_map(|c| match c {
                Call::Apply(op) => Some(op.clone()),
                _ => None,
            })
            .collect();
        self.journal.clear();
        ops
    }

    fn check(&self, op: &'static str) -> Result<()> {
        match self.failing {
            Some(errno) => Err(Error::Dataplane(DpError::Kernel {
                op,
                errno,
                msg: format!("injected errno {errno}"),
            })),
            None => Ok(()),
        }
    }
}

impl Kernel for FakeKernel {
    fn read_ours(&mut self, vips: &[Endpoint]) -> Result<Vec<ActualVs>> {
        self.journal.push(Call::ReadOurs(vips.to_vec()));
        self.check("read services")?;
        Ok(vips
            .iter()
            .filter_map(|vip| {
                self.services.get(vip).map(|s| ActualVs {
                    vip: *vip,
                    scheduler: s.scheduler.clone(),
                    dests: s.dests.clone(),
                })
            })
            .collect())
    }

    fn apply(&mut self, op: &Op) -> Result<()> {
        self.journal.push(Call::Apply(op.clone()));
        self.check("apply")?;
        match op {
            Op::CreateService { vip, scheduler } | Op::SetScheduler { vip, scheduler } => {
                self.services
                    .entry(*vip)
                    .or_insert_with(|| FakeService {
                        scheduler: scheduler.clone(),
                        dests: BTreeMap::new(),
                    })
                    .scheduler = scheduler.clone();
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
                let svc = self.services.get_mut(vip).ok_or_else(|| {
                    Error::Dataplane(DpError::NotFound {
                        op: "add destination",
                        what: format!("virtual server {vip}"),
                    })
                })?;
                svc.dests.entry(*backend).or_default().weight = *weight;
            }
            Op::DelDest { vip, backend, .. } => {
                if let Some(svc) = self.services.get_mut(vip) {
                    svc.dests.remove(backend);
                }
            }
        }
        Ok(())
    }

    fn connections(&mut self, vip: Endpoint, backend: Endpoint) -> Result<Vec<IpvsConn>> {
        self.journal.push(Call::Connections { vip, backend });
        self.check("read connections")?;
        Ok(self
            .conns
            .iter()
            .filter(|c| c.virtual_addr == vip.0 && c.dest == backend.0)
            .cloned()
            .collect())
    }

    /// A connection whose service or destination is gone has lost its
    /// entry, as the real kernel's do when someone removes them.
    fn orphaned_sockets(&mut self, vip: Endpoint) -> Result<Vec<IpvsConn>> {
        self.journal.push(Call::OrphanedSockets(vip));
        self.check("read sockets")?;
        let dests = self.services.get(&vip).map(|s| &s.dests);
        Ok(self
            .conns
            .iter()
            .filter(|c| {
                c.virtual_addr == vip.0
                    && c.state == "ESTABLISHED"
                    && dests.is_none_or(|d| !d.contains_key(&Endpoint(c.dest)))
            })
            .cloned()
            .collect())
    }

    fn cut(&mut self, conns: &[IpvsConn]) -> Result<usize> {
        self.journal.push(Call::Cut(conns.len()));
        self.check("destroy sockets")?;
        self.conns.retain(|c| !conns.contains(c));
        self.cut.extend_from_slice(conns);
        Ok(conns.len())
    }

    fn ensure_host(&mut self, spec: &HostSpec) -> Result<HostReport> {
        self.journal.push(Call::EnsureHost);
        self.check("ensure host")?;
        let mut report = HostReport::default();
        let interface = spec.interface.clone();
        match &mut self.host.interface {
            None => {
                self.host.interface = Some(FakeLink {
                    name: interface.clone(),
                    up: true,
                    addresses: BTreeSet::new(),
                });
                report
                    .changes
                    .push(HostChange::InterfaceCreated { interface });
            }
            Some(link) if !link.up => {
                link.up = true;
                report.changes.push(HostChange::InterfaceUp { interface });
            }
            Some(_) => {}
        }
        if let Some(want) = &spec.outside {
            let want: BTreeSet<Endpoint> = want.iter().copied().collect();
            if want != self.host.outside {
                report.changes.push(HostChange::Outside(format!(
                    "outside VIPs {:?}",
                    want.iter().map(ToString::to_string).collect::<Vec<_>>()
                )));
                self.host.outside = want;
            }
        }
        for vip in &spec.vips {
            let placed = match spec.vip_mode {
                VipMode::Address => {
                    let link = self
                        .host
                        .interface
                        .as_mut()
                        .expect("the interface was ensured above");
                    if !link.addresses.insert(vip.ip) {
                        continue;
                    }
                    Placed::OnInterface(spec.interface.clone())
                }
                VipMode::Route => {
                    let src = self.host.node_ip;
                    if self.host.routes.insert(vip.ip, src) == Some(src) {
                        continue;
                    }
                    Placed::RoutedViaLo { src }
                }
            };
            report.changes.push(HostChange::Vip {
                ip: vip.ip,
                placement: placed,
                change: apiserver_proxy_dataplane::Change::Added,
            });
        }
        for (s, want) in IPVS_SYSCTLS {
            let have = self.host.sysctls.get(s.name()).copied().unwrap_or(0);
            if have == want {
                continue;
            }
            if self.host.sysctls_read_only {
                report
                    .sysctls_unset
                    .push(apiserver_proxy_manager::host::SysctlUnset {
                        name: s.name(),
                        want,
                        error: format!("{}: read-only file system", s.name()),
                    });
                continue;
            }
            self.host.sysctls.insert(s.name(), want);
            report.changes.push(HostChange::Sysctl {
                name: s.name(),
                previous: have,
                now: want,
            });
        }
        Ok(report)
    }
}
