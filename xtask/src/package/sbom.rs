//! The image's SBOM: an SPDX 2.3 JSON document listing every crate linked
//! into the two binaries (their normal dependencies, resolved for the one
//! target we ship), each with its version, declared licence, crates.io
//! download location, package URL and the checksum Cargo.lock pins.
//! Build scripts, proc macros' own dependencies, dev-dependencies and the
//! xtask's crates are not in the binaries and not in the SBOM.
//!
//! Reproducible like the image: the same lock file and `created` time give
//! the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{BINARIES, TARGET};

/// Where the SBOM is in the image (and, by the same name, beside it).
pub const IMAGE_PATH: &str = "usr/share/doc/bcs-apiserver-proxy/sbom.spdx.json";

/// One crate in the binaries.
struct Crate {
    name: String,
    version: String,
    license: Option<String>,
    /// From crates.io (else one of ours).
    registry: bool,
    deps: BTreeSet<String>,
}

/// The SPDX document for the workspace at `root`.
pub fn spdx(root: &Path, created: &str, revision: Option<&str>) -> Result<Vec<u8>> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            TARGET,
        ])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let checksums = lock_checksums(&std::fs::read_to_string(root.join("Cargo.lock"))?);
    let crates = linked_crates(&meta)?;
    let id_of = |c: &Crate| spdx_id(&c.name, &c.version);

    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    for c in crates.values() {
        let mut p = json!({
            "name": c.name,
            "SPDXID": id_of(c),
            "versionInfo": c.version,
            "downloadLocation": if c.registry {
                format!("https://crates.io/api/v1/crates/{}/{}/download", c.name, c.version)
            } else {
                "NOASSERTION".to_string()
            },
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": c.license.as_deref().map_or("NOASSERTION".to_string(), spdx_expression),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:cargo/{}@{}", c.name, c.version),
            }],
        });
        if let Some(sum) = checksums.get(&(c.name.clone(), c.version.clone())) {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
        }
        packages.push(p);
        for d in &c.deps {
            if let Some(dep) = crates.get(d) {
                relationships.push(json!({
                    "spdxElementId": id_of(c),
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": id_of(dep),
                }));
            }
        }
    }
    for c in crates
        .values()
        .filter(|c| BINARIES.contains(&c.name.as_str()))
    {
        relationships.insert(
            0,
            json!({
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": id_of(c),
            }),
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("bcs-apiserver-proxy-{version}"),
        "documentNamespace": format!(
            "{}/sbom/{version}/{}",
            env!("CARGO_PKG_REPOSITORY"),
            revision.unwrap_or("unknown")
        ),
        "creationInfo": {
            "created": created,
            "creators": ["Tool: cargo-xtask-image"],
        },
        "packages": packages,
        "relationships": relationships,
    });
    Ok(serde_json::to_vec_pretty(&doc)?)
}

/// The crates reachable from the two binaries through normal dependency
/// edges, by package id, sorted.
fn linked_crates(meta: &Value) -> Result<BTreeMap<String, Crate>> {
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| p["id"].as_str().map(|id| (id, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|n| n["id"].as_str().map(|id| (id, n)))
        .collect();
    let mut todo: Vec<String> = packages
        .iter()
        .filter(|(_, p)| BINARIES.contains(&p["name"].as_str().unwrap_or_default()))
        .map(|(id, _)| id.to_string())
        .collect();
    if todo.len() != BINARIES.len() {
        bail!("cargo metadata does not list both binaries' packages");
    }
    let mut out = BTreeMap::new();
    while let Some(id) = todo.pop() {
        if out.contains_key(&id) {
            continue;
        }
        let p = packages
            .get(id.as_str())
            .context("resolve names an unknown package")?;
        let node = nodes
            .get(id.as_str())
            .context("package missing from resolve")?;
        // Normal edges only: a build-dependency (build scripts, and the
        // proc macros' own crates) does not end up in the executable.
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
            })
            .filter_map(|d| d["pkg"].as_str().map(str::to_string))
            .filter(|dep| {
                // A proc macro runs in the compiler, it is not linked.
                !packages.get(dep.as_str()).is_some_and(|p| is_proc_macro(p))
            })
            .collect();
        todo.extend(deps.iter().cloned());
        out.insert(
            id.clone(),
            Crate {
                name: p["name"].as_str().unwrap_or_default().to_string(),
                version: p["version"].as_str().unwrap_or_default().to_string(),
                license: p["license"].as_str().map(str::to_string),
                registry: p["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("registry+")),
                deps,
            },
        );
    }
    Ok(out)
}

fn is_proc_macro(p: &Value) -> bool {
    p["targets"].as_array().is_some_and(|targets| {
        targets.iter().any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
        })
    })
}

/// `checksum` of every registry package in Cargo.lock, by name and version.
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|rest| rest.trim().strip_prefix('='))
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(version), Some(sum)) =
            (field("name "), field("version "), field("checksum "))
        {
            out.insert((name, version), sum);
        }
    }
    out
}

/// An SPDX identifier: letters, digits, `.` and `-` only.
fn spdx_id(name: &str, version: &str) -> String {
    let clean: String = format!("{name}-{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-Package-{clean}")
}

/// Cargo's old `MIT/Apache-2.0` spelling as the SPDX expression it means.
fn spdx_expression(license: &str) -> String {
    license
        .split('/')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_licence_spellings_become_expressions() {
        assert_eq!(spdx_expression("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(spdx_expression("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(
            spdx_id("serde_json", "1.0.1"),
            "SPDXRef-Package-serde-json-1.0.1"
        );
    }

    #[test]
    fn the_lock_files_checksums_are_read() {
        let lock = "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\nchecksum = \"abc\"\n\n[[package]]\nname = \"ours\"\nversion = \"0.1.0\"\n";
        let sums = lock_checksums(lock);
        assert_eq!(
            sums.get(&("a".into(), "1.0.0".into())),
            Some(&"abc".to_string())
        );
        assert_eq!(sums.len(), 1);
    }
}
