//! The outside control-plane VIP end to end on a real kernel (the host's,
//! with nftables; namespaces, veth and a bridge): two control-plane nodes,
//! each a network namespace with its apiserver (a TLS fake) and the daemon
//! binary in control-plane mode, on one LAN with a client; one more fake
//! apiserver in the test's namespace plays the cluster's API (the Lease and
//! the EndpointSlices), reached by every node.
//!
//! Asserted: the client reaches both apiservers through the VIP (the
//! holder balances, and masquerades what it sends to the other node); the
//! holder's own apiserver crashing costs no request; the holder killed
//! with SIGKILL is replaced; at no sampled moment do both nodes hold the
//! VIP. Durations are printed, never asserted (`cargo xtask bench`
//! measures them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver_proxy_testkit::kernel::{self, run};
use apiserver_proxy_testkit::master::Master;
use apiserver_proxy_testkit::netns::{AddressReferee, Lan, holds_address};
use apiserver_proxy_testkit::tls::Ca;

const VIP: &str = "192.168.50.100";
const PORT: u16 = 6443;
/// The cluster API's port in the test's namespace.
const API_PORT: u16 = 7443;

struct Node {
    name: String,
    master: Master,
    daemon: Option<Child>,
}

impl Node {
    fn ns(&self) -> &str {
        self.master.ns().name()
    }

