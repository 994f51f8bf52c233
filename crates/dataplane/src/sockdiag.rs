//! Cutting the node's own TCP connections with `SOCK_DESTROY`.
//!
//! When a real server is deleted because its apiserver died, clients that
//! still hold a connection balanced to it would hang: an idle kubelet watch
//! sends nothing, so it only notices through its HTTP/2 ping (about 45 s with
//! client-go defaults). Destroying the local socket makes the client see an
//! error at once (ECONNABORTED) and reconnect through the VIP to a live
//! backend. The kernel needs CONFIG_INET_DIAG_DESTROY (Debian has it).

use std::net::{IpAddr, SocketAddr};

use neli::consts::nl::NlmF;
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::Buffer;
use neli::utils::Groups;

use crate::conntable::IpvsConn;
use crate::error::{Error, Result};

/// `SOCK_DESTROY` from `linux/sock_diag.h`.
const SOCK_DESTROY: u16 = 21;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const TCP_ALL_STATES: u32 = 0xfff;
/// `INET_DIAG_NOCOOKIE`: match the socket by its addresses alone.
const NO_COOKIE: u32 = 0xffff_ffff;

/// The request payload (`struct inet_diag_req_v2`, 56 bytes) that names one
/// TCP socket by its local and remote address. Pure, so it is unit tested.
///
/// Ports and addresses are in network byte order; everything else in host
/// order, as the kernel's struct says.
pub fn destroy_request(local: SocketAddr, remote: SocketAddr) -> Result<Vec<u8>> {
    let family = match (local.ip(), remote.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
        _ => {
            return Err(Error::InvalidArgument {
                op: "SOCK_DESTROY",
                detail: format!("{local} and {remote} are of different families"),
            });
        }
    };
    let mut b = Vec::with_capacity(56);
    b.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    b.extend_from_slice(&TCP_ALL_STATES.to_ne_bytes());
    b.extend_from_slice(&local.port().to_be_bytes());
    b.extend_from_slice(&remote.port().to_be_bytes());
    for ip in [local.ip(), remote.ip()] {
        let mut addr = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => addr[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => addr.copy_from_slice(&v6.octets()),
        }
        b.extend_from_slice(&addr);
    }
    b.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    b.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    b.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(b.len(), 56);
    Ok(b)
}

/// A `NETLINK_SOCK_DIAG` socket.
pub struct SockDiag {
    socket: NlSocketHandle,
}

impl std::fmt::Debug for SockDiag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockDiag").finish_non_exhaustive()
    }
}

impl SockDiag {
    pub fn connect() -> Result<SockDiag> {
        let socket = NlSocketHandle::connect(NlFamily::SockOrInetDiag, None, Groups::empty())
            .map_err(|e| Error::Netlink {
                op: "open a sock_diag netlink socket",
                detail: e.to_string(),
            })?;
        Ok(SockDiag { socket })
    }

    /// Destroys the local TCP socket `local` -> `remote`. Ok(false) when no
    /// such socket exists (it closed on its own, or the client is not local).
    pub fn destroy(&self, local: SocketAddr, remote: SocketAddr) -> Result<bool> {
        let op = "SOCK_DESTROY";
        let payload = destroy_request(local, remote)?;
        let msg = NlmsghdrBuilder::default()
            .nl_type(SOCK_DESTROY)
            .nl_flags(NlmF::REQUEST | NlmF::ACK)
            .nl_payload(NlPayload::Payload(Buffer::from(payload)))
            .build()
            .map_err(|e| Error::Netlink {
                op,
                detail: e.to_string(),
            })?;
        self.socket.send(&msg).map_err(|e| Error::Netlink {
            op,
            detail: e.to_string(),
        })?;
        let (replies, _) = self
            .socket
            .recv::<u16, Buffer>()
            .map_err(|e| Error::Netlink {
                op,
                detail: e.to_string(),
            })?;
        for reply in replies {
            let reply = reply.map_err(|e| Error::Decode {
                op,
                detail: e.to_string(),
            })?;
            match reply.nl_payload() {
                NlPayload::Ack(_) => return Ok(true),
                NlPayload::Err(e) => {
                    let errno = -*e.error();
                    return match errno {
                        0 => Ok(true),
                        2 => Ok(false), // ENOENT: no such socket
                        1 | 13 => Err(Error::PermissionDenied { op }),
                        95 => Err(Error::SockDestroyUnsupported),
                        _ => Err(Error::Kernel {
                            op,
                            errno,
                            msg: std::io::Error::from_raw_os_error(errno).to_string(),
                        }),
                    };
                }
                _ => continue,
            }
        }
        Err(Error::Decode {
            op,
            detail: "no acknowledgement in the reply".into(),
        })
    }

    /// Destroys the local client side of each connection: the client
    /// connected from `client` to the virtual address. Returns how many
    /// sockets were destroyed (the others had already gone).
    pub fn destroy_clients(&self, conns: &[IpvsConn]) -> Result<usize> {
        let mut destroyed = 0;
        for c in conns {
            if self.destroy(c.client, c.virtual_addr)? {
                destroyed += 1;
            }
        }
        Ok(destroyed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_socket_in_the_kernels_layout() {
        let req = destroy_request(
            "10.103.97.2:41668".parse().expect("addr"),
            "10.103.97.2:6443".parse().expect("addr"),
        )
        .expect("same family");
        assert_eq!(req.len(), 56);
        assert_eq!(&req[0..4], &[2, 6, 0, 0]);
        assert_eq!(&req[8..10], &41668u16.to_be_bytes());
        assert_eq!(&req[10..12], &6443u16.to_be_bytes());
        assert_eq!(&req[12..16], &[10, 103, 97, 2]);
        assert_eq!(&req[16..28], &[0; 12]);
        assert_eq!(&req[28..32], &[10, 103, 97, 2]);
        assert_eq!(&req[48..56], &[0xff; 8]);
        let v6 = destroy_request(
            "[fd00::1]:1".parse().expect("addr"),
            "[fd00::2]:2".parse().expect("addr"),
        )
        .expect("same family");
        assert_eq!(v6[0], 10);
        assert_eq!(v6[27], 1);
        assert_eq!(v6[43], 2);
    }

    #[test]
    fn mixed_families_are_refused() {
        let err = destroy_request(
            "10.0.0.1:1".parse().expect("addr"),
            "[fd00::2]:2".parse().expect("addr"),
        )
        .expect_err("mixed");
        assert!(err.to_string().contains("different families"), "{err}");
    }
}
