//! The running daemon's own view, from its `/status` page: what `status`
//! shows when the daemon answers, rather than probing from here (the
//! daemon's checks are continuous, and its conditions are what the kernel
//! follows).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use apiserver_proxy_manager::page::{API_VERSION, KIND};
use apiserver_proxy_types::Endpoint;
use serde_json::Value;

use crate::probe::Probed;

/// A daemon on this node answers at once or not at all.
const TIMEOUT: Duration = Duration::from_secs(1);
/// The page of a node with a few virtual servers is a few kB.
const MAX_BYTES: u64 = 4 << 20;

/// The daemon's page as JSON, or why it could not be had (said on the
/// first line of `status`).
pub fn fetch(addr: SocketAddr) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!(
            "GET /status?format=json HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(MAX_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    parse(&raw)
}

/// An HTTP/1.1 response carrying the page.
fn parse(raw: &[u8]) -> Result<Value, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!(
            "it answered HTTP {status}: a daemon older than the /status page, or not ours"
        ));
    }
    let page: Value =
        serde_json::from_str(body.trim()).map_err(|e| format!("its /status is not JSON ({e})"))?;
    if page["kind"] != KIND || page["apiVersion"] != API_VERSION {
        return Err(format!(
            "its /status is not a {KIND} of {API_VERSION} (apiVersion {})",
            page["apiVersion"]
        ));
    }
    Ok(page)
}

/// The daemon's verdict on each backend, in the form of the CLI's own
/// probes, so that `status` lays both out alike.
pub fn as_probes(page: &Value) -> Vec<Probed> {
    let mut out = Vec::new();
    for vs in page["virtualServers"].as_array().into_iter().flatten() {
        for b in vs["backends"].as_array().into_iter().flatten() {
            let Some(backend) = b["address"]
                .as_str()
                .and_then(|a| a.parse::<Endpoint>().ok())
            else {
                continue;
            };
            if out.iter().any(|p: &Probed| p.backend == backend) {
                continue;
            }
            let condition = b["condition"].as_str().unwrap_or("unknown");
            let reason = b["reason"].as_str().unwrap_or("no probe result yet");
            out.push(Probed {
                backend,
                passed: b["inService"] == true || condition == "unlisted",
                detail: format!("{condition}: {reason} (the daemon's check)"),
            });
        }
    }
    out
}

/// What the daemon itself reports as wrong: not converged, fail-open.
pub fn problems(page: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if page["ready"] != true {
        out.push(
            "the daemon is not ready: its kernel does not match the desired state yet (see its log)"
                .to_string(),
        );
    }
    for vs in page["virtualServers"].as_array().into_iter().flatten() {
        if vs["failOpen"] == true {
            out.push(format!(
                "{} is fail-open: no apiserver passes the daemon's checks, all are kept in rotation",
                vs["vip"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn only_a_daemon_status_page_is_taken() {
        let page = format!(
            r#"{{"apiVersion":"{API_VERSION}","kind":"{KIND}","ready":true,"virtualServers":[{{"vip":"10.103.97.2:6443","failOpen":false,"backends":[{{"address":"192.168.1.10:6443","condition":"dead","inService":false,"reason":"connection refused"}}]}}]}}"#
        );
        let v = parse(&response("200 OK", &page)).expect("the page");
        let probes = as_probes(&v);
        assert_eq!(probes.len(), 1);
        assert!(!probes[0].passed);
        assert!(
            probes[0].detail.contains("connection refused"),
            "{}",
            probes[0].detail
        );
        assert!(problems(&v).is_empty());
        for (raw, says) in [
            (response("404 Not Found", "not found"), "HTTP 404"),
            (response("200 OK", "<html>"), "not JSON"),
            (
                response("200 OK", r#"{"kind":"Other"}"#),
                "not a DaemonStatus",
            ),
            (b"garbage".to_vec(), "not an HTTP response"),
        ] {
            let e = parse(&raw).expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
    }
}
