//! The daemon's configuration: one schema, read from a YAML file (ours) or a
//! JSON file (the Go bcs-apiserver-proxy's), then overridden by environment
//! and flags (the binaries do that part with clap).
//!
//! Files are read into a generic value first and walked by hand, so that
//! `config check` can name *every* problem with its path
//! (`virtualServers[0].seeds[1]: ...`) instead of stopping at the first.
//!
//! Here: the schema, its defaults, the errors, loading, and the checks only
//! the whole configuration can make. `reader` walks our YAML; `go`
//! translates the Go version's JSON; `default-config.yaml` is what
//! `config default` prints.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiserver_proxy_discovery::{DiscoveryConfig, VirtualServer};
pub use apiserver_proxy_election::Timings;
use apiserver_proxy_health::{ClientCert, HealthConfig, HeartbeatConfig};
use apiserver_proxy_types::Endpoint;
use serde_json::{Map, Value};

mod go;
mod lines;
mod reader;

use go::GO_TOP_KEYS;
use reader::{Reader, kind};

/// The file's format version, read from its `apiVersion`, as Kubernetes
/// component configs carry one: a later format can then be told apart and
/// converted. The group is ours, so no other tool's file is mistaken for it.
pub const API_VERSION: &str = "config.bcs-apiserver-proxy.io/v1alpha1";
/// The file's `kind`.
pub const KIND: &str = "ApiserverProxyConfiguration";

/// Default name of the dummy interface holding the VIPs (the dataplane's).
pub use apiserver_proxy_dataplane::DEFAULT_INTERFACE;
/// The Go version's metrics port.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:8004";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bcs-apiserver-proxy";
/// IPVS schedulers Debian's kernel ships as modules (`ip_vs_NAME`).
pub const KNOWN_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

pub use apiserver_proxy_dataplane::{DataplaneChoice, VipMode};

pub use apiserver_proxy_health::Mode as HealthMode;
/// The health crate's checks of a readiness path and of a timeout against
/// its interval: one rule for the file and both command lines.
pub use apiserver_proxy_health::{check_path, check_timeout};

/// How the daemon logs: one type for the file and the `--log-format` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// One virtual server and where its backends come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServerConfig {
    pub vip: Endpoint,
    pub scheduler: String,
    /// Static backends: the desired set until the cluster answers, and the
    /// last resort.
    pub seeds: Vec<Endpoint>,
    /// The EndpointSlice port name to take backends' ports from.
    pub port_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub mode: HealthMode,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub success_statuses: BTreeSet<u16>,
    /// None: the in-cluster service-account CA.
    pub ca_file: Option<PathBuf>,
    pub server_name: String,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Read the probe socket's retransmissions from procfs to see a silent
    /// host sooner (see docs/health.md); its cost grows with the node's
    /// TCP sockets.
    pub inspect_socket: bool,
    /// HTTP/2 PING on the probe connection after this long without reading
    /// anything; zero: no heartbeat (HTTP/1.1, keepalive only).
    pub heartbeat_interval: Duration,
    /// How long after the kernel's first timed retransmission of a
    /// heartbeat (or any data sent) the apiserver's kernel may still not
    /// have acknowledged it before the apiserver is dead.
    pub heartbeat_ack_timeout: Duration,
    /// How long the reconnect that confirms an unacknowledged heartbeat
    /// may take to connect before the apiserver is dead.
    pub heartbeat_confirm_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Watch the cluster at all (off: seeds only).
    pub enabled: bool,
    /// No event or bookmark for this long: relist.
    pub stale_watch_timeout: Duration,
}

/// The outside control-plane VIP: one address for everyone off the
/// cluster, held by exactly one control-plane node at a time on its real
/// interface, the holder chosen through a Lease (see
/// docs/control-plane.md). Off unless `vip` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneSettings {
    /// `None`: the mode is off.
    pub vip: Option<Endpoint>,
    /// The node's real interface (the one on the VIP's subnet), where the
    /// VIP is added and announced.
    pub interface: String,
    /// The apiservers the election reaches the Lease through, this node's
    /// own first (before the cluster exists it is the only one answering).
    pub apiservers: Vec<Endpoint>,
    /// This node's name in the Lease; unique among the candidates. Empty:
    /// the `NODE_NAME` environment variable, else the host name.
    pub identity: String,
    pub lease_namespace: String,
    pub lease_name: String,
    pub timings: Timings,
}

