//! Our nf_tables table as virtual servers: what the manager reads and
//! writes, in the layout of `docs/nftables.md`.
//!
//! ```text
//! table inet bcs-apiserver-proxy {
//!   chain output {                       # type nat hook output priority -100
//!     ip daddr VIP tcp dport PORT jump vip-VIP-PORT   comment "vip VIP:PORT rr"
//!   }
//!   chain vip-VIP-PORT {                 # one slot per unit of weight
//!     numgen inc mod 3 vmap { 0 : jump be-…-A, 1 : jump be-…-B, 2 : jump be-…-C }
//!   }
//!   chain be-VIP-PORT-A-PORT {           # one per backend
//!     counter dnat ip to A:PORT          comment "backend A:PORT"
//!   }
//! }
//! ```
//!
//! Every write is one batch, so a reader (a packet, or `nft list`) sees the
//! virtual server before or after a change, never in between. A weight is
//! the number of the map's slots that jump to the backend's chain: weight 0
//! has no slot (no new connection; conntrack keeps established ones on
//! their backend, as IPVS does). What the read finds is what the kernel
//! does: a rule someone deleted, or changed to send elsewhere, reads as the
//! missing piece, which the manager's plan then puts back.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::client::Nft;
use super::codec::{self, Batch, Expr, NF_INET_LOCAL_OUT, NFT_USERDATA_INTEGER_VERDICT_MAP};
use super::dump::{self, RULE_MESSAGE, Rule, SET_ELEM_MESSAGE};
use crate::error::{Error, Result};

/// Our table's name: the one object in nf_tables we ever address.
pub const TABLE: &str = "bcs-apiserver-proxy";
/// The base chain on the output hook (the node's own connections).
pub const OUTPUT_CHAIN: &str = "output";
/// Filter chains that count every packet of our connections: on the output
/// hook those the node sends (IPVS's "in"), on the input hook the replies
/// (IPVS's "out"). A NAT chain sees a connection's first packet only.
pub const COUNT_IN_CHAIN: &str = "count-in";
pub const COUNT_OUT_CHAIN: &str = "count-out";
/// `NF_INET_LOCAL_IN` (`netfilter.h`).
const NF_INET_LOCAL_IN: u32 = 1;
/// `NF_INET_PRE_ROUTING` and `NF_INET_POST_ROUTING` (`netfilter.h`).
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
/// `NF_IP_PRI_NAT_SRC`: where source NAT runs on the postrouting hook.
const NAT_SRC_PRIORITY: i32 = 100;
/// The outside control-plane VIP's chains: the clients off the node come in
/// through prerouting (the output chain sees the node's own connections
/// only), and leave for another node's apiserver through postrouting,
/// where they are masqueraded.
pub const PREROUTING_CHAIN: &str = "prerouting";
pub const POSTROUTING_CHAIN: &str = "postrouting";
/// `NF_IP_PRI_NAT_DST`: where destination NAT runs on the output hook.
const NAT_DST_PRIORITY: i32 = -100;
/// The most map slots one virtual server may have (the sum of weights);
/// the manager uses weights 0 and 1.
pub const MAX_SLOTS: u32 = 4096;
/// The schedulers this dataplane has: `numgen inc` is a round robin, and
/// weights are slots, so `wrr` is the same map.
pub const SCHEDULERS: &[&str] = &["rr", "wrr"];

/// A virtual server in our table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftService {
    pub vip: SocketAddr,
    pub scheduler: String,
    pub backends: BTreeMap<SocketAddr, NftBackend>,
}

/// One backend of a virtual server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NftBackend {
    pub weight: u32,
    /// Connections sent to it (its chain's counter: a NAT chain sees the
    /// first packet of each connection only) and those packets' bytes.
    pub connections: u64,
    pub first_bytes: u64,
    /// Every packet and byte of those connections, client to backend
    /// (`in`) and back (`out`), from the counting chains.
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
}

/// What the read found of one virtual server, with the handles a write
/// needs.
#[derive(Debug, Clone)]
struct Found {
    service: NftService,
    jump_handle: u64,
    /// Backends whose chain holds anything, sound or not.
    chains: Vec<SocketAddr>,
}

