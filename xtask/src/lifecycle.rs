//! The lifecycle suite's two host-side jobs.
//!
//! - The previous release's daemon and CLI, for the upgrade and downgrade
//!   event: the source of [`PREVIOUS_RELEASE`] is unpacked with `git archive`
//!   into `target/xtask/prev-src` and built there with its own target folder
//!   (`target/xtask/prev-target`); a second run finds both and only asks
//!   cargo, which has nothing to do.
//! - `docs/lifecycle.md`: the tests write one JSON report per event into the
//!   VM's results folder (`lifecycle/`, through the writable 9p share); this
//!   renders them with each test's verdict from the run's output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The last release on main: what a node runs before the upgrade.
pub const PREVIOUS_RELEASE: &str = "d21c887";

/// The test binary and test-name prefix of the lifecycle suite.
pub const TEST_PREFIX: &str = "lifecycle_";
pub const PACKAGE: &str = "bcs-apiserver-proxy";

/// Builds (or finds) the previous release's binaries; the folder holding
/// `bcs-apiserver-proxy` and `apiserver-proxy-tools`.
pub fn previous_release(root: &Path) -> Result<PathBuf> {
    let src = root.join("target/xtask/prev-src");
    let stamp = src.join(".xtask-commit");
    let commit = git(
        root,
        &["rev-parse", &format!("{PREVIOUS_RELEASE}^{{commit}}")],
    )
    .with_context(|| {
        format!(
            "the previous release {PREVIOUS_RELEASE} is not in this clone's history \
                 (a shallow clone? fetch it with `git fetch --unshallow`)"
        )
    })?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(commit.as_str()) {
        println!(
            "xtask: unpacking the previous release {PREVIOUS_RELEASE} into {}",
            src.display()
        );
        if src.exists() {
            std::fs::remove_dir_all(&src)?;
        }
        std::fs::create_dir_all(&src)?;
        let archive = Command::new("git")
            .args(["archive", "--format=tar", &commit])
            .current_dir(root)
            .output()
            .context("run git archive")?;
        if !archive.status.success() {
            bail!(
                "git archive {commit} failed: {}",
                String::from_utf8_lossy(&archive.stderr)
            );
        }
        tar::Archive::new(archive.stdout.as_slice())
            .unpack(&src)
            .context("unpack the previous release")?;
        std::fs::write(&stamp, &commit)?;
    }
    let target = root.join("target/xtask/prev-target");
    println!("xtask: building the previous release's binaries ({PREVIOUS_RELEASE})");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--bins",
            "-p",
            "bcs-apiserver-proxy",
            "-p",
            "apiserver-proxy-tools",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&src)
        .status()
        .context("cargo build of the previous release")?;
    if !status.success() {
        bail!("building the previous release {PREVIOUS_RELEASE} failed ({status})");
    }
    Ok(target.join("debug"))
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .context("run git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Each lifecycle test's verdict in a libtest output: `ok` or `FAILED`.
pub fn verdicts(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("test ")?;
            let (name, verdict) = rest.split_once(" ... ")?;
            let name = name.rsplit("::").next()?.trim();
            name.starts_with(TEST_PREFIX)
                .then(|| (name.to_string(), verdict.trim().to_string()))
        })
        .collect()
}

/// The reports the tests wrote into `dir`, by test name.
pub fn load_reports(dir: &Path) -> Result<BTreeMap<String, Value>> {
    let mut reports = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(reports);
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a lifecycle report", path.display()))?;
            let test = v["test"].as_str().unwrap_or_default().to_string();
            reports.insert(test, v);
        }
    }
    Ok(reports)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// docs/lifecycle.md from the reports, the verdicts and the run's facts.
