//! The desired apiserver set of each virtual server.
//!
//! Discovery watches the cluster's view of its own control plane (the
//! EndpointSlices of `default/kubernetes`, or the core/v1 Endpoints object on
//! clusters that do not serve EndpointSlices) and turns it into the set of
//! backends each virtual server should balance to. It never depends on the
//! virtual server we provide or on kube-proxy to reach the API: it connects
//! straight to a known apiserver (see [`connect`] and `docs/discovery.md`).
//!
//! Robustness rules:
//! - **Seeds** (static backends from configuration) are the desired set
//!   until the first good answer from the cluster, and the last resort for
//!   connecting.
//! - **Last-known-good cache** ([`cache`]): every change of a cluster answer
//!   is written atomically to disk and loaded at start, before seeds.
//! - **Fail-static** ([`backends::decide`]): an answer without usable
//!   backends never replaces a non-empty set; it is logged and counted.
//! - Watch errors keep the current set; 410 Gone and stale watches relist.
//!
//! The output is a channel of [`DesiredSet`]s, each with its [`Source`] and a
//! generation that increases with every set sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiserver_proxy_types::{Endpoint, Family};
use tokio::sync::{mpsc, watch};

pub mod backends;
pub mod cache;
pub mod connect;
mod counters;
mod error;
mod run;

pub use counters::{Counters, CountersSnapshot};
pub use error::{Error, Result};

/// Where a desired set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Static backends from configuration.
    Seed,
    /// The last-known-good cache on disk.
    Cache,
    /// An answer from the cluster.
    Cluster,
}

/// The backends one virtual server should balance to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSet {
    /// The virtual server (VIP:PORT).
    pub vs: Endpoint,
    pub backends: BTreeSet<Endpoint>,
    pub source: Source,
    /// Increases by one with every desired set discovery sends (across all
    /// virtual servers), so a later set always has a larger generation.
    pub generation: u64,
}

/// One virtual server to discover backends for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    /// The VIP and port; its family selects the backends' family.
    pub vip: Endpoint,
    /// The name of the apiserver port in the EndpointSlice (`https`).
    pub port_name: String,
    /// Static backends (same family as the VIP): the desired set until the
    /// cluster answers (if there is no cache), and always something to
    /// connect to.
    pub seeds: BTreeSet<Endpoint>,
    /// Whether its sets go to the last-known-good cache, which the node's
    /// boot-time restore reads (a virtual server whose VIP must not be
    /// placed on every node at boot is kept out).
    pub cached: bool,
}

impl VirtualServer {
    pub fn new(vip: Endpoint) -> VirtualServer {
        VirtualServer {
            vip,
            port_name: DEFAULT_PORT_NAME.to_string(),
            seeds: BTreeSet::new(),
            cached: true,
        }
    }

    pub fn family(&self) -> Family {
        self.vip.family()
    }
}

/// The most backends an answer may list before it is refused.
pub const DEFAULT_MAX_BACKENDS: usize = 16;

/// The name of the apiserver port of the `kubernetes` service.
pub const DEFAULT_PORT_NAME: &str = "https";

