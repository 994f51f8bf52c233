//! `list` and `status`: what the kernel holds for our virtual servers, as a
//! table or JSON, and (for `status`) live probes and the saved view.

use std::collections::BTreeSet;

use apiserver_proxy_manager::plan::ActualVs;
use apiserver_proxy_types::Endpoint;
use serde::Serialize;
use serde_json::json;

use crate::probe::Probed;
use crate::saved::{Restore, Saved, Source};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedBackend {
    pub address: Endpoint,
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedVs {
    pub vip: Endpoint,
    /// False for a saved virtual server the kernel does not hold.
    pub in_kernel: bool,
    pub scheduler: Option<String>,
    pub backends: Vec<ListedBackend>,
}

/// Our virtual servers: those the kernel holds, and saved ones it lacks.
pub fn listed(ours: &[Endpoint], actual: &[ActualVs]) -> Vec<ListedVs> {
    ours.iter()
        .map(|vip| match actual.iter().find(|a| a.vip == *vip) {
            Some(a) => ListedVs {
                vip: *vip,
                in_kernel: true,
                scheduler: Some(a.scheduler.clone()),
                backends: a
                    .dests
                    .iter()
                    .map(|(b, d)| ListedBackend {
                        address: *b,
                        weight: d.weight,
                        active_conns: d.active_conns,
                        inactive_conns: d.inactive_conns,
                    })
                    .collect(),
            },
            None => ListedVs {
                vip: *vip,
                in_kernel: false,
                scheduler: None,
                backends: Vec::new(),
            },
        })
        .collect()
}

pub fn json(list: &[ListedVs]) -> String {
    serde_json::to_string_pretty(list).unwrap_or_else(|_| "[]".to_string())
}

/// Lays rows out in columns two spaces apart (the last column unpadded).
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

const NOTHING: &str = "no virtual server of ours on this node (create one with `apiserver-proxy-tools init` or `add`)";

const HEADER: [&str; 6] = [
    "VIRTUAL SERVER",
    "SCHEDULER",
    "BACKEND",
    "WEIGHT",
    "ACTIVE",
    "INACTIVE",
];

/// The `list` table.
pub fn list_table(list: &[ListedVs]) -> String {
    if list.is_empty() {
        return format!("{NOTHING}\n");
    }
    let mut rows = vec![cells(&HEADER)];
    for vs in list {
        rows.extend(vs_rows(vs, &mut |_| Vec::new()));
    }
    table(&rows)
}

fn cells(s: &[&str]) -> Vec<String> {
    s.iter().map(|c| c.to_string()).collect()
}

/// One virtual server's rows; `extra` adds columns to each backend's row.
fn vs_rows(
    vs: &ListedVs,
    extra: &mut dyn FnMut(&ListedBackend) -> Vec<String>,
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    if !vs.in_kernel {
        rows.push(vec![vs.vip.to_string(), "(not in the kernel)".to_string()]);
        return rows;
    }
    let mut first = true;
    let sched = vs.scheduler.clone().unwrap_or_default();
    if vs.backends.is_empty() {
        rows.push(vec![
            vs.vip.to_string(),
            sched.clone(),
            "(no backend)".to_string(),
        ]);
    }
    for b in &vs.backends {
        let (name, s) = if first {
            (vs.vip.to_string(), sched.clone())
        } else {
            (String::new(), String::new())
        };
        first = false;
        let mut row = vec![
            name,
            s,
            b.address.to_string(),
            b.weight.to_string(),
            b.active_conns.to_string(),
            b.inactive_conns.to_string(),
        ];
        row.extend(extra(b));
        rows.push(row);
    }
    rows
}

/// What `status` found.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub problems: Vec<String>,
    /// The same report for programs (`status -o json`); its schema is
    /// [`STATUS_KIND`] at [`STATUS_API_VERSION`], documented in docs/cli.md.
    pub json: serde_json::Value,
}

