//! `cargo xtask`: the project's automation.
//!
//! - `test`: the one test command (format, clippy, host tests, then every
//!   real-kernel test in one VM boot).
//! - `vm-test FILTER`: only the real-kernel tests matching FILTER, in the VM.
//! - `vm-run -- CMD...`: any command as root inside the VM (for debugging).
//!
//! See docs/testing.md.

mod deps;
mod kernel;
mod test;
mod vm;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Build, test and package bcs-apiserver-proxy"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run everything: cargo fmt --check, clippy -D warnings, the host tests,
    /// then every real-kernel test inside one VM boot of a stock Debian kernel.
    ///
    /// Installs what it needs on a fresh Debian machine (apt-get, as root) and
    /// caches the kernel under target/xtask/kernel.
    Test {
        /// Skip the VM (and so every real-kernel test). Loudly: IPVS is then untested.
        #[arg(long)]
        host_only: bool,
    },
    /// Run only the real-kernel tests whose name contains one of FILTERS, in the VM.
    VmTest {
        /// Build and search only these packages (default: the whole workspace).
        #[arg(short, long = "package", value_name = "SPEC")]
        packages: Vec<String>,
        /// Substrings of the test names to run (all real-kernel tests if none).
        filters: Vec<String>,
    },
    /// Run a command as root inside the VM, with the host's files visible.
    VmRun {
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() {
    let cli = Cli::parse();
    let result: Result<i32> = match cli.cmd {
        Cmd::Test { host_only } => test::run_all(host_only),
        Cmd::VmTest { packages, filters } => test::run_vm_only(&packages, &filters),
        Cmd::VmRun { command } => vm::run_command(&command),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(2);
        }
    }
}