/// Discovery settings. [`DiscoveryConfig::new`] gives the defaults.
///
/// [`Discovery::start`] rejects durations that are zero or above
/// [`MAX_DURATION`] (all timeouts, `stale_after` and both backoffs) and a
/// `backoff_max` below `backoff_initial`, naming the field.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub virtual_servers: Vec<VirtualServer>,
    /// Where the last-known-good cache lives; `None` disables it.
    pub cache_path: Option<PathBuf>,
    /// Namespace and name of the apiserver service (`default`/`kubernetes`).
    pub namespace: String,
    pub service_name: String,
    /// The name the apiservers' certificates are verified for.
    pub tls_server_name: String,
    /// A watch with nothing arriving for this long is restarted with a
    /// fresh list.
    pub stale_after: Duration,
    /// How long a list may take (from asking to the complete answer, all
    /// pages together) before the apiserver is given up for the next one.
    /// Catches apiservers that accept connections but do not answer, or
    /// answer too slowly. Each new list (after an error, a 410 Gone or a
    /// fallback to Endpoints) gets the full time again.
    pub list_timeout: Duration,
    /// Server-side timeout of each watch request (kube-runtime re-watches
    /// from the last resourceVersion when it ends).
    pub watch_timeout: Duration,
    /// Backoff between failed attempts, doubling up to `backoff_max`
    /// (`backoff_initial <= backoff_max`).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Consecutive errors on one apiserver before trying the next one.
    pub errors_before_switch: u32,
    /// TCP connect timeout towards an apiserver.
    pub connect_timeout: Duration,
    /// Also try the server URL of the base kube config (kubeconfig or
    /// in-cluster) after every known backend has failed.
    pub use_config_server_as_last_resort: bool,
    /// An answer with more backends than this is not applied (the current
    /// set stays, and a warning and a counter say why): a control plane
    /// has a handful of apiservers, and a list longer than this is a
    /// mistake or an attempt to steer the node's traffic.
    pub max_backends: usize,
}

impl DiscoveryConfig {
    pub fn new(virtual_servers: Vec<VirtualServer>) -> DiscoveryConfig {
        DiscoveryConfig {
            virtual_servers,
            cache_path: None,
            namespace: "default".to_string(),
            service_name: "kubernetes".to_string(),
            tls_server_name: connect::DEFAULT_TLS_SERVER_NAME.to_string(),
            stale_after: Duration::from_secs(300),
            list_timeout: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(290),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            errors_before_switch: 2,
            connect_timeout: Duration::from_secs(5),
            use_config_server_as_last_resort: true,
            max_backends: DEFAULT_MAX_BACKENDS,
        }
    }

    /// What [`Discovery::start`] refuses, without starting anything (the
    /// manager's `config check` runs it too).
    pub fn validate(&self) -> Result<(), Error> {
        let mut seen = BTreeSet::new();
        for vs in &self.virtual_servers {
            if !seen.insert(vs.vip) {
                return Err(Error::Config(format!(
                    "virtual server {} is configured twice",
                    vs.vip
                )));
            }
            if let Some(bad) = vs.seeds.iter().find(|s| s.family() != vs.family()) {
                return Err(Error::Config(format!(
                    "seed {bad} is {} but virtual server {} is {}",
                    bad.family(),
                    vs.vip,
                    vs.family()
                )));
            }
            if vs.port_name.is_empty() {
                return Err(Error::Config(format!(
                    "virtual server {}: the port name is empty",
                    vs.vip
                )));
            }
        }
        for (field, value) in [
            ("stale_after", self.stale_after),
            ("list_timeout", self.list_timeout),
            ("watch_timeout", self.watch_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
        ] {
            if value.is_zero() || value > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{field} is {value:?}; it must be positive and at most {MAX_DURATION:?}"
                )));
            }
        }
        if self.max_backends == 0 {
            return Err(Error::Config("max_backends must be at least 1".into()));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(Error::Config(format!(
                "backoff_max ({:?}) must be at least backoff_initial ({:?})",
                self.backoff_max, self.backoff_initial
            )));
        }
        Ok(())
    }
}

/// The largest timeout, staleness bound or backoff [`Discovery::start`]
/// accepts. Larger values are configuration mistakes (and would overflow
/// deadlines).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Removes what a crashed cache write left, then loads the cache; a cache
/// that cannot be used is counted, logged and ignored.
fn load_cache(path: &std::path::Path, counters: &Counters) -> Option<cache::CachedSets> {
    let removed = cache::remove_stale_temp_files(path);
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary cache files left by an interrupted write"
        );
    }
    match cache::load(path) {
        Ok(c) => c,
        Err(e) => {
            counters.bump(|c| &c.cache_load_failures);
            tracing::warn!(error = %e, "last-known-good backend cache not used");
            None
        }
    }
}

