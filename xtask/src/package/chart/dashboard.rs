//! Metric names: every query of the Grafana dashboard and of the alerts
//! names a metric the daemon exports (docs/metrics.md's table).

use super::*;

/// Metric names of docs/metrics.md's table.
pub(super) fn known_metrics() -> Result<BTreeSet<String>> {
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
pub(super) fn check_metric_names(expr: &str, known: &BTreeSet<String>) -> Result<()> {
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
pub(super) fn dashboard(root: &Path) -> Result<String> {
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
