//! `report`: docs/benchmarks.md and docs/bench/ from the JSON of one run.
//! Every number in the document is formatted from that JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::results::{Failover, Results, Trial};
use crate::util::percentile;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The results file `run` wrote.
    #[arg(long)]
    json: PathBuf,
    /// Facts about the host and the build (written by `cargo xtask bench`).
    #[arg(long)]
    meta: PathBuf,
    /// The docs folder: writes benchmarks.md and bench/.
    #[arg(long)]
    docs: PathBuf,
}

/// What the xtask knows and the VM does not.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    pub command: String,
    pub date: String,
    pub host_cpu: String,
    pub host_cpus: usize,
    pub host_kernel: String,
    pub qemu: String,
    pub load_before: String,
    pub binaries: Vec<(String, u64)>,
    /// The `docker load` tarball and its size.
    pub image: Option<(String, u64)>,
    /// The image's layer as pulled (gzip) and as unpacked on the node.
    pub image_compressed: Option<u64>,
    pub image_unpacked: Option<u64>,
    pub total_wall_s: f64,
    pub vm_wall_s: f64,
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn secs_or_cap(v: Option<f64>, cap: f64) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v < 1.0 {
                format!("{:.0} ms", v * 1000.0)
            } else {
                format!("{v:.2} s")
            }
        }
        _ => format!("> {cap:.0} s"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1} %"))
}

/// p-th percentile of a metric where `None` is "beyond the cap".
fn pct_opt(vals: &[Option<f64>], p: f64) -> Option<f64> {
    let v: Vec<f64> = vals.iter().map(|v| v.unwrap_or(f64::INFINITY)).collect();
    percentile(&v, p).filter(|x| x.is_finite())
}

struct Row<'a> {
    trials: Vec<&'a Trial>,
}

impl Row<'_> {
    fn failover(&self, p: f64) -> Option<f64> {
        pct_opt(
            &self.trials.iter().map(|t| t.failover_s).collect::<Vec<_>>(),
            p,
        )
    }
    fn idle(&self, p: f64) -> Option<f64> {
        let v: Vec<Option<f64>> = self
            .trials
            .iter()
            .filter(|t| t.idle_measured)
            .map(|t| t.idle_stuck_s)
            .collect();
        pct_opt(&v, p)
    }
    fn idle_n(&self) -> usize {
        self.trials.iter().filter(|t| t.idle_measured).count()
    }
    fn failed_mean(&self) -> f64 {
        self.trials.iter().map(|t| t.failed as f64).sum::<f64>() / self.trials.len().max(1) as f64
    }
    fn failed_max(&self) -> usize {
        self.trials.iter().map(|t| t.failed).max().unwrap_or(0)
    }
    fn kernel(&self, p: f64) -> Option<f64> {
        let v: Vec<f64> = self.trials.iter().filter_map(|t| t.kernel_s).collect();
        percentile(&v, p)
    }
    fn over_cap(&self) -> usize {
        self.trials
            .iter()
            .filter(|t| t.failover_s.is_none())
            .count()
    }
}

fn rows<'a>(f: &'a Failover, scenario: &str) -> Vec<(String, String, Row<'a>)> {
    f.setups
        .iter()
        .map(|s| {
            let trials = f
                .trials
                .iter()
                .filter(|t| t.setup == s.id && t.scenario == scenario)
                .collect();
            (s.id.clone(), s.label.clone(), Row { trials })
        })
        .collect()
}

fn goal_line(out: &mut String, goal: &str, measured: String, met: Option<bool>, miss: String) {
    let verdict = match met {
        Some(true) => "met".to_string(),
        Some(false) => format!("**missed** {miss}"),
        None => "not measured".to_string(),
    };
    let _ = writeln!(out, "| {goal} | {measured} | {verdict} |");
}

