use std::time::Duration;

use apiserver_proxy_manager::config::{
    self, ConfigError, FileFormat, HealthMode, VipMode, default_yaml, parse_str,
};

/// What `config check` says of `text`: the file's own problems, else the
/// whole-configuration validation's.
fn problems(text: &str) -> Vec<String> {
    match parse_str(text, "test.yaml").and_then(|l| config::validate(&l.config)) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(|p| p.to_string()).collect()
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn the_annotated_default_parses_and_validates() {
    let loaded = parse_str(default_yaml(), "default").expect("default config parses");
    assert_eq!(loaded.format, FileFormat::Yaml);
    assert!(
        loaded.warnings.is_empty(),
        "the default has its header: {:?}",
        loaded.warnings
    );
    let c = loaded.config;
    config::validate(&c).expect("default config validates");
    assert_eq!(c.virtual_servers.len(), 1);
    assert_eq!(c.virtual_servers[0].vip.to_string(), "10.103.97.2:6443");
    assert_eq!(c.virtual_servers[0].seeds.len(), 3);
    assert_eq!(c.interface, "apiproxy0");
    assert_eq!(c.vip_mode, VipMode::Address);
    assert_eq!(c.health.interval, Duration::from_secs(5));
    assert_eq!(c.health.server_name, "kubernetes");
    assert!(!c.health.insecure_skip_verify);
    assert_eq!(c.discovery.stale_watch_timeout, Duration::from_secs(300));
    // Empty strings mean "not set".
    assert_eq!(c.kubeconfig, None);
    assert_eq!(c.health.ca_file, None);
}

#[test]
/// Each problem of the file names its path and the line to look at.
fn every_problem_is_named_with_its_path() {
    let text = r#"
virtualServers:
  - vip: 10.0.0.1
    scheduler: fastest
    seeds: [192.168.1.10:6443, "master-2:6443"]
  - vip: "[fd00::1]:6443"
    sedes: []
interface: this-name-is-far-too-long
logFormat: xml
health:
  interval: soon
  rise: 0
  successStatuses: [200, 99]
discovery:
  staleWatchTimeout: 2h
bogus: 1
"#;
    let p = problems(text);
    let want = [
        "virtualServers[0].vip (line 3): \"10.0.0.1\" has no port",
        "virtualServers[0].scheduler (line 4): unknown IPVS scheduler \"fastest\"",
        "virtualServers[0].seeds[1] (line 5): \"master-2:6443\": \"master-2\" is not an IP address",
        "virtualServers[1].sedes (line 7): unknown key",
        "interface (line 8): invalid interface name \"this-name-is-far-too-long\"",
        "logFormat (line 9): \"xml\" is not a log format",
        "health.interval (line 11): expected a duration",
        "health.rise (line 12): expected a whole number from 1 to 100",
        "health.successStatuses[1] (line 13): expected a whole number from 100 to 599",
        "discovery.staleWatchTimeout (line 15): 7200s is too long",
        "bogus (line 16): unknown key",
    ];
    for w in want {
        assert!(
            p.iter().any(|got| got.starts_with(w)),
            "missing {w:?} in {p:#?}"
        );
    }
    assert_eq!(p.len(), want.len(), "{p:#?}");
}

#[test]
fn syntax_errors_say_where() {
    for (text, says) in [
        ("virtualServers: [\n", "line "),
        (
            "virtualServers:\n  - vip: 10.0.0.1:6443\n    seeds: [1.2.3.4:6443\ninterface: x\n",
            "at line 4, column 10",
        ),
        (
            "interface: a\ninterface: b\n",
            "duplicate mapping key: interface at line 2, column 1",
        ),
    ] {
        match parse_str(text, "broken.yaml") {
            Err(e @ ConfigError::Syntax { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("broken.yaml: not valid YAML or JSON: ") && msg.contains(says),
                    "{msg}"
                );
                assert!(!msg.contains('\n'), "one line: {msg}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn whole_config_checks_family_duplicates_and_emptiness() {
    let c = parse_str(
        "virtualServers:\n  - vip: 10.0.0.1:6443\n    seeds: ['[fd00::10]:6443']\n  - vip: 10.0.0.1:6443\n",
        "x",
    )
    .expect("parses")
    .config;
    let msg = config::validate(&c).expect_err("invalid").to_string();
    assert!(msg.contains("virtualServers[0].seeds[0]: [fd00::10]:6443 is IPv6 but the virtual server 10.0.0.1:6443 is IPv4"), "{msg}");
    assert!(
        msg.contains("virtualServers[1].vip: 10.0.0.1:6443 is configured twice"),
        "{msg}"
    );
    let empty = parse_str("", "x").expect("empty file is fine").config;
    let msg = config::validate(&empty).expect_err("no VS").to_string();
    assert!(msg.contains("--vs VIP:PORT"), "{msg}");
}

#[test]
fn the_go_versions_json_config_is_read_with_its_keys_mapped() {
    let go = r#"{
      "address": "0.0.0.0",
      "port": 8004,
      "proxyLvs": {"virtualAddress": "10.103.97.2:6443", "lvsScheduler": "sh"},
      "healthCheck": {"healthScheme": "http", "healthPath": "/healthz"},
      "k8sConfig": {"kubeConfig": "/root/.kube/config", "master": "https://192.168.1.10:6443"},
      "persistConfig": {"ipvsPersistDir": "/root/.bcs"},
      "systemInterval": {"managerInterval": 10, "endpointInterval": 5},
      "realServer": {"realServers": ["192.168.1.10:6443", "192.168.1.11:6443"]},
      "debugMode": true,
      "somethingNew": 1
    }"#;
    let loaded = parse_str(go, "go.json").expect("Go config parses");
    assert_eq!(loaded.format, FileFormat::GoJson);
    let c = loaded.config;
    assert_eq!(c.virtual_servers[0].vip.to_string(), "10.103.97.2:6443");
    assert_eq!(c.virtual_servers[0].scheduler, "sh");
    assert_eq!(c.health.mode, HealthMode::Http);
    assert_eq!(c.health.path, "/healthz");
    assert_eq!(
        c.kubeconfig.as_deref(),
        Some(std::path::Path::new("/root/.kube/config"))
    );
    assert_eq!(c.state_dir, std::path::PathBuf::from("/root/.bcs"));
    assert_eq!(c.resync_interval, Duration::from_secs(10));
    // The seeds of a Go DaemonSet: its real servers and its master, once.
    let seeds: Vec<String> = c.virtual_servers[0]
        .seeds
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(seeds, ["192.168.1.10:6443", "192.168.1.11:6443"]);
    assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:8004");
    // Every key is accounted for: mapped, read with a note, or named as
    // ignored.
    let warned: Vec<String> = loaded.warnings.iter().map(|w| w.path.clone()).collect();
    assert_eq!(
        warned,
        // In the file's order.
        [
            "systemInterval.endpointInterval",
            "debugMode",
            "somethingNew",
        ]
    );
    for bad in [
        r#"{"proxyLvs": {}, "realServer": {"realServers": "192.168.1.10:6443"}}"#,
        r#"{"proxyLvs": {}, "realServer": {"realServers": ["192.168.1.10"]}}"#,
        r#"{"proxyLvs": {}, "debugMode": "yes"}"#,
        r#"{"proxyLvs": {}, "port": 70000}"#,
    ] {
        let err = parse_str(bad, "go.json").expect_err(bad).to_string();
        assert!(err.contains("go.json"), "{err}");
    }
    let host = parse_str(
        r#"{"proxyLvs": {"virtualAddress": "10.103.97.2:6443"}, "k8sConfig": {"master": "https://api.example:6443"}}"#,
        "go.json",
    )
    .expect("a host name master is a warning");
    assert!(host.config.virtual_servers[0].seeds.is_empty());
    assert_eq!(host.warnings[0].path, "k8sConfig.master");
}

#[test]
fn config_check_refuses_the_interface_names_the_kernel_refuses() {
    for bad in ["a:b", "a\\u0000b", "."] {
        let text = format!("interface: \"{bad}\"\n");
        let err = parse_str(&text, "c.yaml").expect_err(bad).to_string();
        assert!(err.contains("invalid interface name"), "{bad}: {err}");
    }
    assert!(parse_str("interface: apiproxy0\n", "c.yaml").is_ok());
}

#[test]
fn config_check_refuses_the_readiness_paths_the_checker_refuses() {
    // The checker wants an origin-form path: a space or a missing slash is
    // refused by `config check` too, not first at the daemon's start.
    for bad in ["/ready z", "readyz"] {
        let text = format!("health:\n  path: \"{bad}\"\n");
        let err = parse_str(&text, "c.yaml").expect_err(bad).to_string();
        assert!(err.contains("health.path"), "{bad}: {err}");
    }
    assert!(parse_str("health:\n  path: /readyz?verbose\n", "c.yaml").is_ok());
}

/// Regression: `config check` said "ok" to each of these, and the daemon
/// then refused it at start (or spun, or panicked on the overflow).
#[test]
fn config_check_refuses_what_the_daemon_refuses_at_start() {
    let vs = "virtualServers:\n  - vip: 10.103.97.2:6443\n";
    for (extra, says) in [
        ("health:\n  interval: 100000h\n", "interval must be between"),
        (
            "health:\n  successStatuses: [200, 401]\n",
            "status 401 is both",
        ),
        (
            "resyncInterval: 1ns\n",
            "resyncInterval: 1ns is out of bounds",
        ),
        (
            "resyncInterval: 2000000000000000000s\n",
            "resyncInterval: 63376175628years",
        ),
        ("drainTimeout: 1000d\n", "drainTimeout: "),
    ] {
        let p = problems(&format!("{vs}{extra}"));
        assert!(p.iter().any(|p| p.contains(says)), "{extra}: {p:?}");
    }
    for (file, says) in [
        (
            "virtualServers:\n  - vip: 127.0.0.1:6443\n",
            "virtualServers[0].vip: 127.0.0.1:6443: the VIP cannot be a loopback address",
        ),
        (
            "virtualServers:\n  - vip: 10.103.97.2:6443\n    seeds: [10.103.97.2:6443, 224.0.0.9:6443]\n",
            "seeds[0]: 10.103.97.2:6443: a backend cannot be the VIP",
        ),
        (
            "virtualServers:\n  - vip: 10.103.97.2:6443\n    seeds: [10.103.97.2:6443, 224.0.0.9:6443]\n",
            "seeds[1]: 224.0.0.9:6443: a backend cannot be a multicast address",
        ),
    ] {
        let p = problems(file);
        assert!(p.iter().any(|p| p.contains(says)), "{says}: {p:?}");
    }
    let p = problems("virtualServers:\n  - vip: 10.103.97.2:6443\n    portName: \"\"\n");
    assert!(
        p.iter().any(|p| p.contains("the port name is empty")),
        "{p:?}"
    );
    let go = r#"{"proxyLvs":{"virtualAddress":"10.103.97.2:6443"},"healthCheck":{"healthPath":"readyz"}}"#;
    let p = problems(go);
    assert!(
        p.iter().any(|p| p.contains("write it like /readyz")),
        "{p:?}"
    );
}

mod property {
    use super::*;
    use apiserver_proxy_manager::config::{discovery_config, health_config};
    use proptest::prelude::*;

    /// A config file built from values near every bound, valid or not.
    fn file() -> impl Strategy<Value = String> {
        let dur = prop::sample::select(vec![
            "0s", "1ns", "1ms", "9ms", "10ms", "250ms", "1s", "59m", "1h", "2h", "24h", "25h",
            "100000h",
        ]);
        let statuses =
            prop::sample::select(vec!["[200]", "[]", "[200, 401]", "[204, 500]", "[403]"]);
        let port = prop::sample::select(vec!["https", "", "h"]);
        let path = prop::sample::select(vec!["/readyz", "readyz", "/ready z", "/livez?verbose"]);
        (
            (dur.clone(), dur.clone(), dur.clone(), dur.clone()),
            (dur, statuses, port, path),
            (0u32..3, 0u32..3),
        )
            .prop_map(
                |((resync, drain, interval, timeout), (stale, statuses, port, path), (rise, fall))| {
                    format!(
                        "virtualServers:\n  - vip: 10.103.97.2:6443\n    portName: \"{port}\"\n\
                         resyncInterval: {resync}\ndrainTimeout: {drain}\n\
                         health:\n  interval: {interval}\n  timeout: {timeout}\n  rise: {rise}\n  fall: {fall}\n  \
                         successStatuses: {statuses}\n  path: \"{path}\"\n\
                         discovery:\n  staleWatchTimeout: {stale}\n"
                    )
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// What `config check` accepts, the daemon's start accepts (its
        /// health checker and discovery validate again), and what either
        /// refuses, `config check` refuses.
        #[test]
        fn config_check_and_the_daemon_agree(text in file()) {
            let check = parse_str(&text, "p.yaml").and_then(|l| config::validate(&l.config));
            let daemon = parse_str(&text, "p.yaml").ok().map(|l| l.config).filter(|c| {
                config::validate(c).is_ok()
                    && health_config(c).validate().is_ok()
                    && discovery_config(c).validate().is_ok()
            });
            prop_assert_eq!(check.is_ok(), daemon.is_some(), "{}", text);
        }
    }
}

#[test]
fn the_metrics_address_takes_an_ipv6_address_without_brackets() {
    let a = |s: &str| config::parse_listen_addr(s).map(|a| a.to_string());
    assert_eq!(a("0.0.0.0:8004").as_deref(), Ok("0.0.0.0:8004"));
    assert_eq!(a("[::]:8004").as_deref(), Ok("[::]:8004"));
    // What `$(NODE_IP):8004` gives on an IPv6 node.
    assert_eq!(a("fd00:1::10:8004").as_deref(), Ok("[fd00:1::10]:8004"));
    for bad in ["0.0.0.0", "node:8004", "fd00::1", "1.2.3.4:99999", ""] {
        let e = a(bad).expect_err(bad);
        assert!(e.contains("is not ADDRESS:PORT"), "{bad}: {e}");
    }
}

/// Regression: the docs said the procfs socket inspection could be turned
/// off, and the daemon's configuration had no way to.
#[test]
fn the_socket_inspection_can_be_turned_off() {
    let on = parse_str("virtualServers:\n  - vip: 10.103.97.2:6443\n", "on.yaml").expect("parse");
    assert!(config::health_config(&on.config).keepalive.inspect_socket);
    let off = parse_str(
        "virtualServers:\n  - vip: 10.103.97.2:6443\nhealth:\n  inspectSocket: false\n",
        "off.yaml",
    )
    .expect("parse");
    assert!(!config::health_config(&off.config).keepalive.inspect_socket);
}

#[test]
fn the_heartbeat_is_on_by_default_tunable_and_can_be_turned_off() {
    let vs = "virtualServers:\n  - vip: 10.103.97.2:6443\n";
    let default = parse_str(vs, "default.yaml").expect("parse");
    let hb = config::health_config(&default.config).heartbeat;
    assert!(hb.enabled());
    assert_eq!(hb.interval, Duration::from_millis(200));
    assert_eq!(hb.ack_timeout, Duration::from_millis(100));
    assert_eq!(hb.confirm_timeout, Duration::from_millis(150));
    let tuned = parse_str(
        &format!(
            "{vs}health:\n  heartbeatInterval: 1s\n  heartbeatAckTimeout: 900ms\n  \
             heartbeatConfirmTimeout: 300ms\n"
        ),
        "tuned.yaml",
    )
    .expect("parse");
    let hb = config::health_config(&tuned.config).heartbeat;
    assert_eq!(
        (hb.interval, hb.ack_timeout, hb.confirm_timeout),
        (
            Duration::from_secs(1),
            Duration::from_millis(900),
            Duration::from_millis(300)
        )
    );
    let off = parse_str(
        &format!("{vs}health:\n  heartbeatInterval: 0s\n"),
        "off.yaml",
    )
    .expect("parse");
    assert!(!config::health_config(&off.config).heartbeat.enabled());
    // Too eager a heartbeat, or an acknowledgement deadline shorter than a
    // retransmission's round trip can safely take, is refused with the
    // field named.
    for (yaml, field) in [
        ("heartbeatInterval: 10ms", "heartbeat.interval"),
        ("heartbeatAckTimeout: 50ms", "heartbeat.ack_timeout"),
    ] {
        let e = problems(&format!("{vs}health:\n  {yaml}\n")).join("; ");
        assert!(e.contains(field), "{yaml}: {e}");
    }
}

/// The header of Kubernetes component configs: a file without it keeps
/// working, with a notice that says what to add; a version or kind that is
/// not ours is refused, not misread.
#[test]
fn the_header_names_the_format_and_its_absence_is_a_notice() {
    let body = "virtualServers:\n  - vip: 10.103.97.2:6443\n    seeds: [192.168.1.10:6443]\n";
    let bare = parse_str(body, "bare.yaml").expect("a file without a header is read");
    let notice: Vec<String> = bare.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(notice.len(), 1, "{notice:?}");
    assert!(
        notice[0].starts_with("apiVersion: missing")
            && bare.warnings[0].line.is_none()
            && notice[0].contains(config::API_VERSION)
            && notice[0].contains(config::KIND),
        "{notice:?}"
    );

    let header = format!(
        "apiVersion: {}\nkind: {}\n{body}",
        config::API_VERSION,
        config::KIND
    );
    let full = parse_str(&header, "full.yaml").expect("header");
    assert!(full.warnings.is_empty(), "{:?}", full.warnings);
    assert_eq!(full.config.virtual_servers, bare.config.virtual_servers);

    for (text, named) in [
        (
            format!(
                "apiVersion: {}/v2\nkind: {}\n{body}",
                config::API_VERSION,
                config::KIND
            ),
            "apiVersion (line 1): ",
        ),
        (
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: {}\n{body}",
                config::KIND
            ),
            "apiVersion (line 1): \"kubeproxy.config.k8s.io/v1alpha1\" is not",
        ),
        (
            format!(
                "apiVersion: {}\nkind: KubeProxyConfiguration\n{body}",
                config::API_VERSION
            ),
            "kind (line 2): \"KubeProxyConfiguration\" is not",
        ),
        (
            format!("apiVersion: {}\n{body}", config::API_VERSION),
            "kind: missing",
        ),
        (
            format!("apiVersion: 1\nkind: {}\n{body}", config::KIND),
            "apiVersion (line 1): expected a string",
        ),
    ] {
        let p = problems(&text);
        assert!(p.iter().any(|p| p.starts_with(named)), "{text}: {p:?}");
    }
}

#[test]
fn the_control_plane_section_is_read_and_its_unsafe_settings_refused() {
    let base = "virtualServers: [{vip: 10.103.97.2:6443, seeds: [192.168.1.11:6443]}]\n";
    let good = format!(
        "{base}controlPlane:\n  vip: 192.168.1.100:6443\n  interface: eth0\n  \
         apiservers: [192.168.1.11:6443, 192.168.1.12:6443]\n  identity: cp-1\n  \
         leaseDuration: 2s\n  renewDeadline: 1s\n  retryPeriod: 250ms\n"
    );
    let c = parse_str(&good, "t").expect("parses").config;
    config::validate(&c).expect("valid");
    let cp = &c.control_plane;
    assert_eq!(
        cp.vip.map(|v| v.to_string()).as_deref(),
        Some("192.168.1.100:6443")
    );
    assert_eq!(cp.interface, "eth0");
    assert_eq!(cp.apiservers.len(), 2);
    assert_eq!(cp.identity, "cp-1");
    assert_eq!(cp.lease_namespace, "kube-system");
    assert_eq!(cp.timings.lease_duration, Duration::from_secs(2));
    assert_eq!(cp.timings.retry_period, Duration::from_millis(250));
    // Off by default: the default file's section names no VIP.
    let d = parse_str(default_yaml(), "default")
        .expect("default")
        .config;
    assert_eq!(d.control_plane.vip, None);

    let bad = problems(&format!(
        "{base}controlPlane:\n  vip: 10.103.97.2:6443\n  interface: apiproxy0\n  \
         leaseDuration: 1s\n  renewDeadline: 950ms\n"
    ));
    let has = |needle: &str| {
        assert!(
            bad.iter().any(|p| p.contains(needle)),
            "no problem saying {needle:?}: {bad:#?}"
        )
    };
    has("controlPlane.vip: 10.103.97.2 is also a node-local VIP");
    has("controlPlane.interface: apiproxy0 is the node-local VIPs' dummy interface");
    has("controlPlane.apiservers: give the apiservers to elect through");
    has("controlPlane.timings: leaseDuration (1000 ms) must exceed renewDeadline (950 ms)");
    has("controlPlane.leaseDuration: 1000 ms is too short");
    // A node's own address as the VIP: the holder would announce it.
    let bad = problems(&format!(
        "{base}controlPlane:\n  vip: 192.168.1.11:6443\n  interface: eth0\n  \
         apiservers: [192.168.1.11:6443]\n"
    ));
    assert!(
        bad.iter()
            .any(|p| p.contains("controlPlane.apiservers[0]") && p.contains("cannot be the VIP")),
        "{bad:#?}"
    );
    let bad = problems(&format!(
        "{base}controlPlane:\n  vip: 192.168.1.100:6443\n  leaseDuraton: 2s\n"
    ));
    assert!(
        bad.iter().any(|p| p.contains("leaseDuraton")),
        "a misspelt key is named: {bad:#?}"
    );
}
