//! The [`Checker`]: one task and one persistent connection per watched
//! backend, state changes out on channels, counters for metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use apiserver_proxy_types::Endpoint;
use rand::RngExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{HealthConfig, MAX_DURATION, Mode};
use crate::conn::{Prober, Requested};
use crate::error::Result;
use crate::reason::{FailureKind, Phase, Reason, State};
use crate::state::{Observation, Tracker};

/// A change of one backend's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub backend: Endpoint,
    pub state: State,
    /// `None` for the first report on this backend.
    pub previous: Option<State>,
    pub reason: Reason,
    /// When the change was observed (monotonic, for latencies).
    pub at: Instant,
    /// The same moment on the wall clock (for logs and status output).
    pub at_system: SystemTime,
}

/// What a [`ProbeRecord`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Opening the persistent connection (TCP, then TLS in `https` mode).
    Connect,
    /// One readiness request over the persistent connection.
    Readiness,
    /// The persistent connection ended (latency is its lifetime).
    ConnectionLost,
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// Readiness answered an `unknown_statuses` code (401/403).
    Unknown,
    Failed(FailureKind),
}

/// One measurement, handed to the observer callback as it happens. The
/// manager maps these to its metrics; this crate knows no metrics library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    pub backend: Endpoint,
    pub kind: ProbeKind,
    pub outcome: Outcome,
    pub latency: Duration,
    pub status: Option<u16>,
}

/// Called for every [`ProbeRecord`], from the backend's task: keep it cheap
/// and non-blocking.
pub type Observer = Arc<dyn Fn(&ProbeRecord) + Send + Sync>;

/// Counters and the current state of one backend, for metrics and status
/// output. Counters start at zero when the backend is watched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub state: Option<State>,
    pub reason: Option<Reason>,
    pub since: Option<SystemTime>,
    pub state_changes: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub connections_lost: u64,
    pub probes: u64,
    pub probe_failures: u64,
    /// Readiness answers in `unknown_statuses` (401/403).
    pub probes_unknown: u64,
    /// Failures of any kind (connect, readiness, lost connections) by kind.
    pub failures: BTreeMap<FailureKind, u64>,
    pub last_connect_latency: Option<Duration>,
    pub last_probe_latency: Option<Duration>,
}

/// The result of [`probe_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub state: State,
    pub reason: Reason,
    pub connect_latency: Duration,
    /// `None` when no readiness request was made (connect failed, or `tcp`).
    pub probe_latency: Option<Duration>,
}

/// Probes `backend` once with `config` (no thresholds): for a CLI that
/// checks a backend before adding it. Connects, sends one readiness request,
/// closes.
pub async fn probe_once(config: &HealthConfig, backend: Endpoint) -> Result<ProbeResult> {
    let prober = Prober::new(config.clone())?;
    let started = Instant::now();
    let connected = prober.connect(backend.0, config.connect_timeout).await;
    let connect_latency = started.elapsed();
    let mut conn = match connected {
        Err(reason) => {
            return Ok(ProbeResult {
                state: State::Dead,
                reason,
                connect_latency,
                probe_latency: None,
            });
        }
        Ok(c) => c,
    };
    if config.mode == Mode::Tcp {
        return Ok(ProbeResult {
            state: State::Ready,
            reason: Reason::Connected,
            connect_latency,
            probe_latency: None,
        });
    }
    let started = Instant::now();
    let (state, reason) = match prober.request(&mut conn).await {
        Requested::Status(status, _) => match classify(config, status) {
            Observation::Ready(r) => (State::Ready, r),
            Observation::Unknown(r) => (State::Unknown, r),
            Observation::NotReady(r) => (State::NotReady, r),
            Observation::Dead(r) => (State::Dead, r),
        },
        Requested::Timeout => (State::NotReady, Reason::Timeout(Phase::Request)),
        Requested::Lost(r) => (State::Dead, r),
    };
    Ok(ProbeResult {
        state,
        reason,
        connect_latency,
        probe_latency: Some(started.elapsed()),
    })
}

