//! A fake kube-apiserver speaking the real protocol for the objects
//! bcs-apiserver-proxy reads: list and watch of EndpointSlices
//! (discovery.k8s.io/v1) and core/v1 Endpoints in any namespace (objects live
//! in `default`), plus `/readyz`, `/livez`, `/healthz`, `/version` and the
//! discovery documents (`/api`, `/apis`, `/api/v1`,
//! `/apis/discovery.k8s.io/v1`).
//!
//! Behaviour that matters to clients is real: every change gets a new
//! `resourceVersion`; lists carry `metadata.resourceVersion`; watches stream
//! newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`, `ERROR`) from the requested version on; `labelSelector`
//! (`k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated) and `fieldSelector`
//! (`metadata.name`, `metadata.namespace`) filter; `timeoutSeconds` ends a
//! watch; a version older than the compacted history gets `410 Gone` (an
//! `ERROR` event with a `Status` on watch, HTTP 410 on list). Objects are
//! serialized with k8s-openapi types.
//!
//! Switches for tests: [`FakeApiServer::compact`], [`FakeApiServer::expire_watches`],
//! [`FakeApiServer::drop_connections`], [`FakeApiServer::set_serve_endpoint_slices`],
//! [`FakeApiServer::set_ready`], [`FakeApiServer::freeze_watches`],
//! [`FakeApiServer::stop`] / [`FakeApiServer::start`].
//!
//! Pagination (`limit`/`continue`) is ignored (lists return everything)
//! unless [`FakeApiServer::set_list_page_size`] is set; then lists come in
//! pages of at most that many items (fewer if `limit` asks for fewer), with a
//! `continue` token, as a real apiserver may. [`FakeApiServer::set_list_delay`]
//! delays every list response (each page), to make a crawling apiserver.
//! Authentication is not checked (requests are logged, see
//! [`FakeApiServer::requests`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ListMeta, ObjectMeta, Status,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::tls::{CertKey, server_config};

type Body = BoxBody<Bytes, Infallible>;

/// The label EndpointSlices of a service carry.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which collection an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Res {
    Slices,
    Endpoints,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvType {
    Added,
    Modified,
    Deleted,
}

impl EvType {
    fn as_str(self) -> &'static str {
        match self {
            EvType::Added => "ADDED",
            EvType::Modified => "MODIFIED",
            EvType::Deleted => "DELETED",
        }
    }
}

/// A stored object: its JSON (as served) and what selectors look at.
#[derive(Debug, Clone)]
struct Stored {
    name: String,
    labels: BTreeMap<String, String>,
    json: serde_json::Value,
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    res: Res,
    ty: EvType,
    object: Stored,
}

