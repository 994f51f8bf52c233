//! `apiserver-proxy-bench`: the measuring half of `cargo xtask bench`.
//!
//! - `run` (inside the VM, as root): failover side by side with haproxy,
//!   nginx and bare IPVS, the dataplane, convergence, scale, footprint and
//!   tamper repair.
//!   Writes every figure to one JSON file.
//! - `report` (on the host): turns that JSON into `docs/benchmarks.md` and
//!   the PNG timelines in `docs/bench/`. No figure is typed by hand: the
//!   document shows what `run` measured.
//!
//! Absolute times under software emulation mean little; every comparison
//! is made within one run, on one VM, at the same moment.

mod bigtable;
mod client;
mod control_plane;
mod dataplane;
mod failover;
mod lb;
mod plot;
mod repair;
mod report;
mod results;
mod scale;
mod soak;
mod util;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "apiserver-proxy-bench",
    about = "Benchmarks behind docs/benchmarks.md"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Measure (inside the VM, as root: needs IPVS and network namespaces).
    Run(RunArgs),
    /// Write docs/benchmarks.md and the plots from a results file.
    Report(report::ReportArgs),
}

/// What `run` measures and how often.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The daemon binary (a release build).
    #[arg(long)]
    daemon: PathBuf,
    /// Where the JSON results go.
    #[arg(long)]
    out: PathBuf,
    /// Comma-separated sections: failover, convergence, dataplane, scale, footprint, repair,
    /// soak, controlplane, bigtable.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "failover,convergence,dataplane,scale,footprint,repair,soak,controlplane,bigtable"
    )]
    only: Vec<String>,
    /// Failover trials per scenario for our daemon (peers: as many as fit the budget).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Development mode: few trials, short budgets and runs.
    #[arg(long)]
    quick: bool,
}

impl RunArgs {
    fn wants(&self, section: &str) -> bool {
        self.only.iter().any(|s| s.trim() == section)
    }
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.cmd {
        Cmd::Run(args) => run(args),
        Cmd::Report(args) => report::write(&args),
    };
    if let Err(e) = result {
        eprintln!("apiserver-proxy-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: RunArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let _netns = apiserver_proxy_testkit::kernel::enter();
    // Said first, so that a run cut short still leaves its figures found.
    println!("bench: results {}", args.out.display());
    let mut out = results::Results::new(&args);
    let env = util::Env::new(&args)?;
    let mut ours = failover::Ours::start(&env)?;
    let names = [
        "failover",
        "convergence",
        "footprint",
        "repair",
        "soak",
        "dataplane",
        "scale",
        "controlplane",
        "bigtable",
    ];
    for name in names {
        if !args.wants(name) {
            continue;
        }
        let t = std::time::Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
            match name {
                "failover" => out.failover = Some(failover::run(&env, &mut ours)?),
                "convergence" => out.convergence = Some(failover::convergence(&env, &mut ours)?),
                "footprint" => out.footprint = Some(failover::footprint(&env, &mut ours)?),
                "repair" => out.repair = Some(repair::run(&env, &mut ours)?),
                "soak" => out.soak = Some(soak::run(&env, &mut ours)?),
                "dataplane" => out.dataplane = Some(dataplane::run(&env, &mut ours)?),
                "controlplane" => out.control_plane = Some(control_plane::run(&env)?),
                // Last: its 200,000 entries stay in the table for 15 minutes.
                "bigtable" => out.bigtable = Some(bigtable::run(&env, &mut ours)?),
                _ => out.scale = Some(scale::run(&env, &mut ours)?),
            }
            Ok(())
        }));
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some("panicked (see the output)".to_string()),
        };
        if let Some(e) = error {
            println!("bench: section {name} FAILED: {e}");
            out.errors.push((name.to_string(), e));
        }
        out.section_wall_s
            .push((name.to_string(), t.elapsed().as_secs_f64()));
        out.wall_seconds = started.elapsed().as_secs_f64();
        out.save(&args.out)?;
        keep_daemon_logs(&env, &args.out);
    }
    println!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Copies our daemons' logs (JSON, one health event per line with its reason)
/// beside the results, which the VM shares with the host: the temporary
/// folder they are written to dies with the VM, and an outlier is explained
/// only by them.
fn keep_daemon_logs(env: &util::Env, out: &std::path::Path) {
    for name in ["ours", "scale"] {
        let from = env.path(name).join("daemon.log");
        if from.is_file() {
            let to = out.with_file_name(format!("daemon-{name}.log"));
            if let Err(e) = std::fs::copy(&from, &to) {
                println!("bench: cannot keep {}: {e}", from.display());
            }
        }
    }
}
