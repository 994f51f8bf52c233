//! Health checking against real servers over real sockets: in-process
//! TLS servers inside network namespaces that can be killed, black-holed,
//! slowed or switched to not-ready. Runs on the host as root.
//!
//! Every test asserts the order and kind of state changes; waits are
//! generous upper bounds, never timing budgets.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver_proxy_health::{
    Checker, ClientCert, Error, FailureKind, HealthConfig, HeartbeatConfig, Mode, Outcome, Phase,
    ProbeKind, Reason, State, TlsProblem, probe_once,
};
use apiserver_proxy_testkit::netns::Netns;
use apiserver_proxy_types::Endpoint;
use support::{Pki, Speak, expect_state, in_netns, next_event, start_in};

const PORT: u16 = 6443;

fn ep(ip: IpAddr, port: u16) -> Endpoint {
    Endpoint::new(ip, port)
}

#[test]
fn killed_server_is_dead_at_once_and_comes_back_after_rise() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(&ns, backend.0, pki.server());
        let checker = Checker::new(pki.config()).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        let ev = expect_state(&mut rx, State::Ready).await;
        assert_eq!(ev.previous, None);
        assert_eq!(ev.reason, Reason::Status(200));

        server.kill();
        let dead = expect_state(&mut rx, State::Dead).await;
        // The reset is seen on the idle connection and confirmed by a
        // refused reconnect.
        match &dead.reason {
            Reason::Lost { cause, confirm } => {
                assert!(
                    matches!(**cause, Reason::Reset | Reason::Closed),
                    "{dead:?}"
                );
                assert_eq!(**confirm, Reason::Refused, "{dead:?}");
            }
            other => panic!("expected a lost connection, got {other}"),
        }
        assert_eq!(dead.previous, Some(State::Ready));

        let probes_before = checker.stats()[&backend].probes;
        let server = start_in(&ns, backend.0, pki.server());
        let ev = expect_state(&mut rx, State::Ready).await;
        assert_eq!(ev.previous, Some(State::Dead));
        // rise = 2: two good answers on the new connection before Ready.
        let probes_after = checker.stats()[&backend].probes;
        assert!(
            probes_after - probes_before >= 2,
            "Ready after {} probes, rise is 2",
            probes_after - probes_before
        );
        let stats = &checker.stats()[&backend];
        assert!(stats.connections_lost >= 1, "{stats:?}");
        assert!(
            stats.failures.contains_key(&FailureKind::Refused),
            "{stats:?}"
        );
        drop(server);
    });
}

/// Probes a minute apart, so only a liveness signal can notice a silent
/// host; `tune` says which one is left in reach. rise = 1 because with
/// probes a minute apart a second one would take long.
fn black_hole_is_found_and_recovers(tune: fn(&mut HealthConfig), reason: Reason) {
    in_netns(move || async move {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let _server = start_in(&ns, backend.0, pki.server());
        let mut config = HealthConfig {
            interval: Duration::from_secs(60),
            jitter: Duration::from_secs(1),
            rise: 1,
            ..pki.config()
        };
        tune(&mut config);
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;

        ns.black_hole();
        let dead = expect_state(&mut rx, State::Dead).await;
        assert_eq!(dead.reason, reason, "{dead:?}");

        ns.restore();
        let back = expect_state(&mut rx, State::Ready).await;
        assert_eq!(back.previous, Some(State::Dead));
    });
}

/// No heartbeat (the HTTP/1.1 path): the kernel's keepalive finds it.
#[test]
fn black_holed_server_is_dead_through_keepalive_and_recovers() {
    black_hole_is_found_and_recovers(
        |c| c.heartbeat = HeartbeatConfig::OFF,
        Reason::KeepaliveTimeout,
    );
}

/// The heartbeat alone finds a silent host: keepalive is pushed out of
/// reach (an hour of idleness), so only the PINGs, unacknowledged through
/// the kernel's tries, can end the connection; the reconnect confirming it
/// gets no answer to its SYN.
#[test]
fn black_holed_server_is_dead_through_the_heartbeat() {
    black_hole_is_found_and_recovers(
        |c| {
            c.keepalive.idle = Duration::from_secs(3600);
            c.keepalive.interval = Duration::from_secs(3600);
            c.keepalive.user_timeout = Duration::from_secs(3600);
            c.keepalive.inspect_socket = false;
        },
        Reason::Lost {
            cause: Box::new(Reason::KeepaliveTimeout),
            confirm: Box::new(Reason::Timeout(Phase::Connect)),
        },
    );
}

