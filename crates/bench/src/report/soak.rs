//! The soak: false alarms under loss and stalls, and what liveness costs
//! the apiservers.

use std::fmt::Write as _;

use super::goal_line;
use crate::results::{Cost, Soak, SoakPhase};

/// Nodes and masters of the cost arithmetic: a large cluster.
const NODES: f64 = 5000.0;
const MASTERS: f64 = 3.0;

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// No false alarm in the soak; liveness costs no request.
pub(super) fn goals(w: &mut String, s: &Soak) {
    let p = &s.soak;
    goal_line(
        w,
        &format!(
            "no false alarm: 0 removals of a healthy master in {} (netem `{}` on every link, a {} ms stall every 10 s)",
            p.label, p.netem, p.stall_ms
        ),
        format!(
            "{} removals; {} of {} client requests failed",
            p.removals, p.failed, p.requests
        ),
        Some(p.removals == 0),
        format!("({} removals)", p.removals),
    );
    let rate = |label: &str| {
        s.cost
            .iter()
            .find(|c| c.label.starts_with(label))
            .and_then(|c| mean(&c.readyz_per_s))
    };
    if let (Some(on), Some(off)) = (rate("heartbeat on"), rate("heartbeat off")) {
        goal_line(
            w,
            "liveness costs no request: `/readyz` per second per master the same with the heartbeat as without",
            format!("{on:.3}/s with, {off:.3}/s without"),
            // One probe more or less in the window is noise, not cost.
            Some(on <= off * 1.1 + 0.05),
            format!("({:.3}/s more)", on - off),
        );
    }
}

fn phase_row(w: &mut String, p: &SoakPhase) {
    let network = if p.netem.is_empty() {
        "clean".to_string()
    } else {
        format!("`{}`", p.netem)
    };
    let stalls = if p.stalls == 0 {
        "none".to_string()
    } else {
        format!("{} × {} ms", p.stalls, p.stall_ms)
    };
    let _ = writeln!(
        w,
        "| {} | {network} | {stalls} | {:.0} s | **{}** | {} of {} |",
        p.label, p.seconds, p.removals, p.failed, p.requests
    );
}

fn cost_row(w: &mut String, c: &Cost) {
    let (Some(pk), Some(by), Some(rz)) = (
        mean(&c.packets_per_s),
        mean(&c.bytes_per_s),
        mean(&c.readyz_per_s),
    ) else {
        return;
    };
    let _ = writeln!(
        w,
        "| {} | {pk:.1} | {by:.0} | {rz:.3} | {:.0} packets/s, {:.1} MB/s | {:.0} |",
        c.label,
        pk * NODES,
        by * NODES / 1e6,
        rz * NODES * MASTERS,
    );
}

pub(super) fn section(w: &mut String, s: &Soak) {
    let _ = writeln!(w, "## False alarms and cost: the soak\n");
    let _ = writeln!(
        w,
        "Our daemon with its defaults ({}) in front of its three fake apiservers, a client through the VIP \
         (a new TLS connection every 300 ms, timeout 10 s), and a watcher reading the kernel every 10 ms: \
         each time a master leaves rotation while it is alive is a **false alarm**. The network is `netem` \
         on both ends of each master's link; a stall stops the fake apiserver's only thread, as SIGSTOP \
         stops a process (its kernel still acknowledges; nothing is answered). After the soak, loss is \
         raised and stalls lengthened until false alarms begin.\n",
        s.heartbeat
    );
    let _ = writeln!(
        w,
        "| phase | network | stalls | length | false alarms | failed client requests |\n| --- | --- | --- | --- | --- | --- |"
    );
    phase_row(w, &s.soak);
    for p in s.losses.iter().chain(&s.stalls) {
        phase_row(w, p);
    }
    let _ = writeln!(
        w,
        "\n### What liveness costs the apiservers\n\n\
         The daemon alone, no client: what the node sends each master over {:.0} s (the node end's transmit \
         counters: readiness probes, PINGs, TCP acknowledgements, and the discovery watch on the one master it \
         rides on), averaged over the three masters, and the `/readyz` requests each received. The last two \
         columns multiply by {NODES:.0} nodes (per master) and by {NODES:.0} nodes × {MASTERS:.0} masters \
         (requests, cluster-wide).\n",
        s.cost.first().map_or(0.0, |c| c.window_s)
    );
    let _ = writeln!(
        w,
        "| daemon | packets/s per master | bytes/s per master | `/readyz`/s per master | {NODES:.0} nodes, per master | `/readyz`/s, cluster-wide |\n| --- | --- | --- | --- | --- | --- |"
    );
    for c in &s.cost {
        cost_row(w, c);
    }
    let _ = writeln!(
        w,
        "\nThe heartbeat sends a PING frame only after 200 ms without reading anything, so an idle node sends \
         at most 5 a second to each master ({:.0} a second per master from {NODES:.0} nodes), each answered by \
         the apiserver's HTTP/2 layer without running a handler: no request, no authentication, no audit \
         event. See docs/health.md for the trade-off and the settings.\n",
        NODES * 5.0
    );
}
