//! The Go bcs-apiserver-proxy's JSON configuration, translated key by key
//! (docs/migration.md lists every key's fate).

use std::net::SocketAddr;
use std::time::Duration;

use apiserver_proxy_types::Endpoint;
use serde_json::{Map, Value};

use super::reader::{Reader, join, kind};
use super::{Config, HealthMode, Problem, VirtualServerConfig};

/// Keys of the Go version's JSON config whose presence marks a Go file.
pub(super) const GO_TOP_KEYS: &[&str] = &[
    "proxyLvs",
    "healthCheck",
    "k8sConfig",
    "persistConfig",
    "systemInterval",
    "realServer",
];

impl Reader {
    /// The Go version's JSON config. Keys we honour are mapped (see
    /// docs/migration.md); the rest are warnings, not errors, so that a Go
    /// file works unchanged.
    pub(super) fn go_config(&mut self, map: &Map<String, Value>) -> Config {
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
                            line: None,
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
                        line: None,
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
                        line: None,
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
                                    line: None,
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
                            line: None,
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