#[derive(Debug)]
struct State {
    rv: u64,
    objects: BTreeMap<(Res, String), Stored>,
    history: Vec<Change>,
    /// Versions below this are gone (410).
    compacted: u64,
    serve_slices: bool,
    ready: bool,
    live: bool,
    frozen: bool,
    bookmark_interval: Duration,
    /// At most this many items per list page (`None`: no paging).
    page_size: Option<usize>,
    /// Every list response (each page) is sent after this delay.
    list_delay: Duration,
    /// Bumped by `expire_watches`: open watches send 410 and end.
    expire_epoch: u64,
    requests: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped on every change that watches may care about.
    changes: watch::Sender<u64>,
    /// Bumped to cut every open connection.
    kill: watch::Sender<u64>,
    open_watches: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A running (or stopped) fake apiserver. Dropping it stops it.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeApiServer {
    /// Serves plain HTTP on `addr` (port 0 picks a free port).
    pub async fn plain(addr: SocketAddr) -> std::io::Result<FakeApiServer> {
        Self::serve(addr, None).await
    }

    /// Serves HTTPS on `addr` with `leaf` (for example
    /// `ca.apiserver_cert(&[ip])`), HTTP/1.1 and h2.
    pub async fn tls(addr: SocketAddr, leaf: &CertKey) -> std::io::Result<FakeApiServer> {
        Self::serve(addr, Some(server_config(leaf, None))).await
    }

    /// Serves on `addr` with the given TLS config, or plain HTTP.
    pub async fn serve(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<FakeApiServer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                objects: BTreeMap::new(),
                history: Vec::new(),
                compacted: 0,
                serve_slices: true,
                ready: true,
                live: true,
                frozen: false,
                bookmark_interval: Duration::from_secs(1),
                page_size: None,
                list_delay: Duration::ZERO,
                expire_epoch: 0,
                requests: Vec::new(),
            }),
            changes: watch::channel(0).0,
            kill: watch::channel(0).0,
            open_watches: AtomicUsize::new(0),
        });
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let server = FakeApiServer {
            shared,
            addr,
            tls,
            server: Mutex::new(None),
        };
        server.spawn(listener);
        Ok(server)
    }

    fn spawn(&self, listener: TcpListener) {
        let task = tokio::spawn(accept_loop(listener, self.shared.clone(), self.tls.clone()));
        let mut slot = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }

    /// The address served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops serving: closes the listener and every connection. The state
    /// (objects, versions) is kept for [`FakeApiServer::start`].
    pub fn stop(&self) {
        if let Some(task) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        self.shared.kill.send_modify(|n| *n += 1);
    }

    /// Serves again on the same address after [`FakeApiServer::stop`].
    pub fn start(&self) -> std::io::Result<()> {
        let listener = bind(self.addr)?;
        self.spawn(listener);
        Ok(())
    }

    /// Cuts every open connection (watches included) without stopping.
    pub fn drop_connections(&self) {
        self.shared.kill.send_modify(|n| *n += 1);
    }

    /// Creates or replaces an EndpointSlice in `default` (ADDED or MODIFIED).
    pub fn apply_slice(&self, mut slice: EndpointSlice) {
        normalize_meta(&mut slice.metadata);
        self.apply(Res::Slices, slice.metadata.clone(), slice, |s, rv| {
            s.metadata.resource_version = Some(rv)
        });
    }

    /// Deletes an EndpointSlice; false if it did not exist.
    pub fn delete_slice(&self, name: &str) -> bool {
        self.delete(Res::Slices, name)
    }

    /// Replaces all EndpointSlices by `slices` (deleting the others).
    pub fn set_slices(&self, slices: Vec<EndpointSlice>) {
        let keep: Vec<String> = slices
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let existing: Vec<String> = self.names(Res::Slices);
        for slice in slices {
            self.apply_slice(slice);
        }
        for name in existing.iter().filter(|n| !keep.contains(n)) {
            self.delete_slice(name);
        }
    }

    /// Creates or replaces a core/v1 Endpoints object in `default`.
    pub fn apply_endpoints(&self, mut endpoints: Endpoints) {
        normalize_meta(&mut endpoints.metadata);
        self.apply(
            Res::Endpoints,
            endpoints.metadata.clone(),
            endpoints,
            |e, rv| e.metadata.resource_version = Some(rv),
        );
    }

    /// Deletes an Endpoints object; false if it did not exist.
    pub fn delete_endpoints(&self, name: &str) -> bool {
        self.delete(Res::Endpoints, name)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Advances the resourceVersion without changing any object (as other
    /// objects in a real cluster do). Watches see it only through bookmarks.
    pub fn bump_resource_version(&self) -> u64 {
        let mut st = self.shared.lock();
        st.rv += 1;
        st.rv
    }

    /// Forgets the history: watching or listing from any version older than
    /// the current one now gets 410 Gone. Open watches are not affected
    /// (until they reconnect).
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Compacts, and makes every open watch receive an `ERROR` event with a
    /// 410 `Status` and end, as when a real watch falls out of the history
    /// window.
    pub fn expire_watches(&self) {
        {
            let mut st = self.shared.lock();
            st.compacted = st.rv;
            st.history.clear();
            st.expire_epoch += 1;
        }
        self.shared.notify();
    }

    /// Whether the EndpointSlice API is served; when not, its paths are 404
    /// and it is missing from discovery (an old cluster).
    pub fn set_serve_endpoint_slices(&self, serve: bool) {
        self.shared.lock().serve_slices = serve;
    }

    /// What `/readyz` answers (200 or 500).
    pub fn set_ready(&self, ready: bool) {
        self.shared.lock().ready = ready;
    }

    /// What `/livez` answers (200 or 500).
    pub fn set_live(&self, live: bool) {
        self.shared.lock().live = live;
    }

    /// While frozen, open and new watches send nothing at all (no events, no
    /// bookmarks): a stale watch. Unfreezing delivers what was held back.
    pub fn freeze_watches(&self, frozen: bool) {
        self.shared.lock().frozen = frozen;
        self.shared.notify();
    }

    /// How often watches that asked for bookmarks get one (default 1 s).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared.lock().bookmark_interval = every;
    }

    /// Lists come in pages of at most `size` items (`limit` may ask for
    /// fewer), continued with the `continue` token; `None` (the default)
    /// returns everything at once and ignores `limit`.
    pub fn set_list_page_size(&self, size: Option<usize>) {
        self.shared.lock().page_size = size.map(|n| n.max(1));
    }

    /// Delays every list response (each page; not watches, not other
    /// requests) by `delay`: a slow apiserver. Default zero.
    pub fn set_list_delay(&self, delay: Duration) {
        self.shared.lock().list_delay = delay;
    }

    /// Watches currently streaming.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Every request so far, as `METHOD PATH?QUERY`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    fn names(&self, res: Res) -> Vec<String> {
        self.shared
            .lock()
            .objects
            .keys()
            .filter(|(r, _)| *r == res)
            .map(|(_, n)| n.clone())
            .collect()
    }

    fn apply<T: Serialize>(
        &self,
        res: Res,
        meta: ObjectMeta,
        mut object: T,
        set_rv: impl FnOnce(&mut T, String),
    ) {
        let name = meta.name.clone().unwrap_or_default();
        {
            let mut st = self.shared.lock();
            st.rv += 1;
            let rv = st.rv;
            set_rv(&mut object, rv.to_string());
            let stored = Stored {
                name: name.clone(),
                labels: meta.labels.clone().unwrap_or_default(),
                json: serde_json::to_value(&object).unwrap_or_default(),
            };
            let ty = match st.objects.insert((res, name), stored.clone()) {
                Some(_) => EvType::Modified,
                None => EvType::Added,
            };
            st.history.push(Change {
                rv,
                res,
                ty,
                object: stored,
            });
        }
        self.shared.notify();
    }

    fn delete(&self, res: Res, name: &str) -> bool {
        {
            let mut st = self.shared.lock();
            let Some(mut stored) = st.objects.remove(&(res, name.to_string())) else {
                return false;
            };
            st.rv += 1;
            let rv = st.rv;
            if let Some(meta) = stored.json.get_mut("metadata") {
                meta["resourceVersion"] = serde_json::Value::String(rv.to_string());
            }
            st.history.push(Change {
                rv,
                res,
                ty: EvType::Deleted,
                object: stored,
            });
        }
        self.shared.notify();
        true
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn normalize_meta(meta: &mut ObjectMeta) {
    meta.namespace = Some("default".to_string());
    if meta.uid.is_none() {
        meta.uid = Some(format!(
            "00000000-0000-4000-8000-{:012x}",
            fnv(meta.name.as_deref().unwrap_or(""))
        ));
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3) & 0xffff_ffff_ffff
    })
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// How long the accept loop pauses after an accept error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let mut conns = JoinSet::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let mut kill = shared.kill.subscribe();
            kill.mark_unchanged();
            let serve = async {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_conn(stream, shared.clone()).await;
                        }
                    }
                    None => serve_conn(tcp, shared.clone()).await,
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = kill.changed() => {}
            }
        });
    }
}

