//! The image, written without Docker: one gzip'd tar layer holding the two
//! binaries and their SBOM, the image config, the manifest and `index.json`
//! of an OCI image layout (through the `oci-spec` crate's types), and the
//! same image as a `docker load` tarball.
//!
//! Reproducible: entries sorted, owner root, every mtime and the config's
//! `created` from `SOURCE_DATE_EPOCH` (else HEAD's commit time), gzip
//! header without name or time.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest as OciDigest, HistoryBuilder,
    ImageConfiguration, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the image checks expect, spelt out independently of the types the
/// builder writes with.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The manifest's and the index's `schemaVersion`.
const SCHEMA_VERSION: u32 = 2;
/// Where the binaries go in the image; on PATH.
pub const BIN_DIR: &str = "usr/local/bin";

/// What to put in the image and where to write it.
#[derive(Debug)]
pub struct ImageSpec<'a> {
    /// Folder holding `bcs-apiserver-proxy` and `apiserver-proxy-tools`.
    pub bin_dir: &'a Path,
    pub out: &'a Path,
    pub repository: &'a str,
    pub tag: &'a str,
    /// Seconds since the epoch: every file's mtime and the image's `created`.
    pub created: u64,
    pub revision: Option<String>,
    /// gzip level, 1 (fast, for tests) to 9 (smallest, for releases).
    pub compression: u32,
    /// The SPDX document of the binaries' crates, put at
    /// [`super::sbom::IMAGE_PATH`].
    pub sbom: &'a [u8],
}

/// What [`build`] wrote.
#[derive(Debug)]
pub struct Built {
    /// The OCI image layout folder (`oci-layout`, `index.json`, `blobs/`).
    pub layout: PathBuf,
    /// The `docker load -i` tarball.
    pub docker_archive: PathBuf,
    /// The files of the layer, as a folder (the image's root file system).
    pub staging: PathBuf,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_gz_size: u64,
    pub layer_tar_size: u64,
}

/// Writes the OCI layout and the docker archive below `spec.out`.
pub fn build(spec: &ImageSpec<'_>) -> Result<Built> {
    fs::create_dir_all(spec.out)?;
    let staging = spec.out.join("rootfs");
    stage_rootfs(spec.bin_dir, spec.sbom, &staging)?;
    // The layer goes through files: gzip and sha256sum (Debian's essential
    // packages) are ~10x faster than flate2 and sha2 built in the dev profile
    // the xtask runs in, on tens of MB.
    let tar_path = spec.out.join("layer.tar");
    fs::write(&tar_path, layer_tar(&staging, spec.created)?)?;
    let gz_path = spec.out.join("layer.tar.gz");
    gzip_file(&tar_path, &gz_path, spec.compression)?;
    let diff_id = sha256_file(&tar_path)?;
    let layer_digest = sha256_file(&gz_path)?;
    let layer_tar_size = fs::metadata(&tar_path)?.len();
    let layer_gz_size = fs::metadata(&gz_path)?.len();

    let config = canonical_json(&image_config(spec, &diff_id)?)?;
    let config_digest = sha256(&config);
    let manifest = canonical_json(
        &ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config.len(),
            )?)
            .layers(vec![descriptor(
                MediaType::ImageLayerGzip,
                &layer_digest,
                layer_gz_size as usize,
            )?])
            .annotations(annotations(spec))
            .build()?,
    )?;
    let manifest_digest = sha256(&manifest);
    let reference = format!("{}:{}", spec.repository, spec.tag);
    let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest_digest, manifest.len())?;
    manifest_desc.set_platform(Some(
        PlatformBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .build()?,
    ));
    manifest_desc.set_annotations(Some(HashMap::from([
        // skopeo and umoci find the image by this (`oci:DIR:TAG`);
        // containerd's import by the full name.
        (
            "org.opencontainers.image.ref.name".to_string(),
            spec.tag.to_string(),
        ),
        ("io.containerd.image.name".to_string(), reference.clone()),
    ])));
    let index = canonical_json(
        &ImageIndexBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest_desc])
            .build()?,
    )?;

    let layout = spec.out.join("oci");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::rename(&gz_path, blobs.join(hex_of(&layer_digest)))?;
    fs::write(blobs.join(hex_of(&config_digest)), &config)?;
    fs::write(blobs.join(hex_of(&manifest_digest)), &manifest)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    fs::write(layout.join("index.json"), &index)?;

    let name = spec
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(spec.repository);
    let docker_archive = spec.out.join(format!("{name}-{}.docker.tar", spec.tag));
    write_docker_archive(
        &docker_archive,
        &reference,
        &config,
        &config_digest,
        &tar_path,
        &diff_id,
        spec.created,
    )?;
    fs::remove_file(&tar_path)?;

    Ok(Built {
        layout,
        docker_archive,
        staging,
        manifest_digest,
        config_digest,
        layer_gz_size,
        layer_tar_size,
    })
}

