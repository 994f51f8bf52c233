//! Test support for bcs-apiserver-proxy: a dev-dependency of the crates, and
//! a normal one of the benchmark runner (`crates/bench`).
//!
//! - [`fake_kernel`]: an in-memory kernel behind the manager's `Kernel`
//!   trait, for host tests of the loop's decisions.
//! - [`apiserver`]: a fake kube-apiserver (list/watch of EndpointSlices and
//!   Endpoints, 410 Gone, dropped watches, readyz) for discovery and health tests.
//! - [`kernel`]: the guard every real-kernel test starts with.
//! - [`master`]: a fake apiserver on its own thread (and namespace), driven
//!   from synchronous code: crash, drain, publish endpoints.
//! - [`netns`]: named network namespaces joined to the host by veth pairs,
//!   for test apiservers that can be killed, black-holed or slowed.
//! - [`tls`]: a throw-away cluster CA and apiserver/client certificates.
//! - [`traffic`]: a client opening a new connection through the VIP every
//!   100 ms, and an idle long-lived connection like a kubelet watch.
//! - [`figures`]: the lifecycle suite's report rows.
//! - [`fuzz`]: proptest strategies the binaries' property tests share.

pub mod apiserver;
pub mod doc_schema;
pub mod fake_kernel;
pub mod figures;
pub mod fuzz;
pub mod kernel;
pub mod master;
pub mod netns;
pub mod tls;
pub mod traffic;
