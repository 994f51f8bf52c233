//! Cutting the node's own connections to a dead real server, on a real
//! kernel: the IPVS connection table names the client sockets, and
//! SOCK_DESTROY makes an idle client see an error at once.
//!
//! IPVS is set up with `ipvsadm` here so that this test depends only on the
//! code under test (conntable, sockdiag).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use apiserver_proxy_dataplane::conntable;
use apiserver_proxy_dataplane::sockdiag::SockDiag;
use apiserver_proxy_testkit::kernel::{self, run};
use apiserver_proxy_testkit::netns::Netns;

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn an_idle_client_of_a_deleted_real_server_is_cut_at_once() {
    let _netns = kernel::enter();
    let backend = Netns::new();
    let port = 6443;
    // The backend accepts and then says nothing: an idle watch.
    let listener = backend
        .spawn(move || TcpListener::bind(("0.0.0.0", port)).expect("bind backend"))
        .join()
        .expect("backend thread");
    let _acceptor = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });

    run("ip", &["link", "add", "apiproxy0", "type", "dummy"]);
    run("ip", &["link", "set", "apiproxy0", "up"]);
    run("ip", &["addr", "add", "10.103.97.2/32", "dev", "apiproxy0"]);
    run("sysctl", &["-qw", "net.ipv4.vs.expire_nodest_conn=1"]);
    let vip: SocketAddr = "10.103.97.2:6443".parse().expect("vip");
    let dest = SocketAddr::new(backend.ip(false), port);
    run("ipvsadm", &["-A", "-t", &vip.to_string(), "-s", "rr"]);
    run(
        "ipvsadm",
        &["-a", "-t", &vip.to_string(), "-r", &dest.to_string(), "-m"],
    );

    let mut client = TcpStream::connect_timeout(&vip, Duration::from_secs(10)).expect("connect");
    client
        .write_all(b"GET /watch HTTP/1.1\r\n\r\n")
        .expect("write");
    let local = client.local_addr().expect("local addr");

    let ours = conntable::read_through(vip, Some(dest)).expect("read the connection table");
    assert!(
        ours.iter().any(|c| c.client == local),
        "the client {local} must be in the IPVS table: {ours:#?}"
    );

    // What the manager does for a dead backend: delete, then cut.
    run(
        "ipvsadm",
        &["-d", "-t", &vip.to_string(), "-r", &dest.to_string()],
    );
    let diag = SockDiag::connect().expect("sock_diag socket");
    let destroyed = diag.destroy_clients(&ours).expect("SOCK_DESTROY");
    assert_eq!(destroyed, 1);

    // The idle client learns at once, without sending anything.
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let err = client.read(&mut buf).expect_err("the socket was destroyed");
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");

    // A second destroy finds nothing: Ok(false), not an error.
    assert!(!diag.destroy(local, vip).expect("destroy again"));
}