/// The counting rules of one VIP, by (backend, `in`?): each rule's handle
/// and counter (more than one only if something went wrong).
type Counts = BTreeMap<(SocketAddr, bool), Vec<(u64, (u64, u64))>>;

fn count_rules(rules: &[Rule], vip: SocketAddr) -> Counts {
    let mut out: Counts = BTreeMap::new();
    for cr in rules {
        let inbound = match cr.chain.as_str() {
            COUNT_IN_CHAIN => true,
            COUNT_OUT_CHAIN => false,
            _ => continue,
        };
        if let Some(backend) = cr
            .comment
            .as_deref()
            .and_then(|c| parse_count_comment(c, inbound, vip))
        {
            out.entry((backend, inbound))
                .or_default()
                .push((cr.handle, cr.counter.unwrap_or_default()));
        }
    }
    out
}

/// The nf_tables socket, speaking in virtual servers.
#[derive(Debug)]
pub struct NftTable {
    nft: Nft,
}

impl NftTable {
    pub fn connect() -> Result<NftTable> {
        Ok(NftTable {
            nft: Nft::connect()?,
        })
    }

    /// Asks nf_tables one question: a kernel without it, or a caller
    /// without CAP_NET_ADMIN, fails here before anything changes.
    pub fn check(&mut self) -> Result<()> {
        self.rules().map(|_| ())
    }

    /// The virtual servers of `vips` our table holds.
    pub fn read(&mut self, vips: &[SocketAddr]) -> Result<Vec<NftService>> {
        let found = self.found()?;
        Ok(vips
            .iter()
            .filter_map(|v| found.get(v).map(|f| f.service.clone()))
            .collect())
    }

    /// Every virtual server in our table.
    pub fn list(&mut self) -> Result<Vec<SocketAddr>> {
        Ok(self.found()?.into_keys().collect())
    }

    /// Makes our table hold `want` exactly (its other virtual servers stay
    /// as they are), in one batch.
    pub fn write(&mut self, want: &NftService) -> Result<()> {
        self.update(want.vip, |_| Some(want.clone()))
    }

    /// Reads the virtual server `vip` (None if our table has none), lets
    /// `change` say what it must become (None: leave it), and writes that
    /// in one batch: one dump of our rules for the read and the write.
    pub fn update(
        &mut self,
        vip: SocketAddr,
        change: impl FnOnce(Option<NftService>) -> Option<NftService>,
    ) -> Result<()> {
        let rules = self.rules()?;
        let found = self.found_in(&rules, Some(vip))?.remove(&vip);
        // Read apart from the VIP: a VIP whose jump someone deleted still
        // has its counting rules, which must not be doubled.
        let counts = count_rules(&rules, vip);
        let Some(want) = change(found.as_ref().map(|f| f.service.clone())) else {
            return Ok(());
        };
        if want.vip != vip {
            return Err(Error::InvalidArgument {
                op: "write nftables virtual server",
                detail: format!("asked to change {vip}, given {}", want.vip),
            });
        }
        self.write_over(&want, found, &counts)
    }

