//! Golden tests: bytes that crossed a real kernel's IPVS netlink socket.
//!
//! Replies must parse to what `ipvsadm` printed for the same table, and our
//! requests must be the bytes `ipvsadm` (libnl) sent for the same operation.
//!
//! How the bytes were captured (Debian 6.1.0-56-amd64 kernel in the test VM,
//! ipvsadm 1.31): `tests/golden/capture.sh` ran as root in the VM. It builds
//! the table below with ipvsadm under
//! `strace -f -xx -s 65536 -e trace=sendmsg,recvmsg,sendto,recvfrom -o FILE`,
//! pushes 5 TCP connections through each service (busybox nc), then traces
//! `ipvsadm -Ln --exact`. The traces were turned into datagrams with
//! `tests/golden/strace2hex.py 0x20 rep_list.txt req_*.txt` (0x20 was the
//! IPVS family id; strace prints the netlink header decoded, the script puts
//! its bytes back). The commands, in order:
//!
//! ```text
//! ip link add d0 type dummy; ip link set d0 up
//! ip addr add 10.0.0.1/32 dev d0; ip addr add 10.0.1.1/32 dev d0
//! ip -6 addr add fd00::1/128 dev d0 nodad; ip -6 addr add fd00::11/128 dev d0 nodad
//! ipvsadm -A -t 10.0.0.1:443 -s rr                                 # req_svc4
//! ipvsadm -a -t 10.0.0.1:443 -r 10.0.1.1:6443 -m -w 3              # req_dst4
//! ipvsadm -a -t 10.0.0.1:443 -r 10.0.2.2:6443 -m -w 0 -x 100 -y 10 # req_dst4b
//! ipvsadm -A -t [fd00::1]:443 -s wrr -p 300                         # req_svc6
//! ipvsadm -a -t [fd00::1]:443 -r [fd00::11]:6443 -m -w 2            # req_dst6
//! ipvsadm -A -u 10.0.0.1:53 -s lc                                   # req_svc4u
//! ipvsadm -e -t 10.0.0.1:443 -r 10.0.2.2:6443 -m -w 5               # req_edit_dst4
//! ipvsadm -d -t 10.0.0.1:443 -r 10.0.2.2:6443                       # req_del_dst4
//! ipvsadm -E -t 10.0.0.1:443 -s wlc                                 # req_edit_svc4
//! ipvsadm -D -u 10.0.0.1:53                                         # req_del_svc4u
//! ipvsadm -a -t 10.0.0.1:443 -r 10.0.2.2:6443 -m -w 0 -x 100 -y 10
//! busybox nc -lk -p 6443 -s 10.0.1.1 -e /bin/echo hi &
//! busybox nc -lk -p 6443 -s fd00::11 -e /bin/echo hi &
//! 5 x { busybox nc -w 2 10.0.0.1 443; busybox nc -w 2 fd00::1 443; }
//! sleep 3
//! ipvsadm -Ln --exact                                               # rep_list
//! ```
//!
//! What ipvsadm printed for that table (`-Ln --exact`, then `--stats`):
//!
//! ```text
//! TCP  10.0.0.1:443 wlc
//!   -> 10.0.1.1:6443                Masq    3      0          5
//!   -> 10.0.2.2:6443                Masq    0      0          0
//! TCP  [fd00::1]:443 wrr persistent 300
//!   -> [fd00::11]:6443              Masq    2      0          5
//! Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
//! TCP  10.0.0.1:443                        5        5        5      300      200
//!   -> 10.0.1.1:6443                       5        5        5      300      200
//!   -> 10.0.2.2:6443                       0        0        0        0        0
//! TCP  [fd00::1]:443                       5        5        5      400      300
//!   -> [fd00::11]:6443                     5        5        5      400      300
//! ```
//!
//! The rates (`--rate`) and the persistent-connection count are not in that
//! output at the same instant; their expected values were read off the bytes
//! by hand (attribute by attribute).

use std::net::SocketAddr;

use apiserver_proxy_dataplane::ipvs::codec::{self, Request};
use apiserver_proxy_dataplane::{
    DestSpec, Destination, Forward, Protocol, Service, ServiceKey, ServiceSpec, Stats,
};
use apiserver_proxy_types::Family;

/// The IPVS family id in these captures.
const FAMILY: u16 = 0x20;