async fn serve_conn<S>(stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move {
            // Logged on arrival, before any delay.
            let delay = {
                let mut st = shared.lock();
                st.requests.push(format!(
                    "{} {}",
                    req.method(),
                    req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
                ));
                if is_list(&req) {
                    st.list_delay
                } else {
                    Duration::ZERO
                }
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(handle(&shared, req))
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A list (not a watch) of a collection this fake serves.
fn is_list(req: &Request<Incoming>) -> bool {
    let path = req.uri().path().trim_end_matches('/');
    let collection = path.ends_with("/endpointslices") || path.ends_with("/endpoints");
    collection
        && !matches!(
            query(req).get("watch").map(String::as_str),
            Some("true" | "1")
        )
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    resp
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn status(code: u16, reason: &str, message: String) -> Status {
    Status {
        code: Some(i32::from(code)),
        reason: Some(reason.to_string()),
        message: Some(message),
        status: Some("Failure".to_string()),
        metadata: ListMeta::default(),
        details: None,
    }
}

fn error(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    json(code, &status(code.as_u16(), reason, message))
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    full(code, "text/plain; charset=utf-8", body)
}

/// The request's query as a map (later keys win), percent-decoded.
fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Req::Ne(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = part.split_once("==") {
            Req::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = part.split_once('=') {
            Req::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some(k) = part.strip_prefix('!') {
            Req::NotExists(k.trim().to_string())
        } else if part.contains(' ') || part.contains('(') {
            return Err(format!("unsupported selector requirement {part:?}"));
        } else {
            Req::Exists(part.to_string())
        };
        out.push(req);
    }
    Ok(out)
}

fn matches_labels(reqs: &[Req], labels: &BTreeMap<String, String>) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => labels.get(k) == Some(v),
        Req::Ne(k, v) => labels.get(k) != Some(v),
        Req::Exists(k) => labels.contains_key(k),
        Req::NotExists(k) => !labels.contains_key(k),
    })
}

/// Field selectors on `metadata.name` / `metadata.namespace`.
fn matches_fields(reqs: &[Req], name: &str) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) if k == "metadata.name" => name == v,
        Req::Ne(k, v) if k == "metadata.name" => name != v,
        Req::Eq(k, v) if k == "metadata.namespace" => v == "default",
        Req::Ne(k, v) if k == "metadata.namespace" => v != "default",
        _ => false,
    })
}

