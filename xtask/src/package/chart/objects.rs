//! What a render of the chart must hold: RBAC, the DaemonSet, and per
//! values variant what it changes.

use super::*;

/// A Role and RoleBinding in `default` only, reading EndpointSlices and
/// Endpoints, bound to the chart's ServiceAccount.
pub(super) fn check_rbac(r: &Rendered, sa_name: &str) -> Result<()> {
    // Discovery's Role in `default`; the outside VIP's Lease Role, when
    // there is one, is in kube-system and checked by its variant.
    let in_default = |kind: &str| -> Result<&Value> {
        let all: Vec<&Value> = r
            .of_kind(kind)
            .into_iter()
            .filter(|o| o["metadata"]["namespace"] != "kube-system")
            .collect();
        match all.as_slice() {
            [one] => Ok(one),
            other => bail!(
                "expected one {kind} outside kube-system, found {}",
                other.len()
            ),
        }
    };
    let role = in_default("Role")?;
    ensure!(
        role["metadata"]["namespace"] == "default",
        "the Role must be in default"
    );
    let mut rules = BTreeSet::new();
    for rule in as_array(&role["rules"]) {
        let verbs: BTreeSet<&str> = strings(&rule["verbs"]).into_iter().collect();
        ensure!(
            verbs == BTreeSet::from(["get", "list", "watch"]),
            "Role verbs must be get, list, watch: {verbs:?}"
        );
        for g in strings(&rule["apiGroups"]) {
            for res in strings(&rule["resources"]) {
                rules.insert(format!("{g}/{res}"));
            }
        }
    }
    ensure!(
        rules
            == BTreeSet::from([
                "/endpoints".to_string(),
                "discovery.k8s.io/endpointslices".to_string()
            ]),
        "the Role must grant endpointslices and endpoints only: {rules:?}"
    );
    let rb = in_default("RoleBinding")?;
    ensure!(
        rb["metadata"]["namespace"] == "default",
        "the RoleBinding must be in default"
    );
    ensure!(rb["roleRef"]["kind"] == "Role" && rb["roleRef"]["name"] == role["metadata"]["name"]);
    let subject = &rb["subjects"][0];
    ensure!(
        subject["kind"] == "ServiceAccount"
            && subject["name"] == sa_name
            && subject["namespace"] == NAMESPACE,
        "the RoleBinding must name the chart's ServiceAccount in {NAMESPACE}: {subject}"
    );
    Ok(())
}