#[path = "golden/bytes.rs"]
mod bytes;
use bytes::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn seq_of(msg: &[u8]) -> u32 {
    u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]])
}

#[allow(clippy::too_many_arguments)]
fn stats(
    conns: u64,
    inpkts: u64,
    outpkts: u64,
    inbytes: u64,
    outbytes: u64,
    inbps: u64,
    outbps: u64,
) -> Stats {
    Stats {
        conns,
        inpkts,
        outpkts,
        inbytes,
        outbytes,
        cps: 0,
        inpps: 0,
        outpps: 0,
        inbps,
        outbps,
    }
}

fn key4() -> ServiceKey {
    ServiceKey::tcp(sa("10.0.0.1:443"))
}

fn key6() -> ServiceKey {
    ServiceKey::tcp(sa("[fd00::1]:443"))
}

/// Our request must be ipvsadm's, byte for byte, except the sender's port
/// id (bytes 12..16), which libnl fills in and we leave to the kernel.
fn assert_same_request(ours: &[u8], theirs: &[u8]) {
    assert_eq!(ours.len(), theirs.len(), "length");
    assert_eq!(ours[..12], theirs[..12], "netlink header");
    assert_eq!(ours[16..], theirs[16..], "payload");
}

#[test]
fn info_reply() {
    let reply = unhex(REP_INFO);
    let msgs = codec::split_messages(&reply).expect("split");
    let info = codec::parse_info_message(msgs[0].payload).expect("info");
    assert_eq!(info.version, (1, 2, 1));
    assert_eq!(info.conn_table_size, 4096);
}

#[test]
fn service_dump_reply() {
    let dump = unhex(REP_SERVICES);
    let done = unhex(REP_SERVICES_DONE);
    let seq = seq_of(&dump);
    let got = codec::parse_service_dump(&[&dump, &done], seq).expect("parse");
    let expected = vec![
        Service {
            spec: ServiceSpec {
                key: key6(),
                scheduler: "wrr".into(),
                flags: 1, // persistent (the kernel's HASHED bit masked off)
                timeout: 300,
                netmask: 128,
            },
            stats: stats(5, 5, 5, 400, 300, 28, 21),
        },
        Service {
            spec: ServiceSpec {
                key: key4(),
                scheduler: "wlc".into(),
                flags: 0,
                timeout: 0,
                netmask: 0xffff_ffff,
            },
            stats: stats(5, 5, 5, 300, 200, 21, 14),
        },
    ];
    assert_eq!(got, expected);
}

#[test]
fn destination_dump_replies() {
    let dump = unhex(REP_DESTS4);
    let done = unhex(REP_DESTS4_DONE);
    let got = codec::parse_dest_dump(&[&dump, &done], seq_of(&dump), Family::Ipv4).expect("v4");
    let expected = vec![
        Destination {
            spec: DestSpec {
                addr: sa("10.0.2.2:6443"),
                weight: 0,
                forward: Forward::Masquerade,
                upper_threshold: 100,
                lower_threshold: 10,
            },
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
            stats: Stats::default(),
        },
        Destination {
            spec: DestSpec::new(sa("10.0.1.1:6443"), 3),
            active_conns: 0,
            inactive_conns: 5,
            persist_conns: 0,
            stats: stats(5, 5, 5, 300, 200, 21, 14),
        },
    ];
    assert_eq!(got, expected);

    let dump = unhex(REP_DESTS6);
    let done = unhex(REP_DESTS6_DONE);
    let got = codec::parse_dest_dump(&[&dump, &done], seq_of(&dump), Family::Ipv6).expect("v6");
    let expected = vec![Destination {
        spec: DestSpec::new(sa("[fd00::11]:6443"), 2),
        active_conns: 0,
        inactive_conns: 5,
        persist_conns: 1, // the persistence template
        stats: stats(5, 5, 5, 400, 300, 21, 16),
    }];
    assert_eq!(got, expected);
}

#[test]
fn the_ack_is_an_ack() {
    let ack = unhex(REP_ACK);
    let mut replies = Vec::new();
    assert_eq!(
        codec::collect(&ack, seq_of(&ack), &mut replies).expect("ack"),
        Ok(true)
    );
    assert!(replies.is_empty());
}

