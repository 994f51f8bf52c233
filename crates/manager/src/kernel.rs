//! The manager's view of the kernel: read our services, apply a plan.
//!
//! [`Kernel`] is a trait so that the loop can be tested on hosts without
//! IPVS against a fake; [`Netlink`] is the real one, on the dataplane crate.

use apiserver_proxy_dataplane::conntable::{self, IpvsConn};
use apiserver_proxy_dataplane::sockdiag::SockDiag;
use apiserver_proxy_dataplane::{DestSpec, Error as DpError, Ipvs, ServiceKey, ServiceSpec};
use apiserver_proxy_types::Endpoint;

use crate::error::{Error, Result};
use crate::plan::{ActualDest, ActualVs, DeleteReason, Op, Plan};

/// What the manager needs from the kernel.
pub trait Kernel {
    /// Our services as the kernel holds them: one entry per VIP that exists.
    /// Only these VIPs are looked at; nothing else in the table is read.
    fn read_ours(&self, vips: &[Endpoint]) -> Result<Vec<ActualVs>>;
    /// Applies one operation, idempotently (creating what exists updates it,
    /// deleting what is gone succeeds).
    fn apply(&self, op: &Op) -> Result<()>;
    /// The IPVS connections through `vip` to `backend`.
    fn connections(&self, vip: Endpoint, backend: Endpoint) -> Result<Vec<IpvsConn>>;
    /// Destroys the node-local client sockets of these connections.
    fn cut(&self, conns: &[IpvsConn]) -> Result<usize>;
}

/// What applying a plan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub ops: usize,
    /// Node-local sockets destroyed because their backend died.
    pub sockets_destroyed: usize,
    /// Operations that failed, with why. The next pass retries them.
    pub errors: Vec<String>,
}

/// Applies a plan in order. A failed operation does not stop the others:
/// each is independent, and the next pass retries what failed.
///
/// For a dead backend, the connections through it are read *before* the
/// delete (afterwards IPVS may expire them) and cut *after* it (so that the
/// client's reconnect cannot be balanced to the dead backend again).
pub fn apply_plan(kernel: &dyn Kernel, plan: &Plan) -> Applied {
    let mut out = Applied::default();
    for op in &plan.ops {
        let doomed = match op {
            Op::DelDest {
                vip,
                backend,
                why: DeleteReason::Dead,
            } => match kernel.connections(*vip, *backend) {
                Ok(c) => c,
                Err(e) => {
                    out.errors
                        .push(format!("reading connections to {backend}: {e}"));
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        match kernel.apply(op) {
            Ok(()) => out.ops += 1,
            Err(e) => {
                out.errors.push(format!("{op:?}: {e}"));
                continue;
            }
        }
        if !doomed.is_empty() {
            match kernel.cut(&doomed) {
                Ok(n) => out.sockets_destroyed += n,
                Err(e) => out.errors.push(format!("cutting sockets: {e}")),
            }
        }
    }
    out
}

/// The real kernel, over netlink.
#[derive(Debug)]
pub struct Netlink {
    ipvs: Ipvs,
    diag: Option<SockDiag>,
}

impl Netlink {
    pub fn connect() -> Result<Netlink> {
        let ipvs = Ipvs::connect()?;
        // Without sock_diag the manager still works; idle clients then only
        // notice a dead backend through their own timeouts.
        let diag = match SockDiag::connect() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open sock_diag: connections to dead apiservers will not be cut");
                None
            }
        };
        Ok(Netlink { ipvs, diag })
    }

    pub fn ipvs(&self) -> &Ipvs {
        &self.ipvs
    }
}

fn key(vip: Endpoint) -> ServiceKey {
    ServiceKey::tcp(vip.0)
}

impl Kernel for Netlink {
    fn read_ours(&self, vips: &[Endpoint]) -> Result<Vec<ActualVs>> {
        let mut out = Vec::new();
        for vip in vips {
            // One GET per VIP: the cost does not grow with foreign services.
            let Some(svc) = self.ipvs.service(&key(*vip))? else {
                continue;
            };
            let dests = self
                .ipvs
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

    fn apply(&self, op: &Op) -> Result<()> {
        let r = match op {
            Op::CreateService { vip, scheduler } => {
                let spec = ServiceSpec::new(key(*vip), scheduler);
                match self.ipvs.new_service(&spec) {
                    Err(DpError::Exists { .. }) => self.ipvs.set_service(&spec),
                    other => other,
                }
            }
            Op::SetScheduler { vip, scheduler } => {
                let spec = ServiceSpec::new(key(*vip), scheduler);
                match self.ipvs.set_service(&spec) {
                    Err(DpError::NotFound { .. }) => self.ipvs.new_service(&spec),
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
                    self.ipvs.new_dest(&key(*vip), &dest)
                } else {
                    self.ipvs.set_dest(&key(*vip), &dest)
                };
                match first {
                    Err(DpError::Exists { .. }) => self.ipvs.set_dest(&key(*vip), &dest),
                    Err(DpError::NotFound { .. }) if matches!(op, Op::SetWeight { .. }) => {
                        self.ipvs.new_dest(&key(*vip), &dest)
                    }
                    other => other,
                }
            }
            Op::DelDest { vip, backend, .. } => match self.ipvs.del_dest(&key(*vip), backend.0) {
                Err(DpError::NotFound { .. }) => Ok(()),
                other => other,
            },
        };
        r.map_err(Error::from)
    }

    fn connections(&self, vip: Endpoint, backend: Endpoint) -> Result<Vec<IpvsConn>> {
        let all = conntable::read()?;
        Ok(conntable::tcp_through(&all, vip.0, backend.0))
    }

    fn cut(&self, conns: &[IpvsConn]) -> Result<usize> {
        match &self.diag {
            Some(d) => Ok(d.destroy_clients(conns)?),
            None => Ok(0),
        }
    }
}