impl Default for ControlPlaneSettings {
    fn default() -> Self {
        ControlPlaneSettings {
            vip: None,
            interface: String::new(),
            apiservers: Vec::new(),
            identity: String::new(),
            lease_namespace: "kube-system".into(),
            lease_name: "bcs-apiserver-proxy-vip".into(),
            timings: Timings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub virtual_servers: Vec<VirtualServerConfig>,
    pub interface: String,
    pub vip_mode: VipMode,
    pub dataplane: DataplaneChoice,
    pub state_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    /// None: in-cluster credentials.
    pub kubeconfig: Option<PathBuf>,
    pub log_format: LogFormat,
    pub resync_interval: Duration,
    pub drain_timeout: Duration,
    pub health: HealthSettings,
    pub discovery: DiscoverySettings,
    pub control_plane: ControlPlaneSettings,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            mode: HealthMode::Https,
            path: "/readyz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 1,
            success_statuses: BTreeSet::from([200]),
            ca_file: None,
            server_name: "kubernetes".into(),
            client_cert: None,
            client_key: None,
            insecure_skip_verify: false,
            inspect_socket: true,
            heartbeat_interval: HeartbeatConfig::default().interval,
            heartbeat_ack_timeout: HeartbeatConfig::default().ack_timeout,
            heartbeat_confirm_timeout: HeartbeatConfig::default().confirm_timeout,
        }
    }
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            enabled: true,
            stale_watch_timeout: Duration::from_secs(300),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            virtual_servers: Vec::new(),
            interface: DEFAULT_INTERFACE.into(),
            vip_mode: VipMode::Address,
            dataplane: DataplaneChoice::Auto,
            state_dir: DEFAULT_STATE_DIR.into(),
            metrics_addr: DEFAULT_METRICS_ADDR
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8004))),
            kubeconfig: None,
            log_format: LogFormat::Text,
            // The IPVS table sends no change notifications: this tick is
            // what bounds the repair of `ipvsadm -C` or a deleted
            // destination (the host is repaired on notification). A pass
            // reads only our own services, so four a second cost little.
            resync_interval: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(30),
            health: HealthSettings::default(),
            discovery: DiscoverySettings::default(),
            control_plane: ControlPlaneSettings::default(),
        }
    }
}

/// One problem in a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
    /// The file's line holding the value, when the problem is the file's
    /// own (not one of the whole configuration after flags).
    pub line: Option<u64>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, _) => f.write_str(&self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
        }
    }
}

/// Why a configuration was refused: every problem found, not just the first.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid {format}: {detail}")]
    Syntax {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    #[error("{} has {} problem(s):\n  {}", source_name, problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
}

/// What a file said, before environment and flags are applied: the config
/// plus warnings (keys of the Go version that we read but do not honour).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
    pub format: FileFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Our YAML schema (see `default_yaml`).
    Yaml,
    /// The Go bcs-apiserver-proxy's JSON config.
    GoJson,
}

/// Reads and validates a configuration file. A file whose top level has
/// `proxyLvs` or another key of the Go version's JSON config is read as
/// that, so a Go deployment's file works unchanged.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// [`load_file`] for text already read; `source_name` names it in messages.
pub fn parse_str(text: &str, source_name: &str) -> Result<Loaded, ConfigError> {
    // YAML is a superset of JSON, so one parser reads both formats.
    let value: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        // One line naming line and column: the message is also the
        // daemon's one fatal log line, where a drawn snippet would be split.
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Syntax {
            path: source_name.into(),
            format: "YAML or JSON",
            // The library's advice is to its programmer, not to the
            // file's author.
            detail: e
                .to_string()
                .replace(", set DuplicateKeyPolicy in Options if acceptable", ""),
        })?
    };
    let mut r = Reader::default();
    let (config, format) = match &value {
        Value::Object(map) if GO_TOP_KEYS.iter().any(|k| map.contains_key(*k)) => {
            (r.go_config(map), FileFormat::GoJson)
        }
        Value::Object(map) => (r.config(map), FileFormat::Yaml),
        Value::Null => (Config::default(), FileFormat::Yaml),
        other => {
            r.problem(
                "",
                format!("the top level must be a mapping, found {}", kind(other)),
            );
            (Config::default(), FileFormat::Yaml)
        }
    };
    let lines = lines::of(text);
    for p in r.problems.iter_mut().chain(r.warnings.iter_mut()) {
        p.line = lines.get(&p.path).copied();
    }
    if r.problems.is_empty() {
        Ok(Loaded {
            config,
            warnings: r.warnings,
            format,
        })
    } else {
        Err(ConfigError::Invalid {
            source_name: source_name.into(),
            problems: r.problems,
        })
    }
}

