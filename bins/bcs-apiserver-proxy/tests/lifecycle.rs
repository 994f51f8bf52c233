//! The node's life on a real kernel: first install, reboot, daemon upgrade
//! and downgrade, migration from the Go version, masters changing, kube-proxy's
//! cleanup and other tampering, every apiserver down, and uninstall.
//!
//! Each event is a test in its own network namespace, with the daemon and the
//! CLI as shipped (this package's binary and `apiserver-proxy-tools` built
//! beside it), fake apiservers with TLS in namespaces of their own, and
//! throughout:
//! - a client opening a new TLS connection through the VIP every 100 ms
//!   (`traffic::Prober`), counting failures and the longest outage;
//! - an idle long-lived watch through the VIP (`traffic::IdleWatch`) that
//!   must end up served by a live apiserver.
//!
//! The tests assert rules, final states and "no failed request" where the
//! product promises it; they never assert a timing. The figures go to
//! `docs/lifecycle.md` through `figures::Report` (see docs/testing.md).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver_proxy_testkit::figures::{self, Report, Row};
use apiserver_proxy_testkit::kernel::{self, run};
use apiserver_proxy_testkit::master::Master;
use apiserver_proxy_testkit::tls::Ca;
use apiserver_proxy_testkit::traffic::{IdleWatch, Prober};

const VIP: &str = "10.103.97.2:6443";
const VIP_IP: &str = "10.103.97.2";
const PORT: u16 = 6443;
const TOOL: &str = "/usr/local/bin/apiserver-proxy-tools";
const UNIT: &str = "root/etc/systemd/system/apiserver-proxy-reload.service";
const METRICS: u16 = 18100;
/// A generous bound for anything the daemon or the kernel should do: the VM
/// is emulated and shared by the tests running beside each other.
const LONG: Duration = Duration::from_secs(90);

fn vip() -> SocketAddr {
    VIP.parse().expect("VIP")
}

/// The daemon under test.
fn daemon_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bcs-apiserver-proxy"))
}

/// The CLI under test: `APISERVER_PROXY_TOOLS_BIN`, else the one cargo built
/// beside the daemon (a workspace build, as `cargo xtask test` does).
fn tools_bin() -> PathBuf {
    let path = std::env::var_os("APISERVER_PROXY_TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| daemon_bin().with_file_name("apiserver-proxy-tools"));
    assert!(
        path.is_file(),
        "the CLI {} is not built: run this suite with `cargo xtask vm-test lifecycle` \
         (a workspace build), or set APISERVER_PROXY_TOOLS_BIN",
        path.display()
    );
    path
}

/// The previous release's daemon and CLI, built by the xtask from the last
/// release's commit (see xtask/src/lifecycle.rs).
fn previous_release() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("APISERVER_PROXY_PREV_BIN_DIR").map(PathBuf::from);
    let Some(dir) = dir else {
        panic!(
            "APISERVER_PROXY_PREV_BIN_DIR is not set: the upgrade test needs the previous \
             release's binaries, which `cargo xtask test`, `cargo xtask lifecycle` and \
             `cargo xtask vm-test` build and pass"
        );
    };
    let pair = (
        dir.join("bcs-apiserver-proxy"),
        dir.join("apiserver-proxy-tools"),
    );
    for p in [&pair.0, &pair.1] {
        assert!(
            p.is_file(),
            "the previous release's {} is missing",
            p.display()
        );
    }
    pair
}

/// `n` fake apiservers, each on a host (namespace) of its own.
fn masters(ca: &Ca, n: usize) -> Vec<Master> {
    (0..n)
        .map(|_| Master::remote(ca.apiserver_cert(&[]), false, PORT))
        .collect()
}

/// Publishes `default/kubernetes` listing `listed` (ready) on every master
/// in `all`: they serve one cluster, and their resource versions move
/// together.
fn publish(all: &[Master], listed: &[&Master]) {
    let eps: Vec<(IpAddr, Option<bool>)> =
        listed.iter().map(|m| (m.addr().ip(), Some(true))).collect();
    for m in all {
        m.publish(eps.clone());
    }
}

/// Our service's destinations and weights, sorted.
fn dests() -> Vec<(String, u32)> {
    let mut d = kernel::ipvsadm_dests(VIP);
    d.sort();
    d
}