/// A backend found ready by a checker with its defaults but probes a minute
/// apart, so that only liveness can change anything.
struct Quiet {
    ns: Netns,
    _pki: Pki,
    backend: Endpoint,
    server: support::ProbeServer,
    checker: Checker,
    rx: tokio::sync::mpsc::UnboundedReceiver<apiserver_proxy_health::HealthEvent>,
}

impl Quiet {
    async fn ready() -> Quiet {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(&ns, backend.0, pki.server());
        let config = HealthConfig {
            interval: Duration::from_secs(60),
            jitter: Duration::from_secs(1),
            ..pki.config()
        };
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;
        Quiet {
            ns,
            _pki: pki,
            backend,
            server,
            checker,
            rx,
        }
    }

    /// After `settle`, no event came, and `lost` connections were given up.
    async fn unchanged(&mut self, settle: Duration, what: &str, lost: u64) {
        tokio::time::sleep(settle).await;
        if let Ok(ev) = self.rx.try_recv() {
            panic!("{what} changed the state: {ev:?}");
        }
        let stats = &self.checker.stats()[&self.backend];
        assert_eq!(stats.connections_lost, lost, "{what}: {stats:?}");
    }
}

/// Three losses in a row of the same PING happen on a lossy link; the host
/// is alive and answers a SYN. Here every packet of the established
/// connection is dropped for 1.5 s (new connections' SYNs pass): the
/// heartbeat gives the connection up, the confirming reconnect connects,
/// and the backend never leaves service.
#[test]
fn an_unacknowledged_heartbeat_from_a_live_host_is_no_death() {
    in_netns(|| async {
        let mut q = Quiet::ready().await;
        q.ns.exec_ok(
            "nft",
            &[&format!(
                "add table inet apxflaky; \
                 add chain inet apxflaky in {{ type filter hook input priority -100; policy accept; }}; \
                 add rule inet apxflaky in tcp dport {PORT} tcp flags & syn == 0 drop"
            )],
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        q.ns.exec_ok("nft", &["delete table inet apxflaky"]);
        q.unchanged(Duration::from_secs(3), "1.5 s of lost packets", 1)
            .await;
    });
}

/// A stalled apiserver is not a dead one: while it is frozen (longer than
/// the readiness timeout) its kernel acknowledges the PING, and with no
/// readiness probe due nothing changes.
#[test]
fn a_stalled_apiserver_is_not_taken_for_a_silent_host() {
    in_netns(|| async {
        let mut q = Quiet::ready().await;
        // A PING is outstanding for most of it.
        q.server.freeze(Duration::from_secs(3));
        q.unchanged(Duration::from_secs(5), "a 3 s stall", 0).await;
    });
}

#[test]
fn black_hole_under_an_outstanding_request_is_dead_from_retransmits() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(&ns, backend.0, pki.server());
        // A long request timeout and user timeout, so that only the
        // retransmission check can be first (HTTP/1.1: no heartbeat).
        let mut config = HealthConfig {
            timeout: Duration::from_secs(15),
            heartbeat: HeartbeatConfig::OFF,
            ..pki.config()
        };
        config.keepalive.user_timeout = Duration::from_secs(15);
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;
        // The next probe (300 ms interval) goes out into the black hole,
        // long before keepalive (1 s idle) could notice.
        ns.black_hole();
        let dead = expect_state(&mut rx, State::Dead).await;
        assert_eq!(dead.reason, Reason::Unacknowledged, "{dead:?}");
        ns.restore();
        expect_state(&mut rx, State::Ready).await;
        drop(server);
    });
}

