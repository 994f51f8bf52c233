//! The nftables dataplane (design: `docs/nftables.md`). Only the pure codec
//! exists so far; no socket code and no `Kernel` implementation yet.

pub mod codec;