/// Checks what only the whole configuration can tell (after flags): at least
/// one virtual server, no VIP twice, seeds of the VIP's family.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    if config.virtual_servers.is_empty() {
        problems.push(Problem {
            line: None,
            path: "virtualServers".into(),
            message: "no virtual server: give one with --vs VIP:PORT (and --rs IP:PORT for its \
                      seeds) or in the config file"
                .into(),
        });
    }
    let mut seen = BTreeSet::new();
    for (i, vs) in config.virtual_servers.iter().enumerate() {
        if !seen.insert(vs.vip) {
            problems.push(Problem {
                line: None,
                path: format!("virtualServers[{i}].vip"),
                message: format!("{} is configured twice", vs.vip),
            });
        }
        if let Err(message) = check_vip(vs.vip) {
            problems.push(Problem {
                line: None,
                path: format!("virtualServers[{i}].vip"),
                message,
            });
        }
        for (j, seed) in vs.seeds.iter().enumerate() {
            if let Err(message) = check_backend(vs.vip, *seed) {
                problems.push(Problem {
                    line: None,
                    path: format!("virtualServers[{i}].seeds[{j}]"),
                    message,
                });
            }
            if seed.family() != vs.vip.family() {
                problems.push(Problem {
                    line: None,
                    path: format!("virtualServers[{i}].seeds[{j}]"),
                    message: format!(
                        "{seed} is {} but the virtual server {} is {}: IPVS cannot mix families \
                         in one service",
                        seed.family(),
                        vs.vip,
                        vs.vip.family()
                    ),
                });
            }
        }
    }
    if let Err(e) = check_interface_name(&config.interface) {
        problems.push(Problem {
            line: None,
            path: "interface".into(),
            message: e,
        });
    }
    for (path, value, min, max) in [
        (
            "resyncInterval",
            config.resync_interval,
            RESYNC_MIN,
            RESYNC_MAX,
        ),
        (
            "drainTimeout",
            config.drain_timeout,
            Duration::ZERO,
            DRAIN_MAX,
        ),
    ] {
        if value < min || value > max {
            problems.push(Problem {
                line: None,
                path: path.into(),
                message: format!(
                    "{} is out of bounds: give between {} and {}",
                    humantime::format_duration(value),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            });
        }
    }
    // What the daemon's health checker and discovery would refuse at start,
    // refused here too: `config check` and the daemon judge alike.
    if let Err(e) = health_config(config).validate() {
        problems.push(Problem {
            line: None,
            path: "health".into(),
            message: e.to_string(),
        });
    }
    if let Err(e) = discovery_config(config).validate() {
        problems.push(Problem {
            line: None,
            path: "virtualServers / discovery".into(),
            message: e.to_string(),
        });
    }
    problems.extend(check_control_plane(config));
    if config.health.client_cert.is_some() != config.health.client_key.is_some() {
        problems.push(Problem {
            line: None,
            path: "health".into(),
            message: "clientCert and clientKey go together: give both or neither".into(),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            source_name: "the configuration".into(),
            problems,
        })
    }
}

impl Config {
    /// Whether `vip` is the outside control-plane VIP: the election's to
    /// hold, so never placed on the node, saved for the boot-time restore
    /// or cached (the restore would place it on every node).
    pub fn is_outside_vip(&self, vip: Endpoint) -> bool {
        self.control_plane.vip == Some(vip)
    }

    /// The configuration the daemon serves: with the outside control-plane
    /// VIP, when there is one, as one more virtual server, balanced like
    /// the node-local ones over the same apiservers and health checks (its
    /// seeds are the election's apiservers until the cluster lists its
    /// own). Its address is the election's to hold (see
    /// [`crate::control_plane`]), so the host places it on no interface.
    pub fn with_outside_virtual_server(mut self) -> Config {
        if let Some(vip) = self.control_plane.vip
            && !self.virtual_servers.iter().any(|vs| vs.vip == vip)
        {
            self.virtual_servers.push(VirtualServerConfig {
                vip,
                scheduler: "rr".into(),
                seeds: self.control_plane.apiservers.clone(),
                port_name: "https".into(),
            });
        }
        self
    }
}

