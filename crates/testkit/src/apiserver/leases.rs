//! `coordination.k8s.io/v1` Leases, as leader election uses them: get,
//! create and replace by name in any namespace, with the apiserver's
//! optimistic concurrency (a replace carrying a stale
//! `metadata.resourceVersion` gets 409 Conflict, a create of an existing
//! name 409 AlreadyExists). Not watched, not listed.

use super::serve::{error, json};
use super::*;

pub(super) const PREFIX: &str = "/apis/coordination.k8s.io/v1/namespaces/";

/// Whether `path` is a Lease path this module serves.
pub(super) fn is_lease_path(path: &str) -> bool {
    path.starts_with(PREFIX) && path.contains("/leases")
}

/// How the fake's Lease API behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseMode {
    /// Reads and writes succeed.
    #[default]
    Serve,
    /// Every Lease request gets 503 (an apiserver cut off from etcd's
    /// quorum answers with errors).
    Unavailable,
    /// Every Lease request hangs until the mode changes or the connection
    /// is cut (an apiserver whose etcd requests wait for a quorum).
    Hang,
}

pub(super) async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let mut modes = shared.lease_mode.subscribe();
    loop {
        let mode = *modes.borrow_and_update();
        match mode {
            LeaseMode::Serve => break,
            LeaseMode::Unavailable => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "etcdserver: request timed out".into(),
                );
            }
            LeaseMode::Hang => {
                if modes.changed().await.is_err() {
                    break;
                }
            }
        }
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let rest = path.trim_start_matches(PREFIX);
    let segments: Vec<String> = rest.split('/').map(str::to_string).collect();
    let (namespace, name) = match segments.as_slice() {
        [ns, leases, name] if leases == "leases" => (ns.clone(), Some(name.clone())),
        [ns, leases] if leases == "leases" => (ns.clone(), None),
        _ => return not_found(&path),
    };
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("reading the body: {e}"),
            );
        }
    };
    match (method, name) {
        (Method::GET, Some(name)) => {
            let st = shared.lock();
            match st.leases.get(&(namespace.clone(), name.clone())) {
                Some(lease) => json(StatusCode::OK, lease),
                None => error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("leases.coordination.k8s.io \"{name}\" not found"),
                ),
            }
        }
        (Method::POST, None) => write(shared, &namespace, None, &body),
        (Method::PUT, Some(name)) => write(shared, &namespace, Some(&name), &body),
        (m, _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the fake apiserver's leases take GET, POST and PUT, not {m}"),
        ),
    }
}

fn not_found(path: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

/// A create (`name` None: the name is in the body) or a replace.
fn write(shared: &Arc<Shared>, namespace: &str, name: Option<&str>, body: &[u8]) -> Response<Body> {
    let mut lease: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the body is not a Lease: {e}"),
            );
        }
    };
    let body_name = lease["metadata"]["name"].as_str().unwrap_or("").to_string();
    if body_name.is_empty() || name.is_some_and(|n| n != body_name) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the name in the body ({body_name:?}) does not match the path"),
        );
    }
    if lease["metadata"]["namespace"]
        .as_str()
        .is_some_and(|ns| ns != namespace)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the \
             request"
                .into(),
        );
    }
    let key = (namespace.to_string(), body_name.clone());
    let sent_version = lease["metadata"]["resourceVersion"]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    if name.is_none() && sent_version.is_some() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "resourceVersion should not be set on objects to be created".into(),
        );
    }
    let mut st = shared.lock();
    let current = st.leases.get(&key).map(|l| {
        l["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    match (name, current) {
        (None, Some(_)) => {
            return error(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("leases.coordination.k8s.io \"{body_name}\" already exists"),
            );
        }
        (Some(_), None) => {
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("leases.coordination.k8s.io \"{body_name}\" not found"),
            );
        }
        (Some(_), Some(current)) if sent_version.as_deref().is_some_and(|v| v != current) => {
            return error(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on leases.coordination.k8s.io \
                     \"{body_name}\": the object has been modified; please apply your \
                     changes to the latest version and try again"
                ),
            );
        }
        _ => {}
    }
    st.rv += 1;
    st.lease_writes += 1;
    let rv = st.rv.to_string();
    lease["apiVersion"] = "coordination.k8s.io/v1".into();
    lease["kind"] = "Lease".into();
    lease["metadata"]["namespace"] = namespace.into();
    lease["metadata"]["resourceVersion"] = rv.into();
    st.leases.insert(key, lease.clone());
    let code = if name.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(code, &lease)
}
