//! apiserver-proxy-tools: writes a node's first IPVS rules before kubelet
//! starts and restores them at boot.
//!
//! Not implemented yet: the CLI arrives with its own issue. Until then this
//! binary says so and exits non-zero.

fn main() {
    eprintln!(
        "apiserver-proxy-tools {}: not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
