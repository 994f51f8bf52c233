//! The HTTP side: the accept loop, one connection's requests, the routes,
//! the discovery documents and the list responses.

use super::selector::{Req, matches_fields, matches_labels, parse_selector, query};
use super::watches::{MAX_WATCH_TIMEOUT_SECS, watch_response};
use super::*;

/// How long the accept loop pauses after an accept error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

pub(super) async fn accept_loop(
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
            if super::leases::is_lease_path(req.uri().path()) {
                return Ok::<_, Infallible>(super::leases::handle(&shared, req).await);
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

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

pub(super) fn status(code: u16, reason: &str, message: String) -> Status {
    Status {
        code: Some(i32::from(code)),
        reason: Some(reason.to_string()),
        message: Some(message),
        status: Some("Failure".to_string()),
        metadata: ListMeta::default(),
        details: None,
    }
}

pub(super) fn error(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    json(code, &status(code.as_u16(), reason, message))
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    full(code, "text/plain; charset=utf-8", body)
}

/// What a list or watch asked for.
pub(super) struct Selection {
    pub(super) res: Res,
    namespace: String,
    name: Option<String>,
    labels: Vec<Req>,
    fields: Vec<Req>,
}

impl Selection {
    pub(super) fn matches(&self, res: Res, stored: &Stored) -> bool {
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

pub(super) fn kind_plural(res: Res) -> &'static str {
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
