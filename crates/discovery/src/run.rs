//! The discovery task: pick an apiserver, watch, turn answers into desired
//! sets, keep the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use apiserver_proxy_types::Endpoint;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::backends::{self, Decision};
use crate::cache::{self, CachedSets};
use crate::{Counters, DesiredSet, DiscoveryConfig, Source, connect};

/// Which API answers are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Slices,
    Endpoints,
}

#[derive(Debug, Clone)]
enum Obj {
    Slice(Box<EndpointSlice>),
    Endpoints(Box<Endpoints>),
}

impl Obj {
    fn name(&self) -> String {
        match self {
            Obj::Slice(s) => s.name_any(),
            Obj::Endpoints(e) => e.name_any(),
        }
    }
}

/// What to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Backend(Endpoint),
    /// The server URL of the base config, as is.
    ConfigServer,
}

/// Why a session ended.
enum End {
    /// Too many errors on this apiserver: try the next one.
    Failed,
    /// Nothing arrived for `stale_after`: relist on the same apiserver.
    Stale,
    /// The output receiver is gone: stop.
    Closed,
}

struct Current {
    backends: BTreeSet<Endpoint>,
    source: Source,
}

pub(crate) struct Engine {
    config: DiscoveryConfig,
    base: kube::Config,
    counters: Arc<Counters>,
    tx: mpsc::Sender<DesiredSet>,
    latest: watch::Sender<BTreeMap<Endpoint, DesiredSet>>,
    current: BTreeMap<Endpoint, Current>,
    generation: u64,
    /// Sends the sets to write to the cache writer task (started lazily).
    cache_writer: Option<watch::Sender<Option<CachedSets>>>,
    /// Sets to announce before anything else (seeds or cache).
    initial: Vec<(Endpoint, BTreeSet<Endpoint>, Source)>,
}

impl Engine {
    pub(crate) fn new(
        config: DiscoveryConfig,
        base: kube::Config,
        counters: Arc<Counters>,
        tx: mpsc::Sender<DesiredSet>,
        latest: watch::Sender<BTreeMap<Endpoint, DesiredSet>>,
        cached: Option<CachedSets>,
    ) -> Engine {
        let mut initial = Vec::new();
        for vs in &config.virtual_servers {
            let from_cache = cached
                .as_ref()
                .and_then(|c| c.get(&vs.vip))
                .filter(|b| !b.is_empty())
                .map(|b| {
                    b.iter()
                        .filter(|e| e.family() == vs.family())
                        .copied()
                        .collect::<BTreeSet<_>>()
                });
            match from_cache {
                Some(b) => initial.push((vs.vip, b, Source::Cache)),
                None if !vs.seeds.is_empty() => {
                    initial.push((vs.vip, vs.seeds.clone(), Source::Seed))
                }
                None => {}
            }
        }
        Engine {
            config,
            base,
            counters,
            tx,
            latest,
            current: BTreeMap::new(),
            generation: 0,
            cache_writer: None,
            initial,
        }
    }

