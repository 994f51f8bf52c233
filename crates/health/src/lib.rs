//! Health of each kube-apiserver behind the virtual server: event-driven
//! liveness and periodic semantic readiness, over one persistent connection
//! per backend.
//!
//! # Model
//!
//! For every watched backend ([`Endpoint`](apiserver_proxy_types::Endpoint))
//! a task keeps **one persistent connection** open (TLS in [`Mode::Https`],
//! the default; plain TCP in [`Mode::Http`] and [`Mode::Tcp`]).
//!
//! * **Liveness is event-driven.** A reset, FIN or socket error on that
//!   connection is seen the moment it arrives (hyper reads the idle socket;
//!   `tcp` mode reads it directly) and is confirmed by an immediate
//!   reconnect: if that fails (refused, times out, TLS fails) the backend is
//!   [`State::Dead`] at once. A black-holed backend sends nothing. With the
//!   heartbeat ([`HeartbeatConfig`], the default in `https` mode when the
//!   apiserver agrees to HTTP/2) the connection carries an HTTP/2 PING
//!   whenever it has read nothing for 200 ms, and `TCP_USER_TIMEOUT` is
//!   100 ms: when the backend's kernel does not acknowledge a PING, ours
//!   resends it twice and aborts the connection 100 ms after its first timed
//!   retransmission (≈ 550 ms after the send); a reconnect whose SYN is not
//!   answered within 150 ms confirms it. A silent host is dead 0.7–0.9 s
//!   after it went silent, while a stalled apiserver (its kernel
//!   acknowledges) is not. Without the heartbeat the kernel finds it: TCP
//!   keepalive (idle 1 s, every 1 s) and
//!   `TCP_USER_TIMEOUT` 3 s abort a silent connection 2–3 s after the last
//!   packet received ([`KeepaliveConfig`]). Keepalive costs the apiserver no
//!   request: its kernel answers the probes. While a readiness request is
//!   outstanding the kernel suspends keepalive, so the checker then watches
//!   the socket's retransmissions instead: a live host's kernel acknowledges
//!   our request within a round trip even when the apiserver is slow, so two
//!   unanswered retransmissions mean silence, not slowness. And a request
//!   is not sent while a keepalive probe is unanswered (the host is probably
//!   silent already); it waits for the kernel to settle that first.
//! * **Readiness is semantic.** Every `interval ± jitter` (default 5 s ±
//!   0.5 s) one `GET path` (default `/readyz`) goes over the same
//!   connection. A status in `success_statuses` (default `[200]`) is good;
//!   one in `unknown_statuses` (default `[401, 403]`, anonymous auth
//!   disabled) means "alive, readiness unknown" ([`State::Unknown`], kept in
//!   service so that such clusters are not taken down); any other status
//!   (500 while draining) is a readiness failure. A client certificate
//!   ([`TlsConfig::client_cert`], e.g. the kubelet's) gets real readiness on
//!   clusters that refuse anonymous requests.
//! * **TLS is verified** against the cluster CA (the configured file, or the
//!   in-cluster service-account CA [`SERVICE_ACCOUNT_CA`]) for the name
//!   `kubernetes` ([`DEFAULT_SERVER_NAME`], carried by every apiserver
//!   certificate; configurable). A bad certificate is reported as
//!   [`Reason::Tls`] with a [`TlsProblem`] saying whether the name or the CA
//!   is wrong, never as a plain connection failure.
//!   [`TlsConfig::insecure_skip_verify`] exists and is never the default.
//!   Only the ring crypto provider is used.
//!
//! # States and how each failure counts
//!
//! [`State::Ready`] and [`State::Unknown`] are in service;
//! [`State::NotReady`] (alive, drain it) and [`State::Dead`] are not.
//!
//! | What happened | Counts as |
//! |---|---|
//! | connect refused, connect timeout (1 s), unreachable | liveness failure: `Dead` at once |
//! | TLS error (name, CA, validity, alert) or TLS handshake timeout | liveness failure: `Dead` at once, reason names the TLS problem |
//! | reset or FIN on the persistent connection, idle or mid-request | reconnect at once; if that fails: `Dead` at once ([`Reason::Lost`] with cause and confirmation); if it works: nothing is counted, and readiness is probed on the new connection when it is next due (one interval after the last probe). A reconnect that dies under its first request: `Dead`; one closed before its first probe is replaced when that probe is due, not at once |
//! | an answer, then the connection closes (`Connection: close`, or a reset right behind it) | the answer counts; the close is then like a FIN |
//! | a PING or request unacknowledged through the kernel's retransmissions and `heartbeat.ack_timeout` (heartbeat connections) | reconnect at once with `heartbeat.confirm_timeout` for the TCP handshake: fails → `Dead`; works → nothing is counted |
//! | kernel timeout without the heartbeat (keepalive / `TCP_USER_TIMEOUT`: black hole), idle or under a readiness request | liveness failure: `Dead` at once (the kernel already waited) |
//! | a readiness request retransmitted twice without any ACK (the host went silent mid-request; read from `/proc/thread-self/net/tcp{,6}`, opened beside the socket in its namespace and read on tokio's blocking pool, every 200 ms while a request waits) | liveness failure: `Dead` at once ([`Reason::Unacknowledged`]) |
//! | readiness request timeout (2 s) | connection dropped, reconnect at once; if that fails: `Dead` at once; if it works: one readiness failure (`fall`), however often it happens (a slow apiserver stays `NotReady`, never `Dead`) |
//! | HTTP status not in `success_statuses`/`unknown_statuses` (500, 503, 404) | one readiness failure (`fall`) |
//! | HTTP status in `unknown_statuses` (401, 403) | one good result, reported as `Unknown` |
//! | HTTP status in `success_statuses` (200) | one good result, reported as `Ready` |
//! | malformed HTTP, unreadable body | like a reset (reconnect to confirm) |
//!
//! Thresholds ([`Tracker`] implements them, without I/O):
//!
//! * The **first** result for a backend is reported at once, whatever it is.
//! * **fall** (default 1): `Ready`/`Unknown` becomes `NotReady` after `fall`
//!   consecutive readiness failures. Liveness failures ignore `fall`.
//! * **rise** (default 2): `NotReady`/`Dead` becomes `Ready` (or `Unknown`,
//!   after the last result) after `rise` consecutive good results. Probes
//!   follow the interval across reconnects (a backend that closes its
//!   connections is not probed more often); the first connection, and the
//!   first one after the backend was `Dead`, are probed at once, so a
//!   recovering backend is back after its reconnect plus `(rise − 1) ×
//!   interval`.
//! * `Dead` → `NotReady` needs no threshold (both are out of service): a
//!   backend that reconnects and answers 500 is reported alive but not ready
//!   at once. `Ready` ↔ `Unknown` likewise.
//! * In `tcp` mode the probe is the connection itself: whenever a probe is
//!   due (at once on the first connection and after `Dead`, then every
//!   interval) the connection standing counts as one good result. There is
//!   no readiness failure.
//!
//! Settings are bounded ([`HealthConfig::validate`]): `interval`, `timeout`,
//! `connect_timeout`, `max_backoff` and `keepalive.user_timeout` at most
//! [`MAX_DURATION`] (1 hour), keepalive idle and interval 1 s to 32767 s,
//! keepalive count 1 to 127; the error names the field.
//!
//! A dead backend is retried 1 s, 2 s, 4 s, then every `max_backoff` (5 s)
//! with jitter; a successful readiness answer resets the backoff.
//!
//! # Output
//!
//! [`Checker::subscribe`] gives an unbounded `tokio::sync::mpsc` receiver of
//! [`HealthEvent`] (backend, new and previous state, reason, `Instant` and
//! `SystemTime` observed). A new subscriber first gets the last event of each
//! backend. For metrics, [`Checker::with_observer`] takes a callback that
//! receives a [`ProbeRecord`] for every connect, readiness request and lost
//! connection (latency, outcome, failure kind), and [`Checker::stats`]
//! returns counters per backend ([`BackendStats`]). This crate depends on no
//! metrics library.
//!
//! # Load on the apiservers
//!
//! Each node sends one readiness request per interval to each apiserver, so
//! **each apiserver receives `nodes ÷ interval` requests per second**
//! (`nodes × masters ÷ interval` in total), all on connections that stay
//! open: no TLS handshake per probe. Liveness costs no request: at most one
//! HTTP/2 PING frame per `heartbeat.interval` per node (5 a second by
//! default), answered without running a handler. See
//! `docs/health.md` for the arithmetic against kubelet heartbeats.
//!
//! # API
//!
//! ```no_run
//! # async fn demo() -> Result<(), apiserver_proxy_health::Error> {
//! use apiserver_proxy_health::{Checker, HealthConfig, probe_once};
//! let config = HealthConfig::default(); // https, /readyz, 5 s, verified TLS
//! let backend = "10.0.0.11:6443".parse().expect("endpoint");
//! let once = probe_once(&config, backend).await?; // e.g. for a CLI
//! println!("{backend}: {} ({})", once.state, once.reason);
//! let checker = Checker::new(config)?;
//! let mut events = checker.subscribe();
//! checker.watch(backend); // or checker.set_backends(&set)
//! while let Some(ev) = events.recv().await {
//!     println!("{} is {} because {}", ev.backend, ev.state, ev.reason);
//! }
//! # Ok(()) }
//! ```

mod checker;
mod config;
mod conn;
mod error;
mod reason;
mod silence;
mod state;

pub use checker::{
    BackendStats, Checker, HealthEvent, Observer, Outcome, ProbeKind, ProbeRecord, ProbeResult,
    probe_once,
};
pub use config::{
    ClientCert, DEFAULT_SERVER_NAME, HealthConfig, HeartbeatConfig, KeepaliveConfig, MAX_DURATION,
    MIN_ACK_TIMEOUT, MIN_HEARTBEAT_INTERVAL, Mode, SERVICE_ACCOUNT_CA, TlsConfig, check_path,
    check_timeout,
};
pub use error::{Error, Result};
pub use reason::{FailureKind, Phase, Reason, State, TlsProblem};
pub use state::{Observation, Tracker};
