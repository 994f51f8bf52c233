//! A small controllable apiserver stand-in for health tests and the
//! failover figures: TLS (or plain, or mute), `/readyz` with a switchable
//! status, `/livez`, optional client-certificate authentication, and a
//! `kill` that resets every connection as a crashed process does.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use apiserver_proxy_health::{HealthConfig, HealthEvent, State};
use apiserver_proxy_testkit::tls::{Ca, CertKey};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use socket2::{Domain, SockRef, Socket, Type};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

/// How the server speaks.
#[derive(Clone)]
pub enum Speak {
    Plain,
    Tls(Arc<rustls::ServerConfig>),
    /// Accepts TCP, reads, never answers: a TLS handshake never completes.
    Mute,
}

struct Control {
    readyz: AtomicU16,
    hang: AtomicBool,
    require_client_cert: AtomicBool,
    readyz_requests: AtomicU64,
    /// Answer with `Connection: close` (the server closes after the answer).
    connection_close: AtomicBool,
    /// Close a connection once it has been idle this long (ms; 0: never),
    /// counted from the accept and from each answer.
    idle_close_ms: AtomicU64,
}

/// A running test server. Stops (with resets) on [`ProbeServer::kill`] or drop.
pub struct ProbeServer {
    pub addr: SocketAddr,
    control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The server's single-threaded runtime, for [`ProbeServer::freeze`].
    runtime: tokio::runtime::Handle,
}

impl ProbeServer {
    /// Listens on `addr` in the calling thread's network namespace.
    pub fn start(addr: SocketAddr, speak: Speak) -> ProbeServer {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        if addr.is_ipv6() {
            socket.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        socket.bind(&addr.into()).expect("bind test server");
        socket.listen(1024).expect("listen");
        socket.set_nonblocking(true).expect("nonblocking");
        let std_listener: std::net::TcpListener = socket.into();
        let addr = std_listener.local_addr().expect("local addr");
        let control = Arc::new(Control {
            readyz: AtomicU16::new(200),
            hang: AtomicBool::new(false),
            require_client_cert: AtomicBool::new(false),
            readyz_requests: AtomicU64::new(0),
            connection_close: AtomicBool::new(false),
            idle_close_ms: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let c = control.clone();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            let _ = handle_tx.send(rt.handle().clone());
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                tokio::select! {
                    _ = stopped => {}
                    _ = accept_loop(listener, speak, c) => {}
                }
            });
            // Dropping the runtime drops every connection; with SO_LINGER 0
            // each one is reset, as when the process dies.
            drop(rt);
        });
        let runtime = handle_rx.recv().expect("server runtime handle");
        ProbeServer {
            addr,
            control,
            stop: Some(stop),
            thread: Some(thread),
            runtime,
        }
    }

    /// Stops the server's only thread for `d`, as SIGSTOP would stop an
    /// apiserver: its kernel still accepts connections and acknowledges
    /// data, nothing is answered. Returns at once.
    pub fn freeze(&self, d: Duration) {
        self.runtime.spawn(async move { std::thread::sleep(d) });
    }

    pub fn set_readyz(&self, status: u16) {
        self.control.readyz.store(status, Ordering::SeqCst);
    }

    /// Makes `/readyz` never answer (true) or answer again (false).
    pub fn set_hang(&self, hang: bool) {
        self.control.hang.store(hang, Ordering::SeqCst);
    }

    /// Answer 401 to requests without a verified client certificate, as an
    /// apiserver with anonymous auth disabled does.
    pub fn require_client_cert(&self, on: bool) {
        self.control.require_client_cert.store(on, Ordering::SeqCst);
    }

    /// Answer every request with `Connection: close`, as a server in
    /// graceful shutdown or behind a non-keep-alive proxy does.
    pub fn set_connection_close(&self, on: bool) {
        self.control.connection_close.store(on, Ordering::SeqCst);
    }

    /// Close connections idle for `after` (since accept or their last
    /// answer), as a server with a short keep-alive timeout does. Applies to
    /// connections accepted afterwards.
    pub fn set_idle_close(&self, after: Option<Duration>) {
        let ms = after.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.control.idle_close_ms.store(ms, Ordering::SeqCst);
    }

    pub fn readyz_requests(&self) -> u64 {
        self.control.readyz_requests.load(Ordering::SeqCst)
    }

    /// Closes the listener and resets every connection; returns when done.
    pub fn kill(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, speak: Speak, control: Arc<Control>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        let speak = speak.clone();
        let control = control.clone();
        tokio::spawn(async move {
            match speak {
                Speak::Mute => {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    std::future::pending::<()>().await;
                }
                Speak::Plain => serve(stream, false, false, control).await,
                Speak::Tls(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let has_cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty());
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve(tls, has_cert, h2, control).await;
                    }
                }
            }
        });
    }
}

