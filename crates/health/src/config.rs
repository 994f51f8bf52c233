//! What the checker is told: [`HealthConfig`] and its parts, all with
//! defaults that are safe to run with (TLS verified, nothing insecure).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// Where a pod finds its cluster's CA. The default trust anchor.
pub const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The name every kube-apiserver serving certificate carries.
pub const DEFAULT_SERVER_NAME: &str = "kubernetes";

/// Upper bound of `interval`, `timeout`, `connect_timeout`, `max_backoff`
/// and `keepalive.user_timeout`: longer settings are refused rather than
/// overflow a timer.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// `TCP_KEEPIDLE` and `TCP_KEEPINTVL` at most (the kernel's limit).
const MAX_KEEPALIVE_SECS: u64 = 32767;

/// `TCP_KEEPCNT` at most (the kernel's limit).
const MAX_KEEPALIVE_COUNT: u32 = 127;

/// A readiness path: origin-form (`/readyz`, `/readyz?verbose`), the one
/// check for the configuration file, both command lines and the checker.
pub fn check_path(path: &str) -> Result<(), Error> {
    if path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok() {
        Ok(())
    } else {
        Err(Error::InvalidPath(path.to_string()))
    }
}

/// A probe must time out before the next one is due.
pub fn check_timeout(timeout: Duration, interval: Duration) -> Result<(), Error> {
    if timeout < interval {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "the timeout ({timeout:?}) must be shorter than the interval ({interval:?})"
        )))
    }
}

/// How a backend is probed: the one definition, for the configuration
/// file, both command lines and the health checker.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Persistent TLS connection; readiness by `GET path` over it.
    #[default]
    Https,
    /// Persistent plain TCP connection; readiness by `GET path` over it.
    Http,
    /// Persistent plain TCP connection only: liveness, no readiness.
    Tcp,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Https => "https",
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        })
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "https" => Ok(Mode::Https),
            "http" => Ok(Mode::Http),
            "tcp" => Ok(Mode::Tcp),
            _ => Err(Error::InvalidMode(s.to_string())),
        }
    }
}

/// A client certificate and its key, both PEM files (for example the node's
/// kubelet client certificate, `/var/lib/kubelet/pki/kubelet-client-current.pem`,
/// which holds both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// TLS settings for [`Mode::Https`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA that signs the apiservers' certificates. `None` means the
    /// in-cluster service-account CA, [`SERVICE_ACCOUNT_CA`].
    pub ca_file: Option<PathBuf>,
    /// The name the serving certificate must carry. Defaults to
    /// [`DEFAULT_SERVER_NAME`]; an IP literal is accepted too.
    pub server_name: String,
    /// Presented to the apiserver so that `/readyz` answers even where
    /// anonymous requests are refused (401/403).
    pub client_cert: Option<ClientCert>,
    /// Accept any certificate. Never the default; for debugging only.
    pub insecure_skip_verify: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            server_name: DEFAULT_SERVER_NAME.to_string(),
            client_cert: None,
            insecure_skip_verify: false,
        }
    }
}

impl TlsConfig {
    /// The CA file that will be read: the configured one or the in-cluster one.
    pub fn ca_path(&self) -> PathBuf {
        self.ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_CA))
    }
}

/// Kernel settings of the persistent connection, which find a black-holed
/// backend without sending a single request.
///
/// With the defaults an idle connection whose peer goes silent is dropped by
/// the kernel 2–3 s after the last packet it received: keepalive probes go
/// out after `idle` of silence and every `interval` after that, and
/// `TCP_USER_TIMEOUT` aborts once `user_timeout` has passed without an
/// answer (on Linux it also bounds keepalive, overriding `count`). The same
/// `user_timeout` bounds unacknowledged data, such as a probe sent into the
/// void.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// `TCP_KEEPIDLE`: whole seconds, 1 s to 32767 s.
    pub idle: Duration,
    /// `TCP_KEEPINTVL`: whole seconds, 1 s to 32767 s.
    pub interval: Duration,
    /// `TCP_KEEPCNT`, 1 to 127 (used where `user_timeout` is zero).
    pub count: u32,
    /// `TCP_USER_TIMEOUT`, at most [`MAX_DURATION`]; zero leaves the kernel
    /// default.
    pub user_timeout: Duration,
    /// Read the connection's line in `/proc/thread-self/net/tcp{,6}` (opened
    /// beside the socket, in its network namespace; read on tokio's blocking
    /// pool) to tell a silent host from a slow apiserver around readiness
    /// requests (once before each request, every 200 ms while one is slow).
    /// Each read costs time proportional to the node's TCP sockets; turn it
    /// off on hosts with very many, and black holes under a request are then
    /// found by the request timeout and a reconnect (≈ 3 s after the send).
    pub inspect_socket: bool,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            idle: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            count: 2,
            user_timeout: Duration::from_secs(3),
            inspect_socket: true,
        }
    }
}

