//! `static-pod`: a Kubernetes static-pod manifest that runs the daemon on
//! this node, for nodes that need the proxy before any DaemonSet can run
//! and for control planes.
//!
//! No /lib/modules mount: the daemon loads no module itself. The kernel
//! loads `ip_vs` and `ip_vs_<scheduler>` on its own when the IPVS family is
//! resolved or a service is created, with the host's modprobe.

use std::net::SocketAddr;

use apiserver_proxy_types::Endpoint;
use std::path::Path;

use apiserver_proxy_manager::config::{self, DEFAULT_INTERFACE};
use serde_json::{Map as Mapping, Value};

use apiserver_proxy_manager::config::HealthMode;

use crate::cli::{Common, DEFAULT_CA_FILE, StaticPodArgs};
use crate::fail::Failure;

/// Where kubelet keeps the client certificate its kubeconfig names.
const KUBELET_PKI: &str = "/var/lib/kubelet/pki";

fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

fn list(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Array(items.into_iter().collect())
}

fn path_text(p: &Path) -> Result<String, Failure> {
    match p.to_str() {
        Some(t) if p.is_absolute() => Ok(t.to_string()),
        _ => Err(
            Failure::new(format!("{} is not an absolute path", p.display()))
                .todo("the pod mounts it from the host: give an absolute path"),
        ),
    }
}

/// A read-only (or writable) hostPath volume and its mount at the same path.
struct HostMount {
    name: &'static str,
    path: String,
    kind: &'static str,
    read_only: bool,
}

impl HostMount {
    fn volume(&self) -> Value {
        map([
            ("name", s(self.name)),
            (
                "hostPath",
                map([("path", s(self.path.clone())), ("type", s(self.kind))]),
            ),
        ])
    }

    fn mount(&self) -> Value {
        map([
            ("name", s(self.name)),
            ("mountPath", s(self.path.clone())),
            ("readOnly", Value::Bool(self.read_only)),
        ])
    }
}

fn probe(path: &str, addr: SocketAddr, period: u64) -> Value {
    let mut get = Mapping::new();
    if !addr.ip().is_unspecified() {
        get.insert("host".to_string(), s(addr.ip().to_string()));
    }
    get.insert("path".to_string(), s(path));
    get.insert("port".to_string(), Value::Number(addr.port().into()));
    map([
        ("httpGet", Value::Object(get)),
        ("initialDelaySeconds", Value::Number(5.into())),
        ("periodSeconds", Value::Number(period.into())),
        ("failureThreshold", Value::Number(3.into())),
    ])
}

/// The daemon's arguments (its real flag names: bins/bcs-apiserver-proxy/src/cli.rs).
fn daemon_args(a: &StaticPodArgs, c: &Common, ca: &str) -> Result<Vec<String>, Failure> {
    let mut args = Vec::new();
    let mut push = |flag: &str, value: String| {
        args.push(flag.to_string());
        args.push(value);
    };
    if let Some(config) = &a.config {
        push("--config", path_text(config)?);
    }
    match a.vs.as_slice() {
        // The config file's only virtual server takes them (the daemon
        // refuses --rs with several, and says so).
        [] => {
            for rs in &a.rs {
                push("--rs", rs.to_string());
            }
        }
        [vs] => {
            config::check_vip(*vs).map_err(|e| Failure::new(e).todo("fix --vs"))?;
            push("--vs", vs.to_string());
            for rs in &a.rs {
                if rs.family() != vs.family() {
                    return Err(Failure::family_mismatch(*rs, *vs));
                }
                config::check_backend(*vs, *rs).map_err(|e| Failure::new(e).todo("fix --rs"))?;
                push("--rs", rs.to_string());
            }
        }
        many => {
            return Err(Failure::new(format!(
                "{} virtual servers given, but the daemon takes one --vs on its command line",
                many.len()
            ))
            .todo("list them in a daemon config file on the host (`bcs-apiserver-proxy config default` shows one) and pass it with --config"));
        }
    }
    if let Some(sch) = &a.scheduler {
        push("--scheduler", sch.clone());
    }
    if c.interface != DEFAULT_INTERFACE {
        push("--interface", c.interface.clone());
    }
    push("--state-dir", path_text(&c.state_dir)?);
    push("--metrics-addr", a.metrics_addr.to_string());
    push("--kubeconfig", path_text(&a.kubeconfig)?);
    let h = &c.health;
    if h.health_scheme != HealthMode::Https {
        push("--health-mode", h.health_scheme.to_string());
    }
    if h.health_path != "/readyz" {
        push("--health-path", h.health_path.clone());
    }
    push("--health-ca-file", ca.to_string());
    if h.health_server_name != "kubernetes" {
        push("--health-server-name", h.health_server_name.clone());
    }
    if h.health_insecure_skip_verify {
        args.push("--health-insecure-skip-verify".to_string());
    }
    if let Some(vip) = a.control_plane_vip {
        args.extend(control_plane_args(a, vip)?);
    }
    Ok(args)
}

