//! Every parser of what comes from outside the daemon, fed mutated and
//! truncated copies of valid inputs: an answer (a value or a named error),
//! never a panic. The case counts are the proptest configurations below.

use std::path::Path;

use apiserver_proxy_discovery::backends::{backends_from_endpoints, backends_from_slices};
use apiserver_proxy_discovery::cache;
use apiserver_proxy_manager::config;
use apiserver_proxy_manager::state;
use apiserver_proxy_testkit::apiserver::{kubernetes_endpoints, kubernetes_slice};
use apiserver_proxy_types::Family;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;

const CASES: u32 = 10_000;

const STATE: &str = r#"{"kind":"ApiserverProxyState","version":1,"interface":"apiproxy0","vipMode":"address","virtualServers":[{"vip":"10.103.97.2:6443","scheduler":"rr","backends":["192.168.1.10:6443","192.168.1.11:6443"],"interface":"apiproxy1","vipMode":"route"}]}"#;

const GO_STATE: &str =
    "vs: 10.103.97.2:6443\nrs:\n- 192.168.1.10:6443\n- 192.168.1.11:6443\nscheduler: rr\n";

const CONFIG: &str = "virtualServers:\n  - vip: 10.103.97.2:6443\n    seeds: [192.168.1.10:6443]\n    portName: https\nresyncInterval: 250ms\nhealth:\n  interval: 5s\n  path: /readyz\n  successStatuses: [200]\ndiscovery:\n  staleWatchTimeout: 5m\n";

const GO_CONFIG: &str = r#"{"proxyLvs":{"virtualAddress":"10.103.97.2:6443","scheduler":"rr"},"healthCheck":{"healthScheme":"https","healthPath":"/readyz"},"realServer":{"realServers":["192.168.1.10:6443"]},"systemInterval":{"endpointInterval":5}}"#;

/// `base` with bytes overwritten, inserted or removed, and maybe cut short.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    (
        prop::collection::vec((0..len, any::<u8>(), 0u8..3), 0..8),
        prop::option::of(0..len),
    )
        .prop_map(move |(edits, cut)| {
            let mut b = base.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let at = at.min(b.len());
                match kind {
                    0 if at < b.len() => b[at] = byte,
                    1 => b.insert(at, byte),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            b
        })
}

fn slice_json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let s = kubernetes_slice(
            "kubernetes",
            "IPv4",
            6443,
            &[
                ("192.168.1.10".parse().expect("ip"), Some(true)),
                ("192.168.1.11".parse().expect("ip"), None),
            ],
        );
        serde_json::to_string(&s).expect("json")
    })
}

fn endpoints_json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let e = kubernetes_endpoints(
            6443,
            &["192.168.1.10".parse().expect("ip")],
            &["192.168.1.12".parse().expect("ip")],
        );
        serde_json::to_string(&e).expect("json")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn state_json(bytes in mutated(STATE)) {
        let _ = state::parse(&String::from_utf8_lossy(&bytes), Path::new("state.json"));
    }

    #[test]
    fn go_ipvs_config_yaml(bytes in mutated(GO_STATE)) {
        let _ = state::parse_go(&String::from_utf8_lossy(&bytes), Path::new("ipvsConfig.yaml"));
    }

    #[test]
    fn backends_json(bytes in mutated(r#"{"kind":"ApiserverProxyBackendCache","version":1,"virtualServers":[{"vip":"10.103.97.2:6443","backends":["192.168.1.10:6443"]}]}"#)) {
        let _ = cache::decode(Path::new("backends.json"), &bytes);
    }

    #[test]
    fn config_yaml(bytes in mutated(CONFIG)) {
        if let Ok(l) = config::parse_str(&String::from_utf8_lossy(&bytes), "c.yaml") {
            let _ = config::validate(&l.config);
        }
    }

    #[test]
    fn config_go_json(bytes in mutated(GO_CONFIG)) {
        if let Ok(l) = config::parse_str(&String::from_utf8_lossy(&bytes), "c.json") {
            let _ = config::validate(&l.config);
        }
    }

    /// What the cluster may send, as kube would decode it.
    #[test]
    fn endpoint_slices(bytes in mutated(slice_json()), port in "[a-z]{0,6}") {
        if let Ok(s) = serde_json::from_slice::<EndpointSlice>(&bytes) {
            for family in [Family::Ipv4, Family::Ipv6] {
                let _ = backends_from_slices([&s], family, &port);
            }
        }
    }

    #[test]
    fn endpoints(bytes in mutated(endpoints_json()), port in "[a-z]{0,6}") {
        if let Ok(e) = serde_json::from_slice::<Endpoints>(&bytes) {
            for family in [Family::Ipv4, Family::Ipv6] {
                let _ = backends_from_endpoints([&e], family, &port);
            }
        }
    }
}
