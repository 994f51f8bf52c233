//! The blocking IPVS client: a generic netlink socket plus the codec.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use super::codec::{self, Request};
use super::{DestSpec, Destination, Info, Service, ServiceKey, ServiceSpec};
use crate::error::{Error, Result};
use crate::nl::{self, EEXIST, ENOENT, ESRCH, kernel_error};

/// A connection to the kernel's IPVS generic netlink family.
///
/// The socket belongs to the network namespace of the thread that called
/// [`Ipvs::connect`], for its whole life. Calls block; the struct is `Send`
/// and `Sync` (requests are serialized by an internal lock), so an async
/// application calls it from `spawn_blocking` or a dedicated thread.
pub struct Ipvs {
    family_id: u16,
    conn: Mutex<Conn>,
}

struct Conn {
    sock: nl::Socket,
    seq: u32,
}

impl std::fmt::Debug for Ipvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipvs")
            .field("family_id", &self.family_id)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Sends `request` and hands each reply payload (genl header onwards)
    /// to `on_reply` as it arrives; the result is `Ok(Err(errno))` when the
    /// kernel refused the request.
    fn call(
        &mut self,
        op: &'static str,
        family_id: u16,
        request: &Request<'_>,
        on_reply: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<std::result::Result<(), i32>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = codec::encode(family_id, seq, request);
        self.sock.send(op, &msg)?;
        // A reply we cannot decode does not stop the reading: the rest of the
        // answer is drained first, or the socket would hold a half-read dump
        // (and the kernel answers EBUSY to the next dump request).
        let mut failed = None;
        loop {
            let datagram = self.sock.recv(op)?;
            let mut these = Vec::new();
            let done = codec::collect(datagram, seq, &mut these).map_err(with_op(op))?;
            for r in these {
                if failed.is_none()
                    && let Err(e) = on_reply(r)
                {
                    failed = Some(with_op(op)(e));
                }
            }
            if done != Ok(false)
                && let Some(e) = failed
            {
                return Err(e);
            }
            match done {
                Ok(true) => return Ok(Ok(())),
                Ok(false) => {}
                Err(errno) => {
                    // A dump's error arrives in NLMSG_DONE, nothing follows.
                    return Ok(Err(errno));
                }
            }
        }
    }
}

fn with_op(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Decode { detail, .. } => Error::Decode { op, detail },
        other => other,
    }
}

impl Ipvs {
    /// Opens a generic netlink socket in the calling thread's network
    /// namespace and resolves the `IPVS` family.
    pub fn connect() -> Result<Ipvs> {
        let op = "resolve the IPVS netlink family";
        let sock = nl::Socket::open(op, nix::sys::socket::SockProtocol::NetlinkGeneric)?;
        let mut conn = Conn { sock, seq: 0 };
        let mut id = None;
        let answer = conn.call(op, codec::GENL_ID_CTRL, &Request::ResolveFamily, &mut |r| {
            id = Some(codec::parse_family_message(r)?);
            Ok(())
        })?;
        let family_id = match answer {
            Ok(()) => id.ok_or(Error::IpvsUnavailable)?,
            // The controller answers ENOENT for a family nobody registered.
            Err(ENOENT) => return Err(Error::IpvsUnavailable),
            Err(errno) => return Err(kernel_error(op, errno)),
        };
        Ok(Ipvs {
            family_id,
            conn: Mutex::new(conn),
        })
    }

    /// The numeric id the kernel gave the IPVS family at module load.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves nothing half-done that
        // matters: every call starts with a fresh sequence number.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call(
        &self,
        op: &'static str,
        request: &Request<'_>,
        on_reply: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<std::result::Result<(), i32>> {
        self.lock().call(op, self.family_id, request, on_reply)
    }

    /// A request answered by an ACK only.
    fn command(
        &self,
        op: &'static str,
        request: &Request<'_>,
    ) -> Result<std::result::Result<(), i32>> {
        self.call(op, request, &mut |_| Ok(()))
    }

