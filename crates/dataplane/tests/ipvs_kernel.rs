//! Real-kernel tests of the IPVS client: every operation, checked against an
//! independent view of the kernel (`ipvsadm`, run as a subprocess from the
//! test thread, so it sees the test's own network namespace).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use apiserver_proxy_dataplane::ipvs::SVC_F_PERSISTENT;
use apiserver_proxy_dataplane::{
    DestSpec, Error, Forward, Ipvs, Protocol, ServiceKey, ServiceSpec,
};
use apiserver_proxy_testkit::kernel;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn ipvsadm(args: &[&str]) -> String {
    kernel::run("ipvsadm", args)
}

/// The table in `ipvsadm -S -n` (save) form, one rule a line, sorted.
/// `ipvsadm -S` of this namespace, sorted: the independent view. The
/// kernel's service dump resumes each chunk at an index into its one table
/// of every namespace's services, so services that other tests add or
/// delete in their own namespaces meanwhile shift it and a big dump can
/// skip or repeat entries (seen: 10,998 of 11,000 lines). Two dumps that
/// agree are the table.
fn saved() -> Vec<String> {
    let dump = || {
        let mut lines: Vec<String> = ipvsadm(&["-S", "-n"])
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    };
    let mut last = dump();
    for _ in 0..20 {
        let next = dump();
        if next == last {
            return next;
        }
        last = next;
    }
    panic!("ipvsadm -S never gave the same table twice in 20 dumps");
}

fn restore(rules: &str) {
    kernel::run_with_input("ipvsadm", &["-R"], rules);
}

