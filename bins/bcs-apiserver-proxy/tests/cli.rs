//! The daemon's command line, run as a real process (environment variables
//! included).

use std::process::{Command, Output};

fn daemon(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bcs-apiserver-proxy"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("KUBECONFIG");
    cmd.output().expect("run bcs-apiserver-proxy")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn config_default_prints_a_file_that_config_check_accepts() {
    let out = daemon(&["config", "default"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &out.stdout).expect("write");
    let check = daemon(&["config", "check", path.to_str().expect("utf8")], &[]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("ok (YAML, 1 virtual server(s))"),
        "{}",
        text(&check)
    );
}

#[test]
fn config_check_names_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "virtualServers:\n  - vip: 10.0.0.1\n    scheduler: nope\nlogFormat: xml\n",
    )
    .expect("write");
    let out = daemon(&["config", "check", path.to_str().expect("utf8")], &[]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("has 3 problem(s)"), "{t}");
    assert!(t.contains("virtualServers[0].vip"), "{t}");
    assert!(t.contains("virtualServers[0].scheduler"), "{t}");
    assert!(t.contains("logFormat"), "{t}");
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "virtualServers:\n  - vip: 10.103.97.2:6443\n    seeds: [192.168.1.10:6443]\ninterface: fromfile0\nresyncInterval: 3s\n",
    )
    .expect("write");
    let file = path.to_str().expect("utf8");
    let out = daemon(
        &[
            "config",
            "show",
            "--config",
            file,
            "--interface",
            "fromflag0",
        ],
        &[
            ("APISERVER_PROXY_INTERFACE", "fromenv0"),
            ("APISERVER_PROXY_SCHEDULER", "wrr"),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("interface: \"fromflag0\""), "{t}");
    assert!(t.contains("scheduler: \"wrr\""), "env beats the file: {t}");
    assert!(
        t.contains("resync_interval: 3s"),
        "the file beats defaults: {t}"
    );
}

#[test]
fn the_go_versions_flags_work_with_one_or_two_dashes() {
    let out = daemon(
        &[
            "config",
            "show",
            "-virtualAddress",
            "10.103.97.2:6443",
            "--lvsScheduler",
            "sh",
            "-managerInterval",
            "10",
            "--ipvsPersistDir",
            "/root/.bcs",
        ],
        &[],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("10.103.97.2:6443"), "{t}");
    assert!(t.contains("scheduler: \"sh\""), "{t}");
    assert!(t.contains("resync_interval: 10s"), "{t}");
    assert!(t.contains("\"/root/.bcs\""), "{t}");
}

#[test]
fn the_go_versions_json_config_file_is_read_with_dash_f() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("go.json");
    std::fs::write(
        &path,
        r#"{"proxyLvs":{"virtualAddress":"10.103.97.2:6443","lvsScheduler":"rr"},"debug":true}"#,
    )
    .expect("write");
    let out = daemon(&["config", "show", "-f", path.to_str().expect("utf8")], &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("warning:") && t.contains("debug"),
        "ignored Go keys are named: {t}"
    );
}

#[test]
fn bad_flags_get_one_clear_line_and_a_nonzero_exit() {
    // (arguments, what the message says, exit code: 2 when the command line
    // does not parse, 1 when it parses into a configuration that is refused)
    let cases: &[(&[&str], &str, i32)] = &[
        (&["config", "show", "--vs", "10.0.0.1"], "has no port", 2),
        (
            &[
                "config",
                "show",
                "--vs",
                "10.0.0.1:6443",
                "--rs",
                "fd00::1:6443",
            ],
            "without brackets",
            2,
        ),
        (
            &[
                "config",
                "show",
                "--vs",
                "10.0.0.1:6443",
                "--rs",
                "[fd00::1]:6443",
            ],
            "IPv6 but the virtual server",
            1,
        ),
        (
            &[
                "config",
                "show",
                "--vs",
                "10.0.0.1:6443",
                "--scheduler",
                "fastest",
            ],
            "unknown IPVS scheduler",
            1,
        ),
        (
            &["config", "show", "--rs", "10.0.0.2:6443"],
            "--rs needs a virtual server",
            1,
        ),
        (
            &[
                "config",
                "show",
                "--vs",
                "10.0.0.1:6443",
                "--health-interval",
                "soon",
            ],
            "is not a duration",
            2,
        ),
        (&["config", "show"], "no virtual server", 1),
    ];
    for (args, want, code) in cases {
        let out = daemon(args, &[]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t:?} should say {want:?}");
        assert!(!t.contains("panicked"), "{t}");
    }
}