fn classify(config: &HealthConfig, status: u16) -> Observation {
    if config.success_statuses.contains(&status) {
        Observation::Ready(Reason::Status(status))
    } else if config.unknown_statuses.contains(&status) {
        Observation::Unknown(Reason::Status(status))
    } else {
        Observation::NotReady(Reason::Status(status))
    }
}

/// Watches backends and reports their state changes.
///
/// Cheap to clone (all clones share the same tasks). Dropping the last
/// clone stops every backend task and closes their connections.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("config", &self.inner.shared.prober.config)
            .field("backends", &self.backends())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Mutex<BTreeMap<Endpoint, JoinHandle<()>>>,
    next_generation: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, task) in std::mem::take(&mut *lock(&self.tasks)) {
            task.abort();
        }
    }
}

struct Shared {
    prober: Prober,
    observer: Option<Observer>,
    /// Guards state, counters and the subscriber list together, so that a
    /// new subscriber's snapshot and the events after it never overlap.
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    backends: BTreeMap<Endpoint, Entry>,
    subscribers: Vec<mpsc::UnboundedSender<HealthEvent>>,
}

struct Entry {
    /// Which `watch` this entry belongs to: a task from an earlier watch of
    /// the same backend, still finishing after `unwatch`, must not touch it.
    generation: u64,
    stats: BackendStats,
    last_event: Option<HealthEvent>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Checker {
    /// Validates `config` and reads its files (CA, client certificate).
    /// Needs no runtime; [`Checker::watch`] does.
    pub fn new(config: HealthConfig) -> Result<Checker> {
        Self::build(config, None)
    }

    /// Like [`Checker::new`], with a callback for every measurement.
    pub fn with_observer(config: HealthConfig, observer: Observer) -> Result<Checker> {
        Self::build(config, Some(observer))
    }

    fn build(config: HealthConfig, observer: Option<Observer>) -> Result<Checker> {
        let prober = Prober::new(config)?;
        Ok(Checker {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    prober,
                    observer,
                    book: Mutex::new(Book::default()),
                }),
                tasks: Mutex::new(BTreeMap::new()),
                next_generation: AtomicU64::new(1),
            }),
        })
    }

    pub fn config(&self) -> &HealthConfig {
        &self.inner.shared.prober.config
    }

    /// A new receiver of state changes. It first receives the last event of
    /// every backend already reported, then every change as it happens.
    /// Unbounded: state changes are rare, and none may be lost.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<HealthEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut book = lock(&self.inner.shared.book);
        for entry in book.backends.values() {
            if let Some(ev) = &entry.last_event {
                let _ = tx.send(ev.clone());
            }
        }
        book.subscribers.push(tx);
        rx
    }

    /// Starts watching `backend`; `false` if it already was. Must be called
    /// within a tokio runtime: the backend's task is spawned on it.
    pub fn watch(&self, backend: Endpoint) -> bool {
        let mut tasks = lock(&self.inner.tasks);
        if tasks.contains_key(&backend) {
            return false;
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.shared.book).backends.insert(
            backend,
            Entry {
                generation,
                stats: BackendStats::default(),
                last_event: None,
            },
        );
        let shared = self.inner.shared.clone();
        tasks.insert(
            backend,
            tokio::spawn(run_backend(shared, backend, generation)),
        );
        true
    }

    /// Stops watching `backend` and closes its connection; `false` if it
    /// was not watched. No event is sent for it afterwards.
    pub fn unwatch(&self, backend: Endpoint) -> bool {
        let task = lock(&self.inner.tasks).remove(&backend);
        lock(&self.inner.shared.book).backends.remove(&backend);
        match task {
            Some(t) => {
                t.abort();
                true
            }
            None => false,
        }
    }

    /// Makes the watched set equal to `backends`.
    pub fn set_backends(&self, backends: &BTreeSet<Endpoint>) {
        for gone in self.backends().difference(backends) {
            self.unwatch(*gone);
        }
        for b in backends {
            self.watch(*b);
        }
    }

    pub fn backends(&self) -> BTreeSet<Endpoint> {
        lock(&self.inner.tasks).keys().copied().collect()
    }

    /// The last reported state of `backend`.
    pub fn state(&self, backend: Endpoint) -> Option<State> {
        lock(&self.inner.shared.book)
            .backends
            .get(&backend)
            .and_then(|e| e.stats.state)
    }

    /// State and counters of every watched backend.
    pub fn stats(&self) -> BTreeMap<Endpoint, BackendStats> {
        lock(&self.inner.shared.book)
            .backends
            .iter()
            .map(|(b, e)| (*b, e.stats.clone()))
            .collect()
    }
}