/// What a list or watch asked for.
struct Selection {
    res: Res,
    namespace: String,
    name: Option<String>,
    labels: Vec<Req>,
    fields: Vec<Req>,
}

impl Selection {
    fn matches(&self, res: Res, stored: &Stored) -> bool {
        res == self.res
            && self.namespace == "default"
            && self.name.as_deref().is_none_or(|n| n == stored.name)
            && matches_labels(&self.labels, &stored.labels)
            && matches_fields(&self.fields, &stored.name)
    }
}

fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let q = query(&req);
    let (serve_slices, ready, live) = {
        let st = shared.lock();
        (st.serve_slices, st.ready, st.live)
    };
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the fake apiserver only serves GET, not {}", req.method()),
        );
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["readyz"] => ready_text(ready, "readyz"),
        ["livez"] => ready_text(live, "livez"),
        ["healthz"] => ready_text(ready && live, "healthz"),
        ["version"] => json(StatusCode::OK, &version()),
        ["api"] => json(
            StatusCode::OK,
            &APIVersions {
                server_address_by_client_cidrs: vec![],
                versions: vec!["v1".to_string()],
            },
        ),
        ["apis"] => json(StatusCode::OK, &group_list(serve_slices)),
        ["api", "v1"] => json(
            StatusCode::OK,
            &resource_list("v1", "endpoints", "endpoints", "Endpoints"),
        ),
        ["apis", "discovery.k8s.io", "v1"] if serve_slices => json(
            StatusCode::OK,
            &resource_list(
                "discovery.k8s.io/v1",
                "endpointslices",
                "endpointslice",
                "EndpointSlice",
            ),
        ),
        [
            "apis",
            "discovery.k8s.io",
            "v1",
            "namespaces",
            ns,
            "endpointslices",
        ] if serve_slices => collection(shared, Res::Slices, ns, None, &q),
        [
            "apis",
            "discovery.k8s.io",
            "v1",
            "namespaces",
            ns,
            "endpointslices",
            name,
        ] if serve_slices => collection(shared, Res::Slices, ns, Some(name), &q),
        ["api", "v1", "namespaces", ns, "endpoints"] => {
            collection(shared, Res::Endpoints, ns, None, &q)
        }
        ["api", "v1", "namespaces", ns, "endpoints", name] => {
            collection(shared, Res::Endpoints, ns, Some(name), &q)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".to_string(),
        ),
    }
}

fn ready_text(ok: bool, what: &'static str) -> Response<Body> {
    if ok {
        text(StatusCode::OK, "ok")
    } else {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]etcd failed: reason withheld\n{what} check failed\n"),
        )
    }
}

fn version() -> Info {
    Info {
        major: "1".to_string(),
        minor: "33".to_string(),
        git_version: "v1.33.0-fake".to_string(),
        git_commit: "0000000000000000000000000000000000000000".to_string(),
        git_tree_state: "clean".to_string(),
        build_date: "2025-01-01T00:00:00Z".to_string(),
        go_version: "go1.24.0".to_string(),
        compiler: "gc".to_string(),
        platform: "linux/amd64".to_string(),
        ..Default::default()
    }
}

fn group_list(serve_slices: bool) -> APIGroupList {
    let mut groups = Vec::new();
    if serve_slices {
        let v = GroupVersionForDiscovery {
            group_version: "discovery.k8s.io/v1".to_string(),
            version: "v1".to_string(),
        };
        groups.push(APIGroup {
            name: "discovery.k8s.io".to_string(),
            preferred_version: Some(v.clone()),
            server_address_by_client_cidrs: None,
            versions: vec![v],
        });
    }
    APIGroupList { groups }
}

