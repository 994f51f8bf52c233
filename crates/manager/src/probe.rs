//! One probe of each backend, all at once, with the daemon's own checks
//! (without its rise/fall thresholds): what `apiserver-proxy-tools` runs
//! before it writes rules and for `status`. "Passed" is decided where the
//! daemon decides "in service", so the two never disagree.

use std::time::Duration;

use apiserver_proxy_health::{ProbeResult, probe_once};
use apiserver_proxy_types::Endpoint;

/// How a backend is probed; the daemon's `health` section in the file.
pub use apiserver_proxy_health::HealthConfig;

use crate::error::{Error, Result};
use crate::reconcile::condition;

/// A backend's probe result: in service or not, and a line about it.
#[derive(Debug, Clone)]
pub struct Probed {
    pub backend: Endpoint,
    pub passed: bool,
    /// "ready (200) in 12ms".
    pub detail: String,
}

/// Probes every backend at once and waits for all of them. A configuration
/// the health checker refuses (an unreadable CA file) is one error, not a
/// failed probe per backend.
pub fn probe_all(config: &HealthConfig, backends: &[Endpoint]) -> Result<Vec<Probed>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let results = rt.block_on(futures::future::join_all(
        backends.iter().map(|b| probe_once(config, *b)),
    ));
    backends
        .iter()
        .zip(results)
        .map(|(b, r)| {
            let r = r?;
            Ok(Probed {
                backend: *b,
                passed: condition(Some(r.state)).in_service(),
                detail: detail(&r),
            })
        })
        .collect()
}

fn detail(r: &ProbeResult) -> String {
    let took = r
        .probe_latency
        .map_or(r.connect_latency, |p| r.connect_latency + p);
    format!("{} ({}) in {}", r.state, r.reason, millis(took))
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