/// The HTTP/2 heartbeat on the persistent connection: how a black-holed
/// backend is found within a second.
///
/// TCP keepalive cannot do it: its timers count whole seconds, and a
/// silent peer is noticed 2–3 s after its last packet at best. So in
/// `https` mode, when the apiserver agrees to HTTP/2 (every kube-apiserver
/// does), the connection carries a PING frame whenever it has read nothing
/// for `interval`, and `TCP_USER_TIMEOUT` is set to `ack_timeout`, which the
/// kernel counts in milliseconds. A PING the backend's *kernel* does not
/// acknowledge is sent again by our kernel, as any segment: a tail-loss
/// probe about 200 ms after the send, a timed retransmission about 450 ms
/// after it. `TCP_USER_TIMEOUT` counts from that timed retransmission, so
/// the connection is aborted about `450 ms + ack_timeout` after the PING
/// went out. A reconnect then confirms it: a live host answers its SYN
/// within a round trip; without an answer within `confirm_timeout` the
/// backend is dead, at most `interval + 450 ms + ack_timeout +
/// confirm_timeout` (0.9 s with the defaults) after the host went silent.
///
/// The judge is the backend's kernel, not the apiserver: a stalled
/// apiserver (a long garbage-collection pause, a stopped process) still has
/// its PINGs acknowledged by its kernel, so a stall is not taken for a
/// death. The PING's own answer is not awaited; a stalled apiserver is
/// judged by its readiness answers as before (timeout, reconnect, not
/// ready). On a lossy link a false alarm needs the same PING, or its
/// acknowledgement, lost three times in a row and then the confirming SYN
/// or its answer lost too; see `docs/health.md` for the rates.
///
/// The cost to the apiserver is one PING frame (17 bytes, answered by its
/// HTTP/2 layer without running a handler) per `interval` per node, and no
/// request. `interval` zero turns the heartbeat off: HTTP/1.1, liveness from
/// keepalive alone ([`KeepaliveConfig`]), as in `http` and `tcp` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// A PING goes out after this long without reading anything; zero: no
    /// heartbeat. 50 ms to [`MAX_DURATION`].
    pub interval: Duration,
    /// `TCP_USER_TIMEOUT` of a connection with a heartbeat: how long after
    /// the kernel's first timed retransmission of unacknowledged data (a
    /// PING, a request) the connection is given up. [`MIN_ACK_TIMEOUT`] to
    /// [`MAX_DURATION`].
    pub ack_timeout: Duration,
    /// After a connection is given up that way, the reconnect confirming it
    /// must complete its TCP handshake within this (a live host answers a
    /// SYN in a round trip), or the backend is dead. A SYN is a fourth,
    /// independent try: a false alarm then needs four losses in a row.
    /// 10 ms to [`MAX_DURATION`].
    pub confirm_timeout: Duration,
}

impl HeartbeatConfig {
    /// No heartbeat: HTTP/1.1 and keepalive only.
    pub const OFF: HeartbeatConfig = HeartbeatConfig {
        interval: Duration::ZERO,
        ack_timeout: Duration::from_millis(100),
        confirm_timeout: Duration::from_millis(150),
    };

    /// Whether PINGs are sent (and HTTP/2 offered).
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_millis(200),
            ack_timeout: Duration::from_millis(100),
            confirm_timeout: Duration::from_millis(150),
        }
    }
}

/// Smallest heartbeat interval: a PING every 50 ms is already 20 frames a
/// second per node on every apiserver.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);

/// Smallest heartbeat acknowledgement timeout: the kernel's last
/// retransmission needs a round trip, and some slack, to be acknowledged
/// before the connection is given up.
pub const MIN_ACK_TIMEOUT: Duration = Duration::from_millis(100);

