//! Real-kernel tests: the one way to write them.
//!
//! Our build machines' kernel has no IPVS, so tests that need it run inside a
//! VM booting a stock Debian kernel (`cargo xtask test` does this; see
//! `docs/testing.md`). Such a test is written like this:
//!
//! ```ignore
//! #[test]
//! #[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
//! fn creates_a_service() {
//!     let _netns = apiserver_proxy_testkit::kernel::enter();
//!     // ... talk to the kernel ...
//! }
//! ```
//!
//! The `#[ignore]` keeps it out of host runs; in the VM the harness runs every
//! test binary with `--ignored`. `#[ignore]` is reserved for this: the xtask
//! refuses any other ignore reason so that a skipped test cannot hide.
//!
//! [`enter`] fails the test with a clear message where the kernel has no IPVS,
//! and otherwise moves the test's thread into a fresh network namespace, so
//! that tests running in parallel never see each other's interfaces, VIPs or
//! IPVS services, and nothing leaks into the next test.

use std::path::Path;
use std::process::Command;

use nix::sched::{CloneFlags, unshare};

/// What a real-kernel test got: a private network namespace for its thread.
#[derive(Debug)]
pub struct NetnsGuard {
    _private: (),
}

/// Panics unless the running kernel has IPVS; then gives the calling thread a
/// fresh network namespace with `lo` up.
///
/// Threads the test spawns after this call (a tokio runtime's workers, a
/// netlink router's reader) inherit the namespace; threads spawned before it
/// do not.
pub fn enter() -> NetnsGuard {
    require_ipvs();
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        panic!(
            "real-kernel test: cannot create a network namespace ({e}); \
             these tests run as root inside the VM started by `cargo xtask test`"
        );
    }
    run("ip", &["link", "set", "lo", "up"]);
    NetnsGuard { _private: () }
}

/// A fresh network namespace with `lo` up for a kernel test that needs no
/// IPVS (nf_tables, rtnetlink): these run on the host too. Panics, loudly,
/// where namespaces cannot be made (not root): never a silent pass.
pub fn enter_without_ipvs() -> NetnsGuard {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        panic!(
            "kernel test: cannot create a network namespace ({e}); run the tests as root \
             (`cargo xtask test` does), on the host or in the VM"
        );
    }
    run("ip", &["link", "set", "lo", "up"]);
    NetnsGuard { _private: () }
}

/// Panics with the message that tells a person how to run this test, unless
/// the running kernel has IPVS.
pub fn require_ipvs() {
    if !Path::new("/proc/net/ip_vs").exists() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        panic!(
            "needs a kernel with IPVS: /proc/net/ip_vs does not exist on this kernel ({}). \
             This test is marked #[ignore] because our build machines' kernel lacks IPVS; \
             run it in the VM with `cargo xtask test` (the whole suite) or \
             `cargo xtask vm-test <filter>` (matching tests only).",
            release.trim()
        );
    }
}

/// The backends of `vip` (`IP:PORT`) in our nftables table and their
/// weights, as `nft list` prints them: a backend is a chain `be-VIP-…`
/// whose rule translates to it (its comment names it), and its weight is
/// the number of the VIP's round-robin slots that jump to that chain.
/// Empty while the table or the VIP does not exist.
pub fn nft_dests(vip: &str) -> Vec<(String, u32)> {
    nft_backend_rules(vip)
        .into_iter()
        .map(|(backend, chain, _, text)| {
            let tokens: Vec<&str> = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .collect();
            let slots = tokens
                .windows(2)
                .filter(|w| w[0] == "jump" && w[1].trim_matches('"') == chain)
                .count();
            (backend, u32::try_from(slots).unwrap_or(u32::MAX))
        })
        .collect()
}

/// The connections sent to each backend of `vip` so far: the counter of
/// its chain (a NAT chain sees the first packet of each connection).
pub fn nft_connections(vip: &str) -> Vec<(String, u64)> {
    nft_backend_rules(vip)
        .into_iter()
        .map(|(backend, _, packets, _)| (backend, packets))
        .collect()
}

