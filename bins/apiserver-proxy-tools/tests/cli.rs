//! The CLI as a process, on the host: parsing, the Go tool's syntax, every
//! bad input refused in one line before the kernel is touched (exit code 2
//! when the command line does not parse, 1 when it parses but cannot be
//! used), and the static-pod manifest. (Everything that needs IPVS is in
//! tests/kernel.rs and runs in the VM.)

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, Run, run_cli};
use serde_json::Value;

/// Runs the CLI with its state, Go and boot folders in `dir`, so that a
/// host test never reads or writes the machine's.
fn tools(dir: &Path, line: &str) -> Run {
    let go = dir.join("go");
    run_cli(
        BIN.as_ref(),
        line,
        &["--persist-dir".as_ref(), go.as_os_str()],
        &[
            ("APISERVER_PROXY_STATE_DIR", dir.join("state").as_os_str()),
            ("APISERVER_PROXY_TOOLS_ROOT", dir.join("root").as_os_str()),
        ],
    )
}

/// Runs the CLI with nothing but `line` (for what reads no state).
fn bare(line: &str) -> Run {
    run_cli(BIN.as_ref(), line, &[], &[])
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Every command a user can type.
const COMMANDS: [&str; 9] = [
    "add",
    "delete",
    "list",
    "status",
    "init",
    "reload",
    "cleanup",
    "static-pod",
    "completions",
];

#[test]
fn help_teaches_every_command_and_the_exit_codes() {
    let help = bare("--help").ok().stdout();
    for want in
        COMMANDS
            .iter()
            .chain(&["Exit codes", "-cmd add", "2 the command line", "3 `status`"])
    {
        assert!(help.contains(want), "{want:?} missing from --help:\n{help}");
    }
    let add = bare("add --help").ok().stdout();
    for want in ["never", "--no-probe", "--scheduler", "IPv6", "Example"] {
        assert!(
            add.contains(want),
            "{want:?} missing from add --help:\n{add}"
        );
    }
    let go = bare("-cmd init -help").ok().stdout();
    assert!(go.contains("boot-time"), "{go}");
}

#[test]
fn no_command_shows_help_and_fails() {
    let r = bare("");
    assert_eq!(r.code(), 2, "a usage error");
    assert!(r.stderr().contains("Usage"), "{}", r.stderr());
}

#[test]
fn malformed_addresses_are_refused_in_one_line() {
    let dir = tempdir();
    let d = dir.path();
    for (line, want) in [
        (
            "add --vs apiserver:6443 --rs 192.168.1.10:6443",
            &["\"apiserver\" is not an IP address"][..],
        ),
        (
            "add --vs 10.103.97.2 --rs 192.168.1.10:6443",
            &["has no port", "10.103.97.2:6443"],
        ),
        (
            "add --vs 10.103.97.2:6443 --rs 192.168.1.10",
            &["has no port"],
        ),
        (
            "add --vs fd00::2:6443 --rs [fd00::10]:6443",
            &["[ADDR]:PORT"],
        ),
        (
            "add --vs 10.103.97.2:99999 --rs 192.168.1.10:6443",
            &["not a port"],
        ),
        ("add --rs 192.168.1.10:6443", &["--vs"]),
        ("add --vs 10.103.97.2:6443", &["--rs"]),
        ("list -o xml", &["xml"]),
        (
            "add --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --health-timeout 5m",
            &["--health-timeout", "from 100ms to 1m"],
        ),
        (
            "add --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --health-timeout soon",
            &["not a duration"],
        ),
    ] {
        // Values the flags' parsers refuse: the command line does not parse.
        tools(d, line).usage(want);
    }
}

#[test]
fn mixed_families_and_unknown_schedulers_are_refused() {
    let dir = tempdir();
    let d = dir.path();
    for (line, want) in [
        (
            "add --vs [fd00::2]:6443 --rs 192.168.1.10:6443 --no-probe",
            &[
                "192.168.1.10:6443 is IPv4",
                "[fd00::2]:6443 is IPv6",
                "cannot mix",
            ][..],
        ),
        (
            "init --vs 10.103.97.2:6443 --rs [fd00::10]:6443 --no-probe",
            &["is IPv6", "cannot mix"],
        ),
        (
            "add --vs [fd00::2]:6443 --rs [fd00::10]:6443 --vip-mode route --no-probe",
            &["IPv4 only", "--vip-mode address"],
        ),
    ] {
        tools(d, line).refused(want);
    }
    // A scheduler name is the flag's own type: a usage error.
    tools(
        d,
        "add --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --scheduler fast",
    )
    .usage(&["unknown IPVS scheduler \"fast\"", "rr, wrr"]);
    assert!(!d.join("state").exists(), "nothing was started");
}

/// Regression: each of these went through to the kernel step.
#[test]
fn unusable_vips_and_backends_are_refused_before_anything_starts() {
    let dir = tempdir();
    let d = dir.path();
    for (line, want) in [
        (
            "add --vs 0.0.0.0:6443 --rs 192.168.1.10:6443",
            &["unspecified", "fix --vs"][..],
        ),
        (
            "add --vs 255.255.255.255:6443 --rs 192.168.1.10:6443",
            &["broadcast"],
        ),
        (
            "add --vs 224.0.0.1:6443 --rs 192.168.1.10:6443",
            &["multicast"],
        ),
        (
            "init --vs 127.0.0.1:6443 --rs 192.168.1.10:6443",
            &["loopback"],
        ),
        ("add --vs [::]:6443 --rs [fd00::10]:6443", &["unspecified"]),
        (
            "add --vs 10.103.97.2:6443 --rs 127.0.0.1:6443",
            &["loopback", "fix --rs"],
        ),
        (
            "add --vs 10.103.97.2:6443 --rs 10.103.97.2:6443",
            &["the VIP 10.103.97.2:6443 itself"],
        ),
        (
            "static-pod --vs 10.103.97.2:6443 --rs 127.0.0.1:6443",
            &["loopback"],
        ),
    ] {
        tools(d, line).refused(want);
    }
    // Port 0 is refused by the address parser itself: a usage error.
    tools(d, "add --vs 10.103.97.2:0 --rs 192.168.1.10:6443").usage(&["port 0"]);
    assert!(!d.join("state").exists(), "nothing was started");
}

#[test]
fn the_go_tools_syntax_is_accepted() {
    let dir = tempdir();
    let d = dir.path();
    // Parsed up to the scheduler check, which proves every flag was read.
    tools(
        d,
        "-cmd add -vs 10.103.97.2:6443 -rs 192.168.1.10:6443 -rs 192.168.1.11:6443 -scheduler nope",
    )
    .usage(&["unknown IPVS scheduler \"nope\""]);
    tools(d, "-cmd init -vs 10.103.97.2:6443 -rs x").usage(&["\"x\" has no port"]);
    tools(d, "-cmd").usage(&["-cmd needs a command"]);
    tools(d, "-cmd frobnicate").usage(&["frobnicate"]);
    // Every Go flag is known to every command: reload gets as far as
    // finding nothing to restore.
    tools(
        d,
        "-cmd reload -toolPath /usr/bin/x -healthScheme https -healthPath /healthz",
    )
    .refused(&["nothing to restore", "ipvsConfig.yaml", "init"]);
}

#[test]
fn a_corrupt_state_file_is_named_and_nothing_runs() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::create_dir_all(d.join("state")).expect("mkdir");
    std::fs::write(d.join("state/state.json"), "{\"kind\": ").expect("write");
    for line in [
        "reload",
        "status",
        "list",
        "cleanup --vs 10.103.97.2:6443",
        "delete --vs 10.103.97.2:6443",
        "init --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --no-probe",
    ] {
        tools(d, line).refused(&["state.json", "not JSON", "move it away"]);
    }
    std::fs::remove_file(d.join("state/state.json")).expect("rm");
    std::fs::create_dir_all(d.join("go")).expect("mkdir");
    std::fs::write(d.join("go/ipvsConfig.yaml"), "vs: [1, 2]\n").expect("write");
    tools(d, "reload").refused(&["ipvsConfig.yaml", "not the Go tool's format"]);
    assert!(!d.join("root").exists(), "nothing was installed");
}

