//! Pure nf_tables netlink message builders (no sockets).
//!
//! Every change is sent as one nfnetlink batch (`NFNL_MSG_BATCH_BEGIN`, the
//! messages, `NFNL_MSG_BATCH_END`) so the kernel applies all or nothing.
//! Constants are from `include/uapi/linux/netfilter/nfnetlink.h` and
//! `nf_tables.h`. Unlike the `nft` binary, every inner message asks for an
//! ack (`NLM_F_ACK`) so each failure is attributed to the message that caused
//! it; that flag is the one documented difference from `nft`'s bytes.

use std::net::{IpAddr, SocketAddr};

/// `NLMSG_MIN_TYPE`: batch begin (`nfnetlink.h`).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// Batch end (`nfnetlink.h`).
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNL_SUBSYS_NFTABLES` (`nfnetlink.h`).
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWTABLE` (`nf_tables.h`).
pub const NFT_MSG_NEWTABLE: u16 = 0;
/// `NFT_MSG_DELTABLE` (`nf_tables.h`).
pub const NFT_MSG_DELTABLE: u16 = 2;
/// `NFTA_TABLE_NAME` (`nf_tables.h`).
pub const NFTA_TABLE_NAME: u16 = 1;
/// `NFTA_TABLE_FLAGS` (`nf_tables.h`).
pub const NFTA_TABLE_FLAGS: u16 = 2;
/// `NFT_MSG_NEWCHAIN`, `NFT_MSG_DELCHAIN` (`nf_tables.h`).
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_DELCHAIN: u16 = 5;
/// `NFTA_CHAIN_TABLE`, `NFTA_CHAIN_NAME`, `NFTA_CHAIN_HOOK` (nested) and
/// `NFTA_CHAIN_TYPE` (`nf_tables.h`).
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_TYPE: u16 = 7;
/// `NFTA_HOOK_HOOKNUM` and `NFTA_HOOK_PRIORITY`, inside `NFTA_CHAIN_HOOK`.
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
/// `NF_INET_LOCAL_OUT` (`netfilter.h`): the node's own outgoing packets,
/// where its clients' connections to the VIP start.
pub const NF_INET_LOCAL_OUT: u32 = 3;
/// `NLA_F_NESTED` (`netlink.h`): the attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLM_F_CREATE` (`netlink.h`).
pub const NLM_F_CREATE: u16 = 0x400;
/// `NFT_MSG_NEWRULE` (`nf_tables.h`).
pub const NFT_MSG_NEWRULE: u16 = 6;
/// `NFTA_RULE_TABLE`, `NFTA_RULE_CHAIN`, `NFTA_RULE_EXPRESSIONS` (nested).
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_RULE_USERDATA: u16 = 7;
/// `NFTA_LIST_ELEM`: one expression of the list.
pub const NFTA_LIST_ELEM: u16 = 1;
/// `NFTA_EXPR_NAME` and `NFTA_EXPR_DATA` (nested) of one expression.
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
/// `NFTA_DATA_VALUE`, inside `NFTA_CMP_DATA` and `NFTA_IMMEDIATE_DATA`.
pub const NFTA_DATA_VALUE: u16 = 1;
/// `NLM_F_APPEND` (`netlink.h`): the rule goes at the chain's end.
pub const NLM_F_APPEND: u16 = 0x800;
/// `enum nft_registers`: `NFT_REG_1` and `NFT_REG_2` (the 16-byte
/// registers; a 4-byte address or a 2-byte port fits one).
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG_2: u32 = 2;
/// `enum nft_meta_keys`: the packet's family (`NFPROTO_*`) and its layer-4
/// protocol.
pub const NFT_META_NFPROTO: u32 = 15;
pub const NFT_META_L4PROTO: u32 = 16;
/// `enum nft_payload_bases`.
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
/// `enum nft_cmp_ops`: equal.
pub const NFT_CMP_EQ: u32 = 0;
/// `enum nft_nat_types`: destination NAT.
pub const NFT_NAT_DNAT: u32 = 1;
/// `NFPROTO_IPV4` and `NFPROTO_IPV6` (`netfilter.h`), for a NAT's family
/// and the `nfproto` match.
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
/// `NF_NAT_RANGE_PROTO_SPECIFIED` (`nf_nat.h`): the NAT sets the port too.
pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;

