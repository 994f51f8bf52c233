//! Golden bytes captured from the real `nft` binary on the build host
//! (kernel 6.18, nftables from Debian) in a fresh `unshare -n` namespace.

use super::*;

/// `unshare -n strace -f -e trace=sendmsg -s 65535 -xx nft add table inet bcs-apiserver-proxy`
/// (one sendmsg of 92 bytes; little-endian host).
const NFT_ADD_TABLE: [u8; 92] = [
    // NFNL_MSG_BATCH_BEGIN, len 20, NLM_F_REQUEST, seq 0, pid 0
    0x14, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x0a, // nfgenmsg: AF_UNSPEC, V0, res_id htons(10)
    // NFT_MSG_NEWTABLE, len 52, NLM_F_REQUEST, seq 1
    0x34, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, // nfgenmsg: NFPROTO_INET, V0, res_id 0
    0x18, 0x00, 0x01, 0x00, b'b', b'c', b's', b'-', b'a', b'p', b'i', b's', b'e', b'r', b'v', b'e',
    b'r', b'-', b'p', b'r', b'o', b'x', b'y', 0x00, // NFTA_TABLE_NAME
    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // NFTA_TABLE_FLAGS = 0
    // NFNL_MSG_BATCH_END, len 20, NLM_F_REQUEST, seq 2
    0x14, 0x00, 0x00, 0x00, 0x11, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x0a,
];

/// `nft add table inet bcs-apiserver-proxy`, then
/// `unshare -n strace -f -e trace=sendmsg -s 65535 -xx nft add chain inet
/// bcs-apiserver-proxy output "{ type nat hook output priority -100; }"`
/// (one sendmsg of 124 bytes; little-endian host).
const NFT_ADD_NAT_OUTPUT_CHAIN: [u8; 124] = [
    // NFNL_MSG_BATCH_BEGIN, len 20, NLM_F_REQUEST, seq 0
    0x14, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x0a,
    // NFT_MSG_NEWCHAIN, len 84, NLM_F_REQUEST|NLM_F_CREATE, seq 1
    0x54, 0x00, 0x00, 0x00, 0x03, 0x0a, 0x01, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, // nfgenmsg: NFPROTO_INET
    0x18, 0x00, 0x01, 0x00, b'b', b'c', b's', b'-', b'a', b'p', b'i', b's', b'e', b'r', b'v', b'e',
    b'r', b'-', b'p', b'r', b'o', b'x', b'y', 0x00, // NFTA_CHAIN_TABLE
    0x0b, 0x00, 0x03, 0x00, b'o', b'u', b't', b'p', b'u', b't', 0x00, 0x00, // NFTA_CHAIN_NAME
    0x08, 0x00, 0x07, 0x00, b'n', b'a', b't', 0x00, // NFTA_CHAIN_TYPE
    0x14, 0x00, 0x04, 0x80, // NFTA_CHAIN_HOOK | NLA_F_NESTED
    0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x03, // NFTA_HOOK_HOOKNUM = NF_INET_LOCAL_OUT (be32)
    0x08, 0x00, 0x02, 0x00, 0xff, 0xff, 0xff, 0x9c, // NFTA_HOOK_PRIORITY = -100 (be32)
    // NFNL_MSG_BATCH_END, len 20, NLM_F_REQUEST, seq 2
    0x14, 0x00, 0x00, 0x00, 0x11, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x0a,
];

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Clears `NLM_F_ACK` in every message header: the documented difference
/// between our batches and `nft`'s.
fn without_acks(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut at = 0;
    while at + 16 <= bytes.len() {
        let len = u32_at(&bytes, at) as usize;
        let flags = u16_at(&bytes, at + 6);
        bytes[at + 6..at + 8].copy_from_slice(&(flags & !NLM_F_ACK).to_ne_bytes());
        at += len;
    }
    bytes
}

#[test]
fn add_table_batch_matches_nft_bytes() {
    let mut batch = Batch::new(0);
    batch.new_table("bcs-apiserver-proxy");
    let ours = batch.finish();
    assert_eq!(without_acks(ours.clone()), NFT_ADD_TABLE.to_vec());
    // The inner message, and only it, asks for an ack.
    let flags = u16_at(&ours, 26);
    assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(u16_at(&ours, 6), NLM_F_REQUEST);
}

#[test]
fn name_padding_is_aligned() {
    // A 4-byte name + NUL needs 3 bytes of padding: the next attribute must
    // start on a 4-byte boundary or the kernel rejects the message.
    let mut batch = Batch::new(7);
    batch.new_table("abcd");
    let ours = batch.finish();
    let table = &ours[20..];
    let len = u32_at(table, 0) as usize;
    assert_eq!(len, 16 + 4 + 12 + 8);
    assert_eq!(
        &table[20..32],
        &[9, 0, 1, 0, b'a', b'b', b'c', b'd', 0, 0, 0, 0]
    );
    assert_eq!(u32_at(table, 8), 8);
}

#[test]
fn add_nat_output_chain_matches_nft_bytes() {
    let mut batch = Batch::new(0);
    batch.new_base_chain(
        "bcs-apiserver-proxy",
        "output",
        "nat",
        NF_INET_LOCAL_OUT,
        -100,
    );
    assert_eq!(
        without_acks(batch.finish()),
        NFT_ADD_NAT_OUTPUT_CHAIN.to_vec()
    );
}
