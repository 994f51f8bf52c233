//! The JSON the VM run writes and the report reads. Every figure in
//! docs/benchmarks.md comes from here.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::RunArgs;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub trials: usize,
    pub quick: bool,
    pub sections: Vec<String>,
    /// `uname -r` inside the VM.
    pub vm_kernel: String,
    pub vm_cpus: usize,
    pub vm_cpu_model: String,
    pub wall_seconds: f64,
    /// Wall time of each section.
    pub section_wall_s: Vec<(String, f64)>,
    /// Sections that failed, and why.
    pub errors: Vec<(String, String)>,
    pub failover: Option<Failover>,
    pub convergence: Option<Convergence>,
    pub dataplane: Option<Dataplane>,
    pub scale: Option<Scale>,
    pub footprint: Option<Footprint>,
    #[serde(default)]
    pub repair: Option<Repair>,
    #[serde(default)]
    pub bigtable: Option<BigTable>,
    #[serde(default)]
    pub soak: Option<Soak>,
    /// The section is called `controlplane` on the command line.
    #[serde(default, rename = "controlplane")]
    pub control_plane: Option<ControlPlane>,
    /// Sections this run did not measure, kept from an earlier run's
    /// results (`cargo xtask bench --only`).
    #[serde(default, deserialize_with = "carried_over")]
    pub carried_over: Vec<CarriedOver>,
}

/// Both forms the results file has had: a list of sections with their
/// dates, and the first one (one date for a list of sections).
fn carried_over<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CarriedOver>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<CarriedOver>),
        First { sections: Vec<String>, from: String },
    }
    Ok(match Option::<Form>::deserialize(d)? {
        Some(Form::List(l)) => l,
        Some(Form::First { sections, from }) => sections
            .into_iter()
            .map(|section| CarriedOver {
                section,
                from: from.clone(),
            })
            .collect(),
        None => Vec::new(),
    })
}

/// A section this run did not measure, and the date of the run that did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CarriedOver {
    pub section: String,
    pub from: String,
}

