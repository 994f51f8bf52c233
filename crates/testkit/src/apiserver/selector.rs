//! Label and field selectors, and the query string they come in.

use std::collections::BTreeMap;

use http::Request;
use hyper::body::Incoming;

/// The request's query as a map (later keys win), percent-decoded.
pub(super) fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
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

pub(super) fn percent_decode(s: &str) -> String {
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
pub(super) enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

pub(super) fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
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

pub(super) fn matches_labels(reqs: &[Req], labels: &BTreeMap<String, String>) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => labels.get(k) == Some(v),
        Req::Ne(k, v) => labels.get(k) != Some(v),
        Req::Exists(k) => labels.contains_key(k),
        Req::NotExists(k) => !labels.contains_key(k),
    })
}

/// Field selectors on `metadata.name` / `metadata.namespace`.
pub(super) fn matches_fields(reqs: &[Req], name: &str) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) if k == "metadata.name" => name == v,
        Req::Ne(k, v) if k == "metadata.name" => name != v,
        Req::Eq(k, v) if k == "metadata.namespace" => v == "default",
        Req::Ne(k, v) if k == "metadata.namespace" => v != "default",
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