/// Regression: a bad `APISERVER_PROXY_LOG` was silently replaced by `info`,
/// and there was no flag for it. Now both are one setting, refused at start
/// with the reason, before anything on the node is touched.
#[test]
fn a_bad_log_level_stops_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let base = [
        "--vs",
        "10.103.97.2:6443",
        "--rs",
        "10.0.0.1:6443",
        "--metrics-addr",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().expect("utf8"),
    ];
    let mut flag = base.to_vec();
    flag.extend(["--log-level", "info,foo=bogus"]);
    for (args, env) in [
        (flag, vec![]),
        (base.to_vec(), vec![("APISERVER_PROXY_LOG", "[[[")]),
    ] {
        let out = daemon(&args, &env);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains("--log-level (or APISERVER_PROXY_LOG)") && t.contains("is not a log level"),
            "{t}"
        );
        assert!(!state.exists(), "the start went on: {t}");
    }
    let help = text(&daemon(&["--help"], &[]));
    assert!(help.contains("--log-level"), "{help}");
    assert!(help.contains("Exit codes"), "{help}");
}

/// `--version` names the release, the revision built and the compiler, as
/// `apiserver_proxy_build_info` does.
#[test]
fn the_version_names_the_revision_and_the_compiler() {
    let out = daemon(&["--version"], &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let line = t.lines().next().unwrap_or_default();
    let rest = line
        .strip_prefix(concat!(
            "bcs-apiserver-proxy ",
            env!("CARGO_PKG_VERSION"),
            " (revision "
        ))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (revision, compiler) = rest.split_once(", built with ").expect(line);
    let hex = revision.trim_end_matches("-dirty");
    assert!(
        revision == "unknown" || (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit())),
        "{line:?}"
    );
    assert!(
        compiler.starts_with("rustc ") && compiler.ends_with(')'),
        "{line:?}"
    );
}

/// Regression: with `--log-format json` the fatal error was the one line
/// printed as plain text, so a log pipeline parsing JSON dropped exactly
/// the line that says why the daemon is not running. The format comes from
/// the flag, the environment or the file, whichever set it.
#[test]
fn the_fatal_error_is_json_when_the_logs_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let state = state.to_str().expect("utf8");
    // Refused after the file was read: the file alone asks for JSON.
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "logFormat: json\nvirtualServers: []\n").expect("write");
    let file = file.to_str().expect("utf8");
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().expect("utf8");
    let base = ["--metrics-addr", "127.0.0.1:0", "--state-dir", state];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    // (arguments, environment, what the message must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            with(&["--log-format", "json", "--config"])
                .into_iter()
                .chain([missing])
                .collect(),
            vec![],
            "missing.yaml",
        ),
        (
            with(&["--config"]).into_iter().chain([missing]).collect(),
            vec![("APISERVER_PROXY_LOG_FORMAT", "json")],
            "missing.yaml",
        ),
        (
            with(&["--config"]).into_iter().chain([file]).collect(),
            vec![],
            "virtual server",
        ),
        (
            with(&[
                "--vs",
                "10.103.97.2:6443",
                "--rs",
                "10.0.0.1:6443",
                "--log-level",
                "info,foo=bogus",
                "--log-format",
                "json",
            ]),
            vec![],
            "--log-level",
        ),
    ];
    for (args, env, names) in cases {
        let out = daemon(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        let line: serde_json::Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{args:?}: not a JSON line ({e}): {stderr}"));
        assert_eq!(line["level"], "ERROR", "{last}");
        assert!(line["timestamp"].is_string(), "{last}");
        let message = line["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{args:?}: {last}");
    }
    // Text stays text.
    let out = daemon(
        &with(&["--config"])
            .into_iter()
            .chain([missing])
            .collect::<Vec<_>>(),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.starts_with("bcs-apiserver-proxy: "), "{stderr}");
}

/// The daemon's completions and man page come from its parser's definition:
/// its flags, its `config` commands.
#[test]
fn completions_and_the_man_page_name_the_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let out = daemon(&["completions", shell], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for want in ["config", "check", "vs", "health-interval", "log-level"] {
            assert!(script.contains(want), "{shell}: {want:?} missing");
        }
    }
    let out = daemon(&["man"], &[]);
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(man.contains(".TH bcs-apiserver-proxy 1"), "{man}");
    for want in ["\\-\\-vs", "\\-\\-log\\-level", "config"] {
        assert!(man.contains(want), "man: {want:?} missing");
    }
    assert_eq!(daemon(&["completions", "tcsh"], &[]).status.code(), Some(2));
}
