//! `cargo xtask`: the project's automation.
//!
//! - `test`: the one test command (format, clippy, host tests, then every
//!   real-kernel test in one VM boot).
//! - `vm-test FILTER`: only the real-kernel tests matching FILTER, in the VM.
//! - `vm-run -- CMD...`: any command as root inside the VM (for debugging).
//! - `demo`: the daemon failing over live, in the VM.
//! - `image`, `helm`: the OCI image and the chart package.
//! - `bench`: the benchmarks behind docs/benchmarks.md.
//! - `lifecycle`: the lifecycle suite in the VM, and docs/lifecycle.md.
//!
//! See docs/testing.md.

mod bench;
mod counts;
mod deny;
mod deps;
mod kernel;
mod lifecycle;
mod package;
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
    /// Boot the VM and show the daemon failing over live: three simulated
    /// apiservers, one crashes, one is black-holed, one drains, all return.
    Demo {
        /// Build optimised binaries (slower to build; the footprint figures
        /// at the end are then the real ones).
        #[arg(long)]
        release: bool,
    },
    /// Run only the real-kernel tests whose name contains one of FILTERS, in the VM.
    VmTest {
        /// Build and search only these packages (default: the whole workspace).
        #[arg(short, long = "package", value_name = "SPEC")]
        packages: Vec<String>,
        /// Substrings of the test names to run (all real-kernel tests if none).
        filters: Vec<String>,
    },
    /// Build the OCI image (layout and `docker load` tarball) without Docker.
    Image(package::ImageArgs),
    /// Package the Helm chart as a .tgz, versioned from the workspace.
    Helm(package::HelmArgs),
    /// Run the benchmarks in the VM and write docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Run the lifecycle suite (install, reboot, upgrade, migration,
    /// tampering, uninstall) in the VM and write docs/lifecycle.md.
    /// `cargo xtask test` runs the same tests in its one VM boot.
    Lifecycle,
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

/// Builds the daemon and the demo program, then runs the demo in the VM.
fn demo(release: bool) -> Result<i32> {
    let root = workspace_root();
    let mut build = std::process::Command::new(env!("CARGO"));
    build.arg("build");
    if release {
        build.arg("--release");
    }
    let status = build
        .args([
            "--package",
            "bcs-apiserver-proxy",
            "--bin",
            "bcs-apiserver-proxy",
            "--example",
            "demo",
        ])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        anyhow::bail!("building the daemon and the demo failed");
    }
    // By default a debug build: the demo shows behaviour, not speed, and
    // `cargo xtask test` has built most of it already.
    let out = root.join(if release {
        "target/release"
    } else {
        "target/debug"
    });
    let job = format!(
        "{} {}\n",
        vm::shell_quote(&out.join("examples/demo").to_string_lossy()),
        vm::shell_quote(&out.join("bcs-apiserver-proxy").to_string_lossy())
    );
    Ok(vm::run_job(&job)?.exit_code)
}

fn main() {
    let cli = Cli::parse();
    let result: Result<i32> = match cli.cmd {
        Cmd::Test { host_only } => test::run_all(host_only),
        Cmd::VmTest { packages, filters } => test::run_vm_only(&packages, &filters),
        Cmd::VmRun { command } => vm::run_command(&command),
        Cmd::Demo { release } => demo(release),
        Cmd::Image(args) => package::image(args),
        Cmd::Helm(args) => package::helm(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Lifecycle => test::run_lifecycle(),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(2);
        }
    }
}
