//! The node's state file: what `apiserver-proxy-tools init` set up, so that
//! `reload` can rebuild it at boot (IPVS rules do not survive a reboot).
//!
//! `STATE_DIR/state.json`, written atomically (temp file, fsync, rename,
//! fsync of the folder). The Go tool's `ipvsConfig.yaml` (keys `vs`, `rs`,
//! `scheduler`) is read too, so a node set up by the Go tool reloads.
//!
//! Two writers share the file, one at a time under the state lock:
//! - `apiserver-proxy-tools` owns the list of virtual servers: `init` adds
//!   or replaces one, `cleanup` removes one;
//! - the daemon owns the *backends* of the virtual servers its configuration
//!   lists: it records what it serves ([`merge_served`]), but never replaces a
//!   non-empty backend list with an empty one (a daemon whose discovery never
//!   answered must not leave the node nothing to restore at boot), and never
//!   drops or rewrites an entry it does not manage.

use std::fs;
use std::path::{Path, PathBuf};

use apiserver_proxy_types::Endpoint;
use serde::{Deserialize, Serialize};

use crate::config::VipMode;
use crate::error::{Error, Result};

/// Marks our files, so that a foreign JSON file is recognised as such.
pub const KIND: &str = "bcs-apiserver-proxy/node-state";
pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "state.json";
/// The Go tool's state file name, in its `-persistDir` (default `/root/.bcs`).
pub const GO_FILE_NAME: &str = "ipvsConfig.yaml";
/// The daemon's last-known-good discovery cache, in the state folder.
pub const CACHE_FILE_NAME: &str = "backends.json";

/// The discovery cache's backend sets, by VIP.
pub use apiserver_proxy_discovery::cache::CachedSets;

pub fn cache_path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(CACHE_FILE_NAME)
}

/// Reads the daemon's discovery cache in `state_dir`. `Ok(None)` if there is
/// none.
pub fn load_cache(state_dir: &Path) -> Result<Option<CachedSets>> {
    apiserver_proxy_discovery::cache::load(&cache_path_in(state_dir)).map_err(Error::from)
}