impl Shared {
    fn config(&self) -> &HealthConfig {
        &self.prober.config
    }

    /// Feeds the tracker; on a change, records and publishes it.
    fn observe(&self, backend: Endpoint, generation: u64, tracker: &mut Tracker, obs: Observation) {
        let previous = tracker.state();
        let Some((state, reason)) = tracker.observe(obs) else {
            return;
        };
        let event = HealthEvent {
            backend,
            state,
            previous,
            reason,
            at: Instant::now(),
            at_system: SystemTime::now(),
        };
        let mut book = lock(&self.book);
        let Some(entry) = book.backends.get_mut(&backend) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        tracing::info!(
            backend = %backend,
            state = %state,
            previous = previous.map(|p| p.to_string()),
            reason = %event.reason,
            "apiserver health changed"
        );
        entry.stats.state = Some(state);
        entry.stats.reason = Some(event.reason.clone());
        entry.stats.since = Some(event.at_system);
        entry.stats.state_changes += 1;
        entry.last_event = Some(event.clone());
        book.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn record(
        &self,
        backend: Endpoint,
        generation: u64,
        kind: ProbeKind,
        outcome: Outcome,
        latency: Duration,
        status: Option<u16>,
    ) {
        {
            let mut book = lock(&self.book);
            let Some(entry) = book.backends.get_mut(&backend) else {
                return;
            };
            if entry.generation != generation {
                return;
            }
            let s = &mut entry.stats;
            let failed = matches!(outcome, Outcome::Failed(_));
            match kind {
                ProbeKind::Connect => {
                    s.connects += 1;
                    s.connect_failures += u64::from(failed);
                    s.last_connect_latency = Some(latency);
                }
                ProbeKind::Readiness => {
                    s.probes += 1;
                    s.probe_failures += u64::from(failed);
                    s.probes_unknown += u64::from(outcome == Outcome::Unknown);
                    s.last_probe_latency = Some(latency);
                }
                ProbeKind::ConnectionLost => s.connections_lost += 1,
            }
            if let Outcome::Failed(k) = outcome {
                *s.failures.entry(k).or_default() += 1;
            }
        }
        if let Some(observer) = &self.observer {
            observer(&ProbeRecord {
                backend,
                kind,
                outcome,
                latency,
                status,
            });
        }
    }

    /// `interval ± jitter`, uniformly.
    fn next_interval(&self) -> Duration {
        let c = self.config();
        let j = c.jitter.as_secs_f64();
        let offset = if j > 0.0 {
            rand::rng().random_range(-j..=j)
        } else {
            0.0
        };
        Duration::try_from_secs_f64((c.interval.as_secs_f64() + offset).max(0.001))
            .unwrap_or(c.interval)
    }

    /// Reconnect delay after `failures` consecutive failed connects: 1 s,
    /// doubling up to `max_backoff`, with the same relative jitter as the
    /// probe interval.
    fn backoff(&self, failures: u32) -> Duration {
        let c = self.config();
        let base = Duration::from_secs(1)
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(c.max_backoff);
        let rel = c.jitter.as_secs_f64() / c.interval.as_secs_f64();
        let factor = if rel > 0.0 {
            rand::rng().random_range(1.0 - rel..=1.0 + rel)
        } else {
            1.0
        };
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }
}

/// `d` from now; a setting too large for the clock (validation prevents
/// that) waits [`MAX_DURATION`] instead of panicking.
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(MAX_DURATION))
        .unwrap_or(now)
}

