//! What the node saved: our state file (`STATE_DIR/state.json`, shared with
//! the daemon), the Go tool's `ipvsConfig.yaml`, and the daemon's
//! last-known-good cache (`STATE_DIR/backends.json`). Reading and writing
//! go through `manager::state` and `discovery::cache`; nothing here knows
//! their formats.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use apiserver_proxy_manager::state::{self, CachedSets, NodeState, SavedVs};
use apiserver_proxy_types::Endpoint;

use crate::cli::Common;
use crate::fail::Failure;
use apiserver_proxy_manager::config::VipMode;

/// Where a virtual server to restore came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    StateFile,
    GoFile,
    /// Only the daemon's cache names it: the state file is unreadable.
    Cache,
}

/// Why the backends of a restored virtual server are the daemon's cache's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromCache {
    /// The cache was written after the state file: it is the newer truth.
    Newer,
    /// The state file lists no backend for this VIP.
    StateEmpty,
}

/// One virtual server to restore, with where it and its backends came from,
/// and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub vs: SavedVs,
    pub source: Source,
    /// Set when the backends are the daemon's cache's.
    pub from_cache: Option<FromCache>,
    pub interface: String,
    pub vip_mode: VipMode,
}

impl Restore {
    /// Where its backends come from, as `reload` says it.
    pub fn describe_source(&self) -> &'static str {
        match (self.source, self.from_cache) {
            (Source::Cache, _) => {
                "from the daemon's cache backends.json, state.json being unreadable"
            }
            (_, Some(FromCache::Newer)) => "backends from the daemon's newer cache backends.json",
            (_, Some(FromCache::StateEmpty)) => {
                "backends from the daemon's cache backends.json: state.json lists none"
            }
            (Source::StateFile, None) => "from state.json",
            (Source::GoFile, None) => "from the Go tool's ipvsConfig.yaml",
        }
    }
}