    fn write_over(
        &mut self,
        want: &NftService,
        found: Option<Found>,
        counts: &Counts,
    ) -> Result<()> {
        let slots: u32 = want.backends.values().map(|b| b.weight).sum();
        if slots > MAX_SLOTS {
            return Err(Error::InvalidArgument {
                op: "write nftables virtual server",
                detail: format!(
                    "the weights of {} add up to {slots}, more than {MAX_SLOTS}",
                    want.vip
                ),
            });
        }
        for b in want.backends.keys() {
            if b.is_ipv4() != want.vip.is_ipv4() {
                return Err(Error::InvalidArgument {
                    op: "write nftables virtual server",
                    detail: format!("backend {b} is not of the family of VIP {}", want.vip),
                });
            }
        }
        let vip_chain = vip_chain(want.vip);
        self.nft.apply("write nftables virtual server", |b| {
            b.new_table(TABLE);
            b.new_base_chain(
                TABLE,
                OUTPUT_CHAIN,
                "nat",
                NF_INET_LOCAL_OUT,
                NAT_DST_PRIORITY,
            );
            b.new_base_chain(TABLE, COUNT_IN_CHAIN, "filter", NF_INET_LOCAL_OUT, 0);
            b.new_base_chain(TABLE, COUNT_OUT_CHAIN, "filter", NF_INET_LOCAL_IN, 0);
            b.new_chain(TABLE, &vip_chain);
            let jump_ok = found
                .as_ref()
                .is_some_and(|f| f.service.scheduler == want.scheduler);
            if !jump_ok {
                if let Some(f) = &found {
                    b.del_rule(TABLE, OUTPUT_CHAIN, f.jump_handle);
                }
                b.new_rule_commented(
                    TABLE,
                    OUTPUT_CHAIN,
                    &jump_to_vip(want.vip),
                    Some(&jump_comment(want.vip, &want.scheduler)),
                );
            }
            for ((backend, inbound), rules) in counts {
                // One counting rule per backend and direction; none for a
                // backend that goes. A VIP being written again from
                // nothing (someone deleted its jump) keeps them all: its
                // backends come back in the operations that follow, and
                // their counts go on.
                let keep = usize::from(want.backends.contains_key(backend) || found.is_none());
                for (handle, _) in rules.iter().skip(keep) {
                    b.del_rule(TABLE, count_chain(*inbound), *handle);
                }
            }
            for backend in want.backends.keys() {
                for inbound in [true, false] {
                    if !counts.contains_key(&(*backend, inbound)) {
                        count_rule(b, want.vip, *backend, inbound);
                    }
                }
                let chain = backend_chain(want.vip, *backend);
                b.new_chain(TABLE, &chain);
                let sound = found
                    .as_ref()
                    .is_some_and(|f| f.service.backends.contains_key(backend));
                if !sound {
                    b.flush_chain(TABLE, &chain);
                    b.new_rule_commented(
                        TABLE,
                        &chain,
                        &codec::dnat_to(backend.ip(), backend.port()),
                        Some(&backend_comment(*backend)),
                    );
                }
            }
            b.flush_chain(TABLE, &vip_chain);
            dispatch(b, want);
            if let Some(f) = &found {
                for gone in f.chains.iter().filter(|c| !want.backends.contains_key(c)) {
                    let chain = backend_chain(want.vip, *gone);
                    b.flush_chain(TABLE, &chain);
                    b.del_chain(TABLE, &chain);
                }
            }
        })
    }

    /// Removes one virtual server and its chains, in one batch. False if
    /// our table had none.
    pub fn delete(&mut self, vip: SocketAddr) -> Result<bool> {
        let rules = self.rules()?;
        let Some(found) = self.found_in(&rules, Some(vip))?.remove(&vip) else {
            return Ok(false);
        };
        let counts = count_rules(&rules, vip);
        self.nft.apply("delete nftables virtual server", |b| {
            b.del_rule(TABLE, OUTPUT_CHAIN, found.jump_handle);
            for ((_, inbound), rules) in &counts {
                for (handle, _) in rules {
                    b.del_rule(TABLE, count_chain(*inbound), *handle);
                }
            }
            let chain = vip_chain(vip);
            b.flush_chain(TABLE, &chain);
            b.del_chain(TABLE, &chain);
            for backend in &found.chains {
                let chain = backend_chain(vip, *backend);
                b.flush_chain(TABLE, &chain);
                b.del_chain(TABLE, &chain);
            }
        })?;
        Ok(true)
    }

