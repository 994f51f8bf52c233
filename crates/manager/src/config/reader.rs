//! The YAML (and JSON) walker: reads a generic value by hand so that every
//! problem is named with its path (`virtualServers[0].seeds[1]: ...`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use apiserver_proxy_types::Endpoint;
use serde_json::{Map, Value};

use super::*;

#[derive(Default)]
pub(super) struct Reader {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Reader {
    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: None,
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn unknown_keys(&mut self, map: &Map<String, Value>, path: &str, known: &[&str]) {
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

    pub(super) fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
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

    pub(super) fn count(&mut self, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
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

    pub(super) fn endpoint(&mut self, v: &Value, path: &str) -> Option<Endpoint> {
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
    pub(super) fn duration(&mut self, v: &Value, path: &str) -> Option<Duration> {
        self.duration_from(v, path, false)
    }

    /// A duration where zero means "off".
    pub(super) fn duration_or_off(&mut self, v: &Value, path: &str) -> Option<Duration> {
        self.duration_from(v, path, true)
    }

    fn duration_from(&mut self, v: &Value, path: &str, zero: bool) -> Option<Duration> {
        let parsed = match v {
            Value::Number(n) => n.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok()),
            Value::String(s) => humantime::parse_duration(s.trim()).ok(),
            _ => None,
        };
        match parsed {
            Some(d) if zero || !d.is_zero() => Some(d),
            _ => {
                self.problem(
                    path,
                    format!("expected a duration such as \"5s\" or \"500ms\", found {v}"),
                );
                None
            }
        }
    }

    pub(super) fn path_buf(&mut self, v: &Value, path: &str) -> Option<PathBuf> {
        let s = self.string(v, path)?;
        if s.is_empty() {
            None
        } else {
            Some(PathBuf::from(s))
        }
    }

    pub(super) fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.problem(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn scheduler(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        match check_scheduler(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.problem(path, e);
                None
            }
        }
    }

    /// `apiVersion` and `kind`. A file without them is read as the one
    /// version there is, with a notice, so that files written before the
    /// header existed keep working; a version this release does not know is
    /// refused rather than misread.
    fn header(&mut self, map: &Map<String, Value>) {
        match map.get("apiVersion") {
            None => self.warnings.push(Problem {
                line: None,
                path: "apiVersion".into(),
                message: format!(
                    "missing: read as {API_VERSION}; start the file with \
                     `apiVersion: {API_VERSION}` and `kind: {KIND}` so that a later \
                     release can convert it"
                ),
            }),
            Some(v) => {
                if let Some(version) = self.string(v, "apiVersion")
                    && version != API_VERSION
                {
                    self.problem(
                        "apiVersion",
                        format!(
                            "{version:?} is not a configuration version this release reads: \
                             it reads {API_VERSION}"
                        ),
                    );
                }
            }
        }
        match map.get("kind") {
            None if map.contains_key("apiVersion") => {
                self.problem("kind", format!("missing: give `kind: {KIND}`"));
            }
            None => {}
            Some(v) => {
                if let Some(given) = self.string(v, "kind")
                    && given != KIND
                {
                    self.problem("kind", format!("{given:?} is not {KIND:?}"));
                }
            }
        }
    }

    pub(super) fn config(&mut self, map: &Map<String, Value>) -> Config {
        const KNOWN: &[&str] = &[
            "apiVersion",
            "kind",
            "virtualServers",
            "interface",
            "vipMode",
            "dataplane",
            "stateDir",
            "metricsAddr",
            "kubeconfig",
            "logFormat",
            "resyncInterval",
            "drainTimeout",
            "health",
            "discovery",
            "controlPlane",
        ];
        self.unknown_keys(map, "", KNOWN);
        self.header(map);
        let mut c = Config::default();
        for (key, v) in map {
            let path = key.as_str();
            match path {
                // Read by `header`.
                "apiVersion" | "kind" => {}
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
                "dataplane" => match self.string(v, path).map(|s| s.parse::<DataplaneChoice>()) {
                    Some(Ok(d)) => c.dataplane = d,
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
                        match super::parse_listen_addr(&s) {
                            Ok(a) => c.metrics_addr = a,
                            Err(e) => self.problem(path, e),
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
                "controlPlane" => {
                    if let Some(m) = self.object(v, path) {
                        self.control_plane(m, path, &mut c.control_plane);
                    }
                }
                _ => {}
            }
        }
        c
    }

    pub(super) fn virtual_server(&mut self, v: &Value, path: &str) -> Option<VirtualServerConfig> {
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

    pub(super) fn health(&mut self, map: &Map<String, Value>, path: &str, h: &mut HealthSettings) {
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
            "inspectSocket",
            "heartbeatInterval",
            "heartbeatAckTimeout",
            "heartbeatConfirmTimeout",
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
                "inspectSocket" => {
                    if let Some(b) = self.boolean(v, &p) {
                        h.inspect_socket = b;
                    }
                }
                "heartbeatInterval" => {
                    if let Some(d) = self.duration_or_off(v, &p) {
                        h.heartbeat_interval = d;
                    }
                }
                "heartbeatAckTimeout" => {
                    if let Some(d) = self.duration(v, &p) {
                        h.heartbeat_ack_timeout = d;
                    }
                }
                "heartbeatConfirmTimeout" => {
                    if let Some(d) = self.duration(v, &p) {
                        h.heartbeat_confirm_timeout = d;
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = check_timeout(h.timeout, h.interval) {
            self.problem(&join(path, "timeout"), e.to_string());
        }
    }

    pub(super) fn discovery(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        d: &mut DiscoverySettings,
    ) {
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

    pub(super) fn control_plane(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        cp: &mut ControlPlaneSettings,
    ) {
        self.unknown_keys(
            map,
            path,
            &[
                "vip",
                "interface",
                "apiservers",
                "identity",
                "leaseNamespace",
                "leaseName",
                "leaseDuration",
                "renewDeadline",
                "retryPeriod",
            ],
        );
        for (key, v) in map {
            let at = join(path, key);
            match key.as_str() {
                "vip" => cp.vip = self.endpoint(v, &at),
                "interface" => {
                    if let Some(s) = self.string(v, &at) {
                        cp.interface = s;
                    }
                }
                "apiservers" => match v {
                    Value::Array(items) => {
                        cp.apiservers = items
                            .iter()
                            .enumerate()
                            .filter_map(|(i, item)| self.endpoint(item, &format!("{at}[{i}]")))
                            .collect();
                    }
                    other => self.problem(&at, format!("expected a list, found {}", kind(other))),
                },
                "identity" => {
                    if let Some(s) = self.string(v, &at) {
                        cp.identity = s;
                    }
                }
                "leaseNamespace" => {
                    if let Some(s) = self.string(v, &at) {
                        cp.lease_namespace = s;
                    }
                }
                "leaseName" => {
                    if let Some(s) = self.string(v, &at) {
                        cp.lease_name = s;
                    }
                }
                "leaseDuration" => {
                    if let Some(d) = self.duration(v, &at) {
                        cp.timings.lease_duration = d;
                    }
                }
                "renewDeadline" => {
                    if let Some(d) = self.duration(v, &at) {
                        cp.timings.renew_deadline = d;
                    }
                }
                "retryPeriod" => {
                    if let Some(d) = self.duration(v, &at) {
                        cp.timings.retry_period = d;
                    }
                }
                _ => {}
            }
        }
    }
}