/// `ipvsadm -Ln --stats --exact` row for `what` (a service or real server
/// address as ipvsadm prints it): conns, inpkts, outpkts, inbytes, outbytes.
fn stats_row(what: &str) -> [u64; 5] {
    let out = ipvsadm(&["-Ln", "--stats", "--exact"]);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == what))
        .unwrap_or_else(|| panic!("{what} not in:\n{out}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let n = nums.len();
    assert!(n >= 5, "{line}");
    [
        nums[n - 5],
        nums[n - 4],
        nums[n - 3],
        nums[n - 2],
        nums[n - 1],
    ]
}

fn connect() -> Ipvs {
    Ipvs::connect().expect("connect to IPVS")
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn info_agrees_with_ipvsadm() {
    let _netns = kernel::enter();
    let info = connect().info().expect("info");
    let (a, b, c) = info.version;
    let expected = format!(
        "IP Virtual Server version {a}.{b}.{c} (size={})",
        info.conn_table_size
    );
    let out = ipvsadm(&["-Ln"]);
    assert_eq!(out.lines().next(), Some(expected.as_str()), "{out}");
}

fn service_lifecycle(vip: &str, protocol: Protocol, flag: &str) {
    let ipvs = connect();
    let key = ServiceKey::new(protocol, sa(vip));
    let spec = ServiceSpec::new(key, "rr");
    assert_eq!(ipvs.service(&key).expect("get"), None);

    ipvs.new_service(&spec).expect("create");
    assert_eq!(saved(), vec![format!("-A {flag} {vip} -s rr")]);
    let got = ipvs.service(&key).expect("get").expect("present");
    assert_eq!(got.spec, spec);
    let all = ipvs.services().expect("dump");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].spec, spec);

    // Twice: a typed error, and nothing changed.
    let err = ipvs.new_service(&spec).expect_err("exists");
    assert!(matches!(err, Error::Exists { .. }), "{err:?}");
    assert_eq!(saved().len(), 1);

    let mut changed = spec.clone();
    changed.scheduler = "wlc".into();
    changed.flags = SVC_F_PERSISTENT;
    changed.timeout = 600;
    ipvs.set_service(&changed).expect("set");
    let line = saved().join("\n");
    assert!(
        line.starts_with(&format!("-A {flag} {vip} -s wlc -p 600")),
        "{line}"
    );
    assert_eq!(
        ipvs.service(&key).expect("get").expect("present").spec,
        changed
    );

    ipvs.del_service(&key).expect("delete");
    assert!(saved().is_empty());
    let err = ipvs.del_service(&key).expect_err("gone");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = ipvs.set_service(&changed).expect_err("gone");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(ipvs.service(&key).expect("get"), None);
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn service_lifecycle_ipv4_tcp() {
    let _netns = kernel::enter();
    service_lifecycle("10.0.0.1:443", Protocol::Tcp, "-t");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn service_lifecycle_ipv6_tcp() {
    let _netns = kernel::enter();
    service_lifecycle("[fd00::1]:6443", Protocol::Tcp, "-t");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn service_lifecycle_udp_both_families() {
    let _netns = kernel::enter();
    service_lifecycle("10.0.0.2:53", Protocol::Udp, "-u");
    service_lifecycle("[fd00::2]:53", Protocol::Udp, "-u");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn an_unknown_scheduler_names_its_module() {
    let _netns = kernel::enter();
    let ipvs = connect();
    let spec = ServiceSpec::new(ServiceKey::tcp(sa("10.0.0.1:443")), "nosuch");
    let err = ipvs.new_service(&spec).expect_err("no such scheduler");
    match &err {
        Error::IpvsSchedulerUnavailable {
            scheduler, module, ..
        } => {
            assert_eq!(scheduler, "nosuch");
            assert_eq!(module, "ip_vs_nosuch");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("modprobe ip_vs_nosuch"), "{err}");
    assert!(saved().is_empty());
}

fn dest_lifecycle(vip: &str, rip: &str, rip2: &str) {
    let ipvs = connect();
    let key = ServiceKey::tcp(sa(vip));
    let err = ipvs.destinations(&key).expect_err("no service");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = ipvs
        .new_dest(&key, &DestSpec::new(sa(rip), 1))
        .expect_err("no service");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    ipvs.new_service(&ServiceSpec::new(key, "wrr"))
        .expect("create");
    assert_eq!(ipvs.destinations(&key).expect("empty"), vec![]);
    let d1 = DestSpec::new(sa(rip), 3);
    let mut d2 = DestSpec::new(sa(rip2), 0);
    d2.upper_threshold = 100;
    d2.lower_threshold = 10;
    ipvs.new_dest(&key, &d1).expect("add d1");
    ipvs.new_dest(&key, &d2).expect("add d2");
    let mut expected = vec![
        format!("-A -t {vip} -s wrr"),
        format!("-a -t {vip} -r {rip} -m -w 3"),
        // `ipvsadm -S` leaves the thresholds out; checked below.
        format!("-a -t {vip} -r {rip2} -m -w 0"),
    ];
    expected.sort();
    assert_eq!(saved(), expected);
    let thresholds = ipvsadm(&["-Ln", "--thresholds", "--exact"]);
    let row: Vec<&str> = thresholds
        .lines()
        .find(|l| l.contains(rip2))
        .unwrap_or_else(|| panic!("{rip2} not in {thresholds}"))
        .split_whitespace()
        .collect();
    // -> ADDR Uthreshold Lthreshold ActiveConn InActConn
    assert_eq!(row.get(2..4), Some(&["100", "10"][..]), "{thresholds}");

    let mut got: Vec<DestSpec> = ipvs
        .destinations(&key)
        .expect("dump")
        .into_iter()
        .map(|d| d.spec)
        .collect();
    got.sort_by_key(|d| d.addr);
    let mut want = vec![d1, d2];
    want.sort_by_key(|d| d.addr);
    assert_eq!(got, want);

    let err = ipvs.new_dest(&key, &d1).expect_err("exists");
    assert!(matches!(err, Error::Exists { .. }), "{err:?}");

    // Weight change, then delete.
    let mut d1b = d1;
    d1b.weight = 0;
    ipvs.set_dest(&key, &d1b).expect("set");
    assert!(
        saved().contains(&format!("-a -t {vip} -r {rip} -m -w 0")),
        "{:?}",
        saved()
    );
    ipvs.del_dest(&key, d2.addr).expect("del");
    let err = ipvs.del_dest(&key, d2.addr).expect_err("gone");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = ipvs.set_dest(&key, &d2).expect_err("gone");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let left = ipvs.destinations(&key).expect("dump");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spec, d1b);
    assert_eq!(left[0].spec.forward, Forward::Masquerade);

    ipvs.del_service(&key).expect("delete service");
    assert!(saved().is_empty());
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn destination_lifecycle_ipv4() {
    let _netns = kernel::enter();
    dest_lifecycle("10.0.0.1:443", "10.0.1.1:6443", "10.0.2.2:6443");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn destination_lifecycle_ipv6() {
    let _netns = kernel::enter();
    dest_lifecycle("[fd00::1]:443", "[fd00::11]:6443", "[fd00::22]:6443");
}

/// Real connections through a service: the counters we read match
/// ipvsadm's, for the service and its destination, IPv4 and IPv6.
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn stats_and_connection_counts_match_ipvsadm() {
    let _netns = kernel::enter();
    kernel::run("ip", &["link", "add", "d0", "type", "dummy"]);
    kernel::run("ip", &["link", "set", "d0", "up"]);
    for a in ["10.0.0.1/32", "10.0.1.1/32"] {
        kernel::run("ip", &["addr", "add", a, "dev", "d0"]);
    }
    for a in ["fd00::1/128", "fd00::11/128"] {
        kernel::run("ip", &["addr", "add", a, "dev", "d0", "nodad"]);
    }
    let ipvs = connect();
    for (vip, rip, vshow, rshow) in [
        (
            "10.0.0.1:443",
            "10.0.1.1:6443",
            "10.0.0.1:443",
            "10.0.1.1:6443",
        ),
        (
            "[fd00::1]:443",
            "[fd00::11]:6443",
            "[fd00::1]:443",
            "[fd00::11]:6443",
        ),
    ] {
        let key = ServiceKey::tcp(sa(vip));
        ipvs.new_service(&ServiceSpec::new(key, "rr")).expect("svc");
        ipvs.new_dest(&key, &DestSpec::new(sa(rip), 1))
            .expect("dest");
        let listener = TcpListener::bind(sa(rip)).expect("listen");
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).expect("read");
                s.write_all(b"world!").expect("write");
            }
        });
        for _ in 0..3 {
            let mut c = TcpStream::connect_timeout(&sa(vip), Duration::from_secs(5))
                .expect("connect through IPVS");
            c.write_all(b"hello").expect("write");
            let mut buf = [0u8; 6];
            c.read_exact(&mut buf).expect("read");
            assert_eq!(&buf, b"world!");
        }
        server.join().expect("server");
        // The kernel sums its per-CPU counters in the rate estimator, every
        // 2 s: wait for two rounds, then two independent reads agree.
        std::thread::sleep(Duration::from_millis(4500));

        let svc = ipvs.service(&key).expect("get").expect("present");
        let dests = ipvs.destinations(&key).expect("dests");
        let s = svc.stats;
        assert_eq!(s.conns, 3);
        assert_eq!(
            [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes],
            stats_row(vshow),
            "service {vip}"
        );
        let d = dests[0].stats;
        assert_eq!(
            [d.conns, d.inpkts, d.outpkts, d.inbytes, d.outbytes],
            stats_row(rshow),
            "destination {rip}"
        );
        assert!(s.inbytes > 0 && s.outbytes > 0, "{s:?}");
        // Closed connections linger as inactive (TIME_WAIT/FIN states).
        assert_eq!(dests[0].active_conns + dests[0].inactive_conns, 3);
        eprintln!("stats {vip}: {s:?}; destination {:?}", dests[0]);
    }
}

/// A table of 10,000 services that are not ours: ours are found and changed
/// correctly, the others are left exactly as they were. Prints the time to
/// dump the table and to apply 100 destination changes (figures, not
/// asserted).
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn ten_thousand_foreign_services_are_left_alone() {
    let _netns = kernel::enter();
    let mut rules = String::new();
    for i in 0..10_000u32 {
        let vip = format!("10.{}.{}.{}:80", 100 + i / 65536, (i / 256) % 256, i % 256);
        rules.push_str(&format!("-A -t {vip} -s rr\n"));
        if i % 10 == 0 {
            rules.push_str(&format!(
                "-a -t {vip} -r 192.168.0.{}:8080 -m -w 1\n",
                i % 250 + 1
            ));
        }
    }
    let t = Instant::now();
    restore(&rules);
    eprintln!(
        "FIGURE: ipvsadm -R of 10,000 services + 1,000 destinations: {:?}",
        t.elapsed()
    );
    let before = saved();
    assert_eq!(before.len(), 11_000);

    let t = Instant::now();
    let listed = ipvsadm(&["-Ln"]);
    eprintln!(
        "FIGURE: reference: `ipvsadm -Ln` of {} lines: {:?}",
        listed.lines().count(),
        t.elapsed()
    );
    let ipvs = connect();
    let t = Instant::now();
    let all = ipvs.services().expect("dump");
    eprintln!("FIGURE: dump of {} services: {:?}", all.len(), t.elapsed());
    assert_eq!(all.len(), 10_000);

    let ours = ServiceKey::tcp(sa("10.255.0.1:443"));
    let ours6 = ServiceKey::tcp(sa("[fd00::1]:443"));
    ipvs.new_service(&ServiceSpec::new(ours, "rr"))
        .expect("ours");
    ipvs.new_service(&ServiceSpec::new(ours6, "rr"))
        .expect("ours6");
    let t = Instant::now();
    let all = ipvs.services().expect("dump");
    eprintln!(
        "FIGURE: dump of {} services (again): {:?}",
        all.len(),
        t.elapsed()
    );
    assert_eq!(all.iter().filter(|s| s.spec.key == ours).count(), 1);
    assert_eq!(all.iter().filter(|s| s.spec.key == ours6).count(), 1);

    // 100 destination changes: 50 adds, then 50 weight changes.
    let dests: Vec<DestSpec> = (1..=50)
        .map(|i| DestSpec::new(sa(&format!("10.254.0.{i}:6443")), 1))
        .collect();
    let t = Instant::now();
    for d in &dests {
        ipvs.new_dest(&ours, d).expect("add");
    }
    for d in &dests {
        ipvs.set_dest(&ours, &DestSpec { weight: 5, ..*d })
            .expect("set");
    }
    eprintln!("FIGURE: 100 destination changes: {:?}", t.elapsed());
    let got = ipvs.destinations(&ours).expect("dests");
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|d| d.spec.weight == 5));

    let during = saved();
    assert_eq!(during.len(), 11_000 + 2 + 50);

    ipvs.del_service(&ours).expect("del");
    ipvs.del_service(&ours6).expect("del6");
    assert_eq!(saved(), before, "the others are untouched");
}

