//! The failover section: the side-by-side tables and the timeline plots.

use std::fmt::Write as _;

use anyhow::Result;

use super::{rows, secs_or_cap};
use crate::results::Failover;

pub(super) fn section(w: &mut String, f: &Failover, dir: &std::path::Path) -> Result<()> {
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
            let kernel = if id.starts_with("ours") {
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
    crate::plot::register_font()?;
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
        crate::plot::timeline(&dir.join(&file), &s.label, f, &lines)?;
        let _ = writeln!(w, "![{}](bench/{file})\n", s.label);
    }
    Ok(())
}