/// The kernel gives up on a readiness request (`TCP_USER_TIMEOUT`) before
/// anything else does. hyper hands that error to the request and ends the
/// connection cleanly, so the cause has to be taken from the request: read
/// as a clean close, it cost a reconnect into the black hole (1 s more)
/// before the backend was dead.
#[test]
fn kernel_timeout_under_a_request_is_dead_at_once_not_a_close() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let _server = start_in(&ns, backend.0, pki.server());
        // Only the kernel's user timeout can end the request: no socket
        // inspection, a request timeout far beyond it.
        let mut config = HealthConfig {
            timeout: Duration::from_secs(15),
            heartbeat: HeartbeatConfig::OFF,
            ..pki.config()
        };
        config.keepalive.inspect_socket = false;
        config.keepalive.user_timeout = Duration::from_secs(2);
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;
        // The next probe (300 ms interval) goes out into the black hole.
        ns.black_hole();
        let dead = expect_state(&mut rx, State::Dead).await;
        assert_eq!(dead.reason, Reason::KeepaliveTimeout, "{dead:?}");
        ns.restore();
        expect_state(&mut rx, State::Ready).await;
    });
}

#[test]
fn without_socket_inspection_a_black_hole_under_a_request_is_confirmed_by_reconnect() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let _server = start_in(&ns, backend.0, pki.server());
        let mut config = HealthConfig {
            timeout: Duration::from_secs(1),
            heartbeat: HeartbeatConfig::OFF,
            ..pki.config()
        };
        config.keepalive.inspect_socket = false;
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;
        ns.black_hole();
        let dead = expect_state(&mut rx, State::Dead).await;
        assert_eq!(
            dead.reason,
            Reason::Lost {
                cause: Box::new(Reason::Timeout(Phase::Request)),
                confirm: Box::new(Reason::Timeout(Phase::Connect)),
            },
            "{dead:?}"
        );
        ns.restore();
    });
}

#[test]
fn slow_readyz_times_out_as_not_ready_and_recovers() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(&ns, backend.0, pki.server());
        let config = HealthConfig {
            timeout: Duration::from_millis(500),
            ..pki.config()
        };
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;

        server.set_hang(true);
        let slow = expect_state(&mut rx, State::NotReady).await;
        // Alive (the confirming reconnect worked) but not answering.
        assert_eq!(slow.reason, Reason::Timeout(Phase::Request), "{slow:?}");

        server.set_hang(false);
        let back = expect_state(&mut rx, State::Ready).await;
        assert_eq!(back.previous, Some(State::NotReady));
        assert!(checker.stats()[&backend].failures[&FailureKind::Timeout] >= 1);
    });
}

#[test]
fn readyz_flipping_200_500_200_drains_and_restores() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(&ns, backend.0, pki.server());
        let checker = Checker::new(pki.config()).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;
        let connects = checker.stats()[&backend].connects;

        server.set_readyz(500);
        let drained = expect_state(&mut rx, State::NotReady).await;
        assert_eq!(drained.reason, Reason::Status(500));
        server.set_readyz(200);
        let back = expect_state(&mut rx, State::Ready).await;
        assert_eq!(back.reason, Reason::Status(200));
        // All over the one persistent connection.
        assert_eq!(checker.stats()[&backend].connects, connects);
        assert!(server.readyz_requests() >= 4);
    });
}

#[test]
fn wrong_ca_and_wrong_name_are_reported_as_tls_problems() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        // Signed by a CA the checker does not trust.
        let stranger = apiserver_proxy_testkit::tls::Ca::new("kubernetes");
        let foreign = stranger.apiserver_cert(&[ns.ip(false)]);
        let a = ep(ns.ip(false), 6443);
        let _sa = start_in(
            &ns,
            a.0,
            Speak::Tls(apiserver_proxy_testkit::tls::server_config(&foreign, None)),
        );
        // Signed by the right CA, without the name `kubernetes`.
        let unnamed = pki.ca.server_cert(&["etcd.example"], &[ns.ip(false)]);
        let b = ep(ns.ip(false), 6444);
        let _sb = start_in(
            &ns,
            b.0,
            Speak::Tls(apiserver_proxy_testkit::tls::server_config(&unnamed, None)),
        );

        let checker = Checker::new(pki.config()).expect("checker");
        let mut rx = checker.subscribe();
        checker.set_backends(&BTreeSet::from([a, b]));
        let mut seen = Vec::new();
        for _ in 0..2 {
            let ev = next_event(&mut rx, "two TLS failures").await;
            assert_eq!(ev.state, State::Dead, "{ev:?}");
            seen.push(ev);
        }
        seen.sort_by_key(|e| e.backend);
        match &seen[0].reason {
            Reason::Tls(TlsProblem::UnknownCa { ca, .. }) => {
                assert!(ca.ends_with("ca.crt"), "{ca}")
            }
            other => panic!("wrong CA: expected UnknownCa, got {other:?}"),
        }
        match &seen[1].reason {
            Reason::Tls(TlsProblem::NameMismatch { expected, .. }) => {
                assert_eq!(expected, "kubernetes")
            }
            other => panic!("wrong name: expected NameMismatch, got {other:?}"),
        }
        assert!(seen[1].reason.to_string().contains("\"kubernetes\""));

        // The same backend with the name it does carry is fine.
        let mut renamed = pki.config();
        renamed.tls.server_name = "etcd.example".to_string();
        let r = probe_once(&renamed, b).await.expect("probe");
        assert_eq!(r.state, State::Ready, "{r:?}");
        // And insecure_skip_verify accepts the stranger.
        let mut insecure = pki.config();
        insecure.tls.insecure_skip_verify = true;
        let r = probe_once(&insecure, a).await.expect("probe");
        assert_eq!(r.state, State::Ready, "{r:?}");
    });
}