/// One nf_tables expression of a rule, as its `NFTA_*` attributes say it.
/// Integers travel in network byte order; `data` is raw (an address or a
/// port as on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta`: load `key` into `dreg`.
    Meta { key: u32, dreg: u32 },
    /// `cmp`: compare `sreg` with `data` by `op`; the rule stops if false.
    Cmp { sreg: u32, op: u32, data: Vec<u8> },
    /// `payload`: load `len` bytes at `offset` from `base` into `dreg`.
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    /// `counter`: packets and bytes through this point.
    Counter,
    /// `immediate`: put `data` in `dreg`.
    Immediate { dreg: u32, data: Vec<u8> },
    /// `numgen inc mod modulus` into `dreg`: 0, 1, ..., modulus - 1, again.
    Numgen { dreg: u32, modulus: u32 },
    /// `lookup`: `sreg` in the set named `set` (or, within its batch, by
    /// `set_id`); with `dreg` [`NFT_REG_VERDICT`], the map's verdict applies.
    Lookup {
        set: String,
        set_id: u32,
        sreg: u32,
        dreg: u32,
    },
    /// `jump chain`: an immediate verdict.
    Jump { chain: String },
    /// `ct [original|reply] KEY` into `dreg`: a field of the packet's
    /// conntrack entry, of one direction's tuple when `dir` is given.
    Ct {
        key: u32,
        dir: Option<u8>,
        dreg: u32,
    },
    /// `masq`: source NAT to the address of the interface the packet
    /// leaves by.
    Masq,
    /// `nat`: translate to the address in `reg_addr` and the port in
    /// `reg_proto` (both the minimum and maximum of a one-value range).
    Nat {
        kind: u32,
        family: u8,
        reg_addr: u32,
        reg_proto: u32,
        flags: u32,
    },
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Counter => "counter",
            Expr::Immediate { .. } => "immediate",
            Expr::Nat { .. } => "nat",
            Expr::Numgen { .. } => "numgen",
            Expr::Jump { .. } => "immediate",
            Expr::Lookup { .. } => "lookup",
            Expr::Ct { .. } => "ct",
            Expr::Masq => "masq",
        }
    }

    /// The `NFTA_EXPR_DATA` attributes, in the order `nft` writes them.
    fn data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let be = |out: &mut Vec<u8>, ty: u16, v: u32| push_attr(out, ty, &v.to_be_bytes());
        let value = |out: &mut Vec<u8>, ty: u16, data: &[u8]| {
            let mut inner = Vec::new();
            push_attr(&mut inner, NFTA_DATA_VALUE, data);
            push_attr(out, NLA_F_NESTED | ty, &inner);
        };
        match self {
            // NFTA_META_DREG 1, NFTA_META_KEY 2: nft writes the key first.
            Expr::Meta { key, dreg } => {
                be(&mut out, 2, *key);
                be(&mut out, 1, *dreg);
            }
            // NFTA_CMP_SREG 1, NFTA_CMP_OP 2, NFTA_CMP_DATA 3.
            Expr::Cmp { sreg, op, data } => {
                be(&mut out, 1, *sreg);
                be(&mut out, 2, *op);
                value(&mut out, 3, data);
            }
            // NFTA_PAYLOAD_DREG 1, _BASE 2, _OFFSET 3, _LEN 4.
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                be(&mut out, 1, *dreg);
                be(&mut out, 2, *base);
                be(&mut out, 3, *offset);
                be(&mut out, 4, *len);
            }
            Expr::Counter | Expr::Masq => {}
            // NFTA_CT_KEY 2, NFTA_CT_DREG 1, NFTA_CT_DIRECTION 3 (a u8),
            // in nft's order.
            Expr::Ct { key, dir, dreg } => {
                be(&mut out, 2, *key);
                be(&mut out, 1, *dreg);
                if let Some(d) = dir {
                    push_attr(&mut out, 3, &[*d]);
                }
            }
            // NFTA_IMMEDIATE_DREG 1 (the verdict register), then
            // NFTA_IMMEDIATE_DATA 2 holding NFTA_DATA_VERDICT.
            Expr::Jump { chain } => {
                be(&mut out, 1, NFT_REG_VERDICT);
                let mut verdict = Vec::new();
                push_attr(&mut verdict, NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
                push_attr(&mut verdict, NFTA_VERDICT_CHAIN, &c_string(chain));
                let mut data = Vec::new();
                push_attr(&mut data, NLA_F_NESTED | NFTA_DATA_VERDICT, &verdict);
                push_attr(&mut out, NLA_F_NESTED | 2, &data);
            }
            // NFTA_NG_DREG 1, _MODULUS 2, _TYPE 3, _OFFSET 4.
            Expr::Numgen { dreg, modulus } => {
                be(&mut out, 1, *dreg);
                be(&mut out, 2, *modulus);
                be(&mut out, 3, NFT_NG_INCREMENTAL);
                be(&mut out, 4, 0);
            }
            // NFTA_LOOKUP_SREG 2, _DREG 3, _SET 1, _SET_ID 4, in nft's order.
            Expr::Lookup {
                set,
                set_id,
                sreg,
                dreg,
            } => {
                be(&mut out, 2, *sreg);
                be(&mut out, 3, *dreg);
                push_attr(&mut out, 1, &c_string(set));
                be(&mut out, 4, *set_id);
            }
            // NFTA_IMMEDIATE_DREG 1, NFTA_IMMEDIATE_DATA 2.
            Expr::Immediate { dreg, data } => {
                be(&mut out, 1, *dreg);
                value(&mut out, 2, data);
            }
            // NFTA_NAT_TYPE 1, _FAMILY 2, _REG_ADDR_MIN 3, _REG_PROTO_MIN 5,
            // _FLAGS 7.
            Expr::Nat {
                kind,
                family,
                reg_addr,
                reg_proto,
                flags,
            } => {
                be(&mut out, 1, *kind);
                be(&mut out, 2, u32::from(*family));
                be(&mut out, 3, *reg_addr);
                be(&mut out, 5, *reg_proto);
                be(&mut out, 7, *flags);
            }
        }
        out
    }
}

