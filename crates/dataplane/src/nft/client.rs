//! Sends nf_tables batches over a `NETLINK_NETFILTER` socket and reads the
//! kernel's answer: one ack (`NLMSG_ERROR` with error 0) per inner message,
//! or the errno of the message that failed, in which case the kernel has
//! applied nothing of the batch.

use nix::sys::socket::SockProtocol;

use super::codec::Batch;
use crate::error::{Error, Result};
use crate::nl;

/// `NLMSG_ERROR` (`netlink.h`): an ack, or the errno of a refused message.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
const NLMSG_DONE: u16 = 3;

/// A socket for our table's changes, in the network namespace of the
/// thread that opened it.
#[derive(Debug)]
pub struct Nft {
    sock: nl::Socket,
    seq: u32,
}

impl Nft {
    pub fn connect() -> Result<Nft> {
        Ok(Nft {
            sock: nl::Socket::open("open nf_tables socket", SockProtocol::NetlinkNetFilter)?,
            seq: 1,
        })
    }

    /// Builds one batch with `f` and applies it, all or nothing.
    pub fn apply(&mut self, op: &'static str, f: impl FnOnce(&mut Batch)) -> Result<()> {
        let mut batch = Batch::new(self.seq);
        f(&mut batch);
        let mut waiting: Vec<u32> = batch.acked().to_vec();
        let bytes = batch.finish();
        // The begin and end markers took a sequence number each.
        self.seq = self
            .seq
            .wrapping_add(u32::try_from(waiting.len()).unwrap_or(u32::MAX))
            .wrapping_add(2);
        self.sock.send(op, &bytes)?;
        while !waiting.is_empty() {
            let datagram = self.sock.recv(op)?;
            let messages = nl::split(datagram).map_err(|detail| Error::Decode { op, detail })?;
            for m in messages {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let errno =
                    nl::u32_at(m.payload, 0)
                        .map(|e| e as i32)
                        .ok_or_else(|| Error::Decode {
                            op,
                            detail: "NLMSG_ERROR without its error code".into(),
                        })?;
                if errno != 0 {
                    return Err(nl::kernel_error(op, -errno));
                }
                // An ack carries the sequence number of its request.
                waiting.retain(|s| *s != m.seq);
            }
        }
        Ok(())
    }

    /// Sends a dump request built by `request` (given its sequence number)
    /// and returns the payloads of the answer's messages of type `want`.
    /// A missing table or set is an empty answer, not an error.
    pub fn dump(
        &mut self,
        op: &'static str,
        want: u16,
        request: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<Vec<Vec<u8>>> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.sock.send(op, &request(seq))?;
        let mut out = Vec::new();
        loop {
            let datagram = self.sock.recv(op)?;
            let messages = nl::split(datagram).map_err(|detail| Error::Decode { op, detail })?;
            for m in messages {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno =
                            nl::u32_at(m.payload, 0).map(|e| e as i32).ok_or_else(|| {
                                Error::Decode {
                                    op,
                                    detail: "NLMSG_ERROR without its error code".into(),
                                }
                            })?;
                        return match -errno {
                            0 => Ok(out),
                            nl::ENOENT => Ok(Vec::new()),
                            e => Err(nl::kernel_error(op, e)),
                        };
                    }
                    ty if ty == want => out.push(m.payload.to_vec()),
                    _ => {}
                }
            }
        }
    }
}
