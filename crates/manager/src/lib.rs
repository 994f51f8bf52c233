//! The manager: the one place that composes discovery, health and the
//! dataplane. It owns the configuration schema both binaries share
//! ([`config`]), the kernel seam ([`kernel::Kernel`]) and the host around it
//! ([`host`]), the pure plan ([`plan`]), the daemon's decisions
//! ([`reconcile`]) and its event loop ([`daemon`]), the node's state file
//! ([`state`]) and the one-shot probes of the CLI ([`probe`]). The binaries
//! parse flags and call it.

pub mod build;
pub mod config;
pub mod control_plane;
pub mod daemon;
mod error;
pub mod host;
pub mod http;
pub mod kernel;
pub mod lock;
pub mod metrics;
pub mod page;
pub mod plan;
pub mod probe;
pub mod reconcile;
pub mod shell;
pub mod state;
mod throttle;

/// The dataplane's error, for callers that match on what the kernel said.
pub use apiserver_proxy_dataplane::Error as DataplaneError;
pub use error::{Error, Result};