/// Everything saved on this node, read once.
#[derive(Debug, Default)]
pub struct Saved {
    pub state_path: PathBuf,
    pub go_path: PathBuf,
    pub cache_path: PathBuf,
    pub state: Option<NodeState>,
    pub go: Option<SavedVs>,
    /// The daemon's cache.
    pub cache: Option<CachedSets>,
    /// The cache was written after the state file.
    pub cache_newer: bool,
    /// Files that could not be read; each is an error for the command.
    pub problems: Vec<Failure>,
    /// Things worth saying that are not errors (an unreadable cache).
    pub warnings: Vec<String>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Saved {
    /// Reads every file. Unreadable ones are recorded in `problems`, so that
    /// `reload` can still restore from the others.
    pub fn load(common: &Common) -> Saved {
        let mut s = Saved {
            state_path: state::path_in(&common.state_dir),
            go_path: common.persist_dir.join(state::GO_FILE_NAME),
            cache_path: state::cache_path_in(&common.state_dir),
            ..Saved::default()
        };
        match state::load(&common.state_dir) {
            Ok(st) => s.state = st,
            Err(e) => s.problems.push(e.into()),
        }
        match state::load_go(&common.persist_dir) {
            Ok(go) => s.go = go,
            Err(e) => s.problems.push(e.into()),
        }
        s.cache_newer = match (modified(&s.cache_path), modified(&s.state_path)) {
            (Some(c), Some(st)) => c > st,
            _ => false,
        };
        // Read whatever its age: it is the fallback for a VIP the state file
        // has no backends for, and for an unreadable state file.
        match state::load_cache(&common.state_dir) {
            Ok(c) => s.cache = c,
            Err(e) => s.warnings.push(format!("ignoring the daemon's cache: {e}")),
        }
        s
    }

    /// [`Saved::load`] for commands that change the state or judge it: an
    /// unreadable file stops them before they touch anything.
    pub fn load_strict(common: &Common) -> Result<Saved, Failure> {
        let mut s = Saved::load(common);
        match s.problems.is_empty() {
            true => Ok(s),
            false => Err(s.problems.remove(0)),
        }
    }

    /// The interface and VIP mode the state file records, else the flag's.
    pub fn interface<'a>(&'a self, common: &'a Common) -> &'a str {
        self.state
            .as_ref()
            .map(|st| st.interface.as_str())
            .unwrap_or(&common.interface)
    }

    /// What `reload` restores: the state file's virtual servers, then the Go
    /// tool's if its VIP is not among them. A VIP's backends are the daemon's
    /// cache's where the cache is newer than the state file, or where the
    /// state file lists none. When the state file cannot be read, the
    /// cache's VIPs are restored on the flags' interface and mode: a corrupt
    /// file must not cost the node its path to the API.
    pub fn restore_list(&self, common: &Common) -> Vec<Restore> {
        let mut out: Vec<Restore> = Vec::new();
        if let Some(st) = &self.state {
            for vs in &st.virtual_servers {
                out.push(Restore {
                    vs: vs.clone(),
                    source: Source::StateFile,
                    from_cache: None,
                    interface: st.interface_of(vs).to_string(),
                    vip_mode: st.vip_mode_of(vs),
                });
            }
        }
        if let Some(go) = &self.go
            && !out.iter().any(|r| r.vs.vip == go.vip)
        {
            out.push(Restore {
                vs: go.clone(),
                source: Source::GoFile,
                from_cache: None,
                interface: self.interface(common).to_string(),
                vip_mode: VipMode::Address,
            });
        }
        let Some(cache) = &self.cache else {
            return out;
        };
        for r in &mut out {
            let Some(backends) = cache.get(&r.vs.vip).filter(|b| !b.is_empty()) else {
                continue;
            };
            let why = if r.vs.backends.is_empty() {
                FromCache::StateEmpty
            } else if self.cache_newer {
                FromCache::Newer
            } else {
                continue;
            };
            r.vs.backends = backends.iter().copied().collect();
            r.from_cache = Some(why);
        }
        if self.state.is_none() && self.state_unreadable() {
            for (vip, backends) in cache {
                if backends.is_empty() || out.iter().any(|r| r.vs.vip == *vip) {
                    continue;
                }
                out.push(Restore {
                    vs: SavedVs::new(
                        *vip,
                        crate::node::DEFAULT_SCHEDULER,
                        backends.iter().copied().collect(),
                    ),
                    source: Source::Cache,
                    from_cache: Some(FromCache::StateEmpty),
                    interface: common.interface.clone(),
                    vip_mode: VipMode::Address,
                });
            }
        }
        out
    }

    /// The state file exists but could not be read.
    fn state_unreadable(&self) -> bool {
        self.state.is_none() && self.state_path.exists()
    }

    /// Every VIP a state file names.
    pub fn vips(&self, common: &Common) -> Vec<Endpoint> {
        self.restore_list(common)
            .into_iter()
            .map(|r| r.vs.vip)
            .collect()
    }

    /// The saved virtual server `vip`, if any file names it.
    pub fn find(&self, common: &Common, vip: Endpoint) -> Option<Restore> {
        self.restore_list(common)
            .into_iter()
            .find(|r| r.vs.vip == vip)
    }
}

/// Records `vs` in the state file (replacing an entry with the same VIP),
/// with the interface and VIP mode used for it.
pub fn remember(common: &Common, mode: VipMode, vs: SavedVs) -> Result<PathBuf, Failure> {
    let mut st = state::load(&common.state_dir)?
        .unwrap_or_else(|| NodeState::new(&common.interface, mode, Vec::new()));
    st.upsert(vs, &common.interface, mode);
    Ok(state::save(&common.state_dir, &st)?)
}

/// Drops `vip` from the state file; when none is left, removes the file and
/// the daemon's cache. Returns how many saved virtual servers remain.
pub fn forget(common: &Common, vip: Endpoint) -> Result<usize, Failure> {
    let Some(mut st) = state::load(&common.state_dir)? else {
        return Ok(0);
    };
    let before = st.virtual_servers.len();
    st.virtual_servers.retain(|v| v.vip != vip);
    if st.virtual_servers.len() != before {
        outln!(
            "removed {vip} from {}",
            state::path_in(&common.state_dir).display()
        );
    }
    if st.virtual_servers.is_empty() {
        for path in [
            state::path_in(&common.state_dir),
            state::cache_path_in(&common.state_dir),
        ] {
            remove_file(&path)?;
        }
        return Ok(0);
    }
    if st.virtual_servers.len() != before {
        state::save(&common.state_dir, &st)?;
    }
    Ok(st.virtual_servers.len())
}

/// Removes the Go tool's `ipvsConfig.yaml` if it names `vip` (it would bring
/// the virtual server back at the next `reload`).
pub fn forget_go(common: &Common, vip: Endpoint) -> Result<(), Failure> {
    if state::load_go(&common.persist_dir)?.is_some_and(|go| go.vip == vip) {
        remove_file(&common.persist_dir.join(state::GO_FILE_NAME))?;
    }
    Ok(())
}

/// Removes a file, saying so; a missing one is fine.
pub fn remove_file(path: &Path) -> Result<(), Failure> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            outln!("removed {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(
            Failure::new(format!("cannot remove {}: {e}", path.display()))
                .todo("remove it by hand"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn common(dir: &Path) -> Common {
        let state = dir.join("state");
        let go = dir.join("go");
        crate::cli::Cli::parse_from([
            "t",
            "reload",
            "--state-dir",
            state.to_str().expect("utf8"),
            "--persist-dir",
            go.to_str().expect("utf8"),
        ])
        .common
    }

    fn ep(s: &str) -> Endpoint {
        s.parse().expect("endpoint")
    }

    fn vs(vip: &str, scheduler: &str, backends: &[&str]) -> SavedVs {
        SavedVs::new(ep(vip), scheduler, backends.iter().map(|b| ep(b)).collect())
    }

    #[test]
    fn state_file_then_go_file_then_newer_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = common(dir.path());
        std::fs::create_dir_all(&c.persist_dir).expect("mkdir");
        std::fs::write(
            c.persist_dir.join(state::GO_FILE_NAME),
            "vs: 10.0.0.9:6443\nrs:\n- 192.168.1.9:6443\nscheduler: sh\n",
        )
        .expect("write");
        remember(
            &c,
            VipMode::Address,
            vs("10.0.0.1:6443", "wrr", &["192.168.1.1:6443"]),
        )
        .expect("remember");
        let s = Saved::load_strict(&c).expect("load");
        let list = s.restore_list(&c);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].vs.scheduler, "wrr");
        assert_eq!(list[1].source, Source::GoFile);
        assert_eq!(
            list[1].vs.scheduler, "sh",
            "the Go file's scheduler is kept"
        );

