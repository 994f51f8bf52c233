//! `cargo xtask bench`: failover, dataplane, convergence, scale and footprint,
//! measured in the VM side by side with haproxy and nginx, then written to
//! docs/benchmarks.md (tables, timeline plots) and docs/bench/ (raw JSON).
//!
//! The measuring is done by `crates/bench` (`apiserver-proxy-bench run`)
//! inside one VM boot; the document is written on the host by
//! `apiserver-proxy-bench report` from the JSON that run produced. Before
//! the VM it also builds the image (as `cargo xtask image` does), so that the
//! footprint table's image size is that of the code it measured.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{deps, vm};

/// What the peers and the report need on the host (the VM runs the host's
/// userland, so they are installed here, before the boot).
const BENCH_PACKAGES: &[&str] = &[
    "haproxy",
    "nginx",
    "libnginx-mod-stream",
    "keepalived",
    "wrk",
    "fonts-dejavu-core",
];

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Only these sections (comma-separated): failover, convergence,
    /// dataplane, scale, footprint, repair, soak, controlplane, bigtable.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Failover trials per scenario for our daemon (peers: as many as fit
    /// their time budget).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Development run: 3 trials, short budgets and windows. The document
    /// says it was a quick run.
    #[arg(long)]
    quick: bool,
    /// Where benchmarks.md and bench/ are written.
    #[arg(long, default_value = "docs")]
    docs: PathBuf,
    /// Skip the VM: write the document from an earlier results file (for
    /// example docs/bench/results.json). A meta.json beside it supplies the
    /// run's date, load and wall times.
    #[arg(long, value_name = "JSON")]
    report_only: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<i32> {
    let started = Instant::now();
    let root = crate::workspace_root();
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    deps::ensure(deps::VM_PACKAGES)?;
    deps::ensure(BENCH_PACKAGES)?;
    build(&root)?;
    let release = root.join("target/release");
    let bench = release.join("apiserver-proxy-bench");

    let (json, vm_wall, image) = match &args.report_only {
        Some(json) if !args.only.is_empty() => {
            // Only these sections of that file: the others from the docs.
            let copy = root.join("target/xtask/bench-report-only.json");
            std::fs::create_dir_all(root.join("target/xtask"))?;
            let mut only: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(json)
                    .with_context(|| format!("read {}", json.display()))?,
            )?;
            for section in SECTIONS {
                if !args.only.iter().any(|o| o == section) {
                    only[section] = serde_json::Value::Null;
                }
            }
            std::fs::write(&copy, serde_json::to_string_pretty(&only)?)?;
            carry_over(&copy, &root.join(&args.docs).join("bench"))?;
            (copy, 0.0, None)
        }
        Some(json) => (json.clone(), 0.0, None),
        None => {
            // Built here, so that the size reported is that of the code
            // measured. Not fatal: the image's size is one line of the report.
            let image = crate::package::build_image(crate::package::ImageArgs::default())
                .map_err(|e| eprintln!("xtask: WARNING: the image was not built: {e:#}"))
                .ok();
            let vm_started = Instant::now();
            let json = run_in_vm(&root, &args, &bench, &release.join("bcs-apiserver-proxy"))?;
            if !args.only.is_empty() {
                carry_over(&json, &root.join(&args.docs).join("bench"))?;
            }
            (json, vm_started.elapsed().as_secs_f64(), image)
        }
    };

    let mut command: Vec<String> = std::env::args().skip(1).collect();
    command.insert(0, "cargo xtask".into());
    let binaries: Vec<serde_json::Value> = ["bcs-apiserver-proxy", "apiserver-proxy-tools"]
        .iter()
        .filter_map(|b| {
            let len = std::fs::metadata(release.join(b)).ok()?.len();
            Some(serde_json::json!([b, len]))
        })
        .collect();
    let meta = serde_json::json!({
        "command": command.join(" "),
        "date": output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "host_cpu": cpu_model(),
        "host_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "host_kernel": output("uname", &["-r"]),
        "qemu": output("qemu-system-x86_64", &["--version"]).lines().next().unwrap_or("").to_string(),
        "load_before": load_before,
        "binaries": binaries,
        "image": image.as_ref().map(|i| {
            let rel = i.docker_archive.strip_prefix(&root).unwrap_or(&i.docker_archive);
            let len = std::fs::metadata(&i.docker_archive).map_or(0, |m| m.len());
            serde_json::json!([rel.to_string_lossy(), len])
        }),
        "image_compressed": image.as_ref().map(|i| i.compressed),
        "image_unpacked": image.as_ref().map(|i| i.unpacked),
        "total_wall_s": started.elapsed().as_secs_f64(),
        "vm_wall_s": vm_wall,
    });
    // A report rewritten from an earlier run keeps that run's facts (date,
    // load, wall times) when they were saved beside its results, as in
    // docs/bench/; this invocation's would describe a run that did not happen.
    let earlier_meta = args
        .report_only
        .as_ref()
        .and_then(|j| Some(j.parent()?.join("meta.json")))
        .filter(|m| m.is_file());
    let meta_path = match earlier_meta {
        Some(m) => {
            println!("xtask: keeping the run's facts from {}", m.display());
            m
        }
        None => {
            let m = root.join("target/xtask/bench-meta.json");
            std::fs::create_dir_all(root.join("target/xtask"))?;
            std::fs::write(&m, serde_json::to_string_pretty(&meta)?)?;
            m
        }
    };
    let docs = if args.docs.is_absolute() {
        args.docs.clone()
    } else {
        root.join(&args.docs)
    };
    let status = Command::new(&bench)
        .arg("report")
        .arg("--json")
        .arg(&json)
        .arg("--meta")
        .arg(&meta_path)
        .arg("--docs")
        .arg(&docs)
        .status()
        .context("run apiserver-proxy-bench report")?;
    if !status.success() {
        bail!("writing the report failed ({status})");
    }
    println!(
        "xtask: bench finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// Release builds: the daemon and the CLI (their sizes are reported), then
/// the bench. Two invocations, so that the bench's dependencies do not change
/// the features the daemon is built with (and so its size).
fn build(root: &Path) -> Result<()> {
    for packages in [
        &["-p", "bcs-apiserver-proxy", "-p", "apiserver-proxy-tools"][..],
        &["-p", "apiserver-proxy-bench"][..],
    ] {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release"])
            .args(packages)
            .current_dir(root)
            .status()
            .context("cargo build --release")?;
        if !status.success() {
            bail!("the release build failed");
        }
    }
    Ok(())
}

/// Boots the VM with the bench as its job; returns the results file. The
/// VM gets an hour (unless APISERVER_PROXY_VM_TIMEOUT says otherwise): the
/// full run takes about 25 minutes under emulation.
fn run_in_vm(root: &Path, args: &BenchArgs, bench: &Path, daemon: &Path) -> Result<PathBuf> {
    let mut flags = vec![format!("--trials {}", args.trials)];
    if args.quick {
        flags.push("--quick".into());
    }
    if !args.only.is_empty() {
        flags.push(format!("--only {}", vm::shell_quote(&args.only.join(","))));
    }
    // The job runs in the VM's results folder, which is the host's.
    let job = format!(
        "ulimit -n 65536 2>/dev/null || ulimit -n 8192\n\
         results=$(sed -n 's/.*apiproxy.results=\\([^ ]*\\).*/\\1/p' /proc/cmdline)\n\
         exec {} run --daemon {} --out \"$results/bench-results.json\" {}\n",
        vm::shell_quote(&bench.to_string_lossy()),
        vm::shell_quote(&daemon.to_string_lossy()),
        flags.join(" ")
    );
    // Through cargo rather than our own executable: a rebuild of the xtask
    // meanwhile would have replaced it.
    let timeout = std::env::var("APISERVER_PROXY_VM_TIMEOUT").unwrap_or_else(|_| "3600".into());
    let mut child = Command::new(env!("CARGO"))
        .args(["xtask", "vm-run", "--", "sh", "-c", &job])
        .env("APISERVER_PROXY_VM_TIMEOUT", timeout)
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .context("start the VM")?;
    let mut results = None;
    let stdout = child.stdout.take().context("VM output")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(path) = line.trim().strip_prefix("bench: results ") {
            results = Some(PathBuf::from(path.trim()));
        }
    }
    let status = child.wait()?;
    let results = results.context("the bench did not report where its results are")?;
    if !status.success() {
        if !results.exists() {
            bail!("the bench failed in the VM ({status}); see the output above");
        }
        eprintln!(
            "xtask: WARNING: the bench ended with {status}; writing the report from what it saved"
        );
    }
    Ok(results)
}

