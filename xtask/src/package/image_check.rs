//! The image checks of `cargo xtask test`: an image is built with the same
//! code as `cargo xtask image`, from the debug binaries the host tests
//! already built (a static release build takes longer than the whole
//! packaging budget), then inspected with skopeo and umoci, and its binaries
//! run. `cargo xtask image` itself checks that its release binaries are
//! static and run inside the image's own files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::oci::{self, Built, ImageSpec};
use super::{BINARIES, Checks, DEFAULT_REPOSITORY, VERSION, mb, smoke_run};

const TAG: &str = "check";
const ENTRYPOINT: &str = "/usr/local/bin/bcs-apiserver-proxy";

pub fn checks(checks: &mut Checks, root: &Path, debug: &Path) {
    let work = root.join("target/xtask/image-check");
    let mut built: Option<Built> = None;
    let created = oci::source_date_epoch(root);
    let sbom = match super::sbom::spdx(root, &oci::rfc3339(created), Some("check")) {
        Ok(s) => s,
        Err(e) => {
            checks.fail("image: the SBOM of the binaries' crates", &e);
            return;
        }
    };
    checks.run(
        "image: build from the debug binaries (debug info stripped)",
        || {
            if work.exists() {
                fs::remove_dir_all(&work)?;
            }
            let bins = strip_copies(debug, &work.join("bins"))?;
            let b = oci::build(&spec(&bins, &work.join("one"), created, &sbom))?;
            let detail = format!(
                "layer {} compressed, {} unpacked; release size: see cargo xtask image",
                mb(b.layer_gz_size),
                mb(b.layer_tar_size)
            );
            built = Some(b);
            Ok(detail)
        },
    );
    let Some(b) = built else {
        return;
    };
    let layout = format!("oci:{}:{TAG}", b.layout.display());
    let archive = format!("docker-archive:{}", b.docker_archive.display());

    checks.run("image: reproducible (built twice, one digest)", || {
        let again = oci::build(&spec(&work.join("bins"), &work.join("two"), created, &sbom))?;
        ensure!(
            again.manifest_digest == b.manifest_digest,
            "two builds of the same binaries differ: {} and {}",
            b.manifest_digest,
            again.manifest_digest
        );
        Ok(b.manifest_digest.clone())
    });
    checks.run(
        "image: skopeo copies the OCI layout, verifying every digest",
        || {
            let dest = work.join("copy-oci");
            skopeo(&[
                "copy",
                "--insecure-policy",
                &layout,
                &format!("dir:{}", dest.display()),
            ])?;
            let info: Value = serde_json::from_str(&skopeo(&["inspect", &layout])?)?;
            ensure!(
                info["Architecture"] == "amd64" && info["Os"] == "linux",
                "platform: {info}"
            );
            ensure!(
                info["Digest"] == b.manifest_digest.as_str(),
                "manifest digest {}",
                info["Digest"]
            );
            let raw: Value = serde_json::from_str(&skopeo(&["inspect", "--raw", &layout])?)?;
            ensure!(
                raw["mediaType"] == oci::MEDIA_MANIFEST
                    && raw["layers"][0]["mediaType"] == oci::MEDIA_LAYER
            );
            Ok(String::new())
        },
    );
    checks.run("image: the entrypoint is the daemon", || {
        let config: Value = serde_json::from_str(&skopeo(&["inspect", "--config", &layout])?)?;
        let ep: Vec<&str> = config["config"]["Entrypoint"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        ensure!(ep == [ENTRYPOINT], "Entrypoint {ep:?}");
        ensure!(
            config["config"].get("Cmd").is_none_or(Value::is_null),
            "no Cmd expected"
        );
        Ok(ENTRYPOINT.to_string())
    });
    checks.run(
        "image: the docker load tarball holds the same image",
        || {
            let dest = work.join("copy-docker");
            skopeo(&[
                "copy",
                "--insecure-policy",
                &archive,
                &format!("dir:{}", dest.display()),
            ])?;
            let raw: Value = serde_json::from_str(&skopeo(&["inspect", "--raw", &archive])?)?;
            ensure!(
                raw["config"]["digest"] == b.config_digest.as_str(),
                "the docker archive's config {} is not the OCI image's {}",
                raw["config"]["digest"],
                b.config_digest
            );
            let config: Value = serde_json::from_str(&skopeo(&["inspect", "--config", &archive])?)?;
            ensure!(config["config"]["Entrypoint"][0] == ENTRYPOINT);
            let size = fs::metadata(&b.docker_archive)?.len();
            Ok(mb(size))
        },
    );
    checks.run(
        "image: umoci unpacks it; both binaries run; no shell",
        || {
            let bundle = work.join("bundle");
            let out = Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:{TAG}", b.layout.display()))
                .arg(&bundle)
                .output()
                .context("cannot run umoci")?;
            ensure!(
                out.status.success(),
                "umoci unpack failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let runtime: Value =
                serde_json::from_str(&fs::read_to_string(bundle.join("config.json"))?)?;
            ensure!(
                runtime["process"]["args"][0] == ENTRYPOINT,
                "the runtime bundle runs {}",
                runtime["process"]["args"]
            );
            let rootfs = bundle.join("rootfs");
            for shell in ["bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"] {
                ensure!(
                    !rootfs.join(shell).exists(),
                    "the image has a shell: /{shell}"
                );
            }
            let mut ran = Vec::new();
            for name in BINARIES {
                ran.push(smoke_run(&rootfs.join("usr/local/bin").join(name), name)?);
            }
            let default = Command::new(rootfs.join("usr/local/bin/bcs-apiserver-proxy"))
                .args(["config", "default"])
                .output()?;
            ensure!(
                default.status.success()
                    && String::from_utf8_lossy(&default.stdout).contains("virtualServers:"),
                "bcs-apiserver-proxy config default failed inside the unpacked image"
            );
            Ok(ran.join("; "))
        },
    );
    checks.run(
        "image: its SBOM lists the crates in the binaries, and only those",
        || check_sbom(&work.join("bundle/rootfs").join(super::sbom::IMAGE_PATH)),
    );
}

/// The SPDX document in the unpacked image: SPDX 2.3, both binaries
/// described, the crates they link (with licence, purl and checksum), and
/// none of the crates only tests, benchmarks or the xtask use.
fn check_sbom(path: &Path) -> Result<String> {
    let doc: Value = serde_json::from_str(
        &fs::read_to_string(path).with_context(|| format!("no SBOM at {}", path.display()))?,
    )
    .context("the SBOM is not JSON")?;
    ensure!(doc["spdxVersion"] == "SPDX-2.3", "not SPDX 2.3");
    let packages = doc["packages"].as_array().context("no packages")?;
    let named = |name: &str| packages.iter().find(|p| p["name"] == name);
    for linked in BINARIES.iter().copied().chain([
        "tokio",
        "kube-client",
        "ring",
        "rustls",
        "hyper",
        "neli",
        "serde-saphyr",
    ]) {
        ensure!(named(linked).is_some(), "the SBOM misses {linked}");
    }
    for not_linked in [
        "proptest",
        "plotters",
        "tar",
        "oci-spec",
        "xtask",
        "rcgen",
        "thiserror-impl",
    ] {
        ensure!(
            named(not_linked).is_none(),
            "the SBOM lists {not_linked}, which is not in the binaries"
        );
    }
    let tokio = named("tokio").context("tokio")?;
    ensure!(
        tokio["checksums"][0]["algorithm"] == "SHA256"
            && tokio["externalRefs"][0]["referenceLocator"]
                .as_str()
                .is_some_and(|p| p.starts_with("pkg:cargo/tokio@"))
            && tokio["licenseDeclared"] == "MIT",
        "tokio's entry lacks its checksum, purl or licence: {tokio}"
    );
    let described = doc["relationships"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["relationshipType"] == "DESCRIBES")
        .count();
    ensure!(
        described == BINARIES.len(),
        "{described} packages described"
    );
    Ok(format!("{} crates", packages.len()))
}

fn spec<'a>(bins: &'a Path, out: &'a Path, created: u64, sbom: &'a [u8]) -> ImageSpec<'a> {
    ImageSpec {
        bin_dir: bins,
        out,
        repository: DEFAULT_REPOSITORY,
        tag: TAG,
        created,
        revision: Some(format!("check-{VERSION}")),
        compression: 1,
        sbom,
    }
}

/// Copies of the debug binaries without their debug info (10x smaller).
fn strip_copies(debug: &Path, dest: &Path) -> Result<PathBuf> {
    crate::deps::ensure(&["binutils"])?;
    fs::create_dir_all(dest)?;
    for name in BINARIES {
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(dest.join(name))
            .arg(debug.join(name))
            .status()
            .context("cannot run strip")?;
        if !status.success() {
            bail!("strip {} failed ({status})", debug.join(name).display());
        }
    }
    Ok(dest.to_path_buf())
}

fn skopeo(args: &[&str]) -> Result<String> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .context("cannot run skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