pub fn render(
    reports: &BTreeMap<String, Value>,
    verdicts: &BTreeMap<String, String>,
    facts: &[(&str, String)],
) -> String {
    let mut md = String::from(
        "# Lifecycle: the node's API through install, reboot, upgrade, migration, tampering and uninstall\n\n\
         Written by `cargo xtask lifecycle` (and by `cargo xtask test`, which runs the same suite \
         in its one VM boot) from the figures the real-kernel tests of \
         `bins/bcs-apiserver-proxy/tests/lifecycle.rs` measured. Do not edit by hand.\n\n\
         Each event runs in its own network namespace of the VM with the daemon and the CLI as \
         built, three or more fake apiservers (TLS, `/readyz`, the EndpointSlice API) on hosts \
         of their own, and two clients through the VIP:\n\n\
         - a prober opening a **new TLS connection every 100 ms** with a 10 s timeout, as the \
         benchmark's client (a request may be delayed, it must not fail; verified against the cluster \
         CA for the name `kubernetes`, one `GET /version`); *failed* counts its failed \
         connections, *longest outage* the longest run of failures (from the first failed \
         attempt to the next good one, to 100 ms);\n\
         - an **idle watch** of EndpointSlices, as kubelet keeps one: it receives nothing until \
         something changes. At the end of each phase the slice is published again, and the \
         event must reach the watch: *kept* (the same connection was served), or *cut* and \
         reconnected, with the time from the phase's start until it was served again.\n\n\
         The tests assert rules, final states, the watch being served and zero failed requests \
         where the product promises them (*promised*: yes); the timings are reported, never \
         asserted. Goals: 0 failed requests and 0 s outage, except where a phase removes every \
         path to an apiserver; repairs within 200 ms of a tamper. A *repaired in* time here is \
         an upper bound: the test checks the node with `ipvsadm` and `ip` (several processes per \
         look, each slow under emulation) while other events run beside it. The repair latency \
         measured alone, over netlink, is in [benchmarks.md](benchmarks.md#tamper-repair).\n\n",
    );
    md.push_str("## The run\n\n");
    for (k, v) in facts {
        md.push_str(&format!("- {k}: {v}\n"));
    }
    md.push_str("\n## Summary\n\n| event | test | verdict |\n| --- | --- | --- |\n");
    let mut by_event: Vec<(&String, &Value)> = reports.iter().collect();
    by_event.sort_by_key(|(t, v)| (v["event"].as_u64().unwrap_or(99), t.to_string()));
    let mut names: Vec<&String> = verdicts.keys().collect();
    for (t, _) in &by_event {
        if !verdicts.contains_key(*t) {
            names.push(t);
        }
    }
    names.sort();
    for t in &names {
        let title = reports
            .get(*t)
            .map(|v| format!("{}. {}", v["event"], v["title"].as_str().unwrap_or("")))
            .unwrap_or_else(|| "(no figures: the test stopped before its first phase)".into());
        let verdict = verdicts.get(*t).map_or("did not run", String::as_str);
        md.push_str(&format!(
            "| {} | `{t}` | {} |\n",
            cell(&title),
            cell(verdict)
        ));
    }
    for (t, v) in &by_event {
        md.push_str(&format!(
            "\n## {}. {}\n\n`{t}`: **{}**\n\n\
             | phase | failed / requests | promised | longest outage | idle connection | repaired, changes |\n\
             | --- | --- | --- | --- | --- | --- |\n",
            v["event"],
            v["title"].as_str().unwrap_or(""),
            verdicts.get(*t).map_or("did not run", String::as_str),
        ));
        for r in v["rows"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {} | {} / {} | {} | {:.2} s | {} | {} |\n",
                cell(r["phase"].as_str().unwrap_or("")),
                r["failed"],
                r["requests"],
                if r["zero_failures_promised"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                r["longest_outage_s"].as_f64().unwrap_or(0.0),
                cell(r["idle"].as_str().unwrap_or("")),
                cell(r["repair"].as_str().unwrap_or("")),
            ));
        }
    }
    md
}

/// Writes docs/lifecycle.md from a VM run's results folder and output.
pub fn write_doc(root: &Path, results: &Path, output: &str, command: &str) -> Result<PathBuf> {
    let reports = load_reports(&results.join("lifecycle"))?;
    let verdicts = verdicts(output);
    if reports.is_empty() && verdicts.is_empty() {
        bail!("the run holds no lifecycle figures and no lifecycle test ran");
    }
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let commit = git(root, &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let facts = [
        ("command", format!("`{command}`")),
        ("date", date),
        ("commit", commit),
        (
            "previous release (upgrade event)",
            PREVIOUS_RELEASE.to_string(),
        ),
        (
            "VM",
            "qemu software emulation, 2 vCPUs, stock Debian kernel (docs/testing.md); \
             the events run side by side, so the figures include their contention"
                .to_string(),
        ),
        (
            "raw figures",
            format!("`{}`", results.join("lifecycle").display()),
        ),
    ];
    let doc = root.join("docs/lifecycle.md");
    std::fs::write(&doc, render(&reports, &verdicts, &facts))?;
    println!("xtask: wrote {}", doc.display());
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reports_with_their_verdicts() {
        let output = "test lifecycle_1_first ... ok\n\
                      test lifecycle_6_tamper ... FAILED\n\
                      test other_test ... ok\n\
                      test lifecycle_9_nothing ... FAILED\n";
        let v = verdicts(output);
        assert_eq!(v.len(), 3);
        assert_eq!(v["lifecycle_6_tamper"], "FAILED");
        let mut reports = BTreeMap::new();
        for (event, test) in [(6, "lifecycle_6_tamper"), (1, "lifecycle_1_first")] {
            reports.insert(
                test.to_string(),
                serde_json::json!({
                    "event": event, "title": format!("Event {event}"), "test": test,
                    "rows": [{"phase": "a | b", "requests": 40, "failed": 2,
                              "zero_failures_promised": false, "longest_outage_s": 0.31,
                              "idle": "kept", "repair": "repaired in 0.120 s"}]
                }),
            );
        }
        let md = render(&reports, &v, &[("date", "today".into())]);
        assert!(
            md.contains("| 1. Event 1 | `lifecycle_1_first` | ok |"),
            "{md}"
        );
        assert!(
            md.contains("| 6. Event 6 | `lifecycle_6_tamper` | FAILED |"),
            "{md}"
        );
        assert!(md.contains("`lifecycle_9_nothing` | FAILED |"), "{md}");
        assert!(
            md.contains("| a \\| b | 2 / 40 | no | 0.31 s | kept | repaired in 0.120 s |"),
            "{md}"
        );
        // Events in their order, whatever the test names sort as.
        assert!(md.find("## 1. Event 1").expect("1") < md.find("## 6. Event 6").expect("6"));
    }
}
