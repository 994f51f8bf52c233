//! bcs-apiserver-proxy: the node-local apiserver load balancer daemon.
//!
//! Not implemented yet: the daemon arrives with the manager issue. Until then
//! this binary says so and exits non-zero, so nothing can mistake it for a
//! working daemon.

fn main() {
    eprintln!(
        "bcs-apiserver-proxy {}: the daemon is not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