/// The `status -o json` document's version: a field added keeps it, a
/// field renamed or removed changes it.
pub const STATUS_API_VERSION: &str = "apiserver-proxy-tools/v1";
pub const STATUS_KIND: &str = "Status";

/// Whose view of the backends `status` shows.
#[derive(Debug)]
pub enum ViewSource<'a> {
    /// The running daemon's, from its `/status` page, with what it reports
    /// wrong itself.
    Daemon {
        address: std::net::SocketAddr,
        page: &'a serde_json::Value,
        problems: Vec<String>,
    },
    /// Probes from here: no daemon answered at `daemon` (`why`).
    OwnProbes {
        daemon: std::net::SocketAddr,
        why: String,
    },
}

/// The `status` report: the saved view, each virtual server with each
/// backend's health (the daemon's, or live probes), then every problem.
/// `probes` covers every backend listed or saved.
pub fn status(
    saved: &Saved,
    restore: &[Restore],
    list: &[ListedVs],
    probes: &[Probed],
    probe_summary: &str,
    source: &ViewSource<'_>,
    dataplane: (&str, &str),
) -> Report {
    let mut r = Report::default();
    let mut say = |line: String| {
        r.text.push_str(&line);
        r.text.push('\n');
    };
    say(match source {
        ViewSource::Daemon { address, .. } => format!("source: the daemon at {address}"),
        ViewSource::OwnProbes { daemon, why } => {
            format!("source: own probes (no daemon at {daemon}: {why})")
        }
    });
    say(format!("dataplane: {} ({})", dataplane.0, dataplane.1));
    say(match &saved.state {
        Some(st) => format!(
            "state file: {} ({} virtual server(s), interface {}, VIP mode {})",
            saved.state_path.display(),
            st.virtual_servers.len(),
            st.interface,
            st.vip_mode
        ),
        None => format!(
            "state file: none at {} (nothing is restored at boot)",
            saved.state_path.display()
        ),
    });
    if let Some(go) = &saved.go {
        say(format!(
            "Go tool's file: {} ({})",
            saved.go_path.display(),
            go.vip
        ));
    }
    if saved.cache.is_some() && saved.cache_newer {
        say(format!(
            "daemon cache: {} is newer than the state file; `reload` takes its backends",
            saved.cache_path.display()
        ));
    }
    say(format!("probes: {probe_summary}"));
    say(String::new());

    let mut problems = match source {
        ViewSource::Daemon { problems, .. } => problems.clone(),
        ViewSource::OwnProbes { .. } => Vec::new(),
    };
    if list.is_empty() {
        problems.push(NOTHING.to_string());
    }
    let mut header = cells(&HEADER);
    header.extend(cells(&["SAVED", "PROBE"]));
    let mut rows = vec![header];
    let mut json_vss = Vec::new();
    for vs in list {
        let restore = restore.iter().find(|r| r.vs.vip == vs.vip);
        let saved_backends: BTreeSet<Endpoint> = restore
            .as_ref()
            .map(|x| x.vs.backends.iter().copied().collect())
            .unwrap_or_default();
        let probe_of = |b: &Endpoint| probes.iter().find(|p| p.backend == *b);
        let probe_json = |b: &Endpoint| {
            probe_of(b).map_or(
                serde_json::Value::Null,
                |p| json!({"passed": p.passed, "detail": p.detail}),
            )
        };
        json_vss.push(json!({
            "vip": vs.vip.to_string(),
            "inKernel": vs.in_kernel,
            "saved": restore.is_some(),
            "scheduler": vs.scheduler,
            "backends": vs.backends.iter().map(|b| json!({
                "address": b.address.to_string(),
                "weight": b.weight,
                "activeConns": b.active_conns,
                "inactiveConns": b.inactive_conns,
                "saved": restore.map(|_| saved_backends.contains(&b.address)),
                "probe": probe_json(&b.address),
            })).collect::<Vec<_>>(),
            "savedNotInKernel": saved_backends
                .iter()
                .filter(|s| !vs.backends.iter().any(|b| b.address == **s))
                .map(|s| json!({"address": s.to_string(), "probe": probe_json(s)}))
                .collect::<Vec<_>>(),
        }));
        rows.extend(vs_rows(vs, &mut |b| {
            let saved = if restore.is_none() {
                "-"
            } else if saved_backends.contains(&b.address) {
                "yes"
            } else {
                "no"
            };
            let probe = probe_of(&b.address).map_or(String::new(), |p| {
                format!("{} {}", if p.passed { "ok" } else { "FAIL" }, p.detail)
            });
            vec![saved.to_string(), probe]
        }));
        if !vs.in_kernel {
            problems.push(format!(
                "{} is saved but not in the kernel (run `apiserver-proxy-tools reload`)",
                vs.vip
            ));
            continue;
        }
        if restore.is_none() {
            problems.push(format!(
                "{} is in the kernel but not saved: it will not survive a reboot (run `apiserver-proxy-tools init`)",
                vs.vip
            ));
        }
        if !vs.backends.iter().any(|b| b.weight > 0) {
            problems.push(format!("{} has no backend in rotation", vs.vip));
        }
        for b in &vs.backends {
            if let Some(p) = probe_of(&b.address)
                && !p.passed
            {
                problems.push(format!(
                    "{} backend {} fails its probe: {}",
                    vs.vip, b.address, p.detail
                ));
            }
        }
        for b in &saved_backends {
            if vs.backends.iter().any(|x| x.address == *b) {
                continue;
            }
            let probe = probe_of(b).map_or(String::new(), |p| format!("; probe: {}", p.detail));
            problems.push(format!(
                "{} backend {b} is saved but not in the kernel{probe} (run `apiserver-proxy-tools reload`)",
                vs.vip
            ));
        }
    }
    if !list.is_empty() {
        say(table(&rows).trim_end().to_string());
        say(String::new());
    }
    if problems.is_empty() {
        say("healthy".to_string());
    } else {
        say(format!("unhealthy: {} problem(s)", problems.len()));
        for p in &problems {
            say(format!("  - {p}"));
        }
    }
    if list.iter().any(|v| {
        restore
            .iter()
            .any(|x| x.vs.vip == v.vip && x.source == Source::GoFile)
    }) {
        say(
            "note: a virtual server comes from the Go tool's file; `init` saves it in ours"
                .to_string(),
        );
    }
    r.json = json!({
        "apiVersion": STATUS_API_VERSION,
        "kind": STATUS_KIND,
        "healthy": problems.is_empty(),
        "dataplane": dataplane.0,
        "source": match source {
            ViewSource::Daemon { .. } => "daemon",
            ViewSource::OwnProbes { .. } => "probes",
        },
        "daemonAddress": match source {
            ViewSource::Daemon { address, .. } => address.to_string(),
            ViewSource::OwnProbes { daemon, .. } => daemon.to_string(),
        },
        "daemonError": match source {
            ViewSource::Daemon { .. } => None,
            ViewSource::OwnProbes { why, .. } => Some(why.clone()),
        },
        "daemon": match source {
            ViewSource::Daemon { page, .. } => (*page).clone(),
            ViewSource::OwnProbes { .. } => serde_json::Value::Null,
        },
        "stateFile": {
            "path": saved.state_path.display().to_string(),
            "present": saved.state.is_some(),
            "interface": saved.state.as_ref().map(|st| st.interface.clone()),
            "vipMode": saved.state.as_ref().map(|st| st.vip_mode.to_string()),
        },
        "goFile": saved.go.as_ref().map(|go| json!({
            "path": saved.go_path.display().to_string(),
            "vip": go.vip.to_string(),
        })),
        "daemonCacheNewer": saved.cache.is_some() && saved.cache_newer,
        "probes": probe_summary,
        "virtualServers": json_vss,
        "problems": problems,
    });
    r.problems = problems;
    r
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use apiserver_proxy_manager::plan::ActualDest;

    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().expect("endpoint")
    }

    fn actual() -> Vec<ActualVs> {
        let mut dests = BTreeMap::new();
        dests.insert(
            ep("192.168.1.10:6443"),
            ActualDest {
                weight: 1,
                active_conns: 3,
                inactive_conns: 1,
                ..ActualDest::default()
            },
        );
        vec![ActualVs {
            vip: ep("10.103.97.2:6443"),
            scheduler: "rr".into(),
            dests,
        }]
    }

    #[test]
    fn list_shows_kernel_and_missing_virtual_servers() {
        let list = listed(&[ep("10.103.97.2:6443"), ep("[fd00::2]:6443")], &actual());
        let t = list_table(&list);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>().len(),
            7,
            "{t}"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["10.103.97.2:6443", "rr", "192.168.1.10:6443", "1", "3", "1"]
        );
        assert!(
            lines[2].contains("[fd00::2]:6443") && lines[2].contains("not in the kernel"),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&list)).expect("json");
        assert_eq!(v[0]["backends"][0]["activeConns"], 3);
        assert_eq!(v[1]["inKernel"], false);
        assert!(list_table(&[]).contains("no virtual server of ours"));
    }

    /// `status` of one unsaved virtual server whose backend passes or
    /// fails its probe.
    fn one_vs_report(passed: bool) -> Report {
        let list = listed(&[ep("10.103.97.2:6443")], &actual());
        let probes = vec![Probed {
            backend: ep("192.168.1.10:6443"),
            passed,
            detail: if passed {
                "ready".into()
            } else {
                "dead (connection refused) in 1ms".into()
            },
        }];
        status(
            &Saved::default(),
            &[],
            &list,
            &probes,
            "tcp connect",
            &ViewSource::OwnProbes {
                daemon: "127.0.0.1:8004".parse().expect("addr"),
                why: "connection refused".into(),
            },
            ("nftables", "asked for in the configuration"),
        )
    }

    #[test]
    fn status_names_every_problem() {
        let r = one_vs_report(false);
        assert_eq!(r.problems.len(), 2, "{}", r.text);
        assert!(r.text.contains("fails its probe"), "{}", r.text);
        assert!(r.text.contains("not saved"), "{}", r.text);
        let r = status(
            &Saved::default(),
            &[],
            &[],
            &[],
            "tcp connect",
            &ViewSource::OwnProbes {
                daemon: "127.0.0.1:8004".parse().expect("addr"),
                why: "connection refused".into(),
            },
            ("nftables", "asked for in the configuration"),
        );
        assert_eq!(r.problems.len(), 1, "{}", r.text);
    }

    #[test]
    fn status_json_says_what_the_table_says() {
        let r = one_vs_report(false);
        let j = &r.json;
        assert_eq!(j["apiVersion"], STATUS_API_VERSION);
        assert_eq!(j["kind"], "Status");
        assert_eq!(j["healthy"], false);
        assert_eq!(j["problems"].as_array().map(Vec::len), Some(2));
        let vs = &j["virtualServers"][0];
        assert_eq!(vs["vip"], "10.103.97.2:6443");
        assert_eq!(vs["saved"], false);
        let b = &vs["backends"][0];
        assert_eq!(b["address"], "192.168.1.10:6443");
        assert_eq!(b["activeConns"], 3);
        assert_eq!(b["probe"]["passed"], false);
        assert!(b["saved"].is_null(), "not saved: no saved list to be in");
    }

    /// Every field of `status -o json` is in docs/cli.md's table, and the
    /// table names no field that does not exist: the schema cannot drift.
    #[test]
    fn the_status_json_schema_is_documented() {
        let r = one_vs_report(true);
        apiserver_proxy_testkit::doc_schema::check(
            include_str!("../../../docs/cli.md"),
            "## `status -o json`",
            &r.json,
        )
        .unwrap_or_else(|e| panic!("docs/cli.md: {e}"));
    }
}