#[test]
fn anonymous_401_is_alive_unknown_and_a_client_cert_gives_real_readiness() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(
            &ns,
            backend.0,
            Speak::Tls(apiserver_proxy_testkit::tls::server_config(
                &pki.leaf,
                Some(&pki.ca),
            )),
        );
        server.require_client_cert(true);

        // Anonymous: 401, alive with readiness unknown, and in service.
        let anonymous = Checker::new(pki.config()).expect("checker");
        let mut rx = anonymous.subscribe();
        anonymous.watch(backend);
        let ev = expect_state(&mut rx, State::Unknown).await;
        assert_eq!(ev.reason, Reason::Status(401));
        assert!(ev.state.in_service());
        // A failing readyz is invisible to it: still Unknown, no event.
        server.set_readyz(500);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(anonymous.state(backend), Some(State::Unknown));
        assert!(anonymous.stats()[&backend].probes_unknown >= 2);

        // With the node's client certificate: the real answer.
        let (cert_file, key_file) = pki.client_files();
        let mut config = pki.config();
        config.tls.client_cert = Some(ClientCert {
            cert_file,
            key_file,
        });
        let authed = Checker::new(config).expect("checker");
        let mut rx = authed.subscribe();
        authed.watch(backend);
        expect_state(&mut rx, State::NotReady).await;
        server.set_readyz(200);
        let ev = expect_state(&mut rx, State::Ready).await;
        assert_eq!(ev.reason, Reason::Status(200));
    });
}

#[test]
fn backend_that_never_completes_tls_is_dead_with_a_handshake_timeout() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let _server = start_in(&ns, backend.0, Speak::Mute);
        let config = HealthConfig {
            timeout: Duration::from_millis(500),
            ..pki.config()
        };
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        let ev = expect_state(&mut rx, State::Dead).await;
        assert_eq!(ev.reason, Reason::Timeout(Phase::TlsHandshake));
    });
}

#[test]
fn ipv6_backends_are_watched_like_ipv4_ones() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(true)]);
        let backend = ep(ns.ip(true), PORT);
        assert_eq!(backend.to_string(), format!("[{}]:{PORT}", ns.ipv6));
        let server = start_in(&ns, backend.0, pki.server());
        let checker = Checker::new(pki.config()).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        let ev = expect_state(&mut rx, State::Ready).await;
        assert_eq!(ev.backend, backend);
        server.set_readyz(500);
        expect_state(&mut rx, State::NotReady).await;
        server.kill();
        let dead = expect_state(&mut rx, State::Dead).await;
        assert!(matches!(dead.reason, Reason::Lost { .. }), "{dead:?}");
    });
}

