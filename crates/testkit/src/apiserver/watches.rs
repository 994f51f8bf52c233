//! Watches: newline-delimited JSON events from a resource version on.

use super::serve::{Selection, status};
use super::*;

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
pub(super) const MAX_WATCH_TIMEOUT_SECS: u64 = 86_400;

pub(super) fn watch_response(
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
