//! `cargo xtask test`: the one test command.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::counts::Counts;
use crate::vm;

/// The `#[ignore]` reason that marks a real-kernel test. Nothing else may be
/// ignored, so a skipped test can never hide.
pub const REAL_KERNEL_REASON: &str = "real-kernel";

pub fn run_all(host_only: bool) -> Result<i32> {
    let started = Instant::now();
    let root = crate::workspace_root();
    check_ignore_reasons(&root)?;
    // Before the host tests: they use network namespaces and nftables too,
    // not only the VM.
    step("the Debian packages the tests need");
    crate::deps::ensure(crate::deps::VM_PACKAGES)?;

    step("cargo fmt --all -- --check");
    let fmt_ok = cargo(&root, &["fmt", "--all", "--", "--check"])?;
    step("cargo clippy --workspace --all-targets -- -D warnings");
    let clippy_ok = cargo(
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;

    step("cargo deny check licenses bans sources (deny.toml)");
    let deny_ok = match crate::deny::check(&root) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("xtask: cargo deny could not run: {e:#}");
            false
        }
    };

    step("host tests: cargo test --workspace --no-fail-fast");
    let (host_ok, mut host) = host_tests(&root)?;

    step("packaging: chart and image checks");
    let (package_ok, package) = crate::package::tests()?;
    host.passed += package.passed;
    host.failed += package.failed;
    let host_ok = host_ok && package_ok;

    let vm = if host_only {
        eprintln!();
        eprintln!("##################################################################");
        eprintln!("## WARNING: --host-only: the VM was skipped. NO real-kernel test  ##");
        eprintln!("## ran: IPVS, the VIP and the traffic tests are UNTESTED.          ##");
        eprintln!("##################################################################");
        None
    } else {
        step("real-kernel tests, the lifecycle suite included: one VM boot");
        let run = vm_tests(&root, &[], &[])?;
        if run.lifecycle {
            let command = "cargo xtask test";
            if let Err(e) = crate::lifecycle::write_doc(&root, &run.results, &run.output, command) {
                eprintln!("xtask: WARNING: docs/lifecycle.md was not written: {e:#}");
            }
        }
        Some((run.ok, run.counts))
    };

    println!();
    println!(
        "xtask: fmt {}, clippy {}, cargo deny {}, finished in {:.0} s",
        if fmt_ok { "ok" } else { "FAILED" },
        if clippy_ok { "ok" } else { "FAILED" },
        if deny_ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    println!(
        "host tests: {} passed, {} failed, {} ignored (the real-kernel tests, run in the VM)",
        host.passed, host.failed, host.ignored
    );
    let mut total = host;
    let mut vm_ok = true;
    match vm {
        Some((ok, c)) => {
            println!("vm tests: {} passed, {} failed", c.passed, c.failed);
            total.passed += c.passed;
            total.failed += c.failed;
            vm_ok = ok;
        }
        None => println!("vm tests: SKIPPED (--host-only)"),
    }
    println!("total: {} passed, {} failed", total.passed, total.failed);
    let all_ok = fmt_ok && clippy_ok && deny_ok && host_ok && vm_ok && total.failed == 0;
    Ok(if all_ok { 0 } else { 1 })
}

pub fn run_vm_only(packages: &[String], filters: &[String]) -> Result<i32> {
    let root = crate::workspace_root();
    let run = vm_tests(&root, packages, filters)?;
    if run.lifecycle {
        println!(
            "xtask: lifecycle figures in {} (`cargo xtask lifecycle` writes docs/lifecycle.md)",
            run.results.join("lifecycle").display()
        );
    }
    let c = run.counts;
    println!("vm tests: {} passed, {} failed", c.passed, c.failed);
    Ok(if run.ok && c.failed == 0 { 0 } else { 1 })
}

/// `cargo xtask lifecycle`: the lifecycle suite alone in one VM boot, then
/// docs/lifecycle.md from its figures.
pub fn run_lifecycle() -> Result<i32> {
    let root = crate::workspace_root();
    // Both packages, so that the CLI the suite runs beside the daemon is
    // built from this tree too.
    let run = vm_tests(
        &root,
        &[
            crate::lifecycle::PACKAGE.to_string(),
            "apiserver-proxy-tools".to_string(),
        ],
        &[crate::lifecycle::TEST_PREFIX.to_string()],
    )?;
    crate::lifecycle::write_doc(&root, &run.results, &run.output, "cargo xtask lifecycle")?;
    let c = run.counts;
    println!("lifecycle tests: {} passed, {} failed", c.passed, c.failed);
    Ok(if run.ok && c.failed == 0 { 0 } else { 1 })
}

