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
//! [`FakeApiServer::stop`] / [`FakeApiServer::start`], [`FakeApiServer::set_lease_mode`].
//!
//! Pagination (`limit`/`continue`) is ignored (lists return everything)
//! unless [`FakeApiServer::set_list_page_size`] is set; then lists come in
//! pages of at most that many items (fewer if `limit` asks for fewer), with a
//! `continue` token, as a real apiserver may. [`FakeApiServer::set_list_delay`]
//! delays every list response (each page), to make a crawling apiserver.
//! Authentication is not checked (requests are logged, see
//! [`FakeApiServer::requests`]).
//!
//! This file holds the store and the switches; `serve` the HTTP side (the
//! accept loop, the routes, lists and discovery documents), `watches` the
//! watch streams, `selector` the label and field selectors, `fixtures` the
//! objects a real apiserver writes.

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

mod fixtures;
mod leases;
mod selector;
mod serve;
mod watches;

pub use fixtures::{kubernetes_endpoints, kubernetes_slice};
pub use leases::LeaseMode;
use serve::accept_loop;

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
    /// coordination.k8s.io/v1 Leases by (namespace, name), as served.
    leases: BTreeMap<(String, String), serde_json::Value>,
    /// Lease creates and replaces that succeeded.
    lease_writes: usize,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped on every change that watches may care about.
    changes: watch::Sender<u64>,
    /// Bumped to cut every open connection.
    kill: watch::Sender<u64>,
    open_watches: AtomicUsize,
    lease_mode: watch::Sender<LeaseMode>,
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
                leases: BTreeMap::new(),
                lease_writes: 0,
            }),
            changes: watch::channel(0).0,
            kill: watch::channel(0).0,
            open_watches: AtomicUsize::new(0),
            lease_mode: watch::channel(LeaseMode::Serve).0,
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

    /// How the Lease API answers from now on (requests hanging in
    /// [`LeaseMode::Hang`] go on when it changes).
    pub fn set_lease_mode(&self, mode: LeaseMode) {
        self.shared.lease_mode.send_replace(mode);
    }

    /// A Lease as stored (`None`: none by that name).
    pub fn lease(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.shared
            .lock()
            .leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Changes a stored Lease as another client would (`kubectl label`,
    /// `kubectl delete`): `f` gets the object, `None` deletes it. A change
    /// gets a new resourceVersion.
    pub fn edit_lease(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut serde_json::Value) -> bool,
    ) {
        let mut st = self.shared.lock();
        let key = (namespace.to_string(), name.to_string());
        let Some(mut lease) = st.leases.remove(&key) else {
            return;
        };
        if f(&mut lease) {
            st.rv += 1;
            lease["metadata"]["resourceVersion"] = st.rv.to_string().into();
            st.leases.insert(key, lease);
        }
    }

    /// Lease creates and replaces that succeeded so far.
    pub fn lease_writes(&self) -> usize {
        self.shared.lock().lease_writes
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
}
