//! Tamper repair: how long the node is without a piece of its set-up after
//! someone (an admin, kube-proxy's cleanup, a config tool) removes it, and
//! what the resync that backs the event-driven repair costs in CPU.
//!
//! Each trial waits for a sane node, tampers with one `ipvsadm`, `ip` or
//! `nft` command (the last on a second daemon, on the nftables dataplane),
//! and polls the kernel over netlink every millisecond until the
//! piece is back. The time counts from the moment the command returned
//! (the tamper is in effect) to the first poll that sees the repair.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apiserver_proxy_dataplane::Rtnl;

use crate::failover::{OUR_INTERFACE, OURS_NFT, Ours, VIP_OURS, addr};
use crate::lb;
use crate::results::{self, RepairKind};
use crate::util::{self, Env, sleep_s};

/// Longest a repair is waited for before the trial counts as not repaired.
const CAP: Duration = Duration::from_secs(10);

/// The resync intervals whose idle CPU is compared: the default and the
/// previous default.
const RESYNCS: [&str; 2] = ["250ms", "1s"];

struct Tamper {
    name: &'static str,
    /// How the daemon learns of it: a netlink notification or the resync.
    trigger: &'static str,
    args: fn(vip: SocketAddr, backend: SocketAddr) -> Vec<String>,
    program: &'static str,
}

const TAMPERS: [Tamper; 5] = [
    Tamper {
        name: "every IPVS service flushed (`ipvsadm -C`)",
        trigger: "resync",
        program: "ipvsadm",
        args: |_, _| vec!["-C".into()],
    },
    Tamper {
        name: "one destination deleted (`ipvsadm -d`)",
        trigger: "resync",
        program: "ipvsadm",
        args: |vip, backend| {
            ["-d", "-t", &vip.to_string(), "-r", &backend.to_string()]
                .map(String::from)
                .to_vec()
        },
    },
    Tamper {
        name: "VIP address deleted (`ip addr del`)",
        trigger: "address notification",
        program: "ip",
        args: |vip, _| {
            [
                "addr",
                "del",
                &format!("{}/32", vip.ip()),
                "dev",
                OUR_INTERFACE,
            ]
            .map(String::from)
            .to_vec()
        },
    },
    Tamper {
        name: "interface set down (`ip link set down`)",
        trigger: "link notification",
        program: "ip",
        args: |_, _| {
            ["link", "set", OUR_INTERFACE, "down"]
                .map(String::from)
                .to_vec()
        },
    },
    Tamper {
        name: "interface deleted (`ip link del`)",
        trigger: "link notification",
        program: "ip",
        args: |_, _| ["link", "del", OUR_INTERFACE].map(String::from).to_vec(),
    },
];

/// The same daemon's rules on the nftables dataplane (`OURS_NFT`): the
/// table, the VIP's round robin, one backend's rule. Each is repaired on
/// nf_tables' notification.
const NFT_TAMPERS: [Tamper; 3] = [
    Tamper {
        name: "nftables: our table deleted (`nft delete table`)",
        trigger: "nf_tables notification",
        program: "nft",
        args: |_, _| {
            ["delete", "table", "inet", "bcs-apiserver-proxy"]
                .map(String::from)
                .to_vec()
        },
    },
    Tamper {
        name: "nftables: the VIP's round robin flushed (`nft flush chain`)",
        trigger: "nf_tables notification",
        program: "nft",
        args: |vip, _| {
            [
                "flush",
                "chain",
                "inet",
                "bcs-apiserver-proxy",
                &format!("vip-{}-{}", vip.ip(), vip.port()),
            ]
            .map(String::from)
            .to_vec()
        },
    },
    Tamper {
        name: "nftables: one backend's rule flushed (`nft flush chain`)",
        trigger: "nf_tables notification",
        program: "nft",
        args: |vip, backend| {
            [
                "flush",
                "chain",
                "inet",
                "bcs-apiserver-proxy",
                &format!(
                    "be-{}-{}-{}-{}",
                    vip.ip(),
                    vip.port(),
                    backend.ip(),
                    backend.port()
                ),
            ]
            .map(String::from)
            .to_vec()
        },
    },
];

/// Everything the daemon keeps, read over netlink.
struct Probe {
    view: lb::KernelView,
    rtnl: Rtnl,
    vip: SocketAddr,
    interface: &'static str,
    backends: Vec<SocketAddr>,
}