fn resource_list(gv: &str, name: &str, singular: &str, kind: &str) -> APIResourceList {
    APIResourceList {
        group_version: gv.to_string(),
        resources: vec![APIResource {
            name: name.to_string(),
            singular_name: singular.to_string(),
            namespaced: true,
            kind: kind.to_string(),
            verbs: [
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        }],
    }
}

fn collection(
    shared: &Arc<Shared>,
    res: Res,
    ns: &str,
    name: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let labels = match parse_selector(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", e),
    };
    let fields = match parse_selector(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", e),
    };
    if let Some(bad) = fields.iter().find(|r| match r {
        Req::Eq(k, _) | Req::Ne(k, _) => k != "metadata.name" && k != "metadata.namespace",
        _ => true,
    }) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("field label not supported: {bad:?}"),
        );
    }
    let sel = Selection {
        res,
        namespace: ns.to_string(),
        name: name.map(str::to_string),
        labels,
        fields,
    };
    let rv_param = q.get("resourceVersion").filter(|s| !s.is_empty()).cloned();
    let rv = match rv_param.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("invalid resourceVersion {:?}", rv_param.unwrap_or_default()),
            );
        }
    };
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if is_watch {
        let bookmarks = matches!(
            q.get("allowWatchBookmarks").map(String::as_str),
            Some("true" | "1")
        );
        // Capped: a huge timeoutSeconds must not overflow the deadline.
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(|t| Duration::from_secs(t.min(MAX_WATCH_TIMEOUT_SECS)));
        return watch_response(shared.clone(), sel, rv, bookmarks, timeout);
    }
    let st = shared.lock();
    if let Some(v) = rv
        && v != 0
        && v < st.compacted
    {
        return error(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {v} ({})", st.compacted),
        );
    }
    let page_size = st.page_size.filter(|_| name.is_none()).map(|n| {
        q.get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .map_or(n, |l| l.min(n))
    });
    // The continue token is the name of the last item of the previous page.
    let after = page_size.and(q.get("continue").filter(|c| !c.is_empty()));
    let mut items: Vec<(String, serde_json::Value)> = st
        .objects
        .iter()
        .filter(|((r, n), stored)| {
            sel.matches(*r, stored) && after.is_none_or(|a| n.as_str() > a.as_str())
        })
        .map(|((_, n), stored)| (n.clone(), stored.json.clone()))
        .collect();
    let mut continue_token = None;
    if let Some(page) = page_size
        && items.len() > page
    {
        items.truncate(page);
        continue_token = items.last().map(|(n, _)| n.clone());
    }
    let items: Vec<serde_json::Value> = items.into_iter().map(|(_, v)| v).collect();
    if let Some(name) = name {
        return match items.into_iter().next() {
            Some(item) => json(StatusCode::OK, &item),
            None => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} {name:?} not found", kind_plural(res)),
            ),
        };
    }
    let rv = st.rv.to_string();
    drop(st);
    match res {
        Res::Slices => json(
            StatusCode::OK,
            &list_of::<EndpointSlice>(items, rv, continue_token),
        ),
        Res::Endpoints => json(
            StatusCode::OK,
            &list_of::<Endpoints>(items, rv, continue_token),
        ),
    }
}

fn kind_plural(res: Res) -> &'static str {
    match res {
        Res::Slices => "endpointslices.discovery.k8s.io",
        Res::Endpoints => "endpoints",
    }
}

/// A typed k8s-openapi List (so `apiVersion`/`kind` are the real ones).
fn list_of<T>(
    items: Vec<serde_json::Value>,
    rv: String,
    continue_token: Option<String>,
) -> k8s_openapi::List<T>
where
    T: k8s_openapi::ListableResource + serde::de::DeserializeOwned,
{
    k8s_openapi::List {
        items: items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        metadata: ListMeta {
            resource_version: Some(rv),
            continue_: continue_token,
            ..Default::default()
        },
    }
}

