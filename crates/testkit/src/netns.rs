//! Network namespaces for tests: a private one for the test itself, and named
//! ones that play remote hosts (apiservers) joined to it by veth pairs.
//!
//! Works on the host (namespaces and veth exist there) as well as in the VM.
//! Everything is created below the test thread's own private namespace (see
//! [`isolate`]), so tests never touch the machine's real network and never
//! collide with each other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns, unshare};

use crate::kernel::run;

/// Moves the calling thread into a fresh network namespace with `lo` up.
///
/// Threads spawned afterwards (tokio workers, servers) inherit it. Needs root
/// (CAP_SYS_ADMIN); CI and the VM run as root.
pub fn isolate() {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        panic!(
            "cannot create a network namespace for this test ({e}): \
             network tests need root (CAP_SYS_ADMIN); run them as root or via `cargo xtask test`"
        );
    }
    run("ip", &["link", "set", "lo", "up"]);
}

/// Whether interface `dev` of the named namespace `ns` has the address
/// `ip` (IPv4 or IPv6, without its prefix length).
pub fn holds_address(ns: &str, dev: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "-o", "addr", "show", "dev", dev])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {ip}/")))
}

/// Watches, from a thread of its own, whether more than one of some
/// namespaces holds an address at once (two nodes holding one VIP):
/// samples them back to back until [`AddressReferee::finish`].
#[derive(Debug)]
pub struct AddressReferee {
    stop: Arc<AtomicBool>,
    both: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl AddressReferee {
    pub fn start(namespaces: Vec<String>, dev: &str, ip: &str) -> AddressReferee {
        let stop = Arc::new(AtomicBool::new(false));
        let both = Arc::new(AtomicUsize::new(0));
        let (s, b) = (stop.clone(), both.clone());
        let (dev, ip) = (dev.to_string(), ip.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if namespaces
                    .iter()
                    .filter(|ns| holds_address(ns, &dev, &ip))
                    .count()
                    > 1
                {
                    b.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        AddressReferee { stop, both, thread }
    }

    /// Stops sampling; the samples in which more than one held it.
    pub fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        self.both.load(Ordering::SeqCst)
    }
}

static NEXT: AtomicU32 = AtomicU32::new(1);
static NEXT_PORT: AtomicU32 = AtomicU32::new(1);

/// A LAN: a bridge in the calling thread's namespace (the test side,
/// which is on it with `addr`), that namespaces join with
/// [`Netns::join_lan`]: hosts that share a link, as the control-plane
/// nodes an outside VIP moves between.
#[derive(Debug)]
pub struct Lan {
    bridge: String,
}

impl Lan {
    /// `addr` such as `192.168.50.1/24`.
    #[allow(
        clippy::new_without_default,
        reason = "creating a bridge is a side effect, not a default value"
    )]
    pub fn new(addr: &str) -> Lan {
        let bridge = format!(
            "br{}x{}",
            std::process::id() % 100_000,
            NEXT_PORT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", addr, "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        Lan { bridge }
    }
}

/// A named network namespace playing a remote host, joined to the creating
/// thread's namespace by a veth pair with IPv4 and IPv6 addresses on both
/// ends. Deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// The address of this host, as the test sees it.
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The test side's own address on the link.
    pub peer_ipv4: Ipv4Addr,
    pub peer_ipv6: Ipv6Addr,
    /// The veth end in the test's namespace.
    pub host_if: String,
    /// The veth end inside this namespace.
    pub ns_if: String,
}

