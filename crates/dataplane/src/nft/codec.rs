//! Pure nf_tables netlink message builders (no sockets).
//!
//! Every change is sent as one nfnetlink batch (`NFNL_MSG_BATCH_BEGIN`, the
//! messages, `NFNL_MSG_BATCH_END`) so the kernel applies all or nothing.
//! Constants are from `include/uapi/linux/netfilter/nfnetlink.h` and
//! `nf_tables.h`. Unlike the `nft` binary, every inner message asks for an
//! ack (`NLM_F_ACK`) so each failure is attributed to the message that caused
//! it; that flag is the one documented difference from `nft`'s bytes.

/// `NLMSG_MIN_TYPE`: batch begin (`nfnetlink.h`).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// Batch end (`nfnetlink.h`).
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNL_SUBSYS_NFTABLES` (`nfnetlink.h`).
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWTABLE` (`nf_tables.h`).
pub const NFT_MSG_NEWTABLE: u16 = 0;
/// `NFTA_TABLE_NAME` (`nf_tables.h`).
pub const NFTA_TABLE_NAME: u16 = 1;
/// `NFTA_TABLE_FLAGS` (`nf_tables.h`).
pub const NFTA_TABLE_FLAGS: u16 = 2;
/// `NFT_MSG_NEWCHAIN` (`nf_tables.h`).
pub const NFT_MSG_NEWCHAIN: u16 = 3;
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
}

impl Batch {
    /// Starts a batch whose `NFNL_MSG_BATCH_BEGIN` carries sequence `first_seq`.
    pub fn new(first_seq: u32) -> Self {
        let mut batch = Self {
            buf: Vec::new(),
            seq: first_seq,
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
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE;
        self.message(ty, NLM_F_REQUEST | NLM_F_ACK, NFPROTO_INET, 0, &attrs);
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
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN;
        self.message(
            ty,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
            NFPROTO_INET,
            0,
            &attrs,
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
        self.seq = self.seq.wrapping_add(1);
    }
}

/// A name as the kernel reads it: NUL-terminated.
fn c_string(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out
}

/// One netlink attribute, padded to 4 bytes (`NLA_ALIGN`).
fn push_attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests;
