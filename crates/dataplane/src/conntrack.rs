//! The connection tracking table over ctnetlink (`nfnetlink_conntrack.h`):
//! the connections the nftables dataplane translated, and their removal
//! when their backend dies.
//!
//! With nftables, the NAT of a connection is decided on its first packet
//! and kept in its conntrack entry: deleting a backend's rules stops new
//! connections to it, but every existing one (a socket still in its
//! handshake included) keeps being sent to the dead backend until its
//! entry goes. Deleting the entry makes the next packet a new connection
//! to a live backend (a SYN retransmission connects), or, for an
//! established one, gets it a reset; the node's own sockets are destroyed
//! besides (sock_diag), so an idle client reconnects at once.
//!
//! Codec (pure) and client in one file: the subset is small.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::sys::socket::SockProtocol;

use crate::error::{Error, Result};
use crate::nl;

/// `NFNL_SUBSYS_CTNETLINK` (`nfnetlink.h`).
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// `enum cntl_msg_types`.
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// `enum ctattr_type`.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
/// `CTA_FILTER` (Linux 5.8): a dump of the entries whose original tuple
/// matches ours in the fields `CTA_FILTER_ORIG_FLAGS` names. Older kernels
/// ignore it and dump everything, which the reader filters again.
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
/// `CTA_FILTER_F_CTA_IP_DST`, `..._PROTO_NUM`, `..._PROTO_DST_PORT`
/// (`nf_internals.h`).
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
const FILTER_PROTO_DST_PORT: u32 = 1 << 5;
/// `enum ctattr_tuple`, `ctattr_ip`, `ctattr_l4proto`.
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// `CTA_PROTOINFO_TCP`, and its `CTA_PROTOINFO_TCP_STATE`.
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One tracked TCP connection: who opened it, to where, and where the NAT
/// sent it (the reply's source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    pub client: SocketAddr,
    /// The original destination: the VIP, for ours.
    pub target: SocketAddr,
    /// The reply's source: the backend the connection was translated to.
    pub backend: SocketAddr,
    /// The TCP state as conntrack names it (`ESTABLISHED`, `SYN_SENT`, ...).
    pub state: &'static str,
    /// Seconds until the entry expires.
    pub timeout: u32,
}

/// `enum tcp_conntrack` (`nf_conntrack_tcp.h`), as `conntrack -L` prints it.
fn tcp_state(n: u8) -> &'static str {
    match n {
        1 => "SYN_SENT",
        2 => "SYN_RECV",
        3 => "ESTABLISHED",
        4 => "FIN_WAIT",
        5 => "CLOSE_WAIT",
        6 => "LAST_ACK",
        7 => "TIME_WAIT",
        8 => "CLOSE",
        9 => "SYN_SENT2",
        _ => "NONE",
    }
}

/// The request for the TCP entries whose original destination is `target`
/// (`conntrack -L -p tcp --orig-dst IP --dport PORT`), filtered by the
/// kernel: a node's table may hold hundreds of thousands of entries, ours
/// a handful.
pub fn dump_request(seq: u32, target: SocketAddr) -> Vec<u8> {
    let mut ip = Vec::new();
    match target.ip() {
        IpAddr::V4(v4) => push(&mut ip, CTA_IP_V4_DST, &v4.octets()),
        IpAddr::V6(v6) => push(&mut ip, CTA_IP_V6_DST, &v6.octets()),
    }
    let mut proto = Vec::new();
    push(&mut proto, CTA_PROTO_NUM, &[IPPROTO_TCP]);
    push(&mut proto, CTA_PROTO_DST_PORT, &target.port().to_be_bytes());
    let mut tuple = Vec::new();
    push(&mut tuple, NLA_F_NESTED | CTA_TUPLE_IP, &ip);
    push(&mut tuple, NLA_F_NESTED | CTA_TUPLE_PROTO, &proto);
    let mut filter = Vec::new();
    push(
        &mut filter,
        CTA_FILTER_ORIG_FLAGS,
        &(FILTER_IP_DST | FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT).to_ne_bytes(),
    );
    push(&mut filter, CTA_FILTER_REPLY_FLAGS, &0u32.to_ne_bytes());
    let mut attrs = Vec::new();
    push(&mut attrs, NLA_F_NESTED | CTA_TUPLE_ORIG, &tuple);
    push(&mut attrs, NLA_F_NESTED | CTA_FILTER, &filter);
    message(
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family(target.is_ipv6()),
        &attrs,
    )
}