/// Serves one connection: HTTP/2 when `h2` (the client chose it in ALPN,
/// as the health checker does for its heartbeat), HTTP/1.1 otherwise.
async fn serve<S>(io: S, has_client_cert: bool, h2: bool, control: Arc<Control>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let answered = Arc::new(tokio::sync::Notify::new());
    let idle_close = match control.idle_close_ms.load(Ordering::SeqCst) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let close_after_answer = control.connection_close.load(Ordering::SeqCst);
    let on_answer = answered.clone();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let control = control.clone();
        let on_answer = on_answer.clone();
        async move {
            let (status, body) = match req.uri().path() {
                "/readyz" => {
                    control.readyz_requests.fetch_add(1, Ordering::SeqCst);
                    if control.hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    if control.require_client_cert.load(Ordering::SeqCst) && !has_client_cert {
                        (401, "Unauthorized")
                    } else {
                        let s = control.readyz.load(Ordering::SeqCst);
                        (
                            s,
                            if s == 200 {
                                "ok"
                            } else {
                                "readyz check failed"
                            },
                        )
                    }
                }
                "/livez" => (200, "ok"),
                _ => (404, "not found"),
            };
            let mut resp = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
            if control.connection_close.load(Ordering::SeqCst) {
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            on_answer.notify_one();
            Ok::<_, Infallible>(resp)
        }
    });
    // Both protocols through one builder, which reads the preface; HTTP/2
    // has no `Connection: close`, so there the server closes (GOAWAY) once
    // it has answered.
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let close_on_answer = h2 && close_after_answer;
    if idle_close.is_none() && !close_on_answer {
        let _ = conn.await;
        return;
    }
    let far = Duration::from_secs(3600);
    let mut deadline = tokio::time::Instant::now() + idle_close.unwrap_or(far);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = answered.notified() => {
                if close_on_answer && !closing {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                deadline = tokio::time::Instant::now() + idle_close.unwrap_or(far);
            }
            () = tokio::time::sleep_until(deadline), if !closing => {
                // Idle (or busy: then after the answer in flight) close.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Runs `f` on a fresh thread moved into a private network namespace, in a
/// multi-threaded runtime whose workers inherit it.
pub fn in_netns<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let result = std::thread::spawn(move || {
        apiserver_proxy_testkit::netns::isolate();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        rt.block_on(f());
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Starts a server inside `ns` (a thread there owns it).
pub fn start_in(
    ns: &apiserver_proxy_testkit::netns::Netns,
    addr: SocketAddr,
    speak: Speak,
) -> ProbeServer {
    let server = ns
        .spawn(move || ProbeServer::start(addr, speak))
        .join()
        .expect("start server in namespace");
    wait_reachable(addr);
    server
}

/// Waits until a TCP connection to `addr` succeeds (a fresh veth, IPv6
/// above all, may need a moment before it carries packets).
pub fn wait_reachable(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "test server {addr} not reachable within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA, written to a file, with an apiserver certificate for `ips`.
pub struct Pki {
    pub ca: Ca,
    pub leaf: CertKey,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(ips: &[IpAddr]) -> Pki {
        let ca = Ca::new("kubernetes");
        let leaf = ca.apiserver_cert(ips);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), &ca.cert.cert_pem).expect("write CA");
        Pki { ca, leaf, dir }
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn server(&self) -> Speak {
        Speak::Tls(apiserver_proxy_testkit::tls::server_config(
            &self.leaf, None,
        ))
    }

    /// Writes a client certificate (cert, key) signed by this CA.
    pub fn client_files(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let c = self.ca.client_cert("system:node:test-node", "system:nodes");
        let cert = self.dir.path().join("client.crt");
        let key = self.dir.path().join("client.key");
        std::fs::write(&cert, &c.cert_pem).expect("write client cert");
        std::fs::write(&key, &c.key_pem).expect("write client key");
        (cert, key)
    }

    /// A fast config for tests: short interval, verified against this CA.
    pub fn config(&self) -> HealthConfig {
        let mut c = HealthConfig {
            interval: Duration::from_millis(300),
            jitter: Duration::from_millis(50),
            ..HealthConfig::default()
        };
        c.tls.ca_file = Some(self.ca_file());
        c
    }
}

/// The next event, or a panic naming what was awaited.
pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<HealthEvent>, what: &str) -> HealthEvent {
    match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("event channel closed while waiting for {what}"),
        Err(_) => panic!("no event within 20 s while waiting for {what}"),
    }
}

/// Asserts that the next event is `state`, and returns it.
pub async fn expect_state(
    rx: &mut mpsc::UnboundedReceiver<HealthEvent>,
    state: State,
) -> HealthEvent {
    let ev = next_event(rx, &format!("{state}")).await;
    assert_eq!(ev.state, state, "expected {state}, got {ev:?}");
    ev
}