pub fn write(args: &ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.json)
        .with_context(|| format!("read {}", args.json.display()))?;
    let r: Results = serde_json::from_str(&text)?;
    let meta: Meta = std::fs::read_to_string(&args.meta)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let bench_dir = args.docs.join("bench");
    std::fs::create_dir_all(&bench_dir)?;
    std::fs::write(bench_dir.join("results.json"), &text)?;
    std::fs::write(
        bench_dir.join("meta.json"),
        serde_json::to_string_pretty(&meta)?,
    )?;

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `{}` on {}; the raw figures are in [bench/results.json](bench/results.json) and \
         [bench/meta.json](bench/meta.json). Nothing here is typed by hand: re-run the command to replace it.\n",
        meta.command, meta.date
    );
    let _ = writeln!(w, "## Where and how\n");
    let _ = writeln!(
        w,
        "- **Machine:** {} ({} cores), host kernel {}; the bench ran in a VM under **qemu software emulation** \
         (TCG, no KVM: {}), {} vCPUs, booting Debian's kernel {}.",
        meta.host_cpu, meta.host_cpus, meta.host_kernel, meta.qemu, r.vm_cpus, r.vm_kernel
    );
    let _ = writeln!(
        w,
        "- **Emulation caveat.** Emulated code runs many times slower than on hardware, and the host was shared \
         with other builds (load average before the run: {}). Absolute times and rates below are those of that \
         emulated machine, not of a real node. What carries over are **ratios and same-run comparisons**: every \
         load balancer in a table ran in the same VM at the same time (failover) or in interleaved rounds \
         (dataplane), against the same fake apiservers, so noise hits them alike.",
        meta.load_before
    );
    let _ = writeln!(
        w,
        "- **Wall time:** {:.0} s for the whole command, {:.0} s of it inside the VM.{}\n",
        meta.total_wall_s,
        meta.vm_wall_s,
        if r.quick {
            " **This was a `--quick` run: few trials, short runs. Not for publication.**"
        } else {
            ""
        }
    );

    if !r.errors.is_empty() {
        let _ = writeln!(
            w,
            "**Sections that failed in this run** (their figures are missing below):\n"
        );
        for (name, e) in &r.errors {
            let _ = writeln!(w, "- `{name}`: {e}");
        }
        let _ = writeln!(w);
    }
    let walls: Vec<String> = r
        .section_wall_s
        .iter()
        .map(|(s, t)| format!("{s} {t:.0} s"))
        .collect();
    if !walls.is_empty() {
        let _ = writeln!(w, "Section wall times in the VM: {}.\n", walls.join(", "));
    }
    // Goals.
    let fo = r.failover.as_ref();
    let ours_row = |scn: &str| {
        fo.map(|f| {
            rows(f, scn)
                .into_iter()
                .find(|(id, _, _)| id == "ours")
                .map(|x| x.2)
        })
    };
    let _ = writeln!(w, "## Goals\n");
    let _ = writeln!(
        w,
        "| goal | measured (ours) | verdict |\n| --- | --- | --- |"
    );
    if let Some(f) = fo {
        let cap = f.cap_s;
        if let Some(Some(row)) = ours_row("crash") {
            let p99 = row.failover(99.0);
            goal_line(
                w,
                "crash: no new connection to the dead master within 300 ms (p99)",
                format!(
                    "p99 {} (kernel rule out: p99 {})",
                    secs_or_cap(p99, cap),
                    secs_or_cap(row.kernel(99.0), cap)
                ),
                Some(p99.is_some_and(|v| v <= 0.3)),
                p99.map_or("(beyond the cap)".into(), |v| {
                    format!("by {:.0} ms", (v - 0.3) * 1000.0)
                }),
            );
        }
        if let Some(Some(row)) = ours_row("blackhole") {
            let p99 = row.failover(99.0);
            goal_line(
                w,
                "black hole: within 3 s (p99)",
                format!(
                    "p99 {} (kernel rule out: p99 {})",
                    secs_or_cap(p99, cap),
                    secs_or_cap(row.kernel(99.0), cap)
                ),
                Some(p99.is_some_and(|v| v <= 3.0)),
                p99.map_or("(beyond the cap)".into(), |v| {
                    format!("by {:.2} s", v - 3.0)
                }),
            );
            let lag: Vec<f64> = row
                .trials
                .iter()
                .filter(|t| t.idle_measured)
                .map(|t| match (t.idle_stuck_s, t.kernel_s) {
                    (Some(i), Some(k)) => (i - k).max(0.0),
                    _ => f64::INFINITY,
                })
                .collect();
            let lag99 = percentile(&lag, 99.0).filter(|v| v.is_finite());
            goal_line(
                w,
                "black hole: idle connection cut ≤ 1 s after the master leaves rotation (p99)",
                format!(
                    "p99 {} after; stuck {} from the failure (p50 {})",
                    secs_or_cap(lag99, f.idle_cap_s),
                    secs_or_cap(row.idle(99.0), f.idle_cap_s),
                    secs_or_cap(row.idle(50.0), f.idle_cap_s)
                ),
                Some(lag99.is_some_and(|v| v <= 1.0)),
                lag99.map_or("(still open at the cap)".into(), |v| {
                    format!("by {:.2} s", v - 1.0)
                }),
            );
        }
        if let Some(Some(row)) = ours_row("drain") {
            let failed: usize = row.trials.iter().map(|t| t.failed).sum();
            goal_line(
                w,
                "graceful drain with 0 failed requests",
                format!("{failed} failed in {} drains", row.trials.len()),
                Some(failed == 0),
                format!("({failed} failed)"),
            );
        }
    }
    let dp = r.dataplane.as_ref().map(dataplane_medians);
    if let Some(m) = &dp {
        let cell = |p: &str, wl: &str| m.get(&(p.to_string(), wl.to_string()));
        let get = |p: &str, wl: &str| cell(p, wl).map(|c| c.rps);
        for wl in ["new", "keepalive", "tls-new"] {
            if let (Some(o), Some(b)) = (cell("ours", wl), cell("bare-ipvs", wl)) {
                let ratio = o.rps / b.rps;
                // The verdict stays on the medians; the spread says how much of a gap the
                // rounds themselves produce, so a reader can weigh a near miss.
                goal_line(
                    w,
                    &format!("dataplane `{wl}`: our VIP within 5 % of bare IPVS"),
                    format!(
                        "{} of bare IPVS (round-to-round spread: ours ±{:.1} %, bare ±{:.1} %)",
                        f2(ratio),
                        o.spread_pct(),
                        b.spread_pct()
                    ),
                    Some(ratio >= 0.95),
                    format!("by {:.1} points", (0.95 - ratio) * 100.0),
                );
            }
        }
        for peer in ["haproxy", "nginx"] {
            if let (Some(o), Some(p)) = (get("ours", "new"), get(peer, "new")) {
                let ratio = o / p;
                goal_line(
                    w,
                    &format!("new connections: ≥ 1.7× {peer}"),
                    format!("{}×", f2(ratio)),
                    Some(ratio >= 1.7),
                    format!("({}× short of 1.7×)", f2(1.7 - ratio)),
                );
            }
        }
    }
    if let Some(s) = &r.scale {
        goal_line(
            w,
            &format!(
                "reconcile pass with {} foreign services ≤ 50 ms",
                s.foreign_services
            ),
            s.reconcile_mean_ms_with_foreign.map_or("n/a".into(), |m| {
                format!(
                    "mean {} over {} passes (every pass ≤ {})",
                    ms(m),
                    s.reconcile_passes_with_foreign,
                    s.reconcile_max_bucket_ms_with_foreign
                        .map_or("?".into(), ms)
                )
            }),
            s.reconcile_mean_ms_with_foreign.map(|m| m <= 50.0),
            s.reconcile_mean_ms_with_foreign
                .map_or(String::new(), |m| format!("by {:.1} ms", m - 50.0)),
        );
    }
    let _ = writeln!(w);

    if let Some(f) = fo {
        failover_section(w, f, &bench_dir)?;
    }
    if let (Some(d), Some(m)) = (&r.dataplane, &dp) {
        dataplane_section(w, d, m);
    }
    if let Some(c) = &r.convergence {
        let _ = writeln!(
            w,
            "## Convergence: endpoint change in the API to the kernel rule\n"
        );
        let _ = writeln!(
            w,
            "Our daemon watches `default/kubernetes` through one fake apiserver. A fourth master is added to the \
             EndpointSlice, then removed again; the time runs from handing the new slice to the fake apiserver \
             (which polls its command queue every 10 ms) to the kernel showing the destination in rotation \
             (weight > 0) or out of it, read over netlink every 2 ms.\n"
        );
        let _ = writeln!(
            w,
            "| change | trials | p50 | p99 |\n| --- | --- | --- | --- |"
        );
        for (name, v) in [
            ("endpoint added", &c.add_s),
            ("endpoint removed", &c.remove_s),
        ] {
            let _ = writeln!(
                w,
                "| {name} | {} | {} | {} |",
                v.len(),
                percentile(v, 50.0).map_or("n/a".into(), |x| ms(x * 1000.0)),
                percentile(v, 99.0).map_or("n/a".into(), |x| ms(x * 1000.0))
            );
        }
        let _ = writeln!(w);
    }
    if let Some(s) = &r.scale {
        let _ = writeln!(w, "## Scale\n");
        let _ = writeln!(w, "| what | figure |\n| --- | --- |");
        let _ = writeln!(
            w,
            "| reconcile pass, empty table besides ours (mean) | {} |",
            s.reconcile_mean_ms_before.map_or("n/a".into(), ms)
        );
        let _ = writeln!(
            w,
            "| reconcile pass with {} foreign services (mean; every pass ≤ bucket) | {} (≤ {}) |",
            s.foreign_services,
            s.reconcile_mean_ms_with_foreign.map_or("n/a".into(), ms),
            s.reconcile_max_bucket_ms_with_foreign
                .map_or("?".into(), ms)
        );
        let _ = writeln!(
            w,
            "| for comparison: one full dump of those services over netlink (median of 3) | {} |",
            s.full_dump_ms.map_or("n/a".into(), ms)
        );
        let _ = writeln!(
            w,
            "| creating the {} foreign services (bench, netlink) | {:.1} s |",
            s.foreign_services, s.create_foreign_s
        );
        let _ = writeln!(
            w,
            "| one virtual server with {} backends: daemon start to all in the kernel | {} |",
            s.backends,
            secs_or_cap(s.backends_converge_s, 240.0)
        );
        let _ = writeln!(
            w,
            "| reconcile pass with {} backends (mean) | {} |",
            s.backends,
            s.reconcile_mean_ms_backends.map_or("n/a".into(), ms)
        );
        let _ = writeln!(
            w,
            "| daemon with {} backends: RSS / CPU (probing all of them) | {} / {} of one emulated core |",
            s.backends,
            s.rss_kib_backends.map_or("n/a".into(), mib),
            opt_pct(s.cpu_pct_backends)
        );
        let _ = writeln!(
            w,
            "| {} nodes' readiness probes on one apiserver, **computed** (nodes ÷ interval {:.0} s) | {:.0} requests/s |",
            s.nodes, s.probe_interval_s, s.probe_rps_computed
        );
        let _ = writeln!(
            w,
            "| the same, **measured**: {} simulated nodes (our health checker, defaults) against one fake apiserver, {} ready, counted over {:.0} s | {} requests/s |",
            s.nodes,
            s.probers_ready,
            s.probe_window_s,
            s.probe_rps_measured
                .map_or("n/a".into(), |v| format!("{v:.0}"))
        );
        let _ = writeln!(
            w,
            "\nThe reconcile pass reads only our own service (one GET plus a destination dump), so the foreign \
             services should not change it; the full dump is what a pass that read the whole table would pay. \
             The simulated nodes skip the procfs socket inspection (it costs the prober, not the apiserver). \
             See [health.md](health.md) for what the probe rate means next to kubelet heartbeats.\n"
        );
    }
    if let Some(fp) = &r.footprint {
        let _ = writeln!(w, "## Footprint\n");
        let _ = writeln!(w, "| what | figure |\n| --- | --- |");
        let _ = writeln!(
            w,
            "| daemon idle, 3 healthy backends, {:.0} s: RSS / CPU | {} / {} of one emulated core |",
            fp.idle_window_s,
            fp.idle_rss_kib.map_or("n/a".into(), mib),
            opt_pct(fp.idle_cpu_pct)
        );
        let _ = writeln!(
            w,
            "| daemon under churn ({} events in {:.0} s: a master crashes and returns, the API adds and removes a master): max RSS / CPU | {} / {} |",
            fp.churn_events,
            fp.churn_window_s,
            fp.churn_rss_kib.map_or("n/a".into(), mib),
            opt_pct(fp.churn_cpu_pct)
        );
        for (peer, kib) in &fp.peers_rss_kib {
            let _ = writeln!(
                w,
                "| {peer} during the failover runs: RSS (all its processes) | {} |",
                mib(*kib)
            );
        }
        for (name, bytes) in &meta.binaries {
            let _ = writeln!(
                w,
                "| binary `{name}` (release, stripped) | {:.1} MiB |",
                *bytes as f64 / 1048576.0
            );
        }
        let bytes_mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / 1048576.0);
        if let (Some(gz), Some(tar)) = (meta.image_compressed, meta.image_unpacked) {
            let _ = writeln!(
                w,
                "| image (built by this run, static binaries): download / unpacked on the node | {} / {} |",
                bytes_mib(gz),
                bytes_mib(tar)
            );
        }
        match &meta.image {
            Some((path, bytes)) => {
                let _ = writeln!(
                    w,
                    "| image as a `docker load` tarball `{path}` | {} |",
                    bytes_mib(*bytes)
                );
            }
            None => {
                let _ = writeln!(w, "| image | not built (see the command's output) |");
            }
        }
        let _ = writeln!(w);
    }
    std::fs::write(args.docs.join("benchmarks.md"), md)?;
    println!(
        "bench: wrote {} and {}",
        args.docs.join("benchmarks.md").display(),
        bench_dir.display()
    );
    Ok(())
}

