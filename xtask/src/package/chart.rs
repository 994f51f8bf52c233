//! The chart's checks: `helm lint --strict`, `helm template` of the default
//! values and of every `ci/*-values.yaml` variant validated against the
//! Kubernetes schemas and asserted on, the schema and the templates refusing
//! bad values, the README naming every value, the package's versions, and
//! the static-pod manifest of `apiserver-proxy-tools`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::Value;

use super::{CHART_DIR, Checks, DEFAULT_REPOSITORY, VERSION};

/// The release name and namespace every render uses.
const RELEASE: &str = "bap";
const NAMESPACE: &str = "kube-system";
const FULLNAME: &str = "bap-bcs-apiserver-proxy";
/// Kubernetes versions the manifests are validated against: the chart's
/// oldest (`kubeVersion` in Chart.yaml) and helm v4's own.
const KUBE_VERSIONS: [&str; 2] = ["1.25.0", "1.35.0"];

/// Runs every chart check.
pub fn checks(checks: &mut Checks, root: &Path, helm: &Path, kv: &Path, debug: &Path) {
    let scratch = root.join("target/xtask/chart-checks");
    let _ = fs::remove_dir_all(&scratch);
    if let Err(e) = fs::create_dir_all(&scratch) {
        checks.fail("chart: scratch folder", &e.into());
        return;
    }
    let ctx = Ctx {
        root,
        helm,
        kv,
        debug,
        scratch: &scratch,
    };

    checks.run(
        "chart: Chart.yaml version and appVersion are the workspace's",
        || chart_versions(root),
    );
    checks.run("chart: helm lint --strict", || lint(helm, root, &[]));
    for (variant, _) in VARIANTS.iter().skip(1) {
        let file = root.join(CHART_DIR).join("ci").join(variant_file(variant));
        checks.run(
            &format!("chart: helm lint --strict -f ci/{}", variant_file(variant)),
            || lint(helm, root, &[file]),
        );
    }
    for (variant, assert) in VARIANTS {
        checks.run(
            &format!("chart: render {variant}: valid and as expected"),
            || {
                let r = ctx.render_variant(variant)?;
                let detail = ctx.common(&r)?;
                assert(&r)?;
                Ok(detail)
            },
        );
    }
    for (name, args, expected) in REJECTED {
        checks.run(&format!("chart: refuses {name}"), || {
            expect_refusal(&ctx, args, expected)
        });
    }
    checks.run("chart: README lists every value, and only values", || {
        readme_lists_values(root)
    });
    checks.run(
        "chart: dashboard shows the required panels and known metrics",
        || dashboard(root),
    );
    checks.run("chart: helm package (cargo xtask helm)", || {
        let tgz = package(helm, root, &scratch.join("package"))?;
        package_contents(helm, &tgz)
    });
}

/// The variants, by name: `default` (no values file) and `ci/NAME-values.yaml`.
type Assert = fn(&Rendered) -> Result<()>;
const VARIANTS: [(&str, Assert); 5] = [
    ("default", assert_default),
    ("ipv6", assert_ipv6),
    ("multi-vip", assert_multi_vip),
    ("monitoring", assert_monitoring),
    ("client-cert", assert_client_cert),
];

fn variant_file(variant: &str) -> String {
    format!("{variant}-values.yaml")
}