/// The client is `Send`: made in the test's namespace, used from another
/// thread (its socket stays in the namespace it was opened in).
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn the_client_works_from_another_thread() {
    let _netns = kernel::enter();
    let ipvs = connect();
    let key = ServiceKey::tcp(sa("10.0.0.9:443"));
    let handle = std::thread::spawn(move || {
        ipvs.new_service(&ServiceSpec::new(key, "rr"))
            .expect("create");
        ipvs
    });
    let ipvs = handle.join().expect("thread");
    assert_eq!(saved(), vec!["-A -t 10.0.0.9:443 -s rr".to_owned()]);
    ipvs.del_service(&key).expect("delete");
}

/// Without CAP_NET_ADMIN the kernel refuses every IPVS command; the error
/// says which capability is missing. The test re-runs itself as a child
/// whose capability bounding set lacks CAP_NET_ADMIN (as root, `exec` then
/// grants only what the bounding set allows).
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn without_cap_net_admin_the_error_says_so() {
    const CHILD: &str = "APISERVER_PROXY_IPVS_EPERM_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // The child: in the parent's namespace, without the capability.
        let ipvs = Ipvs::connect().expect("resolving the family needs no privilege");
        let spec = ServiceSpec::new(ServiceKey::tcp(sa("10.0.0.1:443")), "rr");
        for err in [
            ipvs.info().expect_err("info"),
            ipvs.new_service(&spec).expect_err("create"),
            ipvs.services().expect_err("dump"),
        ] {
            assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
            println!("child error: {err}");
        }
        return;
    }
    let _netns = kernel::enter();
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new("setpriv")
        .args([
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            "--",
        ])
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "without_cap_net_admin_the_error_says_so",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child under setpriv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert!(text.contains("needs CAP_NET_ADMIN"), "{text}");
    assert!(saved().is_empty(), "nothing was created");
}
