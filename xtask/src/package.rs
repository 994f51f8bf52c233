//! Packaging: `cargo xtask image` (an OCI image without Docker), `cargo xtask
//! helm` (the chart's .tgz) and the chart and image checks `cargo xtask
//! test` runs after the host tests.
//!
//! - `oci`: the image layout and the `docker load` tarball, written by hand.
//! - `tools`: helm, kubernetes-validate, skopeo and umoci, installed on demand
//!   and cached under `target/xtask/tools`.
//! - `chart`: lint, render and validate the chart; the schema's refusals.
//! - `image_check`: inspect a built image with skopeo and umoci.

mod chart;
mod image_check;
mod oci;
mod sbom;
mod tools;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::counts::Counts;

/// The workspace version: the image tag, and the chart's version and appVersion.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the chart lives, from the workspace root.
pub const CHART_DIR: &str = "charts/bcs-apiserver-proxy";
/// The image's default name; the chart's `image.repository` default.
pub const DEFAULT_REPOSITORY: &str = "ghcr.io/bcs-apiserver-proxy/bcs-apiserver-proxy";
/// The two binaries in the image, daemon first (the entrypoint).
pub const BINARIES: [&str; 2] = ["bcs-apiserver-proxy", "apiserver-proxy-tools"];
/// The only target rustup has here; named explicitly so that `+crt-static`
/// applies to it and not to build scripts and proc macros.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Flags of `cargo xtask image`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Output folder: `oci/` (the OCI image layout), the `docker load`
    /// tarball, and `bin/` (the binaries, for nodes).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Image name.
    #[arg(long, default_value = DEFAULT_REPOSITORY)]
    repository: String,
    /// Image tag [default: the workspace version].
    #[arg(long)]
    tag: Option<String>,
    /// Package the binaries found in DIR instead of building static release
    /// binaries (they are then checked, but need not be static).
    #[arg(long, value_name = "DIR")]
    binaries: Option<PathBuf>,
}

/// Flags of `cargo xtask helm`.
#[derive(clap::Args, Debug)]
pub struct HelmArgs {
    /// Output folder for the chart's .tgz [default: target/xtask/helm].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run only the packaging checks of `cargo xtask test` (chart, image,
    /// static-pod manifest), for working on them.
    #[arg(long, hide = true)]
    checks: bool,
}

impl Default for ImageArgs {
    /// What `cargo xtask image` does without flags.
    fn default() -> ImageArgs {
        ImageArgs {
            out: None,
            repository: DEFAULT_REPOSITORY.to_string(),
            tag: None,
            binaries: None,
        }
    }
}

/// What `cargo xtask image` built, for the benchmark's footprint table.
#[derive(Debug)]
pub struct ImageSizes {
    pub docker_archive: PathBuf,
    /// The layer as pulled (gzip).
    pub compressed: u64,
    /// The layer unpacked on the node.
    pub unpacked: u64,
}

/// `cargo xtask image`.
pub fn image(args: ImageArgs) -> Result<i32> {
    build_image(args)?;
    Ok(0)
}

