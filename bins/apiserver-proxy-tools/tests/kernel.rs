//! apiserver-proxy-tools on a real kernel (run in the VM by `cargo xtask
//! test`): every command, the Go tool's syntax, IPv6, a simulated reboot,
//! cleanup leaving nothing behind, foreign services left alone, and bad input
//! losing nothing. Fake apiservers (TLS, /readyz) run in network namespaces
//! of their own; each test runs in a fresh namespace, with its state and
//! boot files in a temporary folder.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use apiserver_proxy_manager::state::{self, CachedSets};
use apiserver_proxy_testkit::kernel::{self, NetnsGuard, run};
use apiserver_proxy_testkit::master::Master;
use apiserver_proxy_testkit::tls::Ca;
use apiserver_proxy_types::Endpoint;
use common::{BIN, Run, run_cli};

const VIP: &str = "10.103.97.2:6443";
const PORT: u16 = 6443;
const TOOL: &str = "/usr/local/bin/apiserver-proxy-tools";
const UNIT: &str = "root/etc/systemd/system/apiserver-proxy-reload.service";

/// One test's node: state, Go and boot folders in a temporary folder, and
/// the cluster CA the probes verify with.
struct Node {
    dir: tempfile::TempDir,
}

/// The test's own network namespace, a cluster CA, and a node whose boot
/// root has systemd's unit folder (`systemd`) or not (rc.local).
fn setup(systemd: bool) -> (NetnsGuard, Ca, Node) {
    let netns = kernel::enter();
    let ca = Ca::new("kubernetes-ca");
    let node = Node::new(&ca, systemd);
    (netns, ca, node)
}

impl Node {
    fn new(ca: &Ca, systemd: bool) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), &ca.cert.cert_pem).expect("write CA");
        let root = dir.path().join("root");
        let etc = if systemd { "etc/systemd/system" } else { "etc" };
        std::fs::create_dir_all(root.join(etc)).expect("mkdir");
        // The tool "installed" at --tool-path is this build, linked rather
        // than copied (a debug build is large, and the VM's disk is RAM).
        let tool = root.join(TOOL.trim_start_matches('/'));
        std::fs::create_dir_all(tool.parent().expect("parent")).expect("mkdir");
        symlink(BIN, &tool).expect("symlink");
        Node { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run_program(&self, program: &OsStr, line: &str, extra: &[&OsStr]) -> Run {
        let (state, root) = (self.path("state"), self.path("root"));
        run_cli(
            program,
            line,
            extra,
            &[
                ("APISERVER_PROXY_STATE_DIR", state.as_os_str()),
                ("APISERVER_PROXY_TOOLS_ROOT", root.as_os_str()),
            ],
        )
    }

    /// Runs the CLI, adding --persist-dir and --health-ca-file unless given.
    fn cli(&self, line: &str) -> Run {
        let (go, ca) = (self.path("go"), self.path("ca.pem"));
        let mut extra: Vec<&OsStr> = Vec::new();
        if !line.contains("ersist") {
            extra.extend(["--persist-dir".as_ref(), go.as_os_str()]);
        }
        if !line.contains("--health-ca-file") {
            extra.extend(["--health-ca-file".as_ref(), ca.as_os_str()]);
        }
        self.run_program(BIN.as_ref(), line, &extra)
    }

    /// What the boot-time restore runs: the unit's ExecStart, or the
    /// rc.local line.
    fn boot_line(&self) -> String {
        match std::fs::read_to_string(self.path(UNIT)) {
            Ok(text) => text
                .lines()
                .find_map(|l| l.strip_prefix("ExecStart="))
                .expect("ExecStart")
                .to_string(),
            Err(_) => {
                let rc = std::fs::read_to_string(self.path("root/etc/rc.local")).expect("rc.local");
                rc.lines()
                    .find(|l| l.contains(" reload "))
                    .expect("reload line")
                    .trim_end_matches(" || true")
                    .to_string()
            }
        }
    }

    /// Boots: runs what the unit (or rc.local) runs, with the tool found
    /// below the boot root.
    fn boot(&self) -> Run {
        let line = self.boot_line();
        let args = line
            .strip_prefix(TOOL)
            .unwrap_or_else(|| panic!("the restore does not run {TOOL}: {line}"));
        let program = self.path("root").join(TOOL.trim_start_matches('/'));
        self.run_program(program.as_os_str(), args, &[])
    }

    fn state(&self) -> String {
        std::fs::read_to_string(self.path("state/state.json")).unwrap_or_default()
    }

    /// Waits until `status` says healthy.
    fn wait_healthy(&self) {
        self.wait_healthy_with("");
    }

    /// [`Node::wait_healthy`], with `extra` flags for `status`.
    fn wait_healthy_with(&self, extra: &str) {
        let started = Instant::now();
        loop {
            let st = self.cli(&format!("status{extra}"));
            if st.code() == 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "still unhealthy:\n{}",
                st.stdout()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `ipvsadm -Ln -t vip`: the scheduler, and each destination with its
/// weight, sorted (nothing if there is no such service).
fn service(vip: &str) -> (Option<String>, Vec<(String, u32)>) {
    let out = Command::new("ipvsadm")
        .args(["-Ln", "-t", vip])
        .output()
        .expect("run ipvsadm");
    let mut scheduler = None;
    let mut dests = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["TCP", _, s, ..] => scheduler = Some(s.to_string()),
            ["->", addr, _, w, ..] if *addr != "RemoteAddress:Port" => {
                dests.push((addr.to_string(), w.parse().unwrap_or(u32::MAX)))
            }
            _ => {}
        }
    }
    dests.sort();
    (scheduler, dests)
}

fn dests(vip: &str) -> Vec<(String, u32)> {
    service(vip).1
}

fn scheduler(vip: &str) -> Option<String> {
    service(vip).0
}

/// Each endpoint at weight 1, sorted as [`dests`] is.
fn in_rotation(endpoints: &[String]) -> Vec<(String, u32)> {
    let mut want: Vec<(String, u32)> = endpoints.iter().map(|e| (e.clone(), 1)).collect();
    want.sort();
    want
}

/// `ip -o addr` of the dummy interface ("" when it does not exist).
fn vip_addresses() -> String {
    apiserver_proxy_testkit::kernel::addresses_of("apiproxy0")
}

fn interface_exists() -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", "apiproxy0"])
        .output()
        .expect("run ip")
        .status
        .success()
}

