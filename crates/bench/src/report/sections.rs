//! The shorter sections: convergence, scale, footprint and tamper repair.

use std::fmt::Write as _;

use super::{Meta, goal_line, mib, ms, opt_pct, secs_or_cap};
use crate::results::{BigTable, ControlPlane, Convergence, Footprint, Repair, Scale};
use crate::util::percentile;

pub(super) fn convergence(w: &mut String, c: &Convergence) {
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

pub(super) fn scale(w: &mut String, s: &Scale) {
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
    if s.nft_foreign_rules > 0 {
        let _ = writeln!(
            w,
            "| nftables dataplane: reconcile pass, no foreign rules (mean) | {} |",
            s.nft_reconcile_mean_ms_before.map_or("n/a".into(), ms)
        );
        let _ = writeln!(
            w,
            "| nftables dataplane: reconcile pass with {} rules in a foreign table (mean; every pass ≤ bucket) | {} (≤ {}) |",
            s.nft_foreign_rules,
            s.nft_reconcile_mean_ms_with_foreign
                .map_or("n/a".into(), ms),
            s.nft_reconcile_max_bucket_ms_with_foreign
                .map_or("?".into(), ms)
        );
        let _ = writeln!(
            w,
            "| loading those {} foreign rules (`nft -f`) | {:.1} s |",
            s.nft_foreign_rules, s.nft_create_foreign_s
        );
    }
    let _ = writeln!(
        w,
        "| one virtual server with {} backends (the most the daemon accepts from the cluster): daemon start to all in the kernel | {} |",
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
         On the nftables dataplane a pass dumps the rules of our table only (the kernel filters by table), \
         so rules in other tables should not change it either; that daemon runs beside the IPVS one. \
         The simulated nodes skip the procfs socket inspection (it costs the prober, not the apiserver). \
         See [health.md](health.md) for what the probe rate means next to kubelet heartbeats.\n"
    );
}

pub(super) fn footprint(w: &mut String, fp: &Footprint, meta: &Meta) {
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
/// The repair goals: on the resync, p99 ≤ 500 ms; on a notification,
/// p99 ≤ 200 ms; every trial repaired.
pub(super) fn repair_goals(w: &mut String, r: &Repair) {
    for (trigger, limit_ms) in [("resync", 500.0), ("notification", 200.0)] {
        let kinds: Vec<_> = r
            .kinds
            .iter()
            .filter(|k| k.trigger.contains(trigger))
            .collect();
        if kinds.is_empty() {
            continue;
        }
        let times: Vec<f64> = kinds.iter().flat_map(|k| k.times_s.clone()).collect();
        let missing: usize = kinds.iter().map(|k| k.not_repaired).sum();
        let p99 = percentile(&times, 99.0).map(|p| p * 1000.0);
        goal_line(
            w,
            &format!("tamper repaired on the {trigger}: p99 ≤ {limit_ms:.0} ms"),
            format!(
                "p99 {} over {} tampers, {missing} not repaired",
                p99.map_or("n/a".into(), ms),
                times.len() + missing
            ),
            p99.map(|p| p <= limit_ms && missing == 0),
            p99.map_or(String::new(), |p| format!("by {:.0} ms", p - limit_ms)),
        );
    }
}

pub(super) fn repair(w: &mut String, r: &Repair) {
    let _ = writeln!(w, "## Tamper repair\n");
    let _ = writeln!(
        w,
        "Our daemon runs with its defaults. Each trial waits for a whole node, removes one piece with the \
         command shown, and reads the kernel over netlink every millisecond until the piece is back; the time \
         counts from the command's return (a repair on a notification may begin before the command has exited: \
         its figure says how long after the command the node was whole). Host pieces are repaired on \
         rtnetlink's notification, IPVS on the resync (the kernel sends no IPVS notification). {} trials per tamper, cap 10 s.\n",
        r.trials
    );
    let _ = writeln!(
        w,
        "| tamper | the daemon learns of it by | repaired | p50 | p99 | worst |\n| --- | --- | --- | --- | --- | --- |"
    );
    for k in &r.kinds {
        let worst = largest(k.times_s.iter().copied());
        let fmt = |v: Option<f64>| v.map_or("n/a".into(), |x| ms(x * 1000.0));
        let _ = writeln!(
            w,
            "| {} | {} | {} of {} | {} | {} | {} |",
            k.tamper,
            k.trigger,
            k.times_s.len(),
            k.times_s.len() + k.not_repaired,
            fmt(percentile(&k.times_s, 50.0)),
            fmt(percentile(&k.times_s, 99.0)),
            fmt(worst)
        );
    }
    let _ = writeln!(
        w,
        "\nWhat the resync costs: the daemon idle with three healthy backends, {:.0} s per setting, one after \
         the other on the same node.\n",
        r.idle_window_s
    );
    let _ = writeln!(w, "| resync interval | idle CPU |\n| --- | --- |");
    for (resync, cpu) in &r.idle_cpu_pct {
        let _ = writeln!(w, "| {resync} | {} of one emulated core |", opt_pct(*cpu));
    }
    let _ = writeln!(w);
}

pub(super) fn bigtable(w: &mut String, b: &BigTable) {
    let _ = writeln!(w, "## Failover under a big connection table\n");
    let _ = writeln!(
        w,
        "A node whose kube-proxy runs in IPVS mode holds many connections of its own services, and the \
         daemon reads the IPVS connection table when an apiserver dies (to cut the node's sockets to it). \
         The same crash of one master, with the table empty and with {} foreign ESTABLISHED entries (made by a \
         SYN and an ACK per flow through a foreign virtual service): the time until the kernel has the master \
         out of rotation (weight 0 or gone: no new connection goes to it; netlink, every 2 ms); the time from restarting it until it is in rotation again \
         (the loop first finishes the pass that walks the connection table after the delete); and the \
         daemon's resident memory, sampled every 5 ms from the crash until the master is back.\n",
        b.foreign_entries
    );
    let _ = writeln!(
        w,
        "| table | trials | master out of rotation: p50 / worst | back in rotation after its restart: worst | daemon RSS before | peak |\n| --- | --- | --- | --- | --- | --- |"
    );
    for (name, trials) in [("empty", &b.empty), ("full", &b.full)] {
        let times: Vec<f64> = trials.iter().filter_map(|t| t.removed_s).collect();
        let worst = largest(times.iter().copied());
        let back = largest(trials.iter().filter_map(|t| t.back_s));
        let before = trials.iter().map(|t| t.rss_before_kib).max().unwrap_or(0);
        let peak = trials.iter().map(|t| t.rss_peak_kib).max().unwrap_or(0);
        let table = if name == "full" {
            format!("{} foreign entries", b.foreign_entries)
        } else {
            "empty".to_string()
        };
        let _ = writeln!(
            w,
            "| {table} | {} | {} / {} | {} | {} | {} |",
            trials.len(),
            percentile(&times, 50.0).map_or("n/a".into(), |x| ms(x * 1000.0)),
            worst.map_or("n/a".into(), |x| ms(x * 1000.0)),
            back.map_or("n/a".into(), |x| format!("{x:.1} s")),
            mib(before),
            mib(peak)
        );
    }
    let _ = writeln!(w);
}

/// The largest of `values`, if any.
fn largest(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.reduce(f64::max)
}

/// The outside VIP's goals: after a holder dies, another node answers
/// within 2 s p99; under a partition, never two holders.
pub(super) fn control_plane_goals(w: &mut String, c: &ControlPlane) {
    for (what, times, failed) in [
        ("killed", &c.ours_killed_s, c.ours_killed_failed),
        (
            "powered off",
            &c.ours_powered_off_s,
            c.ours_powered_off_failed,
        ),
    ] {
        let p99 = percentile(times, 99.0).map(|p| p * 1000.0);
        goal_line(
            w,
            &format!("outside VIP: holder {what}, another node answers p99 ≤ 2 s"),
            format!(
                "p99 {} over {} trials, {failed} without a takeover",
                p99.map_or("n/a".into(), ms),
                times.len() + failed
            ),
            p99.map(|p| p <= 2000.0 && failed == 0),
            p99.map_or(String::new(), |p| format!("by {:.0} ms", p - 2000.0)),
        );
    }
    goal_line(
        w,
        "outside VIP: holder partitioned, 0 moments with two holders",
        format!(
            "{} samples with two holders over {} partitions",
            c.ours_partition_overlaps, c.partition_trials
        ),
        (c.partition_trials > 0).then_some(c.ours_partition_overlaps == 0),
        format!("{} samples", c.ours_partition_overlaps),
    );
}

pub(super) fn control_plane(w: &mut String, c: &ControlPlane) {
    let _ = writeln!(w, "## The outside control-plane VIP beside keepalived\n");
    let _ = writeln!(
        w,
        "Three control-plane nodes (network namespaces with their apiservers) on one bridge with the client; \
         our daemons with their default timings (lease 1.5 s, renew deadline 0.8 s, retry 0.2 s), then \
         keepalived (Debian's package, VRRP with one advertisement a second, all nodes backups of equal \
         priority without preemption). A trial kills the holder (SIGKILL of its process group, so that \
         keepalived's VRRP process cannot stop gracefully; for *powered off*, its LAN link goes down too) and asks the VIP every 10 ms which node answers (100 ms connect \
         timeout), until another node does. A partition drops every IP packet of the holder's namespace \
         (its link and ARP stay up) for {:.0} s while both nodes' addresses are sampled continuously. \
         {} trials per row.\n",
        c.partition_s, c.trials
    );
    let _ = writeln!(
        w,
        "| holder | tool | another node answers p50 | p99 | worst | no takeover |\n| --- | --- | --- | --- | --- | --- |"
    );
    let row = |w: &mut String, what: &str, tool: &str, t: &[f64], failed: usize| {
        let fmt = |v: Option<f64>| v.map_or("n/a".into(), |x| ms(x * 1000.0));
        let _ = writeln!(
            w,
            "| {what} | {tool} | {} | {} | {} | {failed} |",
            fmt(percentile(t, 50.0)),
            fmt(percentile(t, 99.0)),
            fmt(largest(t.iter().copied()))
        );
    };
    row(w, "killed", "ours", &c.ours_killed_s, c.ours_killed_failed);
    row(
        w,
        "powered off",
        "ours",
        &c.ours_powered_off_s,
        c.ours_powered_off_failed,
    );
    if c.keepalived_partition_overlaps.is_some() {
        row(
            w,
            "killed",
            "keepalived",
            &c.keepalived_killed_s,
            c.keepalived_killed_failed,
        );
    }
    let _ = writeln!(
        w,
        "| killed | kube-vip, documented defaults (lease 15 s, renew deadline 10 s, retry 2 s; not run) | about 15 s | | | |\n"
    );
    let _ = writeln!(
        w,
        "Partitioned holder: ours {} samples with two holders over {} partitions; keepalived {}.\n",
        c.ours_partition_overlaps,
        c.partition_trials,
        c.keepalived_partition_overlaps.map_or(
            "not run (not installed)".to_string(),
            |o| format!("{o} samples with two holders (VRRP has no quorum: the cut-off master keeps the VIP while a backup takes it)")
        )
    );
}
