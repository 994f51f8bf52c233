//! The outside control-plane VIP beside keepalived: three control-plane
//! nodes (network namespaces, each with its apiserver) on one LAN with the
//! client (the bench's namespace), and one more fake apiserver for the
//! cluster's API (the Lease, the EndpointSlices).
//!
//! What is measured, the same way for both tools: from the moment the
//! holder is killed (SIGKILL of the daemon, or of keepalived) or powered
//! off (its LAN link down and its process killed), how long until another
//! node answers the client on the VIP (a TCP server on every node that
//! says its name, asked every 10 ms); and, with the holder cut off from
//! the others (every IP packet of its namespace dropped, its link and ARP
//! still up), the moments two nodes held the VIP (the address on both
//! interfaces, sampled continuously).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apiserver_proxy_testkit::master::Master;
use apiserver_proxy_testkit::netns::{AddressReferee, Lan, Netns, holds_address};

use crate::results::ControlPlane;
use crate::util::{self, Env};

const VIP: &str = "192.168.60.100";
/// The port every node's name server listens on (on all addresses, so on
/// the VIP where the node holds it).
const WHO_PORT: u16 = 16443;
const API_PORT: u16 = 17443;
const NODES: usize = 3;
/// A partition trial lasts this long: well past both tools' takeover.
const PARTITION: Duration = Duration::from_secs(6);
/// Longest a takeover is waited for before the trial counts as failed.
const CAP: Duration = Duration::from_secs(30);

struct Node {
    name: String,
    master: Master,
    process: Option<Child>,
}

impl Node {
    fn ns(&self) -> &Netns {
        self.master.ns()
    }

    fn holds(&self) -> bool {
        holds(self.ns().name())
    }

