//! The reconcile plan applied to a real kernel through the dataplane:
//! convergence, idempotency, tamper repair, and foreign services untouched.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use apiserver_proxy_manager::config::DataplaneChoice;
use apiserver_proxy_manager::kernel::{Kernel, Netlink, apply_plan};
use apiserver_proxy_manager::plan::{Condition, DesiredVs, Drains, plan};
use apiserver_proxy_testkit::kernel::{self, run, run_with_input};
use apiserver_proxy_types::Endpoint;

fn ep(s: &str) -> Endpoint {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn desired(vip: &str, backends: &[(&str, Condition)]) -> DesiredVs {
    DesiredVs {
        vip: ep(vip),
        scheduler: "rr".into(),
        backends: backends
            .iter()
            .map(|(b, c)| (ep(b), *c))
            .collect::<BTreeMap<_, _>>(),
        keep_unlisted: false,
    }
}

/// One pass: read ours, plan, apply. Returns how many operations it took.
fn pass(k: &mut Netlink, d: &[DesiredVs], drains: &mut Drains) -> usize {
    let vips: Vec<Endpoint> = d.iter().map(|v| v.vip).collect();
    let actual = k.read_ours(&vips).expect("read our services");
    let p = plan(d, &actual, drains, Instant::now(), Duration::from_secs(30));
    let applied = apply_plan(k, &p);
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    applied.ops
}

/// Two backends made ready in one pass (a second needs nothing), then one
/// dead, beside 10,000 foreign `what`; prints the passes' times.
fn beside_foreign_rules(dataplane: DataplaneChoice, what: &str) {
    let mut k = Netlink::connect(dataplane).expect("netlink");
    let mut drains = Drains::default();
    let d = [desired(
        "10.103.97.2:6443",
        &[
            ("192.168.1.10:6443", Condition::Ready),
            ("192.168.1.11:6443", Condition::Ready),
        ],
    )];
    let started = Instant::now();
    assert_eq!(pass(&mut k, &d, &mut drains), 3);
    let first = started.elapsed();
    let started = Instant::now();
    assert_eq!(pass(&mut k, &d, &mut drains), 0);
    eprintln!(
        "figure: {dataplane} reconcile pass with 10,000 foreign {what}: first {first:?}, \
         converged {:?} (not asserted)",
        started.elapsed()
    );
    let d = [desired(
        "10.103.97.2:6443",
        &[
            ("192.168.1.10:6443", Condition::Ready),
            ("192.168.1.11:6443", Condition::Dead),
        ],
    )];
    pass(&mut k, &d, &mut drains);
}

/// Held by each test of this file. IPVS keeps one service hash table for
/// every network namespace, and a dump (`ipvsadm -S`) that runs while
/// another namespace fills it (10,000 services) can list entries twice. The
/// daemon reads its services with one GET per VIP and is not affected; this
/// file's `ipvsadm` views are.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The plan both dataplanes' convergence tests apply: an IPv4 VIP with two
/// ready backends and one not yet probed, and an IPv6 VIP with one.
fn two_families() -> [DesiredVs; 2] {
    [
        desired(
            "10.103.97.2:6443",
            &[
                ("192.168.1.10:6443", Condition::Ready),
                ("192.168.1.11:6443", Condition::Ready),
                ("192.168.1.12:6443", Condition::Unprobed),
            ],
        ),
        desired("[fd00::2]:6443", &[("[fd00::10]:6443", Condition::Ready)]),
    ]
}

fn ipvsadm_save() -> String {
    run("ipvsadm", &["-S", "-n"])
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn converges_stays_converged_and_repairs_tampering() {
    let _one_at_a_time = serial();
    let _netns = kernel::enter();
    let mut k = Netlink::connect(DataplaneChoice::Ipvs).expect("netlink");
    let mut drains = Drains::default();
    let d = two_families();
    assert_eq!(
        pass(&mut k, &d, &mut drains),
        6,
        "2 services + 4 destinations"
    );
    let saved = ipvsadm_save();
    for want in [
        "-A -t 10.103.97.2:6443 -s rr",
        "-a -t 10.103.97.2:6443 -r 192.168.1.10:6443 -m -w 1",
        // Not yet probed while two others pass: in the table, no traffic.
        "-a -t 10.103.97.2:6443 -r 192.168.1.12:6443 -m -w 0",
        "-A -t [fd00::2]:6443 -s rr",
        "-a -t [fd00::2]:6443 -r [fd00::10]:6443 -m -w 1",
    ] {
        assert!(saved.contains(want), "missing {want:?} in:\n{saved}");
    }
    assert_eq!(
        pass(&mut k, &d, &mut drains),
        0,
        "a converged kernel needs nothing"
    );

    // Tampering: a destination deleted, a weight changed, the scheduler changed.
    run(
        "ipvsadm",
        &["-d", "-t", "10.103.97.2:6443", "-r", "192.168.1.11:6443"],
    );
    run(
        "ipvsadm",
        &[
            "-e",
            "-t",
            "10.103.97.2:6443",
            "-r",
            "192.168.1.10:6443",
            "-m",
            "-w",
            "7",
        ],
    );
    run("ipvsadm", &["-E", "-t", "10.103.97.2:6443", "-s", "wlc"]);
    assert_eq!(pass(&mut k, &d, &mut drains), 3);
    assert_eq!(ipvsadm_save(), saved, "repaired to exactly what it was");

    // The whole table cleared (ipvsadm -C, kube-proxy's cleanup): rebuilt.
    run("ipvsadm", &["-C"]);
    assert_eq!(pass(&mut k, &d, &mut drains), 6);
    assert_eq!(ipvsadm_save(), saved);
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn ten_thousand_foreign_services_are_never_touched() {
    let _one_at_a_time = serial();
    let _netns = kernel::enter();
    // What kube-proxy's IPVS mode leaves on a big cluster.
    let mut rules = String::new();
    for i in 0..10_000u32 {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        rules.push_str(&format!(
            "-A -t {ip}:443 -s rr\n-a -t {ip}:443 -r 172.16.0.1:443 -m -w 1\n"
        ));
    }
    run_with_input("ipvsadm", &["-R"], &rules);
    let foreign_before = ipvsadm_save();

    beside_foreign_rules(DataplaneChoice::Ipvs, "services");

    let after = ipvsadm_save();
    let ours = |l: &&str| l.contains("10.103.97.2:6443");
    let foreign_after: Vec<&str> = after.lines().filter(|l| !ours(l)).collect();
    let foreign_before: Vec<&str> = foreign_before.lines().collect();
    assert_eq!(foreign_after.len(), 20_000);
    assert!(foreign_after == foreign_before, "a foreign rule changed");
    let ours_after: Vec<&str> = after.lines().filter(ours).collect();
    assert_eq!(
        ours_after,
        [
            "-A -t 10.103.97.2:6443 -s rr",
            "-a -t 10.103.97.2:6443 -r 192.168.1.10:6443 -m -w 1"
        ],
        "the dead backend is gone; fail-open does not apply while one is ready"
    );
}

/// `nft list table inet bcs-apiserver-proxy`: an independent view of what
/// the kernel holds of ours, as the sorted lines of its listing (a chain or
/// a rule made again is listed last; what the table holds is what
/// matters). Each rule is one line naming its chain's VIP or backend.
fn nft_ours() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "bcs-apiserver-proxy"])
        .output()
        .expect("run nft");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.sort_unstable();
    lines.join("\n")
}