/// `NFT_MSG_DELRULE` (`nf_tables.h`): with a table and chain but no rule
/// handle, every rule of the chain.
pub const NFT_MSG_DELRULE: u16 = 8;
/// `NFT_MSG_NEWSET` and `NFT_MSG_NEWSETELEM` (`nf_tables.h`).
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
/// `NFTA_SET_*`.
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_DESC_SIZE: u16 = 1;
/// `NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP`: a map that lives
/// and dies with the one rule that uses it, and never changes.
const NFT_SET_ANONYMOUS_CONSTANT_MAP: u32 = 0x1 | 0x2 | 0x8;
/// `NFT_DATA_VERDICT`: the map's values are verdicts.
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// nft's data type number for an integer key (its `TYPE_INTEGER`).
const NFT_KEY_TYPE_INTEGER: u32 = 4;
/// The name the kernel numbers for an anonymous map (`__map0`, ...).
pub const ANONYMOUS_MAP: &str = "__map%d";
/// `NFTA_SET_ELEM_LIST_*` and `NFTA_SET_ELEM_*`.
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
/// `NFTA_DATA_VERDICT`, `NFTA_VERDICT_CODE`, `NFTA_VERDICT_CHAIN`.
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;
/// `NFT_JUMP` (`enum nft_verdicts`): -3.
pub(crate) const NFT_JUMP: i32 = -3;
/// `NFT_REG_VERDICT`: a lookup that yields a verdict writes here.
pub const NFT_REG_VERDICT: u32 = 0;
/// `NFT_NG_INCREMENTAL`: `numgen inc`, a counter per rule (round robin).
pub const NFT_NG_INCREMENTAL: u32 = 0;

/// The set's user data `nft` writes for an integer-keyed verdict map (its
/// own type-length-value records: key in host byte order, the key's type).
/// The kernel keeps it opaque; with it, `nft list` prints the map's keys as
/// numbers, the way an operator expects.
pub const NFT_USERDATA_INTEGER_VERDICT_MAP: [u8; 28] = [
    0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x04, 0x08, 0x00, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
];

/// The expressions of `ip daddr VIP tcp dport PORT counter dnat ip to
/// BACKEND:BACKEND_PORT` (`ip6` for IPv6), as `nft` compiles that rule.
/// `vip` and `backend` are of one family, as the manager checks.
pub fn dnat(vip: IpAddr, port: u16, backend: IpAddr, backend_port: u16) -> Vec<Expr> {
    let mut out = match_vip(vip, port);
    out.extend(dnat_to(backend, backend_port));
    out
}