/// What the outside control-plane VIP needs that only the whole
/// configuration can tell.
fn check_control_plane(config: &Config) -> Vec<Problem> {
    let cp = &config.control_plane;
    let Some(vip) = cp.vip else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let mut problem = |path: &str, message: String| {
        problems.push(Problem {
            line: None,
            path: format!("controlPlane.{path}"),
            message,
        })
    };
    if let Err(m) = check_vip(vip) {
        problem("vip", m);
    }
    if config
        .virtual_servers
        .iter()
        .any(|vs| vs.vip.ip() == vip.ip())
    {
        problem(
            "vip",
            format!(
                "{} is also a node-local VIP: the outside VIP must be an address of the \
                 control-plane nodes' network that nothing else holds",
                vip.ip()
            ),
        );
    }
    if cp.interface.is_empty() {
        problem(
            "interface",
            "give the node's interface on the VIP's network (eth0, ens3...)".into(),
        );
    } else if let Err(m) = check_interface_name(&cp.interface) {
        problem("interface", m);
    } else if cp.interface == config.interface {
        problem(
            "interface",
            format!(
                "{} is the node-local VIPs' dummy interface: the outside VIP goes on the \
                 node's real interface",
                cp.interface
            ),
        );
    }
    if cp.apiservers.is_empty() {
        problem(
            "apiservers",
            "give the apiservers to elect through (this node's own first), as IP:PORT".into(),
        );
    }
    for (i, a) in cp.apiservers.iter().enumerate() {
        // An apiserver's own address as the VIP would have the holder
        // announce another node's address as its own.
        if let Err(m) = check_backend(vip, *a) {
            problem(&format!("apiservers[{i}]"), m);
        }
        if a.family() != vip.family() {
            problem(
                &format!("apiservers[{i}]"),
                format!(
                    "{a} is {} but the VIP {vip} is {}",
                    a.family(),
                    vip.family()
                ),
            );
        }
    }
    if cp.lease_namespace.is_empty() || cp.lease_name.is_empty() {
        problem("lease", "the Lease needs a namespace and a name".into());
    }
    for p in cp.timings.check() {
        problem("timings", p);
    }
    // The holder sets or refreshes the address only when its write came
    // back early enough for the address to expire before anyone may take
    // over: leave at least 100 ms for that round trip.
    let sent = std::time::Instant::now();
    if !cp.timings.outlived_by(
        sent,
        sent + Duration::from_millis(100),
        ADDRESS_LIFETIME_BUDGET,
    ) {
        problem(
            "leaseDuration",
            format!(
                "{} ms is too short: a killed holder's address lives up to {} ms after its \
                 last refresh and must be gone before anyone may take the lease, with 100 ms \
                 left for the renewal's round trip: give at least {} ms",
                cp.timings.lease_duration.as_millis(),
                ADDRESS_LIFETIME_BUDGET.as_millis(),
                ADDRESS_LIFETIME_BUDGET.as_millis() + 100
            ),
        );
    }
    problems
}

/// How long after it was set or refreshed with a one-second lifetime an
/// address is usually still there: the kernel's lifetime check runs on a
/// timer with its own slack (1.02 to 1.06 s measured on kernel 6.18); the
/// rest is room for a busy node. Not a bound: another address added or
/// changed on the node in the second after the refresh moves the kernel's
/// next check to a second after that change (up to 1.99 s measured; see
/// docs/control-plane.md, "The limit of this").
pub const ADDRESS_LIFETIME_BUDGET: Duration = Duration::from_millis(1300);

/// The health crate's configuration from ours.
pub fn health_config(c: &Config) -> HealthConfig {
    let h = &c.health;
    let defaults = HealthConfig::default();
    let mut tls = defaults.tls.clone();
    tls.ca_file = h.ca_file.clone();
    tls.server_name = h.server_name.clone();
    tls.insecure_skip_verify = h.insecure_skip_verify;
    let mut keepalive = defaults.keepalive;
    keepalive.inspect_socket = h.inspect_socket;
    if let (Some(cert), Some(key)) = (&h.client_cert, &h.client_key) {
        tls.client_cert = Some(ClientCert {
            cert_file: cert.clone(),
            key_file: key.clone(),
        });
    }
    HealthConfig {
        mode: h.mode,
        path: h.path.clone(),
        interval: h.interval,
        // Nodes drift apart instead of probing in lock-step.
        jitter: h.interval / 10,
        timeout: h.timeout,
        rise: h.rise,
        fall: h.fall,
        success_statuses: h.success_statuses.iter().copied().collect(),
        tls,
        keepalive,
        heartbeat: HeartbeatConfig {
            interval: h.heartbeat_interval,
            ack_timeout: h.heartbeat_ack_timeout,
            confirm_timeout: h.heartbeat_confirm_timeout,
        },
        ..defaults
    }
}