/// The image's root file system: the binaries, a passwd and group naming
/// root (for tools that look the user up), and the state folder's mount
/// point. No shell, no libraries: the binaries are static.
fn stage_rootfs(bin_dir: &Path, sbom: &[u8], staging: &Path) -> Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging)?;
    }
    let bin = staging.join(BIN_DIR);
    fs::create_dir_all(&bin)?;
    fs::create_dir_all(staging.join("var/lib/bcs-apiserver-proxy"))?;
    fs::create_dir_all(staging.join("etc/bcs-apiserver-proxy"))?;
    fs::write(
        staging.join("etc/passwd"),
        "root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n",
    )?;
    fs::write(staging.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;
    let sbom_path = staging.join(super::sbom::IMAGE_PATH);
    if let Some(dir) = sbom_path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(sbom_path, sbom)?;
    for name in super::BINARIES {
        let from = bin_dir.join(name);
        fs::copy(&from, bin.join(name)).with_context(|| format!("copy {}", from.display()))?;
    }
    Ok(())
}

/// The layer: every file and folder below `root`, sorted by path, owned by
/// root, mode 0755 for folders and executables and 0644 for the rest.
pub fn layer_tar(root: &Path, mtime: u64) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    collect(root, root, &mut entries)?;
    entries.sort();
    let mut builder = tar::Builder::new(Vec::new());
    for rel in entries {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, format!("{rel}/"), std::io::empty())?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            builder.append_data(&mut header, &rel, fs::File::open(&path)?)?;
        } else {
            bail!("{}: only files and folders go in the image", path.display());
        }
    }
    Ok(builder.into_inner()?)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = path
            .strip_prefix(root)?
            .to_str()
            .context("non-UTF-8 path in the image")?
            .to_string();
        if path.is_dir() {
            out.push(rel);
            collect(root, &path, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// `gzip -n`: no file name or time in the header, so the same bytes give
/// the same blob.
pub fn gzip_file(from: &Path, to: &Path, level: u32) -> Result<()> {
    let out = fs::File::create(to).with_context(|| format!("create {}", to.display()))?;
    let status = Command::new("gzip")
        .arg("-n")
        .arg(format!("-{}", level.clamp(1, 9)))
        .arg("-c")
        .arg(from)
        .stdout(out)
        .status()
        .context("cannot run gzip")?;
    if !status.success() {
        bail!("gzip {} failed ({status})", from.display());
    }
    Ok(())
}

/// `sha256:HEX` of a file, by `sha256sum`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("cannot run sha256sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or("");
    if !out.status.success() || hex.len() != 64 {
        bail!("sha256sum {} failed ({})", path.display(), out.status);
    }
    Ok(format!("sha256:{hex}"))
}

/// `sha256:` and the lowercase hex digest.
pub fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn descriptor(media_type: MediaType, digest: &str, size: usize) -> Result<Descriptor> {
    Ok(DescriptorBuilder::default()
        .media_type(media_type)
        .digest(OciDigest::from_str(digest)?)
        .size(size as u64)
        .build()?)
}

/// The spec's types keep maps (annotations, labels) in hash order; written
/// with every object's keys sorted, the same image is the same bytes and
/// so the same digest.
fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sorted(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sorted(serde_json::to_value(value)?))?)
}

fn annotations(spec: &ImageSpec<'_>) -> HashMap<String, String> {
    let mut a: HashMap<String, String> = [
        ("org.opencontainers.image.title", "bcs-apiserver-proxy"),
        (
            "org.opencontainers.image.description",
            "Node-local IPVS load balancer for the kube-apiservers, and its CLI",
        ),
        ("org.opencontainers.image.version", spec.tag),
        (
            "org.opencontainers.image.source",
            env!("CARGO_PKG_REPOSITORY"),
        ),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    a.insert(
        "org.opencontainers.image.created".into(),
        rfc3339(spec.created),
    );
    if let Some(rev) = &spec.revision {
        a.insert("org.opencontainers.image.revision".into(), rev.clone());
    }
    a
}

/// The image config: entrypoint the daemon, root (it needs NET_ADMIN; the
/// chart grants nothing else), the CLI on PATH beside it.
fn image_config(spec: &ImageSpec<'_>, diff_id: &str) -> Result<ImageConfiguration> {
    let created = rfc3339(spec.created);
    Ok(ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .user("0:0".to_string())
                .env(vec![format!("PATH=/{BIN_DIR}")])
                .entrypoint(vec![format!("/{BIN_DIR}/bcs-apiserver-proxy")])
                .working_dir("/".to_string())
                .exposed_ports(vec!["8004/tcp".to_string()])
                .labels(annotations(spec))
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers".to_string())
                .diff_ids(vec![diff_id.to_string()])
                .build()?,
        )
        .history(vec![
            HistoryBuilder::default()
                .created(created)
                .created_by("cargo xtask image".to_string())
                .comment("static bcs-apiserver-proxy and apiserver-proxy-tools".to_string())
                .build()?,
        ])
        .build()?)
}