/// The family's number for `meta nfproto`, the NAT, and where its header
/// keeps the destination address.
fn family_of(ip: IpAddr) -> (u8, u32) {
    match ip {
        IpAddr::V4(_) => (NFPROTO_IPV4, 16),
        IpAddr::V6(_) => (NFPROTO_IPV6, 24),
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// `ip daddr VIP tcp dport PORT` (`ip6 daddr` for IPv6): the rule goes on
/// only for the VIP. The family check comes first: the table is `inet`.
pub fn match_vip(vip: IpAddr, port: u16) -> Vec<Expr> {
    let (family, daddr_offset) = family_of(vip);
    let address = octets(vip);
    vec![
        Expr::Meta {
            key: NFT_META_NFPROTO,
            dreg: NFT_REG_1,
        },
        cmp_eq(vec![family]),
        Expr::Payload {
            dreg: NFT_REG_1,
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset: daddr_offset,
            len: u32::try_from(address.len()).unwrap_or(16),
        },
        cmp_eq(address),
        Expr::Meta {
            key: NFT_META_L4PROTO,
            dreg: NFT_REG_1,
        },
        cmp_eq(vec![IPPROTO_TCP]),
        Expr::Payload {
            dreg: NFT_REG_1,
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            // The destination port in the TCP header.
            offset: 2,
            len: 2,
        },
        cmp_eq(port.to_be_bytes().to_vec()),
    ]
}

/// `counter dnat ip to BACKEND:PORT` (`ip6 to [BACKEND]:PORT`): a
/// backend's chain (its counter counts the connections sent to it: a NAT
/// chain sees first packets only).
pub fn dnat_to(backend: IpAddr, port: u16) -> Vec<Expr> {
    let (family, _) = family_of(backend);
    vec![
        Expr::Counter,
        Expr::Immediate {
            // A register holds 16 bytes: an IPv6 address fits one.
            dreg: NFT_REG_1,
            data: octets(backend),
        },
        Expr::Immediate {
            dreg: NFT_REG_2,
            data: port.to_be_bytes().to_vec(),
        },
        Expr::Nat {
            kind: NFT_NAT_DNAT,
            family,
            reg_addr: NFT_REG_1,
            reg_proto: NFT_REG_2,
            flags: NF_NAT_RANGE_PROTO_SPECIFIED,
        },
    ]
}

fn cmp_eq(data: Vec<u8>) -> Expr {
    Expr::Cmp {
        sreg: NFT_REG_1,
        op: NFT_CMP_EQ,
        data,
    }
}

/// `enum nft_ct_keys`: the entry's direction, a tuple's layer-4 ports and
/// its addresses (IPv4, IPv6).
pub const NFT_CT_DIRECTION: u32 = 1;
pub const NFT_CT_PROTO_SRC: u32 = 11;
pub const NFT_CT_PROTO_DST: u32 = 12;
pub const NFT_CT_SRC_IP: u32 = 19;
pub const NFT_CT_DST_IP: u32 = 20;
pub const NFT_CT_SRC_IP6: u32 = 21;
pub const NFT_CT_DST_IP6: u32 = 22;
/// `enum ip_conntrack_dir`.
pub const IP_CT_DIR_ORIGINAL: u8 = 0;
pub const IP_CT_DIR_REPLY: u8 = 1;

/// `meta l4proto tcp ct original ip daddr VIP ct original proto-dst PORT
/// ct reply ip saddr BACKEND ct reply proto-src PORT ct direction DIR
/// counter` (`ip6` for IPv6): counts every packet of the connections
/// through `vip` that the NAT sent to `backend`, in direction `dir` (a
/// filter chain sees every packet, a NAT chain only the first).
pub fn count_through(vip: SocketAddr, backend: SocketAddr, dir: u8) -> Vec<Expr> {
    let (dst_key, src_key) = match vip.ip() {
        IpAddr::V4(_) => (NFT_CT_DST_IP, NFT_CT_SRC_IP),
        IpAddr::V6(_) => (NFT_CT_DST_IP6, NFT_CT_SRC_IP6),
    };
    let ct = |key, dir| Expr::Ct {
        key,
        dir,
        dreg: NFT_REG_1,
    };
    vec![
        Expr::Meta {
            key: NFT_META_L4PROTO,
            dreg: NFT_REG_1,
        },
        cmp_eq(vec![IPPROTO_TCP]),
        ct(dst_key, Some(IP_CT_DIR_ORIGINAL)),
        cmp_eq(octets(vip.ip())),
        ct(NFT_CT_PROTO_DST, Some(IP_CT_DIR_ORIGINAL)),
        cmp_eq(vip.port().to_be_bytes().to_vec()),
        ct(src_key, Some(IP_CT_DIR_REPLY)),
        cmp_eq(octets(backend.ip())),
        ct(NFT_CT_PROTO_SRC, Some(IP_CT_DIR_REPLY)),
        cmp_eq(backend.port().to_be_bytes().to_vec()),
        ct(NFT_CT_DIRECTION, None),
        cmp_eq(vec![dir]),
        Expr::Counter,
    ]
}

/// `ct original ip daddr VIP masquerade` (`ip6` for IPv6): the source NAT
/// of connections that came in for the outside VIP and leave for another
/// node's apiserver, so that its replies come back through us (to be
/// translated back) instead of going to the client from the wrong address.
/// A connection to this node's own apiserver is delivered locally and never
/// reaches the postrouting hook.
pub fn masquerade_from(vip: IpAddr) -> Vec<Expr> {
    let key = match vip {
        IpAddr::V4(_) => NFT_CT_DST_IP,
        IpAddr::V6(_) => NFT_CT_DST_IP6,
    };
    vec![
        Expr::Ct {
            key,
            dir: Some(IP_CT_DIR_ORIGINAL),
            dreg: NFT_REG_1,
        },
        cmp_eq(octets(vip)),
        Expr::Masq,
    ]
}

/// `numgen inc mod N vmap @map`: the round robin of a virtual server's
/// chain over the jump map `set_id` of the same batch (see
/// [`Batch::new_jump_map`]).
pub fn round_robin(set_id: u32, modulus: u32) -> Vec<Expr> {
    vec![
        Expr::Numgen {
            dreg: NFT_REG_1,
            modulus,
        },
        Expr::Lookup {
            set: ANONYMOUS_MAP.into(),
            set_id,
            sreg: NFT_REG_1,
            dreg: NFT_REG_VERDICT,
        },
    ]
}

/// `IPPROTO_TCP`.
const IPPROTO_TCP: u8 = 6;

/// `NFPROTO_INET`: one table for IPv4 and IPv6.
pub const NFPROTO_INET: u8 = 1;
/// `NFPROTO_UNSPEC`, used by the batch markers.
const NFPROTO_UNSPEC: u8 = 0;
const NFNETLINK_V0: u8 = 0;
/// `NLM_F_REQUEST` (`netlink.h`).
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK` (`netlink.h`).
pub const NLM_F_ACK: u16 = 0x4;

/// Accumulates the messages of one batch with consecutive sequence numbers.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// The sequence numbers of the inner messages: each asks for an ack.
    inner: Vec<u32>,
}

impl Batch {
    /// Starts a batch whose `NFNL_MSG_BATCH_BEGIN` carries sequence `first_seq`.
    pub fn new(first_seq: u32) -> Self {
        let mut batch = Self {
            buf: Vec::new(),
            seq: first_seq,
            inner: Vec::new(),
        };
        batch.message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        batch
    }

    /// Adds `NFT_MSG_NEWTABLE` for an `inet` table with no flags (in
    /// particular not `NFT_TABLE_F_OWNER`: our rules must outlive the daemon).
    pub fn new_table(&mut self, name: &str) {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_TABLE_NAME, &c_string(name));
        push_attr(&mut attrs, NFTA_TABLE_FLAGS, &0u32.to_be_bytes());
        self.create(NFT_MSG_NEWTABLE, 0, &attrs);
    }

    /// Adds `NFT_MSG_NEWCHAIN` for a base chain of `table`: its `chain_type`
    /// (`nat`, `filter`), on `hook` at `priority`. Hook number and priority
    /// travel in network byte order.
    pub fn new_base_chain(
        &mut self,
        table: &str,
        name: &str,
        chain_type: &str,
        hook: u32,
        priority: i32,
    ) {
        let mut hook_attrs = Vec::new();
        push_attr(&mut hook_attrs, NFTA_HOOK_HOOKNUM, &hook.to_be_bytes());
        push_attr(&mut hook_attrs, NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_CHAIN_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_CHAIN_NAME, &c_string(name));
        push_attr(&mut attrs, NFTA_CHAIN_TYPE, &c_string(chain_type));
        push_attr(&mut attrs, NLA_F_NESTED | NFTA_CHAIN_HOOK, &hook_attrs);
        self.create(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &attrs);
    }

    /// Adds `NFT_MSG_NEWRULE`: `exprs` appended to `chain` of `table`.
    pub fn new_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        self.new_rule_commented(table, chain, exprs, None);
    }

    /// [`Batch::new_rule`] with a comment: `nft list` prints it, and our
    /// read-back finds its rules by it.
    pub fn new_rule_commented(
        &mut self,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
    ) {
        let mut list = Vec::new();
        for e in exprs {
            let mut elem = Vec::new();
            push_attr(&mut elem, NFTA_EXPR_NAME, &c_string(e.name()));
            push_attr(&mut elem, NLA_F_NESTED | NFTA_EXPR_DATA, &e.data());
            push_attr(&mut list, NLA_F_NESTED | NFTA_LIST_ELEM, &elem);
        }
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_RULE_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_RULE_CHAIN, &c_string(chain));
        push_attr(&mut attrs, NLA_F_NESTED | NFTA_RULE_EXPRESSIONS, &list);
        if let Some(c) = comment {
            push_attr(&mut attrs, NFTA_RULE_USERDATA, &comment_userdata(c));
        }
        self.create(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &attrs);
    }

    /// Adds an anonymous constant map from the integers `0..targets.len()`
    /// to `jump target` (`NFT_MSG_NEWSET`, then `NFT_MSG_NEWSETELEM`), for a
    /// rule of the same batch to find by `set_id` ([`Expr::Lookup`]): the
    /// round robin over a virtual server's backends.
    pub fn new_jump_map(&mut self, table: &str, set_id: u32, targets: &[&str], userdata: &[u8]) {
        let count = u32::try_from(targets.len()).unwrap_or(u32::MAX);
        let mut desc = Vec::new();
        push_attr(&mut desc, NFTA_SET_DESC_SIZE, &count.to_be_bytes());
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_SET_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_SET_NAME, &c_string(ANONYMOUS_MAP));
        push_attr(
            &mut attrs,
            NFTA_SET_FLAGS,
            &NFT_SET_ANONYMOUS_CONSTANT_MAP.to_be_bytes(),
        );
        push_attr(
            &mut attrs,
            NFTA_SET_KEY_TYPE,
            &NFT_KEY_TYPE_INTEGER.to_be_bytes(),
        );
        push_attr(&mut attrs, NFTA_SET_KEY_LEN, &4u32.to_be_bytes());
        push_attr(
            &mut attrs,
            NFTA_SET_DATA_TYPE,
            &NFT_DATA_VERDICT.to_be_bytes(),
        );
        push_attr(&mut attrs, NFTA_SET_DATA_LEN, &0u32.to_be_bytes());
        push_attr(&mut attrs, NFTA_SET_ID, &set_id.to_be_bytes());
        push_attr(&mut attrs, NLA_F_NESTED | NFTA_SET_DESC, &desc);
        if !userdata.is_empty() {
            push_attr(&mut attrs, NFTA_SET_USERDATA, userdata);
        }
        self.create(NFT_MSG_NEWSET, NLM_F_CREATE, &attrs);

        let mut elements = Vec::new();
        for (i, target) in (0u32..).zip(targets) {
            // The key as numgen leaves it in the register: host byte order.
            let mut key_value = Vec::new();
            push_attr(&mut key_value, NFTA_DATA_VALUE, &i.to_ne_bytes());
            let mut verdict = Vec::new();
            push_attr(&mut verdict, NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
            push_attr(&mut verdict, NFTA_VERDICT_CHAIN, &c_string(target));
            let mut data = Vec::new();
            push_attr(&mut data, NLA_F_NESTED | NFTA_DATA_VERDICT, &verdict);
            let mut elem = Vec::new();
            push_attr(&mut elem, NLA_F_NESTED | NFTA_SET_ELEM_KEY, &key_value);
            push_attr(&mut elem, NLA_F_NESTED | NFTA_SET_ELEM_DATA, &data);
            // nft numbers the elements 1, 2, ... where rules' expressions
            // are all NFTA_LIST_ELEM; the kernel reads both alike.
            let nth = u16::try_from(i + 1).unwrap_or(NFTA_LIST_ELEM);
            push_attr(&mut elements, NLA_F_NESTED | nth, &elem);
        }
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &c_string(ANONYMOUS_MAP));
        push_attr(&mut attrs, NFTA_SET_ELEM_LIST_SET_ID, &set_id.to_be_bytes());
        push_attr(
            &mut attrs,
            NLA_F_NESTED | NFTA_SET_ELEM_LIST_ELEMENTS,
            &elements,
        );
        self.create(NFT_MSG_NEWSETELEM, NLM_F_CREATE, &attrs);
    }

    /// Adds `NFT_MSG_NEWCHAIN` for a regular chain (no hook): a target of
    /// jumps.
    pub fn new_chain(&mut self, table: &str, name: &str) {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_CHAIN_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_CHAIN_NAME, &c_string(name));
        self.create(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &attrs);
    }

    /// Adds `NFT_MSG_DELRULE` for every rule of `chain` (`nft flush
    /// chain`): with the chain's new rules after it in the same batch, a
    /// reader never sees the chain empty or half changed.
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_RULE_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_RULE_CHAIN, &c_string(chain));
        self.create(NFT_MSG_DELRULE, 0, &attrs);
    }

    /// Adds `NFT_MSG_DELRULE` of one rule, by its handle.
    pub fn del_rule(&mut self, table: &str, chain: &str, handle: u64) {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_RULE_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_RULE_CHAIN, &c_string(chain));
        push_attr(&mut attrs, NFTA_RULE_HANDLE, &handle.to_be_bytes());
        self.create(NFT_MSG_DELRULE, 0, &attrs);
    }

    /// Adds `NFT_MSG_DELCHAIN`: the kernel refuses it (and so the whole
    /// batch) unless the chain is empty and nothing jumps to it, by then.
    pub fn del_chain(&mut self, table: &str, name: &str) {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_CHAIN_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_CHAIN_NAME, &c_string(name));
        self.create(NFT_MSG_DELCHAIN, 0, &attrs);
    }

    /// Adds `NFT_MSG_DELTABLE`: the table and everything in it, in one
    /// step (cleanup removes ours and nothing else).
    pub fn del_table(&mut self, name: &str) {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_TABLE_NAME, &c_string(name));
        self.create(NFT_MSG_DELTABLE, 0, &attrs);
    }

    /// The sequence numbers of the messages that ask for an ack, in order.
    pub fn acked(&self) -> &[u32] {
        &self.inner
    }

    /// One nf_tables message of the `inet` family that asks for its ack,
    /// with `flags` beside `NLM_F_REQUEST`.
    fn create(&mut self, msg: u16, flags: u16, attrs: &[u8]) {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        self.message(
            ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_INET,
            0,
            attrs,
        );
    }

    /// Closes the batch and returns the bytes to send in one `sendmsg`.
    pub fn finish(mut self) -> Vec<u8> {
        self.message(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        self.buf
    }

    /// One netlink header (`nlmsg_pid` 0: the kernel fills it in), the
    /// `struct nfgenmsg` (res_id in network byte order), then `attrs`.
    fn message(&mut self, ty: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]) {
        let len = u32::try_from(16 + 4 + attrs.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, NFNETLINK_V0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(attrs);
        if flags & NLM_F_ACK != 0 {
            self.inner.push(self.seq);
        }
        self.seq = self.seq.wrapping_add(1);
    }
}

/// `NFTNL_UDATA_RULE_COMMENT` (libnftnl's user data records, which the
/// kernel keeps opaque): type, length, then the NUL-terminated text. `nft`
/// prints such a record as the rule's `comment`.
const UDATA_RULE_COMMENT: u8 = 0;

/// The user data of a rule with `comment` (longer than 254 bytes: cut,
/// as nft limits comments too).
fn comment_userdata(comment: &str) -> Vec<u8> {
    let mut text = c_string(comment);
    text.truncate(254);
    if let Some(last) = text.last_mut() {
        *last = 0;
    }
    let mut out = vec![
        UDATA_RULE_COMMENT,
        u8::try_from(text.len()).unwrap_or(u8::MAX),
    ];
    out.extend_from_slice(&text);
    out
}

/// A name as the kernel reads it: NUL-terminated.
pub(crate) fn c_string(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out
}

/// One netlink attribute, padded to 4 bytes (`NLA_ALIGN`).
pub(crate) fn push_attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests;