/// The outside control-plane VIP's flags, checked as the daemon's
/// configuration check would (it refuses the same at start, but a static
/// pod that crash-loops on the first node of a new cluster is a poor way
/// to learn it).
fn control_plane_args(a: &StaticPodArgs, vip: Endpoint) -> Result<Vec<String>, Failure> {
    config::check_vip(vip).map_err(|e| Failure::new(e).todo("fix --control-plane-vip"))?;
    if a.vs.iter().any(|vs| vs.ip() == vip.ip()) {
        return Err(Failure::new(format!(
            "{} is both the node-local VIP and the outside VIP",
            vip.ip()
        ))
        .todo("give the outside VIP a free address of the control-plane nodes' network"));
    }
    let interface = a.control_plane_interface.clone().unwrap_or_default();
    config::check_interface_name(&interface)
        .map_err(|e| Failure::new(e).todo("fix --control-plane-interface"))?;
    let apiservers = if a.control_plane_apiserver.is_empty() {
        &a.rs
    } else {
        &a.control_plane_apiserver
    };
    if apiservers.is_empty() {
        return Err(
            Failure::new("the election has no apiserver to reach its Lease through")
                .todo("give --control-plane-apiserver IP:PORT (this node's own first), or --rs"),
        );
    }
    let mut args = vec![
        "--control-plane-vip".to_string(),
        vip.to_string(),
        "--control-plane-interface".to_string(),
        interface,
    ];
    for api in apiservers {
        if api.family() != vip.family() {
            return Err(Failure::family_mismatch(*api, vip));
        }
        args.push("--control-plane-apiserver".to_string());
        args.push(api.to_string());
    }
    Ok(args)
}

/// The manifest, as YAML.
pub fn manifest(a: &StaticPodArgs, c: &Common) -> Result<String, Failure> {
    let ca = path_text(
        c.health
            .health_ca_file
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CA_FILE)),
    )?;
    let args = daemon_args(a, c, &ca)?;
    // The announcements of a moved outside VIP go out on a packet socket
    // and a raw ICMPv6 socket.
    let mut capabilities = vec!["NET_ADMIN"];
    if a.control_plane_vip.is_some() {
        capabilities.push("NET_RAW");
    }
    let mut mounts = vec![
        HostMount {
            name: "state",
            path: path_text(&c.state_dir)?,
            kind: "DirectoryOrCreate",
            read_only: false,
        },
        HostMount {
            name: "kubeconfig",
            path: path_text(&a.kubeconfig)?,
            kind: "File",
            read_only: true,
        },
        HostMount {
            name: "kubelet-pki",
            path: KUBELET_PKI.to_string(),
            kind: "DirectoryOrCreate",
            read_only: true,
        },
        HostMount {
            name: "cluster-ca",
            path: ca,
            kind: "File",
            read_only: true,
        },
    ];
    if let Some(config) = &a.config {
        mounts.push(HostMount {
            name: "config",
            path: path_text(config)?,
            kind: "File",
            read_only: true,
        });
    }
    let container = map([
        ("name", s("bcs-apiserver-proxy")),
        ("image", s(a.image.clone())),
        ("imagePullPolicy", s("IfNotPresent")),
        ("args", list(args.into_iter().map(s))),
        (
            "ports",
            list([map([
                ("name", s("metrics")),
                ("containerPort", Value::Number(a.metrics_addr.port().into())),
                ("protocol", s("TCP")),
            ])]),
        ),
        ("livenessProbe", probe("/healthz", a.metrics_addr, 10)),
        ("readinessProbe", probe("/readyz", a.metrics_addr, 5)),
        (
            "resources",
            map([("requests", map([("cpu", s("10m")), ("memory", s("32Mi"))]))]),
        ),
        (
            "securityContext",
            map([
                ("allowPrivilegeEscalation", Value::Bool(false)),
                ("readOnlyRootFilesystem", Value::Bool(true)),
                (
                    "capabilities",
                    map([
                        ("add", list(capabilities.into_iter().map(s))),
                        ("drop", list([s("ALL")])),
                    ]),
                ),
            ]),
        ),
        ("volumeMounts", list(mounts.iter().map(HostMount::mount))),
    ]);
    let pod = map([
        ("apiVersion", s("v1")),
        ("kind", s("Pod")),
        (
            "metadata",
            map([
                ("name", s("bcs-apiserver-proxy")),
                ("namespace", s("kube-system")),
                (
                    "labels",
                    map([
                        ("app.kubernetes.io/name", s("bcs-apiserver-proxy")),
                        ("app.kubernetes.io/component", s("node-proxy")),
                    ]),
                ),
            ]),
        ),
        (
            "spec",
            map([
                ("hostNetwork", Value::Bool(true)),
                ("priorityClassName", s("system-node-critical")),
                ("tolerations", list([map([("operator", s("Exists"))])])),
                ("containers", list([container])),
                ("volumes", list(mounts.iter().map(HostMount::volume))),
            ]),
        ),
    ]);
    let yaml = serde_saphyr::to_string(&pod)
        .map_err(|e| Failure::new(format!("cannot write the manifest: {e}")))?;
    Ok(format!(
        "# bcs-apiserver-proxy static pod, from `apiserver-proxy-tools static-pod`.\n\
         # Save as /etc/kubernetes/manifests/bcs-apiserver-proxy.yaml; kubelet runs it.\n\
         {yaml}"
    ))
}