impl Results {
    pub fn new(args: &RunArgs) -> Results {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Results {
            trials: args.trials,
            quick: args.quick,
            sections: args.only.clone(),
            vm_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            vm_cpus: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            vm_cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            ..Results::default()
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
    }
}

/// One load balancer set-up in the failover comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupInfo {
    pub id: String,
    pub label: String,
    /// What it was configured with, in one line.
    pub config: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Failover {
    pub setups: Vec<SetupInfo>,
    pub client_period_ms: u64,
    pub client_timeout_s: f64,
    pub slow_threshold_s: f64,
    pub settle_s: f64,
    pub cap_s: f64,
    pub idle_cap_s: f64,
    /// Scenario budget in seconds (peers stop starting trials after it).
    pub budgets: Vec<(String, f64)>,
    pub trials: Vec<Trial>,
    /// The request log around one trial per set-up and scenario (the one
    /// with the median failover time): what the timeline plots show.
    pub timelines: Vec<Timeline>,
    pub scenario_wall_s: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub setup: String,
    pub scenario: String,
    pub n: usize,
    pub victim: usize,
    /// Seconds from the failure to the start of the last client request that
    /// failed, was slow, or was answered by the victim. `None`: still
    /// happening at the cap.
    pub failover_s: Option<f64>,
    pub failed: usize,
    pub slow: usize,
    /// The slow threshold of this trial (seconds).
    #[serde(default)]
    pub slow_s: f64,
    pub to_victim: usize,
    pub requests: usize,
    /// Seconds the idle connection on the victim stayed open after the
    /// failure. `None`: open at the idle cap; absent for the drain.
    pub idle_stuck_s: Option<f64>,
    pub idle_measured: bool,
    /// Ours only: from the failure to the victim leaving rotation in the
    /// kernel (deleted or weight 0), read over netlink every 10 ms.
    pub kernel_s: Option<f64>,
    /// How long injecting the failure took (the black hole runs nft).
    pub inject_s: f64,
    /// Whether all three masters were in rotation before the failure.
    pub ready_before: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeline {
    pub setup: String,
    pub scenario: String,
    pub trial: usize,
    pub victim: usize,
    pub failover_s: Option<f64>,
    pub kernel_s: Option<f64>,
    pub idle_stuck_s: Option<f64>,
    /// (start relative to the failure, latency, backend index or -1 for a failure)
    pub requests: Vec<(f64, f64, i32)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Convergence {
    /// Seconds from publishing a slice with a new endpoint to the kernel rule.
    pub add_s: Vec<f64>,
    /// Seconds from publishing a slice without it to it leaving rotation.
    pub remove_s: Vec<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dataplane {
    pub duration_s: f64,
    pub connections: u32,
    pub rounds: usize,
    /// One per path, workload and round.
    pub runs: Vec<WrkRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrkRun {
    pub path: String,
    pub workload: String,
    pub round: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Scale {
    pub foreign_services: usize,
    pub create_foreign_s: f64,
    /// Mean reconcile pass of the running daemon, from its histogram.
    pub reconcile_mean_ms_before: Option<f64>,
    pub reconcile_mean_ms_with_foreign: Option<f64>,
    /// Smallest histogram bucket holding every pass of the window.
    pub reconcile_max_bucket_ms_with_foreign: Option<f64>,
    pub reconcile_passes_with_foreign: u64,
    /// What reading the whole table would cost (a full service dump), for comparison.
    pub full_dump_ms: Option<f64>,
    /// The same pass on the nftables dataplane, with this many rules in a
    /// foreign table (0: not measured).
    #[serde(default)]
    pub nft_foreign_rules: usize,
    #[serde(default)]
    pub nft_create_foreign_s: f64,
    #[serde(default)]
    pub nft_reconcile_mean_ms_before: Option<f64>,
    #[serde(default)]
    pub nft_reconcile_mean_ms_with_foreign: Option<f64>,
    #[serde(default)]
    pub nft_reconcile_max_bucket_ms_with_foreign: Option<f64>,
    #[serde(default)]
    pub nft_reconcile_passes_with_foreign: u64,
    pub backends: usize,
    /// Daemon start to every backend in the kernel.
    pub backends_converge_s: Option<f64>,
    pub reconcile_mean_ms_backends: Option<f64>,
    pub rss_kib_backends: Option<u64>,
    pub cpu_pct_backends: Option<f64>,
    pub nodes: usize,
    pub probe_interval_s: f64,
    pub probe_rps_computed: f64,
    pub probe_rps_measured: Option<f64>,
    pub probe_window_s: f64,
    pub probers_ready: usize,
    /// Why the simulated nodes could not be measured, if so.
    #[serde(default)]
    pub probe_error: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Footprint {
    pub idle_window_s: f64,
    pub idle_rss_kib: Option<u64>,
    pub idle_cpu_pct: Option<f64>,
    pub churn_window_s: f64,
    pub churn_events: usize,
    pub churn_rss_kib: Option<u64>,
    pub churn_cpu_pct: Option<f64>,
    /// RSS of the peers while they ran the failover comparison (all processes).
    pub peers_rss_kib: Vec<(String, u64)>,
}

/// The outside control-plane VIP beside keepalived.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ControlPlane {
    pub trials: usize,
    /// Seconds from the holder's kill (SIGKILL) until another node answered
    /// on the VIP, one per trial; and the trials where none did.
    pub ours_killed_s: Vec<f64>,
    pub ours_killed_failed: usize,
    /// The same with the holder powered off (its LAN link down as well).
    pub ours_powered_off_s: Vec<f64>,
    pub ours_powered_off_failed: usize,
    /// Partition trials, how long each lasted, and the samples in which two
    /// nodes held the VIP.
    pub partition_trials: usize,
    pub partition_s: f64,
    pub ours_partition_overlaps: usize,
    /// keepalived (None: not installed).
    pub keepalived_killed_s: Vec<f64>,
    pub keepalived_killed_failed: usize,
    pub keepalived_partition_overlaps: Option<usize>,
}

/// Tamper repair times and the resync's CPU cost.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Repair {
    pub trials: usize,
    pub kinds: Vec<RepairKind>,
    pub idle_window_s: f64,
    /// Idle CPU (% of one core) per resync interval.
    pub idle_cpu_pct: Vec<(String, Option<f64>)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RepairKind {
    pub tamper: String,
    /// What tells the daemon: a netlink notification or the resync.
    pub trigger: String,
    /// Seconds from the tamper to the repair, one per repaired trial.
    pub times_s: Vec<f64>,
    /// Trials not repaired within the cap.
    pub not_repaired: usize,
}

/// The same crash with an empty IPVS connection table and a full one.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BigTable {
    /// Entries in the table during the `full` trials.
    pub foreign_entries: u64,
    pub empty: Vec<BigTableTrial>,
    pub full: Vec<BigTableTrial>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BigTableTrial {
    /// From the crash until the kernel had the master out of rotation
    /// (weight 0 or gone); `None` when it did not within 30 s.
    pub removed_s: Option<f64>,
    /// From restarting the master until it was in rotation again: it waits
    /// for the loop, which walks the connection table after the delete.
    #[serde(default)]
    pub back_s: Option<f64>,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
}

/// False alarms under loss and stalls, and what liveness costs a master.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Soak {
    /// The heartbeat settings the daemon ran with.
    pub heartbeat: String,
    pub cost: Vec<Cost>,
    /// The long soak: the loss and delay, with short stalls.
    pub soak: SoakPhase,
    /// Higher losses, each for a while.
    pub losses: Vec<SoakPhase>,
    /// Longer stalls, each master in turn.
    pub stalls: Vec<SoakPhase>,
}

/// Traffic from the node to each master while nothing else goes on.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Cost {
    pub label: String,
    pub window_s: f64,
    /// One figure per master.
    pub packets_per_s: Vec<f64>,
    pub bytes_per_s: Vec<f64>,
    pub readyz_per_s: Vec<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SoakPhase {
    pub label: String,
    /// The `netem` arguments on every master's link ("" for none).
    pub netem: String,
    /// Length of each stall (0: none) and how many there were.
    pub stall_ms: u64,
    pub stalls: usize,
    pub seconds: f64,
    /// Times a healthy master left rotation: false alarms.
    pub removals: usize,
    /// Client requests through the VIP, and those that failed.
    pub requests: usize,
    pub failed: usize,
}