impl Probe {
    fn sane(&mut self) -> bool {
        let mut have: Vec<SocketAddr> = self
            .view
            .dests(self.vip)
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(a, _)| a)
            .collect();
        have.sort();
        let up = matches!(self.rtnl.link(self.interface), Ok(Some(l)) if l.up);
        let placed = self
            .rtnl
            .addresses(self.interface)
            .is_ok_and(|a| a.iter().any(|a| a.addr == self.vip.ip()));
        have == self.backends && up && placed
    }
}

pub fn run(env: &Env, ours: &mut Ours) -> Result<results::Repair> {
    println!("bench: repair");
    let vip = addr(VIP_OURS);
    let mut backends = ours.addrs();
    backends.sort();
    let mut probe = Probe {
        view: lb::KernelView::open(),
        rtnl: Rtnl::connect()?,
        vip,
        interface: OUR_INTERFACE,
        backends: backends.clone(),
    };
    let trials = if env.quick { 5 } else { env.trials.max(20) };
    let mut kinds = Vec::new();
    tamper_all(&TAMPERS, &mut probe, trials, &mut kinds)?;
    // The same daemon on nftables, beside it.
    let nft = Ours::start_with(env, OURS_NFT)?;
    let mut nft_backends = nft.addrs();
    nft_backends.sort();
    let mut nft_probe = Probe {
        view: lb::KernelView::open(),
        rtnl: Rtnl::connect()?,
        vip: addr(OURS_NFT.vip),
        interface: OURS_NFT.interface,
        backends: nft_backends,
    };
    tamper_all(&NFT_TAMPERS, &mut nft_probe, trials, &mut kinds)?;
    drop(nft);

    // Idle CPU per resync interval, one after the other on the same node.
    let window = if env.quick { 10.0 } else { 30.0 };
    let mut idle_cpu = Vec::new();
    for resync in RESYNCS {
        ours.restart(env, &["--resync-interval", resync])?;
        settle(&mut probe)?;
        sleep_s(2.0);
        let (cpu, _) = util::watch_process(ours.daemon.pid(), window, |_| {});
        println!(
            "bench: repair: idle CPU at resync {resync}: {:.2} %",
            cpu.unwrap_or(f64::NAN)
        );
        idle_cpu.push((resync.to_string(), cpu));
    }
    ours.restart(env, &[])?;
    settle(&mut probe)?;
    Ok(results::Repair {
        trials,
        kinds,
        idle_window_s: window,
        idle_cpu_pct: idle_cpu,
    })
}

/// `trials` of each tamper on the node `probe` reads, timed from the
/// tamper to the first poll that sees the node whole.
fn tamper_all(
    tampers: &[Tamper],
    probe: &mut Probe,
    trials: usize,
    kinds: &mut Vec<RepairKind>,
) -> Result<()> {
    let vip = probe.vip;
    let backends = probe.backends.clone();
    for tamper in tampers {
        let mut times = Vec::new();
        let mut not_repaired = 0;
        for i in 0..trials {
            settle(probe)?;
            // A different backend each time, so that the deleted one is not
            // always the one the daemon's own watch rides on.
            let backend = backends[i % backends.len()];
            let args = (tamper.args)(vip, backend);
            let out = Command::new(tamper.program)
                .args(&args)
                .output()
                .with_context(|| format!("run {}", tamper.program))?;
            if !out.status.success() {
                bail!(
                    "{} {}: {}",
                    tamper.program,
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let t0 = Instant::now();
            loop {
                if probe.sane() {
                    times.push(t0.elapsed().as_secs_f64());
                    break;
                }
                if t0.elapsed() > CAP {
                    not_repaired += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        println!(
            "bench: repair: {}: p50 {:.0} ms, p99 {:.0} ms, {not_repaired} not repaired in {} s",
            tamper.name,
            util::percentile(&times, 50.0).unwrap_or(f64::NAN) * 1000.0,
            util::percentile(&times, 99.0).unwrap_or(f64::NAN) * 1000.0,
            CAP.as_secs()
        );
        kinds.push(RepairKind {
            tamper: tamper.name.to_string(),
            trigger: tamper.trigger.to_string(),
            times_s: times,
            not_repaired,
        });
    }

    Ok(())
}

/// Waits until the node is whole again (the previous trial's repair may
/// still be finishing, such as a re-added destination's weight).
fn settle(probe: &mut Probe) -> Result<()> {
    let t0 = Instant::now();
    while !probe.sane() {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!(
                "the node did not come back whole within 60 s ({} with {:?} on {})",
                probe.vip,
                probe.backends,
                probe.interface
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let a repair's trailing writes (sysctls, metrics) finish.
    sleep_s(0.2);
    Ok(())
}