/// The request that deletes the entry of `e`, found by its original tuple.
pub fn delete_request(seq: u32, e: &CtEntry) -> Vec<u8> {
    let mut attrs = Vec::new();
    push(
        &mut attrs,
        NLA_F_NESTED | CTA_TUPLE_ORIG,
        &tuple(e.client, e.target),
    );
    message(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family(e.client.is_ipv6()),
        &attrs,
    )
}

fn family(v6: bool) -> u8 {
    if v6 { AF_INET6 } else { AF_INET }
}

fn tuple(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut ip = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            push(&mut ip, CTA_IP_V4_SRC, &s.octets());
            push(&mut ip, CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            push(&mut ip, CTA_IP_V6_SRC, &v6_octets(s));
            push(&mut ip, CTA_IP_V6_DST, &v6_octets(d));
        }
    }
    let mut proto = Vec::new();
    push(&mut proto, CTA_PROTO_NUM, &[IPPROTO_TCP]);
    push(&mut proto, CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
    push(&mut proto, CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
    let mut out = Vec::new();
    push(&mut out, NLA_F_NESTED | CTA_TUPLE_IP, &ip);
    push(&mut out, NLA_F_NESTED | CTA_TUPLE_PROTO, &proto);
    out
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

fn message(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let ty = (NFNL_SUBSYS_CTNETLINK << 8) | msg;
    let len = u32::try_from(20 + attrs.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(20 + attrs.len());
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0, 0, 0]);
    out.extend_from_slice(attrs);
    out
}

fn push(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Reads one `IPCTNL_MSG_CT_NEW` payload (after the netlink header). Ok(None)
/// for an entry that is not TCP.
pub fn parse_entry(payload: &[u8]) -> Result<Option<CtEntry>, String> {
    let attrs = payload
        .get(4..)
        .ok_or("conntrack message shorter than its nfgenmsg")?;
    let mut orig = None;
    let mut reply = None;
    let mut state = 0;
    let mut timeout = 0;
    for (ty, v) in nl::attributes(attrs)? {
        match ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(v)?,
            CTA_TUPLE_REPLY => reply = parse_tuple(v)?,
            CTA_TIMEOUT => timeout = be32(v, "timeout")?,
            CTA_PROTOINFO => {
                for (ty, tcp) in nl::attributes(v)? {
                    if ty != CTA_PROTOINFO_TCP {
                        continue;
                    }
                    for (ty, s) in nl::attributes(tcp)? {
                        if ty == CTA_PROTOINFO_TCP_STATE {
                            state = *s.first().ok_or("empty TCP state")?;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let (Some((client, target, po)), Some((backend, _, pr))) = (orig, reply) else {
        return Err("conntrack entry without both tuples".into());
    };
    if po != IPPROTO_TCP || pr != IPPROTO_TCP {
        return Ok(None);
    }
    Ok(Some(CtEntry {
        client,
        target,
        backend,
        state: tcp_state(state),
        timeout,
    }))
}

/// (source, destination, protocol) of a tuple; None for a tuple without
/// ports (ICMP and the like).
fn parse_tuple(b: &[u8]) -> Result<Option<(SocketAddr, SocketAddr, u8)>, String> {
    let mut src = None;
    let mut dst = None;
    let mut proto = 0;
    let mut sport = None;
    let mut dport = None;
    for (ty, v) in nl::attributes(b)? {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, a) in nl::attributes(v)? {
                    let ip = match ty {
                        CTA_IP_V4_SRC | CTA_IP_V4_DST => <[u8; 4]>::try_from(a)
                            .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
                            .map_err(|_| format!("IPv4 address of {} bytes", a.len()))?,
                        CTA_IP_V6_SRC | CTA_IP_V6_DST => <[u8; 16]>::try_from(a)
                            .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
                            .map_err(|_| format!("IPv6 address of {} bytes", a.len()))?,
                        _ => continue,
                    };
                    if matches!(ty, CTA_IP_V4_SRC | CTA_IP_V6_SRC) {
                        src = Some(ip);
                    } else {
                        dst = Some(ip);
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, p) in nl::attributes(v)? {
                    match ty {
                        CTA_PROTO_NUM => proto = *p.first().ok_or("empty protocol")?,
                        CTA_PROTO_SRC_PORT => sport = Some(be16(p)?),
                        CTA_PROTO_DST_PORT => dport = Some(be16(p)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (src, dst, sport, dport) {
        (Some(s), Some(d), Some(sp), Some(dp)) => {
            Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp), proto))
        }
        _ => None,
    })
}

fn be16(b: &[u8]) -> Result<u16, String> {
    <[u8; 2]>::try_from(b)
        .map(u16::from_be_bytes)
        .map_err(|_| format!("port of {} bytes", b.len()))
}

fn be32(b: &[u8], what: &str) -> Result<u32, String> {
    <[u8; 4]>::try_from(b)
        .map(u32::from_be_bytes)
        .map_err(|_| format!("{what} of {} bytes", b.len()))
}

/// A ctnetlink socket in the network namespace of the thread that opened
/// it.
#[derive(Debug)]
pub struct Conntrack {
    sock: nl::Socket,
    seq: u32,
    /// How many entries the kernel sent in the last dump (tests: the
    /// kernel's filter at work).
    last_dump: usize,
}

impl Conntrack {
    pub fn connect() -> Result<Conntrack> {
        Ok(Conntrack {
            sock: nl::Socket::open("open conntrack socket", SockProtocol::NetlinkNetFilter)?,
            seq: 1,
            last_dump: 0,
        })
    }

    /// How many entries the kernel sent in the last dump, before our own
    /// filtering.
    pub fn last_dump_len(&self) -> usize {
        self.last_dump
    }

    /// The TCP entries whose original destination is `target`, and (if
    /// given) that were sent to `backend`. The kernel filters by
    /// destination (Linux 5.8 and later); what an older kernel sends beyond
    /// that is filtered here.
    pub fn entries_to(
        &mut self,
        target: SocketAddr,
        backend: Option<SocketAddr>,
    ) -> Result<Vec<CtEntry>> {
        let op = "read the conntrack table";
        let seq = self.next_seq();
        self.sock.send(op, &dump_request(seq, target))?;
        let mut out = Vec::new();
        self.last_dump = 0;
        loop {
            let datagram = self.sock.recv(op)?;
            for m in nl::split(datagram).map_err(|detail| Error::Decode { op, detail })? {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        return match error_of(op, m.payload)? {
                            0 => Ok(out),
                            e => Err(nl::kernel_error(op, e)),
                        };
                    }
                    ty if ty == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                        self.last_dump += 1;
                        let entry = parse_entry(m.payload)
                            .map_err(|detail| Error::Decode { op, detail })?;
                        if let Some(e) = entry.filter(|e| {
                            e.target == target && backend.is_none_or(|b| e.backend == b)
                        }) {
                            out.push(e);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes these entries; one that is already gone counts as deleted.
    /// Returns how many the kernel removed.
    pub fn delete(&mut self, entries: &[CtEntry]) -> Result<usize> {
        let op = "delete conntrack entries";
        let mut deleted = 0;
        for e in entries {
            let seq = self.next_seq();
            self.sock.send(op, &delete_request(seq, e))?;
            loop {
                let datagram = self.sock.recv(op)?;
                let acked = nl::split(datagram)
                    .map_err(|detail| Error::Decode { op, detail })?
                    .into_iter()
                    .find(|m| m.seq == seq && m.ty == NLMSG_ERROR)
                    .map(|m| error_of(op, m.payload))
                    .transpose()?;
                match acked {
                    None => continue,
                    Some(0) => deleted += 1,
                    Some(nl::ENOENT) => {}
                    Some(e) => return Err(nl::kernel_error(op, e)),
                }
                break;
            }
        }
        Ok(deleted)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
}

/// The positive errno of an `NLMSG_ERROR` (0: an ack).
fn error_of(op: &'static str, payload: &[u8]) -> Result<i32> {
    nl::u32_at(payload, 0)
        .map(|e| -(e as i32))
        .ok_or_else(|| Error::Decode {
            op,
            detail: "NLMSG_ERROR without its error code".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the kernel (6.18, the build host) answered `conntrack -L -p tcp`
    // (conntrack-tools 1.4.7, Debian) for one connection from
    // 10.103.97.2:40000 to the VIP 10.103.97.2:6443 that an nftables
    // `dnat ip to 127.0.0.1:7443` translated; captured with `strace -f -e
    // trace=recvmsg -s 65535 -xx conntrack -L -p tcp` in `unshare -rn`. The
    // payload after the netlink header (the kernel's message: 212 bytes).
    // conntrack printed: `tcp 6 431999 ESTABLISHED src=10.103.97.2
    // dst=10.103.97.2 sport=40000 dport=6443 src=127.0.0.1 dst=10.103.97.2
    // sport=7443 dport=40000 [ASSURED]`.
    const ENTRY_PAYLOAD: [u8; 196] = [
        0x02, 0x00, 0x00, 0x00, 0x34, 0x00, 0x01, 0x80, 0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01,
        0x00, 0x0a, 0x67, 0x61, 0x02, 0x08, 0x00, 0x02, 0x00, 0x0a, 0x67, 0x61, 0x02, 0x1c, 0x00,
        0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x9c,
        0x40, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x19, 0x2b, 0x00, 0x00, 0x34, 0x00, 0x02, 0x80,
        0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02,
        0x00, 0x0a, 0x67, 0x61, 0x02, 0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x06, 0x00,
        0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x1d, 0x13, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x9c,
        0x40, 0x00, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0xae, 0x08, 0x00, 0x08, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0c, 0x00, 0x69, 0xb4, 0xef, 0x40, 0x08, 0x00, 0x0b,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x07, 0x00, 0x00, 0x06, 0x97, 0x7f, 0x30, 0x00,
        0x04, 0x80, 0x2c, 0x00, 0x01, 0x80, 0x05, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x05,
        0x00, 0x02, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x06, 0x00, 0x05, 0x00, 0x23, 0x00, 0x00,
        0x00,
    ];
    const DELETE_ORIG_ATTR: [u8; 52] = [
        0x34, 0x00, 0x01, 0x80, 0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01, 0x00, 0x0a, 0x67, 0x61,
        0x02, 0x08, 0x00, 0x02, 0x00, 0x0a, 0x67, 0x61, 0x02, 0x1c, 0x00, 0x02, 0x80, 0x05, 0x00,
        0x01, 0x00, 0x06, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x9c, 0x40, 0x00, 0x00, 0x06,
        0x00, 0x03, 0x00, 0x19, 0x2b, 0x00, 0x00,
    ];

    #[test]
    fn a_dumped_entry_reads_as_conntrack_prints_it() {
        let e = parse_entry(&ENTRY_PAYLOAD).expect("parses").expect("tcp");
        assert_eq!(
            e,
            CtEntry {
                client: "10.103.97.2:40000".parse().expect("a"),
                target: "10.103.97.2:6443".parse().expect("a"),
                backend: "127.0.0.1:7443".parse().expect("a"),
                state: "ESTABLISHED",
                timeout: 431_999,
            }
        );
    }

    /// `conntrack -D -p tcp --orig-src 10.103.97.2 --orig-dst 10.103.97.2
    /// --sport 40000 --dport 6443` sent this original tuple (beside the
    /// rest of the entry, which the kernel does not need to find it).
    #[test]
    fn a_delete_names_the_original_tuple_as_conntrack_does() {
        let e = parse_entry(&ENTRY_PAYLOAD).expect("parses").expect("tcp");
        let req = delete_request(9, &e);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), (1 << 8) | 2);
        assert_eq!(
            u16::from_ne_bytes([req[6], req[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(req[16], AF_INET);
        assert_eq!(&req[20..], &DELETE_ORIG_ATTR[..]);
    }

    /// The dump asks the kernel to filter by the original destination
    /// address, protocol and port (CTA_FILTER, Linux 5.8), with the tuple
    /// that holds them; the host kernel test shows it filters.
    #[test]
    fn a_dump_names_the_vip_and_asks_the_kernel_to_filter() {
        let req = dump_request(3, "10.103.97.2:6443".parse().expect("vip"));
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), (1 << 8) | 1);
        assert_eq!(
            u16::from_ne_bytes([req[6], req[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(req[16], AF_INET);
        let attrs = nl::attributes(&req[20..]).expect("attributes");
        let types: Vec<u16> = attrs.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [CTA_TUPLE_ORIG, CTA_FILTER]);
        let tuple = parse_tuple(attrs[0].1);
        assert_eq!(tuple, Ok(None), "a destination only: no source");
        let flags = nl::attributes(attrs[1].1).expect("filter");
        assert_eq!(
            flags[0],
            (CTA_FILTER_ORIG_FLAGS, &(0b10_1010u32).to_ne_bytes()[..])
        );
        assert_eq!(flags[1], (CTA_FILTER_REPLY_FLAGS, &0u32.to_ne_bytes()[..]));
    }

    #[test]
    fn a_cut_entry_is_an_error_never_a_panic() {
        for n in 0..ENTRY_PAYLOAD.len() {
            let _ = parse_entry(&ENTRY_PAYLOAD[..n]);
        }
        assert!(parse_entry(&ENTRY_PAYLOAD[..60]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(apiserver_proxy_testkit::fuzz::parser_config(2_000))]
        /// The kernel's entry mutated at random, or noise: never a panic.
        #[test]
        fn mutated_entries_never_panic(
            at in 0usize..256,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..256,
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let _ = parse_entry(&apiserver_proxy_testkit::fuzz::mutate(&ENTRY_PAYLOAD, at, byte, cut));
            let _ = parse_entry(&noise);
        }
    }
}
