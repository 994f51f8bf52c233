//! `report`: docs/benchmarks.md and docs/bench/ from the JSON of one run.
//! Every number in the document is formatted from that JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::results::{Failover, Results, Trial};
use crate::util::percentile;

mod dataplane;
mod failover;
mod sections;
mod soak;

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
    if !r.carried_over.is_empty() {
        // Grouped by the run that measured them.
        let mut by_run: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in &r.carried_over {
            by_run.entry(&c.from).or_default().push(&c.section);
        }
        let runs: Vec<String> = by_run
            .iter()
            .map(|(from, sections)| format!("{} from the run of {from}", sections.join(", ")))
            .collect();
        let _ = writeln!(
            w,
            "**Not measured by this run:** {} (figures kept; the machine facts above are this run's).\n",
            runs.join("; ")
        );
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
            let kernel99 = row.kernel(99.0);
            // Both must be in: the kernel rule out, and the last client
            // connection that went to the silent master.
            let worse = match (p99, kernel99) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            goal_line(
                w,
                "black hole: out of rotation within 1 s (p99), the kernel rule and the last new connection to it",
                format!(
                    "p99 {} (kernel rule out: p99 {})",
                    secs_or_cap(p99, cap),
                    secs_or_cap(kernel99, cap)
                ),
                Some(worse.is_some_and(|v| v <= 1.0)),
                worse.map_or("(beyond the cap)".into(), |v| {
                    format!("by {:.2} s", v - 1.0)
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
        for (scn, name) in [
            ("crash", "crash"),
            ("blackhole", "black hole"),
            ("drain", "graceful drain"),
        ] {
            if let Some(Some(row)) = ours_row(scn) {
                let failed: usize = row.trials.iter().map(|t| t.failed).sum();
                goal_line(
                    w,
                    &format!("{name}: 0 failed client requests"),
                    format!("{failed} failed in {} failovers", row.trials.len()),
                    Some(failed == 0),
                    format!("({failed} failed)"),
                );
            }
        }
    }
    let dp = r.dataplane.as_ref().map(dataplane::medians);
    if let Some(m) = &dp {
        let cell = |p: &str, wl: &str| m.get(&(p.to_string(), wl.to_string()));
        let get = |p: &str, wl: &str| cell(p, wl).map(|c| c.rps);
        for wl in ["new", "keepalive", "tls-new"] {
            if let (Some(o), Some(b)) = (cell("ours-nft", wl), cell("bare-nft", wl)) {
                let ratio = o.rps / b.rps;
                goal_line(
                    w,
                    &format!("dataplane `{wl}`: our nftables VIP within 5 % of bare nftables DNAT"),
                    format!(
                        "{} of bare nftables (round-to-round spread: ours ±{:.1} %, bare ±{:.1} %)",
                        f2(ratio),
                        o.spread_pct(),
                        b.spread_pct()
                    ),
                    Some(ratio >= 0.95),
                    format!("by {:.1} points", (0.95 - ratio) * 100.0),
                );
            }
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
        pass_goal(
            w,
            &format!(
                "reconcile pass with {} foreign services",
                s.foreign_services
            ),
            s.reconcile_mean_ms_with_foreign,
            s.reconcile_passes_with_foreign,
            s.reconcile_max_bucket_ms_with_foreign,
        );
        if s.nft_foreign_rules > 0 {
            pass_goal(
                w,
                &format!(
                    "nftables: reconcile pass with {} foreign rules",
                    s.nft_foreign_rules
                ),
                s.nft_reconcile_mean_ms_with_foreign,
                s.nft_reconcile_passes_with_foreign,
                s.nft_reconcile_max_bucket_ms_with_foreign,
            );
        }
    }
    if let Some(rp) = &r.repair {
        sections::repair_goals(w, rp);
    }
    if let Some(sk) = &r.soak {
        soak::goals(w, sk);
    }
    if let Some(c) = &r.control_plane {
        sections::control_plane_goals(w, c);
    }
    let _ = writeln!(w);

    if let Some(f) = fo {
        failover::section(w, f, &bench_dir)?;
    }
    if let (Some(d), Some(m)) = (&r.dataplane, &dp) {
        dataplane::section(w, d, m);
    }
    if let Some(c) = &r.convergence {
        sections::convergence(w, c);
    }
    if let Some(s) = &r.scale {
        sections::scale(w, s);
    }
    if let Some(fp) = &r.footprint {
        sections::footprint(w, fp, &meta);
    }
    if let Some(rp) = &r.repair {
        sections::repair(w, rp);
    }
    if let Some(sk) = &r.soak {
        soak::section(w, sk);
    }
    if let Some(c) = &r.control_plane {
        sections::control_plane(w, c);
    }
    if let Some(b) = &r.bigtable {
        sections::bigtable(w, b);
    }
    std::fs::write(args.docs.join("benchmarks.md"), md)?;
    println!(
        "bench: wrote {} and {}",
        args.docs.join("benchmarks.md").display(),
        bench_dir.display()
    );
    Ok(())
}

/// The goal line of a reconcile pass beside foreign entries: a mean of at
/// most 50 ms.
fn pass_goal(w: &mut String, what: &str, mean: Option<f64>, passes: u64, max: Option<f64>) {
    goal_line(
        w,
        &format!("{what} ≤ 50 ms"),
        mean.map_or("n/a".into(), |m| {
            format!(
                "mean {} over {passes} passes (every pass ≤ {})",
                ms(m),
                max.map_or("?".into(), ms)
            )
        }),
        mean.map(|m| m <= 50.0),
        mean.map_or(String::new(), |m| format!("by {:.1} ms", m - 50.0)),
    );
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
        let m = dataplane::medians(&d);
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

    #[test]
    fn the_soak_is_judged_on_false_alarms_and_requests() {
        use crate::results::{Cost, Soak, SoakPhase};
        let phase = |label: &str, removals: usize| SoakPhase {
            label: label.into(),
            netem: "loss 1% delay 2ms 1ms".into(),
            stall_ms: 500,
            stalls: 60,
            seconds: 600.0,
            removals,
            requests: 2000,
            failed: 0,
        };
        let cost = |label: &str, readyz: f64| Cost {
            label: label.into(),
            window_s: 30.0,
            packets_per_s: vec![10.0, 10.0, 10.0],
            bytes_per_s: vec![900.0, 900.0, 900.0],
            readyz_per_s: vec![readyz; 3],
        };
        let soak = |removals: usize, readyz_on: f64| Results {
            soak: Some(Soak {
                heartbeat: "PING after 200 ms".into(),
                cost: vec![
                    cost("heartbeat on (default)", readyz_on),
                    cost("heartbeat off", 0.2),
                ],
                soak: phase("10 min soak", removals),
                losses: vec![phase("10 % loss", 3)],
                stalls: Vec::new(),
            }),
            ..Results::default()
        };
        let md = report(&soak(0, 0.2));
        assert!(
            md.contains(
                "| no false alarm: 0 removals of a healthy master in 10 min soak (netem `loss 1% \
                 delay 2ms 1ms` on every link, a 500 ms stall every 10 s) | 0 removals; 0 of 2000 \
                 client requests failed | met |"
            ),
            "{md}"
        );
        assert!(md.contains("| liveness costs no request"), "{md}");
        assert!(md.contains("0.200/s with, 0.200/s without | met |"), "{md}");
        // 10 packets/s per master from 5,000 nodes.
        assert!(md.contains("| 50000 packets/s, 4.5 MB/s | 3000 |"), "{md}");
        assert!(
            md.contains("| 10 % loss | `loss 1% delay 2ms 1ms` | 60 × 500 ms | 600 s | **3** |"),
            "{md}"
        );
        let md = report(&soak(2, 0.4));
        assert!(
            md.contains("client requests failed | **missed** (2 removals) |"),
            "{md}"
        );
        assert!(
            md.contains("0.400/s with, 0.200/s without | **missed** (0.200/s more) |"),
            "{md}"
        );
    }

    /// The committed raw figures must stay readable, so that
    /// `cargo xtask bench --report-only docs/bench/results.json` can rewrite
    /// the document after a change to the report alone.
    #[test]
    fn the_committed_results_still_parse() {
        let text = include_str!("../../../../docs/bench/results.json");
        let r: Results = serde_json::from_str(text).expect("docs/bench/results.json");
        assert!(r.failover.is_some() && r.dataplane.is_some() && r.scale.is_some());
    }
}