/// One HTTPS GET through `vip_host` (an IP, `[...]` for IPv6), verified as
/// kubelet would verify it (the CA, the name `kubernetes`).
fn answers_through(node: &Node, vip_host: &str) -> bool {
    Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "--cacert"])
        .arg(node.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("kubernetes:{PORT}:{vip_host}"))
        .arg(format!("https://kubernetes:{PORT}/version"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Empties the kernel as a reboot does: no service, no dummy interface.
fn reboot_kernel(vips: &[&str]) {
    for v in vips {
        run("ipvsadm", &["-D", "-t", v]);
    }
    run("ip", &["link", "del", "apiproxy0"]);
    for v in vips {
        assert_eq!(service(v), (None, Vec::new()));
    }
    assert!(!interface_exists());
}

/// `n` fake apiservers on their own hosts, and their `IP:PORT`s.
fn masters(ca: &Ca, n: usize, v6: bool) -> (Vec<Master>, Vec<String>) {
    let m: Vec<Master> = (0..n)
        .map(|_| Master::remote(ca.apiserver_cert(&[]), v6, PORT))
        .collect();
    let eps = m.iter().map(Master::endpoint).collect();
    (m, eps)
}

/// The kernel is asked before the state lock (so that a node without IPVS
/// or a caller who is not root hears so before anything is created); with
/// IPVS there, a daemon holding the lock stops `add`.
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn a_held_state_lock_is_refused() {
    let (_netns, _ca, node) = setup(true);
    let _daemon =
        apiserver_proxy_manager::lock::StateLock::acquire(&node.path("state"), Duration::ZERO)
            .expect("lock");
    node.cli("add --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --no-probe")
        .refused(&["holds the lock", "stop it first"]);
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn add_probes_leaves_a_dead_backend_out_and_list_shows_the_kernel() {
    let (_netns, ca, node) = setup(true);
    let (m, ep) = masters(&ca, 3, false);
    m[2].stop();

    let out = node
        .cli(&format!(
            "add --vs {VIP} --rs {} --rs {} --rs {}",
            ep[0], ep[1], ep[2]
        ))
        .ok()
        .stdout();
    let verdict = |e: &str| {
        out.lines()
            .find(|l| l.contains(e))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(verdict(&ep[0]).as_deref(), Some("ok"), "{out}");
    assert_eq!(verdict(&ep[2]).as_deref(), Some("FAIL"), "{out}");
    assert!(out.contains("leaving out 1 backend"), "{out}");
    assert!(
        out.contains("created virtual server 10.103.97.2:6443 (scheduler rr)"),
        "{out}"
    );
    assert_eq!(service(VIP), (Some("rr".into()), in_rotation(&ep[..2])));
    assert!(
        vip_addresses().contains("10.103.97.2/32"),
        "{}",
        vip_addresses()
    );
    assert_eq!(
        run("cat", &["/proc/sys/net/ipv4/vs/expire_nodest_conn"]).trim(),
        "1"
    );
    assert!(
        answers_through(&node, "10.103.97.2"),
        "no answer through the VIP"
    );
    assert!(node.state().is_empty(), "add saves nothing");

    // Again: nothing to do. Then the third by hand, without a probe.
    let again = node.cli(&format!("add --vs {VIP} --rs {}", ep[0])).ok();
    assert!(
        again.stdout().contains("already in place"),
        "{}",
        again.stdout()
    );
    node.cli(&format!("add --vs {VIP} --rs {} --no-probe", ep[2]))
        .ok();
    assert_eq!(dests(VIP), in_rotation(&ep));

    let list = node.cli("list").ok().stdout();
    let first = list.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with(VIP) && first.contains(" rr "), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&node.cli("list -o json").ok().stdout()).expect("json");
    assert_eq!(json[0]["vip"], VIP);
    assert_eq!(json[0]["scheduler"], "rr");
    assert_eq!(json[0]["backends"].as_array().map(Vec::len), Some(3));
    assert_eq!(json[0]["backends"][0]["weight"], 1);
    assert!(json[0]["backends"][0]["activeConns"].is_number());

    // status: not saved, and one backend dead: unhealthy (3), each named.
    let st = node.cli("status");
    assert_eq!(st.code(), 3, "{}{}", st.stdout(), st.stderr());
    let text = st.stdout();
    assert!(text.contains("not saved"), "{text}");
    assert!(
        text.contains(&format!("backend {} fails its probe", ep[2])),
        "{text}"
    );
    // The same report for programs, with the same exit code.
    let st = node.cli("status -o json");
    assert_eq!(st.code(), 3, "{}{}", st.stdout(), st.stderr());
    let json: serde_json::Value = serde_json::from_str(&st.stdout()).expect("status json");
    assert_eq!(json["kind"], "Status");
    assert_eq!(json["healthy"], false);
    assert_eq!(json["virtualServers"][0]["vip"], VIP);
    let dead = json["virtualServers"][0]["backends"]
        .as_array()
        .and_then(|b| {
            b.iter()
                .find(|b| b["address"] == ep[2].to_string().as_str())
        })
        .expect("the dead backend is listed");
    assert_eq!(dead["probe"]["passed"], false, "{json}");
    assert_eq!(json["source"], "probes", "no daemon runs here: {json}");

    // With a daemon's /status page answering, its view is shown instead of
    // probes from here (a page served by the test, naming its own reason).
    let page = serde_json::json!({
        "apiVersion": "bcs-apiserver-proxy/v1",
        "kind": "DaemonStatus",
        "ready": true,
        "virtualServers": [{
            "vip": VIP,
            "failOpen": false,
            "backends": ep.iter().enumerate().map(|(i, b)| serde_json::json!({
                "address": b.to_string(),
                "condition": if i == 2 { "dead" } else { "ready" },
                "inService": i != 2,
                "reason": if i == 2 { "the daemon says: refused" } else { "HTTP 200" },
            })).collect::<Vec<_>>(),
        }],
    })
    .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            );
        }
    });
    let st = node.cli(&format!("status --daemon {addr}"));
    assert_eq!(st.code(), 3, "{}{}", st.stdout(), st.stderr());
    let text = st.stdout();
    assert!(
        text.starts_with(&format!("source: the daemon at {addr}")),
        "{text}"
    );
    assert!(text.contains("the daemon says: refused"), "{text}");
    let st = node.cli(&format!("status -o json --daemon {addr}"));
    let json: serde_json::Value = serde_json::from_str(&st.stdout()).expect("status json");
    assert_eq!(json["source"], "daemon", "{json}");
    assert_eq!(json["daemon"]["kind"], "DaemonStatus", "{json}");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn when_no_backend_passes_all_are_added() {
    let (_netns, ca, node) = setup(true);
    let (m, ep) = masters(&ca, 2, false);
    for x in &m {
        x.stop();
    }
    let out = node
        .cli(&format!("add --vs {VIP} --rs {} --rs {}", ep[0], ep[1]))
        .ok()
        .stdout();
    assert!(out.contains("adding all 2 anyway"), "{out}");
    assert_eq!(dests(VIP), in_rotation(&ep));
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn init_then_a_reboot_restores_everything_even_before_the_apiservers_answer() {
    let (_netns, ca, node) = setup(true);
    let (m, ep) = masters(&ca, 2, false);
    let init = format!(
        "init --vs {VIP} --rs {} --rs {} --scheduler wrr",
        ep[0], ep[1]
    );
    let out = node.cli(&init).ok().stdout();
    assert!(
        out.contains("apiserver-proxy-reload.service: runs `reload` before kubelet.service"),
        "{out}"
    );
    assert!(
        out.contains("systemctl daemon-reload && systemctl enable"),
        "{out}"
    );
    let state = node.state();
    for want in [VIP, "wrr", &ep[0], &ep[1], "apiproxy0"] {
        assert!(state.contains(want), "{want} not in {state}");
    }
    // Idempotent.
    let again = node.cli(&init).ok().stdout();
    assert!(again.contains("is in place"), "{again}");
    node.wait_healthy();

    // Reboot: the kernel forgets, and the apiservers do not answer yet.
    reboot_kernel(&[VIP]);
    for x in &m {
        x.stop();
    }
    let boot = node.boot().ok().stdout();
    assert!(
        boot.contains("restoring 10.103.97.2:6443 (wrr, 2 backend(s)"),
        "{boot}"
    );
    assert_eq!(
        service(VIP),
        (Some("wrr".into()), in_rotation(&ep)),
        "a failed probe never drops a saved backend; the saved scheduler is kept"
    );
    assert!(vip_addresses().contains("10.103.97.2/32"));
    assert_eq!(node.cli("status").code(), 3);

    // They come up; the node reaches them through the restored VIP.
    for x in &m {
        x.start();
    }
    node.wait_healthy();
    assert!(answers_through(&node, "10.103.97.2"));

    // Reload on a live node removes nothing.
    run(
        "ipvsadm",
        &["-a", "-t", VIP, "-r", "10.77.250.2:6443", "-m"],
    );
    node.cli("reload").ok();
    assert_eq!(dests(VIP).len(), 3, "reload keeps what the kernel holds");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn reload_takes_the_daemons_newer_cache() {
    let (_netns, _ca, node) = setup(true);
    node.cli(&format!(
        "init --vs {VIP} --rs 192.168.1.10:6443 --no-probe"
    ))
    .ok();
    // The daemon learned another set from the cluster after init.
    std::thread::sleep(Duration::from_millis(50));
    let learned = [
        "192.168.1.20:6443".to_string(),
        "192.168.1.21:6443".to_string(),
    ];
    let vip: Endpoint = VIP.parse().expect("vip");
    let mut sets = CachedSets::new();
    sets.insert(
        vip,
        learned
            .iter()
            .map(|e| e.parse().expect("endpoint"))
            .collect(),
    );
    state::store_cache(&node.path("state"), &sets).expect("cache");
    reboot_kernel(&[VIP]);
    let out = node.boot().ok().stdout();
    assert!(out.contains("newer cache"), "{out}");
    assert_eq!(dests(VIP), in_rotation(&learned));
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn the_go_tools_syntax_and_state_file_work() {
    let (_netns, ca, node) = setup(true);
    let (_m, ep) = masters(&ca, 2, false);
    let go_dir = node.path("go");
    let go = go_dir.to_str().expect("utf8");

    node.cli(&format!(
        "-cmd add -vs {VIP} -rs {} -rs {} -scheduler rr",
        ep[0], ep[1]
    ))
    .ok();
    assert_eq!(dests(VIP), in_rotation(&ep));
    node.cli(&format!("-cmd delete -vs {VIP}")).ok();
    assert!(scheduler(VIP).is_none());
    assert!(
        !vip_addresses().contains("10.103.97.2"),
        "{}",
        vip_addresses()
    );

    node.cli(&format!(
        "-cmd init -vs {VIP} -rs {} -persistDir {go} -toolPath {TOOL} -healthScheme https \
         -healthPath /readyz",
        ep[0]
    ))
    .ok();
    assert_eq!(dests(VIP), in_rotation(&ep[..1]));
    assert!(node.boot_line().contains(&format!("--persist-dir {go}")));

    // A node the Go tool set up: its ipvsConfig.yaml, another VIP, wrr (the
    // Go tool would have reloaded it with sh).
    std::fs::create_dir_all(&go_dir).expect("mkdir");
    std::fs::write(
        go_dir.join("ipvsConfig.yaml"),
        format!("vs: 10.103.97.3:6443\nrs:\n- {}\nscheduler: wrr\n", ep[1]),
    )
    .expect("write");
    reboot_kernel(&[VIP]);
    let out = node
        .cli(&format!("-cmd reload -persistDir {go}"))
        .ok()
        .stdout();
    assert!(out.contains("from the Go tool's ipvsConfig.yaml"), "{out}");
    assert_eq!(dests(VIP), in_rotation(&ep[..1]));
    assert_eq!(
        service("10.103.97.3:6443"),
        (Some("wrr".into()), in_rotation(&ep[1..]))
    );
    let list = node.cli(&format!("list --persist-dir {go}")).ok().stdout();
    assert!(list.contains("10.103.97.3:6443"), "{list}");

    // A Go-style delete of a saved VIP says that it comes back at boot.
    let del = node
        .cli(&format!("-cmd delete -vs {VIP} -persistDir {go}"))
        .ok()
        .stdout();
    assert!(del.contains("cleanup --vs 10.103.97.2:6443"), "{del}");
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn ipv6_end_to_end() {
    let (_netns, ca, node) = setup(true);
    let (_m, ep) = masters(&ca, 2, true);
    let vip6 = "[fd00::2]:6443";
    node.cli(&format!("init --vs {vip6} --rs {} --rs {}", ep[0], ep[1]))
        .ok();
    assert_eq!(dests(vip6), in_rotation(&ep));
    assert!(
        vip_addresses().contains("fd00::2/128"),
        "{}",
        vip_addresses()
    );
    assert!(
        answers_through(&node, "[fd00::2]"),
        "no answer through the IPv6 VIP"
    );
    let json: serde_json::Value =
        serde_json::from_str(&node.cli("list -o json").ok().stdout()).expect("json");
    assert_eq!(json[0]["vip"], vip6);
    node.wait_healthy();

    reboot_kernel(&[vip6]);
    node.boot().ok();
    assert_eq!(dests(vip6), in_rotation(&ep));

    node.cli(&format!("cleanup --vs {vip6}")).ok();
    assert!(dests(vip6).is_empty() && !interface_exists());
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn cleanup_leaves_nothing_behind_and_foreign_services_are_never_touched() {
    // No systemd below this root: the rc.local fallback.
    let (_netns, ca, node) = setup(false);
    let (_m, ep) = masters(&ca, 2, false);
    // kube-proxy's kind of service: not ours.
    let foreign = "10.96.0.1:443";
    run("ipvsadm", &["-A", "-t", foreign, "-s", "rr"]);
    run(
        "ipvsadm",
        &["-a", "-t", foreign, "-r", "10.77.250.2:6443", "-m"],
    );
    let before_foreign = service(foreign);
    let out = node
        .cli(&format!("init --vs {VIP} --rs {} --rs {}", ep[0], ep[1]))
        .ok()
        .stdout();
    assert!(out.contains("no systemd here"), "{out}");
    assert!(node.boot_line().starts_with(&format!("{TOOL} reload")));

    let list = node.cli("list").ok().stdout();
    assert!(!list.contains(foreign), "{list}");
    node.cli(&format!("delete --vs {foreign}"))
        .refused(&["not ours", "ipvsadm -D"]);
    node.cli(&format!("cleanup --vs {foreign}"))
        .refused(&["not ours"]);
    // Nor is it taken over.
    node.cli(&format!(
        "add --vs {foreign} --rs 10.77.250.3:6443 --no-probe"
    ))
    .refused(&["not ours", "kube-proxy"]);
    node.cli(&format!(
        "init --vs {foreign} --rs 10.77.250.3:6443 --no-probe"
    ))
    .refused(&["not ours"]);
    assert_eq!(service(foreign), before_foreign, "left exactly as it was");

    // A reboot restores from the rc.local line too.
    reboot_kernel(&[VIP]);
    node.boot().ok();
    assert_eq!(dests(VIP), in_rotation(&ep));

    let out = node.cli(&format!("cleanup --vs {VIP}")).ok().stdout();
    assert!(out.contains("deleted virtual server"), "{out}");
    assert!(scheduler(VIP).is_none());
    assert!(!interface_exists(), "the dummy interface stayed");
    assert!(!node.path("state/state.json").exists());
    let rc = std::fs::read_to_string(node.path("root/etc/rc.local")).expect("rc.local");
    assert!(!rc.contains("apiserver-proxy-tools"), "{rc}");
    assert!(!node.path("root/etc/systemd").exists());
    assert_eq!(
        service(foreign),
        before_foreign,
        "a foreign service changed"
    );

    // Again: nothing left to do, still fine; reload now has nothing.
    node.cli(&format!("cleanup --vs {VIP}")).ok();
    node.cli("reload").refused(&["nothing to restore"]);
    assert_eq!(service(foreign), before_foreign);
    let services = run("ipvsadm", &["-Ln"]);
    assert_eq!(
        services.lines().filter(|l| l.starts_with("TCP")).count(),
        1,
        "{services}"
    );
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn cleanup_removes_the_systemd_unit() {
    let (_netns, _ca, node) = setup(true);
    node.cli(&format!(
        "init --vs {VIP} --rs 192.168.1.10:6443 --no-probe"
    ))
    .ok();
    assert!(node.path(UNIT).exists());
    node.cli(&format!("cleanup --vs {VIP}")).ok();
    assert!(!node.path(UNIT).exists() && scheduler(VIP).is_none() && !interface_exists());
    assert!(!node.path("state/state.json").exists());
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn bad_input_on_a_live_node_loses_nothing() {
    let (_netns, _ca, node) = setup(true);
    node.cli(&format!(
        "init --vs {VIP} --rs 192.168.1.10:6443 --rs 192.168.1.11:6443 --no-probe"
    ))
    .ok();
    let before = (run("ipvsadm", &["-Ln"]), vip_addresses());
    let unchanged = || {
        assert_eq!((run("ipvsadm", &["-Ln"]), vip_addresses()), before);
    };

    // A corrupt state file: named, and the kernel keeps its rules.
    let saved = node.state();
    std::fs::write(
        node.path("state/state.json"),
        "{\"kind\": \"bcs-apiserver-proxy/node-state\"",
    )
    .expect("write");
    node.cli("reload").refused(&["state.json", "not JSON"]);
    node.cli(&format!(
        "init --vs {VIP} --rs 192.168.1.12:6443 --no-probe"
    ))
    .refused(&["state.json"]);
    node.cli(&format!("cleanup --vs {VIP}"))
        .refused(&["state.json"]);
    std::fs::write(node.path("state/state.json"), &saved).expect("write");
    unchanged();

    // Without CAP_NET_ADMIN: said, and nothing changes.
    let setpriv = OsStr::new("setpriv");
    let no_cap = |line: &str| {
        node.run_program(
            setpriv,
            &format!("--bounding-set -net_admin -- {BIN} {line}"),
            &[],
        )
    };
    no_cap("add --vs 10.103.97.9:6443 --rs 192.168.1.10:6443 --no-probe")
        .refused(&["CAP_NET_ADMIN"]);
    no_cap("reload").refused(&["CAP_NET_ADMIN"]);
    no_cap("list").refused(&["CAP_NET_ADMIN"]);
    unchanged();

    // Malformed, mixed-family and unknown-scheduler input on a live node.
    node.cli(&format!("add --vs {VIP} --rs 192.168.1.10"))
        .usage(&["has no port"]);
    node.cli(&format!("add --vs {VIP} --rs [fd00::10]:6443"))
        .refused(&["cannot mix"]);
    node.cli(&format!(
        "add --vs {VIP} --rs 192.168.1.10:6443 --scheduler x"
    ))
    .usage(&["unknown IPVS scheduler"]);
    node.cli("delete --vs 10.103.97.77:6443").ok();
    node.cli("status --health-scheme tcp");
    unchanged();
}

/// `nft list table inet bcs-apiserver-proxy` ("" when there is none).
fn our_nft_table() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "bcs-apiserver-proxy"])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node this runs on has no IPVS on the host (so `auto` is what picks
/// nftables, and the test says so); in the VM, whose kernel has IPVS, the
/// same steps run with `--dataplane nftables`.
fn nftables_flag() -> &'static str {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        " --dataplane nftables"
    } else {
        ""
    }
}

/// A node whose kernel has no IPVS, end to end with the CLI on nftables:
/// `init` (route mode: no dummy interface needed) makes our table and the
/// VIP answers through it, `list` and `status` read it back, a reboot
/// (table and route gone) is restored by the boot-time line, and `cleanup`
/// removes our table and nothing else (a foreign table stays).
#[test]
fn nftables_init_reboot_and_cleanup_on_a_node_without_ipvs() {
    let _netns = kernel::enter_without_ipvs();
    let ca = Ca::new("kubernetes-ca");
    let node = Node::new(&ca, true);
    run("nft", &["add", "table", "inet", "kube-proxy"]);
    let (_m, ep) = masters(&ca, 2, false);
    let flag = nftables_flag();

    let init = node
        .cli(&format!(
            "init --vs {VIP} --rs {} --rs {} --vip-mode route{flag}",
            ep[0], ep[1]
        ))
        .ok();
    if flag.is_empty() {
        assert!(
            init.stdout()
                .contains("dataplane: nftables (auto: the kernel has no IPVS"),
            "{}",
            init.stdout()
        );
    }
    let table = our_nft_table();
    for e in &ep {
        assert!(table.contains(&format!("dnat ip to {e}")), "{table}");
    }
    assert!(table.contains("numgen inc mod 2"), "{table}");
    assert!(answers_through(&node, "10.103.97.2"));
    let listed = node.cli(&format!("list{flag}")).ok().stdout();
    for e in &ep {
        assert!(listed.contains(e.as_str()), "{listed}");
    }
    node.wait_healthy_with(flag);
    let status = node.cli(&format!("status -o json{flag}")).ok().stdout();
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["dataplane"], "nftables", "{status}");

    // A reboot: the rules and the route are gone, the boot line restores.
    run("nft", &["delete", "table", "inet", "bcs-apiserver-proxy"]);
    run("ip", &["route", "flush", "table", "local", "10.103.97.2"]);
    run("ip", &["route", "del", "10.103.97.2/32", "dev", "lo"]);
    assert!(our_nft_table().is_empty());
    let line = node.boot_line();
    assert_eq!(
        line.contains("--dataplane nftables"),
        !flag.is_empty(),
        "{line}"
    );
    node.boot().ok();
    assert!(our_nft_table().contains("numgen inc mod 2"));
    assert!(answers_through(&node, "10.103.97.2"));

    node.cli(&format!("cleanup --vs {VIP}{flag}")).ok();
    assert!(our_nft_table().is_empty());
    let ruleset = run("nft", &["list", "ruleset"]);
    assert!(ruleset.contains("table inet kube-proxy"), "{ruleset}");
    assert!(!answers_through(&node, "10.103.97.2"));
}
