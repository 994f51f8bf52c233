//! `cargo xtask bench`: failover, dataplane, convergence, scale and footprint,
//! measured in the VM side by side with haproxy and nginx.
//!
//! Not built yet (issue 9).

use anyhow::{Result, bail};

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Result<i32> {
    bail!("cargo xtask bench is not implemented yet (issue 9)")
}