        // The daemon's cache, written after the state file, wins for its VIPs.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut sets = CachedSets::new();
        sets.insert(ep("10.0.0.1:6443"), [ep("192.168.1.2:6443")].into());
        state::store_cache(&c.state_dir, &sets).expect("store");
        let list = Saved::load(&c).restore_list(&c);
        assert_eq!(list[0].from_cache, Some(FromCache::Newer));
        assert_eq!(list[0].vs.backends, vec![ep("192.168.1.2:6443")]);
        assert_eq!(list[0].vs.scheduler, "wrr");
        assert_eq!(list[1].from_cache, None);
    }

    #[test]
    fn forget_removes_the_files_with_the_last_virtual_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = common(dir.path());
        remember(
            &c,
            VipMode::Address,
            vs("10.0.0.1:6443", "rr", &["192.168.1.1:6443"]),
        )
        .expect("remember");
        remember(
            &c,
            VipMode::Address,
            vs("10.0.0.2:6443", "rr", &["192.168.1.1:6443"]),
        )
        .expect("remember");
        assert_eq!(forget(&c, ep("10.0.0.1:6443")).expect("forget"), 1);
        assert!(state::path_in(&c.state_dir).exists());
        assert_eq!(forget(&c, ep("10.0.0.2:6443")).expect("forget"), 0);
        assert!(!state::path_in(&c.state_dir).exists());
    }

    #[test]
    fn a_corrupt_state_file_stops_strict_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = common(dir.path());
        std::fs::create_dir_all(&c.state_dir).expect("mkdir");
        std::fs::write(state::path_in(&c.state_dir), "{oops").expect("write");
        let err = Saved::load_strict(&c).expect_err("corrupt").to_string();
        assert!(
            err.contains("state.json") && err.contains("not JSON"),
            "{err}"
        );
        assert!(err.contains("move it away"), "{err}");
        assert_eq!(Saved::load(&c).problems.len(), 1);
    }

    #[test]
    fn a_vip_the_state_file_saved_empty_takes_the_caches_backends() {
        // What an earlier daemon left after its discovery never answered:
        // the VIP with no backend. The cache is older than the state file.
        let dir = tempfile::tempdir().expect("tempdir");
        let c = common(dir.path());
        std::fs::create_dir_all(&c.state_dir).expect("mkdir");
        let mut sets = CachedSets::new();
        sets.insert(ep("10.0.0.1:6443"), [ep("192.168.1.2:6443")].into());
        state::store_cache(&c.state_dir, &sets).expect("store");
        std::thread::sleep(std::time::Duration::from_millis(20));
        remember(&c, VipMode::Address, vs("10.0.0.1:6443", "rr", &[])).expect("remember");
        let list = Saved::load_strict(&c).expect("load").restore_list(&c);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].from_cache, Some(FromCache::StateEmpty));
        assert_eq!(list[0].vs.backends, vec![ep("192.168.1.2:6443")]);
        assert!(list[0].describe_source().contains("state.json lists none"));
    }

    #[test]
    fn a_corrupt_state_file_still_restores_what_the_cache_knows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = common(dir.path());
        std::fs::create_dir_all(&c.state_dir).expect("mkdir");
        let mut sets = CachedSets::new();
        sets.insert(ep("10.0.0.1:6443"), [ep("192.168.1.2:6443")].into());
        state::store_cache(&c.state_dir, &sets).expect("store");
        std::fs::write(state::path_in(&c.state_dir), "{oops").expect("write");
        let s = Saved::load(&c);
        assert_eq!(s.problems.len(), 1, "the corrupt file is still reported");
        let list = s.restore_list(&c);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].source, Source::Cache);
        assert_eq!(list[0].interface, c.interface);
        assert!(list[0].describe_source().contains("unreadable"));
    }

    #[test]
    fn init_of_a_second_vip_in_another_mode_keeps_the_firsts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = common(dir.path());
        remember(
            &c,
            VipMode::Route,
            vs("10.0.0.1:6443", "rr", &["192.168.1.1:6443"]),
        )
        .expect("remember");
        remember(
            &c,
            VipMode::Address,
            vs("10.0.0.2:6443", "rr", &["192.168.1.1:6443"]),
        )
        .expect("remember");
        let list = Saved::load_strict(&c).expect("load").restore_list(&c);
        assert_eq!(list[0].vip_mode, VipMode::Route);
        assert_eq!(list[1].vip_mode, VipMode::Address);
    }
}
