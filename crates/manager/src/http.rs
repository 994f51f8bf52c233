//! The daemon's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.
//!
//! Plain HTTP/1.1 on hyper. No profiling or debug endpoint exists, so none
//! can be left open by accident.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What `/healthz` and `/readyz` report, updated by the reconcile loop.
#[derive(Debug)]
pub struct Status {
    /// When the loop last finished a pass (ms since the epoch).
    last_pass_ms: AtomicU64,
    /// The last pass left the kernel as desired.
    converged: AtomicBool,
    /// The loop is considered stuck after this long without a pass.
    stall_after: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Status {
    pub fn new(resync_interval: Duration) -> Status {
        Status {
            last_pass_ms: AtomicU64::new(0),
            converged: AtomicBool::new(false),
            // A pass runs at least every resync interval; allow for a slow
            // netlink call or two before calling the loop dead.
            stall_after: (resync_interval * 10).max(Duration::from_secs(10)),
        }
    }

    /// Records a finished pass.
    pub fn pass_done(&self, converged: bool) {
        self.last_pass_ms.store(now_ms(), Ordering::Relaxed);
        self.converged.store(converged, Ordering::Relaxed);
    }

    /// The loop ran recently.
    pub fn alive(&self) -> bool {
        let last = self.last_pass_ms.load(Ordering::Relaxed);
        last != 0 && now_ms().saturating_sub(last) <= self.stall_after.as_millis() as u64
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

fn route(req: &Request<Incoming>, metrics: &Metrics, status: &Status) -> Response<Full<Bytes>> {
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
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Binds `addr` (so a busy port is an error at start, not later) and returns
/// the task serving it.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    status: Arc<Status>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let status = status.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let r = route(&req, &metrics, &status);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
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
}