/// Builds the image and says where it is; `cargo xtask bench` calls this so
/// that the size it reports is that of the code it measured.
pub fn build_image(args: ImageArgs) -> Result<ImageSizes> {
    let root = crate::workspace_root();
    let out = args.out.unwrap_or_else(|| root.join("target/xtask/image"));
    let tag = args.tag.unwrap_or_else(|| VERSION.to_string());
    let (bin_dir, want_static) = match args.binaries {
        Some(dir) => (dir, false),
        None => (build_static(&root)?, true),
    };
    let mut problems = Vec::new();
    for name in BINARIES {
        let path = bin_dir.join(name);
        let kind =
            oci::elf_linkage(&path).with_context(|| format!("cannot read {}", path.display()))?;
        println!("xtask: {name}: {kind}");
        if want_static && kind != oci::Linkage::Static {
            problems.push(format!("{name} is not static ({kind})"));
        }
        smoke_run(&path, name)?;
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    let created = oci::source_date_epoch(&root);
    let revision = git_revision(&root);
    let sbom = sbom::spdx(&root, &oci::rfc3339(created), revision.as_deref())?;
    let built = oci::build(&oci::ImageSpec {
        bin_dir: &bin_dir,
        out: &out,
        repository: &args.repository,
        tag: &tag,
        created,
        revision,
        compression: 9,
        sbom: &sbom,
    })?;
    // The SBOM beside the image too, for scanners that read a file.
    std::fs::write(out.join("sbom.spdx.json"), &sbom)?;
    // The binaries on their own too: nodes copy the CLI from here or from
    // the image.
    let bin_out = out.join("bin");
    std::fs::create_dir_all(&bin_out)?;
    for name in BINARIES {
        std::fs::copy(bin_dir.join(name), bin_out.join(name))?;
    }
    shell_files(&bin_dir, &out)?;
    if want_static && is_root() {
        // No file outside the image is needed: run it in the unpacked layer.
        let rootfs = built.staging.clone();
        let status = Command::new("chroot")
            .arg(&rootfs)
            .args(["/usr/local/bin/bcs-apiserver-proxy", "--version"])
            .status()
            .context("cannot run chroot")?;
        if !status.success() {
            bail!("the daemon does not run inside the image's own files ({status})");
        }
        println!("xtask: the daemon runs inside the image's files alone (chroot)");
    }
    println!();
    println!("image:        {}:{tag}", args.repository);
    println!("manifest:     {}", built.manifest_digest);
    println!("OCI layout:   {}", built.layout.display());
    println!("docker load:  {}", built.docker_archive.display());
    println!("binaries:     {}", bin_out.display());
    println!(
        "SBOM:         {} (SPDX 2.3; in the image at /{})",
        out.join("sbom.spdx.json").display(),
        sbom::IMAGE_PATH
    );
    println!(
        "completions:  {} (bash, zsh, fish); man pages: {}",
        out.join("completions").display(),
        out.join("man/man1").display()
    );
    println!(
        "size:         {} compressed (the download), {} unpacked; goal <= 20 MB",
        mb(built.layer_gz_size),
        mb(built.layer_tar_size)
    );
    if built.layer_gz_size > 20 * 1_000_000 {
        println!("xtask: WARNING: the image is over the 20 MB goal");
    }
    Ok(ImageSizes {
        docker_archive: built.docker_archive,
        compressed: built.layer_gz_size,
        unpacked: built.layer_tar_size,
    })
}

/// `cargo xtask helm`.
pub fn helm(args: HelmArgs) -> Result<i32> {
    if args.checks {
        let (ok, c) = tests()?;
        return Ok(if ok && c.failed == 0 { 0 } else { 1 });
    }
    let root = crate::workspace_root();
    let out = args.out.unwrap_or_else(|| root.join("target/xtask/helm"));
    let helm = tools::helm(&root)?;
    chart::lint(&helm, &root, &[]).context("helm lint --strict")?;
    let tgz = chart::package(&helm, &root, &out)?;
    println!(
        "chart: {} (version and appVersion {VERSION})",
        tgz.display()
    );
    Ok(0)
}

/// The outcome of the packaging checks, printed one line each.
#[derive(Debug, Default)]
pub struct Checks {
    counts: Counts,
    failures: Vec<String>,
}

impl Checks {
    /// Runs one check; `Ok(detail)` passes, an error fails with its message.
    pub fn run(&mut self, name: &str, f: impl FnOnce() -> Result<String>) {
        let started = Instant::now();
        let outcome = f();
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(detail) => {
                self.counts.passed += 1;
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                println!("check {name} ... ok{detail} [{secs:.1} s]");
            }
            Err(e) => {
                self.counts.failed += 1;
                self.failures.push(name.to_string());
                println!("check {name} ... FAILED [{secs:.1} s]");
                for line in format!("{e:#}").lines() {
                    println!("    {line}");
                }
            }
        }
    }

    /// A check that could not even start (a tool failed to install).
    pub fn fail(&mut self, name: &str, e: &anyhow::Error) {
        self.run(name, || Err(anyhow::anyhow!("{e:#}")));
    }
}

/// The packaging checks run by `cargo xtask test` after the host tests:
/// returns whether they passed and how many ran.
pub fn tests() -> Result<(bool, Counts)> {
    let started = Instant::now();
    let root = crate::workspace_root();
    let mut checks = Checks::default();

    // The debug binaries: `config check` on rendered configs, the image
    // test, the static-pod manifest. After the host tests this is quick.
    checks.run("build: debug binaries", || {
        cargo_build_debug(&root)?;
        Ok(String::new())
    });
    let debug = root.join("target/debug");

    // The tools, installed on first use: each is a check, so that a failed
    // install is counted and named, and its time shows.
    let mut helm = None;
    checks.run("tools: helm v4", || {
        helm = Some(tools::helm(&root)?);
        Ok(String::new())
    });
    let mut kv = None;
    checks.run("tools: kubernetes-validate", || {
        kv = Some(tools::kubernetes_validate(&root)?);
        Ok(String::new())
    });
    let mut inspectors = false;
    checks.run("tools: skopeo and umoci", || {
        tools::skopeo_umoci()?;
        inspectors = true;
        Ok(String::new())
    });

    match (&helm, &kv) {
        (Some(helm), Some(kv)) => chart::checks(&mut checks, &root, helm, kv, &debug),
        _ => checks.fail("chart", &anyhow::anyhow!("not checked: a tool is missing")),
    }
    match &kv {
        Some(kv) => chart::static_pod(&mut checks, &root, kv, &debug),
        None => checks.fail(
            "static-pod",
            &anyhow::anyhow!("not checked: no kubernetes-validate"),
        ),
    }
    if inspectors {
        image_check::checks(&mut checks, &root, &debug);
    } else {
        checks.fail(
            "image",
            &anyhow::anyhow!("not checked: no skopeo and umoci"),
        );
    }

    checks.run(
        "completions and man pages: what `cargo xtask image` ships, from the binaries",
        || check_shell_files(&root, &debug),
    );

    let c = checks.counts;
    let mut summary = format!(
        "packaging checks: {} passed, {} failed in {:.0} s",
        c.passed,
        c.failed,
        started.elapsed().as_secs_f64()
    );
    if !checks.failures.is_empty() {
        let _ = write!(summary, "; failed: {}", checks.failures.join(", "));
    }
    println!("{summary}");
    Ok((c.failed == 0, c))
}