    /// The IPVS version and connection table size.
    pub fn info(&self) -> Result<Info> {
        let op = "read IPVS info";
        let mut info = None;
        match self.call(op, &Request::GetInfo, &mut |r| {
            info = Some(codec::parse_info_message(r)?);
            Ok(())
        })? {
            Ok(()) => info.ok_or_else(|| Error::Decode {
                op,
                detail: "no reply before the ACK".into(),
            }),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Every TCP/UDP/SCTP service in the table (firewall-mark services are
    /// skipped).
    pub fn services(&self) -> Result<Vec<Service>> {
        let op = "dump IPVS services";
        let mut out = Vec::new();
        self.call(op, &Request::DumpServices, &mut |r| {
            out.extend(codec::parse_service_message(r)?);
            Ok(())
        })?
        .map_err(|errno| kernel_error(op, errno))?;
        Ok(out)
    }

    /// One service, or `None` if there is none with that key.
    pub fn service(&self, key: &ServiceKey) -> Result<Option<Service>> {
        let op = "get IPVS service";
        let mut found = None;
        match self.call(op, &Request::GetService(key), &mut |r| {
            found = codec::parse_service_message(r)?;
            Ok(())
        })? {
            Ok(()) => Ok(found),
            Err(ESRCH) | Err(ENOENT) => Ok(None),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Creates a service. [`Error::Exists`] if it is there already;
    /// [`Error::IpvsSchedulerUnavailable`] if the kernel has no such
    /// scheduler.
    pub fn new_service(&self, spec: &ServiceSpec) -> Result<()> {
        let op = "create IPVS service";
        check_scheduler(op, &spec.scheduler)?;
        match self.command(op, &Request::NewService(spec))? {
            Ok(_) => Ok(()),
            Err(EEXIST) => Err(Error::Exists {
                op,
                what: spec.key.to_string(),
            }),
            Err(ENOENT) => Err(scheduler_error(op, &spec.scheduler)),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Changes a service's scheduler, flags, timeout and netmask.
    /// [`Error::NotFound`] if there is no such service.
    pub fn set_service(&self, spec: &ServiceSpec) -> Result<()> {
        let op = "change IPVS service";
        check_scheduler(op, &spec.scheduler)?;
        match self.command(op, &Request::SetService(spec))? {
            Ok(_) => Ok(()),
            Err(ESRCH) => Err(Error::NotFound {
                op,
                what: spec.key.to_string(),
            }),
            Err(ENOENT) => Err(scheduler_error(op, &spec.scheduler)),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Deletes a service and its destinations. [`Error::NotFound`] if there
    /// is no such service.
    pub fn del_service(&self, key: &ServiceKey) -> Result<()> {
        let op = "delete IPVS service";
        match self.command(op, &Request::DelService(key))? {
            Ok(_) => Ok(()),
            Err(ESRCH) | Err(ENOENT) => Err(Error::NotFound {
                op,
                what: key.to_string(),
            }),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// The destinations of a service. [`Error::NotFound`] if there is no
    /// such service (the kernel itself answers an empty dump).
    pub fn destinations(&self, key: &ServiceKey) -> Result<Vec<Destination>> {
        let op = "dump IPVS destinations";
        let mut out = Vec::new();
        self.call(op, &Request::DumpDests(key), &mut |r| {
            out.push(codec::parse_dest_message(r, key.family())?);
            Ok(())
        })?
        .map_err(|errno| kernel_error(op, errno))?;
        if out.is_empty() && self.service(key)?.is_none() {
            return Err(Error::NotFound {
                op,
                what: key.to_string(),
            });
        }
        Ok(out)
    }

    /// Adds a destination. [`Error::Exists`] if the service has it already,
    /// [`Error::NotFound`] if there is no such service.
    pub fn new_dest(&self, key: &ServiceKey, dest: &DestSpec) -> Result<()> {
        let op = "add IPVS destination";
        match self.command(op, &Request::NewDest(key, dest))? {
            Ok(_) => Ok(()),
            Err(EEXIST) => Err(Error::Exists {
                op,
                what: dest_name(key, dest.addr),
            }),
            Err(ESRCH) => Err(Error::NotFound {
                op,
                what: key.to_string(),
            }),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Changes a destination's weight, forwarding method and thresholds.
    /// [`Error::NotFound`] if the service or the destination is missing.
    pub fn set_dest(&self, key: &ServiceKey, dest: &DestSpec) -> Result<()> {
        let op = "change IPVS destination";
        match self.command(op, &Request::SetDest(key, dest))? {
            Ok(_) => Ok(()),
            Err(ENOENT) => Err(Error::NotFound {
                op,
                what: dest_name(key, dest.addr),
            }),
            Err(ESRCH) => Err(Error::NotFound {
                op,
                what: key.to_string(),
            }),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }

    /// Removes a destination. [`Error::NotFound`] if the service or the
    /// destination is missing.
    pub fn del_dest(&self, key: &ServiceKey, addr: SocketAddr) -> Result<()> {
        let op = "delete IPVS destination";
        match self.command(op, &Request::DelDest(key, addr))? {
            Ok(_) => Ok(()),
            Err(ENOENT) => Err(Error::NotFound {
                op,
                what: dest_name(key, addr),
            }),
            Err(ESRCH) => Err(Error::NotFound {
                op,
                what: key.to_string(),
            }),
            Err(errno) => Err(kernel_error(op, errno)),
        }
    }
}

fn dest_name(key: &ServiceKey, addr: SocketAddr) -> String {
    format!("destination {addr} of {key}")
}

/// The kernel takes a scheduler name of at most 15 bytes
/// (`IP_VS_SCHEDNAME_MAXLEN` with its NUL); say so before it answers EINVAL.
fn check_scheduler(op: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < codec::SCHEDNAME_MAXLEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            op,
            detail: format!(
                "invalid IPVS scheduler name {name:?}: 1 to 15 letters, digits or '_' \
                 (rr, wrr, lc, wlc, sh, mh, ...)"
            ),
        })
    }
}

fn scheduler_error(op: &'static str, scheduler: &str) -> Error {
    Error::IpvsSchedulerUnavailable {
        op,
        scheduler: scheduler.to_owned(),
        module: format!("ip_vs_{scheduler}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_client_can_move_to_a_blocking_thread() {
        assert_send_sync::<Ipvs>();
    }

    #[test]
    fn scheduler_names_are_checked_before_sending() {
        assert!(check_scheduler("t", "wlc").is_ok());
        assert!(check_scheduler("t", "fo_1").is_ok());
        for bad in ["", "a-very-long-scheduler", "r r", "rr\0"] {
            let err = check_scheduler("t", bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        }
    }

    #[test]
    fn scheduler_errors_name_the_module() {
        let e = scheduler_error("create IPVS service", "mh");
        let msg = e.to_string();
        assert!(
            msg.contains("\"mh\"") && msg.contains("modprobe ip_vs_mh"),
            "{msg}"
        );
    }
}