const ADD: &str = "add --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --no-probe";

/// The lock a running daemon holds: the CLI waits briefly, then says who
/// holds it and what to do, before touching the kernel.
/// A kernel without IPVS (our build machines') is named, with the fix,
/// before anything changes. In a private network namespace, so that the
/// test could never change the machine's network.
#[test]
fn a_kernel_without_ipvs_is_named() {
    assert!(
        !Path::new("/proc/net/ip_vs").exists(),
        "this host test checks the message on a kernel without IPVS, and this kernel has it: \
         the real-kernel tests in tests/kernel.rs cover this machine"
    );
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let run = std::thread::spawn(move || {
        apiserver_proxy_testkit::netns::isolate();
        let r = tools(&d, &format!("{ADD} --dataplane ipvs"));
        let links = Command::new("ip")
            .args(["-o", "link"])
            .output()
            .expect("ip");
        (r, String::from_utf8_lossy(&links.stdout).into_owned())
    });
    let (r, links) = run.join().expect("thread");
    r.refused(&["no IPVS", "modprobe ip_vs"]);
    assert!(
        !links.contains("apiproxy0"),
        "the dummy was created: {links}"
    );
    tools(dir.path(), "list --dataplane ipvs").refused(&["no IPVS"]);
}

/// With `auto` on a kernel without IPVS the CLI takes nftables and says so;
/// where the kernel has no dummy driver either (this host), the address
/// mode is refused with what to do, before anything is created.
#[test]
fn auto_takes_nftables_without_ipvs_and_names_a_missing_dummy_driver() {
    assert!(
        !Path::new("/proc/net/ip_vs").exists(),
        "this host test checks `auto` on a kernel without IPVS, and this kernel has it: \
         tests/kernel.rs covers nftables on this machine"
    );
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let r = std::thread::spawn(move || {
        apiserver_proxy_testkit::netns::isolate();
        tools(&d, ADD)
    })
    .join()
    .expect("thread");
    assert!(
        r.stdout()
            .contains("dataplane: nftables (auto: the kernel has no IPVS"),
        "{}",
        r.stdout()
    );
    r.refused(&["dummy", "--vip-mode route"]);
}