/// Each step says how long the run has taken so far, so a CI log shows
/// where its time budget goes.
fn step(what: &str) {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let at = STARTED.get_or_init(Instant::now).elapsed().as_secs();
    println!("\n==> [{at} s] {what}");
}

fn cargo(root: &Path, args: &[&str]) -> Result<bool> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    Ok(status.success())
}

/// Runs the host tests, passing their output through and counting results.
fn host_tests(root: &Path) -> Result<(bool, Counts)> {
    let mut child = Command::new(env!("CARGO"))
        .args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait()?;
    Ok((status.success(), counts))
}

/// A test executable cargo built, and the package directory it runs in.
#[derive(Debug)]
struct TestBinary {
    exe: PathBuf,
    package_dir: PathBuf,
}

/// Builds every test target (the same build the host tests used) and lists
/// the executables.
fn test_binaries(root: &Path, packages: &[String]) -> Result<Vec<TestBinary>> {
    let mut selection: Vec<String> = packages.iter().map(|p| format!("--package={p}")).collect();
    if selection.is_empty() {
        selection.push("--workspace".into());
    }
    let out = Command::new(env!("CARGO"))
        .arg("test")
        .args(&selection)
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(manifest)) =
            (msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        let package_dir = Path::new(manifest)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.to_path_buf());
        bins.push(TestBinary {
            exe: PathBuf::from(exe),
            package_dir,
        });
    }
    Ok(bins)
}

/// The real-kernel tests a binary holds (its ignored tests), by name.
fn kernel_tests(bin: &TestBinary) -> Result<Vec<String>> {
    list_tests(bin, true)
}

/// Test binaries whose nftables tests run on the host (the host kernel has
/// nf_tables) and again in the VM, so that both kernels are covered. They
/// are quick; the end-to-end scenarios on nftables run on the host, with
/// their address-mode and IPv6 twins marked real-kernel for the VM.
const BOTH_KERNELS: &[&str] = &["nft_kernel", "kernel_reconcile", "kernel"];
/// What names those tests.
const BOTH_KERNELS_MARK: &str = "nftables";

/// The host tests of `bin` that also run in the VM (see [`BOTH_KERNELS`]).
fn both_kernel_tests(bin: &TestBinary) -> Result<Vec<String>> {
    let name = bin
        .exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = name.rsplit_once('-').map_or(name.as_str(), |(t, _)| t);
    if !BOTH_KERNELS.contains(&target) {
        return Ok(Vec::new());
    }
    let ignored = list_tests(bin, true)?;
    Ok(list_tests(bin, false)?
        .into_iter()
        .filter(|t| t.contains(BOTH_KERNELS_MARK) && !ignored.contains(t))
        .collect())
}