/// The sections of the results file, as `run` names them.
const SECTIONS: [&str; 9] = [
    "failover",
    "convergence",
    "dataplane",
    "scale",
    "footprint",
    "repair",
    "soak",
    "controlplane",
    "bigtable",
];

/// A run of some sections (`--only`) keeps the others' figures from the
/// results the docs already hold, each with the date of the run that
/// measured it, so that the report says so: one section can be measured
/// again without throwing the rest away or presenting old figures as new.
fn carry_over(json: &Path, earlier_dir: &Path) -> Result<()> {
    let earlier_path = earlier_dir.join("results.json");
    let Ok(earlier) = std::fs::read_to_string(&earlier_path) else {
        return Ok(());
    };
    let earlier: serde_json::Value = serde_json::from_str(&earlier)
        .with_context(|| format!("parse {}", earlier_path.display()))?;
    let earlier_date = std::fs::read_to_string(earlier_dir.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["date"].as_str().map(str::to_string))
        .unwrap_or_else(|| "an earlier run".into());
    // Sections the earlier results had carried over themselves keep their
    // own dates.
    let mut earlier_dates: std::collections::BTreeMap<String, String> = earlier["carried_over"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["section"].as_str()?.into(), c["from"].as_str()?.into())))
        .collect();
    // The first format: one date for a list of sections.
    if let (Some(sections), Some(from)) = (
        earlier["carried_over"]["sections"].as_array(),
        earlier["carried_over"]["from"].as_str(),
    ) {
        for s in sections.iter().filter_map(|s| s.as_str()) {
            earlier_dates.insert(s.into(), from.into());
        }
    }
    let mut now: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(json).with_context(|| format!("read {}", json.display()))?,
    )?;
    let mut kept = Vec::new();
    for section in SECTIONS {
        if now[section].is_null() && !earlier[section].is_null() {
            now[section] = earlier[section].clone();
            let from = earlier_dates
                .get(section)
                .cloned()
                .unwrap_or_else(|| earlier_date.clone());
            println!("xtask: section {section} keeps its figures from {from}");
            kept.push(serde_json::json!({ "section": section, "from": from }));
        }
    }
    now["carried_over"] = serde_json::Value::Array(kept);
    std::fs::write(json, serde_json::to_string_pretty(&now)?)?;
    Ok(())
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default()
}