fn failover_section(w: &mut String, f: &Failover, dir: &std::path::Path) -> Result<()> {
    let _ = writeln!(w, "## Failover, side by side\n");
    let _ = writeln!(
        w,
        "Five load balancers ran **at the same time** in the VM, each in front of three fake apiservers of its own \
         (TLS, `/readyz`, the EndpointSlice API; each in its own network namespace behind a veth). Through each, a \
         client starts a new TLS connection with `GET /version` every {} ms (timeout {:.0} s) and tells the masters \
         apart by their certificates. Each trial fails one master (alternating between the second and the third), \
         then brings it back and waits until all three serve again.\n",
        f.client_period_ms, f.client_timeout_s
    );
    let _ = writeln!(w, "| set-up | configuration |\n| --- | --- |");
    for s in &f.setups {
        let _ = writeln!(w, "| {} | {} |", s.label, s.config);
    }
    let _ = writeln!(
        w,
        "\n- **Time until no new connection goes to the dead master**: from the failure to the start of the last \
         client request that failed, was slow (over {:.2} s and over three times the set-up's median latency of the \
         5 s before the failure: the balancer tried the dead master first and retried elsewhere), or was answered by the drained master; that is followed by at least {:.0} s of clean requests. \
         Its resolution is the client period. `> {:.0} s`: still happening at the cap. For ours, the column *kernel* \
         is the time until the kernel took the master out of rotation (netlink, every 10 ms).\n\
         - **Failed requests**: client requests that got no answer, per failover (mean / worst trial).\n\
         - **Idle connection stuck**: a TLS connection through the balancer to the victim, idle after one request \
         (a kubelet watch between events): time until the client sees it end (reset or EOF). Cap {:.0} s. Not \
         measured for the drain: the draining master still serves it.\n",
        f.slow_threshold_s, f.settle_s, f.cap_s, f.idle_cap_s
    );
    let budgets: Vec<String> = f
        .budgets
        .iter()
        .map(|(s, b)| format!("{s} {b:.0} s"))
        .collect();
    let walls: Vec<String> = f
        .scenario_wall_s
        .iter()
        .map(|(s, b)| format!("{s} {b:.0} s"))
        .collect();
    let _ = writeln!(
        w,
        "Ours runs every trial. A peer starts another trial only while it fits its scenario's time budget ({}), \
         because a peer that needs 20 s or more per failover cannot do 20 trials in the time this command may take; \
         the *trials* column says how many each got. Scenario wall times: {}.\n",
        budgets.join(", "),
        walls.join(", ")
    );
    for (scn, title) in [
        (
            "crash",
            "Crash (process killed: connections reset, new ones refused)",
        ),
        (
            "blackhole",
            "Black hole (every packet to and from the master dropped)",
        ),
        (
            "drain",
            "Graceful drain (`/readyz` answers 500, the master keeps serving)",
        ),
    ] {
        let _ = writeln!(w, "### {title}\n");
        let _ = writeln!(
            w,
            "| set-up | trials | no new connection to it: p50 | p99 | failed requests per failover (mean / max) | idle connection stuck: p50 | p99 | kernel (ours): p50 / p99 |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for (id, label, row) in rows(f, scn) {
            if row.trials.is_empty() {
                continue;
            }
            let idle = |p| {
                if row.idle_n() == 0 {
                    "n/a".to_string()
                } else {
                    secs_or_cap(row.idle(p), f.idle_cap_s)
                }
            };
            let kernel = if id == "ours" {
                format!(
                    "{} / {}",
                    secs_or_cap(row.kernel(50.0), f.cap_s),
                    secs_or_cap(row.kernel(99.0), f.cap_s)
                )
            } else {
                "".into()
            };
            let over = row.over_cap();
            let _ = writeln!(
                w,
                "| {label} | {}{} | {} | {} | {:.1} / {} | {} | {} | {kernel} |",
                row.trials.len(),
                if over > 0 {
                    format!(" ({over} > cap)")
                } else {
                    String::new()
                },
                secs_or_cap(row.failover(50.0), f.cap_s),
                secs_or_cap(row.failover(99.0), f.cap_s),
                row.failed_mean(),
                row.failed_max(),
                idle(50.0),
                idle(99.0),
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "### Timelines\n");
    let _ = writeln!(
        w,
        "One trial per set-up and scenario (the one with the median failover time). Each dot is a client request at \
         the time it started, in the lane of the master that answered: green normal, purple answered by the drained \
         master, orange slower than {:.2} s, red failed. Black line: the failure; red: the last affected request; \
         blue (ours): the kernel rule out of rotation; grey: the idle connection ended.\n",
        f.slow_threshold_s
    );
    super::plot::register_font()?;
    for s in &f.setups {
        let mut lines: Vec<&crate::results::Timeline> =
            f.timelines.iter().filter(|t| t.setup == s.id).collect();
        let order = |sc: &str| {
            ["crash", "blackhole", "drain"]
                .iter()
                .position(|x| *x == sc)
                .unwrap_or(9)
        };
        lines.sort_by_key(|t| order(&t.scenario));
        if lines.is_empty() {
            continue;
        }
        let file = format!("timeline-{}.png", s.id);
        super::plot::timeline(&dir.join(&file), &s.label, f, &lines)?;
        let _ = writeln!(w, "![{}](bench/{file})\n", s.label);
    }
    Ok(())
}

/// One (path, workload) cell of the dataplane tables: medians over the rounds, plus the
/// lowest and highest requests/s, so a reader can tell a real gap from round-to-round noise.
struct Cell {
    rps: f64,
    rps_min: f64,
    rps_max: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Cell {
    /// Half the min..max range as a share of the median: "± x %" between rounds.
    fn spread_pct(&self) -> f64 {
        (self.rps_max - self.rps_min) / 2.0 / self.rps * 100.0
    }
}

type Medians = BTreeMap<(String, String), Cell>;

fn dataplane_medians(d: &crate::results::Dataplane) -> Medians {
    let mut groups: BTreeMap<(String, String), Vec<&crate::results::WrkRun>> = BTreeMap::new();
    for run in &d.runs {
        groups
            .entry((run.path.clone(), run.workload.clone()))
            .or_default()
            .push(run);
    }
    groups
        .into_iter()
        .map(|(k, v)| {
            let med = |f: &dyn Fn(&crate::results::WrkRun) -> f64| {
                percentile(&v.iter().map(|r| f(r)).collect::<Vec<_>>(), 50.0).unwrap_or(f64::NAN)
            };
            let rps = v.iter().map(|r| r.rps);
            let cell = Cell {
                rps: med(&|r| r.rps),
                rps_min: rps.clone().fold(f64::INFINITY, f64::min),
                rps_max: rps.fold(f64::NEG_INFINITY, f64::max),
                p50_ms: med(&|r| r.p50_ms),
                p99_ms: med(&|r| r.p99_ms),
                errors: v.iter().map(|r| r.errors).sum(),
            };
            (k, cell)
        })
        .collect()
}

fn dataplane_section(w: &mut String, d: &crate::results::Dataplane, m: &Medians) {
    let _ = writeln!(w, "## Dataplane\n");
    let _ = writeln!(
        w,
        "`wrk -t1 -c{} -d{:.0}s` against a tiny HTTP server (three listeners in three namespaces sharing one \
         two-thread runtime, so spreading load over three backends buys no extra server CPU), directly to one \
         backend and through each balancer; {} interleaved rounds with the order rotated, median shown. \
         `new`: a new TCP connection per request (`Connection: close`); `keepalive`: {} persistent connections; \
         `tls-new`: a new TLS connection per request. Balancers forward TCP (haproxy `mode tcp`, nginx `stream`, \
         IPVS masquerade); client, balancer and server share the VM's two vCPUs, so a user-space proxy's CPU comes \
         out of the throughput, as it would on a busy node. *Spread over rounds* is the slowest and fastest \
         round, and half that range as a share of the median: a gap between two paths smaller than their \
         spreads is not resolved by this run.\n",
        d.connections, d.duration_s, d.rounds, d.connections
    );
    let paths = ["direct", "bare-ipvs", "ours", "haproxy", "nginx"];
    for wl in ["new", "keepalive", "tls-new"] {
        let cell = |p: &str| m.get(&(p.to_string(), wl.to_string()));
        let Some(direct) = cell("direct") else {
            continue;
        };
        let bare = cell("bare-ipvs").map(|c| c.rps);
        let ours = cell("ours").map(|c| c.rps);
        let _ = writeln!(w, "### `{wl}`\n");
        let _ = writeln!(
            w,
            "| path | requests/s | spread over rounds | vs direct | vs bare IPVS | ours vs it | p50 latency | added p50 vs direct | p99 | errors |"
        );
        let _ = writeln!(
            w,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for p in paths {
            let Some(c) = cell(p) else {
                continue;
            };
            let _ = writeln!(
                w,
                "| {p} | {:.0} | {:.0}–{:.0} (±{:.1} %) | {} | {} | {} | {} | {:+.2} ms | {} | {} |",
                c.rps,
                c.rps_min,
                c.rps_max,
                c.spread_pct(),
                f2(c.rps / direct.rps),
                bare.map_or("".into(), |b| f2(c.rps / b)),
                ours.map_or("".into(), |o| format!("{}×", f2(o / c.rps))),
                ms(c.p50_ms),
                c.p50_ms - direct.p50_ms,
                ms(c.p99_ms),
                c.errors,
            );
        }
        let _ = writeln!(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Dataplane, WrkRun};

    /// `new` only, three rounds per path, requests/s as given.
    fn dataplane(paths: &[(&str, [f64; 3])]) -> Dataplane {
        let mut runs = Vec::new();
        for (path, rps) in paths {
            for (round, rps) in rps.iter().enumerate() {
                runs.push(WrkRun {
                    path: path.to_string(),
                    workload: "new".to_string(),
                    round,
                    rps: *rps,
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                    errors: 0,
                });
            }
        }
        Dataplane {
            duration_s: 3.0,
            connections: 4,
            rounds: 3,
            runs,
        }
    }

    fn report(r: &Results) -> String {
        report_with_meta(r, None)
    }

    fn report_with_meta(r: &Results, meta: Option<&str>) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = dir.path().join("results.json");
        std::fs::write(&json, serde_json::to_string(r).expect("json")).expect("write");
        let meta_path = dir.path().join("meta.json");
        if let Some(m) = meta {
            std::fs::write(&meta_path, m).expect("write meta");
        }
        let args = ReportArgs {
            json,
            // Without meta.json the report must still be written.
            meta: meta_path,
            docs: dir.path().join("docs"),
        };
        std::fs::create_dir_all(&args.docs).expect("docs");
        write(&args).expect("report");
        std::fs::read_to_string(args.docs.join("benchmarks.md")).expect("read")
    }

    #[test]
    fn medians_and_spread_over_rounds() {
        let d = dataplane(&[("bare-ipvs", [110.0, 90.0, 100.0])]);
        let m = dataplane_medians(&d);
        let c = &m[&("bare-ipvs".to_string(), "new".to_string())];
        assert_eq!((c.rps, c.rps_min, c.rps_max), (100.0, 90.0, 110.0));
        assert!((c.spread_pct() - 10.0).abs() < 1e-9, "{}", c.spread_pct());
    }

    #[test]
    fn goals_are_judged_on_medians_and_show_the_spread() {
        let r = Results {
            dataplane: Some(dataplane(&[
                ("direct", [100.0, 100.0, 100.0]),
                ("bare-ipvs", [90.0, 100.0, 110.0]),
                ("ours", [90.0, 94.0, 99.0]),
                ("haproxy", [50.0, 50.0, 50.0]),
                ("nginx", [60.0, 60.0, 60.0]),
            ])),
            ..Results::default()
        };
        let md = report(&r);
        assert!(
            md.contains(
                "| dataplane `new`: our VIP within 5 % of bare IPVS | 0.94 of bare IPVS \
                 (round-to-round spread: ours ±4.8 %, bare ±10.0 %) | **missed** by 1.0 points |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| new connections: ≥ 1.7× haproxy | 1.88× | met |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| new connections: ≥ 1.7× nginx | 1.57× | **missed** (0.13× short of 1.7×) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| bare-ipvs | 100 | 90–110 (±10.0 %) |"),
            "{md}"
        );
    }

    #[test]
    fn image_sizes_come_from_the_meta_and_older_metas_still_read() {
        let r = Results {
            footprint: Some(crate::results::Footprint::default()),
            ..Results::default()
        };
        let md = report_with_meta(
            &r,
            Some(
                r#"{"image": ["target/xtask/image/x.docker.tar", 20971520],
                    "image_compressed": 8388608, "image_unpacked": 19922944}"#,
            ),
        );
        assert!(
            md.contains("static binaries): download / unpacked on the node | 8.0 MiB / 19.0 MiB |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| image as a `docker load` tarball `target/xtask/image/x.docker.tar` | 20.0 MiB |"
            ),
            "{md}"
        );
        // A meta.json written before the layer sizes existed.
        let md = report_with_meta(&r, Some(r#"{"image": ["old.docker.tar", 1048576]}"#));
        assert!(md.contains("tarball `old.docker.tar` | 1.0 MiB |"), "{md}");
        assert!(!md.contains("download / unpacked"), "{md}");
    }

    /// The committed raw figures must stay readable, so that
    /// `cargo xtask bench --report-only docs/bench/results.json` can rewrite
    /// the document after a change to the report alone.
    #[test]
    fn the_committed_results_still_parse() {
        let text = include_str!("../../../docs/bench/results.json");
        let r: Results = serde_json::from_str(text).expect("docs/bench/results.json");
        assert!(r.failover.is_some() && r.dataplane.is_some() && r.scale.is_some());
    }
}
