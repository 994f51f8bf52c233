//! The nftables dataplane (design: `docs/nftables.md`): a pure codec and a
//! client that applies its batches. No `Kernel` implementation yet.

pub mod client;
pub mod codec;
pub mod dump;
pub mod table;