/// Writes the discovery cache (tests and tools that seed a node).
pub fn store_cache(state_dir: &Path, sets: &CachedSets) -> Result<()> {
    apiserver_proxy_discovery::cache::store(&cache_path_in(state_dir), sets).map_err(Error::from)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedVs {
    pub vip: Endpoint,
    pub scheduler: String,
    pub backends: Vec<Endpoint>,
    /// This virtual server's interface, where it differs from the file's.
    /// Optional so that older builds still read the file (they ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// This virtual server's VIP mode, where it differs from the file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_mode: Option<VipMode>,
}

impl SavedVs {
    pub fn new(vip: Endpoint, scheduler: impl Into<String>, backends: Vec<Endpoint>) -> SavedVs {
        SavedVs {
            vip,
            scheduler: scheduler.into(),
            backends,
            interface: None,
            vip_mode: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub kind: String,
    pub version: u32,
    pub interface: String,
    /// An unknown value makes the file unreadable (named in the error), never
    /// a silent default.
    pub vip_mode: VipMode,
    pub virtual_servers: Vec<SavedVs>,
}

impl NodeState {
    pub fn new(interface: &str, vip_mode: VipMode, virtual_servers: Vec<SavedVs>) -> NodeState {
        NodeState {
            kind: KIND.into(),
            version: VERSION,
            interface: interface.into(),
            vip_mode,
            virtual_servers,
        }
    }

    /// The interface `vs` is restored on.
    pub fn interface_of<'a>(&'a self, vs: &'a SavedVs) -> &'a str {
        vs.interface.as_deref().unwrap_or(&self.interface)
    }

    /// The VIP mode `vs` is restored with.
    pub fn vip_mode_of(&self, vs: &SavedVs) -> VipMode {
        vs.vip_mode.unwrap_or(self.vip_mode)
    }

    /// Adds `vs` or replaces the entry with its VIP, recording its interface
    /// and mode on the entry where they differ from the file's, so that the
    /// other entries keep theirs.
    pub fn upsert(&mut self, mut vs: SavedVs, interface: &str, vip_mode: VipMode) {
        if self.virtual_servers.iter().all(|v| v.vip == vs.vip) {
            // Alone in the file: the file's own settings are this entry's.
            self.interface = interface.into();
            self.vip_mode = vip_mode;
        }
        vs.interface = (interface != self.interface).then(|| interface.into());
        vs.vip_mode = (vip_mode != self.vip_mode).then_some(vip_mode);
        match self.virtual_servers.iter_mut().find(|v| v.vip == vs.vip) {
            Some(old) => *old = vs,
            None => self.virtual_servers.push(vs),
        }
    }
}

/// The state file after the daemon served `served` (its configured virtual
/// servers, with the backends it wants now) on `interface` in `vip_mode`.
///
/// Entries the daemon does not manage are kept as they are. A managed entry
/// takes the daemon's scheduler, interface and mode, and its backends only
/// when the daemon has some: an empty desired set (no seeds, discovery that
/// never answered) never replaces a list `init` or an earlier run saved.
pub fn merge_served(
    existing: Option<NodeState>,
    interface: &str,
    vip_mode: VipMode,
    served: &[SavedVs],
) -> NodeState {
    let mut st = existing.unwrap_or_else(|| NodeState::new(interface, vip_mode, Vec::new()));
    for vs in served {
        let mut next = vs.clone();
        if let Some(old) = st.virtual_servers.iter().find(|v| v.vip == vs.vip)
            && next.backends.is_empty()
        {
            next.backends = old.backends.clone();
        }
        st.upsert(next, interface, vip_mode);
    }
    st
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` with the one safe write
/// (`apiserver_proxy_types::file::write_atomic`): a crash leaves the old
/// file or the new one, and a symlink planted in the state folder (a
/// hostPath the pod can write) is never followed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    apiserver_proxy_types::file::write_atomic(path, bytes, Some(0o644)).map_err(io("write", path))
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

pub fn save(state_dir: &Path, state: &NodeState) -> Result<PathBuf> {
    let path = path_in(state_dir);
    let mut text = serde_json::to_string_pretty(state).map_err(|e| Error::StateFile {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    text.push('\n');
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Reads our state file. `Ok(None)` if there is none; a corrupt or foreign
/// file is an error naming the file and what is wrong.
pub fn load(state_dir: &Path) -> Result<Option<NodeState>> {
    let path = path_in(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    parse(&text, &path).map(Some)
}

pub fn parse(text: &str, path: &Path) -> Result<NodeState> {
    let bad = |detail: String| Error::StateFile {
        path: path.display().to_string(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return Err(bad(format!(
            "not a bcs-apiserver-proxy state file (no \"kind\": \"{KIND}\")"
        )));
    }
    let state: NodeState =
        serde_json::from_value(value).map_err(|e| bad(format!("unreadable ({e})")))?;
    if state.version != VERSION {
        return Err(bad(format!(
            "version {} is not one this build reads ({VERSION})",
            state.version
        )));
    }
    let problems = problems(&state);
    if !problems.is_empty() {
        return Err(bad(format!("invalid: {}", problems.join("; "))));
    }
    Ok(state)
}

/// What the configuration's validation would refuse, checked again on a
/// file anyone with write access to the state folder may have edited: it
/// reaches the kernel at boot, before any daemon looks at it.
fn problems(state: &NodeState) -> Vec<String> {
    use crate::config::{check_interface_name, check_scheduler};
    let mut out = Vec::new();
    if let Err(e) = check_interface_name(&state.interface) {
        out.push(format!("interface: {e}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, vs) in state.virtual_servers.iter().enumerate() {
        let at = format!("virtualServers[{i}] ({})", vs.vip);
        if !seen.insert(vs.vip) {
            out.push(format!("{at}: listed twice"));
        }
        if let Some(name) = &vs.interface
            && let Err(e) = check_interface_name(name)
        {
            out.push(format!("{at}.interface: {e}"));
        }
        if let Err(e) = check_scheduler(&vs.scheduler) {
            out.push(format!("{at}.scheduler: {e}"));
        }
        for b in &vs.backends {
            if b.family() != vs.vip.family() {
                out.push(format!(
                    "{at}.backends: {b} is {} but the VIP is {}: IPVS cannot mix families",
                    b.family(),
                    vs.vip.family()
                ));
            }
        }
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoState {
    vs: String,
    #[serde(default)]
    rs: Vec<String>,
    #[serde(default)]
    scheduler: Option<String>,
}

/// Reads the Go tool's `ipvsConfig.yaml` from its persist folder.
/// `Ok(None)` if there is none. The Go tool forced the `sh` scheduler on
/// reload; we keep the saved one (docs/migration.md).
pub fn load_go(persist_dir: &Path) -> Result<Option<SavedVs>> {
    let path = persist_dir.join(GO_FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    parse_go(&text, &path).map(Some)
}

/// The Go tool's `ipvsConfig.yaml` text (`path` names it in errors).
pub fn parse_go(text: &str, path: &Path) -> Result<SavedVs> {
    let bad = |detail: String| Error::StateFile {
        path: path.display().to_string(),
        detail,
    };
    let go: GoState =
        serde_saphyr::from_str(text).map_err(|e| bad(format!("not the Go tool's format ({e})")))?;
    let vip: Endpoint = go.vs.parse().map_err(|e| bad(format!("vs: {e}")))?;
    let backends = go
        .rs
        .iter()
        .enumerate()
        .map(|(i, r)| r.parse().map_err(|e| bad(format!("rs[{i}]: {e}"))))
        .collect::<Result<Vec<Endpoint>>>()?;
    let scheduler = go
        .scheduler
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rr".into());
    crate::config::check_scheduler(&scheduler).map_err(|e| bad(format!("scheduler: {e}")))?;
    Ok(SavedVs::new(vip, scheduler, backends))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: these reached the kernel step of `reload`.
    #[test]
    fn a_state_file_is_validated_like_a_config_file() {
        let path = Path::new("/x/state.json");
        let file = |interface: &str, vs: &str| {
            format!(
                r#"{{"kind":"{KIND}","version":{VERSION},"interface":"{interface}","vipMode":"address","virtualServers":[{vs}]}}"#
            )
        };
        let vs = r#"{"vip":"10.103.97.2:6443","scheduler":"rr","backends":["192.168.1.10:6443"]}"#;
        assert!(parse(&file("apiproxy0", vs), path).is_ok());
        for (text, says) in [
            (file("../../x", vs), "interface: "),
            (
                file(
                    "apiproxy0",
                    r#"{"vip":"10.103.97.2:6443","scheduler":"rr","backends":[],"interface":"a/b"}"#,
                ),
                "virtualServers[0] (10.103.97.2:6443).interface",
            ),
            (
                file(
                    "apiproxy0",
                    r#"{"vip":"10.103.97.2:6443","scheduler":"bogus","backends":[]}"#,
                ),
                "unknown IPVS scheduler \"bogus\"",
            ),
            (
                file(
                    "apiproxy0",
                    r#"{"vip":"10.103.97.2:6443","scheduler":"rr","backends":["[fd00::1]:6443"]}"#,
                ),
                "cannot mix families",
            ),
            (file("apiproxy0", &format!("{vs},{vs}")), "listed twice"),
            (
                file("apiproxy0", vs).replace("\"address\"", "\"bogus\""),
                "unknown variant `bogus`",
            ),
        ] {
            let e = parse(&text, path).expect_err(&text).to_string();
            assert!(
                e.contains(says) && e.contains("/x/state.json"),
                "{says}: {e}"
            );
        }
    }

    /// Regression: state.json was written through the fixed name
    /// `state.tmp`, opened with `File::create`, which follows a symlink
    /// planted in the state folder and truncates its target.
    #[test]
    fn saving_never_follows_a_symlink_planted_in_the_state_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("write");
        std::os::unix::fs::symlink(&victim, dir.path().join("state.tmp")).expect("symlink");
        save(
            dir.path(),
            &NodeState::new("apiproxy0", VipMode::Address, Vec::new()),
        )
        .expect("save");
        assert_eq!(fs::read(&victim).expect("read"), b"precious");
        assert!(
            fs::symlink_metadata(path_in(dir.path()))
                .expect("stat")
                .file_type()
                .is_file()
        );
    }

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = NodeState::new(
            "apiproxy0",
            VipMode::Address,
            vec![SavedVs::new(
                ep("[fd00::2]:6443"),
                "wrr",
                vec![ep("[fd00::10]:6443")],
            )],
        );
        let path = save(dir.path(), &state).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(state));
        assert!(!path.with_extension("tmp").exists());
        assert_eq!(
            load(tempfile::tempdir().expect("t").path()).expect("none"),
            None
        );
    }

    #[test]
    fn corrupt_and_foreign_files_are_named_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (text, want) in [
            ("{not json", "not JSON"),
            (
                "{\"kind\": \"something-else\"}",
                "not a bcs-apiserver-proxy state file",
            ),
            (
                "{\"kind\": \"bcs-apiserver-proxy/node-state\", \"version\": 9, \"interface\": \"a\", \"vipMode\": \"address\", \"virtualServers\": []}",
                "version 9",
            ),
            (
                "{\"kind\": \"bcs-apiserver-proxy/node-state\", \"version\": 1, \"interface\": \"a\", \"vipMode\": \"address\", \"virtualServers\": [{\"vip\": \"10.0.0.1\", \"scheduler\": \"rr\", \"backends\": []}]}",
                "has no port",
            ),
            (
                "{\"kind\": \"bcs-apiserver-proxy/node-state\", \"version\": 1, \"interface\": \"a\", \"vipMode\": \"bogus\", \"virtualServers\": []}",
                "unknown variant `bogus`",
            ),
        ] {
            std::fs::write(dir.path().join(FILE_NAME), text).expect("write");
            let err = load(dir.path()).expect_err(text).to_string();
            assert!(err.contains("state.json") && err.contains(want), "{err}");
        }
    }

    #[test]
    fn reads_the_go_tools_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(GO_FILE_NAME),
            "vs: 10.103.97.2:6443\nrs:\n- 192.168.1.10:6443\n- 192.168.1.11:6443\nscheduler: wrr\n",
        )
        .expect("write");
        let vs = load_go(dir.path()).expect("load").expect("present");
        assert_eq!(vs.vip, ep("10.103.97.2:6443"));
        assert_eq!(vs.backends.len(), 2);
        assert_eq!(vs.scheduler, "wrr", "the saved scheduler is kept");
        std::fs::write(dir.path().join(GO_FILE_NAME), "vs: nonsense\n").expect("write");
        let err = load_go(dir.path()).expect_err("bad").to_string();
        assert!(
            err.contains("ipvsConfig.yaml") && err.contains("vs:"),
            "{err}"
        );
    }

    fn state_with(vss: Vec<SavedVs>) -> NodeState {
        NodeState::new("apiproxy0", VipMode::Address, vss)
    }

    #[test]
    fn the_daemon_never_saves_an_empty_list_over_a_good_one() {
        let init = state_with(vec![SavedVs::new(
            ep("10.103.97.2:6443"),
            "rr",
            vec![ep("192.168.1.10:6443")],
        )]);
        // No seeds, and discovery never answered: the daemon serves nothing.
        let served = [SavedVs::new(ep("10.103.97.2:6443"), "rr", vec![])];
        let st = merge_served(Some(init.clone()), "apiproxy0", VipMode::Address, &served);
        assert_eq!(st, init, "the saved backends must survive");

        // With backends, the daemon's list replaces the saved one.
        let served = [SavedVs::new(
            ep("10.103.97.2:6443"),
            "wrr",
            vec![ep("192.168.1.11:6443")],
        )];
        let st = merge_served(Some(init), "apiproxy0", VipMode::Address, &served);
        assert_eq!(
            st.virtual_servers[0].backends,
            vec![ep("192.168.1.11:6443")]
        );
        assert_eq!(st.virtual_servers[0].scheduler, "wrr");
    }

    #[test]
    fn the_daemon_keeps_entries_it_does_not_manage_and_their_settings() {
        // `init` saved two VIPs in route mode on its own interface.
        let mut init = NodeState::new("cp0", VipMode::Route, Vec::new());
        init.upsert(
            SavedVs::new(ep("10.103.97.2:6443"), "rr", vec![ep("192.168.1.10:6443")]),
            "cp0",
            VipMode::Route,
        );
        init.upsert(
            SavedVs::new(ep("10.103.97.3:6443"), "rr", vec![ep("192.168.1.10:6443")]),
            "cp0",
            VipMode::Route,
        );
        // The daemon manages only the first, in address mode on apiproxy0.
        let served = [SavedVs::new(
            ep("10.103.97.2:6443"),
            "rr",
            vec![ep("192.168.1.12:6443")],
        )];
        let st = merge_served(Some(init), "apiproxy0", VipMode::Address, &served);
        assert_eq!(st.virtual_servers.len(), 2, "{st:?}");
        let (ours, other) = (&st.virtual_servers[0], &st.virtual_servers[1]);
        assert_eq!(
            (st.interface_of(ours), st.vip_mode_of(ours)),
            ("apiproxy0", VipMode::Address)
        );
        assert_eq!(
            (st.interface_of(other), st.vip_mode_of(other)),
            ("cp0", VipMode::Route)
        );
        assert_eq!(other.backends, vec![ep("192.168.1.10:6443")]);

        // A fresh node: the daemon's settings become the file's.
        let st = merge_served(None, "apiproxy0", VipMode::Address, &served);
        assert_eq!(st.interface, "apiproxy0");
        assert_eq!(st.virtual_servers[0].interface, None);
    }

    #[test]
    fn per_entry_settings_round_trip_and_older_files_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut st = state_with(vec![SavedVs::new(
            ep("10.103.97.2:6443"),
            "rr",
            vec![ep("192.168.1.10:6443")],
        )]);
        st.upsert(
            SavedVs::new(ep("10.103.97.3:6443"), "rr", vec![ep("192.168.1.10:6443")]),
            "lo",
            VipMode::Route,
        );
        save(dir.path(), &st).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(st));
        // A file written by an earlier build has no per-entry settings.
        std::fs::write(
            dir.path().join(FILE_NAME),
            "{\"kind\": \"bcs-apiserver-proxy/node-state\", \"version\": 1, \"interface\": \"apiproxy0\", \"vipMode\": \"address\", \"virtualServers\": [{\"vip\": \"10.0.0.1:6443\", \"scheduler\": \"rr\", \"backends\": [\"192.168.1.1:6443\"]}]}",
        )
        .expect("write");
        let old = load(dir.path()).expect("load").expect("present");
        assert_eq!(old.interface_of(&old.virtual_servers[0]), "apiproxy0");
    }
}