/// The `docker save` format `docker load` reads: `manifest.json`, the config
/// as `HEX.json`, the uncompressed layer as `HEX/layer.tar`.
fn write_docker_archive(
    path: &Path,
    reference: &str,
    config: &[u8],
    config_digest: &str,
    layer_tar: &Path,
    diff_id: &str,
    mtime: u64,
) -> Result<()> {
    let config_name = format!("{}.json", hex_of(config_digest));
    let layer_dir = hex_of(diff_id).to_string();
    let layer_name = format!("{layer_dir}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": [layer_name],
    }]))?;
    let file = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let header = |size: u64, dir: bool| {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_size(size);
        h
    };
    builder.append_data(
        &mut header(0, true),
        format!("{layer_dir}/"),
        std::io::empty(),
    )?;
    let layer = fs::File::open(layer_tar)?;
    let size = layer.metadata()?.len();
    builder.append_data(&mut header(size, false), &layer_name, layer)?;
    builder.append_data(
        &mut header(config.len() as u64, false),
        &config_name,
        config,
    )?;
    builder.append_data(
        &mut header(manifest.len() as u64, false),
        "manifest.json",
        &manifest[..],
    )?;
    builder.into_inner()?.flush()?;
    Ok(())
}

/// `SOURCE_DATE_EPOCH` if set, else HEAD's commit time, else 0.
pub fn source_date_epoch(root: &Path) -> u64 {
    if let Some(s) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return s;
    }
    std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), eras of 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How an ELF executable is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: runs with no library at all (static or
    /// static-pie).
    Static,
    /// Needs this dynamic loader, and so the libraries of a distribution.
    Dynamic(String),
}

impl fmt::Display for Linkage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Linkage::Static => f.write_str("static (no program interpreter)"),
            Linkage::Dynamic(interp) => write!(f, "dynamically linked ({interp})"),
        }
    }
}

/// Reads the program headers of a 64-bit little-endian ELF file: a
/// `PT_INTERP` entry means it needs a dynamic loader.
pub fn elf_linkage(path: &Path) -> Result<Linkage> {
    let data = fs::read(path)?;
    elf_linkage_of(&data)
}

fn elf_linkage_of(data: &[u8]) -> Result<Linkage> {
    const PT_INTERP: u32 = 3;
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
    let u64_at = |o: usize| -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let phoff = u64_at(32);
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if ph + 56 > data.len() {
            bail!("truncated ELF program headers");
        }
        if u32_at(ph) == PT_INTERP {
            let off = u64_at(ph + 8);
            let size = u64_at(ph + 32);
            let raw = data.get(off..off + size).context("truncated PT_INTERP")?;
            let interp = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string();
            return Ok(Linkage::Dynamic(interp));
        }
    }
    Ok(Linkage::Static)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn layers_are_reproducible_and_sorted() {
        let dir = std::env::temp_dir().join(format!("xtask-oci-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("b/c")).expect("mkdir");
        fs::write(dir.join("b/c/file"), b"x").expect("write");
        fs::write(dir.join("a"), b"yy").expect("write");
        let one = layer_tar(&dir, 42).expect("tar");
        let two = layer_tar(&dir, 42).expect("tar");
        assert_eq!(one, two);
        let tar_file = dir.join("layer.tar");
        fs::write(&tar_file, &one).expect("write");
        let (gz1, gz2) = (dir.join("1.gz"), dir.join("2.gz"));
        gzip_file(&tar_file, &gz1, 9).expect("gzip");
        gzip_file(&tar_file, &gz2, 9).expect("gzip");
        assert_eq!(fs::read(&gz1).expect("read"), fs::read(&gz2).expect("read"));
        assert_eq!(
            sha256_file(&tar_file).expect("sha256sum"),
            sha256(&one),
            "sha256sum and sha2 agree"
        );
        let mut archive = tar::Archive::new(&one[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                assert_eq!(e.header().mtime().expect("mtime"), 42);
                assert_eq!(e.header().uid().expect("uid"), 0);
                e.path().expect("path").to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(names, ["a", "b/", "b/c/", "b/c/file"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_elf_interpreters() {
        let exe = std::env::current_exe().expect("exe");
        // The test binary is an ordinary (dynamic) build.
        match elf_linkage(&exe).expect("elf") {
            Linkage::Dynamic(interp) => assert!(interp.contains("ld-linux"), "{interp}"),
            Linkage::Static => panic!("the test binary should be dynamic"),
        }
        assert!(elf_linkage_of(b"#!/bin/sh\n").is_err());
    }
}
