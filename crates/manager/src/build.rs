//! What a binary says about its build, in `--version` and in the
//! `apiserver_proxy_build_info` metric: one definition for both binaries.
//! `build.rs` records the revision and the compiler.

/// The release, from the workspace's `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `git rev-parse --short=12 HEAD` of the checkout built (`-dirty` with
/// uncommitted changes to tracked files), or `unknown` outside a git
/// checkout.
pub const GIT_REVISION: &str = env!("APISERVER_PROXY_GIT_REVISION");
/// `rustc --version` of the compiler that built it.
pub const RUSTC_VERSION: &str = env!("APISERVER_PROXY_RUSTC_VERSION");
/// `--version`'s text after the program's name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("APISERVER_PROXY_GIT_REVISION"),
    ", built with ",
    env!("APISERVER_PROXY_RUSTC_VERSION"),
    ")"
);