impl Netns {
    /// Creates `apx-<pid>-<n>` with `lo` up and a veth to the calling
    /// thread's namespace: test side 10.77.n.1 / fd77:0:0:n::1, namespace side
    /// 10.77.n.2 / fd77:0:0:n::2 (n from 1 to 250 per process).
    ///
    /// Call [`isolate`] (or `kernel::enter`) first so that the test side lives
    /// in a private namespace: the addresses then cannot clash with anything.
    #[allow(
        clippy::new_without_default,
        reason = "creating a namespace is a side effect, not a default value"
    )]
    pub fn new() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            n <= 250,
            "testkit: more than 250 namespaces in one test process"
        );
        let pid = std::process::id();
        let name = format!("apx-{pid}-{n}");
        let host_if = format!("vh{}x{n}", pid % 100_000);
        let ns_if = format!("vn{}x{n}", pid % 100_000);
        let ipv4 = Ipv4Addr::new(10, 77, n as u8, 2);
        let peer_ipv4 = Ipv4Addr::new(10, 77, n as u8, 1);
        let ipv6: Ipv6Addr = format!("fd77:0:0:{n:x}::2").parse().expect("ipv6");
        let peer_ipv6: Ipv6Addr = format!("fd77:0:0:{n:x}::1").parse().expect("ipv6");

        run("ip", &["netns", "add", &name]);
        let ns = Netns {
            name,
            ipv4,
            ipv6,
            peer_ipv4,
            peer_ipv6,
            host_if,
            ns_if: ns_if.clone(),
        };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
                "netns",
                &ns.name,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{peer_ipv4}/24"),
                "dev",
                &ns.host_if,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{peer_ipv6}/64"),
                "dev",
                &ns.host_if,
                "nodad",
            ],
        );
        run("ip", &["link", "set", &ns.host_if, "up"]);
        ns.exec_ok("ip", &["addr", "add", &format!("{ipv4}/24"), "dev", &ns_if]);
        ns.exec_ok(
            "ip",
            &["addr", "add", &format!("{ipv6}/64"), "dev", &ns_if, "nodad"],
        );
        ns.exec_ok("ip", &["link", "set", &ns_if, "up"]);
        // Replies to addresses beyond the link (a VIP, another namespace)
        // go back through the test side.
        ns.exec_ok(
            "ip",
            &["route", "add", "default", "via", &peer_ipv4.to_string()],
        );
        ns.exec_ok(
            "ip",
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &peer_ipv6.to_string(),
            ],
        );
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This host's address of the given family.
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.ipv6)
        } else {
            IpAddr::V4(self.ipv4)
        }
    }

    /// Runs a command inside the namespace and returns its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec: {e}"))
    }

    /// Runs a command inside the namespace, panicking when it fails.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Drops every packet into and out of the namespace: the host is
    /// black-holed (no reset, no ICMP, no retransmitted answer), as a
    /// powered-off or partitioned machine looks.
    pub fn black_hole(&self) {
        self.exec_ok(
            "nft",
            &[
                "add table inet apxhole; \
                 add chain inet apxhole in { type filter hook input priority -100; policy drop; }; \
                 add chain inet apxhole out { type filter hook output priority -100; policy drop; }",
            ],
        );
    }

    /// A lossy, jittery link: `netem` with `args` (such as `loss 1% delay
    /// 2ms 1ms`) on both ends of the veth, so both directions suffer it.
    /// Needs the `sch_netem` module. Replaces an earlier setting.
    pub fn netem(&self, args: &str) {
        let words: Vec<&str> = args.split_whitespace().collect();
        let mut host = vec!["qdisc", "replace", "dev", &self.host_if, "root", "netem"];
        host.extend(&words);
        run("tc", &host);
        let mut inside = vec!["qdisc", "replace", "dev", &self.ns_if, "root", "netem"];
        inside.extend(&words);
        self.exec_ok("tc", &inside);
    }

    /// Undoes [`Netns::netem`]: the link is perfect again.
    pub fn clear_netem(&self) {
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", &self.host_if, "root"])
            .output();
        let _ = self.exec("tc", &["qdisc", "del", "dev", &self.ns_if, "root"]);
    }

    /// Packets and bytes that the test side has sent to this host so far
    /// (the host end's transmit counters), read from the calling thread's
    /// namespace (`/proc/thread-self/net/dev`: sysfs would show the
    /// namespace it was mounted in). `None` when the interface is not there.
    pub fn sent_to(&self) -> Option<(u64, u64)> {
        let table = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
        tx_counters(&table, &self.host_if)
    }

    /// Undoes [`Netns::black_hole`].
    pub fn restore(&self) {
        self.exec_ok("nft", &["delete table inet apxhole"]);
    }

    /// Puts this namespace on `lan` too: an interface `eth1` with `addr`
    /// (`192.168.50.11/24`), whose other end is a port of the bridge.
    pub fn join_lan(&self, lan: &Lan, addr: &str) {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = format!("{}p{n}", lan.bridge);
        run(
            "ip",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth1", "netns", &self.name,
            ],
        );
        run("ip", &["link", "set", &port, "master", &lan.bridge, "up"]);
        self.exec_ok("ip", &["addr", "add", addr, "dev", "eth1"]);
        self.exec_ok("ip", &["link", "set", "eth1", "up"]);
    }

    /// Runs `f` on a new thread that lives inside this namespace: sockets it
    /// binds are the remote host's. Threads `f` spawns inherit the namespace.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
            drop(file);
            f()
        })
    }
}

/// Transmit packets and bytes of `interface` in a `/proc/net/dev` table:
/// after `NAME:`, eight receive columns, then transmit bytes and packets.
fn tx_counters(table: &str, interface: &str) -> Option<(u64, u64)> {
    table.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != interface {
            return None;
        }
        let f: Vec<u64> = counters
            .split_whitespace()
            .map(|c| c.parse().ok())
            .collect::<Option<_>>()?;
        Some((*f.get(9)?, *f.get(8)?))
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes its veth end, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_counters_are_read_from_a_proc_net_dev_table() {
        // The layout of /proc/net/dev (Linux 6.1 and 6.18 alike).
        let table = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 2537516   32844    0    0    0     0          0         0  2537516   32844    0    0    0     0       0          0\n\
vh123x4:     900      10    0    0    0     0          0         0     4242      42    0    0    0     0       0          0\n";
        assert_eq!(tx_counters(table, "vh123x4"), Some((42, 4242)));
        assert_eq!(tx_counters(table, "lo"), Some((32844, 2537516)));
        assert_eq!(tx_counters(table, "vh1"), None);
    }

    /// Runs on the host as root: namespaces and veth work there.
    #[test]
    fn a_namespace_is_reachable_over_its_veth_and_can_be_black_holed() {
        std::thread::spawn(|| {
            isolate();
            let ns = Netns::new();
            let listener = ns
                .spawn(|| std::net::TcpListener::bind(("0.0.0.0", 7001)).expect("bind"))
                .join()
                .expect("join");
            let v4 = std::net::TcpStream::connect((ns.ipv4, 7001));
            assert!(v4.is_ok(), "{v4:?}");
            drop(listener);
            let refused = std::net::TcpStream::connect((ns.ipv4, 7001));
            assert!(refused.is_err());
            ns.black_hole();
            let silent = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::new(ns.ip(false), 7001),
                std::time::Duration::from_millis(300),
            )
            .expect_err("black-holed");
            assert_eq!(silent.kind(), std::io::ErrorKind::TimedOut, "{silent}");
            ns.restore();
        })
        .join()
        .expect("test thread");
    }
}
