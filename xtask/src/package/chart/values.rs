//! Values: the refusals of bad values, the chart's versions, and the
//! README's table naming every value.

use super::*;

/// Bad values and a piece of the message that must explain the refusal.
pub(super) const REJECTED: &[(&str, &[&str], &str)] = &[
    (
        "a PodMonitor and a ServiceMonitor together",
        &[
            "--set",
            "monitoring.podMonitor.enabled=true",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
        ],
        "both scrape every pod",
    ),
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

/// Runs `helm template` with bad values: it must fail, saying `expected`.
pub(super) fn expect_refusal(ctx: &Ctx<'_>, args: &[&str], expected: &str) -> Result<String> {
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

pub(super) fn chart_versions(root: &Path) -> Result<String> {
    let chart: Value = serde_saphyr::from_str(&fs::read_to_string(
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

/// Chart.yaml's icon is a file of this repository (its raw URL on the main
/// branch), and an SVG, so that chart browsers never show a broken image.
pub(super) fn chart_icon(root: &Path) -> Result<String> {
    let chart: Value = serde_saphyr::from_str(&fs::read_to_string(
        root.join(CHART_DIR).join("Chart.yaml"),
    )?)?;
    let icon = chart["icon"].as_str().context("Chart.yaml has no icon")?;
    let repo = env!("CARGO_PKG_REPOSITORY")
        .strip_prefix("https://github.com/")
        .context("the workspace repository is not on GitHub")?;
    let prefix = format!("https://raw.githubusercontent.com/{repo}/main/");
    let path = icon
        .strip_prefix(&prefix)
        .with_context(|| format!("icon {icon} is not under {prefix}"))?;
    let text = fs::read_to_string(root.join(path))
        .with_context(|| format!("icon {icon}: no file {path} in the repository"))?;
    ensure!(
        path.ends_with(".svg") && text.contains("<svg"),
        "icon {path} is not an SVG"
    );
    Ok(path.to_string())
}

/// Every leaf of values.yaml is documented in the README's tables (itself or
/// a parent), and every value the README documents exists.
pub(super) fn readme_lists_values(root: &Path) -> Result<String> {
    let values: Value = serde_saphyr::from_str(&fs::read_to_string(
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