/// Bad values and a piece of the message that must explain the refusal.
const REJECTED: &[(&str, &[&str], &str)] = &[
    (
        "a VIP without a port",
        &["--set", "virtualServers[0].vip=10.103.97.2"],
        "at '/virtualServers/0/vip'",
    ),
    (
        "a VIP with an octet over 255",
        &["--set", "virtualServers[0].vip=10.103.97.300:6443"],
        "virtualServers[0].vip: \"10.103.97.300:6443\" is not IP:PORT",
    ),
    (
        "port 0",
        &["--set", "virtualServers[0].vip=10.103.97.2:0"],
        "use a port from 1 to 65535",
    ),
    (
        "an IPv6 VIP without brackets",
        &["--set", "virtualServers[0].vip=fd00::2:6443"],
        "at '/virtualServers/0/vip'",
    ),
    (
        "an unknown scheduler",
        &[
            "--set-json",
            r#"virtualServers=[{"vip":"10.103.97.2:6443","scheduler":"fastest"}]"#,
        ],
        "at '/virtualServers/0/scheduler': value must be one of",
    ),
    (
        "no virtual server",
        &["--set-json", "virtualServers=[]"],
        "at '/virtualServers': minItems",
    ),
    (
        "a seed of the other address family",
        &[
            "--set-json",
            r#"virtualServers=[{"vip":"10.103.97.2:6443","seeds":["[fd00::10]:6443"]}]"#,
        ],
        "is not of the same address family as the VIP",
    ),
    (
        "the same VIP twice",
        &[
            "--set-json",
            r#"virtualServers=[{"vip":"10.103.97.2:6443"},{"vip":"10.103.97.2:6443"}]"#,
        ],
        "virtualServers[1].vip: 10.103.97.2:6443 is configured twice",
    ),
    (
        "vipMode route with an IPv6 VIP",
        &[
            "--set-json",
            r#"virtualServers=[{"vip":"[fd00::2]:6443"}]"#,
            "--set",
            "vipMode=route",
        ],
        "route works for IPv4 VIPs only",
    ),
    (
        "a misspelt value",
        &["--set", "vipmode=route"],
        "additional properties 'vipmode' not allowed",
    ),
    (
        "a duration without a unit",
        &["--set-string", "health.interval=5"],
        "at '/health/interval'",
    ),
    (
        "an unknown health mode",
        &["--set", "health.mode=grpc"],
        "at '/health/mode'",
    ),
    (
        "maxUnavailable 0",
        &["--set", "updateStrategy.maxUnavailable=0"],
        "at '/updateStrategy/maxUnavailable'",
    ),
    (
        "a metrics port over 65535",
        &["--set", "metrics.port=70000"],
        "at '/metrics/port'",
    ),
    (
        "an interface name over 15 characters",
        &["--set", "interface=apiserver-proxy-0"],
        "at '/interface'",
    ),
    (
        "a malformed image digest",
        &["--set", "image.digest=latest"],
        "at '/image/digest'",
    ),
    (
        "a client certificate without its key",
        &["--set", "health.clientCert=/pki/cert.pem"],
        "health.clientCert needs health.clientKey",
    ),
];

struct Ctx<'a> {
    root: &'a Path,
    helm: &'a Path,
    kv: &'a Path,
    debug: &'a Path,
    scratch: &'a Path,
}

/// One render: its objects, and the file they were written to.
struct Rendered {
    objects: Vec<Value>,
}

impl Rendered {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> Result<&Value> {
        let all = self.of_kind(kind);
        ensure!(all.len() == 1, "expected one {kind}, found {}", all.len());
        Ok(all[0])
    }

    fn daemonset(&self, name: &str) -> Result<&Value> {
        self.of_kind("DaemonSet")
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .with_context(|| format!("no DaemonSet {name}"))
    }

    /// The daemon's config file from the ConfigMap, parsed.
    fn config(&self) -> Result<Value> {
        let text = self.config_text()?;
        Ok(serde_yaml_ng::from_str(&text)?)
    }