/// What the DaemonSet must be whatever the values: host network, node-critical
/// priority, its service account, rolling updates, one container.
pub(super) fn check_daemonset(
    ds: &Value,
    sa_name: &str,
    configmaps: &BTreeSet<&str>,
    caps: &[&str],
) -> Result<()> {
    let spec = &ds["spec"]["template"]["spec"];
    let want = |ptr: &str, expected: Value| -> Result<()> {
        let got = spec.pointer(ptr).cloned().unwrap_or(Value::Null);
        ensure!(got == expected, "{ptr}: expected {expected}, found {got}");
        Ok(())
    };
    want("/hostNetwork", Value::Bool(true))?;
    want("/dnsPolicy", "ClusterFirstWithHostNet".into())?;
    want("/priorityClassName", "system-node-critical".into())?;
    want("/serviceAccountName", sa_name.into())?;
    ensure!(
        as_array(&spec["tolerations"])
            .iter()
            .any(|t| t["operator"] == "Exists"
                && t.get("key").is_none()
                && t.get("effect").is_none()),
        "a toleration of every taint (operator: Exists) is needed to run on every node"
    );
    ensure!(ds["spec"]["updateStrategy"]["type"] == "RollingUpdate");
    let selector = ds["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("selector")?;
    for (k, v) in selector {
        ensure!(
            ds["spec"]["template"]["metadata"]["labels"][k] == *v,
            "the pod template lacks selector label {k}"
        );
    }
    let containers = as_array(&spec["containers"]);
    ensure!(containers.len() == 1, "one container expected");
    let c = &containers[0];
    let sc = &c["securityContext"];
    ensure!(
        strings(&sc["capabilities"]["add"]) == caps,
        "capabilities: add {caps:?} only: {}",
        sc["capabilities"]
    );
    ensure!(
        strings(&sc["capabilities"]["drop"]) == ["ALL"],
        "capabilities: drop ALL: {}",
        sc["capabilities"]
    );
    ensure!(sc["privileged"] != true, "must not be privileged");
    ensure!(
        sc["readOnlyRootFilesystem"] == true,
        "readOnlyRootFilesystem"
    );
    ensure!(
        sc["allowPrivilegeEscalation"] == false,
        "allowPrivilegeEscalation: false"
    );
    let port = as_array(&c["ports"])
        .iter()
        .find(|p| p["name"] == "metrics")
        .context("no port named metrics")?;
    ensure!(port["containerPort"].is_u64());
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &c[probe]["httpGet"];
        ensure!(
            get["path"] == path && get["port"] == "metrics",
            "{probe}: GET {path} on port metrics: {get}"
        );
    }
    let res = &c["resources"];
    for p in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
        ensure!(
            res.pointer(p).is_some_and(|v| !v.is_null()),
            "resources{p} is missing"
        );
    }
    let args = strings(&c["args"]);
    ensure!(
        args.first() == Some(&"--config"),
        "the daemon must get --config: {args:?}"
    );
    let config_file = args.get(1).context("--config FILE")?;

    // Volumes: the config from our ConfigMap at --config's folder, the state
    // folder from the host at the same path.
    let mounts = as_array(&c["volumeMounts"]);
    let volumes = as_array(&spec["volumes"]);
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name);
    let mount = |name: &str| mounts.iter().find(|m| m["name"] == name);
    let cfg_mount = mount("config").context("no config mount")?;
    ensure!(config_file.starts_with(cfg_mount["mountPath"].as_str().unwrap_or("?")));
    let cfg_name = volume("config").context("no config volume")?["configMap"]["name"]
        .as_str()
        .context("the config volume is no ConfigMap")?;
    ensure!(
        configmaps.contains(cfg_name),
        "ConfigMap {cfg_name} is not rendered"
    );
    let state = volume("state").context("no state volume")?;
    let host_path = &state["hostPath"]["path"];
    ensure!(host_path.is_string(), "the state volume must be a hostPath");
    ensure!(mount("state").context("no state mount")?["mountPath"] == *host_path);
    Ok(())
}

fn env_of<'a>(ds: &'a Value, name: &str) -> Option<&'a str> {
    as_array(&ds["spec"]["template"]["spec"]["containers"][0]["env"])
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

fn node_affinity_operator(ds: &Value) -> Option<&str> {
    ds.pointer(
        "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0/operator",
    )
    .and_then(Value::as_str)
}

fn container(ds: &Value) -> &Value {
    &ds["spec"]["template"]["spec"]["containers"][0]
}

