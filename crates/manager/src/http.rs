//! The daemon's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, and the
//! read-only `/status` page ([`crate::page`]).
//!
//! Plain HTTP/1.1 on hyper. No profiling or debug endpoint exists, so none
//! can be left open by accident.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::page::Page;

/// What `/healthz` and `/readyz` report, updated by the reconcile loop.
///
/// Judged on the monotonic clock: a wall-clock jump (NTP stepping a node's
/// clock by hours) must neither hide a stalled loop nor fail a healthy one.
#[derive(Debug)]
pub struct Status {
    /// The origin of `last_pass_ms`.
    origin: Instant,
    /// When the loop last finished a pass, in ms after `origin` plus one
    /// (0: never).
    last_pass_ms: AtomicU64,
    /// The last pass left the kernel as desired.
    converged: AtomicBool,
    /// The loop is considered stuck after this long without a pass.
    stall_after: Duration,
    /// What `/status` shows, recorded by the loop.
    pub page: Page,
}

impl Status {
    pub fn new(resync_interval: Duration) -> Status {
        Status {
            origin: Instant::now(),
            last_pass_ms: AtomicU64::new(0),
            converged: AtomicBool::new(false),
            // A pass runs at least every resync interval; allow for a slow
            // netlink call or two before calling the loop dead.
            stall_after: resync_interval
                .saturating_mul(10)
                .max(Duration::from_secs(10)),
            page: Page::default(),
        }
    }

    fn ms_at(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.origin).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
    }

    /// Records a finished pass.
    pub fn pass_done(&self, converged: bool) {
        self.last_pass_ms
            .store(self.ms_at(Instant::now()), Ordering::Relaxed);
        self.converged.store(converged, Ordering::Relaxed);
    }

    /// The loop ran recently.
    pub fn alive(&self) -> bool {
        self.alive_at(Instant::now())
    }

    fn alive_at(&self, now: Instant) -> bool {
        let last = self.last_pass_ms.load(Ordering::Relaxed);
        let stall = u64::try_from(self.stall_after.as_millis()).unwrap_or(u64::MAX);
        last != 0 && self.ms_at(now).saturating_sub(last) <= stall
    }

    /// The loop is alive and the kernel matches the desired state.
    pub fn ready(&self) -> bool {
        self.alive() && self.converged.load(Ordering::Relaxed)
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route<B>(req: &Request<B>, metrics: &Metrics, status: &Status) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" if status.alive() => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/healthz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the reconcile loop has not finished a pass recently\n".into(),
        ),
        "/readyz" if status.ready() => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the kernel does not match the desired state yet\n".into(),
        ),
        "/status" => {
            let now = std::time::SystemTime::now();
            let (alive, ready) = (status.alive(), status.ready());
            if wants_json(req) {
                reply(
                    StatusCode::OK,
                    "application/json",
                    status.page.json(now, alive, ready).to_string() + "\n",
                )
            } else {
                reply(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    status.page.text(now, alive, ready),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz or /status\n".into(),
        ),
    }
}

/// `/status` as JSON: `?format=json`, or an `Accept` naming
/// `application/json` (and not `?format=text`). A terminal's `curl` sends
/// `*/*` and gets text.
fn wants_json<B>(req: &Request<B>) -> bool {
    let query = req.uri().query().unwrap_or_default();
    let format = query.split('&').find_map(|kv| kv.strip_prefix("format="));
    match format {
        Some("json") => true,
        Some(_) => false,
        None => req
            .headers()
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json")),
    }
}

