//! The stock Debian kernel the real-kernel tests boot: fetched once with
//! `apt-get download` (never installed), unpacked and cached under
//! `target/xtask/kernel/PACKAGE/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::deps;

/// Modules the initramfs loads (with their dependencies) to reach the host's
/// files over 9p and mount an overlay on them.
const INITRAMFS_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "virtio-rng",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// Everything needed to boot: the uncompressed kernel and the unpacked
/// package (for its modules).
#[derive(Debug)]
pub struct Kernel {
    pub release: String,
    pub vmlinux: PathBuf,
    /// The unpacked package: `lib/modules/RELEASE` with depmod run on it.
    pub root: PathBuf,
    /// `root/lib/modules/RELEASE`.
    pub modules: PathBuf,
}

/// Returns the cached kernel, fetching and preparing it first if needed.
pub fn prepare() -> Result<Kernel> {
    deps::ensure(deps::VM_PACKAGES)?;
    let cache_root = crate::workspace_root().join("target/xtask/kernel");
    let package = image_package()?;
    let dir = cache_root.join(&package);
    let ready = dir.join("ready");
    if !ready.exists() {
        println!("xtask: preparing kernel {package} in {}", dir.display());
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("clean {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
        deps::download_deb(&package, &dir)?;
        unpack(&dir)?;
        fs::write(&ready, &package)?;
    }
    let release = fs::read_to_string(dir.join("release"))
        .context("kernel cache has no release file")?
        .trim()
        .to_string();
    Ok(Kernel {
        vmlinux: dir.join("vmlinux"),
        root: dir.join("root"),
        modules: dir.join("root/lib/modules").join(&release),
        release,
    })
}

/// The versioned image package `linux-image-amd64` points at today, e.g.
/// `linux-image-6.1.0-56-amd64`. An override pins it:
/// APISERVER_PROXY_KERNEL_PACKAGE.
fn image_package() -> Result<String> {
    if let Ok(pkg) = std::env::var("APISERVER_PROXY_KERNEL_PACKAGE") {
        return Ok(pkg);
    }
    // A cached kernel is enough: no need to ask apt (or the network) again.
    let cache_root = crate::workspace_root().join("target/xtask/kernel");
    if let Ok(entries) = fs::read_dir(&cache_root) {
        let mut cached: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("ready").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        cached.sort();
        if let Some(pkg) = cached.pop() {
            return Ok(pkg);
        }
    }
    let mut found = depends_of_meta()?;
    if found.is_none() {
        deps::apt_update()?;
        found = depends_of_meta()?;
    }
    found.context(
        "apt-cache does not know linux-image-amd64: this harness needs a Debian host with \
         the main archive in its apt sources",
    )
}

fn depends_of_meta() -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("cannot run apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| {
            p.starts_with("linux-image-") && p.chars().nth(12).is_some_and(|c| c.is_ascii_digit())
        })
        .map(str::to_string))
}

fn unpack(dir: &Path) -> Result<()> {
    let deb = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let root = dir.join("root");
    check(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    )?;
    let release = fs::read_dir(root.join("lib/modules"))
        .context("the kernel package has no lib/modules")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("the kernel package has no module tree")?;
    check(
        Command::new("depmod").arg("-b").arg(&root).arg(&release),
        "depmod",
    )?;
    extract_vmlinux(
        &root.join("boot").join(format!("vmlinuz-{release}")),
        &dir.join("vmlinux"),
    )?;
    fs::write(dir.join("release"), &release)?;
    fs::remove_file(&deb)?;
    Ok(())
}

/// The bzImage carries an xz-compressed ELF. Decompressing it once here saves
/// ~3 s of emulated decompression per boot; the kernel has CONFIG_PVH, so qemu
/// boots the ELF directly.
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = fs::read(bzimage).with_context(|| format!("read {}", bzimage.display()))?;
    let magic = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
    let start = data
        .windows(magic.len())
        .position(|w| w == magic)
        .context("no xz stream in the kernel image")?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(out)?)
        .spawn()
        .context("cannot run xz")?;
    let written = child
        .stdin
        .take()
        .context("xz stdin")?
        .write_all(&data[start..]);
    // --single-stream stops reading at the end of the xz stream, so the bytes
    // after it (the bzImage trailer) meet a closed pipe: that is expected.
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("xz could not decompress the kernel image ({status})");
    }
    Ok(())
}

/// Packs the initramfs: static busybox, `xtask/vm/init` and the modules that
/// reach the host's files. Rebuilt for every boot (it takes milliseconds), so
/// a change to `init` can never meet a stale cache.
pub fn build_initramfs(kernel: &Kernel, out: &Path) -> Result<()> {
    let (root, release) = (kernel.root.as_path(), kernel.release.as_str());
    let staging = out.with_extension("d");
    let _ = fs::remove_dir_all(&staging);
    for d in ["bin", "modules", "proc", "sys", "dev", "mnt", "newroot"] {
        fs::create_dir_all(staging.join(d))?;
    }
    fs::copy("/bin/busybox", staging.join("bin/busybox"))
        .context("copy /bin/busybox (package busybox-static)")?;
    fs::copy(
        crate::workspace_root().join("xtask/vm/init"),
        staging.join("init"),
    )?;
    // Load order: each module's dependencies first, each module once.
    let mut order: Vec<String> = Vec::new();
    for module in INITRAMFS_MODULES {
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(root)
            .args(["-S", release, "--show-depends", module])
            .output()
            .context("cannot run modprobe")?;
        if !out.status.success() {
            bail!(
                "modprobe --show-depends {module}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                continue;
            };
            let path = PathBuf::from(path.trim());
            let name = path
                .file_name()
                .context("module path")?
                .to_string_lossy()
                .into_owned();
            if !order.contains(&name) {
                fs::copy(&path, staging.join("modules").join(&name))?;
                order.push(name);
            }
        }
    }
    fs::write(staging.join("modules/order"), order.join("\n") + "\n")?;
    let list = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            staging.display(),
            out.display()
        ))
        .status()?;
    if !list.success() {
        bail!("cpio failed ({list})");
    }
    fs::remove_dir_all(&staging)?;
    Ok(())
}

fn check(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