/// (backend, its chain, its counter's packets, the whole listing) per
/// backend rule of `vip` in `nft list table inet bcs-apiserver-proxy`.
fn nft_backend_rules(vip: &str) -> Vec<(String, String, u64, String)> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "bcs-apiserver-proxy"])
        .output()
        .expect("run nft");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let vip: std::net::SocketAddr = vip.parse().expect("vip IP:PORT");
    let prefix = format!("be-{}-{}-", vip.ip(), vip.port()).replace(':', "_");
    let mut chain = String::new();
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("chain ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            chain = name.trim_matches('"').to_string();
            continue;
        }
        let backend = line
            .split("comment \"backend ")
            .nth(1)
            .and_then(|r| r.strip_suffix('"'));
        if let Some(backend) =
            backend.filter(|_| chain.starts_with(&prefix) && line.contains("dnat "))
        {
            let packets = line
                .split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            found.push((backend.to_string(), chain.clone(), packets));
        }
    }
    found
        .into_iter()
        .map(|(b, c, p)| (b, c, p, text.clone()))
        .collect()
}

/// The backend conntrack says the TCP connection from local port `port` to
/// `vip` was translated to (the reply's source), per `conntrack -L`.
pub fn conntrack_backend_of(vip: &str, port: u16) -> Option<String> {
    let out = Command::new("conntrack")
        .args(["-L", "-p", "tcp", "--sport", &port.to_string()])
        .output()
        .expect("run conntrack (Debian's conntrack package; `cargo xtask test` installs it)");
    let vip: std::net::SocketAddr = vip.parse().expect("vip IP:PORT");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let field = |key: &str, nth: usize| {
            l.split_whitespace()
                .filter_map(|w| w.strip_prefix(key))
                .nth(nth)
                .map(str::to_string)
        };
        let dst: std::net::IpAddr = field("dst=", 0)?.parse().ok()?;
        let dport: u16 = field("dport=", 0)?.parse().ok()?;
        if dst != vip.ip() || dport != vip.port() {
            return None;
        }
        let ip: std::net::IpAddr = field("src=", 1)?.parse().ok()?;
        let p: u16 = field("sport=", 1)?.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, p).to_string())
    })
}

/// The destinations of the TCP virtual server `vip` (`IP:PORT`) and their
/// weights, as `ipvsadm -Ln` prints them: a view independent of our own
/// netlink code. Empty while the service does not exist (ipvsadm then fails),
/// so a test can wait for it to come back.
pub fn ipvsadm_dests(vip: &str) -> Vec<(String, u32)> {
    let out = Command::new("ipvsadm")
        .args(["-Ln", "-t", vip])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ipvsadm: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[0] == "->" && f[1] != "RemoteAddress:Port")
                .then(|| (f[1].to_string(), f[3].parse().unwrap_or(u32::MAX)))
        })
        .collect()
}

/// Runs a command that the test cannot do without, panicking with its output
/// when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    stdout_of(program, args, &out)
}

/// Runs a command that the test cannot do without with `input` on its
/// standard input (`ipvsadm -R`, `nft -f -`), panicking with its output when
/// it fails.
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to {program}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {program}: {e}"));
    stdout_of(program, args, &out)
}

/// The standard output of a command the test cannot do without, or a panic
/// with all it said when it failed.
fn stdout_of(program: &str, args: &[&str], out: &std::process::Output) -> String {
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs, in the calling thread's network namespace, the stateful host
/// firewall many nodes run: drop what conntrack calls invalid, in and out.
/// IPVS replies are invalid to conntrack unless `net.ipv4.vs.conntrack=1`,
/// which is what tests using this show.
pub fn ct_state_firewall() {
    run(
        "nft",
        &["add table inet nodefw; \
           add chain inet nodefw in { type filter hook input priority 0; policy accept; }; \
           add chain inet nodefw out { type filter hook output priority 0; policy accept; }; \
           add rule inet nodefw in ct state invalid counter drop; \
           add rule inet nodefw out ct state invalid counter drop"],
    );
}

/// `ip -o addr show dev DEV`: the interface's addresses, one a line ("" when
/// the interface does not exist), as a person checking the node sees them.
pub fn addresses_of(dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-o", "addr", "show", "dev", dev])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the interface exists and is administratively up.
pub fn link_up(dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", dev])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    String::from_utf8_lossy(&out.stdout).contains(",UP")
}