fn event_line(ty: &str, object: &serde_json::Value) -> Bytes {
    let mut line = serde_json::to_vec(&serde_json::json!({ "type": ty, "object": object }))
        .unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn gone_line(requested: u64, compacted: u64) -> Bytes {
    let s = status(
        410,
        "Expired",
        format!("too old resource version: {requested} ({compacted})"),
    );
    event_line("ERROR", &serde_json::to_value(&s).unwrap_or_default())
}

fn bookmark_line(res: Res, rv: u64) -> Bytes {
    let (api_version, kind) = match res {
        Res::Slices => ("discovery.k8s.io/v1", "EndpointSlice"),
        Res::Endpoints => ("v1", "Endpoints"),
    };
    event_line(
        "BOOKMARK",
        &serde_json::json!({
            "kind": kind,
            "apiVersion": api_version,
            "metadata": { "resourceVersion": rv.to_string() },
        }),
    )
}

struct WatchGuard(Arc<Shared>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The longest watch `timeoutSeconds` honoured (a day); larger values are
/// capped so the deadline cannot overflow.
const MAX_WATCH_TIMEOUT_SECS: u64 = 86_400;

fn watch_response(
    shared: Arc<Shared>,
    sel: Selection,
    rv: Option<u64>,
    bookmarks: bool,
    timeout: Option<Duration>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let guard = WatchGuard(shared.clone());
    tokio::spawn(async move {
        let _guard = guard;
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let mut changes = shared.changes.subscribe();
        // Decide under the lock, send after it.
        let (first, mut cursor, expire_epoch, gone) = {
            let st = shared.lock();
            match rv {
                Some(v) if v != 0 && v < st.compacted => {
                    (vec![gone_line(v, st.compacted)], v, st.expire_epoch, true)
                }
                Some(v) if v != 0 => (Vec::new(), v, st.expire_epoch, false),
                _ => {
                    // No version: the current state as ADDED events first.
                    let lines: Vec<Bytes> = st
                        .objects
                        .iter()
                        .filter(|((r, _), stored)| sel.matches(*r, stored))
                        .map(|(_, stored)| event_line("ADDED", &stored.json))
                        .collect();
                    (lines, st.rv, st.expire_epoch, false)
                }
            }
        };
        for line in first {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if gone {
            return;
        }
        let mut next_bookmark = tokio::time::Instant::now();
        loop {
            changes.mark_unchanged();
            let (lines, frozen, interval, expired, snap_rv) = {
                let st = shared.lock();
                if st.expire_epoch != expire_epoch {
                    (
                        vec![gone_line(cursor, st.compacted)],
                        false,
                        st.bookmark_interval,
                        true,
                        st.rv,
                    )
                } else if st.frozen {
                    (Vec::new(), true, st.bookmark_interval, false, st.rv)
                } else {
                    let lines: Vec<Bytes> = st
                        .history
                        .iter()
                        .filter(|c| c.rv > cursor && sel.matches(c.res, &c.object))
                        .map(|c| event_line(c.ty.as_str(), &c.object.json))
                        .collect();
                    cursor = cursor.max(st.history.last().map(|c| c.rv).unwrap_or(cursor));
                    (lines, false, st.bookmark_interval, false, st.rv)
                }
            };
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if expired {
                return;
            }
            if bookmarks && !frozen && tokio::time::Instant::now() >= next_bookmark {
                // Everything up to snap_rv has been sent above.
                if tx
                    .send(bookmark_line(sel.res, snap_rv.max(cursor)))
                    .await
                    .is_err()
                {
                    return;
                }
                next_bookmark = tokio::time::Instant::now()
                    .checked_add(interval)
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let wake_bookmark = if bookmarks && !frozen {
                next_bookmark
            } else {
                far
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(wake_bookmark) => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    }));
    let mut resp = Response::new(BodyExt::boxed(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// An EndpointSlice of the `kubernetes` service as the apiserver writes it:
/// label `kubernetes.io/service-name=kubernetes`, one port named `https`.
/// `endpoints` are (address, ready) pairs; `None` leaves `ready` unset.
pub fn kubernetes_slice(
    name: &str,
    address_type: &str,
    port: u16,
    endpoints: &[(IpAddr, Option<bool>)],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                "kubernetes".to_string(),
            )])),
            ..Default::default()
        },
        address_type: address_type.to_string(),
        endpoints: endpoints
            .iter()
            .map(|(ip, ready)| SliceEndpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    serving: *ready,
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("https".to_string()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".to_string()),
            app_protocol: None,
        }]),
    }
}

/// The core/v1 Endpoints `kubernetes` as an old apiserver writes it: one
/// subset, ready `addresses`, port `https`.
pub fn kubernetes_endpoints(port: u16, ready: &[IpAddr], not_ready: &[IpAddr]) -> Endpoints {
    let addrs = |ips: &[IpAddr]| {
        (!ips.is_empty()).then(|| {
            ips.iter()
                .map(|ip| EndpointAddress {
                    ip: ip.to_string(),
                    ..Default::default()
                })
                .collect()
        })
    };
    Endpoints {
        metadata: ObjectMeta {
            name: Some("kubernetes".to_string()),
            namespace: Some("default".to_string()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: addrs(ready),
            not_ready_addresses: addrs(not_ready),
            ports: Some(vec![CorePort {
                name: Some("https".to_string()),
                port: i32::from(port),
                protocol: Some("TCP".to_string()),
                app_protocol: None,
            }]),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(server: &FakeApiServer, path: &str) -> (StatusCode, Incoming) {
        let tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "kubernetes")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        (resp.status(), resp.into_body())
    }

    async fn get_json(server: &FakeApiServer, path: &str) -> (StatusCode, serde_json::Value) {
        let (code, body) = get(server, path).await;
        let bytes = body.collect().await.expect("body").to_bytes();
        (
            code,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Reads watch events (one JSON object per line) until `n` arrived.
    async fn events(body: &mut Incoming, buf: &mut Vec<u8>, n: usize) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                out.push(serde_json::from_slice(&line).expect("event JSON"));
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("an event in time")
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
        }
        out
    }

    const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

    #[tokio::test]
    async fn speaks_list_watch_bookmarks_and_gone() {
        let server = FakeApiServer::plain("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        server.apply_slice(kubernetes_slice(
            "kubernetes",
            "IPv4",
            6443,
            &[(ip, Some(true))],
        ));
        let sel = "labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes";
        let (code, list) = get_json(&server, &format!("{SLICES}?{sel}&limit=500")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(list["kind"], "EndpointSliceList");
        assert_eq!(list["apiVersion"], "discovery.k8s.io/v1");
        let rv = server.resource_version().to_string();
        assert_eq!(list["metadata"]["resourceVersion"], rv.as_str());
        assert_eq!(list["items"][0]["kind"], "EndpointSlice");
        assert_eq!(list["items"][0]["metadata"]["resourceVersion"], rv.as_str());
        assert_eq!(list["items"][0]["endpoints"][0]["addresses"][0], "10.0.0.1");
        let (_, none) = get_json(&server, &format!("{SLICES}?labelSelector=a%3Db")).await;
        assert_eq!(none["items"].as_array().map(Vec::len), Some(0));

        // Watch from the list's version: the change, then bookmarks.
        server.set_bookmark_interval(Duration::from_millis(50));
        let (code, mut body) = get(
            &server,
            &format!("{SLICES}?{sel}&watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=60"),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let mut buf = Vec::new();
        server.apply_slice(kubernetes_slice("kubernetes", "IPv4", 6443, &[]));
        let mut seen = Vec::new();
        while !seen
            .iter()
            .any(|e: &serde_json::Value| e["type"] == "MODIFIED")
        {
            seen.extend(events(&mut body, &mut buf, 1).await);
        }
        let bm = events(&mut body, &mut buf, 1).await;
        assert_eq!(bm[0]["type"], "BOOKMARK");
        assert_eq!(
            bm[0]["object"]["metadata"]["resourceVersion"],
            server.resource_version().to_string().as_str()
        );

        // The open watch expires: ERROR 410.
        server.expire_watches();
        let mut last = events(&mut body, &mut buf, 1).await;
        while last[0]["type"] == "BOOKMARK" {
            last = events(&mut body, &mut buf, 1).await;
        }
        assert_eq!(last[0]["type"], "ERROR");
        assert_eq!(last[0]["object"]["kind"], "Status");
        assert_eq!(last[0]["object"]["code"], 410);
        // Too old a version: 410 on watch (event) and on list (HTTP).
        let (_, mut body) = get(&server, &format!("{SLICES}?watch=1&resourceVersion={rv}")).await;
        let ev = events(&mut body, &mut Vec::new(), 1).await;
        assert_eq!(ev[0]["object"]["reason"], "Expired");
        let (code, st) = get_json(&server, &format!("{SLICES}?resourceVersion={rv}")).await;
        assert_eq!(
            (code, st["code"].clone()),
            (StatusCode::GONE, serde_json::json!(410))
        );

        // An old cluster: no EndpointSlice API.
        server.set_serve_endpoint_slices(false);
        let (code, st) = get_json(&server, SLICES).await;
        assert_eq!(
            (code, st["reason"].clone()),
            (StatusCode::NOT_FOUND, serde_json::json!("NotFound"))
        );
        let (_, groups) = get_json(&server, "/apis").await;
        assert_eq!(groups["groups"].as_array().map(Vec::len), Some(0));

        server.apply_endpoints(kubernetes_endpoints(6443, &[ip], &[]));
        let (code, e) = get_json(&server, "/api/v1/namespaces/default/endpoints/kubernetes").await;
        assert_eq!(
            (code, e["kind"].clone()),
            (StatusCode::OK, serde_json::json!("Endpoints"))
        );
        let (_, l) = get_json(
            &server,
            "/api/v1/namespaces/default/endpoints?fieldSelector=metadata.name%3Dkubernetes",
        )
        .await;
        assert_eq!(l["kind"], "EndpointsList");
        assert_eq!(
            l["items"][0]["subsets"][0]["addresses"][0]["ip"],
            "10.0.0.1"
        );

        let (code, _) = get(&server, "/readyz").await;
        assert_eq!(code, StatusCode::OK);
        server.set_ready(false);
        let (code, _) = get(&server, "/readyz").await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        let (_, v) = get_json(&server, "/version").await;
        assert_eq!(v["major"], "1");
    }

    /// Regression: `timeoutSeconds` near `u64::MAX` overflowed
    /// `Instant + Duration` and killed the watch task (the stream ended with
    /// no event).
    #[tokio::test]
    async fn a_huge_watch_timeout_keeps_the_watch_open() {
        let server = FakeApiServer::plain("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let rv = server.resource_version();
        let (code, mut body) = get(
            &server,
            &format!(
                "{SLICES}?watch=true&resourceVersion={rv}&timeoutSeconds={}",
                u64::MAX
            ),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        server.apply_slice(kubernetes_slice("kubernetes", "IPv4", 6443, &[]));
        let ev = events(&mut body, &mut Vec::new(), 1).await;
        assert_eq!(ev[0]["type"], "ADDED");
        assert_eq!(ev[0]["object"]["metadata"]["name"], "kubernetes");
    }

    #[tokio::test]
    async fn pages_lists_with_continue_tokens_when_asked() {
        let server = FakeApiServer::plain("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        for name in ["kubernetes", "kubernetes-b", "kubernetes-c"] {
            server.apply_slice(kubernetes_slice(name, "IPv4", 6443, &[]));
        }
        let names = |list: &serde_json::Value| -> Vec<String> {
            list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        };
        // No paging by default: `limit` is ignored.
        let (_, all) = get_json(&server, &format!("{SLICES}?limit=1")).await;
        assert_eq!(names(&all).len(), 3);
        assert!(all["metadata"]["continue"].is_null(), "{all}");

        server.set_list_page_size(Some(2));
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let (code, page) =
                get_json(&server, &format!("{SLICES}?limit=500&continue={token}")).await;
            assert_eq!(code, StatusCode::OK);
            pages += 1;
            seen.extend(names(&page));
            match page["metadata"]["continue"].as_str() {
                Some(t) => token = t.to_string(),
                None => break,
            }
        }
        assert_eq!((pages, seen.len()), (2, 3));
        assert_eq!(seen, ["kubernetes", "kubernetes-b", "kubernetes-c"]);
        // A smaller `limit` is honoured.
        let (_, one) = get_json(&server, &format!("{SLICES}?limit=1")).await;
        assert_eq!(names(&one), ["kubernetes"]);
        assert_eq!(one["metadata"]["continue"], "kubernetes");
    }

    #[test]
    fn selectors() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let ok = |s: &str| matches_labels(&parse_selector(s).expect(s), &labels);
        assert!(ok(""));
        assert!(ok("a=1"));
        assert!(ok("a==1"));
        assert!(!ok("a=2"));
        assert!(ok("a!=2"));
        assert!(ok("a"));
        assert!(!ok("!a"));
        assert!(!ok("a=1,b"));
        assert!(parse_selector("a in (1)").is_err());
        assert_eq!(
            percent_decode("kubernetes.io%2Fservice-name%3Dkubernetes"),
            "kubernetes.io/service-name=kubernetes"
        );
        assert_eq!(percent_decode("a+b%"), "a b%");
    }
}