/// The discovery crate's configuration from ours (without the cache path,
/// which the daemon adds).
pub fn discovery_config(c: &Config) -> DiscoveryConfig {
    let vss = c
        .virtual_servers
        .iter()
        .map(|vs| {
            let mut v = VirtualServer::new(vs.vip);
            v.port_name = vs.port_name.clone();
            v.seeds = vs.seeds.iter().copied().collect();
            v.cached = !c.is_outside_vip(vs.vip);
            v
        })
        .collect();
    let mut dc = DiscoveryConfig::new(vss);
    dc.stale_after = c.discovery.stale_watch_timeout;
    dc
}

/// Bounds of the durations the manager itself uses. The health checker and
/// discovery check theirs ([`validate`] asks them).
pub const RESYNC_MIN: Duration = Duration::from_millis(10);
pub const RESYNC_MAX: Duration = Duration::from_secs(3600);
pub const DRAIN_MAX: Duration = Duration::from_secs(24 * 3600);

/// The metrics listener's address: `IP:PORT`, `[IPv6]:PORT`, or an IPv6
/// address and port without brackets (`fd00::1:8004`, what a pod gets by
/// writing `$(NODE_IP):8004`): a listener needs a port, so the last group
/// is read as one.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || format!("{s:?} is not ADDRESS:PORT, for example 0.0.0.0:8004 or [::]:8004");
    let (ip, port) = s.rsplit_once(':').ok_or_else(bad)?;
    match (ip.parse::<std::net::Ipv6Addr>(), port.parse::<u16>()) {
        (Ok(ip), Ok(port)) => Ok(SocketAddr::from((ip, port))),
        _ => Err(bad()),
    }
}

/// A VIP the node can serve: a unicast address that is not loopback or
/// unspecified, and a port. One check for the config file and the CLI.
pub fn check_vip(vip: Endpoint) -> Result<(), String> {
    if let Some(what) = unusable(vip.ip()) {
        return Err(format!(
            "{vip}: the VIP cannot be {what}: give a free unicast address (10.103.97.2:6443 in \
             the examples)"
        ));
    }
    if vip.port() == 0 {
        return Err(format!(
            "{vip}: port 0 is not a port: the apiservers listen on 6443"
        ));
    }
    Ok(())
}

/// A backend of `vip`: a unicast, non-loopback address of its family that
/// is not the VIP itself (IPVS would send the traffic back to itself).
pub fn check_backend(vip: Endpoint, backend: Endpoint) -> Result<(), String> {
    if let Some(what) = unusable(backend.ip()) {
        return Err(format!(
            "{backend}: a backend cannot be {what}: give the apiserver's own address (the \
             node's address on a control-plane node)"
        ));
    }
    if backend.ip() == vip.ip() {
        return Err(format!(
            "{backend}: a backend cannot be the VIP {vip} itself: give the apiserver's address"
        ));
    }
    if backend.port() == 0 {
        return Err(format!("{backend}: port 0 is not a port"));
    }
    Ok(())
}

/// Why `ip` cannot be a VIP or a backend, if it cannot.
fn unusable(ip: std::net::IpAddr) -> Option<&'static str> {
    use std::net::IpAddr;
    if ip.is_unspecified() {
        Some("unspecified (0.0.0.0 or ::)")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Linux interface names, by the dataplane's rule (the kernel's): the one
/// check, so that `config check` refuses what the daemon would.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    apiserver_proxy_dataplane::validate_interface_name(name).map_err(|e| e.to_string())
}

/// Checks a scheduler name; the message names the kernel module.
pub fn check_scheduler(name: &str) -> Result<(), String> {
    if KNOWN_SCHEDULERS.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "unknown IPVS scheduler {name:?}: use one of {} (each is the kernel module ip_vs_NAME)",
            KNOWN_SCHEDULERS.join(", ")
        ))
    }
}

/// The annotated default configuration `config default` prints. It is
/// parsed in the tests, so it always stays valid.
pub fn default_yaml() -> &'static str {
    include_str!("default-config.yaml")
}
