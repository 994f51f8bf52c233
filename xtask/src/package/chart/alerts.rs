//! The chart's alert rules, evaluated by Prometheus' own `promtool test
//! rules` on sample series: each alert fires on the scrape it is for, with
//! the labels and annotations an on-call sees, and stays quiet otherwise.
//! The expected annotations are the rendered templates with the series'
//! labels put in, so the test follows the chart's wording.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;

/// One alert's scenario: series on two nodes, `n1` in trouble and `n2`
/// fine; at `fires_at` only `n1` fires, and at `quiet_at` (before its `for`
/// has passed) nothing does.
struct Case {
    alert: &'static str,
    /// (series selector, values in promtool's expanding notation)
    series: &'static [(&'static str, &'static str)],
    /// The labels of the firing alert, besides severity.
    labels: &'static [(&'static str, &'static str)],
    quiet_at: &'static str,
    fires_at: &'static str,
}

const VS: &str = "10.103.97.2:6443";

const CASES: &[Case] = &[
    Case {
        alert: "ApiserverProxyFailOpen",
        series: &[
            (
                r#"apiserver_proxy_fail_open{instance="n1", vs="10.103.97.2:6443"}"#,
                "1x20",
            ),
            (
                r#"apiserver_proxy_fail_open{instance="n2", vs="10.103.97.2:6443"}"#,
                "0x20",
            ),
        ],
        labels: &[("instance", "n1"), ("vs", VS)],
        quiet_at: "30s",
        fires_at: "5m",
    },
    Case {
        alert: "ApiserverProxyOneFailureFromOutage",
        // n1 keeps one of its two apiservers; n2 both.
        series: &[
            (
                r#"apiserver_proxy_backend_healthy{instance="n1", vs="10.103.97.2:6443", backend="192.168.1.10:6443"}"#,
                "1x20",
            ),
            (
                r#"apiserver_proxy_backend_healthy{instance="n1", vs="10.103.97.2:6443", backend="192.168.1.11:6443"}"#,
                "0x20",
            ),
            (
                r#"apiserver_proxy_backend_healthy{instance="n2", vs="10.103.97.2:6443", backend="192.168.1.10:6443"}"#,
                "1x20",
            ),
            (
                r#"apiserver_proxy_backend_healthy{instance="n2", vs="10.103.97.2:6443", backend="192.168.1.11:6443"}"#,
                "1x20",
            ),
        ],
        labels: &[("instance", "n1"), ("vs", VS)],
        quiet_at: "2m",
        fires_at: "10m",
    },
    Case {
        alert: "ApiserverProxySysctlUnset",
        series: &[
            (
                r#"apiserver_proxy_sysctl_unset{instance="n1", sysctl="net.ipv4.vs.conntrack"}"#,
                "1x30",
            ),
            (
                r#"apiserver_proxy_sysctl_unset{instance="n2", sysctl="net.ipv4.vs.conntrack"}"#,
                "0x30",
            ),
        ],
        labels: &[("instance", "n1"), ("sysctl", "net.ipv4.vs.conntrack")],
        quiet_at: "5m",
        fires_at: "15m",
    },
    Case {
        alert: "ApiserverProxyReconcileErrors",
        series: &[
            (
                r#"apiserver_proxy_reconcile_total{instance="n1", result="error"}"#,
                "0+10x30",
            ),
            (
                r#"apiserver_proxy_reconcile_total{instance="n2", result="error"}"#,
                "5x30",
            ),
        ],
        labels: &[("instance", "n1"), ("result", "error")],
        quiet_at: "3m",
        fires_at: "15m",
    },
    Case {
        alert: "ApiserverProxyDiscoveryRejected",
        // One rejection on n1 at minute 5; none on n2.
        series: &[
            (
                r#"apiserver_proxy_discovery_rejected_total{instance="n1", reason="empty"}"#,
                "0x5 1x20",
            ),
            (
                r#"apiserver_proxy_discovery_rejected_total{instance="n2", reason="empty"}"#,
                "0x25",
            ),
        ],
        labels: &[("instance", "n1"), ("reason", "empty")],
        quiet_at: "3m",
        fires_at: "10m",
    },
];

/// Renders the monitoring variant, writes its rules and a promtool test of
/// every case, and runs it.
pub(super) fn promtool_tests(ctx: &Ctx<'_>, promtool: &Path) -> Result<String> {
    let r = ctx.render_variant("monitoring")?;
    let rule = r.one("PrometheusRule")?;
    let alerts = as_array(&rule["spec"]["groups"][0]["rules"]);
    ensure!(
        alerts.len() == CASES.len()
            && CASES
                .iter()
                .all(|c| alerts.iter().any(|a| a["alert"] == c.alert)),
        "every alert needs a promtool case, and only they"
    );
    let dir = ctx.scratch.join("promtool");
    fs::create_dir_all(&dir)?;
    // JSON is YAML: promtool reads both.
    fs::write(dir.join("rules.yaml"), rule["spec"].to_string())?;
    let mut tests = Vec::new();
    for case in CASES {
        let a = alerts
            .iter()
            .find(|a| a["alert"] == case.alert)
            .context("alert")?;
        tests.push(test_of(case, a)?);
    }
    let file = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": tests,
    });
    fs::write(dir.join("alerts-test.yaml"), file.to_string())?;
    let out = Command::new(promtool)
        .args(["test", "rules", "alerts-test.yaml"])
        .current_dir(&dir)
        .output()
        .context("cannot run promtool")?;
    ensure!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(format!("{} alerts, each firing and quiet", CASES.len()))
}

fn test_of(case: &Case, alert: &Value) -> Result<Value> {
    let labels: BTreeMap<&str, &str> = case.labels.iter().copied().collect();
    let mut exp_labels = json!(labels);
    exp_labels["severity"] = alert["labels"]["severity"].clone();
    let mut exp_annotations = serde_json::Map::new();
    for (k, v) in alert["annotations"]
        .as_object()
        .context("alert annotations")?
    {
        let text = v.as_str().context("annotation")?;
        exp_annotations.insert(k.clone(), json!(expand(text, &labels)));
    }
    let series: Vec<Value> = case
        .series
        .iter()
        .map(|(s, v)| json!({"series": s, "values": v}))
        .collect();
    Ok(json!({
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": case.quiet_at, "alertname": case.alert, "exp_alerts": []},
            {
                "eval_time": case.fires_at,
                "alertname": case.alert,
                "exp_alerts": [{"exp_labels": exp_labels, "exp_annotations": exp_annotations}],
            },
        ],
    }))
}

/// Prometheus' `{{ $labels.NAME }}`, the only templating the chart's
/// annotations use.
fn expand(text: &str, labels: &BTreeMap<&str, &str>) -> String {
    let mut out = text.to_string();
    for (k, v) in labels {
        out = out.replace(&format!("{{{{ $labels.{k} }}}}"), v);
    }
    out
}
