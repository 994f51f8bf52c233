//! The dataplane section: requests/s and latency of every path, medians
//! over interleaved rounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{f2, ms};
use crate::util::percentile;

/// One (path, workload) cell of the dataplane tables: medians over the rounds, plus the
/// lowest and highest requests/s, so a reader can tell a real gap from round-to-round noise.
pub(super) struct Cell {
    pub(super) rps: f64,
    pub(super) rps_min: f64,
    pub(super) rps_max: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) errors: u64,
}

impl Cell {
    /// Half the min..max range as a share of the median: "± x %" between rounds.
    pub(super) fn spread_pct(&self) -> f64 {
        (self.rps_max - self.rps_min) / 2.0 / self.rps * 100.0
    }
}

pub(super) type Medians = BTreeMap<(String, String), Cell>;

pub(super) fn medians(d: &crate::results::Dataplane) -> Medians {
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

pub(super) fn section(w: &mut String, d: &crate::results::Dataplane, m: &Medians) {
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
    let paths = [
        "direct",
        "bare-ipvs",
        "ours",
        "bare-nft",
        "ours-nft",
        "haproxy",
        "nginx",
    ];
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
