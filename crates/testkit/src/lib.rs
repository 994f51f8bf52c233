//! Test support for bcs-apiserver-proxy. Only ever a dev-dependency.
//!
//! - [`kernel`]: the guard every real-kernel test starts with.
//! - [`netns`]: named network namespaces joined to the host by veth pairs,
//!   for test apiservers that can be killed, black-holed or slowed.
//! - [`tls`]: a throw-away cluster CA and apiserver/client certificates.

pub mod kernel;
pub mod netns;
pub mod tls;
