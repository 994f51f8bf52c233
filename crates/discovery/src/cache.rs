//! The last-known-good cache: the last backend sets the cluster gave, on
//! disk, so that a rebooted node whose API is unreachable still balances to
//! real apiservers.
//!
//! Format (JSON, versioned so a foreign or future file is recognised):
//!
//! ```json
//! {
//!   "kind": "ApiserverProxyBackendCache",
//!   "version": 1,
//!   "virtualServers": [
//!     { "vip": "10.103.97.2:6443", "backends": ["192.168.1.10:6443"] }
//!   ]
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use apiserver_proxy_types::Endpoint;
pub use apiserver_proxy_types::file::remove_stale_temp_files;
use apiserver_proxy_types::file::write_atomic;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The `kind` marker of a cache file.
pub const CACHE_KIND: &str = "ApiserverProxyBackendCache";
/// The only format version this build reads and writes.
pub const CACHE_VERSION: u64 = 1;

/// The cached backend set of each virtual server, by VIP.
pub type CachedSets = BTreeMap<Endpoint, BTreeSet<Endpoint>>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CacheFile {
    kind: String,
    version: u64,
    virtual_servers: Vec<CacheEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CacheEntry {
    vip: Endpoint,
    backends: BTreeSet<Endpoint>,
}

/// Encodes `sets` in the cache format (pretty JSON, trailing newline).
pub fn encode(sets: &CachedSets) -> Vec<u8> {
    let file = CacheFile {
        kind: CACHE_KIND.to_string(),
        version: CACHE_VERSION,
        virtual_servers: sets
            .iter()
            .map(|(vip, backends)| CacheEntry {
                vip: *vip,
                backends: backends.clone(),
            })
            .collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    let mut out = serde_json::to_vec_pretty(&file).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Decodes a cache file's bytes. `path` only names the file in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<CachedSets, Error> {
    let corrupt = |reason: String| Error::CacheCorrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let kind = value.get("kind").and_then(|k| k.as_str());
    if kind != Some(CACHE_KIND) {
        return Err(Error::CacheForeign {
            path: path.to_path_buf(),
            found: kind.map(str::to_string),
            expected: CACHE_KIND,
        });
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(CACHE_VERSION) => {}
        Some(found) => {
            return Err(Error::CacheVersion {
                path: path.to_path_buf(),
                found,
                supported: CACHE_VERSION,
            });
        }
        None => return Err(corrupt("no numeric \"version\"".to_string())),
    }
    let file: CacheFile = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    let mut sets = CachedSets::new();
    for entry in file.virtual_servers {
        if let Some(bad) = entry
            .backends
            .iter()
            .find(|b| b.family() != entry.vip.family())
        {
            return Err(corrupt(format!(
                "backend {bad} of virtual server {} is of another address family",
                entry.vip
            )));
        }
        if sets.insert(entry.vip, entry.backends).is_some() {
            return Err(corrupt(format!(
                "virtual server {} listed twice",
                entry.vip
            )));
        }
    }
    Ok(sets)
}

/// Loads the cache. `Ok(None)` if the file does not exist.
pub fn load(path: &Path) -> Result<Option<CachedSets>, Error> {
    match fs::read(path) {
        Ok(bytes) => decode(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::CacheIo {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the cache with [`write_atomic`]: a crash leaves the old file or
/// the new one, and a symlink planted in the folder is never followed.
pub fn store(path: &Path, sets: &CachedSets) -> Result<(), Error> {
    write_atomic(path, &encode(sets), None).map_err(|source| Error::CacheIo {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn sample() -> CachedSets {
        let mut sets = CachedSets::new();
        sets.insert(
            ep("10.103.97.2:6443"),
            [ep("192.168.1.10:6443"), ep("192.168.1.11:6443")]
                .into_iter()
                .collect(),
        );
        sets.insert(
            ep("[fd00::2]:6443"),
            [ep("[fd00::10]:6443")].into_iter().collect(),
        );
        sets
    }

    #[test]
    fn round_trips() {
        let p = Path::new("c.json");
        let bytes = encode(&sample());
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        assert!(
            text.contains("\"kind\": \"ApiserverProxyBackendCache\""),
            "{text}"
        );
        assert!(text.contains("\"version\": 1"), "{text}");
        assert_eq!(decode(p, &bytes).ok(), Some(sample()));
    }

    #[test]
    fn rejects_corrupt_foreign_and_future_files() {
        let p = Path::new("c.json");
        let cases: &[(&str, &str)] = &[
            ("", "not valid JSON"),
            ("{\"kind\": \"ApiserverProxyBack", "not valid JSON"),
            ("[1,2]", "not a bcs-apiserver-proxy backend cache"),
            (
                "{\"apiVersion\": \"v1\", \"kind\": \"Config\"}",
                "kind Some(\"Config\")",
            ),
            (
                "{\"kind\": \"ApiserverProxyBackendCache\", \"version\": 2, \"virtualServers\": []}",
                "has version 2",
            ),
            ("{\"kind\": \"ApiserverProxyBackendCache\"}", "version"),
            (
                "{\"kind\": \"ApiserverProxyBackendCache\", \"version\": 1, \"virtualServers\": [{\"vip\": \"10.0.0.1\", \"backends\": []}]}",
                "has no port",
            ),
            (
                "{\"kind\": \"ApiserverProxyBackendCache\", \"version\": 1, \"virtualServers\": [{\"vip\": \"10.0.0.1:1\", \"backends\": [\"[fd00::1]:1\"]}]}",
                "another address family",
            ),
        ];
        for (input, want) in cases {
            let err = decode(p, input.as_bytes()).expect_err(input).to_string();
            assert!(
                err.contains(want),
                "{input:?}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn store_then_load_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backends.json");
        assert!(matches!(load(&path), Ok(None)));
        store(&path, &sample()).expect("store");
        assert_eq!(load(&path).ok().flatten(), Some(sample()));
        // Overwrite with a smaller set; no temporary files are left behind.
        let mut smaller = sample();
        smaller.remove(&ep("[fd00::2]:6443"));
        store(&path, &smaller).expect("store again");
        assert_eq!(load(&path).ok().flatten(), Some(smaller));
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("backends.json")]);
    }

    /// Regression: the temporary file used to have a predictable name
    /// (`.NAME.tmp.PID`) and was opened with `File::create`, which follows a
    /// symlink planted there and truncates its target.
    #[cfg(unix)]
    #[test]
    fn store_never_follows_a_planted_temp_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backends.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("write victim");
        let planted = dir
            .path()
            .join(format!(".backends.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        store(&path, &sample()).expect("store");
        assert_eq!(fs::read(&victim).expect("read victim"), b"precious");
        assert_eq!(load(&path).ok().flatten(), Some(sample()));
        assert!(
            fs::symlink_metadata(&path)
                .expect("stat")
                .file_type()
                .is_file(),
            "the cache is a regular file"
        );
    }
}