/// A running discovery. Dropping it stops the background task.
#[derive(Debug)]
pub struct Discovery {
    /// Every desired set, in order. Discovery waits for the receiver when it
    /// is full; it stops when `Discovery` is dropped.
    updates: mpsc::Receiver<DesiredSet>,
    latest: watch::Receiver<BTreeMap<Endpoint, DesiredSet>>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Discovery {
    /// Loads the cache, then starts discovery on the current tokio runtime.
    ///
    /// `base` carries the credentials (kubeconfig or in-cluster: CA, token
    /// or client certificate); its server URL is only a last resort, see
    /// [`connect::config_for_endpoint`].
    pub fn start(config: DiscoveryConfig, base: kube::Config) -> Result<Discovery, Error> {
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let cached = config
            .cache_path
            .as_deref()
            .and_then(|path| load_cache(path, &counters));
        let (tx, updates) = mpsc::channel(256);
        let (latest_tx, latest) = watch::channel(BTreeMap::new());
        let engine = run::Engine::new(config, base, counters.clone(), tx, latest_tx, cached);
        let task = tokio::spawn(engine.run());
        Ok(Discovery {
            updates,
            latest,
            counters,
            task,
        })
    }

    /// The latest desired set of every virtual server that has one.
    pub fn latest(&self) -> watch::Receiver<BTreeMap<Endpoint, DesiredSet>> {
        self.latest.clone()
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}

impl Discovery {
    /// The next desired set, in order; `None` once discovery has stopped.
    pub async fn recv(&mut self) -> Option<DesiredSet> {
        self.updates.recv().await
    }

    /// A desired set that has already arrived, without waiting.
    pub fn try_recv(&mut self) -> Option<DesiredSet> {
        self.updates.try_recv().ok()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> DiscoveryConfig {
        let vip: Endpoint = "10.96.0.1:443".parse().expect("vip");
        DiscoveryConfig::new(vec![VirtualServer::new(vip)])
    }

    fn start_error(c: DiscoveryConfig) -> String {
        let base = kube::Config::new("https://10.96.0.1:443".parse().expect("url"));
        match Discovery::start(c, base) {
            Ok(_) => panic!("the configuration was accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// Regression: `backoff_max = 0` was accepted (a busy loop with no
    /// sleep), and huge durations overflowed `backoff * 2` and deadlines.
    #[test]
    fn start_rejects_settings_that_would_spin_or_overflow_naming_the_field() {
        assert!(valid().validate().is_ok());
        let huge = Duration::from_secs(u64::MAX);
        type Setter = fn(&mut DiscoveryConfig, Duration);
        let cases: Vec<(&str, Setter)> = vec![
            ("stale_after", |c, d| c.stale_after = d),
            ("list_timeout", |c, d| c.list_timeout = d),
            ("watch_timeout", |c, d| c.watch_timeout = d),
            ("connect_timeout", |c, d| c.connect_timeout = d),
            ("backoff_initial", |c, d| c.backoff_initial = d),
            ("backoff_max", |c, d| c.backoff_max = d),
        ];
        for (field, set) in cases {
            for bad in [Duration::ZERO, huge, MAX_DURATION + Duration::from_nanos(1)] {
                let mut c = valid();
                set(&mut c, bad);
                let err = start_error(c);
                assert!(
                    err.contains(field),
                    "{field} = {bad:?}: {err:?} does not name the field"
                );
            }
            let mut c = valid();
            set(&mut c, MAX_DURATION);
            c.backoff_initial = c.backoff_initial.min(c.backoff_max);
            assert!(c.validate().is_ok(), "{field} = MAX_DURATION is accepted");
        }
        let mut c = valid();
        c.backoff_initial = Duration::from_secs(2);
        c.backoff_max = Duration::from_secs(1);
        let err = start_error(c);
        assert!(
            err.contains("backoff_max") && err.contains("backoff_initial"),
            "{err}"
        );
    }
}