    fn config_text(&self) -> Result<String> {
        let cm = self
            .of_kind("ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == FULLNAME)
            .context("no ConfigMap with the daemon's config")?;
        cm["data"]["config.yaml"]
            .as_str()
            .map(str::to_string)
            .context("the ConfigMap has no config.yaml")
    }
}

/// `helm` with its caches in our target folder, not the user's home.
fn helm_cmd(helm: &Path, root: &Path) -> Command {
    let home = root.join("target/xtask/tools/helm-home");
    let mut cmd = Command::new(helm);
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(root);
    cmd
}

/// `helm lint --strict` with these values files.
pub fn lint(helm: &Path, root: &Path, values: &[PathBuf]) -> Result<String> {
    let mut cmd = helm_cmd(helm, root);
    cmd.args(["lint", "--strict", CHART_DIR]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    let out = cmd.output().context("cannot run helm lint")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("helm lint failed:\n{}", text.trim());
    }
    // INFO lines (no icon) are fine; anything worse fails --strict already.
    Ok(String::new())
}

/// `helm package` with the workspace version; returns the .tgz.
pub fn package(helm: &Path, root: &Path, out: &Path) -> Result<PathBuf> {
    fs::create_dir_all(out)?;
    let status = helm_cmd(helm, root)
        .args([
            "package",
            CHART_DIR,
            "--version",
            VERSION,
            "--app-version",
            VERSION,
        ])
        .arg("--destination")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run helm package")?;
    if !status.success() {
        bail!("helm package failed ({status})");
    }
    let tgz = out.join(format!("bcs-apiserver-proxy-{VERSION}.tgz"));
    ensure!(tgz.is_file(), "helm package wrote no {}", tgz.display());
    Ok(tgz)
}

impl Ctx<'_> {
    fn template(&self, extra: &[&str]) -> Result<std::process::Output> {
        helm_cmd(self.helm, self.root)
            .args(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE])
            .args(["--kube-version", KUBE_VERSIONS[1]])
            .args(extra)
            .output()
            .context("cannot run helm template")
    }

    /// Renders a variant, validates it against the Kubernetes schemas and
    /// parses it.
    fn render_variant(&self, variant: &str) -> Result<Rendered> {
        let file = self
            .root
            .join(CHART_DIR)
            .join("ci")
            .join(variant_file(variant));
        let file_arg = file.to_string_lossy().into_owned();
        let args: Vec<&str> = if variant == "default" {
            vec![]
        } else {
            vec!["-f", &file_arg]
        };
        let out = self.template(&args)?;
        if !out.status.success() {
            bail!(
                "helm template failed:\n{}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let path = self.scratch.join(format!("{variant}.yaml"));
        fs::write(&path, &text)?;
        validate(self.kv, &path)?;
        let objects = parse_docs(&text)?;
        ensure!(!objects.is_empty(), "helm template rendered nothing");
        Ok(Rendered { objects })
    }

    /// What every render must hold, whatever the values.
    fn common(&self, r: &Rendered) -> Result<String> {
        for o in &r.objects {
            let labels = &o["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ] {
                ensure!(
                    labels[key].is_string(),
                    "{} {} has no label {key}",
                    o["kind"],
                    o["metadata"]["name"]
                );
            }
        }
        for kind in ["ClusterRole", "ClusterRoleBinding"] {
            ensure!(r.of_kind(kind).is_empty(), "no {kind} is wanted");
        }
        let sa = r.one("ServiceAccount")?;
        let sa_name = sa["metadata"]["name"]
            .as_str()
            .context("ServiceAccount name")?;
        check_rbac(r, sa_name)?;

        // The daemon accepts the rendered config, and each DaemonSet's
        // environment on top of it.
        let cfg_path = self.scratch.join("config.yaml");
        fs::write(&cfg_path, r.config_text()?)?;
        let daemon = self.debug.join("bcs-apiserver-proxy");
        let out = Command::new(&daemon)
            .args(["config", "check"])
            .arg(&cfg_path)
            .output()
            .context("cannot run bcs-apiserver-proxy config check")?;
        ensure!(
            out.status.success(),
            "bcs-apiserver-proxy config check refuses the rendered config:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cm_names: BTreeSet<&str> = r
            .of_kind("ConfigMap")
            .iter()
            .filter_map(|c| c["metadata"]["name"].as_str())
            .collect();
        let daemonsets = r.of_kind("DaemonSet");
        ensure!(!daemonsets.is_empty(), "no DaemonSet");
        for ds in &daemonsets {
            check_daemonset(ds, sa_name, &cm_names)
                .with_context(|| format!("DaemonSet {}", ds["metadata"]["name"]))?;
            let mut show = Command::new(&daemon);
            show.args(["config", "show", "--config"]).arg(&cfg_path);
            for e in as_array(&ds["spec"]["template"]["spec"]["containers"][0]["env"]) {
                if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str())
                    && k.starts_with("APISERVER_PROXY_")
                    && k != "APISERVER_PROXY_LOG"
                {
                    show.env(k, v);
                }
            }
            let out = show.output().context("cannot run config show")?;
            ensure!(
                out.status.success(),
                "DaemonSet {}: the daemon refuses its config and environment:\n{}",
                ds["metadata"]["name"],
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(format!(
            "{} objects, {} DaemonSet(s), config check ok",
            r.objects.len(),
            daemonsets.len()
        ))
    }
}

/// Validates every manifest of `file` against the Kubernetes schemas of
/// each version in [`KUBE_VERSIONS`], strictly (unknown fields are errors).
/// The Prometheus Operator's kinds have no bundled schema: their warning is
/// expected; any other warning (a mistyped apiVersion) fails.
fn validate(kv: &Path, file: &Path) -> Result<()> {
    for version in KUBE_VERSIONS {
        let out = Command::new(kv)
            .args(["--strict", "--quiet", "-k", version])
            .arg(file)
            .output()
            .context("cannot run kubernetes-validate")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| {
                !(l.starts_with("WARN") && l.contains("api version monitoring.coreos.com/v1"))
            })
            .collect();
        if !out.status.success() || !bad.is_empty() {
            bail!(
                "kubernetes-validate (Kubernetes {version}) refuses {}:\n{}",
                file.display(),
                bad.join("\n")
            );
        }
    }
    Ok(())
}

fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).context("helm template printed invalid YAML")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn as_array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn strings(v: &Value) -> Vec<&str> {
    as_array(v).iter().filter_map(Value::as_str).collect()
}

/// A Role and RoleBinding in `default` only, reading EndpointSlices and
/// Endpoints, bound to the chart's ServiceAccount.
fn check_rbac(r: &Rendered, sa_name: &str) -> Result<()> {
    let role = r.one("Role")?;
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
    let rb = r.one("RoleBinding")?;
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
fn check_daemonset(ds: &Value, sa_name: &str, configmaps: &BTreeSet<&str>) -> Result<()> {
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
        strings(&sc["capabilities"]["add"]) == ["NET_ADMIN"],
        "capabilities: add NET_ADMIN only: {}",
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

fn assert_default(r: &Rendered) -> Result<()> {
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

fn assert_ipv6(r: &Rendered) -> Result<()> {
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

fn assert_multi_vip(r: &Rendered) -> Result<()> {
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

fn assert_monitoring(r: &Rendered) -> Result<()> {
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
    ensure!(pm["metadata"]["labels"]["release"] == "prometheus");
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
    let svc_labels = &svc["metadata"]["labels"];
    ensure!(
        sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| m.iter().all(|(k, v)| svc_labels[k] == *v)),
        "the ServiceMonitor must select the Service"
    );
    let known = known_metrics()?;
    let rule = r.one("PrometheusRule")?;
    let alerts = as_array(&rule["spec"]["groups"][0]["rules"]);
    ensure!(alerts.len() >= 4, "the four alerts of docs/metrics.md");
    for a in alerts {
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

fn assert_client_cert(r: &Rendered) -> Result<()> {
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

/// Runs `helm template` with bad values: it must fail, saying `expected`.
fn expect_refusal(ctx: &Ctx<'_>, args: &[&str], expected: &str) -> Result<String> {
    let out = ctx.template(args)?;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ensure!(!out.status.success(), "helm template accepted {args:?}");
    ensure!(
        err.contains(expected),
        "the message does not say {expected:?}:\n{}",
        err.trim()
    );
    let line = err.lines().find(|l| l.contains(expected)).unwrap_or("");
    // A template's own failure: keep its message, not the file position.
    let line = match line.find("execution error at (") {
        Some(_) => line.split_once("): ").map_or(line, |(_, m)| m),
        None => line,
    };
    let line = line.trim().trim_start_matches("- ");
    let short: String = line.chars().take(110).collect();
    Ok(short)
}

fn chart_versions(root: &Path) -> Result<String> {
    let chart: Value = serde_yaml_ng::from_str(&fs::read_to_string(
        root.join(CHART_DIR).join("Chart.yaml"),
    )?)?;
    ensure!(
        chart["version"] == VERSION && chart["appVersion"] == VERSION,
        "Chart.yaml has version {} and appVersion {}, the workspace {VERSION}: update Chart.yaml",
        chart["version"],
        chart["appVersion"]
    );
    Ok(VERSION.to_string())
}

/// Every leaf of values.yaml is documented in the README's tables (itself or
/// a parent), and every value the README documents exists.
fn readme_lists_values(root: &Path) -> Result<String> {
    let values: Value = serde_yaml_ng::from_str(&fs::read_to_string(
        root.join(CHART_DIR).join("values.yaml"),
    )?)?;
    let mut leaves = Vec::new();
    value_paths(&values, "", &mut leaves);
    let readme = fs::read_to_string(root.join(CHART_DIR).join("README.md"))?;
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let all_paths: BTreeSet<String> = {
        let mut all = Vec::new();
        all_value_paths(&values, "", &mut all);
        all.into_iter().collect()
    };
    let missing: Vec<&String> = leaves
        .iter()
        .filter(|leaf| {
            !documented.iter().any(|d| {
                *leaf == d
                    || leaf.starts_with(&format!("{d}."))
                    || leaf.starts_with(&format!("{d}["))
            })
        })
        .collect();
    let stale: Vec<&String> = documented
        .iter()
        .filter(|d| !all_paths.contains(*d))
        .collect();
    ensure!(
        missing.is_empty() && stale.is_empty(),
        "README.md misses {missing:?}; documents values that do not exist: {stale:?}"
    );
    Ok(format!("{} values", leaves.len()))
}

/// Leaf paths: `a.b`, and `virtualServers[].vip` for lists of mappings.
fn value_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(child, &p, out);
            }
        }
        Value::Array(items)
            if items.first().is_some_and(Value::is_object) && prefix == "virtualServers" =>
        {
            value_paths(&items[0], &format!("{prefix}[]"), out);
        }
        _ => out.push(prefix.to_string()),
    }
}

/// Every path, inner ones included.
fn all_value_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if !prefix.is_empty() {
        out.push(prefix.to_string());
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                all_value_paths(child, &p, out);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            all_value_paths(&items[0], &format!("{prefix}[]"), out);
        }
        _ => {}
    }
}

/// Metric names of docs/metrics.md's table.
fn known_metrics() -> Result<BTreeSet<String>> {
    let root = crate::workspace_root();
    let doc = fs::read_to_string(root.join("docs/metrics.md")).context("docs/metrics.md")?;
    let names: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("apiserver_proxy_"))
        .map(str::to_string)
        .collect();
    ensure!(names.len() > 5, "docs/metrics.md lists no metrics");
    Ok(names)
}

/// Every `apiserver_proxy_*` name in `expr` is a documented metric (or its
/// histogram series); `process_*` are the standard ones.
fn check_metric_names(expr: &str, known: &BTreeSet<String>) -> Result<()> {
    let mut rest = expr;
    while let Some(i) = rest.find("apiserver_proxy_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| known.contains(*b))
            .unwrap_or(name);
        ensure!(known.contains(base), "{name} is not in docs/metrics.md");
        rest = &tail[end..];
    }
    Ok(())
}

/// The dashboard file: valid JSON, its panels (backend health, fail-open,
/// discovery source, failovers, probes, cut sockets), and only metrics that
/// exist.
fn dashboard(root: &Path) -> Result<String> {
    let text = fs::read_to_string(root.join(CHART_DIR).join("files/dashboard.json"))?;
    let dash: Value = serde_json::from_str(&text).context("files/dashboard.json is not JSON")?;
    let known = known_metrics()?;
    let mut exprs = Vec::new();
    let panels = as_array(&dash["panels"]);
    for p in panels {
        for t in as_array(&p["targets"]) {
            if let Some(e) = t["expr"].as_str() {
                check_metric_names(e, &known).with_context(|| format!("panel {}", p["title"]))?;
                exprs.push(e.to_string());
            }
        }
    }
    let all = exprs.join("\n");
    for (what, metric) in [
        (
            "backend health over time",
            "apiserver_proxy_backend_healthy",
        ),
        ("failovers", "apiserver_proxy_backend_transitions_total"),
        (
            "reconcile latency",
            "apiserver_proxy_reconcile_duration_seconds_bucket",
        ),
        ("IPVS connections", "apiserver_proxy_ipvs_connections"),
        (
            "sockets destroyed",
            "apiserver_proxy_sockets_destroyed_total",
        ),
    ] {
        ensure!(all.contains(metric), "no panel shows {what} ({metric})");
    }
    ensure!(dash["uid"].is_string() && dash["title"].is_string());
    Ok(format!("{} panels", panels.len()))
}

/// The packaged chart: versions from the workspace, the schema, README and
/// NOTES inside, the test values out.
fn package_contents(helm: &Path, tgz: &Path) -> Result<String> {
    let out = Command::new(helm)
        .arg("show")
        .arg("chart")
        .arg(tgz)
        .output()
        .context("cannot run helm show chart")?;
    let chart: Value = serde_yaml_ng::from_slice(&out.stdout)?;
    ensure!(chart["version"] == VERSION && chart["appVersion"] == VERSION);
    let file = fs::File::open(tgz)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut names = BTreeSet::new();
    for e in archive.entries()? {
        names.insert(e?.path()?.to_string_lossy().into_owned());
    }
    for want in [
        "bcs-apiserver-proxy/values.schema.json",
        "bcs-apiserver-proxy/README.md",
        "bcs-apiserver-proxy/templates/NOTES.txt",
        "bcs-apiserver-proxy/files/dashboard.json",
    ] {
        ensure!(names.contains(want), "{} lacks {want}", tgz.display());
    }
    ensure!(
        !names
            .iter()
            .any(|n| n.starts_with("bcs-apiserver-proxy/ci/")),
        "the test values must stay out of the package"
    );
    let size = fs::metadata(tgz)?.len();
    Ok(format!("{} files, {} bytes", names.len(), size))
}

/// `apiserver-proxy-tools static-pod`: validated and asserted like the
/// chart, for an IPv4 and an IPv6 VIP.
pub fn static_pod(checks: &mut Checks, root: &Path, kv: &Path, debug: &Path) {
    let tools = debug.join("apiserver-proxy-tools");
    let available = Command::new(&tools)
        .args(["static-pod", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        checks.run("static-pod", || {
            bail!("static-pod: not available yet (`apiserver-proxy-tools static-pod --help` fails)")
        });
        return;
    }
    let scratch = root.join("target/xtask/chart-checks");
    let cases: [(&str, &[&str]); 2] = [
        (
            "IPv4",
            &[
                "--vs",
                "10.103.97.2:6443",
                "--rs",
                "192.168.1.10:6443",
                "--rs",
                "192.168.1.11:6443",
            ],
        ),
        (
            "IPv6",
            &["--vs", "[fd00:10:96::2]:6443", "--rs", "[fd00:1::10]:6443"],
        ),
    ];
    for (name, args) in cases {
        checks.run(
            &format!("static-pod: {name} manifest valid and as expected"),
            || {
                let out = Command::new(&tools)
                    .arg("static-pod")
                    .args(args)
                    .output()
                    .context("cannot run apiserver-proxy-tools static-pod")?;
                ensure!(
                    out.status.success(),
                    "apiserver-proxy-tools static-pod {args:?} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                fs::create_dir_all(&scratch)?;
                let path = scratch.join(format!("static-pod-{name}.yaml"));
                fs::write(&path, &out.stdout)?;
                validate(kv, &path)?;
                let docs = parse_docs(&String::from_utf8_lossy(&out.stdout))?;
                ensure!(
                    docs.len() == 1 && docs[0]["kind"] == "Pod",
                    "expected one Pod"
                );
                let pod = &docs[0];
                let spec = &pod["spec"];
                ensure!(spec["hostNetwork"] == true, "hostNetwork: true");
                let c = &spec["containers"][0];
                ensure!(
                    strings(&c["securityContext"]["capabilities"]["add"]).contains(&"NET_ADMIN"),
                    "NET_ADMIN"
                );
                ensure!(
                    c["securityContext"]["privileged"] != true,
                    "must not be privileged"
                );
                let text = String::from_utf8_lossy(&out.stdout);
                ensure!(
                    text.contains(args[1]),
                    "the manifest does not carry the VIP {}",
                    args[1]
                );
                Ok(format!("Pod {}", pod["metadata"]["name"]))
            },
        );
    }
}