    fn holds(&self) -> bool {
        holds(self.ns())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn holds(ns: &str) -> bool {
    holds_address(ns, "eth1", VIP)
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write");
    path.to_path_buf()
}

/// A node: its apiserver in a namespace of its own, `eth1` on the LAN
/// bridge at 192.168.50.1N, and the daemon there in control-plane mode.
fn node(n: u8, master: Master, ca_file: &Path, dir: &Path, lan: &Lan, plane: &str) -> Node {
    let ns = master.ns();
    ns.join_lan(lan, &format!("192.168.50.1{n}/24"));
    // Control-plane nodes forward (kubeadm requires it): the VIP's
    // connections to the other node's apiserver go out again.
    ns.exec_ok("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    let api = format!("{}:{API_PORT}", ns.peer_ipv4);
    let kubeconfig = write(
        &dir.join(format!("kubeconfig-{n}")),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{api}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: test\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            ca_file.display()
        ),
    );
    let state = dir.join(format!("state-{n}"));
    let name = format!("node-{n}");
    let daemon = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(env!("CARGO_BIN_EXE_bcs-apiserver-proxy"))
        .args(["--vs", "10.103.97.2:6443", "--rs", &master.endpoint()])
        .args(["--vip-mode", "route", "--dataplane", plane])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--health-ca-file")
        .arg(ca_file)
        .args(["--health-interval", "1s", "--health-timeout", "800ms"])
        .arg("--state-dir")
        .arg(&state)
        .args(["--metrics-addr", "127.0.0.1:18100"])
        .args(["--control-plane-vip", &format!("{VIP}:{PORT}")])
        .args(["--control-plane-interface", "eth1"])
        .args(["--control-plane-apiserver", &api])
        .args(["--control-plane-identity", &name])
        .env("APISERVER_PROXY_LOG", "info")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the daemon");
    Node {
        name,
        master,
        daemon: Some(daemon),
    }
}

/// One request through the VIP, verified as kubectl would (the cluster CA,
/// the name `kubernetes`).
fn request(ca_file: &Path, max_time: &str) -> bool {
    Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", max_time, "--cacert"])
        .arg(ca_file)
        .arg("--resolve")
        .arg(format!("kubernetes:{PORT}:{VIP}"))
        .arg(format!("https://kubernetes:{PORT}/version"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within {limit:?}: {what}");
}

/// How many backends the outside VIP's round robin in `ns` sends to.
fn outside_backends(ns: &str, plane: &str) -> usize {
    if plane == "ipvs" {
        // `  -> 10.77.1.2:6443  Masq  1  0  0`: weight-0 destinations take
        // no new connection.
        let vs = format!("{VIP}:{PORT}");
        let listed = run("ip", &["netns", "exec", ns, "ipvsadm", "-Ln", "-t", &vs]);
        return listed
            .lines()
            .filter(|l| l.trim_start().starts_with("->") && !l.contains("RemoteAddress"))
            .filter(|l| l.split_whitespace().nth(3) != Some("0"))
            .count();
    }
    let listed = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "inet",
            "bcs-apiserver-proxy",
        ],
    );
    listed
        .split("chain ")
        .find(|c| c.starts_with("vip-192.168.50.100-6443"))
        .map_or(0, |c| c.matches("jump be-").count())
}

#[test]
fn nftables_the_outside_vip_balances_survives_its_holders_apiserver_and_moves_when_the_holder_dies()
{
    let _netns = kernel::enter_without_ipvs();
    scenario("nftables");
}

/// The same on IPVS: its virtual server catches the VIP's packets on the
/// holder, nf_tables masquerades what IPVS sends to the other node.
#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn the_outside_vip_balances_survives_its_holders_apiserver_and_moves_when_the_holder_dies() {
    let _netns = kernel::enter();
    scenario("ipvs");
}

fn scenario(plane: &str) {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("kubernetes-ca");
    let ca_file = write(&dir.path().join("ca.pem"), &ca.cert.cert_pem);
    // The cluster's API, for the Lease and the EndpointSlices.
    let api = Master::local(
        ca.apiserver_cert(&[]),
        format!("0.0.0.0:{API_PORT}").parse().expect("addr"),
    );
    let lan = Lan::new("192.168.50.1/24");
    let masters: Vec<Master> = (0..2)
        .map(|_| Master::remote(ca.apiserver_cert(&[]), false, PORT))
        .collect();
    // The cluster lists both apiservers, ready, on their port; every
    // apiserver serves the same list (discovery asks the apiservers it
    // knows, not only the kubeconfig's).
    let listed: Vec<_> = masters
        .iter()
        .map(|m| (m.addr().ip(), Some(true)))
        .collect();
    api.publish_port(PORT, listed.clone());
    for m in &masters {
        m.publish(listed.clone());
    }
    let mut nodes: Vec<Node> = masters
        .into_iter()
        .zip(1..)
        .map(|(m, n)| node(n, m, &ca_file, dir.path(), &lan, plane))
        .collect();
    let took = wait_for(
        "a node holds the VIP and answers",
        Duration::from_secs(60),
        || request(&ca_file, "2"),
    );
    eprintln!("first answer through the outside VIP {took:?} after the start");
    let referee = AddressReferee::start(
        vec![nodes[0].ns().to_string(), nodes[1].ns().to_string()],
        "eth1",
        VIP,
    );
    let h = nodes
        .iter()
        .position(Node::holds)
        .expect("the answering node holds the VIP");
    let o = 1 - h;
    eprintln!("{} holds the VIP", nodes[h].name);

    // Balanced over both apiservers: the other node's through the masquerade.
    let before = nodes[o].master.count_requests("GET /version");
    wait_for(
        "the other node's apiserver answers through the VIP",
        Duration::from_secs(60),
        || {
            assert!(request(&ca_file, "5"), "a request through the VIP failed");
            nodes[o].master.count_requests("GET /version") > before
        },
    );

    // The holder's own apiserver crashes: the holder keeps the VIP and,
    // once the crash is handled (as for the node-local VIP), balances to
    // the other only; no request fails.
    nodes[h].master.stop();
    wait_for(
        "the holder's rules send to the other apiserver only",
        Duration::from_secs(60),
        || outside_backends(nodes[h].ns(), plane) == 1,
    );
    let mut failed = 0;
    for _ in 0..20 {
        if !request(&ca_file, "10") {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 0,
        "requests failed after the holder's apiserver crashed"
    );
    assert!(
        nodes[h].holds(),
        "a crashed apiserver does not move the VIP"
    );
    nodes[h].master.start();

    // The holder's daemon is killed (SIGKILL: nothing let go, nothing
    // released): the other node takes over.
    let killed = Instant::now();
    if let Some(mut d) = nodes[h].daemon.take() {
        d.kill().expect("kill");
        d.wait().expect("wait");
    }
    wait_for(
        "the other node takes the VIP",
        Duration::from_secs(60),
        || nodes[o].holds() && request(&ca_file, "1"),
    );
    eprintln!(
        "holder killed: {} answers through the VIP {:?} later",
        nodes[o].name,
        killed.elapsed()
    );
    let both = referee.finish();
    assert!(!nodes[h].holds(), "the killed holder's address expired");
    assert_eq!(both, 0, "both nodes held the VIP at some moment");
    drop(nodes.drain(..));
    drop(api);
}
