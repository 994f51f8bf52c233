//! The chart's checks: `helm lint --strict`, `helm template` of the default
//! values and of every `ci/*-values.yaml` variant validated against the
//! Kubernetes schemas and asserted on, the schema and the templates refusing
//! bad values, the README naming every value, the package's versions, and
//! the static-pod manifest of `apiserver-proxy-tools`.//!
//! This file runs them and renders; `objects` asserts on what a render
//! holds, `values` checks refusals and the README's table of values,
//! `dashboard` the Grafana dashboard's queries.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{CHART_DIR, Checks, DEFAULT_REPOSITORY, VERSION};

mod alerts;
mod dashboard;
mod objects;
mod values;

use dashboard::{check_metric_names, dashboard, known_metrics};
use objects::{
    assert_client_cert, assert_default, assert_ipv6, assert_monitoring, assert_multi_vip,
    assert_options, assert_outside_vip, assert_service_monitor, check_daemonset, check_rbac,
};
use values::{REJECTED, chart_icon, chart_versions, expect_refusal, readme_lists_values};
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
    checks.run(
        "chart: Chart.yaml's icon is an SVG of this repository",
        || chart_icon(root),
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
    checks.run(
        "chart: every alert fires on its scrape and only then (promtool test rules)",
        || alerts::promtool_tests(&ctx, &super::tools::promtool(root)?),
    );
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
const VARIANTS: [(&str, Assert); 8] = [
    ("default", assert_default),
    ("ipv6", assert_ipv6),
    ("multi-vip", assert_multi_vip),
    ("monitoring", assert_monitoring),
    ("servicemonitor", assert_service_monitor),
    ("client-cert", assert_client_cert),
    ("options", assert_options),
    ("outside-vip", assert_outside_vip),
];

fn variant_file(variant: &str) -> String {
    format!("{variant}-values.yaml")
}

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
        Ok(serde_saphyr::from_str(&text)?)
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
        // The pods' account; with the outside VIP the control-plane pods
        // have one of their own (`-vip`), checked by that variant.
        let names: Vec<&str> = r
            .of_kind("ServiceAccount")
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str())
            .collect();
        let sa_name = match names
            .iter()
            .filter(|n| !n.ends_with("-vip"))
            .collect::<Vec<_>>()[..]
        {
            [one] => *one,
            ref other => {
                anyhow::bail!("expected one ServiceAccount for every pod, found {other:?}")
            }
        };
        let vip_sa = names.iter().find(|n| n.ends_with("-vip")).copied();
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
            let is_cp = ds["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-cp"));
            // The outside VIP's holders also announce it (NET_RAW).
            let (want_sa, caps): (&str, &[&str]) = match vip_sa {
                Some(v) if is_cp => (v, &["NET_ADMIN", "NET_RAW"]),
                _ => (sa_name, &["NET_ADMIN"]),
            };
            check_daemonset(ds, want_sa, &cm_names, caps)
                .with_context(|| format!("DaemonSet {}", ds["metadata"]["name"]))?;
            let mut show = Command::new(&daemon);
            show.args(["config", "show", "--config"]).arg(&cfg_path);
            // As kubelet would: `$(NAME)` expands to an earlier variable,
            // and the node's address (a fieldRef) is a documentation one,
            // once IPv4 and once IPv6.
            for node_ip in ["192.0.2.10", "2001:db8::10"] {
                for e in as_array(&ds["spec"]["template"]["spec"]["containers"][0]["env"]) {
                    if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str())
                        && k.starts_with("APISERVER_PROXY_")
                        && k != "APISERVER_PROXY_LOG"
                    {
                        show.env(k, v.replace("$(NODE_IP)", node_ip));
                    }
                }
                let out = show.output().context("cannot run config show")?;
                ensure!(
                    out.status.success(),
                    "DaemonSet {} (node address {node_ip}): the daemon refuses its config and \
                     environment:\n{}",
                    ds["metadata"]["name"],
                    String::from_utf8_lossy(&out.stderr)
                );
            }
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
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).context("helm template printed invalid YAML")?;
    Ok(docs.into_iter().filter(|v| !v.is_null()).collect())
}

fn as_array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn strings(v: &Value) -> Vec<&str> {
    as_array(v).iter().filter_map(Value::as_str).collect()
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
    let chart: Value = serde_saphyr::from_slice(&out.stdout)?;
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
