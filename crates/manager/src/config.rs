//! The daemon's configuration: one schema, read from a YAML file (ours) or a
//! JSON file (the Go bcs-apiserver-proxy's), then overridden by environment
//! and flags (the binaries do that part with clap).
//!
//! Files are read into a generic value first and walked by hand, so that
//! `config check` can name *every* problem with its path
//! (`virtualServers[0].seeds[1]: ...`) instead of stopping at the first.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiserver_proxy_types::Endpoint;
use serde_json::{Map, Value};

/// Default name of the dummy interface holding the VIPs (the dataplane's).
pub use apiserver_proxy_dataplane::DEFAULT_INTERFACE;
/// The Go version's metrics port.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:8004";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bcs-apiserver-proxy";
/// IPVS schedulers Debian's kernel ships as modules (`ip_vs_NAME`).
pub const KNOWN_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

pub use apiserver_proxy_dataplane::VipMode;

pub use apiserver_proxy_health::Mode as HealthMode;
/// The health crate's checks of a readiness path and of a timeout against
/// its interval: one rule for the file and both command lines.
pub use apiserver_proxy_health::{check_path, check_timeout};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Watch the cluster at all (off: seeds only).
    pub enabled: bool,
    /// No event or bookmark for this long: relist.
    pub stale_watch_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub virtual_servers: Vec<VirtualServerConfig>,
    pub interface: String,
    pub vip_mode: VipMode,
    pub state_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    /// None: in-cluster credentials.
    pub kubeconfig: Option<PathBuf>,
    pub log_format: LogFormat,
    pub resync_interval: Duration,
    pub drain_timeout: Duration,
    pub health: HealthSettings,
    pub discovery: DiscoverySettings,
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
        }
    }
}