    pub(crate) async fn run(mut self) {
        for (vip, backends, source) in std::mem::take(&mut self.initial) {
            info!(vs = %vip, ?source, backends = backends.len(), "initial desired set");
            if !self.emit(vip, backends, source).await {
                return;
            }
        }
        let mut attempt: usize = 0;
        let mut backoff = self.config.backoff_initial;
        loop {
            let targets = self.targets();
            let Some(target) = targets.get(attempt % targets.len().max(1)).copied() else {
                warn!("no apiserver to connect to: no seeds, no cache, no cluster answer yet");
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff, self.config.backoff_max);
                continue;
            };
            let client = match self.client(target) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "cannot build a client");
                    attempt = attempt.wrapping_add(1);
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff, self.config.backoff_max);
                    continue;
                }
            };
            debug!(?target, "connecting to apiserver");
            let (end, listed) = self.session(client).await;
            if listed {
                backoff = self.config.backoff_initial;
            }
            match end {
                End::Closed => return,
                End::Stale => {
                    self.counters.bump(|c| &c.stale_relists);
                    info!(
                        ?target,
                        after = ?self.config.stale_after,
                        "watch stale: nothing arrived, relisting"
                    );
                }
                End::Failed => {
                    self.counters.bump(|c| &c.endpoint_switches);
                    attempt = attempt.wrapping_add(1);
                    warn!(?target, retry_in = ?backoff, "apiserver failing, trying the next one");
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff, self.config.backoff_max);
                }
            }
        }
    }

    /// Known apiservers, best first: the current desired sets, then seeds,
    /// then (optionally) the base config's server.
    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let mut push = |t: Target| {
            if !out.contains(&t) {
                out.push(t);
            }
        };
        for cur in self.current.values() {
            cur.backends.iter().for_each(|b| push(Target::Backend(*b)));
        }
        for vs in &self.config.virtual_servers {
            vs.seeds.iter().for_each(|b| push(Target::Backend(*b)));
        }
        if self.config.use_config_server_as_last_resort {
            push(Target::ConfigServer);
        }
        out
    }

    fn client(&self, target: Target) -> Result<kube::Client, crate::Error> {
        let mut config = match target {
            Target::Backend(ep) => {
                connect::config_for_endpoint(&self.base, ep, &self.config.tls_server_name)?
            }
            Target::ConfigServer => self.base.clone(),
        };
        config.connect_timeout = Some(self.config.connect_timeout);
        let endpoint = config.cluster_url.to_string();
        kube::Client::try_from(config).map_err(|source| crate::Error::Client { endpoint, source })
    }

    fn open(
        &self,
        client: kube::Client,
        mode: Mode,
    ) -> BoxStream<'static, watcher::Result<Event<Obj>>> {
        let timeout = u32::try_from(self.config.watch_timeout.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        match mode {
            Mode::Slices => {
                let api: Api<EndpointSlice> = Api::namespaced(client, &self.config.namespace);
                // The apiserver writes one slice for its own service, named
                // as the service; others carrying the label (anyone who can
                // write EndpointSlices in the namespace can add one) are not
                // asked for, and dropped in `evaluate` if served anyway.
                let wc = watcher::Config::default()
                    .labels(&format!(
                        "kubernetes.io/service-name={}",
                        self.config.service_name
                    ))
                    .fields(&format!("metadata.name={}", self.config.service_name))
                    .timeout(timeout);
                watcher::watcher(api, wc)
                    .map_ok(|e| map_event(e, |s| Obj::Slice(Box::new(s))))
                    .boxed()
            }
            Mode::Endpoints => {
                let api: Api<Endpoints> = Api::namespaced(client, &self.config.namespace);
                let wc = watcher::Config::default()
                    .fields(&format!("metadata.name={}", self.config.service_name))
                    .timeout(timeout);
                watcher::watcher(api, wc)
                    .map_ok(|e| map_event(e, |o| Obj::Endpoints(Box::new(o))))
                    .boxed()
            }
        }
    }

    /// Watches through one client until it fails, goes stale or the output
    /// is closed. Also says whether a full list succeeded.
    async fn session(&mut self, client: kube::Client) -> (End, bool) {
        let mut mode = Mode::Slices;
        let mut stream = self.open(client.clone(), mode);
        let mut objects: BTreeMap<String, Obj> = BTreeMap::new();
        let mut init: Option<BTreeMap<String, Obj>> = None;
        let mut errors_in_row = 0u32;
        let mut backoff = self.config.backoff_initial;
        let mut listed = false;
        // Between asking for a list (Event::Init, which the watcher yields
        // right before it sends the first list request) and its end
        // (InitDone), all pages together must arrive before the list
        // deadline; a hung or crawling apiserver is then left for the next.
        // Otherwise each item must arrive within `stale_after`.
        let mut listing = true;
        let mut list_deadline = deadline_after(self.config.list_timeout);
        loop {
            let next = if listing {
                tokio::time::timeout_at(list_deadline, stream.next()).await
            } else {
                tokio::time::timeout(self.config.stale_after, stream.next()).await
            };
            let item = match next {
                Err(_) if listing => {
                    self.counters.bump(|c| &c.watch_errors);
                    warn!(
                        timeout = ?self.config.list_timeout,
                        "no complete list from the apiserver in time"
                    );
                    return (End::Failed, listed);
                }
                Err(_) => return (End::Stale, listed),
                Ok(None) => return (End::Failed, listed),
                Ok(Some(item)) => item,
            };
            let changed = match item {
                Ok(Event::Init) => {
                    listing = true;
                    list_deadline = deadline_after(self.config.list_timeout);
                    init = Some(BTreeMap::new());
                    false
                }
                Ok(Event::InitApply(o)) => {
                    init.get_or_insert_default().insert(o.name(), o);
                    false
                }
                Ok(Event::InitDone) => {
                    objects = init.take().unwrap_or_default();
                    listing = false;
                    self.counters.bump(|c| &c.relists);
                    listed = true;
                    errors_in_row = 0;
                    backoff = self.config.backoff_initial;
                    true
                }
                Ok(Event::Apply(o)) => {
                    errors_in_row = 0;
                    objects.insert(o.name(), o);
                    true
                }
                Ok(Event::Delete(o)) => {
                    errors_in_row = 0;
                    objects.remove(&o.name());
                    true
                }
                Err(e) => {
                    self.counters.bump(|c| &c.watch_errors);
                    if mode == Mode::Slices && is_not_found(&e) {
                        self.counters.bump(|c| &c.endpoints_fallbacks);
                        warn!(
                            "EndpointSlice API not served (404): falling back to core/v1 Endpoints {}/{}",
                            self.config.namespace, self.config.service_name
                        );
                        mode = Mode::Endpoints;
                        listing = true;
                        list_deadline = deadline_after(self.config.list_timeout);
                        stream = self.open(client.clone(), mode);
                        objects.clear();
                        init = None;
                        continue;
                    }
                    if is_gone(&e) {
                        // kube-runtime's watcher relists on its next poll.
                        self.counters.bump(|c| &c.gone_relists);
                        info!("watch expired (410 Gone): relisting");
                        continue;
                    }
                    errors_in_row += 1;
                    warn!(error = %e, errors_in_row, "watch error; keeping the current desired sets");
                    if errors_in_row >= self.config.errors_before_switch.max(1) {
                        return (End::Failed, listed);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff, self.config.backoff_max);
                    false
                }
            };
            if changed && !self.evaluate(mode, &objects).await {
                return (End::Closed, listed);
            }
        }
    }

    /// Applies the cluster's answer to every virtual server. False if the
    /// output is closed.
    async fn evaluate(&mut self, mode: Mode, objects: &BTreeMap<String, Obj>) -> bool {
        let mut changed = false;
        let vss = self.config.virtual_servers.clone();
        let name = self.config.service_name.clone();
        let foreign = objects.keys().filter(|k| **k != name).count();
        if foreign > 0 {
            self.counters.bump(|c| &c.foreign_objects_ignored);
            warn!(
                foreign,
                "ignoring objects not named {name:?}: only the apiserver's own object lists the apiservers"
            );
        }
        let objects: BTreeMap<&String, &Obj> =
            objects.iter().filter(|(k, _)| **k == name).collect();
        for vs in &vss {
            let answer = match mode {
                Mode::Slices => backends::backends_from_slices(
                    objects.values().filter_map(|o| match o {
                        Obj::Slice(s) => Some(&**s),
                        Obj::Endpoints(_) => None,
                    }),
                    vs.family(),
                    &vs.port_name,
                ),
                Mode::Endpoints => backends::backends_from_endpoints(
                    objects.values().filter_map(|o| match o {
                        Obj::Endpoints(e) => Some(&**e),
                        Obj::Slice(_) => None,
                    }),
                    vs.family(),
                    &vs.port_name,
                ),
            };
            let empty = BTreeSet::new();
            let (current, from_cluster) = match self.current.get(&vs.vip) {
                Some(c) => (&c.backends, c.source == Source::Cluster),
                None => (&empty, false),
            };
            match backends::decide(current, from_cluster, &answer, self.config.max_backends) {
                Decision::Replace => {
                    info!(vs = %vs.vip, backends = ?answer, "new desired set from the cluster");
                    if !self.emit(vs.vip, answer, Source::Cluster).await {
                        return false;
                    }
                    changed = true;
                }
                Decision::RejectEmpty => {
                    self.counters.bump(|c| &c.empty_answers_ignored);
                    warn!(
                        vs = %vs.vip,
                        kept = current.len(),
                        objects = objects.len(),
                        "the cluster answered with no usable {} backend on port {:?}; keeping the current set (fail-static)",
                        vs.family(),
                        vs.port_name
                    );
                }
                Decision::RejectOversized => {
                    self.counters.bump(|c| &c.oversized_answers_ignored);
                    warn!(
                        vs = %vs.vip,
                        listed = answer.len(),
                        max = self.config.max_backends,
                        kept = current.len(),
                        "the cluster listed more apiservers than allowed; keeping the current set"
                    );
                }
                Decision::Unchanged | Decision::EmptyStaysEmpty => {}
            }
        }
        if changed {
            self.write_cache();
        }
        true
    }

    async fn emit(&mut self, vip: Endpoint, backends: BTreeSet<Endpoint>, source: Source) -> bool {
        self.generation += 1;
        let set = DesiredSet {
            vs: vip,
            backends: backends.clone(),
            source,
            generation: self.generation,
        };
        self.current.insert(vip, Current { backends, source });
        self.latest.send_modify(|m| {
            m.insert(vip, set.clone());
        });
        self.counters.bump(|c| &c.desired_sets_emitted);
        self.tx.send(set).await.is_ok()
    }

    /// Hands the last real sets to the cache writer (latest wins), so that
    /// fsync never delays the next event.
    fn write_cache(&mut self) {
        if self.config.cache_path.is_none() {
            return;
        }
        // What the cluster said is last-known-good, and so is a set still
        // from the cache (the cluster has not given that virtual server a
        // usable answer yet): dropping it would lose it at the next start.
        // Seeds are configuration, never cached.
        let uncached: Vec<Endpoint> = self
            .config
            .virtual_servers
            .iter()
            .filter(|v| !v.cached)
            .map(|v| v.vip)
            .collect();
        let sets: CachedSets = self
            .current
            .iter()
            .filter(|(vip, _)| !uncached.contains(vip))
            .filter(|(_, c)| c.source != Source::Seed && !c.backends.is_empty())
            .map(|(vip, c)| (*vip, c.backends.clone()))
            .collect();
        let writer = self.cache_writer.get_or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            let path = self.config.cache_path.clone().unwrap_or_default();
            tokio::spawn(cache_writer(path, rx, self.counters.clone()));
            tx
        });
        writer.send_replace(Some(sets));
    }
}

