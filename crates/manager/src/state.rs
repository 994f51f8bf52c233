//! The node's state file: what `apiserver-proxy-tools init` set up, so that
//! `reload` can rebuild it at boot (IPVS rules do not survive a reboot).
//!
//! `STATE_DIR/state.json`, written atomically (temp file, fsync, rename,
//! fsync of the folder). The Go tool's `ipvsConfig.yaml` (keys `vs`, `rs`,
//! `scheduler`) is read too, so a node set up by the Go tool reloads.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use apiserver_proxy_types::Endpoint;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Marks our files, so that a foreign JSON file is recognised as such.
pub const KIND: &str = "bcs-apiserver-proxy/node-state";
pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "state.json";
/// The Go tool's state file name, in its `-persistDir` (default `/root/.bcs`).
pub const GO_FILE_NAME: &str = "ipvsConfig.yaml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedVs {
    pub vip: Endpoint,
    pub scheduler: String,
    pub backends: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub kind: String,
    pub version: u32,
    pub interface: String,
    /// `address` or `route`.
    pub vip_mode: String,
    pub virtual_servers: Vec<SavedVs>,
}

impl NodeState {
    pub fn new(interface: &str, vip_mode: &str, virtual_servers: Vec<SavedVs>) -> NodeState {
        NodeState {
            kind: KIND.into(),
            version: VERSION,
            interface: interface.into(),
            vip_mode: vip_mode.into(),
            virtual_servers,
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never half of either.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(())
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
    Ok(state)
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
    let bad = |detail: String| Error::StateFile {
        path: path.display().to_string(),
        detail,
    };
    let go: GoState = serde_yaml_ng::from_str(&text)
        .map_err(|e| bad(format!("not the Go tool's format ({e})")))?;
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
    Ok(Some(SavedVs {
        vip,
        scheduler,
        backends,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = NodeState::new(
            "apiproxy0",
            "address",
            vec![SavedVs {
                vip: ep("[fd00::2]:6443"),
                scheduler: "wrr".into(),
                backends: vec![ep("[fd00::10]:6443")],
            }],
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
}
