//! `cargo deny check licenses bans sources` against deny.toml: licences,
//! banned and duplicate crates, and where crates come from. cargo-deny is
//! compiled from crates.io once, pinned, and cached under
//! `target/xtask/tools` (a fresh machine has only cargo; no prebuilt binary
//! can be fetched here).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The pinned release; its `--locked` dependency set builds alike
/// everywhere.
const VERSION: &str = "0.20.2";

/// The cargo-deny binary, built on first use.
fn install(root: &Path) -> Result<PathBuf> {
    let dir = root.join(format!("target/xtask/tools/cargo-deny-{VERSION}"));
    let bin = dir.join("bin/cargo-deny");
    if bin.is_file() {
        return Ok(bin);
    }
    println!(
        "xtask: building cargo-deny {VERSION} from crates.io (once; cached in {})",
        dir.display()
    );
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "install",
            "--locked",
            "--quiet",
            "cargo-deny",
            "--version",
            VERSION,
        ])
        .arg("--root")
        .arg(&dir)
        // Its own target folder, so that the workspace's stays as it is.
        .env(
            "CARGO_TARGET_DIR",
            root.join("target/xtask/tools/cargo-deny-build"),
        )
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !bin.is_file() {
        bail!("cargo install cargo-deny {VERSION} failed ({status})");
    }
    let _ = std::fs::remove_dir_all(root.join("target/xtask/tools/cargo-deny-build"));
    Ok(bin)
}

/// Runs the check; true when it passes. Its findings are printed as
/// cargo-deny prints them.
pub fn check(root: &Path) -> Result<bool> {
    let bin = install(root)?;
    let status = Command::new(&bin)
        .args([
            "deny",
            "--offline",
            "--locked",
            "check",
            "licenses",
            "bans",
            "sources",
        ])
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    Ok(status.success())
}
