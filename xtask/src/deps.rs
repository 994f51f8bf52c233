//! Host packages the harness needs, installed with apt-get when missing.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// Debian packages the harness, the host tests and the real-kernel tests use.
pub const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86", // qemu-system-x86_64, run under software emulation
    "busybox-static",  // the initramfs' only userland
    "cpio",            // packs the initramfs
    "kmod",            // depmod/modprobe for the Debian kernel's modules
    "xz-utils",        // unpacks vmlinux from the compressed kernel image
    "iproute2",        // ip netns/link/addr in the tests
    "ipvsadm",         // the independent view of what the kernel holds
    "nftables", // black-holing test hosts, conntrack firewall rules, the nftables dataplane's view
    "conntrack", // the nftables dataplane's connections, seen independently
    "iptables", // kube-proxy style rules in coexistence tests
    "curl",     // clients through the VIP in the end-to-end tests
];

static UPDATED: AtomicBool = AtomicBool::new(false);

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    // /proc/self/status "Uid:" line: real, effective, ...
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .and_then(|uid| uid.parse().ok())
        .unwrap_or(u32::MAX)
}

/// `apt-get update`, once per xtask run, as apt-cache/apt-get download need
/// fresh lists on a new machine.
pub fn apt_update() -> Result<()> {
    if UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    println!("xtask: apt-get update");
    let status = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .context("cannot run apt-get (this harness expects a Debian host)")?;
    if !status.success() {
        bail!("apt-get update failed ({status})");
    }
    Ok(())
}

/// Installs whichever of `pkgs` are missing, or explains how to.
pub fn ensure(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}. Install them with `sudo apt-get install -y {}` \
             (as root, cargo xtask installs them itself)",
            missing.join(" "),
            missing.join(" ")
        );
    }
    apt_update()?;
    println!("xtask: apt-get install {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    Ok(())
}

/// `apt-get download PACKAGE` into `dir` (the lists are refreshed once if
/// it fails): the package's .deb, never installed, for tools and files the
/// harness unpacks itself.
pub fn download_deb(package: &str, dir: &std::path::Path) -> Result<()> {
    let run = |dir: &std::path::Path| {
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir)
            .status()
            .context("cannot run apt-get download")
    };
    let mut status = run(dir)?;
    if !status.success() {
        apt_update()?;
        status = run(dir)?;
    }
    if !status.success() {
        bail!("apt-get download {package} failed ({status})");
    }
    Ok(())
}
