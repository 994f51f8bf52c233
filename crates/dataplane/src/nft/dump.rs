//! Pure readers of what nf_tables dumps (no sockets): our table's rules and
//! the elements of a rule's anonymous map. Only what the read-back needs is
//! decoded; an attribute we do not know is skipped, a malformed one is a
//! description of the problem.

use super::codec::{
    NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFT_JUMP, NFTA_DATA_VALUE, NFTA_DATA_VERDICT,
    NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_HANDLE, NFTA_RULE_TABLE, NFTA_RULE_USERDATA, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NLM_F_REQUEST, c_string, push_attr,
};
use crate::nl;

/// `NFT_MSG_GETRULE` and `NFT_MSG_GETSETELEM` (`nf_tables.h`).
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_GETSETELEM: u16 = 13;
/// What a rule dump answers with (`NFT_MSG_NEWRULE`) and a set element
/// dump (`NFT_MSG_NEWSETELEM`), with the subsystem in the high byte.
pub const RULE_MESSAGE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 6;
pub const SET_ELEM_MESSAGE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 12;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`, `netlink.h`).
const NLM_F_DUMP: u16 = 0x300;

const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

/// The request for every rule of `table` (the kernel filters by table, so
/// other tables' rules, kube-proxy's thousands among them, are never read).
pub fn rules_request(seq: u32, table: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_attr(&mut attrs, NFTA_RULE_TABLE, &c_string(table));
    request(NFT_MSG_GETRULE, seq, &attrs)
}

/// The request for the elements of `set` in `table`.
pub fn set_elems_request(seq: u32, table: &str, set: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
    push_attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &c_string(set));
    request(NFT_MSG_GETSETELEM, seq, &attrs)
}

fn request(msg: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | msg;
    let len = u32::try_from(16 + 4 + attrs.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(20 + attrs.len());
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
    out.extend_from_slice(attrs);
    out
}

/// One rule as the kernel holds it: where it is, and what the read-back
/// looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub table: String,
    pub chain: String,
    pub handle: u64,
    /// The comment record of its user data, as `nft` prints it.
    pub comment: Option<String>,
    /// The first `counter`'s (packets, bytes).
    pub counter: Option<(u64, u64)>,
    /// The set a `lookup` reads (the kernel's name for an anonymous map,
    /// such as `__map0`).
    pub lookup_set: Option<String>,
    /// The chains an `immediate` jumps to.
    pub jumps: Vec<String>,
    /// The values `immediate`s load (a DNAT's address, then its port).
    pub immediates: Vec<Vec<u8>>,
    /// The names of its expressions, in order.
    pub exprs: Vec<String>,
}

/// Reads one `NFT_MSG_NEWRULE` payload (after the netlink header).
pub fn parse_rule(payload: &[u8]) -> Result<Rule, String> {
    let attrs = payload
        .get(4..)
        .ok_or("rule message shorter than its nfgenmsg")?;
    let mut rule = Rule::default();
    for (ty, value) in nl::attributes(attrs)? {
        match ty {
            NFTA_RULE_TABLE => rule.table = string(value, "rule table")?,
            NFTA_RULE_CHAIN => rule.chain = string(value, "rule chain")?,
            NFTA_RULE_HANDLE => rule.handle = be_u64(value, "rule handle")?,
            NFTA_RULE_USERDATA => rule.comment = comment(value)?,
            NFTA_RULE_EXPRESSIONS => {
                for (ty, elem) in nl::attributes(value)? {
                    if ty == NFTA_LIST_ELEM {
                        expression(elem, &mut rule)?;
                    }
                }
            }
            _ => {}
        }
    }
    if rule.chain.is_empty() {
        return Err("rule without its chain".into());
    }
    Ok(rule)
}

fn expression(elem: &[u8], rule: &mut Rule) -> Result<(), String> {
    let mut name = None;
    let mut data: &[u8] = &[];
    for (ty, value) in nl::attributes(elem)? {
        match ty {
            NFTA_EXPR_NAME => name = Some(string(value, "expression name")?),
            NFTA_EXPR_DATA => data = value,
            _ => {}
        }
    }
    let name = name.ok_or("expression without its name")?;
    let attrs = nl::attributes(data)?;
    match name.as_str() {
        "counter" if rule.counter.is_none() => {
            let mut packets = 0;
            let mut bytes = 0;
            for (ty, v) in &attrs {
                match *ty {
                    NFTA_COUNTER_PACKETS => packets = be_u64(v, "counter packets")?,
                    NFTA_COUNTER_BYTES => bytes = be_u64(v, "counter bytes")?,
                    _ => {}
                }
            }
            rule.counter = Some((packets, bytes));
        }
        "lookup" => {
            for (ty, v) in &attrs {
                if *ty == NFTA_LOOKUP_SET {
                    rule.lookup_set = Some(string(v, "lookup set")?);
                }
            }
        }
        "immediate" => {
            for (ty, v) in &attrs {
                if *ty != NFTA_IMMEDIATE_DATA {
                    continue;
                }
                for (ty, d) in nl::attributes(v)? {
                    match ty {
                        NFTA_DATA_VALUE => rule.immediates.push(d.to_vec()),
                        NFTA_DATA_VERDICT => {
                            if let Some(chain) = jump_target(d)? {
                                rule.jumps.push(chain);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
    rule.exprs.push(name);
    Ok(())
}

/// The chain a verdict jumps to; None for any other verdict.
fn jump_target(verdict: &[u8]) -> Result<Option<String>, String> {
    let mut code = None;
    let mut chain = None;
    for (ty, v) in nl::attributes(verdict)? {
        match ty {
            NFTA_VERDICT_CODE => code = Some(be_u32(v, "verdict code")? as i32),
            NFTA_VERDICT_CHAIN => chain = Some(string(v, "verdict chain")?),
            _ => {}
        }
    }
    Ok(if code == Some(NFT_JUMP) { chain } else { None })
}

/// Reads one `NFT_MSG_NEWSETELEM` payload: the jump target of each element
/// of a verdict map, with its key (as the map holds it: host byte order).
pub fn parse_set_elems(payload: &[u8]) -> Result<Vec<(u32, Option<String>)>, String> {
    let attrs = payload
        .get(4..)
        .ok_or("set element message shorter than its nfgenmsg")?;
    let mut out = Vec::new();
    for (ty, value) in nl::attributes(attrs)? {
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, elem) in nl::attributes(value)? {
            let mut key = None;
            let mut target = None;
            for (ty, v) in nl::attributes(elem)? {
                match ty {
                    NFTA_SET_ELEM_KEY => {
                        for (ty, d) in nl::attributes(v)? {
                            if ty == NFTA_DATA_VALUE {
                                let b: [u8; 4] = d
                                    .try_into()
                                    .map_err(|_| format!("map key of {} bytes, not 4", d.len()))?;
                                key = Some(u32::from_ne_bytes(b));
                            }
                        }
                    }
                    NFTA_SET_ELEM_DATA => {
                        for (ty, d) in nl::attributes(v)? {
                            if ty == NFTA_DATA_VERDICT {
                                target = jump_target(d)?;
                            }
                        }
                    }
                    _ => {}
                }
            }
            out.push((key.ok_or("map element without its key")?, target));
        }
    }
    Ok(out)
}

/// The comment record of a rule's user data (libnftnl's type-length-value
/// records; other records are skipped).
fn comment(udata: &[u8]) -> Result<Option<String>, String> {
    let mut rest = udata;
    while let [ty, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail
            .get(..len)
            .ok_or_else(|| format!("user data record of {len} bytes, {} left", tail.len()))?;
        if *ty == 0 {
            return string(value, "rule comment").map(Some);
        }
        rest = &tail[len..];
    }
    Ok(None)
}

fn string(b: &[u8], what: &str) -> Result<String, String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn be_u32(b: &[u8], what: &str) -> Result<u32, String> {
    let a: [u8; 4] = b
        .try_into()
        .map_err(|_| format!("{what} of {} bytes, not 4", b.len()))?;
    Ok(u32::from_be_bytes(a))
}

fn be_u64(b: &[u8], what: &str) -> Result<u64, String> {
    let a: [u8; 8] = b
        .try_into()
        .map_err(|_| format!("{what} of {} bytes, not 8", b.len()))?;
    Ok(u64::from_be_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The payloads (after the 16-byte netlink header) of what the kernel
    // (6.18, the build host) answered `nft --handle list table inet
    // bcs-apiserver-proxy`, captured with `unshare -rn strace -f -e
    // trace=recvmsg -s 65535 -xx nft ...` after:
    //   nft add table inet bcs-apiserver-proxy
    //   nft add chain inet bcs-apiserver-proxy vip; ... b0; ... b1
    //   nft add rule inet bcs-apiserver-proxy b0 tcp dport 6443 counter \
    //       dnat ip to 192.168.1.10:6443 comment '"backend 192.168.1.10:6443"'
    //   nft add rule inet bcs-apiserver-proxy vip numgen inc mod 2 \
    //       vmap "{ 0 : jump b0, 1 : jump b1 }"
    // The message lengths the kernel gave (480 and 140) are these plus 16.
    const RULE_PAYLOAD: [u8; 464] = [
        0x01, 0x00, 0x00, 0x07, 0x18, 0x00, 0x01, 0x00, 0x62, 0x63, 0x73, 0x2d, 0x61, 0x70, 0x69,
        0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0x2d, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x00, 0x07, 0x00,
        0x02, 0x00, 0x62, 0x30, 0x00, 0x00, 0x0c, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x04, 0x80, 0x01, 0x04, 0x00, 0x24, 0x00, 0x01, 0x00, 0x09, 0x00, 0x01, 0x00,
        0x6d, 0x65, 0x74, 0x61, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x02, 0x00, 0x08, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x00, 0x10, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2c, 0x00,
        0x01, 0x00, 0x08, 0x00, 0x01, 0x00, 0x63, 0x6d, 0x70, 0x00, 0x20, 0x00, 0x02, 0x00, 0x08,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x03, 0x00, 0x05, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00, 0x00, 0x34, 0x00, 0x01,
        0x00, 0x0c, 0x00, 0x01, 0x00, 0x70, 0x61, 0x79, 0x6c, 0x6f, 0x61, 0x64, 0x00, 0x24, 0x00,
        0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x02, 0x2c, 0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x00, 0x63, 0x6d, 0x70,
        0x00, 0x20, 0x00, 0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x03, 0x00, 0x06, 0x00, 0x01, 0x00, 0x19,
        0x2b, 0x00, 0x00, 0x2c, 0x00, 0x01, 0x00, 0x0c, 0x00, 0x01, 0x00, 0x63, 0x6f, 0x75, 0x6e,
        0x74, 0x65, 0x72, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x2c, 0x00, 0x01, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x69, 0x6d, 0x6d, 0x65, 0x64,
        0x69, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00, 0x18, 0x00, 0x02, 0x00, 0x08, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0xc0, 0xa8, 0x01,
        0x0a, 0x2c, 0x00, 0x01, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x69, 0x6d, 0x6d, 0x65, 0x64, 0x69,
        0x61, 0x74, 0x65, 0x00, 0x00, 0x00, 0x18, 0x00, 0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x0c, 0x00, 0x02, 0x00, 0x06, 0x00, 0x01, 0x00, 0x19, 0x2b, 0x00, 0x00,
        0x48, 0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x00, 0x6e, 0x61, 0x74, 0x00, 0x3c, 0x00, 0x02,
        0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x04, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x06, 0x00,
        0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x03, 0x20, 0x00, 0x07,
        0x00, 0x00, 0x1a, 0x62, 0x61, 0x63, 0x6b, 0x65, 0x6e, 0x64, 0x20, 0x31, 0x39, 0x32, 0x2e,
        0x31, 0x36, 0x38, 0x2e, 0x31, 0x2e, 0x31, 0x30, 0x3a, 0x36, 0x34, 0x34, 0x33, 0x00,
    ];
    const SET_ELEM_PAYLOAD: [u8; 124] = [
        0x01, 0x00, 0x00, 0x07, 0x18, 0x00, 0x01, 0x00, 0x62, 0x63, 0x73, 0x2d, 0x61, 0x70, 0x69,
        0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0x2d, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x00, 0x0b, 0x00,
        0x02, 0x00, 0x5f, 0x5f, 0x6d, 0x61, 0x70, 0x30, 0x00, 0x00, 0x54, 0x00, 0x03, 0x00, 0x28,
        0x00, 0x01, 0x00, 0x0c, 0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x18, 0x00, 0x02, 0x00, 0x14, 0x00, 0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff,
        0xfd, 0x07, 0x00, 0x02, 0x00, 0x62, 0x31, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x0c, 0x00,
        0x01, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0x00, 0x02, 0x00, 0x14,
        0x00, 0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 0xfd, 0x07, 0x00, 0x02, 0x00,
        0x62, 0x30, 0x00, 0x00,
    ];

    #[test]
    fn a_dumped_rule_reads_as_the_kernel_holds_it() {
        let rule = parse_rule(&RULE_PAYLOAD).expect("parses");
        assert_eq!(rule.table, "bcs-apiserver-proxy");
        assert_eq!(rule.chain, "b0");
        assert_eq!(rule.handle, 4);
        assert_eq!(rule.comment.as_deref(), Some("backend 192.168.1.10:6443"));
        assert_eq!(rule.counter, Some((0, 0)));
        assert_eq!(
            rule.immediates,
            [vec![192, 168, 1, 10], 6443u16.to_be_bytes().to_vec()]
        );
        assert!(rule.jumps.is_empty());
        assert_eq!(
            rule.exprs,
            [
                "meta",
                "cmp",
                "payload",
                "cmp",
                "counter",
                "immediate",
                "immediate",
                "nat"
            ]
        );
    }

    #[test]
    fn a_dumped_map_reads_as_its_jumps() {
        let elems = parse_set_elems(&SET_ELEM_PAYLOAD).expect("parses");
        assert_eq!(
            elems,
            [(1, Some("b1".to_string())), (0, Some("b0".to_string()))]
        );
    }

    #[test]
    fn a_cut_dump_is_an_error_never_a_panic() {
        for n in 0..RULE_PAYLOAD.len() {
            let _ = parse_rule(&RULE_PAYLOAD[..n]);
        }
        for n in 0..SET_ELEM_PAYLOAD.len() {
            let _ = parse_set_elems(&SET_ELEM_PAYLOAD[..n]);
        }
        assert!(parse_rule(&RULE_PAYLOAD[..40]).is_err());
    }

    #[test]
    fn requests_filter_by_our_table() {
        let r = rules_request(7, "bcs-apiserver-proxy");
        assert_eq!(
            u16::from_ne_bytes([r[4], r[5]]),
            (10 << 8) | NFT_MSG_GETRULE
        );
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(r.len(), 20 + 24);
        let attrs = nl::attributes(&r[20..]).expect("attributes");
        assert_eq!(attrs, [(NFTA_RULE_TABLE, &b"bcs-apiserver-proxy\0"[..])]);
    }

    proptest::proptest! {
        #![proptest_config(apiserver_proxy_testkit::fuzz::parser_config(2_000))]
        /// The kernel's answers mutated at random (a byte set, the rest cut
        /// anywhere) or replaced by noise: an error or a value, never a panic.
        #[test]
        fn mutated_dumps_never_panic(
            at in 0usize..512,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..512,
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            for golden in [&RULE_PAYLOAD[..], &SET_ELEM_PAYLOAD[..]] {
                let b = apiserver_proxy_testkit::fuzz::mutate(golden, at, byte, cut);
                let _ = parse_rule(&b);
                let _ = parse_set_elems(&b);
            }
            let _ = parse_rule(&noise);
            let _ = parse_set_elems(&noise);
        }
    }
}