/// Where a binary's shell files go below the output folder, and the
/// arguments that print each: the layout distributions install from
/// (`completions/bash/NAME`, `completions/zsh/_NAME`,
/// `completions/fish/NAME.fish`, `man/man1/NAME.1`).
fn shell_file_plan(name: &str) -> [(String, [&'static str; 2]); 4] {
    [
        (format!("completions/bash/{name}"), ["completions", "bash"]),
        (format!("completions/zsh/_{name}"), ["completions", "zsh"]),
        (
            format!("completions/fish/{name}.fish"),
            ["completions", "fish"],
        ),
        (format!("man/man1/{name}.1"), ["man", ""]),
    ]
}

/// Completions and man pages of both binaries, printed by the binaries
/// themselves (they come from the parsers' definitions), below `out`.
pub fn shell_files(bin_dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for name in BINARIES {
        for (file, args) in shell_file_plan(name) {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            let output = Command::new(bin_dir.join(name))
                .args(&args)
                .output()
                .with_context(|| format!("cannot run {name}"))?;
            if !output.status.success() || output.stdout.is_empty() {
                bail!(
                    "{name} {} failed ({}): {}",
                    args.join(" "),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let path = out.join(file);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, &output.stdout)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The shell files of the debug binaries: each in the form its shell or
/// `man` reads, naming the binary's commands.
fn check_shell_files(root: &Path, debug: &Path) -> Result<String> {
    let out = root.join("target/xtask/shell-files");
    let _ = std::fs::remove_dir_all(&out);
    let written = shell_files(debug, &out)?;
    let commands: [(&str, &[&str]); 2] = [
        ("bcs-apiserver-proxy", &["config", "completions"]),
        (
            "apiserver-proxy-tools",
            &["add", "init", "reload", "status", "cleanup", "static-pod"],
        ),
    ];
    for (name, subcommands) in commands {
        for (file, _) in shell_file_plan(name) {
            let text = std::fs::read_to_string(out.join(&file))?;
            let form = if file.starts_with("completions/bash") {
                text.contains(&format!("complete -F _{}", name.replace('-', "__")))
            } else if file.starts_with("completions/zsh") {
                text.starts_with(&format!("#compdef {name}"))
            } else if file.starts_with("completions/fish") {
                text.contains(&format!("complete -c {name}"))
            } else {
                text.contains(&format!(".TH {name} 1"))
            };
            ensure!(form, "{file} is not in the form its reader expects");
            for sub in subcommands {
                ensure!(
                    text.contains(sub) || text.contains(&sub.replace('-', "\\-")),
                    "{file} does not name {name} {sub}"
                );
            }
        }
    }
    Ok(format!("{} files", written.len()))
}

/// Static release binaries of both programs, in their own target folder so
/// that the ordinary builds keep their cache. Returns the binaries' folder.
fn build_static(root: &Path) -> Result<PathBuf> {
    let target_dir = root.join("target/xtask/static");
    println!("xtask: building static release binaries (+crt-static, --target {TARGET})");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for b in BINARIES {
        cmd.args(["--package", b, "--bin", b]);
    }
    // Flags from the environment would replace the target's own.
    let status = cmd
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .current_dir(root)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the static binaries failed ({status})");
    }
    Ok(target_dir.join(TARGET).join("release"))
}

/// `cargo build` of both binaries, debug, as the host tests built them.
pub fn cargo_build_debug(root: &Path) -> Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build").arg("--quiet");
    for b in BINARIES {
        cmd.args(["--package", b, "--bin", b]);
    }
    let status = cmd
        .current_dir(root)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build of the binaries failed ({status})");
    }
    Ok(())
}

/// Runs `BINARY --version` and checks that it names itself and the version.
/// The exit status is not judged: this checks that the binary runs and
/// names itself, not what it does.
pub fn smoke_run(path: &Path, name: &str) -> Result<String> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if !first.contains(name) || !first.contains(VERSION) {
        bail!(
            "{} --version printed {first:?} ({}), expected {name} {VERSION}",
            path.display(),
            out.status
        );
    }
    Ok(first)
}

/// HEAD's commit, for the image's revision label (read only).
fn git_revision(root: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Bytes as megabytes, one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