#[test]
fn tcp_and_http_modes() {
    in_netns(|| async {
        let ns = Netns::new();
        let backend = ep(ns.ip(false), 8080);
        let server = start_in(&ns, backend.0, Speak::Plain);
        let base = HealthConfig {
            interval: Duration::from_millis(300),
            jitter: Duration::from_millis(50),
            ..HealthConfig::default()
        };
        let http = Checker::new(HealthConfig {
            mode: Mode::Http,
            ..base.clone()
        })
        .expect("http checker");
        let tcp = Checker::new(HealthConfig {
            mode: Mode::Tcp,
            ..base.clone()
        })
        .expect("tcp checker");
        let mut hrx = http.subscribe();
        let mut trx = tcp.subscribe();
        http.watch(backend);
        tcp.watch(backend);
        assert_eq!(
            expect_state(&mut hrx, State::Ready).await.reason,
            Reason::Status(200)
        );
        assert_eq!(
            expect_state(&mut trx, State::Ready).await.reason,
            Reason::Connected
        );
        server.set_readyz(503);
        assert_eq!(
            expect_state(&mut hrx, State::NotReady).await.reason,
            Reason::Status(503)
        );
        server.kill();
        expect_state(&mut hrx, State::Dead).await;
        let dead = expect_state(&mut trx, State::Dead).await;
        assert!(matches!(dead.reason, Reason::Lost { .. }), "{dead:?}");
        // No CA is needed outside https.
        assert!(
            probe_once(
                &HealthConfig {
                    mode: Mode::Tcp,
                    ..base
                },
                backend
            )
            .await
            .is_ok()
        );
    });
}

#[test]
fn probe_once_reports_refused_ready_and_not_ready() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let r = probe_once(&pki.config(), backend).await.expect("probe");
        assert_eq!((r.state, r.reason), (State::Dead, Reason::Refused));
        let server = start_in(&ns, backend.0, pki.server());
        let r = probe_once(&pki.config(), backend).await.expect("probe");
        assert_eq!((r.state, &r.reason), (State::Ready, &Reason::Status(200)));
        assert!(r.probe_latency.is_some());
        server.set_readyz(500);
        let r = probe_once(&pki.config(), backend).await.expect("probe");
        assert_eq!((r.state, r.reason), (State::NotReady, Reason::Status(500)));
    });
}

#[test]
fn set_backends_watches_and_unwatches_and_the_observer_sees_probes() {
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let a = ep(ns.ip(false), 6443);
        let b = ep(ns.ip(false), 6444);
        let _sa = start_in(&ns, a.0, pki.server());
        let _sb = start_in(&ns, b.0, pki.server());
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let checker = apiserver_proxy_health::Checker::with_observer(
            pki.config(),
            Arc::new(move |r| sink.lock().expect("records").push(r.clone())),
        )
        .expect("checker");
        let mut rx = checker.subscribe();
        checker.set_backends(&BTreeSet::from([a, b]));
        let mut ready = BTreeSet::new();
        while ready.len() < 2 {
            let ev = expect_state(&mut rx, State::Ready).await;
            ready.insert(ev.backend);
        }
        // A late subscriber gets the current states first.
        let mut late = checker.subscribe();
        let mut snapshot = BTreeSet::new();
        for _ in 0..2 {
            snapshot.insert(next_event(&mut late, "snapshot").await.backend);
        }
        assert_eq!(snapshot, BTreeSet::from([a, b]));

        checker.set_backends(&BTreeSet::from([b]));
        assert_eq!(checker.backends(), BTreeSet::from([b]));
        assert!(!checker.stats().contains_key(&a));
        assert!(!checker.watch(b), "already watched");
        let recs = records.lock().expect("records").clone();
        assert!(recs.iter().any(|r| r.backend == a
            && r.kind == ProbeKind::Readiness
            && r.outcome == Outcome::Ok
            && r.status == Some(200)));
        assert!(
            recs.iter()
                .any(|r| r.kind == ProbeKind::Connect && r.outcome == Outcome::Ok)
        );
    });
}