fn list_tests(bin: &TestBinary, ignored: bool) -> Result<Vec<String>> {
    let mut cmd = Command::new(&bin.exe);
    cmd.args(["--list", "--format", "terse"]);
    if ignored {
        cmd.arg("--ignored");
    }
    let out = cmd
        .current_dir(&bin.package_dir)
        .output()
        .with_context(|| format!("cannot list tests of {}", bin.exe.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// What one VM boot of real-kernel tests gave.
struct VmRun {
    ok: bool,
    counts: Counts,
    /// Whether lifecycle tests ran (their figures are in `results`).
    lifecycle: bool,
    results: PathBuf,
    output: String,
}

fn vm_tests(root: &Path, packages: &[String], filters: &[String]) -> Result<VmRun> {
    let bins = test_binaries(root, packages)?;
    // The job starts in the run's folder, which the host sees too: the
    // lifecycle tests leave their figures there.
    let mut job = String::from(
        "# Written by `cargo xtask`: runs every real-kernel test binary with --ignored.\n\
         failed=0\n\
         started=$(date +%s)\n\
         ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true\n\
         export APISERVER_PROXY_LIFECYCLE_OUT=\"$PWD/lifecycle\"\n",
    );
    let mut selected = 0usize;
    let mut lifecycle = false;
    for bin in &bins {
        let tests = kernel_tests(bin)?;
        let wanted =
            |t: &&String| filters.is_empty() || filters.iter().any(|f| t.contains(f.as_str()));
        let matching: Vec<&String> = tests.iter().filter(wanted).collect();
        let both: Vec<String> = both_kernel_tests(bin)?;
        let both: Vec<&String> = both.iter().filter(wanted).collect();
        if !both.is_empty() {
            selected += both.len();
            let dir = vm::shell_quote(&bin.package_dir.to_string_lossy());
            let exe = vm::shell_quote(&bin.exe.to_string_lossy());
            let names: Vec<String> = both.iter().map(|t| vm::shell_quote(t)).collect();
            job.push_str(&format!(
                "cd {dir} && export CARGO_MANIFEST_DIR={dir}\n\
                 echo '     Running [vm, also on the host] {name}'\n\
                 {exe} --exact {names} || failed=1\n",
                name = bin
                    .exe
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                names = names.join(" "),
            ));
        }
        if matching.is_empty() {
            continue;
        }
        selected += matching.len();
        // The lifecycle events each run in their own namespace and spend
        // most of their time waiting (event 7 holds its apiservers down for
        // a minute): side by side they fit the CI budget.
        let is_lifecycle = matching
            .iter()
            .any(|t| t.starts_with(crate::lifecycle::TEST_PREFIX));
        if is_lifecycle && !lifecycle {
            lifecycle = true;
            match crate::lifecycle::previous_release(root) {
                Ok(dir) => job.push_str(&format!(
                    "export APISERVER_PROXY_PREV_BIN_DIR={}\n",
                    vm::shell_quote(&dir.to_string_lossy())
                )),
                Err(e) => eprintln!(
                    "xtask: WARNING: the previous release was not built, so the upgrade \
                     test will fail: {e:#}"
                ),
            }
        }
        let threads = if is_lifecycle {
            " --test-threads 4"
        } else {
            ""
        };
        let dir = vm::shell_quote(&bin.package_dir.to_string_lossy());
        let exe = vm::shell_quote(&bin.exe.to_string_lossy());
        let filter_arg: Vec<String> = filters.iter().map(|f| vm::shell_quote(f)).collect();
        let filter_arg = filter_arg.join(" ");
        job.push_str(&format!(
            "cd {dir} && export CARGO_MANIFEST_DIR={dir}\n\
             echo \"     Running [vm] {name} (VM up $(( $(date +%s) - started )) s)\"\n\
             {exe} --ignored{threads} {filter_arg} || failed=1\n",
            name = bin
                .exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ));
    }
    if selected == 0 {
        bail!(
            "no real-kernel test matches {filters:?}: they are the tests marked #[ignore = \"{REAL_KERNEL_REASON}: ...\"]"
        );
    }
    job.push_str("exit $failed\n");
    println!("xtask: {selected} real-kernel tests selected");
    let outcome = vm::run_job(&job)?;
    let counts = Counts::from_output(&outcome.output);
    Ok(VmRun {
        ok: outcome.exit_code == 0,
        counts,
        lifecycle,
        results: outcome.results,
        output: outcome.output,
    })
}

/// `#[ignore]` is reserved for real-kernel tests: any other reason (or none)
/// is an error, so that no test is skipped silently.
fn check_ignore_reasons(root: &Path) -> Result<()> {
    let mut bad = Vec::new();
    for dir in ["crates", "bins"] {
        scan(&root.join(dir), &mut bad)?;
    }
    if !bad.is_empty() {
        bail!(
            "#[ignore] is reserved for real-kernel tests and must read \
             #[ignore = \"{REAL_KERNEL_REASON}: ...\"]. Found:\n  {}",
            bad.join("\n  ")
        );
    }
    Ok(())
}

fn scan(dir: &Path, bad: &mut Vec<String>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            scan(&path, bad)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)?;
            for (i, line) in text.lines().enumerate() {
                let t = line.trim_start();
                let marker = "#[ignore";
                // An attribute line, not a string that mentions one.
                if t.starts_with(marker)
                    && t.trim_end().ends_with(']')
                    && !t.starts_with(&format!("#[ignore = \"{REAL_KERNEL_REASON}"))
                {
                    bad.push(format!("{}:{}: {}", path.display(), i + 1, t));
                }
            }
        }
    }
    Ok(())
}
