//! The outside control-plane VIP on a real kernel (the host's or the VM's:
//! namespaces, veth and a bridge, no IPVS needed): two control-plane nodes
//! as network namespaces on one LAN (a bridge) with a client, each running
//! the election and the VIP keeper against one fake apiserver, and a TCP
//! server on the VIP's port that names its node.
//!
//! What is asserted: at no sampled moment do both nodes hold the address;
//! after the holder is killed (no release, its address left to expire by
//! its lifetime) or cut off from the apiserver, the client reaches the
//! other node through the VIP. How long that took is printed, not
//! asserted (`cargo xtask bench` measures it).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use apiserver_proxy_election::{KubeLeases, Timings};
use apiserver_proxy_manager::control_plane::{ControlPlane, NetlinkVipHost};
use apiserver_proxy_manager::metrics::Metrics;
use apiserver_proxy_testkit::apiserver::FakeApiServer;
use apiserver_proxy_testkit::kernel;
use apiserver_proxy_testkit::netns::{AddressReferee, Lan, Netns, holds_address};

const VIP: &str = "192.168.50.100";
const PORT: u16 = 6443;

/// How a node's run ends.
enum End {
    /// SIGKILL: nothing let go, nothing released.
    Kill,
    /// SIGTERM: VIP let go, lease released.
    Stop,
}

struct Node {
    ns: Netns,
    end: mpsc::Sender<End>,
    thread: std::thread::JoinHandle<()>,
}

impl Node {
    /// A namespace with `eth1` on the LAN bridge at 192.168.50.1N, a
    /// server on PORT answering its name, and the control-plane mode.
    fn start(n: u8, lan: &Lan, api_port: u16) -> Node {
        let ns = Netns::new();
        ns.join_lan(lan, &format!("192.168.50.1{n}/24"));
        let api = format!("http://{}:{api_port}", ns.peer_ipv4);
        let (end, ends) = mpsc::channel();
        let name = format!("node-{n}");
        let thread = ns.spawn(move || {
            // The node's apiserver port: answers with the node's name.
            let listener = TcpListener::bind(("0.0.0.0", PORT)).expect("bind");
            let who = name.clone();
            std::thread::spawn(move || {
                for mut c in listener.incoming().flatten() {
                    use std::io::Write;
                    let _ = c.write_all(who.as_bytes());
                }
            });
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let cp = rt.block_on(async {
                let store = KubeLeases::new(
                    vec![kube::Config::new(api.parse().expect("url"))],
                    "kube-system",
                    "vip",
                    Duration::from_millis(400),
                )
                .expect("store");
                let host = NetlinkVipHost::open("eth1").expect("host");
                ControlPlane::start(
                    store,
                    name,
                    VIP.parse().expect("vip"),
                    Timings::default(),
                    host,
                    Metrics::new(),
                )
                .expect("start")
            });
            match ends.recv().unwrap_or(End::Kill) {
                End::Kill => drop(rt),
                End::Stop => rt.block_on(cp.shutdown()),
            }
        });
        Node { ns, end, thread }
    }

    fn holds(&self) -> bool {
        holds_address(self.ns.name(), "eth1", VIP)
    }

    fn end(self, how: End) -> Netns {
        let _ = self.end.send(how);
        self.thread.join().expect("node thread");
        self.ns
    }
}

/// The node answering on the VIP, if any answers within half a second.
fn answering() -> Option<String> {
    let addr: SocketAddr = format!("{VIP}:{PORT}").parse().expect("addr");
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    c.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut name = String::new();
    c.read_to_string(&mut name).ok()?;
    (!name.is_empty()).then_some(name)
}

fn wait_for_answer(want: impl Fn(&str) -> bool, limit: Duration) -> Option<(String, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(n) = answering()
            && want(&n)
        {
            return Some((n, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn lan(api: &FakeApiServer) -> (Lan, u16) {
    (Lan::new("192.168.50.1/24"), api.addr().port())
}

fn fake_apiserver(rt: &tokio::runtime::Runtime) -> FakeApiServer {
    rt.block_on(FakeApiServer::plain("0.0.0.0:0".parse().expect("addr")))
        .expect("fake apiserver")
}

/// Two nodes on the LAN, one of them elected and answering on the VIP, and
/// the referee watching.
struct Elected {
    _rt: tokio::runtime::Runtime,
    _api: FakeApiServer,
    first: String,
    holder: Node,
    other: Node,
    referee: AddressReferee,
}

fn elected() -> Elected {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = fake_apiserver(&rt);
    let (lan, port) = lan(&api);
    let a = Node::start(1, &lan, port);
    let b = Node::start(2, &lan, port);
    let (first, _) = wait_for_answer(|_| true, Duration::from_secs(30)).expect("a holder");
    let referee = AddressReferee::start(
        vec![a.ns.name().to_string(), b.ns.name().to_string()],
        "eth1",
        VIP,
    );
    let (holder, other) = if first == "node-1" { (a, b) } else { (b, a) };
    Elected {
        _rt: rt,
        _api: api,
        first,
        holder,
        other,
        referee,
    }
}

#[test]
fn a_killed_holder_is_replaced_and_the_two_never_hold_the_vip_together() {
    let _netns = kernel::enter_without_ipvs();
    let Elected {
        _rt,
        _api,
        first,
        holder,
        other,
        referee,
    } = elected();
    assert!(holder.holds() && !other.holds());

    let killed = Instant::now();
    let _gone = holder.end(End::Kill);
    let (now, _) = wait_for_answer(|n| n != first, Duration::from_secs(30))
        .expect("the other node answers on the VIP");
    let took = killed.elapsed();
    let both = referee.finish();
    assert!(other.holds());
    assert_eq!(both, 0, "both nodes held the VIP at some moment");
    eprintln!("holder killed: {now} answered on the VIP {took:?} later");
    let _ = other.end(End::Stop);
}

#[test]
fn a_holder_cut_off_from_the_apiserver_lets_go_before_the_other_takes_over() {
    let _netns = kernel::enter_without_ipvs();
    let Elected {
        _rt,
        _api,
        first,
        holder,
        other,
        referee,
    } = elected();

    // The holder's link to the apiserver drops every packet; its LAN (and
    // ARP) stays up, so it could still answer for the VIP if it kept it.
    holder.ns.black_hole();
    let (now, took) = wait_for_answer(|n| n != first, Duration::from_secs(30))
        .expect("the other node answers on the VIP");
    assert!(!holder.holds(), "the cut-off holder let the VIP go");
    holder.ns.restore();
    // Healed, the old holder follows: the VIP stays where it is.
    std::thread::sleep(Duration::from_secs(2));
    let both = referee.finish();
    assert!(other.holds() && !holder.holds());
    assert_eq!(both, 0, "both nodes held the VIP at some moment");
    eprintln!("holder cut off: {now} answered on the VIP {took:?} later");

    // An orderly stop hands over at the next read, not after a lease.
    let stopped = Instant::now();
    let _ = other.end(End::Stop);
    let (back, _) = wait_for_answer(|n| n == first, Duration::from_secs(30)).expect("handed back");
    eprintln!(
        "holder stopped: {back} answered {:?} later",
        stopped.elapsed()
    );
    let _ = holder.end(End::Stop);
}