    /// Deletes our table and everything in it; nothing else. False if there
    /// was none.
    pub fn delete_table(&mut self) -> Result<bool> {
        match self
            .nft
            .apply("delete our nftables table", |b| b.del_table(TABLE))
        {
            Ok(()) => Ok(true),
            Err(Error::Kernel { errno, .. }) if errno == crate::nl::ENOENT => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rules(&mut self) -> Result<Vec<Rule>> {
        let op = "read our nftables rules";
        self.nft
            .dump(op, RULE_MESSAGE, |seq| dump::rules_request(seq, TABLE))?
            .iter()
            .map(|p| dump::parse_rule(p).map_err(|detail| Error::Decode { op, detail }))
            .collect()
    }

    /// Makes our table hold what the outside VIPs `want` need beyond their
    /// virtual servers, and nothing more: their source NAT
    /// ([`codec::masquerade_from`]) and, when `dnat` (this dataplane
    /// balances them; IPVS does that itself), a jump from prerouting to
    /// their chain. One batch; returns what it changed, as a person would
    /// say it. An empty `want` with no such rules changes nothing (and
    /// creates no table).
    pub fn ensure_outside(&mut self, want: &[SocketAddr], dnat: bool) -> Result<Vec<String>> {
        // Without a table of ours the dump is empty: nothing to remove.
        let rules = self.rules()?;
        let mut changes = Vec::new();
        // (chain, handle) of the rules to delete.
        let mut stale: Vec<(&str, u64)> = Vec::new();
        let mut have_jump = BTreeMap::new();
        let mut have_masq = BTreeMap::new();
        for r in &rules {
            let comment = r.comment.as_deref().unwrap_or("");
            if r.chain == PREROUTING_CHAIN {
                let vip = comment
                    .strip_prefix("outside ")
                    .and_then(|a| a.parse().ok());
                match vip {
                    Some(vip)
                        if dnat
                            && want.contains(&vip)
                            && r.jumps == [vip_chain(vip)]
                            && !have_jump.contains_key(&vip) =>
                    {
                        have_jump.insert(vip, r.handle);
                    }
                    _ => stale.push((PREROUTING_CHAIN, r.handle)),
                }
            } else if r.chain == POSTROUTING_CHAIN {
                let vip: Option<SocketAddr> = comment
                    .strip_prefix("masquerade ")
                    .and_then(|a| a.parse().ok());
                match vip {
                    // Exactly what we write: a rule whose address match
                    // was taken out would masquerade everything.
                    Some(vip)
                        if want.contains(&vip)
                            && r.exprs == ["ct", "cmp", "masq"]
                            && !have_masq.contains_key(&vip) =>
                    {
                        have_masq.insert(vip, r.handle);
                    }
                    _ => stale.push((POSTROUTING_CHAIN, r.handle)),
                }
            }
        }
        let missing_jumps: Vec<SocketAddr> = want
            .iter()
            .filter(|v| dnat && !have_jump.contains_key(v))
            .copied()
            .collect();
        let missing_masq: Vec<SocketAddr> = want
            .iter()
            .filter(|v| !have_masq.contains_key(v))
            .copied()
            .collect();
        if stale.is_empty() && missing_jumps.is_empty() && missing_masq.is_empty() {
            return Ok(changes);
        }
        self.nft.apply("write the outside VIP's NAT", |b| {
            b.new_table(TABLE);
            b.new_base_chain(
                TABLE,
                PREROUTING_CHAIN,
                "nat",
                NF_INET_PRE_ROUTING,
                NAT_DST_PRIORITY,
            );
            b.new_base_chain(
                TABLE,
                POSTROUTING_CHAIN,
                "nat",
                NF_INET_POST_ROUTING,
                NAT_SRC_PRIORITY,
            );
            for (chain, handle) in &stale {
                b.del_rule(TABLE, chain, *handle);
            }
            for vip in &missing_jumps {
                // The VIP's chain may not be written yet: an empty one
                // sends nothing anywhere, and the virtual server's write
                // fills it.
                b.new_chain(TABLE, &vip_chain(*vip));
                b.new_rule_commented(
                    TABLE,
                    PREROUTING_CHAIN,
                    &jump_to_vip(*vip),
                    Some(&format!("outside {vip}")),
                );
            }
            for vip in &missing_masq {
                b.new_rule_commented(
                    TABLE,
                    POSTROUTING_CHAIN,
                    &codec::masquerade_from(vip.ip()),
                    Some(&format!("masquerade {vip}")),
                );
            }
        })?;
        for (chain, _) in &stale {
            changes.push(format!("removed a stale rule from our {chain} chain"));
        }
        for vip in missing_jumps {
            changes.push(format!("outside VIP {vip}: added its prerouting jump"));
        }
        for vip in missing_masq {
            changes.push(format!("outside VIP {vip}: added its masquerade"));
        }
        Ok(changes)
    }

    /// The jump targets of a map's elements, one per slot.
    fn slots(&mut self, set: &str) -> Result<Vec<String>> {
        let op = "read a virtual server's map";
        let mut out = Vec::new();
        for p in self.nft.dump(op, SET_ELEM_MESSAGE, |seq| {
            dump::set_elems_request(seq, TABLE, set)
        })? {
            let elems = dump::parse_set_elems(&p).map_err(|detail| Error::Decode { op, detail })?;
            out.extend(elems.into_iter().filter_map(|(_, target)| target));
        }
        Ok(out)
    }

    fn found(&mut self) -> Result<BTreeMap<SocketAddr, Found>> {
        let rules = self.rules()?;
        self.found_in(&rules, None)
    }

    /// The virtual servers in `rules` (only `only`, if given: the maps of
    /// the others are not read).
    fn found_in(
        &mut self,
        rules: &[Rule],
        only: Option<SocketAddr>,
    ) -> Result<BTreeMap<SocketAddr, Found>> {
        let mut out = BTreeMap::new();
        for r in rules.iter().filter(|r| r.chain == OUTPUT_CHAIN) {
            let Some((vip, scheduler)) = r.comment.as_deref().and_then(parse_jump_comment) else {
                continue;
            };
            if only.is_some_and(|o| o != vip) {
                continue;
            }
            // A rule that no longer jumps to the VIP's chain is not ours
            // any more: the VIP reads as missing and is written again.
            if r.jumps != [vip_chain(vip)] {
                continue;
            }
            let mut service = NftService {
                vip,
                scheduler,
                backends: BTreeMap::new(),
            };
            let prefix = backend_chain_prefix(vip);
            let mut chains = Vec::new();
            for br in rules.iter().filter(|br| br.chain.starts_with(&prefix)) {
                let Some(backend) = br
                    .comment
                    .as_deref()
                    .and_then(|c| c.strip_prefix("backend "))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                else {
                    continue;
                };
                if br.chain != backend_chain(vip, backend) {
                    continue;
                }
                chains.push(backend);
                if sends_to(br, backend) {
                    let (connections, first_bytes) = br.counter.unwrap_or_default();
                    service.backends.insert(
                        backend,
                        NftBackend {
                            connections,
                            first_bytes,
                            ..NftBackend::default()
                        },
                    );
                }
            }
            let counts = count_rules(rules, vip);
            for ((backend, inbound), found) in &counts {
                if let (Some(b), Some((_, (packets, bytes)))) =
                    (service.backends.get_mut(backend), found.first())
                {
                    if *inbound {
                        (b.in_packets, b.in_bytes) = (*packets, *bytes);
                    } else {
                        (b.out_packets, b.out_bytes) = (*packets, *bytes);
                    }
                }
            }
            // A backend that is not counted both ways is not whole: it reads
            // as missing, and the write that puts it back adds its counters.
            service.backends.retain(|a, _| {
                counts.contains_key(&(*a, true)) && counts.contains_key(&(*a, false))
            });
            let vip_chain = vip_chain(vip);
            let sets: Vec<String> = rules
                .iter()
                .filter(|r| r.chain == vip_chain)
                .filter_map(|r| r.lookup_set.clone())
                .collect();
            for set in sets {
                for target in self.slots(&set)? {
                    if let Some((_, b)) = service
                        .backends
                        .iter_mut()
                        .find(|(a, _)| backend_chain(vip, **a) == target)
                    {
                        b.weight = b.weight.saturating_add(1);
                    }
                }
            }
            out.insert(
                vip,
                Found {
                    service,
                    jump_handle: r.handle,
                    chains,
                },
            );
        }
        Ok(out)
    }
}

/// The map and the round robin over it, if any backend has a slot. With
/// none, the chain stays empty: a connection to the VIP then goes to the
/// VIP's own address, where nothing listens, and is refused at once.
fn dispatch(b: &mut Batch, want: &NftService) {
    let targets: Vec<String> = want
        .backends
        .iter()
        .flat_map(|(a, be)| std::iter::repeat_n(backend_chain(want.vip, *a), be.weight as usize))
        .collect();
    if targets.is_empty() {
        return;
    }
    let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let modulus = u32::try_from(refs.len()).unwrap_or(u32::MAX);
    b.new_jump_map(TABLE, 1, &refs, &NFT_USERDATA_INTEGER_VERDICT_MAP);
    b.new_rule(TABLE, &vip_chain(want.vip), &codec::round_robin(1, modulus));
}

/// The counting rule of `backend` in one direction.
fn count_rule(b: &mut Batch, vip: SocketAddr, backend: SocketAddr, inbound: bool) {
    let dir = if inbound {
        codec::IP_CT_DIR_ORIGINAL
    } else {
        codec::IP_CT_DIR_REPLY
    };
    b.new_rule_commented(
        TABLE,
        count_chain(inbound),
        &codec::count_through(vip, backend, dir),
        Some(&count_comment(vip, backend, inbound)),
    );
}

fn count_chain(inbound: bool) -> &'static str {
    if inbound {
        COUNT_IN_CHAIN
    } else {
        COUNT_OUT_CHAIN
    }
}

fn count_comment(vip: SocketAddr, backend: SocketAddr, inbound: bool) -> String {
    format!("{} {vip} {backend}", if inbound { "in" } else { "out" })
}

/// The backend a counting rule of `vip` names, if it is one.
fn parse_count_comment(c: &str, inbound: bool, vip: SocketAddr) -> Option<SocketAddr> {
    let rest = c.strip_prefix(if inbound { "in " } else { "out " })?;
    let (v, b) = rest.split_once(' ')?;
    (v.parse::<SocketAddr>().ok()? == vip)
        .then(|| b.parse().ok())
        .flatten()
}

/// Whether a backend's rule still translates to that backend: its
/// immediates load the address, then the port.
fn sends_to(rule: &Rule, backend: SocketAddr) -> bool {
    let address = match backend.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    rule.exprs.iter().any(|e| e == "nat")
        && rule.immediates == [address, backend.port().to_be_bytes().to_vec()]
}

/// Chain names carry the addresses, so `nft list` reads as the table of a
/// person's mind. An IPv6 address's colons become underscores: the kernel
/// takes any name, but `nft`'s parser takes no colon in one, and an
/// operator must be able to type `nft list chain inet bcs-apiserver-proxy
/// NAME`.
/// `ip daddr VIP tcp dport PORT jump vip-VIP-PORT`: into the VIP's round
/// robin, from the output chain (the node's own connections) or, for the
/// outside VIP, from prerouting.
fn jump_to_vip(vip: SocketAddr) -> Vec<Expr> {
    let mut exprs = codec::match_vip(vip.ip(), vip.port());
    exprs.push(Expr::Jump {
        chain: vip_chain(vip),
    });
    exprs
}

pub fn vip_chain(vip: SocketAddr) -> String {
    format!("vip-{}", name_part(vip))
}

pub fn backend_chain(vip: SocketAddr, backend: SocketAddr) -> String {
    format!("{}{}", backend_chain_prefix(vip), name_part(backend))
}

fn backend_chain_prefix(vip: SocketAddr) -> String {
    format!("be-{}-", name_part(vip))
}

fn name_part(a: SocketAddr) -> String {
    format!("{}-{}", a.ip(), a.port()).replace(':', "_")
}

fn jump_comment(vip: SocketAddr, scheduler: &str) -> String {
    format!("vip {vip} {scheduler}")
}

fn parse_jump_comment(c: &str) -> Option<(SocketAddr, String)> {
    let mut words = c.strip_prefix("vip ")?.split(' ');
    let vip = words.next()?.parse().ok()?;
    let scheduler = words.next()?.to_string();
    Some((vip, scheduler))
}

fn backend_comment(backend: SocketAddr) -> String {
    format!("backend {backend}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_comments_read_back() {
        let vip: SocketAddr = "[fd00::2]:6443".parse().expect("vip");
        let be: SocketAddr = "[fd00::10]:6443".parse().expect("backend");
        assert_eq!(vip_chain(vip), "vip-fd00__2-6443");
        assert_eq!(backend_chain(vip, be), "be-fd00__2-6443-fd00__10-6443");
        assert_eq!(
            parse_jump_comment(&jump_comment(vip, "rr")),
            Some((vip, "rr".to_string()))
        );
        assert_eq!(parse_jump_comment("vip nonsense rr"), None);
        assert_eq!(parse_jump_comment("something else"), None);
    }

    #[test]
    fn a_vips_backends_are_not_another_vips() {
        // 10.0.0.1:443 and 10.0.0.1:4430 must not share backend chains.
        let a: SocketAddr = "10.0.0.1:443".parse().expect("vip");
        let b: SocketAddr = "10.0.0.1:4430".parse().expect("vip");
        let be: SocketAddr = "192.168.1.10:6443".parse().expect("backend");
        assert!(!backend_chain(b, be).starts_with(&backend_chain_prefix(a)));
    }
}