/// Bounds on what the listener accepts. It binds on the host network, where
/// anything on the node's network can reach it, and must never take from
/// the daemon the memory and file descriptors its netlink sockets and
/// probes need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A client must send a whole request head within this time, the first
    /// one and every later one on a kept-alive connection (so it is also the
    /// idle timeout).
    pub header_read_timeout: Duration,
    /// Connections served at once; at the cap, the oldest is closed to make
    /// room for the new one.
    pub max_connections: usize,
    /// The largest request head read.
    pub max_header_bytes: usize,
    /// The first wait after a failed accept (EMFILE, ENFILE, ENOBUFS),
    /// doubled on each failure in a row up to a second, so that the loop
    /// never spins.
    pub accept_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            // Prometheus, kubelet's probes and a person with curl need a
            // handful; the rest is abuse.
            max_connections: 64,
            max_header_bytes: 8 * 1024,
            accept_backoff: Duration::from_millis(50),
        }
    }
}

/// One connection in the `http_connections` gauge, for as long as it lives
/// (however it ends: served, timed out, or closed to make room).
struct Counted(Metrics);

impl Counted {
    fn new(metrics: &Metrics) -> Counted {
        metrics.http_connections.inc();
        Counted(metrics.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.http_connections.dec();
    }
}

/// Binds `addr` (so a busy port is an error at start, not later) and returns
/// the task serving it, with the default [`Limits`].
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    status: Arc<Status>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, metrics, status, Limits::default()).await
}