pub(super) fn assert_default(r: &Rendered) -> Result<()> {
    let workers = r.daemonset(FULLNAME)?;
    let cp = r.daemonset(&format!("{FULLNAME}-cp"))?;
    ensure!(r.of_kind("DaemonSet").len() == 2);
    ensure!(node_affinity_operator(workers) == Some("DoesNotExist"));
    ensure!(node_affinity_operator(cp) == Some("Exists"));
    ensure!(env_of(workers, "APISERVER_PROXY_VIP_MODE").is_none());
    ensure!(
        env_of(cp, "APISERVER_PROXY_VIP_MODE") == Some("route"),
        "control-plane nodes of an IPv4 VIP use vipMode route"
    );
    ensure!(workers["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1);
    let c = container(workers);
    ensure!(
        c["image"] == format!("{DEFAULT_REPOSITORY}:{VERSION}").as_str(),
        "image {}",
        c["image"]
    );
    ensure!(
        c["resources"]["requests"]["cpu"] == "10m"
            && c["resources"]["requests"]["memory"] == "32Mi"
    );
    ensure!(c["resources"]["limits"]["memory"] == "128Mi");
    ensure!(
        c["resources"]["limits"].get("cpu").is_none(),
        "no CPU limit: throttling slows failover"
    );
    let state = &workers["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "state").cloned())
        .context("state volume")?;
    ensure!(state["hostPath"]["path"] == "/var/lib/bcs-apiserver-proxy");
    let cfg = r.config()?;
    ensure!(cfg["virtualServers"][0]["vip"] == "10.103.97.2:6443");
    ensure!(cfg["vipMode"] == "address" && cfg["metricsAddr"] == "0.0.0.0:8004");
    ensure!(
        cfg["dataplane"] == "auto",
        "dataplane: {}",
        cfg["dataplane"]
    );
    ensure!(cfg["stateDir"] == "/var/lib/bcs-apiserver-proxy");
    for kind in ["PodMonitor", "ServiceMonitor", "PrometheusRule", "Service"] {
        ensure!(r.of_kind(kind).is_empty(), "{kind} must be off by default");
    }
    ensure!(
        r.of_kind("ConfigMap").len() == 1,
        "only the config ConfigMap by default"
    );
    Ok(())
}

pub(super) fn assert_ipv6(r: &Rendered) -> Result<()> {
    let cfg = r.config()?;
    ensure!(cfg["virtualServers"][0]["vip"] == "[fd00:10:96::2]:6443");
    ensure!(strings(&cfg["virtualServers"][0]["seeds"]).len() == 3);
    ensure!(
        cfg["metricsAddr"] == "[::]:8004",
        "metricsAddr {}",
        cfg["metricsAddr"]
    );
    let cp = r.daemonset(&format!("{FULLNAME}-cp"))?;
    ensure!(
        env_of(cp, "APISERVER_PROXY_VIP_MODE") == Some("address"),
        "route is IPv4 only: control-plane nodes of an IPv6 VIP use address"
    );
    Ok(())
}

pub(super) fn assert_multi_vip(r: &Rendered) -> Result<()> {
    let ds = r.daemonset(FULLNAME)?;
    ensure!(
        r.of_kind("DaemonSet").len() == 1,
        "controlPlane.daemonSet: shared gives one DaemonSet"
    );
    ensure!(
        node_affinity_operator(ds).is_none(),
        "one DaemonSet runs on every node"
    );
    ensure!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%");
    ensure!(
        env_of(ds, "APISERVER_PROXY_METRICS_ADDR") == Some("$(NODE_IP):8004"),
        "bindAddress node: the listener on the node's address"
    );
    ensure!(
        container(ds)["livenessProbe"]["httpGet"]
            .get("host")
            .is_none(),
        "the probes go to the pod's IP, which is the node's"
    );
    let cfg = r.config()?;
    let vips: Vec<&str> = as_array(&cfg["virtualServers"])
        .iter()
        .filter_map(|v| v["vip"].as_str())
        .collect();
    ensure!(
        vips == [
            "10.103.97.2:6443",
            "10.103.97.3:443",
            "[fd00:10:96::2]:6443"
        ],
        "{vips:?}"
    );
    let schedulers: Vec<&str> = as_array(&cfg["virtualServers"])
        .iter()
        .filter_map(|v| v["scheduler"].as_str())
        .collect();
    ensure!(schedulers == ["wrr", "lc", "rr"], "{schedulers:?}");
    ensure!(cfg["virtualServers"][1]["portName"] == "https-alt");
    ensure!(cfg["logFormat"] == "json");
    Ok(())
}

/// The ServiceMonitor variant: a headless Service that selects the pods, a
/// ServiceMonitor that selects it, and no PodMonitor.
pub(super) fn assert_service_monitor(r: &Rendered) -> Result<()> {
    let ds = r.daemonset(FULLNAME)?;
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let svc = r.one("Service")?;
    ensure!(
        svc["spec"]["clusterIP"] == "None",
        "the metrics Service is headless"
    );
    ensure!(svc["spec"]["ports"][0]["targetPort"] == "metrics");
    let svc_selector = svc["spec"]["selector"]
        .as_object()
        .context("Service selector")?;
    ensure!(svc_selector.iter().all(|(k, v)| pod_labels[k] == *v));
    let sm = r.one("ServiceMonitor")?;
    ensure!(sm["spec"]["endpoints"][0]["port"] == "metrics");
    ensure!(sm["metadata"]["labels"]["release"] == "prometheus");
    let svc_labels = &svc["metadata"]["labels"];
    ensure!(
        sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| m.iter().all(|(k, v)| svc_labels[k] == *v)),
        "the ServiceMonitor must select the Service"
    );
    ensure!(
        r.of_kind("PodMonitor").is_empty(),
        "a PodMonitor beside the ServiceMonitor"
    );
    check_relabelings(&sm["spec"]["endpoints"][0], "ServiceMonitor")?;
    // The per-alert switches of ci/servicemonitor-values.yaml: one alert
    // off, one retuned, the runbooks on another base.
    let rule = r.one("PrometheusRule")?;
    let alerts = as_array(&rule["spec"]["groups"][0]["rules"]);
    let named = |name: &str| alerts.iter().find(|a| a["alert"] == name);
    ensure!(
        named("ApiserverProxyFailOpen").is_none(),
        "alerts.failOpen.enabled: false left the alert in"
    );
    let one =
        named("ApiserverProxyOneFailureFromOutage").context("alert switched off by mistake")?;
    ensure!(
        one["for"] == "2m" && one["labels"]["severity"] == "critical",
        "alerts.oneFailureFromOutage for/severity ignored: {one}"
    );
    ensure!(alerts.len() == 4, "{} alerts", alerts.len());
    check_runbooks(alerts, "https://runbooks.example.com/ops.md")?;
    Ok(())
}

/// The chart's own `node` relabeling first, then the values' relabelings
/// and metric relabelings (ci variants set one of each).
fn check_relabelings(endpoint: &Value, kind: &str) -> Result<()> {
    let relabel = as_array(&endpoint["relabelings"]);
    ensure!(
        relabel.first().is_some_and(|r| r["targetLabel"] == "node"),
        "{kind}: the chart's node relabeling must come first"
    );
    ensure!(
        relabel.iter().any(|r| r["targetLabel"] == "cluster"),
        "{kind}: the values' relabelings are missing: {relabel:?}"
    );
    ensure!(
        as_array(&endpoint["metricRelabelings"])
            .iter()
            .any(|r| r["action"] == "drop"),
        "{kind}: the values' metricRelabelings are missing"
    );
    Ok(())
}

/// The runbook page the chart links by default: docs/operations.md of the
/// project's repository (values.yaml must say the same).
fn default_runbook_base() -> String {
    format!(
        "{}/blob/main/docs/operations.md",
        env!("CARGO_PKG_REPOSITORY")
    )
}

/// Every alert links `BASE#its-name-in-lower-case`, and docs/operations.md
/// has that section, so an alert never sends the on-call to nothing.
fn check_runbooks(alerts: &[Value], base: &str) -> Result<()> {
    let ops = fs::read_to_string(crate::workspace_root().join("docs/operations.md"))?;
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| heading_anchor(l.trim_start_matches('#')))
        .collect();
    for a in alerts {
        let name = a["alert"].as_str().context("alert name")?;
        let anchor = name.to_lowercase();
        let want = format!("{base}#{anchor}");
        ensure!(
            a["annotations"]["runbook_url"] == want.as_str(),
            "alert {name}: runbook_url {} is not {want}",
            a["annotations"]["runbook_url"]
        );
        ensure!(
            anchors.contains(&anchor),
            "alert {name}: docs/operations.md has no section \"### {name}\" for its runbook_url"
        );
    }
    Ok(())
}

/// The anchor GitHub gives a Markdown heading: lower case, spaces to
/// hyphens, punctuation dropped.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// ci/options-values.yaml: the scheduling, security and probe options a
/// platform engineer sets, each visible in both DaemonSets.
pub(super) fn assert_options(r: &Rendered) -> Result<()> {
    let cfg = r.config()?;
    ensure!(
        cfg["dataplane"] == "nftables",
        "dataplane of the values not in the config: {}",
        cfg["dataplane"]
    );
    for (name, ours) in [
        (FULLNAME.to_string(), "DoesNotExist"),
        (format!("{FULLNAME}-cp"), "Exists"),
    ] {
        let ds = r.daemonset(&name)?;
        let spec = &ds["spec"]["template"]["spec"];
        let terms = as_array(
            &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        );
        ensure!(
            terms.len() == 2,
            "{name}: the values' two node terms: {terms:?}"
        );
        for t in terms {
            let exprs = as_array(&t["matchExpressions"]);
            ensure!(
                exprs.iter().any(|e| e["operator"] == ours),
                "{name}: a required node term without the chart's {ours} rule: {t}"
            );
            ensure!(
                exprs.iter().any(|e| e["key"] == "kubernetes.io/arch"),
                "{name}: the values' own node rule was lost: {t}"
            );
        }
        ensure!(
            spec["affinity"]["podAntiAffinity"].is_object(),
            "{name}: podAntiAffinity of the values was dropped"
        );
        ensure!(
            spec["securityContext"]["seLinuxOptions"]["type"] == "spc_t",
            "{name}: podSecurityContext ignored"
        );
        let c = container(ds);
        let args = strings(&c["args"]);
        ensure!(
            args.ends_with(&["--log-format", "json"]) && args[0] == "--config",
            "{name}: extraArgs must follow --config: {args:?}"
        );
        ensure!(
            c["livenessProbe"]["periodSeconds"] == 20
                && c["livenessProbe"]["timeoutSeconds"] == 5
                && c["livenessProbe"]["httpGet"]["path"] == "/healthz",
            "{name}: probes.liveness ignored: {}",
            c["livenessProbe"]
        );
        ensure!(
            c["readinessProbe"]["initialDelaySeconds"] == 3,
            "{name}: probes.readiness ignored"
        );
        ensure!(
            c["startupProbe"]["failureThreshold"] == 90,
            "{name}: probes.startup ignored"
        );
    }
    Ok(())
}

pub(super) fn assert_monitoring(r: &Rendered) -> Result<()> {
    let ds = r.daemonset(FULLNAME)?;
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let matches_pods = |sel: &Value| -> bool {
        sel["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| pod_labels[k] == *v))
    };
    let pm = r.one("PodMonitor")?;
    ensure!(
        matches_pods(&pm["spec"]["selector"]),
        "the PodMonitor must select the pods"
    );
    ensure!(pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics");
    ensure!(pm["spec"]["podMetricsEndpoints"][0]["interval"] == "10s");
    check_relabelings(&pm["spec"]["podMetricsEndpoints"][0], "PodMonitor")?;
    ensure!(pm["metadata"]["labels"]["release"] == "prometheus");
    // One of the two monitors only: each pod scraped once.
    ensure!(
        r.of_kind("ServiceMonitor").is_empty(),
        "a ServiceMonitor beside the PodMonitor"
    );
    let known = known_metrics()?;
    let rule = r.one("PrometheusRule")?;
    let alerts = as_array(&rule["spec"]["groups"][0]["rules"]);
    // One per item of docs/metrics.md's "Alerts worth having".
    let names: Vec<&str> = alerts.iter().filter_map(|a| a["alert"].as_str()).collect();
    for want in [
        "ApiserverProxyFailOpen",
        "ApiserverProxySysctlUnset",
        "ApiserverProxyOneFailureFromOutage",
        "ApiserverProxyReconcileErrors",
        "ApiserverProxyDiscoveryRejected",
    ] {
        ensure!(
            names.contains(&want),
            "no alert {want} (the alerts of docs/metrics.md)"
        );
    }
    check_runbooks(alerts, &default_runbook_base())?;
    for a in alerts {
        ensure!(
            a["labels"]["severity"].is_string() && a["for"].is_string(),
            "alert {}: severity and for come from the values",
            a["alert"]
        );
        let expr = a["expr"].as_str().context("alert expr")?;
        check_metric_names(expr, &known).with_context(|| format!("alert {}", a["alert"]))?;
        ensure!(
            a["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains("{{ $labels.")),
            "alert {}: the summary must keep Prometheus' own templating",
            a["alert"]
        );
    }
    let dash = r
        .of_kind("ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == format!("{FULLNAME}-dashboard").as_str())
        .context("no dashboard ConfigMap")?;
    ensure!(dash["metadata"]["namespace"] == "monitoring");
    ensure!(dash["metadata"]["labels"]["grafana_dashboard"] == "1");
    let json = dash["data"]["bcs-apiserver-proxy.json"]
        .as_str()
        .context("dashboard JSON")?;
    let _: Value = serde_json::from_str(json).context("the dashboard is not JSON")?;
    Ok(())
}

pub(super) fn assert_client_cert(r: &Rendered) -> Result<()> {
    let ds = r.daemonset(FULLNAME)?;
    ensure!(
        r.of_kind("DaemonSet").len() == 1 && node_affinity_operator(ds) == Some("DoesNotExist"),
        "controlPlane.daemonSet: none keeps the pods off control-plane nodes"
    );
    let c = container(ds);
    ensure!(
        c["image"]
            .as_str()
            .is_some_and(|i| i.starts_with(&format!("{DEFAULT_REPOSITORY}@sha256:"))),
        "a digest pins the image: {}",
        c["image"]
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        ensure!(
            c[probe]["httpGet"]["host"] == "127.0.0.1",
            "{probe} must go to the loopback listener"
        );
    }
    ensure!(
        as_array(&c["volumeMounts"])
            .iter()
            .any(|m| m["name"] == "kubelet-pki" && m["readOnly"] == true)
    );
    let cfg = r.config()?;
    ensure!(cfg["metricsAddr"] == "127.0.0.1:8004");
    ensure!(cfg["health"]["clientCert"] == "/var/lib/kubelet/pki/kubelet-client-current.pem");
    Ok(())
}

/// ci/outside-vip-values.yaml: the election runs on the control-plane
/// DaemonSet only, with NET_RAW and its Lease's RBAC; workers get neither.
pub(super) fn assert_outside_vip(r: &Rendered) -> Result<()> {
    let cp = r.daemonset(&format!("{FULLNAME}-cp"))?;
    let workers = r.daemonset(FULLNAME)?;
    ensure!(env_of(cp, "APISERVER_PROXY_CONTROL_PLANE_VIP") == Some("192.168.1.100:6443"));
    ensure!(env_of(cp, "APISERVER_PROXY_CONTROL_PLANE_INTERFACE") == Some("eth0"));
    ensure!(
        env_of(cp, "APISERVER_PROXY_CONTROL_PLANE_APISERVERS")
            == Some("192.168.1.11:6443,192.168.1.12:6443,192.168.1.13:6443")
    );
    ensure!(
        env_of(workers, "APISERVER_PROXY_CONTROL_PLANE_VIP").is_none(),
        "workers never run the election"
    );
    let caps = |ds: &Value| -> Vec<String> {
        as_array(&container(ds)["securityContext"]["capabilities"]["add"])
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect()
    };
    ensure!(caps(cp) == ["NET_ADMIN", "NET_RAW"], "{:?}", caps(cp));
    ensure!(caps(workers) == ["NET_ADMIN"], "{:?}", caps(workers));
    let lease_role = r
        .of_kind("Role")
        .into_iter()
        .find(|o| o["metadata"]["namespace"] == "kube-system")
        .context("a Role for the Lease in kube-system")?;
    // Only the control-plane pods' own account may write the Lease.
    ensure!(cp["spec"]["template"]["spec"]["serviceAccountName"] == format!("{FULLNAME}-vip"));
    ensure!(workers["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME);
    let lease_binding = r
        .of_kind("RoleBinding")
        .into_iter()
        .find(|o| o["metadata"]["namespace"] == "kube-system")
        .context("a RoleBinding for the Lease in kube-system")?;
    let subjects: Vec<&str> = as_array(&lease_binding["subjects"])
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    ensure!(
        subjects == [format!("{FULLNAME}-vip")],
        "only the control-plane account may write the Lease: {subjects:?}"
    );
    let rules = as_array(&lease_role["rules"]);
    ensure!(
        rules
            .iter()
            .any(|rule| rule["verbs"] == serde_json::json!(["get", "update"])
                && rule["resourceNames"] == serde_json::json!(["bcs-apiserver-proxy-vip"])),
        "update narrowed to the one Lease: {rules:?}"
    );
    let cfg = r.config()?;
    ensure!(cfg["controlPlane"]["leaseDuration"] == "1500ms");
    ensure!(cfg["controlPlane"].get("vip").is_none());
    Ok(())
}
