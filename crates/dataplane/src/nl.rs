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
