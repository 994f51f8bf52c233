//! Fuzzing the reply decoder: random bytes, and real kernel replies
//! (the golden captures) mutated and truncated at random, never make it
//! panic; every input gives `Ok` or `Err`.
//!
//! Case counts: `FUZZ_CASES` per property (4 properties); set the
//! `PROPTEST_CASES` environment variable to run more.

use apiserver_proxy_dataplane::ipvs::codec;
use apiserver_proxy_types::Family;
use proptest::prelude::*;

#[path = "golden/bytes.rs"]
mod bytes;
use bytes::*;

const FUZZ_CASES: u32 = 5_000;

fn config() -> ProptestConfig {
    apiserver_proxy_testkit::fuzz::parser_config(FUZZ_CASES)
}

/// Runs every decoder on `data`. Only panics matter; results are dropped.
fn decode_everything(data: &[u8]) {
    for seq in [0, golden_seq(data)] {
        let _ = codec::parse_service_dump(&[data], seq);
        let _ = codec::parse_dest_dump(&[data], seq, Family::Ipv4);
        let _ = codec::parse_dest_dump(&[data], seq, Family::Ipv6);
        let _ = codec::collect(data, seq, &mut Vec::new());
    }
    if let Ok(msgs) = codec::split_messages(data) {
        for m in msgs {
            let _ = codec::parse_service_message(m.payload);
            let _ = codec::parse_dest_message(m.payload, Family::Ipv6);
            let _ = codec::parse_info_message(m.payload);
            let _ = codec::parse_family_message(m.payload);
            let _ = codec::error_code(&m);
        }
    }
    // Also as bare attribute payloads (what sits inside the nests).
    let _ = codec::parse_service_attrs(data);
    let _ = codec::parse_dest_attrs(data, Family::Ipv4);
    let _ = codec::parse_stats("fuzz", data);
    let _ = codec::attributes("fuzz", data);
}

fn golden_seq(data: &[u8]) -> u32 {
    data.get(8..12)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn goldens() -> Vec<Vec<u8>> {
    [
        REP_INFO,
        REP_SERVICES,
        REP_SERVICES_DONE,
        REP_DESTS4,
        REP_DESTS6,
        REP_ACK,
    ]
    .iter()
    .map(|h| unhex(h))
    .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = data.len();
        match *m {
            Mutation::Set(i, b) if n > 0 => data[i % n] = b,
            Mutation::Flip(i, bit) if n > 0 => data[i % n] ^= 1 << bit,
            Mutation::Insert(i, b) => data.insert(i % (n + 1), b),
            Mutation::Remove(i) if n > 0 => {
                data.remove(i % n);
            }
            Mutation::Truncate(i) => data.truncate(i % (n + 1)),
            _ => {}
        }
    }
    data
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&data);
    }

    /// Random bytes behind a plausible netlink + genl header, so the
    /// attribute parser (not only the header check) gets exercised.
    #[test]
    fn random_attributes_behind_a_valid_header_never_panic(
        cmd in prop_oneof![Just(1u8), Just(5u8), Just(14u8)],
        attrs in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let len = 20 + attrs.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&0x20u16.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes());
        msg.extend_from_slice(&7u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[cmd, 1, 0, 0]);
        msg.extend_from_slice(&attrs);
        decode_everything(&msg);
    }

    #[test]
    fn mutated_golden_replies_never_panic(
        which in 0usize..6,
        muts in proptest::collection::vec(mutation(), 1..8),
    ) {
        let data = apply(goldens().swap_remove(which), &muts);
        decode_everything(&data);
    }

    #[test]
    fn truncated_golden_replies_are_errors_or_shorter(which in 0usize..6, cut in any::<usize>()) {
        let full = goldens().swap_remove(which);
        let cut = cut % (full.len() + 1);
        decode_everything(&full[..cut]);
        // A truncated service dump never yields more services than the
        // whole one.
        let seq = golden_seq(&full);
        let whole = codec::parse_service_dump(&[&full], seq).map(|v| v.len()).unwrap_or(0);
        if let Ok(part) = codec::parse_service_dump(&[&full[..cut]], seq) {
            prop_assert!(part.len() <= whole);
        }
    }
}