#[test]
fn configuration_errors_name_the_problem() {
    let missing = HealthConfig {
        tls: apiserver_proxy_health::TlsConfig {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        },
        ..HealthConfig::default()
    };
    match Checker::new(missing) {
        Err(e @ Error::CaFile { .. }) => assert!(e.to_string().contains("/nonexistent/ca.crt")),
        other => panic!("expected CaFile, got {other:?}"),
    }
    let bad_path = HealthConfig {
        mode: Mode::Http,
        path: "readyz".into(),
        ..HealthConfig::default()
    };
    assert!(matches!(Checker::new(bad_path), Err(Error::InvalidPath(_))));
    let bad_name = HealthConfig {
        mode: Mode::Https,
        tls: apiserver_proxy_health::TlsConfig {
            server_name: "not a name!".into(),
            insecure_skip_verify: true,
            ..Default::default()
        },
        ..HealthConfig::default()
    };
    assert!(matches!(
        Checker::new(bad_name),
        Err(Error::InvalidServerName(_))
    ));
    assert!(matches!("udp".parse::<Mode>(), Err(Error::InvalidMode(_))));
    assert_eq!("HTTPS".parse::<Mode>().ok(), Some(Mode::Https));
    let d = HealthConfig::default();
    assert_eq!(
        (
            d.mode,
            d.path.as_str(),
            d.interval,
            d.success_statuses.clone()
        ),
        (Mode::Https, "/readyz", Duration::from_secs(5), vec![200])
    );
    assert!(!d.tls.insecure_skip_verify);
    assert_eq!(d.tls.server_name, "kubernetes");
    assert_eq!(
        d.tls.ca_path(),
        std::path::PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    );
}