fn pod(flags: &str) -> Value {
    let r = bare(&format!("static-pod {flags}")).ok();
    serde_saphyr::from_str(&r.stdout()).expect("the manifest is YAML")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn static_pod_is_a_node_critical_host_network_pod() {
    // What the packaging tests validate with kubernetes-validate.
    let p = pod("--vs 10.103.97.2:6443 --rs 192.168.1.10:6443");
    assert_eq!(p["apiVersion"], "v1");
    assert_eq!(p["kind"], "Pod");
    assert_eq!(p["metadata"]["namespace"], "kube-system");
    let spec = &p["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    let c = &spec["containers"][0];
    let image = format!(
        "ghcr.io/bcs-apiserver-proxy/bcs-apiserver-proxy:{}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(c["image"], image.as_str());
    let sc = &c["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["add"]), ["NET_ADMIN"]);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], 8004);
    assert!(c["livenessProbe"]["httpGet"]["host"].is_null());
    let args = strings(&c["args"]).join(" ");
    for want in [
        "--vs 10.103.97.2:6443",
        "--rs 192.168.1.10:6443",
        "--state-dir /var/lib/bcs-apiserver-proxy",
        "--metrics-addr 0.0.0.0:8004",
        "--kubeconfig /etc/kubernetes/kubelet.conf",
        "--health-ca-file /etc/kubernetes/pki/ca.crt",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    // Every path the daemon reads is mounted from the host, read-only but
    // the state folder; nothing from /lib/modules (the kernel loads IPVS).
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    let volumes = spec["volumes"].as_array().expect("volumes");
    assert_eq!(mounts.len(), volumes.len());
    for m in mounts {
        let path = m["mountPath"].as_str().expect("path");
        assert!(!path.starts_with("/lib/modules"), "{path}");
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("volume of mount");
        assert_eq!(v["hostPath"]["path"].as_str(), Some(path));
        let writable = path == "/var/lib/bcs-apiserver-proxy";
        assert_eq!(m["readOnly"], !writable, "{path}");
    }
    for want in [
        "/etc/kubernetes/kubelet.conf",
        "/var/lib/kubelet/pki",
        "/etc/kubernetes/pki/ca.crt",
    ] {
        assert!(
            mounts.iter().any(|m| m["mountPath"] == want),
            "{want} not mounted"
        );
    }
}

#[test]
fn static_pod_takes_its_flags() {
    let p = pod(
        "--vs [fd00::2]:6443 --rs [fd00::10]:6443 --image registry.local/proxy:1 \
         --scheduler wrr --state-dir /data/proxy --metrics-addr 127.0.0.1:9004 --kubeconfig /etc/k/kc",
    );
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.local/proxy:1");
    let args = strings(&c["args"]).join(" ");
    for want in [
        "--vs [fd00::2]:6443",
        "--rs [fd00::10]:6443",
        "--scheduler wrr",
        "--state-dir /data/proxy",
        "--metrics-addr 127.0.0.1:9004",
        "--kubeconfig /etc/k/kc",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 9004);
    assert_eq!(c["readinessProbe"]["httpGet"]["host"], "127.0.0.1");

    bare("static-pod --vs 10.0.0.1:6443 --vs 10.0.0.2:6443").refused(&["one --vs", "--config"]);
    bare("static-pod --vs 10.0.0.1:6443 --rs [fd00::1]:6443").refused(&["cannot mix"]);
    let p = pod("--config /etc/bcs-apiserver-proxy/config.yaml");
    let args = strings(&p["spec"]["containers"][0]["args"]).join(" ");
    assert!(
        args.contains("--config /etc/bcs-apiserver-proxy/config.yaml"),
        "{args}"
    );
}

#[test]
fn bad_paths_are_refused() {
    bare("static-pod --vs 10.0.0.1:6443 --kubeconfig kc").refused(&["absolute"]);
}

/// The completion scripts and the man page come from the same definition
/// as the parser: each names every command and the main flags, so a
/// command added without them cannot ship.
#[test]
fn completions_and_the_man_page_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = bare(&format!("completions {shell}")).ok().stdout();
        for want in COMMANDS.iter().chain(&["--vs", "--rs", "--state-dir"]) {
            let flag = want.trim_start_matches('-');
            assert!(script.contains(flag), "{shell}: {want:?} missing");
        }
    }
    let man = bare("man").ok().stdout();
    assert!(
        man.starts_with(".ie") || man.contains("\n.TH apiserver-proxy-tools 1"),
        "{man}"
    );
    for want in COMMANDS {
        assert!(
            man.contains(&want.replace('-', "\\-")),
            "man: {want:?} missing"
        );
    }
    bare("completions tcsh").usage(&["tcsh"]);
}

#[test]
fn static_pod_holds_the_outside_vip_for_the_first_control_plane_node() {
    let p = pod(
        "--vs 10.103.97.2:6443 --rs 192.168.1.11:6443 --control-plane-vip 192.168.1.100:6443 \
         --control-plane-interface eth0 --kubeconfig /etc/kubernetes/super-admin.conf",
    );
    let c = &p["spec"]["containers"][0];
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["add"]),
        ["NET_ADMIN", "NET_RAW"]
    );
    let args = strings(&c["args"]).join(" ");
    for want in [
        "--control-plane-vip 192.168.1.100:6443",
        "--control-plane-interface eth0",
        // The seeds are the election's apiservers unless given.
        "--control-plane-apiserver 192.168.1.11:6443",
        "--kubeconfig /etc/kubernetes/super-admin.conf",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    let p = pod(
        "--vs 10.103.97.2:6443 --rs 192.168.1.11:6443 --control-plane-vip 192.168.1.100:6443 \
         --control-plane-interface eth0 --control-plane-apiserver 192.168.1.11:6443,192.168.1.12:6443",
    );
    let args = strings(&p["spec"]["containers"][0]["args"]).join(" ");
    assert!(
        args.contains("--control-plane-apiserver 192.168.1.12:6443"),
        "{args}"
    );
    // Without it, no NET_RAW.
    let p = pod("--vs 10.103.97.2:6443 --rs 192.168.1.11:6443");
    assert_eq!(
        strings(&p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]),
        ["NET_ADMIN"]
    );
    bare("static-pod --vs 10.103.97.2:6443 --control-plane-vip 192.168.1.100:6443")
        .usage(&["--control-plane-interface"]);
    bare(
        "static-pod --vs 10.103.97.2:6443 --control-plane-vip 10.103.97.2:6443 \
         --control-plane-interface eth0",
    )
    .refused(&["both the node-local VIP and the outside VIP"]);
    bare(
        "static-pod --vs 10.103.97.2:6443 --control-plane-vip 192.168.1.100:6443 \
         --control-plane-interface eth0",
    )
    .refused(&["no apiserver"]);
}