#[test]
fn requests_equal_ipvsadm_bytes() {
    let key4 = key4();
    let key6 = key6();
    let svc4 = ServiceSpec::new(key4, "rr");
    let svc6 = ServiceSpec {
        flags: 1,
        timeout: 300,
        ..ServiceSpec::new(key6, "wrr")
    };
    let svc4u = ServiceSpec::new(ServiceKey::new(Protocol::Udp, sa("10.0.0.1:53")), "lc");
    let edit4 = ServiceSpec::new(key4, "wlc");
    let cases: Vec<(&str, Request<'_>)> = vec![
        (REQ_GET_INFO, Request::GetInfo),
        (REQ_DUMP_SERVICES, Request::DumpServices),
        (REQ_DUMP_DESTS4, Request::DumpDests(&key4)),
        (REQ_DUMP_DESTS6, Request::DumpDests(&key6)),
        (REQ_NEW_SVC4, Request::NewService(&svc4)),
        (REQ_NEW_SVC6, Request::NewService(&svc6)),
        (REQ_NEW_SVC4U, Request::NewService(&svc4u)),
        (REQ_SET_SVC4, Request::SetService(&edit4)),
    ];
    for (hex, req) in cases {
        let theirs = unhex(hex);
        let ours = codec::encode(FAMILY, seq_of(&theirs), &req);
        assert_same_request(&ours, &theirs);
    }
}

type Attrs<'a> = Vec<(u16, &'a [u8])>;

/// The command and the top-level nests (service, destination) of a request.
fn nests(msg: &[u8]) -> (u8, Attrs<'_>, Attrs<'_>) {
    let m = codec::split_messages(msg).expect("split");
    let (cmd, attrs) = codec::genl_header("t", m[0].payload).expect("genl");
    let top = codec::attributes("t", attrs).expect("top");
    let get = |ty| {
        top.iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, p)| codec::attributes("t", p).expect("nested"))
            .unwrap_or_default()
    };
    (
        cmd,
        get(codec::IPVS_CMD_ATTR_SERVICE),
        get(codec::IPVS_CMD_ATTR_DEST),
    )
}

/// ipvsadm sends the whole service (with an empty scheduler) for a delete or
/// a destination change; the kernel reads only the key, which is what we
/// send. ipvsadm also sends the tunnel attributes (13..15), which we leave
/// out. Everything we send must be what ipvsadm sent, in the same order.
#[test]
fn key_and_destination_requests_equal_the_matching_part_of_ipvsadm_bytes() {
    let key4 = key4();
    let key4u = ServiceKey::new(Protocol::Udp, sa("10.0.0.1:53"));
    let d4 = DestSpec::new(sa("10.0.1.1:6443"), 3);
    let d4b = DestSpec {
        upper_threshold: 100,
        lower_threshold: 10,
        ..DestSpec::new(sa("10.0.2.2:6443"), 0)
    };
    let d6 = DestSpec::new(sa("[fd00::11]:6443"), 2);
    let d4b_edit = DestSpec::new(sa("10.0.2.2:6443"), 5);
    let key6 = key6();
    let cases: Vec<(&str, Request<'_>)> = vec![
        (REQ_DEL_SVC4U, Request::DelService(&key4u)),
        (REQ_NEW_DST4, Request::NewDest(&key4, &d4)),
        (REQ_NEW_DST4B, Request::NewDest(&key4, &d4b)),
        (REQ_NEW_DST6, Request::NewDest(&key6, &d6)),
        (REQ_SET_DST4, Request::SetDest(&key4, &d4b_edit)),
        (REQ_DEL_DST4, Request::DelDest(&key4, sa("10.0.2.2:6443"))),
    ];
    for (hex, req) in cases {
        let theirs = unhex(hex);
        let ours = codec::encode(FAMILY, seq_of(&theirs), &req);
        let (our_cmd, our_svc, our_dest) = nests(&ours);
        let (their_cmd, their_svc, their_dest) = nests(&theirs);
        assert_eq!(our_cmd, their_cmd);
        assert_eq!(our_svc[..], their_svc[..4], "service key of {req:?}");
        let their_dest: Attrs<'_> = their_dest
            .into_iter()
            .filter(|(t, _)| !(13..=15).contains(t))
            .collect();
        assert_eq!(
            our_dest[..],
            their_dest[..our_dest.len()],
            "destination of {req:?}"
        );
        if !matches!(req, Request::DelDest(..)) {
            assert_eq!(our_dest.len(), their_dest.len(), "{req:?}");
        }
        assert_eq!(ours[4..8], theirs[4..8], "type and flags");
    }
}
