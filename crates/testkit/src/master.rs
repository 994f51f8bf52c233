//! A fake apiserver on a thread and runtime of its own, driven from
//! synchronous test code.
//!
//! [`FakeApiServer`]'s methods need the runtime it was started on, and a
//! master that lives in another network namespace needs a thread that has
//! entered that namespace. End-to-end tests, the demo and the benchmarks all
//! want the same thing: N masters they can crash, black-hole, drain and
//! bring back while a daemon watches. This is that, once.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use crate::apiserver::{FakeApiServer, kubernetes_slice};
use crate::netns::Netns;
use crate::tls::CertKey;

enum Cmd {
    Stop,
    Start,
    Ready(bool),
    Slice(Vec<(IpAddr, Option<bool>)>, u16),
    Freeze(Duration),
    Count(String, mpsc::Sender<usize>),
}

/// A fake apiserver serving TLS on `addr`, in a namespace of its own (a
/// remote host) or in the caller's (the node itself). Dropping it stops it.
#[derive(Debug)]
pub struct Master {
    ns: Option<Netns>,
    addr: SocketAddr,
    tx: mpsc::Sender<Cmd>,
}

impl Master {
    /// A remote master on its fresh namespace's address of that family
    /// (10.77.n.2 or fd77:0:0:n::2), port `port`.
    pub fn remote(leaf: CertKey, v6: bool, port: u16) -> Master {
        let ns = Netns::new();
        let addr = SocketAddr::new(ns.ip(v6), port);
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (up_tx, up_rx) = mpsc::channel();
        ns.spawn(move || serve(addr, leaf, rx, up_tx));
        wait_up(&up_rx);
        Master {
            ns: Some(ns),
            addr,
            tx,
        }
    }

    /// A master on the node itself: bound to `addr` in the caller's namespace.
    pub fn local(leaf: CertKey, addr: SocketAddr) -> Master {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (up_tx, up_rx) = mpsc::channel();
        std::thread::spawn(move || serve(addr, leaf, rx, up_tx));
        wait_up(&up_rx);
        Master { ns: None, addr, tx }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `IP:PORT` (`[IP]:PORT` for IPv6), as the daemon's flags take it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The namespace of a remote master (for black holes).
    ///
    /// # Panics
    /// On a local master: the test asked for something that doesn't exist.
    pub fn ns(&self) -> &Netns {
        self.ns.as_ref().expect("ns() of a local master")
    }

    /// Crash: the listener and every connection go away (clients see RST).
    pub fn stop(&self) {
        self.send(Cmd::Stop)
    }

    /// Come back after [`Master::stop`].
    pub fn start(&self) {
        self.send(Cmd::Start)
    }

    /// What `/readyz` answers (500 when false).
    pub fn set_ready(&self, ready: bool) {
        self.send(Cmd::Ready(ready))
    }

    /// Stall: the server's only thread stops for `d`, as SIGSTOP would
    /// stop an apiserver process (its kernel still completes handshakes
    /// and acknowledges data; nothing is answered). Returns at once.
    pub fn freeze(&self, d: Duration) {
        self.send(Cmd::Freeze(d))
    }

    /// Requests received so far whose `METHOD PATH` starts with `prefix`
    /// (such as `GET /readyz`).
    pub fn count_requests(&self, prefix: &str) -> usize {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Count(prefix.to_string(), tx));
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the fake apiserver did not count its requests")
    }

    /// Publishes `default/kubernetes` as an EndpointSlice with these
    /// endpoints (ready flag per endpoint) on this master's port.
    pub fn publish(&self, endpoints: Vec<(IpAddr, Option<bool>)>) {
        self.send(Cmd::Slice(endpoints, self.addr.port()))
    }

    /// [`Master::publish`] with another port: this fake plays the cluster's
    /// API while the apiservers it lists listen elsewhere.
    pub fn publish_port(&self, port: u16, endpoints: Vec<(IpAddr, Option<bool>)>) {
        self.send(Cmd::Slice(endpoints, port))
    }

    fn send(&self, c: Cmd) {
        // The thread only ends when we are dropped, so a failed send is a
        // panic in the server: say so rather than pretend it was applied.
        self.tx
            .send(c)
            .expect("the fake apiserver's thread has died");
    }
}

fn wait_up(up_rx: &mpsc::Receiver<()>) {
    up_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("fake apiserver did not come up within 60 s");
}

/// Serves again after a stop. The stopped listener closes only when its
/// aborted task is next polled, which a `Start` queued right behind the
/// `Stop` can beat: the address is then still in use for a moment.
async fn restart(server: &FakeApiServer) {
    let mut tries = 0;
    loop {
        match server.start() {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("restart the fake apiserver: {e}"),
        }
    }
}

/// A master's thread: serves until the [`Master`] (its sender) is dropped.
fn serve(addr: SocketAddr, leaf: CertKey, rx: mpsc::Receiver<Cmd>, up_tx: mpsc::Sender<()>) {
    let family = if addr.is_ipv6() { "IPv6" } else { "IPv4" };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let server = FakeApiServer::tls(addr, &leaf).await.expect("serve");
        let _ = up_tx.send(());
        loop {
            let cmd = match rx.try_recv() {
                Ok(c) => c,
                Err(mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => return,
            };
            match cmd {
                Cmd::Stop => server.stop(),
                Cmd::Start => restart(&server).await,
                Cmd::Ready(r) => server.set_ready(r),
                // Blocks the runtime, and with it every connection's task.
                Cmd::Freeze(d) => std::thread::sleep(d),
                Cmd::Count(prefix, tx) => {
                    let n = server
                        .requests()
                        .iter()
                        .filter(|r| r.starts_with(&prefix))
                        .count();
                    let _ = tx.send(n);
                }
                Cmd::Slice(eps, port) => {
                    server.apply_slice(kubernetes_slice("kubernetes", family, port, &eps))
                }
            }
        }
    });
}
