//! End to end on a real kernel: the daemon binary, three fake apiservers in
//! network namespaces (TLS, /readyz, the EndpointSlice API), and clients
//! going through the VIP. Asserts states and order, never timings: waits are
//! generous upper bounds for an emulated VM.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use apiserver_proxy_testkit::apiserver::{FakeApiServer, kubernetes_slice};
use apiserver_proxy_testkit::kernel::{self, run};
use apiserver_proxy_testkit::netns::Netns;
use apiserver_proxy_testkit::tls::{Ca, CertKey};

const VIP: &str = "10.103.97.2:6443";
const PORT: u16 = 6443;

enum Cmd {
    Stop,
    Start,
    Ready(bool),
    Slice(Vec<(IpAddr, Option<bool>)>),
}

/// A fake apiserver on its own thread and runtime inside a namespace,
/// driven over a channel (its methods need that runtime).
struct Master {
    ns: Netns,
    tx: std_mpsc::Sender<Cmd>,
}

impl Master {
    fn start(leaf: CertKey) -> Master {
        let ns = Netns::new();
        let addr = SocketAddr::new(ns.ip(false), PORT);
        let (tx, rx) = std_mpsc::channel::<Cmd>();
        let (up_tx, up_rx) = std_mpsc::channel();
        ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = FakeApiServer::tls(addr, &leaf).await.expect("serve");
                up_tx.send(()).expect("up");
                loop {
                    let cmd = match rx.try_recv() {
                        Ok(c) => c,
                        Err(std_mpsc::TryRecvError::Empty) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Err(std_mpsc::TryRecvError::Disconnected) => return,
                    };
                    match cmd {
                        Cmd::Stop => server.stop(),
                        Cmd::Start => server.start().expect("restart"),
                        Cmd::Ready(r) => server.set_ready(r),
                        Cmd::Slice(eps) => {
                            server.apply_slice(kubernetes_slice("kubernetes", "IPv4", PORT, &eps))
                        }
                    }
                }
            });
        });
        up_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("fake apiserver up");
        Master { ns, tx }
    }

    fn endpoint(&self) -> String {
        format!("{}:{PORT}", self.ns.ipv4)
    }

    fn send(&self, c: Cmd) {
        self.tx.send(c).expect("master thread");
    }
}

/// Our service's destinations and weights, as `ipvsadm` sees them (empty
/// while the service does not exist).
fn ipvsadm_dests() -> Vec<(String, u32)> {
    let out = Command::new("ipvsadm")
        .args(["-Ln", "-t", VIP])
        .output()
        .expect("run ipvsadm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[0] == "->" && f[1] != "RemoteAddress:Port")
                .then(|| (f[1].to_string(), f[3].parse().unwrap_or(u32::MAX)))
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; kernel holds {:?}",
            ipvsadm_dests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn weights(want: &[(&Master, u32)]) -> impl FnMut() -> bool {
    let mut want: Vec<(String, u32)> = want.iter().map(|(m, w)| (m.endpoint(), *w)).collect();
    want.sort();
    move || {
        let mut have = ipvsadm_dests();
        have.sort();
        have == want
    }
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn spawn(args: &[String]) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_bcs-apiserver-proxy"))
            .args(args)
            .env("APISERVER_PROXY_LOG", "info")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the daemon");
        Daemon { child }
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    path.to_path_buf()
}

/// One request through the VIP, verified as a kubelet would (CA, name
/// `kubernetes`). True if it got an HTTP answer.
fn request(ca: &Path) -> bool {
    Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            "kubernetes:6443:10.103.97.2",
            "https://kubernetes:6443/version",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn discovers_fails_over_drains_repairs_and_survives_a_restart() {
    let _netns = kernel::enter();
    // Not "kubernetes": a CA named like its leaf looks self-signed to OpenSSL (curl).
    let ca = Ca::new("kubernetes-ca");
    let masters: Vec<Master> = (0..3)
        .map(|_| Master::start(ca.apiserver_cert(&[])))
        .collect();
    let ips: Vec<(IpAddr, Option<bool>)> = masters
        .iter()
        .map(|m| (m.ns.ip(false), Some(true)))
        .collect();
    for m in &masters {
        m.send(Cmd::Slice(ips.clone()));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write(&dir.path().join("ca.pem"), &ca.cert.cert_pem);
    let kubeconfig = write(
        &dir.path().join("kubeconfig"),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: test\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            masters[0].endpoint(),
            ca_file.display()
        ),
    );
    let state_dir = dir.path().join("state");
    let args: Vec<String> = [
        "--vs",
        VIP,
        "--rs",
        &masters[0].endpoint(),
        "--kubeconfig",
        kubeconfig.to_str().expect("utf8"),
        "--health-ca-file",
        ca_file.to_str().expect("utf8"),
        "--health-interval",
        "1s",
        "--health-timeout",
        "500ms",
        "--drain-timeout",
        "5s",
        "--state-dir",
        state_dir.to_str().expect("utf8"),
        "--metrics-addr",
        "127.0.0.1:18004",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut daemon = Daemon::spawn(&args);
    let (a, b, c) = (&masters[0], &masters[1], &masters[2]);
    let long = Duration::from_secs(90);

    // Seeded with one master, the daemon learns all three from the API.
    wait_for(
        "all three masters from the EndpointSlice",
        long,
        weights(&[(a, 1), (b, 1), (c, 1)]),
    );
    for _ in 0..6 {
        assert!(request(&ca_file), "a request through the VIP failed");
    }

    // Crash: b stops (its connections close, new ones are refused).
    b.send(Cmd::Stop);
    wait_for(
        "the crashed master to be removed",
        long,
        weights(&[(a, 1), (c, 1)]),
    );
    for _ in 0..6 {
        assert!(
            request(&ca_file),
            "a request failed after the crash was handled"
        );
    }

    // Back: b returns after its rise threshold.
    b.send(Cmd::Start);
    wait_for(
        "the master to come back",
        long,
        weights(&[(a, 1), (b, 1), (c, 1)]),
    );

    // Graceful: c's /readyz says 500: weight 0 at once, then deleted when idle.
    c.send(Cmd::Ready(false));
    wait_for(
        "the not-ready master to be drained and removed",
        long,
        weights(&[(a, 1), (b, 1)]),
    );
    for _ in 0..6 {
        assert!(request(&ca_file), "a request failed during the drain");
    }
    c.send(Cmd::Ready(true));
    wait_for(
        "the ready master to return",
        long,
        weights(&[(a, 1), (b, 1), (c, 1)]),
    );

    // Tampering: the whole table cleared, as kube-proxy's cleanup would.
    run("ipvsadm", &["-C"]);
    wait_for(
        "the table to be repaired",
        long,
        weights(&[(a, 1), (b, 1), (c, 1)]),
    );

    // SIGKILL: the rules stay while nothing runs; a new daemon keeps them.
    daemon.kill();
    assert_eq!(ipvsadm_dests().len(), 3, "rules must survive the daemon");
    for _ in 0..3 {
        assert!(
            request(&ca_file),
            "a request failed while the daemon was down"
        );
    }
    let _daemon = Daemon::spawn(&args);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let dests = ipvsadm_dests();
        assert!(
            dests.len() == 3 && dests.iter().all(|(_, w)| *w == 1),
            "the restarted daemon removed or drained a rule: {dests:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The state file that `apiserver-proxy-tools reload` restores at boot.
    let saved = std::fs::read_to_string(state_dir.join("state.json")).expect("state file");
    for m in &masters {
        assert!(saved.contains(&m.endpoint()), "{saved}");
    }
}