    /// SIGKILL to the whole process group: keepalived's VRRP child would
    /// otherwise be told of its parent's death (PR_SET_PDEATHSIG) and stop
    /// gracefully, sending the priority-0 advertisement that hands over at
    /// once, which is a clean stop, not a crash.
    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let group = format!("-{}", p.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn holds(ns: &str) -> bool {
    holds_address(ns, "eth1", VIP)
}

/// Which node answers on the VIP now, if one does within 100 ms.
fn who() -> Option<String> {
    let addr: SocketAddr = format!("{VIP}:{WHO_PORT}").parse().ok()?;
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    c.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    let mut name = String::new();
    c.read_to_string(&mut name).ok()?;
    (!name.is_empty()).then_some(name)
}

/// Seconds from `from` until a node other than `old` answers on the VIP.
fn until_another_answers(old: &str, from: Instant) -> Option<f64> {
    while from.elapsed() < CAP {
        if who().is_some_and(|n| n != old) {
            return Some(from.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Waits until exactly one node holds the VIP and answers on it; its index.
fn settled(nodes: &[Node]) -> Result<usize> {
    let start = Instant::now();
    while start.elapsed() < CAP {
        let holding: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].holds()).collect();
        if let ([h], Some(name)) = (holding.as_slice(), who())
            && nodes[*h].name == name
        {
            return Ok(*h);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no single node held and answered on the VIP within {CAP:?}")
}

/// Which tool holds the VIP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ours,
    Keepalived,
}

struct Lab<'a> {
    env: &'a Env,
    nodes: Vec<Node>,
    _api: Master,
    _lan: Lan,
}

impl Lab<'_> {
    fn start_process(&mut self, i: usize, tool: Tool) -> Result<()> {
        let env = self.env;
        let node = &mut self.nodes[i];
        node.kill();
        let ns = node.ns().name().to_string();
        let child = match tool {
            Tool::Ours => {
                let kubeconfig = env.path(&format!("cp-kubeconfig-{i}"));
                let api = format!("{}:{API_PORT}", node.ns().peer_ipv4);
                util::kubeconfig(&kubeconfig, &api, &env.ca_file)?;
                let log = std::fs::File::create(env.path(&format!("cp-daemon-{i}.log")))?;
                Command::new("ip")
                    .args(["netns", "exec", &ns])
                    .arg(&env.daemon)
                    .args(["--vs", "10.103.97.9:6443", "--rs", &node.master.endpoint()])
                    .args(["--vip-mode", "route"])
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .arg("--health-ca-file")
                    .arg(&env.ca_file)
                    .arg("--state-dir")
                    .arg(env.path(&format!("cp-state-{i}")))
                    .args(["--metrics-addr", "127.0.0.1:18200"])
                    .args(["--control-plane-vip", &format!("{VIP}:6443")])
                    .args(["--control-plane-interface", "eth1"])
                    .args(["--control-plane-apiserver", &api])
                    .args(["--control-plane-identity", &node.name])
                    .args(["--log-format", "json"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .process_group(0)
                    .spawn()
                    .context("start our daemon")?
            }
            Tool::Keepalived => {
                // Debian's defaults: VRRP, one advertisement a second; all
                // nodes start as backups of equal priority without
                // preemption, as a control plane's keepalived is usually
                // set up (the seed documents' 001 and 002).
                let conf = env.path(&format!("keepalived-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "global_defs {{\n  router_id {}\n  enable_script_security\n}}\n\
                         vrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth1\n  \
                         virtual_router_id 51\n  priority 100\n  advert_int 1\n  \
                         virtual_ipaddress {{\n    {VIP}/32\n  }}\n}}\n",
                        node.name
                    ),
                )?;
                let pid = |what: &str| env.path(&format!("keepalived-{i}-{what}.pid"));
                Command::new("ip")
                    .args(["netns", "exec", &ns, "keepalived", "--dont-fork", "--vrrp"])
                    .arg("--use-file")
                    .arg(&conf)
                    .arg("--pid")
                    .arg(pid("main"))
                    .arg("--vrrp_pid")
                    .arg(pid("vrrp"))
                    .arg("--checkers_pid")
                    .arg(pid("checkers"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()
                    .context("start keepalived (Debian's package keepalived)")?
            }
        };
        self.nodes[i].process = Some(child);
        Ok(())
    }

    /// A killed holder's address, which keepalived never removes (and ours
    /// lets expire), is removed before its node starts again.
    fn clear_vip(&self, i: usize) {
        let _ = self.nodes[i]
            .ns()
            .exec("ip", &["addr", "del", &format!("{VIP}/32"), "dev", "eth1"]);
    }

    fn kill_trials(&mut self, tool: Tool, power_off: bool, n: usize) -> Result<(Vec<f64>, usize)> {
        let mut times = Vec::new();
        let mut failed = 0;
        for _ in 0..n {
            let h = settled(&self.nodes)?;
            let old = self.nodes[h].name.clone();
            let t0 = Instant::now();
            if power_off {
                let _ = self.nodes[h]
                    .ns()
                    .exec("ip", &["link", "set", "eth1", "down"]);
            }
            self.nodes[h].kill();
            match until_another_answers(&old, t0) {
                Some(t) => times.push(t),
                None => failed += 1,
            }
            if power_off {
                let _ = self.nodes[h]
                    .ns()
                    .exec("ip", &["link", "set", "eth1", "up"]);
            }
            if tool == Tool::Keepalived || power_off {
                self.clear_vip(h);
            }
            // Back, as a candidate: its address (ours) has expired by now,
            // and our daemon removes a leftover one at start anyway.
            std::thread::sleep(Duration::from_millis(1500));
            self.start_process(h, tool)?;
        }
        Ok((times, failed))
    }

    fn partition_trials(&mut self, n: usize) -> Result<(usize, usize)> {
        let mut overlaps = 0;
        let mut trials = 0;
        for _ in 0..n {
            let h = settled(&self.nodes)?;
            let referee = AddressReferee::start(
                self.nodes
                    .iter()
                    .map(|n| n.ns().name().to_string())
                    .collect(),
                "eth1",
                VIP,
            );
            self.nodes[h].ns().black_hole();
            std::thread::sleep(PARTITION);
            self.nodes[h].ns().restore();
            std::thread::sleep(Duration::from_secs(2));
            overlaps += referee.finish();
            trials += 1;
        }
        Ok((overlaps, trials))
    }
}

fn who_server(ns: &Netns, name: String) {
    let _ = ns.spawn(move || {
        let Ok(l) = TcpListener::bind(("0.0.0.0", WHO_PORT)) else {
            return;
        };
        for mut c in l.incoming().flatten() {
            use std::io::Write;
            let _ = c.write_all(name.as_bytes());
        }
    });
}

pub fn run(env: &Env) -> Result<ControlPlane> {
    let trials = if env.quick { 3 } else { env.trials.min(10) };
    let api = Master::local(
        env.ca.apiserver_cert(&[]),
        format!("0.0.0.0:{API_PORT}").parse()?,
    );
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("forwarding")?;
    let lan = Lan::new("192.168.60.1/24");
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let master = Master::remote(env.ca.apiserver_cert(&[]), false, 6443);
        master
            .ns()
            .join_lan(&lan, &format!("192.168.60.1{}/24", i + 1));
        let name = format!("cp-{}", i + 1);
        who_server(master.ns(), name.clone());
        nodes.push(Node {
            name,
            master,
            process: None,
        });
    }
    let listed: Vec<_> = nodes
        .iter()
        .map(|n| (n.master.addr().ip(), Some(true)))
        .collect();
    api.publish_port(6443, listed.clone());
    for n in &nodes {
        n.master.publish(listed.clone());
        n.ns()
            .exec_ok("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    }
    let mut lab = Lab {
        env,
        nodes,
        _api: api,
        _lan: lan,
    };
    let mut out = ControlPlane {
        trials,
        partition_s: PARTITION.as_secs_f64(),
        ..ControlPlane::default()
    };

    for i in 0..NODES {
        lab.start_process(i, Tool::Ours)?;
    }
    let (t, f) = lab.kill_trials(Tool::Ours, false, trials)?;
    out.ours_killed_s = t;
    out.ours_killed_failed = f;
    let (t, f) = lab.kill_trials(Tool::Ours, true, trials)?;
    out.ours_powered_off_s = t;
    out.ours_powered_off_failed = f;
    let (o, n) = lab.partition_trials(trials.min(5))?;
    out.ours_partition_overlaps = o;
    out.partition_trials = n;
    for i in 0..NODES {
        lab.nodes[i].kill();
        lab.clear_vip(i);
    }

    if Command::new("keepalived").arg("--version").output().is_ok() {
        for i in 0..NODES {
            lab.start_process(i, Tool::Keepalived)?;
        }
        let (t, f) = lab.kill_trials(Tool::Keepalived, false, trials)?;
        out.keepalived_killed_s = t;
        out.keepalived_killed_failed = f;
        let (o, _) = lab.partition_trials(trials.min(5))?;
        out.keepalived_partition_overlaps = Some(o);
        for i in 0..NODES {
            lab.nodes[i].kill();
            lab.clear_vip(i);
        }
    } else {
        println!(
            "bench: keepalived is not installed: the control-plane section has no keepalived figures"
        );
    }
    Ok(out)
}