/// One problem in a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
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
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
            path: source_name.into(),
            format: "YAML or JSON",
            detail: e.to_string(),
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
                path: format!("virtualServers[{i}].vip"),
                message: format!("{} is configured twice", vs.vip),
            });
        }
        for (j, seed) in vs.seeds.iter().enumerate() {
            if seed.family() != vs.vip.family() {
                problems.push(Problem {
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
            path: "interface".into(),
            message: e,
        });
    }
    if config.health.client_cert.is_some() != config.health.client_key.is_some() {
        problems.push(Problem {
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

/// Keys of the Go version's JSON config whose presence marks a Go file.
const GO_TOP_KEYS: &[&str] = &[
    "proxyLvs",
    "healthCheck",
    "k8sConfig",
    "persistConfig",
    "systemInterval",
    "realServer",
];

#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Reader {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn unknown_keys(&mut self, map: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let mut msg = format!("unknown key {key:?}");
                if let Some(close) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                    msg.push_str(&format!(" (did you mean {close:?}?)"));
                } else {
                    msg.push_str(&format!("; known keys here: {}", known.join(", ")));
                }
                self.problem(&join(path, key), msg);
            }
        }
    }

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(
                    path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn count(&mut self, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(
                    path,
                    format!("expected a whole number from {min} to {max}, found {v}"),
                );
                None
            }
        }
    }

    fn endpoint(&mut self, v: &Value, path: &str) -> Option<Endpoint> {
        let s = self.string(v, path)?;
        match s.parse::<Endpoint>() {
            Ok(e) => Some(e),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }

    /// `5s`, `500ms`, `1m30s`; a bare number counts as seconds.
    fn duration(&mut self, v: &Value, path: &str) -> Option<Duration> {
        let parsed = match v {
            Value::Number(n) => n.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok()),
            Value::String(s) => humantime::parse_duration(s.trim()).ok(),
            _ => None,
        };
        match parsed {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                self.problem(
                    path,
                    format!("expected a duration such as \"5s\" or \"500ms\", found {v}"),
                );
                None
            }
        }
    }

    fn path_buf(&mut self, v: &Value, path: &str) -> Option<PathBuf> {
        let s = self.string(v, path)?;
        if s.is_empty() {
            None
        } else {
            Some(PathBuf::from(s))
        }
    }

    fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.problem(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    fn scheduler(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        match check_scheduler(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.problem(path, e);
                None
            }
        }
    }

    fn config(&mut self, map: &Map<String, Value>) -> Config {
        const KNOWN: &[&str] = &[
            "virtualServers",
            "interface",
            "vipMode",
            "stateDir",
            "metricsAddr",
            "kubeconfig",
            "logFormat",
            "resyncInterval",
            "drainTimeout",
            "health",
            "discovery",
        ];
        self.unknown_keys(map, "", KNOWN);
        let mut c = Config::default();
        for (key, v) in map {
            let path = key.as_str();
            match path {
                "virtualServers" => match v {
                    Value::Array(items) => {
                        c.virtual_servers = items
                            .iter()
                            .enumerate()
                            .filter_map(|(i, item)| {
                                self.virtual_server(item, &format!("virtualServers[{i}]"))
                            })
                            .collect();
                    }
                    other => self.problem(path, format!("expected a list, found {}", kind(other))),
                },
                "interface" => {
                    if let Some(s) = self.string(v, path) {
                        match check_interface_name(&s) {
                            Ok(()) => c.interface = s,
                            Err(e) => self.problem(path, e),
                        }
                    }
                }
                "vipMode" => match self.string(v, path).map(|s| s.parse::<VipMode>()) {
                    Some(Ok(m)) => c.vip_mode = m,
                    Some(Err(e)) => self.problem(path, e.to_string()),
                    None => {}
                },
                "stateDir" => {
                    if let Some(p) = self.path_buf(v, path) {
                        c.state_dir = p;
                    }
                }
                "metricsAddr" => {
                    if let Some(s) = self.string(v, path) {
                        match s.parse::<SocketAddr>() {
                            Ok(a) => c.metrics_addr = a,
                            Err(_) => self.problem(
                                path,
                                format!("{s:?} is not ADDRESS:PORT, for example 0.0.0.0:8004"),
                            ),
                        }
                    }
                }
                "kubeconfig" => c.kubeconfig = self.path_buf(v, path),
                "logFormat" => match self.string(v, path).as_deref() {
                    Some("text") => c.log_format = LogFormat::Text,
                    Some("json") => c.log_format = LogFormat::Json,
                    Some(other) => self.problem(
                        path,
                        format!("{other:?} is not a log format: use \"text\" or \"json\""),
                    ),
                    None => {}
                },
                "resyncInterval" => {
                    if let Some(d) = self.duration(v, path) {
                        c.resync_interval = d;
                    }
                }
                "drainTimeout" => {
                    if let Some(d) = self.duration(v, path) {
                        c.drain_timeout = d;
                    }
                }
                "health" => {
                    if let Some(m) = self.object(v, path) {
                        self.health(m, path, &mut c.health);
                    }
                }
                "discovery" => {
                    if let Some(m) = self.object(v, path) {
                        self.discovery(m, path, &mut c.discovery);
                    }
                }
                _ => {}
            }
        }
        c
    }

    fn virtual_server(&mut self, v: &Value, path: &str) -> Option<VirtualServerConfig> {
        let map = self.object(v, path)?;
        self.unknown_keys(map, path, &["vip", "scheduler", "seeds", "portName"]);
        let vip = match map.get("vip") {
            Some(v) => self.endpoint(v, &join(path, "vip")),
            None => {
                self.problem(
                    path,
                    "missing \"vip\": write vip: VIP:PORT, e.g. 10.103.97.2:6443",
                );
                None
            }
        };
        let scheduler = match map.get("scheduler") {
            Some(v) => self.scheduler(v, &join(path, "scheduler")),
            None => Some("rr".to_string()),
        };
        let mut seeds = Vec::new();
        if let Some(v) = map.get("seeds") {
            match v {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(e) = self.endpoint(item, &format!("{path}.seeds[{i}]")) {
                            seeds.push(e);
                        }
                    }
                }
                other => self.problem(
                    &join(path, "seeds"),
                    format!("expected a list of IP:PORT, found {}", kind(other)),
                ),
            }
        }
        let port_name = match map.get("portName") {
            Some(v) => self.string(v, &join(path, "portName"))?,
            None => "https".to_string(),
        };
        Some(VirtualServerConfig {
            vip: vip?,
            scheduler: scheduler?,
            seeds,
            port_name,
        })
    }

    fn health(&mut self, map: &Map<String, Value>, path: &str, h: &mut HealthSettings) {
        const KNOWN: &[&str] = &[
            "mode",
            "path",
            "interval",
            "timeout",
            "rise",
            "fall",
            "successStatuses",
            "caFile",
            "serverName",
            "clientCert",
            "clientKey",
            "insecureSkipVerify",
        ];
        self.unknown_keys(map, path, KNOWN);
        for (key, v) in map {
            let p = join(path, key);
            match key.as_str() {
                "mode" => {
                    if let Some(s) = self.string(v, &p) {
                        match s.parse::<HealthMode>() {
                            Ok(m) => h.mode = m,
                            Err(e) => self.problem(&p, e.to_string()),
                        }
                    }
                }
                "path" => {
                    if let Some(s) = self.string(v, &p) {
                        match check_path(&s) {
                            Ok(()) => h.path = s,
                            Err(e) => self.problem(&p, e.to_string()),
                        }
                    }
                }
                "interval" => {
                    if let Some(d) = self.duration(v, &p) {
                        h.interval = d;
                    }
                }
                "timeout" => {
                    if let Some(d) = self.duration(v, &p) {
                        h.timeout = d;
                    }
                }
                "rise" => {
                    if let Some(n) = self.count(v, &p, 1, 100) {
                        h.rise = n as u32;
                    }
                }
                "fall" => {
                    if let Some(n) = self.count(v, &p, 1, 100) {
                        h.fall = n as u32;
                    }
                }
                "successStatuses" => match v {
                    Value::Array(items) if !items.is_empty() => {
                        let mut set = BTreeSet::new();
                        for (i, item) in items.iter().enumerate() {
                            if let Some(n) = self.count(item, &format!("{p}[{i}]"), 100, 599) {
                                set.insert(n as u16);
                            }
                        }
                        h.success_statuses = set;
                    }
                    other => self.problem(
                        &p,
                        format!("expected a non-empty list of HTTP statuses, found {other}"),
                    ),
                },
                "caFile" => h.ca_file = self.path_buf(v, &p),
                "serverName" => {
                    if let Some(s) = self.string(v, &p) {
                        if s.is_empty() {
                            self.problem(&p, "must not be empty (the default is \"kubernetes\")");
                        } else {
                            h.server_name = s;
                        }
                    }
                }
                "clientCert" => h.client_cert = self.path_buf(v, &p),
                "clientKey" => h.client_key = self.path_buf(v, &p),
                "insecureSkipVerify" => {
                    if let Some(b) = self.boolean(v, &p) {
                        h.insecure_skip_verify = b;
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = check_timeout(h.timeout, h.interval) {
            self.problem(&join(path, "timeout"), e.to_string());
        }
    }

    fn discovery(&mut self, map: &Map<String, Value>, path: &str, d: &mut DiscoverySettings) {
        self.unknown_keys(map, path, &["enabled", "staleWatchTimeout"]);
        if let Some(v) = map.get("enabled")
            && let Some(b) = self.boolean(v, &join(path, "enabled"))
        {
            d.enabled = b;
        }
        if let Some(v) = map.get("staleWatchTimeout")
            && let Some(t) = self.duration(v, &join(path, "staleWatchTimeout"))
        {
            if t > Duration::from_secs(3600) {
                self.problem(
                    &join(path, "staleWatchTimeout"),
                    format!("{t:?} is too long: use at most 1h"),
                );
            } else {
                d.stale_watch_timeout = t;
            }
        }
    }

    /// The Go version's JSON config. Keys we honour are mapped (see
    /// docs/migration.md); the rest are warnings, not errors, so that a Go
    /// file works unchanged.
    fn go_config(&mut self, map: &Map<String, Value>) -> Config {
        let mut c = Config::default();
        let mut vip = None;
        let mut scheduler = "rr".to_string();
        let mut seeds: Vec<Endpoint> = Vec::new();
        let (mut address, mut port) = (None, None);
        for (key, v) in map {
            let honoured: &[&str] = match key.as_str() {
                "proxyLvs" => &["virtualAddress", "lvsScheduler"],
                "healthCheck" => &["healthScheme", "healthPath"],
                "k8sConfig" => &["kubeConfig", "master"],
                "persistConfig" => &["ipvsPersistDir"],
                "systemInterval" => &["managerInterval", "endpointInterval"],
                "realServer" => &["realServers"],
                // The Go daemon's metrics listener.
                "address" => {
                    address = self.string(v, key);
                    continue;
                }
                "port" => {
                    port = self.count(v, key, 1, 65535);
                    continue;
                }
                "debugMode" => {
                    if self.boolean(v, key) == Some(true) {
                        self.warnings.push(Problem {
                            path: key.clone(),
                            message: "read: debug logs are asked for with the environment \
                                      variable APISERVER_PROXY_LOG=debug"
                                .into(),
                        });
                    }
                    continue;
                }
                _ => {
                    self.warnings.push(Problem {
                        path: key.clone(),
                        message: "a Go version key that bcs-apiserver-proxy (Rust) ignores".into(),
                    });
                    continue;
                }
            };
            let Some(section) = self.object(v, key) else {
                continue;
            };
            for (sub, v) in section {
                let p = join(key, sub);
                if !honoured.contains(&sub.as_str()) {
                    self.warnings.push(Problem {
                        path: p,
                        message: "a Go version key that bcs-apiserver-proxy (Rust) ignores".into(),
                    });
                    continue;
                }
                match sub.as_str() {
                    "virtualAddress" => vip = self.endpoint(v, &p),
                    "lvsScheduler" => {
                        if let Some(s) = self.scheduler(v, &p) {
                            scheduler = s;
                        }
                    }
                    "healthScheme" => match self.string(v, &p).map(|s| s.parse::<HealthMode>()) {
                        Some(Ok(m)) => c.health.mode = m,
                        Some(Err(e)) => self.problem(&p, e.to_string()),
                        None => {}
                    },
                    "healthPath" => {
                        if let Some(s) = self.string(v, &p) {
                            c.health.path = s;
                        }
                    }
                    "kubeConfig" => c.kubeconfig = self.path_buf(v, &p),
                    // The apiserver the Go daemon watched: one of the
                    // apiservers, so a seed when it is an IP:PORT.
                    "master" => {
                        if let Some(s) = self.string(v, &p) {
                            match go_master(&s) {
                                Some(e) => seeds.push(e),
                                None if s.is_empty() => {}
                                None => self.warnings.push(Problem {
                                    path: p,
                                    message: format!(
                                        "{s:?} is not an IP:PORT: not used (the daemon reaches \
                                         the API through the apiservers it discovers, with the \
                                         kubeconfig's or the pod's credentials)"
                                    ),
                                }),
                            }
                        }
                    }
                    "realServers" => match v {
                        Value::Array(items) => {
                            for (i, item) in items.iter().enumerate() {
                                if let Some(e) = self.endpoint(item, &format!("{p}[{i}]")) {
                                    seeds.push(e);
                                }
                            }
                        }
                        other => self.problem(
                            &p,
                            format!("expected a list of IP:PORT, found {}", kind(other)),
                        ),
                    },
                    "ipvsPersistDir" => {
                        if let Some(d) = self.path_buf(v, &p) {
                            c.state_dir = d;
                        }
                    }
                    // The Go daemon's loop interval, in seconds: our resync.
                    "managerInterval" => {
                        if let Some(n) = self.count(v, &p, 1, 3600) {
                            c.resync_interval = Duration::from_secs(n);
                        }
                    }
                    // The Go daemon polled the endpoints this often; we
                    // watch them, so there is nothing to set.
                    "endpointInterval" if self.count(v, &p, 1, 3600).is_some() => {
                        self.warnings.push(Problem {
                            path: p,
                            message: "read: not needed, the EndpointSlices are watched \
                                      instead of polled"
                                .into(),
                        });
                    }
                    _ => {}
                }
            }
        }
        if address.is_some() || port.is_some() {
            let ip = address.as_deref().unwrap_or("0.0.0.0");
            let port = port.unwrap_or(u64::from(c.metrics_addr.port()));
            match format!("{ip}:{port}").parse::<SocketAddr>() {
                Ok(a) => c.metrics_addr = a,
                Err(_) => self.problem("address", format!("{ip:?} is not an IP address")),
            }
        }
        if let Some(vip) = vip {
            seeds.retain(|s| s.family() == vip.family());
            let mut unique = Vec::new();
            for s in seeds {
                if !unique.contains(&s) {
                    unique.push(s);
                }
            }
            c.virtual_servers.push(VirtualServerConfig {
                vip,
                scheduler,
                seeds: unique,
                port_name: "https".into(),
            });
        }
        c
    }
}

/// The Go config's `k8sConfig.master` as an apiserver endpoint: `IP:PORT`,
/// or a URL `https://IP:PORT[/]`. `None` for anything else (a host name).
fn go_master(s: &str) -> Option<Endpoint> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    rest.trim_end_matches('/').parse().ok()
}

/// The annotated default configuration `config default` prints. It is
/// parsed in the tests, so it always stays valid.
pub fn default_yaml() -> &'static str {
    include_str!("default-config.yaml")
}