pub async fn serve_with(
    addr: SocketAddr,
    metrics: Metrics,
    status: Arc<Status>,
    limits: Limits,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut backoff = limits.accept_backoff;
        // The connections being served, oldest first.
        let mut live: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = limits.accept_backoff;
                    stream
                }
                Err(e) => {
                    metrics.http_accept_errors.inc();
                    tracing::debug!(error = %e, wait = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            live.retain(|c| !c.is_finished());
            // At the cap the *oldest* connection makes room, not the new
            // one: a flood of slow or idle connections then cycles through
            // the slots in a fraction of its read timeout, while a real
            // client (a probe, Prometheus, curl) sends its request at once
            // and is answered before its turn to be closed comes.
            if live.len() >= limits.max_connections
                && let Some(oldest) = live.pop_front()
            {
                oldest.abort();
                let _ = oldest.await;
                metrics.http_rejected.inc();
            }
            let metrics = metrics.clone();
            let status = status.clone();
            live.push_back(tokio::spawn(async move {
                let _counted = Counted::new(&metrics);
                let m = metrics.clone();
                let svc = service_fn(move |req| {
                    let r = route(&req, &m, &status);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .max_buf_size(limits.max_header_bytes.max(8192))
                    .max_header_size(limits.max_header_bytes)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }));
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn endpoints_follow_the_loop() {
        let status = Arc::new(Status::new(Duration::from_secs(1)));
        let (addr, _task) = serve(
            "127.0.0.1:0".parse().expect("addr"),
            Metrics::new(),
            status.clone(),
        )
        .await
        .expect("serve");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        status.pass_done(false);
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        status.pass_done(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(m.contains("apiserver_proxy_build_info"), "{m}");
        assert!(get(addr, "/debug/pprof").await.starts_with("HTTP/1.1 404"));
    }

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(500),
            max_connections: 32,
            ..Limits::default()
        }
    }

    /// `get` that says None where the listener closed or reset the
    /// connection (it was full).
    async fn try_get(addr: SocketAddr, path: &str) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    /// Whether `/healthz` answers 200 before `limit`, trying again while
    /// the listener is full.
    async fn healthz_answers(addr: SocketAddr, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            let attempt = tokio::time::timeout(Duration::from_secs(2), try_get(addr, "/healthz"));
            if let Ok(Some(r)) = attempt.await
                && r.starts_with("HTTP/1.1 200")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_trickling_connections_cannot_starve_the_listener() {
        let status = Arc::new(Status::new(Duration::from_secs(1)));
        status.pass_done(true);
        let metrics = Metrics::new();
        let (addr, _task) = serve_with(
            "127.0.0.1:0".parse().expect("addr"),
            metrics.clone(),
            status,
            limits(),
        )
        .await
        .expect("serve");
        // Many connections that never send a request, and some that send
        // a request head one byte at a time and never finish it.
        let mut idle = Vec::new();
        for _ in 0..300 {
            if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                idle.push(s);
            }
        }
        let mut trickle = Vec::new();
        for s in idle.iter_mut().take(20) {
            let _ = s.write_all(b"G").await;
        }
        for _ in 0..20 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX: ").await;
                trickle.push(s);
            }
        }
        assert!(
            healthz_answers(addr, Duration::from_secs(30)).await,
            "the listener never answered /healthz"
        );
        let m = metrics.render();
        let served = m
            .lines()
            .find(|l| l.starts_with("apiserver_proxy_http_connections "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("gauge");
        assert!(
            served <= 32.0,
            "{served} connections served at once, cap 32"
        );
        assert!(
            m.lines().any(
                |l| l.starts_with("apiserver_proxy_http_connections_rejected_total ")
                    && !l.ends_with(" 0")
            ),
            "{m}"
        );
        drop((idle, trickle));
    }

    #[tokio::test]
    async fn a_kept_alive_connection_that_goes_quiet_is_closed() {
        let status = Arc::new(Status::new(Duration::from_secs(1)));
        let (addr, _task) = serve_with(
            "127.0.0.1:0".parse().expect("addr"),
            Metrics::new(),
            status,
            limits(),
        )
        .await
        .expect("serve");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Read until the server closes; a connection kept open forever by
        // an idle client would hang here until the generous bound.
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "the idle connection was never closed");
        assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// Any method, path and query a client can send is answered with a
        /// status, never a panic.
        #[test]
        fn any_request_line_gets_an_answer(
            method in "[A-Z]{1,10}",
            path in "/[ -~]{0,64}",
        ) {
            let status = Status::new(Duration::from_secs(1));
            let Ok(req) = Request::builder().method(method.as_str()).uri(path.as_str()).body(()) else {
                return Ok(());
            };
            let r = route(&req, &Metrics::new(), &status);
            proptest::prop_assert!(r.status().as_u16() >= 200);
        }
    }

    /// `/status`: JSON for programs (by query or Accept), text for a
    /// terminal; GET only, like every path.
    #[test]
    fn the_status_page_answers_programs_in_json_and_people_in_text() {
        let status = Status::new(Duration::from_secs(1));
        status.pass_done(true);
        let body = |r: Response<Full<Bytes>>| {
            let ct = r
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (r.status(), ct)
        };
        let get = |uri: &str, accept: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(a) = accept {
                b = b.header(hyper::header::ACCEPT, a);
            }
            body(route(
                &b.body(()).expect("request"),
                &Metrics::new(),
                &status,
            ))
        };
        assert_eq!(
            get("/status", None),
            (StatusCode::OK, "text/plain; charset=utf-8".into())
        );
        assert_eq!(get("/status", Some("*/*")).1, "text/plain; charset=utf-8");
        assert_eq!(get("/status?format=json", None).1, "application/json");
        assert_eq!(
            get("/status", Some("application/json")).1,
            "application/json"
        );
        assert_eq!(
            get("/status?format=text", Some("application/json")).1,
            "text/plain; charset=utf-8"
        );
        let post = Request::builder()
            .method("POST")
            .uri("/status")
            .body(())
            .expect("request");
        assert_eq!(
            route(&post, &Metrics::new(), &status).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let json = status.page.json(std::time::SystemTime::now(), true, true);
        assert_eq!(json["kind"], "DaemonStatus");
        assert_eq!(json["alive"], true);
    }

    #[test]
    fn liveness_is_judged_on_the_monotonic_clock() {
        let status = Status::new(Duration::from_secs(1));
        let start = Instant::now();
        assert!(!status.alive_at(start), "no pass yet");
        status.pass_done(true);
        assert!(status.alive_at(Instant::now()));
        assert!(!status.alive_at(Instant::now() + Duration::from_secs(11)));
        // A huge resync interval must not overflow.
        let slow = Status::new(Duration::from_secs(u64::MAX / 4));
        slow.pass_done(true);
        assert!(slow.alive());
    }
}