/// Everything the checker needs. `HealthConfig::default()` is the
/// recommended setting; see the crate documentation for what each failure
/// does with these numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub mode: Mode,
    /// The readiness path, origin form (`/readyz`, `/readyz?exclude=etcd`).
    pub path: String,
    /// Mean time between readiness probes on one backend.
    pub interval: Duration,
    /// Each wait is drawn uniformly from `interval ± jitter`, so nodes drift
    /// apart instead of probing in lock-step. Must be below `interval`.
    pub jitter: Duration,
    /// Bound on one readiness request (sending it and reading the answer) and
    /// on the TLS handshake.
    pub timeout: Duration,
    /// Bound on the TCP handshake. A live host answers a SYN within one
    /// round trip, so this is short; it is also how long a reconnect that
    /// confirms a lost connection may take.
    pub connect_timeout: Duration,
    /// Consecutive good probes that bring a backend that is not in service
    /// (`NotReady`, `Dead`) back to `Ready`/`Unknown`.
    pub rise: u32,
    /// Consecutive readiness failures that take a `Ready`/`Unknown` backend
    /// to `NotReady`. Liveness failures do not wait for it.
    pub fall: u32,
    /// Statuses of `GET path` that mean ready.
    pub success_statuses: Vec<u16>,
    /// Statuses that mean "alive, readiness unknown" (anonymous auth
    /// disabled): the backend stays in service.
    pub unknown_statuses: Vec<u16>,
    pub tls: TlsConfig,
    pub keepalive: KeepaliveConfig,
    pub heartbeat: HeartbeatConfig,
    /// Longest wait between reconnect attempts to a dead backend (attempts
    /// start 1 s apart and double, with the same relative jitter).
    pub max_backoff: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            mode: Mode::Https,
            path: "/readyz".to_string(),
            interval: Duration::from_secs(5),
            jitter: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            rise: 2,
            fall: 1,
            success_statuses: vec![200],
            unknown_statuses: vec![401, 403],
            tls: TlsConfig::default(),
            keepalive: KeepaliveConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl HealthConfig {
    /// Checks the numbers and the path; [`crate::Checker::new`] calls it.
    /// Durations are bounded ([`MAX_DURATION`] for the checker's own
    /// timings, the kernel's limits for keepalive), and an error names the
    /// field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::InvalidConfig(what));
        let within = |field: &str, d: Duration, min: Duration, max: Duration| {
            if d < min || d > max {
                bad(format!(
                    "{field} must be between {min:?} and {max:?}, got {d:?}"
                ))
            } else {
                Ok(())
            }
        };
        let tick = Duration::from_millis(1);
        within("interval", self.interval, tick, MAX_DURATION)?;
        if self.jitter >= self.interval {
            return bad(format!(
                "jitter must be below interval ({:?}), got {:?}",
                self.interval, self.jitter
            ));
        }
        within("timeout", self.timeout, tick, MAX_DURATION)?;
        within("connect_timeout", self.connect_timeout, tick, MAX_DURATION)?;
        within("max_backoff", self.max_backoff, tick, MAX_DURATION)?;
        if self.rise == 0 || self.fall == 0 {
            return bad("rise and fall must be at least 1".to_string());
        }
        let ka = &self.keepalive;
        // TCP_KEEPIDLE and TCP_KEEPINTVL take whole seconds, 1..=32767;
        // fractions are dropped.
        let second = Duration::from_secs(1);
        let max_keepalive = Duration::from_secs(MAX_KEEPALIVE_SECS);
        within("keepalive.idle", ka.idle, second, max_keepalive)?;
        within("keepalive.interval", ka.interval, second, max_keepalive)?;
        if !(1..=MAX_KEEPALIVE_COUNT).contains(&ka.count) {
            return bad(format!(
                "keepalive.count must be between 1 and {MAX_KEEPALIVE_COUNT}, got {}",
                ka.count
            ));
        }
        // Zero leaves the kernel default.
        within(
            "keepalive.user_timeout",
            ka.user_timeout,
            Duration::ZERO,
            MAX_DURATION,
        )?;
        let hb = &self.heartbeat;
        if hb.enabled() {
            within(
                "heartbeat.interval",
                hb.interval,
                MIN_HEARTBEAT_INTERVAL,
                MAX_DURATION,
            )?;
        }
        within(
            "heartbeat.ack_timeout",
            hb.ack_timeout,
            MIN_ACK_TIMEOUT,
            MAX_DURATION,
        )?;
        within(
            "heartbeat.confirm_timeout",
            hb.confirm_timeout,
            Duration::from_millis(10),
            MAX_DURATION,
        )?;
        if self.mode != Mode::Tcp {
            if self.success_statuses.is_empty() {
                return bad("success_statuses must not be empty".to_string());
            }
            if let Some(s) = self
                .success_statuses
                .iter()
                .find(|s| self.unknown_statuses.contains(s))
            {
                return Err(Error::InvalidConfig(format!(
                    "status {s} is both in success_statuses and unknown_statuses"
                )));
            }
            check_path(&self.path)?;
        }
        Ok(())
    }
}