/// Writes the latest sets whenever they change; ends when the engine does
/// (after writing what it was last given).
async fn cache_writer(
    path: std::path::PathBuf,
    mut rx: watch::Receiver<Option<CachedSets>>,
    counters: Arc<Counters>,
) {
    while rx.changed().await.is_ok() {
        let Some(sets) = rx.borrow_and_update().clone() else {
            continue;
        };
        let path = path.clone();
        let result = tokio::task::spawn_blocking(move || cache::store(&path, &sets)).await;
        match result {
            Ok(Ok(())) => counters.bump(|c| &c.cache_writes),
            Ok(Err(e)) => {
                counters.bump(|c| &c.cache_write_errors);
                warn!(error = %e, "cannot write the backend cache");
            }
            Err(e) => {
                counters.bump(|c| &c.cache_write_errors);
                warn!(error = %e, "backend cache writer failed");
            }
        }
    }
}

/// The next backoff: doubled (saturating), at most `max`.
fn next_backoff(current: Duration, max: Duration) -> Duration {
    current.saturating_mul(2).min(max)
}

/// Now plus `d`, or far in the future if that does not fit.
fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

fn map_event<K>(e: Event<K>, f: impl Fn(K) -> Obj) -> Event<Obj> {
    match e {
        Event::Apply(k) => Event::Apply(f(k)),
        Event::Delete(k) => Event::Delete(f(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(f(k)),
        Event::InitDone => Event::InitDone,
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}

fn is_gone(e: &watcher::Error) -> bool {
    // An ERROR event with 410 inside a watch: kube-runtime relists next.
    // (An HTTP 410 on the watch request itself is counted as an ordinary
    // error, so repeated ones end the session, which relists.)
    matches!(e, watcher::Error::WatchError(s) if s.code == 410)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_saturates_and_is_clamped() {
        let max = Duration::from_secs(30);
        assert_eq!(
            next_backoff(Duration::from_millis(200), max),
            Duration::from_millis(400)
        );
        assert_eq!(next_backoff(Duration::from_secs(20), max), max);
        assert_eq!(next_backoff(max, max), max);
        // Used to panic: `Duration * 2` overflows.
        assert_eq!(next_backoff(Duration::MAX, max), max);
        assert_eq!(next_backoff(Duration::MAX, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = tokio::time::Instant::now();
        assert!(deadline_after(Duration::MAX) > now);
        assert!(deadline_after(Duration::from_secs(1)) > now);
    }
}