/// Each master at weight 1, sorted as [`dests`].
fn in_rotation(ms: &[&Master]) -> Vec<(String, u32)> {
    let mut want: Vec<(String, u32)> = ms.iter().map(|m| (m.endpoint(), 1)).collect();
    want.sort();
    want
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; the kernel holds:\n{}{}",
            run("ipvsadm", &["-Ln"]),
            run("ip", &["-o", "addr"])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Polls `ok` every 10 ms for at most `limit`: how long it took, or None.
fn measure(limit: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if ok() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn interface_exists() -> bool {
    succeeds("ip", &["link", "show", "dev", "apiproxy0"])
}

fn interface_up() -> bool {
    Command::new("ip")
        .args(["-o", "link", "show", "dev", "apiproxy0"])
        .output()
        .is_ok_and(|o| {
            let t = String::from_utf8_lossy(&o.stdout).to_string();
            o.status.success()
                && t.contains("<")
                && t.split('>')
                    .next()
                    .is_some_and(|f| f.contains(",UP") || f.contains("<UP"))
        })
}

fn vip_on_interface() -> bool {
    Command::new("ip")
        .args(["-o", "addr", "show", "dev", "apiproxy0"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP_IP}/32")))
}

/// The kernel routes the VIP to this host (the `local` table entry the
/// address brings).
fn vip_routed_locally() -> bool {
    Command::new("ip")
        .args(["route", "get", VIP_IP])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("local "))
}

/// A node: its state, Go and boot folders in a temporary folder, the
/// cluster CA, and the kubeconfig the daemon watches the cluster with.
struct Node {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    kubeconfig: PathBuf,
    daemons: usize,
    /// The test's name, for its daemons' log files.
    test: String,
}

impl Node {
    /// A node whose boot root has systemd's unit folder (`systemd`) or not
    /// (rc.local), with the daemon's kubeconfig pointing at `api`.
    fn new(ca: &Ca, api: &str, systemd: bool) -> Node {
        Node::with_tool(ca, api, systemd, &tools_bin())
    }

    /// As [`Node::new`], the boot restore running `tool`.
    fn with_tool(ca: &Ca, api: &str, systemd: bool, tool: &Path) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.cert.cert_pem).expect("write CA");
        let root = dir.path().join("root");
        let etc = if systemd { "etc/systemd/system" } else { "etc" };
        std::fs::create_dir_all(root.join(etc)).expect("mkdir");
        // The test certificates name `kubernetes`, not the masters' IPs, as
        // a kubelet.conf through a name would; the kubeconfig says so.
        // The installed tool is the build, linked: `init` finds itself there
        // and copies nothing (a debug build is large; the VM's disk is RAM).
        let installed = root.join(TOOL.trim_start_matches('/'));
        std::fs::create_dir_all(installed.parent().expect("parent")).expect("mkdir");
        symlink(tool, &installed).expect("symlink");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{api}\n    tls-server-name: kubernetes\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: test\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
                ca_file.display()
            ),
        )
        .expect("kubeconfig");
        let test = std::thread::current()
            .name()
            .unwrap_or("lifecycle")
            .rsplit("::")
            .next()
            .unwrap_or("lifecycle")
            .to_string();
        Node {
            dir,
            ca_file,
            kubeconfig,
            daemons: 0,
            test,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    fn s(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    /// Runs a CLI (`program`) with the boot root below this node.
    fn run_cli(&self, program: &Path, args: &[String]) -> Output {
        Command::new(program)
            .args(args)
            .env_remove("APISERVER_PROXY_STATE_DIR")
            .env_remove("APISERVER_PROXY_INTERFACE")
            .env("APISERVER_PROXY_TOOLS_ROOT", self.path("root"))
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    }

    /// Runs the CLI under test with `line`, plus this node's state and Go
    /// folders and CA unless `line` names them; panics unless it succeeds.
    fn cli(&self, line: &str) -> String {
        self.cli_with(&tools_bin(), line)
    }

    fn cli_with(&self, program: &Path, line: &str) -> String {
        let mut args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if !line.contains("tate-dir") && !line.contains("ersistDir") {
            args.extend(["--state-dir".into(), self.s("state")]);
        }
        if !line.contains("ersist") {
            args.extend(["--persist-dir".into(), self.s("go")]);
        }
        if !line.contains("-health-ca-file") {
            args.extend(["--health-ca-file".into(), self.s("ca.pem")]);
        }
        let out = self.run_cli(program, &args);
        assert!(
            out.status.success(),
            "`{} {}` failed ({}):\n{}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the boot-time restore runs: the unit's ExecStart, else the
    /// rc.local line(s) that run the tool.
    fn boot_lines(&self) -> Vec<String> {
        if let Ok(text) = std::fs::read_to_string(self.path(UNIT)) {
            return text
                .lines()
                .filter_map(|l| l.strip_prefix("ExecStart="))
                .map(str::to_string)
                .collect();
        }
        let rc = std::fs::read_to_string(self.path("root/etc/rc.local")).unwrap_or_default();
        rc.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains("apiserver-proxy-tools"))
            .map(|l| l.trim_end_matches("|| true").trim().to_string())
            .collect()
    }

    /// Boots: runs every restore line, with the tool found below the boot
    /// root. Their outputs, joined.
    fn boot(&self) -> (bool, String) {
        let lines = self.boot_lines();
        assert!(!lines.is_empty(), "no boot-time restore is installed");
        let mut all_ok = true;
        let mut text = String::new();
        for line in lines {
            let mut words = line.split_whitespace();
            let tool = words.next().expect("a program");
            assert_eq!(tool, TOOL, "the restore does not run {TOOL}: {line}");
            let program = self.path("root").join(TOOL.trim_start_matches('/'));
            let args: Vec<String> = words.map(str::to_string).collect();
            let out = self.run_cli(&program, &args);
            all_ok &= out.status.success();
            text.push_str(&format!(
                "$ {line}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        (all_ok, text)
    }

    /// The daemon's flags for this node: no seeds (the cluster says), short
    /// probe intervals.
    fn daemon_args(&self) -> Vec<String> {
        [
            "--vs",
            VIP,
            "--kubeconfig",
            &self.kubeconfig.to_string_lossy(),
            "--health-ca-file",
            &self.ca_file.to_string_lossy(),
            "--health-interval",
            "3s",
            "--health-timeout",
            "2s",
            "--drain-timeout",
            "5s",
            "--state-dir",
            &self.s("state"),
            "--metrics-addr",
            &format!("127.0.0.1:{METRICS}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts a daemon. Its log goes to the figures' folder when there is
    /// one (the VM's results, kept after the run), else to the node's.
    fn daemon(&mut self, program: &Path, args: &[String]) -> Daemon {
        self.daemons += 1;
        let name = format!("daemon-{}.log", self.daemons);
        let log = match std::env::var_os(figures::OUT_ENV) {
            Some(out) => {
                let dir = PathBuf::from(out).join("logs").join(&self.test);
                std::fs::create_dir_all(&dir).expect("log folder");
                dir.join(name)
            }
            None => self.path(&name),
        };
        Daemon::spawn(program, args, log)
    }
}

/// A daemon process, its log in a file (to count its kernel changes).
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(program: &Path, args: &[String], log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).expect("daemon log");
        let child = Command::new(program)
            .args(args)
            .env("APISERVER_PROXY_LOG", "info")
            .env_remove("APISERVER_PROXY_STATE_DIR")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Daemon { child, log }
    }

    /// Waits until `/readyz` says ready (the kernel matches its desired state).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.log_text());
            }
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "2"])
                .arg(format!("http://127.0.0.1:{METRICS}/readyz"))
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < LONG,
                "the daemon never became ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until its backend set comes from the cluster's EndpointSlice
    /// (not the seeds or the kernel): what it then keeps or changes is the
    /// cluster's word.
    fn wait_cluster(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.log_text());
            }
            let metrics = Command::new("curl")
                .args(["-s", "--max-time", "2"])
                .arg(format!("http://127.0.0.1:{METRICS}/metrics"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if metrics.lines().any(|l| {
                l.starts_with("apiserver_proxy_discovery_source{")
                    && l.contains("source=\"cluster\"")
                    && l.contains(&format!("vs=\"{VIP}\""))
                    && l.trim_end().ends_with(" 1")
            }) {
                return;
            }
            assert!(
                start.elapsed() < LONG,
                "the daemon never got its backends from the cluster:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, as kubelet stops a pod; waits for the exit.
    fn term(&mut self) -> std::process::ExitStatus {
        run("kill", &["-TERM", &self.child.id().to_string()]);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to `limit`) for the process to exit on its own.
    fn exits_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The IPVS operations it logged (`kernel change` lines).
    fn kernel_changes(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("kernel change"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Watches our service's rules on a thread and keeps every state that
/// differs from `expected`: a rule removed and put back between two polls
/// of a test would otherwise go unseen.
/// Destinations and weights of our service, as [`dests`] returns them.
type Rules = Vec<(String, u32)>;

struct RuleGuard {
    seen: Arc<Mutex<Vec<Rules>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RuleGuard {
    fn start(expected: Rules) -> RuleGuard {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let now = dests();
                if now != expected {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    if log.last() != Some(&now) {
                        log.push(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RuleGuard {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every differing state seen.
    fn finish(mut self) -> Vec<Rules> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.clone()
    }
}

/// The node's clients: the prober and the idle watch.
struct Clients {
    prober: Prober,
    /// None while the node is down for a reboot: kubelet restarts with it.
    watch: Option<IdleWatch>,
}

impl Clients {
    fn start(ca: &Ca) -> Clients {
        let prober = Prober::start(vip(), ca);
        let watch = Some(IdleWatch::open(vip(), ca, LONG));
        Clients { prober, watch }
    }

    /// The node goes down: its idle connection with it (a rebooted node's
    /// kubelet opens new ones). The prober stands for the clients that
    /// keep trying.
    fn reboot(&mut self) {
        self.watch = None;
    }

    /// kubelet is back after a reboot: a new idle watch.
    fn reopen_watch(&mut self, ca: &Ca) {
        self.watch = Some(IdleWatch::open(vip(), ca, LONG));
    }

    /// Ends a phase begun at `from`: proves the idle watch is served by a
    /// live apiserver (a change to the watched slice, published to `all`
    /// listing `listed`, must reach it), then a row of what both saw.
    fn phase(
        &self,
        from: Instant,
        name: &str,
        promised: bool,
        all: &[Master],
        listed: &[&Master],
    ) -> Row {
        self.prober.wait_attempts(from, 10, Duration::from_secs(60));
        let poke = Instant::now();
        publish(all, listed);
        let idle = self.watch.as_ref().map(|w| {
            // Generous: a live connection gets the event in milliseconds,
            // and a cut one reconnects within 100 ms.
            let served = w.wait_served(poke.max(from), Duration::from_secs(30));
            if served.served_after.is_some() {
                w.since(from)
            } else {
                served
            }
        });
        Row::new(name, self.prober.since(from), promised, idle)
    }
}

/// Asserts what a row promises: no failed request, and the idle watch
/// served.
fn assert_row(row: &Row) {
    assert!(
        !row.idle.contains("NOT"),
        "{}: the idle connection was not served by a live apiserver",
        row.phase
    );
    if row.zero_failures_promised {
        assert_eq!(
            row.failed, 0,
            "{}: {} of {} new connections through the VIP failed",
            row.phase, row.failed, row.requests
        );
    }
}

fn init_line(ms: &[&Master]) -> String {
    // A generous probe timeout: eleven events start side by side in the
    // emulated VM, and a TLS handshake to a fake apiserver then took over
    // the default 2 s, leaving two of three backends out of `init`.
    format!("{} --health-timeout 15s", previous_init_line(ms))
}

/// `init_line` as the previous release's CLI takes it (it has no
/// `--health-timeout`).
fn previous_init_line(ms: &[&Master]) -> String {
    let rs: Vec<String> = ms
        .iter()
        .map(|m| format!("--rs {}", m.endpoint()))
        .collect();
    format!("init --vs {VIP} {}", rs.join(" "))
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_1_first_install_then_the_daemon_takes_over() {
    let _netns = kernel::enter();
    let mut report = Report::new(
        1,
        "First install",
        "lifecycle_1_first_install_then_the_daemon_takes_over",
    );
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    let mut node = Node::new(&ca, &all[0].endpoint(), true);

    let out = node.cli(&init_line(&three));
    assert!(out.contains("apiserver-proxy-reload.service"), "{out}");
    assert_eq!(dests(), in_rotation(&three));
    assert!(vip_on_interface());

    let t = Instant::now();
    let clients = Clients::start(&ca);
    let row = clients.phase(t, "after `init`, before the daemon", true, &all, &three);
    report.add(row.clone());
    assert_row(&row);

    let before = dests();
    let guard = RuleGuard::start(before.clone());
    let t = Instant::now();
    let mut daemon = node.daemon(&daemon_bin(), &node.daemon_args());
    daemon.wait_ready();
    daemon.wait_cluster();
    // Some probe rounds of the running daemon, not only its first pass.
    std::thread::sleep(Duration::from_secs(5));
    let changed = guard.finish();
    let row = clients
        .phase(
            t,
            "the daemon starts on init's state folder",
            true,
            &all,
            &three,
        )
        .repair(format!(
            "{} rule change(s) observed, {} kernel change(s) logged",
            changed.len(),
            daemon.kernel_changes().len()
        ));
    report.add(row.clone());
    assert_row(&row);
    assert!(
        changed.is_empty(),
        "the daemon changed rules that were right: {changed:?}"
    );
    assert!(
        daemon.kernel_changes().is_empty(),
        "the daemon issued IPVS changes on a right kernel:\n{}",
        daemon.kernel_changes().join("\n")
    );
    assert_eq!(dests(), before);
}

/// A reboot in the test's namespace: no virtual server, no interface, no
/// VIP, no route.
fn wipe_kernel() {
    run("ipvsadm", &["-C"]);
    if interface_exists() {
        run("ip", &["link", "del", "apiproxy0"]);
    }
    assert!(dests().is_empty() && !interface_exists() && !vip_routed_locally());
}

/// Reboot with the apiservers in `up` answering (the others stopped), then
/// they all come back, then the daemon starts.
fn reboot_case(test: &str, title: &str, up: usize) {
    let _netns = kernel::enter();
    let mut report = Report::new(2, title, test);
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    let mut node = Node::new(&ca, &all[0].endpoint(), true);
    node.cli(&init_line(&three));
    let mut clients = Clients::start(&ca);

    for m in &all[up..] {
        m.stop();
    }
    let t = Instant::now();
    clients.reboot();
    wipe_kernel();
    let (ok, out) = node.boot();
    let restored = Instant::now();
    assert!(ok, "the boot-time restore failed:\n{out}");
    assert_eq!(
        dests(),
        in_rotation(&three),
        "the restore must bring back every saved backend, answering or not:\n{out}"
    );
    assert!(vip_on_interface() && vip_routed_locally(), "{out}");
    let live: Vec<&Master> = all[..up].iter().collect();
    let back = if up > 0 {
        clients.prober.wait_success(restored, LONG)
    } else {
        None
    };
    let row = Row::new(
        &format!("reboot, boot unit restores with {up} of 3 apiservers up"),
        clients.prober.since(t),
        false,
        None,
    )
    .repair(format!(
        "restored by the boot unit in {:.2} s (wipe to rules){}",
        (restored - t).as_secs_f64(),
        back.map_or(String::new(), |d| format!(
            "; VIP answered {:.2} s after the restore",
            d.as_secs_f64()
        ))
    ));
    report.add(row);
    if up > 0 {
        assert!(
            back.is_some(),
            "the VIP never answered with an apiserver up"
        );
    }
    let _ = live;

    let t = Instant::now();
    for m in &all[up..] {
        m.start();
    }
    clients.reopen_watch(&ca);
    let row = clients.phase(t, "the other apiservers come back", false, &all, &three);
    report.add(row.clone());
    assert_row(&row);

    let guard = RuleGuard::start(dests());
    let t = Instant::now();
    let mut daemon = node.daemon(&daemon_bin(), &node.daemon_args());
    daemon.wait_ready();
    daemon.wait_cluster();
    std::thread::sleep(Duration::from_secs(3));
    let changed = guard.finish();
    let row = clients
        .phase(t, "the daemon starts", true, &all, &three)
        .repair(format!("{} rule change(s)", changed.len()));
    report.add(row.clone());
    assert_row(&row);
    assert!(
        changed.is_empty(),
        "the daemon changed right rules: {changed:?}"
    );
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_2a_reboot_with_every_apiserver_down() {
    reboot_case(
        "lifecycle_2a_reboot_with_every_apiserver_down",
        "Reboot, every apiserver down",
        0,
    );
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_2b_reboot_with_one_apiserver_up() {
    reboot_case(
        "lifecycle_2b_reboot_with_one_apiserver_up",
        "Reboot, one apiserver up",
        1,
    );
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_2c_reboot_after_the_daemon_ran_with_unusable_discovery() {
    let test = "lifecycle_2c_reboot_after_the_daemon_ran_with_unusable_discovery";
    let _netns = kernel::enter();
    let mut report = Report::new(
        2,
        "Reboot after the daemon ran with an unusable discovery",
        test,
    );
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    // The cluster refuses: a port where nothing listens on a live host. No
    // seeds: the chart's default.
    let refusing = SocketAddr::new(all[0].addr().ip(), PORT + 1).to_string();
    let mut node = Node::new(&ca, &refusing, true);
    node.cli(&init_line(&three));
    let mut clients = Clients::start(&ca);

    let t = Instant::now();
    let mut daemon = node.daemon(&daemon_bin(), &node.daemon_args());
    // Long enough for several passes and state writes.
    std::thread::sleep(Duration::from_secs(10));
    let status = daemon.term();
    let row = clients.phase(
        t,
        "the daemon runs 10 s, never learning a backend",
        true,
        &all,
        &three,
    );
    report.add(row.clone());
    let saved = std::fs::read_to_string(node.state_dir().join("state.json")).unwrap_or_default();
    assert_row(&row);
    assert!(status.success(), "SIGTERM: {status}\n{}", daemon.log_text());

    let t = Instant::now();
    clients.reboot();
    wipe_kernel();
    let (ok, out) = node.boot();
    let restored = dests();
    let row = Row::new(
        "reboot: the boot unit restores",
        clients.prober.since(t),
        false,
        None,
    )
    .repair(format!(
        "{} of 3 backends restored; reload said: {}",
        restored.len(),
        out.lines()
            .filter(|l| !l.starts_with('$'))
            .collect::<Vec<_>>()
            .join(" / ")
    ));
    report.add(row);
    assert!(
        ok && restored == in_rotation(&three),
        "after a daemon that never learned a backend, the boot restore must bring back the \
         backends init saved.\nstate.json the daemon left:\n{saved}\nreload:\n{out}\nkernel: {restored:?}"
    );
    assert!(
        out.contains("state.json") || out.contains("backends.json") || out.contains("cache"),
        "reload must say which source it restored from:\n{out}"
    );

    // Then the daemon starts (discovery now works): nothing to change.
    let mut node2 = Node::new(&ca, &all[0].endpoint(), true);
    node2.daemons = node.daemons;
    let mut args = node.daemon_args();
    let i = args.iter().position(|a| a == "--kubeconfig").expect("flag");
    args[i + 1] = node2.kubeconfig.to_string_lossy().into_owned();
    clients.reopen_watch(&ca);
    let t = Instant::now();
    let mut daemon = node2.daemon(&daemon_bin(), &args);
    daemon.wait_ready();
    daemon.wait_cluster();
    let row = clients.phase(t, "the daemon starts", true, &all, &three);
    report.add(row.clone());
    assert_row(&row);
    assert_eq!(dests(), in_rotation(&three));
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_3_daemon_upgrade_downgrade_and_a_failed_upgrade() {
    let test = "lifecycle_3_daemon_upgrade_downgrade_and_a_failed_upgrade";
    let _netns = kernel::enter();
    let mut report = Report::new(3, "Daemon upgrade and downgrade", test);
    let (old_daemon, old_cli) = previous_release();
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    // A node set up by the previous release: its CLI's init, its daemon.
    let mut node = Node::with_tool(&ca, &all[0].endpoint(), true, &old_cli);
    node.cli_with(&old_cli, &previous_init_line(&three));
    let mut old = node.daemon(&old_daemon, &node.daemon_args());
    old.wait_ready();
    old.wait_cluster();
    let mut clients = Clients::start(&ca);
    let rules = in_rotation(&three);
    assert_eq!(dests(), rules);

    let mut swap = |node: &mut Node, name: &str, from: &mut Daemon, to: &Path, args: &[String]| {
        let guard = RuleGuard::start(rules.clone());
        let t = Instant::now();
        let status = from.term();
        let mut next = node.daemon(to, args);
        next.wait_ready();
        next.wait_cluster();
        std::thread::sleep(Duration::from_secs(3));
        let changed = guard.finish();
        let row = clients
            .phase(t, name, true, &all, &three)
            .repair(format!(
                "SIGTERM exit {status}; {} rule change(s), {} kernel change(s) logged by the new daemon",
                changed.len(),
                next.kernel_changes().len()
            ));
        report.add(row.clone());
        assert_row(&row);
        assert!(changed.is_empty(), "{name}: the rules changed: {changed:?}");
        assert_eq!(dests(), rules, "{name}");
        next
    };
    let args = node.daemon_args();
    let mut new = swap(
        &mut node,
        "upgrade: previous -> new (SIGTERM)",
        &mut old,
        &daemon_bin(),
        &args,
    );
    let mut old = swap(
        &mut node,
        "downgrade: new -> previous (SIGTERM)",
        &mut new,
        &old_daemon,
        &args,
    );

    // An upgrade whose new binary cannot start: a bad config file.
    let bad = node.path("bad.yaml");
    std::fs::write(&bad, "virtualServers: [{vip: \"not-an-address\"}]\n").expect("write");
    let guard = RuleGuard::start(rules.clone());
    let t = Instant::now();
    old.term();
    let mut broken = node.daemon(
        &daemon_bin(),
        &["--config".into(), bad.to_string_lossy().into_owned()],
    );
    let exit = broken.exits_within(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let changed = guard.finish();
    let row = clients
        .phase(
            t,
            "failed upgrade: the new binary refuses its config",
            true,
            &all,
            &three,
        )
        .repair(format!(
            "new daemon exit {}; {} rule change(s)",
            exit.map_or("none (still running)".into(), |s| s.to_string()),
            changed.len()
        ));
    report.add(row.clone());
    assert_row(&row);
    assert!(
        exit.is_some_and(|s| !s.success()),
        "the daemon with a bad config must exit non-zero:\n{}",
        broken.log_text()
    );
    assert!(changed.is_empty(), "the rules changed: {changed:?}");
    assert_eq!(dests(), rules);

    // The reboot after the upgrade: the new CLI restores what the previous
    // release saved.
    let t = Instant::now();
    clients.reboot();
    wipe_kernel();
    let program = tools_bin();
    let (state, go) = (node.s("state"), node.s("go"));
    let out = node.run_cli(
        &program,
        &[
            "reload".into(),
            "--state-dir".into(),
            state,
            "--persist-dir".into(),
            go,
        ],
    );
    let row = Row::new(
        "reboot after the upgrade: the new CLI restores the old state",
        clients.prober.since(t),
        false,
        None,
    );
    report.add(row);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dests(), rules);
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_4_migration_from_the_go_version_then_a_reboot() {
    let test = "lifecycle_4_migration_from_the_go_version_then_a_reboot";
    let _netns = kernel::enter();
    let mut report = Report::new(4, "Migration from the Go version", test);
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 4);
    let (a, b, c, d) = (&all[0], &all[1], &all[2], &all[3]);
    publish(&all, &[a, b, c]);
    // No systemd below this root: the Go tool's rc.local.
    let mut node = Node::new(&ca, &a.endpoint(), false);
    let go = node.path("go");
    std::fs::create_dir_all(&go).expect("mkdir");
    let rs: Vec<String> = [a, b, c].iter().map(|m| m.endpoint()).collect();
    std::fs::write(
        go.join("ipvsConfig.yaml"),
        format!(
            "vs: {VIP}\nrs:\n- {}\n- {}\n- {}\nscheduler: rr\n",
            rs[0], rs[1], rs[2]
        ),
    )
    .expect("ipvsConfig.yaml");
    let go_line = format!("{TOOL} -cmd reload -persistDir {}", go.display());
    std::fs::write(
        node.path("root/etc/rc.local"),
        format!("#!/bin/sh -e\n{go_line}\nexit 0\n"),
    )
    .expect("rc.local");
    // The rules the Go tool made.
    run("ipvsadm", &["-A", "-t", VIP, "-s", "rr"]);
    for r in &rs {
        run("ipvsadm", &["-a", "-t", VIP, "-r", r, "-m"]);
    }
    run("ip", &["link", "add", "apiproxy0", "type", "dummy"]);
    run(
        "ip",
        &["addr", "add", &format!("{VIP_IP}/32"), "dev", "apiproxy0"],
    );
    run("ip", &["link", "set", "apiproxy0", "up"]);
    // The Go DaemonSet's JSON config, unchanged.
    let go_json = node.path("bcs-apiserver-proxy.json");
    std::fs::write(
        &go_json,
        serde_json::json!({
            "proxyLvs": {"virtualAddress": VIP, "lvsScheduler": "rr"},
            "realServer": {"realServers": rs},
            "healthCheck": {"healthScheme": "https", "healthPath": "/readyz"},
            "k8sConfig": {"kubeConfig": node.kubeconfig.to_string_lossy()},
            "persistConfig": {"ipvsPersistDir": go.to_string_lossy()},
            "systemInterval": {"managerInterval": 1},
        })
        .to_string(),
    )
    .expect("go json");
    let mut clients = Clients::start(&ca);
    let rules = in_rotation(&[a, b, c]);
    assert_eq!(dests(), rules);

    // The Go config's seeds are honoured, not warned about.
    let check = Command::new(daemon_bin())
        .args(["config", "check"])
        .arg(&go_json)
        .output()
        .expect("config check");
    let check_text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The switch: our CLI's init with the Go tool's flags, our daemon with
    // the Go config.
    let guard = RuleGuard::start(rules.clone());
    let t = Instant::now();
    let init = node.cli(&format!(
        "-cmd init -vs {VIP} -rs {} -rs {} -rs {} -persistDir {} -toolPath {TOOL}",
        rs[0],
        rs[1],
        rs[2],
        go.display()
    ));
    let args = vec![
        "-f".to_string(),
        go_json.to_string_lossy().into_owned(),
        "--health-ca-file".into(),
        node.ca_file.to_string_lossy().into_owned(),
        "--health-interval".into(),
        "3s".into(),
        "--metrics-addr".into(),
        format!("127.0.0.1:{METRICS}"),
    ];
    let mut daemon = node.daemon(&daemon_bin(), &args);
    daemon.wait_ready();
    daemon.wait_cluster();
    std::thread::sleep(Duration::from_secs(3));
    let changed = guard.finish();
    let row = clients
        .phase(
            t,
            "switch: our `init` (Go flags), our daemon (Go JSON config)",
            true,
            &all,
            &[a, b, c],
        )
        .repair(format!("{} rule change(s)", changed.len()));
    report.add(row.clone());
    assert_row(&row);
    assert!(
        changed.is_empty(),
        "the switch changed right rules: {changed:?}"
    );
    let rc = std::fs::read_to_string(node.path("root/etc/rc.local")).expect("rc.local");

    // A master is replaced while our daemon runs: the boot restore must
    // know it, so the daemon and the CLI must share one folder.
    let t = Instant::now();
    publish(&all, &[a, b, d]);
    wait_for("the new master in, the old out", LONG, || {
        dests() == in_rotation(&[a, b, d])
    });
    let row = clients.phase(
        t,
        "a master replaced through the EndpointSlice",
        true,
        &all,
        &[a, b, d],
    );
    report.add(row.clone());
    assert_row(&row);
    daemon.term();

    let t = Instant::now();
    clients.reboot();
    wipe_kernel();
    let (ok, out) = node.boot();
    let restored = dests();
    if !restored.is_empty() {
        clients.reopen_watch(&ca);
    }
    let row = Row::new(
        "reboot: the boot line runs",
        clients.prober.since(t),
        false,
        None,
    )
    .repair(format!("restored {restored:?}"));
    report.add(row);
    let t = Instant::now();
    let mut daemon = node.daemon(&daemon_bin(), &args);
    daemon.wait_ready();
    daemon.wait_cluster();
    let row = clients.phase(
        t,
        "our daemon starts after the reboot",
        true,
        &all,
        &[a, b, d],
    );
    report.add(row.clone());

    // Every requirement of a migration, reported together: they are
    // independent, and a fix of one should not hide the state of the others.
    let mut problems = Vec::new();
    if check_text.contains("realServer") {
        problems.push(format!(
            "the Go config's realServer.realServers must be honoured, not ignored:\n{check_text}"
        ));
    }
    // Commented out is replaced: only a line the shell would run counts.
    let go_line_runs = rc
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.contains(go_line.trim()));
    if go_line_runs {
        problems.push(format!(
            "`init` must replace the Go tool's rc.local line (and say so):\ninit said:\n{init}\nrc.local:\n{rc}"
        ));
    }
    if !ok {
        problems.push(format!("the boot restore failed:\n{out}"));
    }
    if restored != in_rotation(&[a, b, d]) {
        problems.push(format!(
            "after the migration, the boot restore must restore what our daemon last saved, \
             {:?}, not {restored:?} (one folder for the daemon's --ipvsPersistDir and the CLI's \
             -persistDir):\n{out}",
            in_rotation(&[a, b, d])
        ));
    }
    if row.idle.contains("NOT") || row.failed > 0 {
        problems.push(format!("after the reboot: {row:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_5_masters_added_replaced_and_removed() {
    let test = "lifecycle_5_masters_added_replaced_and_removed";
    let _netns = kernel::enter();
    let mut report = Report::new(5, "Masters added, replaced and removed", test);
    let ca = Ca::new("kubernetes-ca");
    // a, b, c at first; d, e, f the replacements. All serve one cluster.
    let all = masters(&ca, 6);
    let m: Vec<&Master> = all.iter().collect();
    publish(&all, &m[..3]);
    // The daemon reaches the API through its own VIP, as kubelet does: a
    // rolling replacement of every master must not cut it off.
    let mut node = Node::new(&ca, VIP, true);
    node.cli(&init_line(&m[..3]));
    let mut daemon = node.daemon(&daemon_bin(), &node.daemon_args());
    daemon.wait_ready();
    daemon.wait_cluster();
    let clients = Clients::start(&ca);

    let mut step = |name: &str, listed: &[&Master], stop: &[&Master]| {
        let t = Instant::now();
        publish(&all, listed);
        wait_for(name, LONG, || dests() == in_rotation(listed));
        let converged = t.elapsed();
        // A master that left the slice goes away only once out of IPVS, as
        // a replaced machine is switched off after its replacement joined.
        for s in stop {
            s.stop();
        }
        let row = clients.phase(t, name, true, &all, listed).repair(format!(
            "IPVS followed the slice in {:.2} s",
            converged.as_secs_f64()
        ));
        report.add(row.clone());
        assert_row(&row);
    };
    step(
        "one master added (a b c + d)",
        &[m[0], m[1], m[2], m[3]],
        &[],
    );
    step("one master removed (d)", &m[..3], &[]);
    step(
        "one master replaced by a new IP (c -> d)",
        &[m[0], m[1], m[3]],
        &[m[2]],
    );
    m[2].start();
    step(
        "two added at once (+ c, e)",
        &[m[0], m[1], m[2], m[3], m[4]],
        &[],
    );
    step("two removed at once (- d, e)", &m[..3], &[]);
    // Rolling replacement of all three: a -> d, b -> e, c -> f.
    step("rolling 1/3: a -> d", &[m[1], m[2], m[3]], &[m[0]]);
    step("rolling 2/3: b -> e", &[m[2], m[3], m[4]], &[m[1]]);
    step("rolling 3/3: c -> f", &[m[3], m[4], m[5]], &[m[2]]);
    for s in &m[..3] {
        s.start();
    }
    step(
        "all three replaced at once (d e f -> a b c)",
        &m[..3],
        &[m[3], m[4], m[5]],
    );
    drop(daemon);
}

/// One tamper: `act`, then how long until `repaired` holds (not within
/// 30 s: `undo` puts it right by hand, so that the next tamper starts from a
/// sane node). What went wrong, if anything: the tampers are independent,
/// and each is measured even when an earlier one failed.
#[allow(clippy::too_many_arguments, reason = "one call per tamper, all named")]
fn tamper(
    clients: &mut Clients,
    ca: &Ca,
    report: &mut Report,
    all: &[Master],
    name: &str,
    act: &dyn Fn(),
    repaired: &dyn Fn() -> bool,
    undo: &dyn Fn(),
) -> Result<(), String> {
    let listed: Vec<&Master> = all.iter().collect();
    assert!(
        repaired(),
        "{name}: the node was not right before the tamper"
    );
    let t = Instant::now();
    act();
    let took = measure(Duration::from_secs(30), repaired);
    if took.is_none() {
        undo();
    }
    wait_for("the rules after the tamper", LONG, || {
        dests() == in_rotation(&listed)
    });
    let row = clients
        .phase(t, name, false, all, &listed)
        .repair(match took {
            Some(d) => format!("repaired in {:.3} s", d.as_secs_f64()),
            None => "NOT repaired within 30 s (put right by hand)".into(),
        });
    report.add(row.clone());
    let mut problems = Vec::new();
    if took.is_none() {
        problems.push(format!("{name}: not repaired by the daemon within 30 s"));
    }
    if row.idle.contains("NOT") {
        problems.push(format!(
            "{name}: the idle connection through the VIP was neither served nor cut (a zombie \
             a kubelet watch would hang on); IPVS's connections:\n{}",
            std::fs::read_to_string("/proc/thread-self/net/ip_vs_conn").unwrap_or_default()
        ));
        // The next tamper is judged on a connection of its own.
        clients.reopen_watch(ca);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_6_kube_proxy_cleanup_and_tampering_are_repaired() {
    let test = "lifecycle_6_kube_proxy_cleanup_and_tampering_are_repaired";
    let _netns = kernel::enter();
    let mut report = Report::new(6, "kube-proxy's cleanup and tampering", test);
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    let mut node = Node::new(&ca, &all[0].endpoint(), true);
    node.cli(&init_line(&three));
    let mut daemon = node.daemon(&daemon_bin(), &node.daemon_args());
    daemon.wait_ready();
    daemon.wait_cluster();
    let mut clients = Clients::start(&ca);
    let rules = in_rotation(&three);
    let whole = || {
        dests() == rules
            && interface_exists()
            && interface_up()
            && vip_on_interface()
            && vip_routed_locally()
    };
    // By hand, what the daemon should have done.
    let put_right = || {
        if !interface_exists() {
            let _ = succeeds("ip", &["link", "add", "apiproxy0", "type", "dummy"]);
        }
        let _ = succeeds("ip", &["link", "set", "apiproxy0", "up"]);
        let _ = succeeds(
            "ip",
            &["addr", "add", &format!("{VIP_IP}/32"), "dev", "apiproxy0"],
        );
    };
    let mut missed = Vec::new();
    let mut check = |outcome: Result<(), String>| {
        if let Err(e) = outcome {
            missed.push(e);
        }
    };

    // kube-proxy --cleanup in IPVS mode: every IPVS service flushed and its
    // dummy interface removed.
    let kube_proxy = || {
        run("ip", &["link", "add", "kube-ipvs0", "type", "dummy"]);
        run("ip", &["addr", "add", "10.96.0.1/32", "dev", "kube-ipvs0"]);
        run("ipvsadm", &["-A", "-t", "10.96.0.1:443", "-s", "rr"]);
        run(
            "ipvsadm",
            &["-a", "-t", "10.96.0.1:443", "-r", &all[0].endpoint(), "-m"],
        );
    };
    kube_proxy();
    let name = "kube-proxy --cleanup (ipvsadm -C, kube-ipvs0 deleted)";
    let took = tamper(
        &mut clients,
        &ca,
        &mut report,
        &all,
        name,
        &|| {
            run("ipvsadm", &["-C"]);
            run("ip", &["link", "del", "kube-ipvs0"]);
        },
        &whole,
        &put_right,
    );
    check(took);
    let name = "ip addr del of the VIP";
    let took = tamper(
        &mut clients,
        &ca,
        &mut report,
        &all,
        name,
        &|| {
            run_ignore(
                "ip",
                &["addr", "del", &format!("{VIP_IP}/32"), "dev", "apiproxy0"],
            )
        },
        &whole,
        &put_right,
    );
    check(took);
    let name = "ip link del apiproxy0";
    let took = tamper(
        &mut clients,
        &ca,
        &mut report,
        &all,
        name,
        &|| run_ignore("ip", &["link", "del", "apiproxy0"]),
        &whole,
        &put_right,
    );
    check(took);
    let name = "ip link set apiproxy0 down";
    let took = tamper(
        &mut clients,
        &ca,
        &mut report,
        &all,
        name,
        &|| run_ignore("ip", &["link", "set", "apiproxy0", "down"]),
        &whole,
        &put_right,
    );
    check(took);
    let name = "one destination deleted (ipvsadm -d)";
    let victim = all[1].endpoint();
    let took = tamper(
        &mut clients,
        &ca,
        &mut report,
        &all,
        name,
        &|| run_ignore("ipvsadm", &["-d", "-t", VIP, "-r", &victim]),
        &whole,
        &put_right,
    );
    check(took);
    assert!(
        missed.is_empty(),
        "{}\n\nthe daemon's last log lines:\n{}",
        missed.join("\n"),
        daemon
            .log_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(daemon);
}

fn run_ignore(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_7_every_apiserver_down_for_60_s_then_back_one_by_one() {
    let test = "lifecycle_7_every_apiserver_down_for_60_s_then_back_one_by_one";
    let _netns = kernel::enter();
    let mut report = Report::new(7, "Every apiserver down for 60 s", test);
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    let mut node = Node::new(&ca, &all[0].endpoint(), true);
    node.cli(&init_line(&three));
    let mut daemon = node.daemon(&daemon_bin(), &node.daemon_args());
    daemon.wait_ready();
    daemon.wait_cluster();
    let clients = Clients::start(&ca);

    let t = Instant::now();
    for m in &all {
        m.stop();
    }
    // Fail-open: for the whole minute the service keeps a backend in
    // rotation, and ends with all three.
    let mut lowest = usize::MAX;
    while t.elapsed() < Duration::from_secs(60) {
        let d = dests();
        let serving = d.iter().filter(|(_, w)| *w > 0).count();
        lowest = lowest.min(serving);
        assert!(
            serving > 0,
            "no backend in rotation while every apiserver is down: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = dests();
    report.add(
        Row::new(
            "every apiserver down for 60 s",
            clients.prober.since(t),
            false,
            None,
        )
        .repair(format!(
            "fail-open: at least {lowest} backend(s) in rotation throughout, {} at the end; \
             idle watch cut {}×",
            held.len(),
            clients.watch.as_ref().map_or(0, |w| w.since(t).cuts)
        )),
    );
    assert_eq!(
        held,
        in_rotation(&three),
        "fail-open must end holding every backend"
    );

    for (i, m) in all.iter().enumerate() {
        let t = Instant::now();
        m.start();
        let back: Vec<&Master> = all[..=i].iter().collect();
        let converged = measure(LONG, || {
            dests() == in_rotation(&back) || (i == 2 && dests() == in_rotation(&three))
        });
        let row = clients
            .phase(
                t,
                &format!("apiserver {} of 3 back", i + 1),
                false,
                &all,
                &three,
            )
            .repair(match converged {
                Some(d) => format!("rotation = the live ones after {:.2} s", d.as_secs_f64()),
                None => format!("rotation never matched the live ones: {:?}", dests()),
            });
        report.add(row.clone());
        assert_row(&row);
        assert!(
            converged.is_some(),
            "after apiserver {} came back: {:?}",
            i + 1,
            dests()
        );
    }
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let row = clients.phase(t, "normal operation", true, &all, &three);
    report.add(row.clone());
    assert_row(&row);
    drop(daemon);
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_8_uninstall_leaves_nothing_of_ours_and_kube_proxy_untouched() {
    let test = "lifecycle_8_uninstall_leaves_nothing_of_ours_and_kube_proxy_untouched";
    let _netns = kernel::enter();
    let mut report = Report::new(8, "Uninstall", test);
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    let mut node = Node::new(&ca, &all[0].endpoint(), true);
    // kube-proxy in IPVS mode on the same node.
    run("ip", &["link", "add", "kube-ipvs0", "type", "dummy"]);
    run("ip", &["addr", "add", "10.96.0.1/32", "dev", "kube-ipvs0"]);
    run("ipvsadm", &["-A", "-t", "10.96.0.1:443", "-s", "rr"]);
    run(
        "ipvsadm",
        &["-a", "-t", "10.96.0.1:443", "-r", &all[0].endpoint(), "-m"],
    );
    let kube_proxy_before = (
        run("ipvsadm", &["-Ln", "-t", "10.96.0.1:443"]),
        run("ip", &["-o", "addr", "show", "dev", "kube-ipvs0"]),
    );
    node.cli(&init_line(&three));
    let mut daemon = node.daemon(&daemon_bin(), &node.daemon_args());
    daemon.wait_ready();
    daemon.wait_cluster();
    let clients = Clients::start(&ca);
    let t = Instant::now();
    // The chart is removed (SIGTERM: the rules stay), then cleanup.
    daemon.term();
    let row = clients.phase(t, "the daemon stops (helm uninstall)", true, &all, &three);
    report.add(row.clone());
    assert_row(&row);
    let t = Instant::now();
    let out = node.cli(&format!("cleanup --vs {VIP}"));
    report.add(
        Row::new(
            "apiserver-proxy-tools cleanup",
            clients.prober.since(t),
            false,
            None,
        )
        .repair("removed: the VIP's service, address, interface, unit and state"),
    );
    drop(clients);

    let services = run("ipvsadm", &["-Ln"]);
    assert!(
        !services.contains(VIP),
        "our virtual server stayed:\n{services}"
    );
    let addrs = run("ip", &["-o", "addr"]);
    assert!(!addrs.contains(VIP_IP), "the VIP stayed:\n{addrs}");
    assert!(!interface_exists(), "apiproxy0 stayed");
    assert!(!node.path(UNIT).exists(), "the boot unit stayed:\n{out}");
    for f in ["state.json", "backends.json"] {
        assert!(!node.state_dir().join(f).exists(), "{f} stayed:\n{out}");
    }
    assert_eq!(
        (
            run("ipvsadm", &["-Ln", "-t", "10.96.0.1:443"]),
            run("ip", &["-o", "addr", "show", "dev", "kube-ipvs0"]),
        ),
        kube_proxy_before,
        "kube-proxy's service or interface changed"
    );
}

/// The VIP's route in route mode (`VIP/32 dev lo`), as `ip route` shows it.
fn vip_route() -> bool {
    Command::new("ip")
        .args(["route", "show", &format!("{VIP_IP}/32")])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("dev lo"))
}

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn lifecycle_6b_route_mode_route_deleted_is_repaired() {
    let test = "lifecycle_6b_route_mode_route_deleted_is_repaired";
    let _netns = kernel::enter();
    let mut report = Report::new(6, "Tampering with a route-mode VIP", test);
    let ca = Ca::new("kubernetes-ca");
    let all = masters(&ca, 3);
    let three: Vec<&Master> = all.iter().collect();
    publish(&all, &three);
    let mut node = Node::new(&ca, &all[0].endpoint(), true);
    node.cli(&format!("{} --vip-mode route", init_line(&three)));
    let mut args = node.daemon_args();
    args.extend(["--vip-mode".into(), "route".into()]);
    let mut daemon = node.daemon(&daemon_bin(), &args);
    daemon.wait_ready();
    daemon.wait_cluster();
    let mut clients = Clients::start(&ca);
    let rules = in_rotation(&three);
    let whole = || dests() == rules && vip_route();
    let src = all[0].ns().peer_ipv4.to_string();
    let put_right = || {
        let _ = succeeds(
            "ip",
            &[
                "route",
                "replace",
                &format!("{VIP_IP}/32"),
                "dev",
                "lo",
                "src",
                &src,
            ],
        );
    };
    let took = tamper(
        &mut clients,
        &ca,
        &mut report,
        &all,
        "ip route del of the VIP's route (route mode)",
        &|| run_ignore("ip", &["route", "del", &format!("{VIP_IP}/32")]),
        &whole,
        &put_right,
    );
    let took_ipvs = tamper(
        &mut clients,
        &ca,
        &mut report,
        &all,
        "ipvsadm -C (route mode)",
        &|| run_ignore("ipvsadm", &["-C"]),
        &whole,
        &put_right,
    );
    let problems: Vec<String> = [took, took_ipvs]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(daemon);
}