/// The same plan on the nftables dataplane (the host kernel, and the VM's):
/// converged in one pass, a second needs nothing, and every kind of
/// tampering (a backend's rule, the VIP's round robin, the VIP's jump, the
/// whole table) is repaired to exactly what it was.
#[test]
fn nftables_converges_stays_converged_and_repairs_tampering() {
    let _netns = kernel::enter_without_ipvs();
    let mut k = Netlink::connect(DataplaneChoice::Nftables).expect("netlink");
    let mut drains = Drains::default();
    let d = two_families();
    assert_eq!(pass(&mut k, &d, &mut drains), 6);
    let saved = nft_ours();
    for want in [
        "comment \"vip 10.103.97.2:6443 rr\"",
        "dnat ip to 192.168.1.10:6443",
        "dnat ip to 192.168.1.12:6443",
        // Weight 1, 1 and 0: two slots, none for the unprobed one.
        "numgen inc mod 2 vmap { 0 : jump be-10.103.97.2-6443-192.168.1.10-6443, 1 : jump be-10.103.97.2-6443-192.168.1.11-6443 }",
        "dnat ip6 to [fd00::10]:6443",
    ] {
        assert!(saved.contains(want), "missing {want:?} in:\n{saved}");
    }
    assert_eq!(
        pass(&mut k, &d, &mut drains),
        0,
        "a converged kernel needs nothing"
    );

    for tamper in [
        &[
            "flush",
            "chain",
            "inet",
            "bcs-apiserver-proxy",
            "be-10.103.97.2-6443-192.168.1.11-6443",
        ][..],
        &[
            "flush",
            "chain",
            "inet",
            "bcs-apiserver-proxy",
            "vip-10.103.97.2-6443",
        ],
        &["flush", "chain", "inet", "bcs-apiserver-proxy", "output"],
        &["flush", "chain", "inet", "bcs-apiserver-proxy", "count-in"],
        &["delete", "table", "inet", "bcs-apiserver-proxy"],
    ] {
        run("nft", tamper);
        assert_ne!(nft_ours(), saved, "{tamper:?} changed nothing");
        assert!(pass(&mut k, &d, &mut drains) > 0, "{tamper:?} was not seen");
        assert_eq!(nft_ours(), saved, "{tamper:?}: not repaired to what it was");
    }
}

/// 10,000 rules in a foreign table (kube-proxy's nftables mode keeps its
/// services so) and an iptables rule: our passes never change one, and
/// reading ours does not read them.
#[test]
fn nftables_ten_thousand_foreign_rules_are_never_touched() {
    let _netns = kernel::enter_without_ipvs();
    let mut rules = String::from(
        "table ip kube-proxy {\n chain services {\n  type nat hook output priority -100; policy accept;\n",
    );
    for i in 0..10_000u32 {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        rules.push_str(&format!(
            "  ip daddr {ip} tcp dport 443 dnat to 172.16.0.1:443\n"
        ));
    }
    rules.push_str(" }\n}\n");
    run_with_input("nft", &["-f", "-"], &rules);
    // And an iptables rule (iptables-nft keeps it in nf_tables too), as
    // kube-proxy's iptables mode or a CNI would.
    run(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "10.96.0.1",
            "-p",
            "tcp",
            "--dport",
            "443",
            "-j",
            "DNAT",
            "--to-destination",
            "172.16.0.1:443",
        ],
    );
    let foreign = || {
        run("nft", &["list", "table", "ip", "kube-proxy"])
            + &run("iptables-save", &["-t", "nat"])
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
    };
    let before = foreign();
    assert!(
        before.contains("--to-destination 172.16.0.1:443"),
        "{before}"
    );
    assert_eq!(before.matches("dnat to").count(), 10_000);

    beside_foreign_rules(DataplaneChoice::Nftables, "rules");
    assert!(foreign() == before, "a foreign rule changed");
    let ours = nft_ours();
    assert!(
        ours.contains("192.168.1.10:6443") && !ours.contains("192.168.1.11"),
        "{ours}"
    );
}