fn failure(reason: &Reason) -> Outcome {
    reason.failure_kind().map_or(Outcome::Ok, Outcome::Failed)
}

/// The life of one watched backend. See the crate documentation for the
/// rules this implements.
async fn run_backend(shared: Arc<Shared>, backend: Endpoint, generation: u64) {
    let config = shared.config().clone();
    let mut tracker = Tracker::new(config.rise, config.fall);
    // Consecutive failed connects, for the backoff.
    let mut connect_failures: u32 = 0;
    // Why the previous connection ended, while the reconnect that confirms
    // it is under way.
    let mut lost: Option<Reason> = None;
    // When the next readiness probe is due. It is kept across reconnects,
    // so that a backend that closes its connections (after each answer, or
    // when idle for less than the interval) is still probed once per
    // interval, not once per connection. `None`: at once, on the first
    // connection and on the first one after the backend was found dead.
    let mut due: Option<Instant> = None;
    // The previous connection's heartbeat went unacknowledged: the
    // reconnect that confirms it uses `heartbeat.confirm_timeout`.
    let mut heartbeat_lost = false;
    loop {
        let started = Instant::now();
        // A heartbeat that went unacknowledged is confirmed by a reconnect
        // as short as a live host needs to answer a SYN: the rest of the
        // one-second budget.
        let connect_timeout = if heartbeat_lost {
            config.heartbeat.confirm_timeout
        } else {
            config.connect_timeout
        };
        heartbeat_lost = false;
        let connected = shared.prober.connect(backend.0, connect_timeout).await;
        let connect_latency = started.elapsed();
        let mut conn = match connected {
            Err(reason) => {
                shared.record(
                    backend,
                    generation,
                    ProbeKind::Connect,
                    failure(&reason),
                    connect_latency,
                    None,
                );
                let reason = match lost.take() {
                    Some(cause) => Reason::Lost {
                        cause: Box::new(cause),
                        confirm: Box::new(reason),
                    },
                    None => reason,
                };
                shared.observe(backend, generation, &mut tracker, Observation::Dead(reason));
                due = None;
                connect_failures = connect_failures.saturating_add(1);
                tokio::time::sleep(shared.backoff(connect_failures)).await;
                continue;
            }
            Ok(c) => c,
        };
        shared.record(
            backend,
            generation,
            ProbeKind::Connect,
            Outcome::Ok,
            connect_latency,
            None,
        );
        let connected_at = Instant::now();
        // The connect alone confirms that a lost connection was no death;
        // readiness waits for its usual time. After a request timeout the
        // backend is alive but did not answer: one readiness failure.
        let confirming = lost.take();
        if confirming == Some(Reason::Timeout(Phase::Request)) {
            shared.observe(
                backend,
                generation,
                &mut tracker,
                Observation::NotReady(Reason::Timeout(Phase::Request)),
            );
        }
        // Whether this connection carried a good result, and whether it
        // ended under a readiness request.
        let mut answered = false;
        let mut under_request = false;
        let heartbeat = conn.heartbeat();
        let end = loop {
            let next = due.unwrap_or_else(Instant::now);
            tokio::select! {
                reason = conn.closed() => break reason,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            if config.mode == Mode::Tcp {
                // The probe is the connection itself: it stands now.
                answered = true;
                connect_failures = 0;
                due = Some(after(shared.next_interval()));
                shared.observe(
                    backend,
                    generation,
                    &mut tracker,
                    Observation::Ready(Reason::Connected),
                );
                continue;
            }
            // A keepalive probe unanswered right now means the host is
            // probably silent: let the kernel settle that first.
            let settle = config
                .keepalive
                .user_timeout
                .saturating_add(config.keepalive.interval);
            if let Some(reason) = conn.keepalive_settled(settle).await {
                break reason;
            }
            let requested = shared.prober.request(&mut conn).await;
            due = Some(after(shared.next_interval()));
            match requested {
                Requested::Status(status, latency) => {
                    answered = true;
                    connect_failures = 0;
                    let obs = classify(&config, status);
                    let outcome = match &obs {
                        Observation::Ready(_) => Outcome::Ok,
                        Observation::Unknown(_) => Outcome::Unknown,
                        _ => Outcome::Failed(FailureKind::HttpStatus),
                    };
                    shared.record(
                        backend,
                        generation,
                        ProbeKind::Readiness,
                        outcome,
                        latency,
                        Some(status),
                    );
                    shared.observe(backend, generation, &mut tracker, obs);
                }
                Requested::Timeout => {
                    shared.record(
                        backend,
                        generation,
                        ProbeKind::Readiness,
                        Outcome::Failed(FailureKind::Timeout),
                        config.timeout,
                        None,
                    );
                    break Reason::Timeout(Phase::Request);
                }
                Requested::Lost(reason) => {
                    under_request = true;
                    break reason;
                }
            }
        };
        drop(conn);
        shared.record(
            backend,
            generation,
            ProbeKind::ConnectionLost,
            failure(&end),
            connected_at.elapsed(),
            None,
        );
        tracing::debug!(backend = %backend, reason = %end, "persistent connection ended");
        match (end, confirming) {
            // A heartbeat's PING (or a request) went unacknowledged through
            // three tries: almost surely silence, but on a lossy link three
            // losses in a row happen. A SYN is a fourth, independent try: a
            // live host answers it within a round trip. Reconnect at once
            // with the short `confirm_timeout`; if that fails, dead.
            (Reason::KeepaliveTimeout, None) if heartbeat => {
                lost = Some(Reason::KeepaliveTimeout);
                heartbeat_lost = true;
            }
            // The kernel already waited out the silence (or retransmitted
            // our request in vain): that is the confirmation. Dead now; the
            // reconnect loop takes over.
            (end @ (Reason::KeepaliveTimeout | Reason::Unacknowledged), _) => {
                shared.observe(backend, generation, &mut tracker, Observation::Dead(end));
                due = None;
            }
            // A request timeout: reconnect at once. If that works, the
            // backend is slow, not dead (one readiness failure, above).
            (end @ Reason::Timeout(Phase::Request), _) => lost = Some(end),
            // The reconnect that confirmed a loss died under its first
            // request, before any answer: the backend is not serving.
            (end, Some(cause)) if !answered && under_request => {
                shared.observe(
                    backend,
                    generation,
                    &mut tracker,
                    Observation::Dead(Reason::Lost {
                        cause: Box::new(cause),
                        confirm: Box::new(end),
                    }),
                );
                due = None;
                connect_failures = connect_failures.saturating_add(1);
                tokio::time::sleep(shared.backoff(connect_failures)).await;
            }
            // The reconnect that confirmed a loss was closed before its
            // first probe (a keep-alive timeout shorter than the interval,
            // or a server that closes what it accepts). The connect proved
            // the backend alive; the next connection is made when the probe
            // is due (an interval from now if that time has passed: no
            // reconnect loop), and that probe settles it.
            (end, Some(_)) if !answered => {
                let at = match due {
                    Some(at) if at > Instant::now() => at,
                    _ => after(shared.next_interval()),
                };
                due = Some(at);
                tokio::time::sleep_until(at.into()).await;
                lost = Some(end);
            }
            // Reset, FIN, error on a connection that answered (or was not
            // confirming anything): reconnect at once to confirm.
            (end, _) => lost = Some(end),
        }
    }
}