/// Stats are polled until `done` holds (at most 20 s, then a panic naming
/// `what`): a wait for progress, never a timing budget.
async fn wait_for_stats(
    checker: &Checker,
    backend: Endpoint,
    what: &str,
    done: impl Fn(&apiserver_proxy_health::BackendStats) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if checker.stats().get(&backend).is_some_and(&done) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within 20 s: {what}; {:?}",
            checker.stats().get(&backend)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_backend_that_closes_idle_connections_is_probed_once_per_interval() {
    // Regression: a connection that got an answer and was then closed (here
    // 20 ms after each answer, a keep-alive timeout shorter than the
    // interval) was replaced at once and the new one probed at once:
    // connect + GET back to back, about a hundred per second.
    in_netns(|| async {
        let ns = Netns::new();
        let backend = ep(ns.ip(false), 8080);
        let server = start_in(&ns, backend.0, Speak::Plain);
        server.set_idle_close(Some(Duration::from_millis(20)));
        let interval = Duration::from_millis(500);
        let checker = Checker::new(HealthConfig {
            mode: Mode::Http,
            interval,
            jitter: Duration::ZERO,
            ..HealthConfig::default()
        })
        .expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;
        let before = checker.stats()[&backend].clone();
        let started = std::time::Instant::now();
        // Let several intervals pass, and at least three more probes.
        wait_for_stats(&checker, backend, "three more probes", |s| {
            s.probes >= before.probes + 3
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = checker.stats()[&backend].clone();
        let elapsed = started.elapsed();
        // Slowness can only lower these counts: at most one probe per
        // interval (plus the one due at the start), and per probe one
        // reconnect confirming the close plus one opened for the probe.
        let intervals = (elapsed.as_secs_f64() / interval.as_secs_f64()).floor() as u64;
        let probes = after.probes - before.probes;
        let connects = after.connects - before.connects;
        assert!(
            probes <= intervals + 1,
            "{probes} probes in {elapsed:?} at one per {interval:?}"
        );
        assert!(
            connects <= 2 * (intervals + 1),
            "{connects} connects in {elapsed:?} at one probe per {interval:?}"
        );
        // Alive and answering all along: no state change at all.
        assert!(rx.try_recv().is_err(), "{:?}", rx.try_recv());
        assert_eq!(checker.state(backend), Some(State::Ready));
        assert_eq!(after.connect_failures, 0, "{after:?}");
    });
}

#[test]
fn an_answer_with_connection_close_is_used_not_lost() {
    // Regression: with `Connection: close` hyper ends the connection in the
    // same poll that delivers the answer; the answer was dropped and the
    // backend reported Dead (a 500 in graceful shutdown too).
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(&ns, backend.0, pki.server());
        server.set_connection_close(true);
        let checker = Checker::new(pki.config()).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        let ev = expect_state(&mut rx, State::Ready).await;
        assert_eq!((ev.previous, &ev.reason), (None, &Reason::Status(200)));
        server.set_readyz(500);
        let ev = expect_state(&mut rx, State::NotReady).await;
        assert_eq!(ev.reason, Reason::Status(500));
        server.set_readyz(200);
        let ev = expect_state(&mut rx, State::Ready).await;
        assert_eq!(ev.previous, Some(State::NotReady));
        let r = probe_once(&pki.config(), backend).await.expect("probe");
        assert_eq!((r.state, r.reason), (State::Ready, Reason::Status(200)));
    });
}

#[test]
fn a_consistently_slow_readyz_stays_not_ready_and_never_dead() {
    // Regression: a request timeout on the reconnect made after an earlier
    // request timeout was reported Dead although TCP and TLS worked, so a
    // slow /readyz flapped NotReady -> Dead -> NotReady.
    in_netns(|| async {
        let ns = Netns::new();
        let pki = Pki::new(&[ns.ip(false)]);
        let backend = ep(ns.ip(false), PORT);
        let server = start_in(&ns, backend.0, pki.server());
        let config = HealthConfig {
            timeout: Duration::from_millis(300),
            ..pki.config()
        };
        let checker = Checker::new(config).expect("checker");
        let mut rx = checker.subscribe();
        checker.watch(backend);
        expect_state(&mut rx, State::Ready).await;
        server.set_hang(true);
        let slow = expect_state(&mut rx, State::NotReady).await;
        assert_eq!(slow.reason, Reason::Timeout(Phase::Request), "{slow:?}");
        wait_for_stats(&checker, backend, "four request timeouts", |s| {
            s.failures.get(&FailureKind::Timeout).copied().unwrap_or(0) >= 4
        })
        .await;
        // Every reconnect worked: still NotReady, no Dead in between.
        assert!(rx.try_recv().is_err(), "{:?}", rx.try_recv());
        assert_eq!(checker.state(backend), Some(State::NotReady));
        server.set_hang(false);
        let back = expect_state(&mut rx, State::Ready).await;
        assert_eq!(back.previous, Some(State::NotReady));
    });
}

#[test]
fn out_of_range_settings_are_rejected_naming_the_field() {
    // Regression: these were accepted and then panicked (Duration and
    // Instant overflow) or misbehaved at run time.
    let hour = Duration::from_secs(3600);
    let too_long = hour + Duration::from_secs(1);
    let base = HealthConfig {
        mode: Mode::Http,
        ..HealthConfig::default()
    };
    let cases: Vec<(&str, HealthConfig)> = vec![
        (
            "interval",
            HealthConfig {
                interval: Duration::MAX,
                ..base.clone()
            },
        ),
        (
            "interval",
            HealthConfig {
                interval: too_long,
                ..base.clone()
            },
        ),
        (
            "timeout",
            HealthConfig {
                timeout: Duration::MAX,
                ..base.clone()
            },
        ),
        (
            "connect_timeout",
            HealthConfig {
                connect_timeout: too_long,
                ..base.clone()
            },
        ),
        (
            "max_backoff",
            HealthConfig {
                max_backoff: Duration::MAX,
                ..base.clone()
            },
        ),
        ("keepalive.idle", {
            let mut c = base.clone();
            c.keepalive.idle = Duration::ZERO;
            c
        }),
        ("keepalive.idle", {
            let mut c = base.clone();
            c.keepalive.idle = Duration::from_secs(32768);
            c
        }),
        ("keepalive.interval", {
            let mut c = base.clone();
            c.keepalive.interval = Duration::from_millis(500);
            c
        }),
        ("keepalive.count", {
            let mut c = base.clone();
            c.keepalive.count = 0;
            c
        }),
        ("keepalive.user_timeout", {
            let mut c = base.clone();
            c.keepalive.user_timeout = Duration::MAX;
            c
        }),
    ];
    for (field, config) in cases {
        match Checker::new(config.clone()) {
            Err(e @ Error::InvalidConfig(_)) => {
                assert!(e.to_string().contains(field), "{field}: {e}")
            }
            other => panic!("{field}: expected InvalidConfig, got {other:?} for {config:?}"),
        }
    }
    // The bounds themselves are accepted.
    let mut edge = HealthConfig {
        interval: hour,
        jitter: hour - Duration::from_secs(1),
        timeout: hour,
        connect_timeout: hour,
        max_backoff: hour,
        ..base
    };
    edge.keepalive.idle = Duration::from_secs(32767);
    edge.keepalive.interval = Duration::from_secs(1);
    edge.keepalive.user_timeout = hour;
    edge.validate().expect("the bounds are valid");
}
