//! What every netlink conversation in the dataplane shares: the errno
//! values and their meaning, and the request socket (send retried when a
//! signal interrupts it, replies read whole whatever their size, and a
//! receive timeout so a kernel that never answers is an error, not a hang).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::error::{Error, Result};

// errno values (Linux, all architectures we run on).
pub(crate) const EPERM: i32 = 1;
pub(crate) const ENOENT: i32 = 2;
pub(crate) const ESRCH: i32 = 3;
pub(crate) const EACCES: i32 = 13;
pub(crate) const EEXIST: i32 = 17;
pub(crate) const ENODEV: i32 = 19;
pub(crate) const EINVAL: i32 = 22;
pub(crate) const EOPNOTSUPP: i32 = 95;
pub(crate) const EADDRNOTAVAIL: i32 = 99;

/// How long a request waits for the kernel's answer. The kernel answers
/// netlink requests synchronously, in microseconds to milliseconds; five
/// seconds only ever passes when something is wrong.
pub const DEFAULT_RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Start size of the receive buffer; a larger datagram is measured with
/// MSG_PEEK first, so this is only the common case.
const INITIAL_BUF: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Framing: netlink messages in a datagram, attributes in a message. Pure and
// checked: a malformed buffer is a description of the problem, which the
// caller turns into `Error::Decode` naming its operation.
// ---------------------------------------------------------------------------

pub(crate) const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One netlink message out of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMessage<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// Netlink pads messages and attributes to 4 bytes.
pub(crate) fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Splits a datagram into netlink messages.
pub(crate) fn split(buf: &[u8]) -> Result<Vec<NlMessage<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = u32_at(rest, 0).ok_or_else(|| format!("{} trailing bytes", rest.len()))? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(format!(
                "message length {len} outside 16..={} (truncated datagram?)",
                rest.len()
            ));
        }
        let (ty, flags, seq, pid) = match (
            u16_at(rest, 4),
            u16_at(rest, 6),
            u32_at(rest, 8),
            u32_at(rest, 12),
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => return Err("short header".to_owned()),
        };
        let payload = rest.get(NLMSG_HDRLEN..len).unwrap_or_default();
        out.push(NlMessage {
            ty,
            flags,
            seq,
            pid,
            payload,
        });
        rest = rest.get(align4(len).min(rest.len())..).unwrap_or_default();
    }
    Ok(out)
}

/// Walks attributes, calling `f` with (type, payload) for each; the type
/// without the nested and byte-order flags.
pub(crate) fn walk<'a>(buf: &'a [u8], mut f: impl FnMut(u16, &'a [u8])) -> Result<(), String> {
    let mut rest = buf;
    while !rest.is_empty() {
        let (len, ty) = match (u16_at(rest, 0), u16_at(rest, 2)) {
            (Some(l), Some(t)) => (usize::from(l), t & NLA_TYPE_MASK),
            _ => {
                return Err(format!(
                    "{} bytes left, too few for an attribute header",
                    rest.len()
                ));
            }
        };
        if len < NLA_HDRLEN {
            return Err(format!(
                "attribute {ty} claims {len} bytes, less than its header"
            ));
        }
        let payload = rest.get(NLA_HDRLEN..len).ok_or_else(|| {
            format!(
                "attribute {ty} claims {len} bytes, {} available",
                rest.len()
            )
        })?;
        f(ty, payload);
        rest = rest.get(align4(len).min(rest.len())..).unwrap_or_default();
    }
    Ok(())
}

/// Splits attributes into (type, payload).
pub(crate) fn attributes(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    walk(buf, |ty, p| out.push((ty, p)))?;
    Ok(out)
}

/// The errno of a refused request as an error; the callers match the
/// errnos that mean something specific to them before calling this.
pub(crate) fn kernel_error(op: &'static str, errno: i32) -> Error {
    match errno {
        EPERM | EACCES => Error::PermissionDenied { op },
        _ => Error::Kernel {
            op,
            errno,
            msg: std::io::Error::from_raw_os_error(errno).to_string(),
        },
    }
}

fn io(op: &'static str) -> impl Fn(Errno) -> Error {
    move |e| Error::Io {
        op,
        source: std::io::Error::from(e),
    }
}

/// A blocking netlink socket for requests and their answers, bound in the
/// network namespace of the thread that opened it.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Socket {
    pub(crate) fn open(op: &'static str, protocol: SockProtocol) -> Result<Socket> {
        Socket::with_timeout(op, protocol, DEFAULT_RECV_TIMEOUT)
    }

    pub(crate) fn with_timeout(
        op: &'static str,
        protocol: SockProtocol,
        timeout: Duration,
    ) -> Result<Socket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(io(op))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io(op))?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(
                i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
                i64::from(timeout.subsec_micros()),
            ),
        )
        .map_err(io(op))?;
        Ok(Socket {
            fd,
            buf: vec![0; INITIAL_BUF],
            timeout,
        })
    }

    /// Sends one request datagram to the kernel.
    pub(crate) fn send(&self, op: &'static str, msg: &[u8]) -> Result<()> {
        loop {
            match send(self.fd.as_raw_fd(), msg, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io(op)(e)),
            }
        }
    }

    /// Receives the next datagram whole, waiting at most the receive
    /// timeout for it.
    pub(crate) fn recv(&mut self, op: &'static str) -> Result<&[u8]> {
        let size = self.recv_flags(op, MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC)?;
        if size > self.buf.len() {
            self.buf.resize(size, 0);
        }
        let n = self.recv_flags(op, MsgFlags::empty())?;
        Ok(self.buf.get(..n).unwrap_or_default())
    }

    fn recv_flags(&mut self, op: &'static str, flags: MsgFlags) -> Result<usize> {
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.buf, flags) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                // SO_RCVTIMEO expired.
                Err(Errno::EAGAIN) => {
                    return Err(Error::Timeout {
                        op,
                        after: self.timeout,
                    });
                }
                Err(e) => return Err(io(op)(e)),
            }
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_that_does_not_answer_is_a_timeout_naming_the_operation() {
        // Nothing was asked, so nothing comes: the wait must end.
        let mut sock = Socket::with_timeout(
            "test wait",
            SockProtocol::NetlinkRoute,
            Duration::from_millis(50),
        )
        .expect("open rtnetlink socket");
        match sock.recv("list routes") {
            Err(Error::Timeout { op, after }) => {
                assert_eq!(op, "list routes");
                assert_eq!(after, Duration::from_millis(50));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn errnos_name_permission_problems() {
        assert!(matches!(
            kernel_error("x", EPERM),
            Error::PermissionDenied { op: "x" }
        ));
        assert!(matches!(
            kernel_error("x", EINVAL),
            Error::Kernel { errno: EINVAL, .. }
        ));
    }
}
