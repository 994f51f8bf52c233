//! Boots the cached Debian kernel under qemu (software emulation: our hosts'
//! /dev/kvm is unusable) and runs one shell job as root inside it.
//!
//! The guest sees the host's `/` read-only over 9p with a tmpfs overlay on
//! top (xtask/vm/init), so every binary cargo built runs there unchanged.
//! The job's output streams back over a virtio-serial port; its exit code
//! over a second, writable 9p share. See docs/testing.md.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::kernel;

/// What came back from the VM.
#[derive(Debug)]
pub struct Outcome {
    pub exit_code: i32,
    pub output: String,
    /// The run's folder, shared with the VM (where tests may leave files).
    pub results: PathBuf,
}

/// Runs `job` (a POSIX shell script) as PID 1's child in a fresh VM and
/// streams its output to our stdout.
pub fn run_job(job: &str) -> Result<Outcome> {
    let kernel = kernel::prepare()?;
    let root = crate::workspace_root();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let results = root
        .join("target/xtask/vm")
        .join(format!("run-{stamp}-{}", std::process::id()));
    fs::create_dir_all(&results)?;
    let results = results.canonicalize()?;
    fs::write(results.join("job.sh"), job)?;
    let initramfs = results.join("initramfs.cpio");
    kernel::build_initramfs(&kernel, &initramfs)?;
    let out_log = results.join("out.log");
    let console = results.join("console.log");
    fs::write(&out_log, "")?;

    let stage2 = root.join("xtask/vm/stage2.sh").canonicalize()?;
    let cmdline = format!(
        "console=ttyS0 quiet panic=-1 apiproxy.stage2={} apiproxy.results={} apiproxy.modules={}",
        stage2.display(),
        results.display(),
        kernel.modules.display()
    );
    for p in [&stage2, &results, &kernel.modules] {
        if p.to_string_lossy().contains(char::is_whitespace) {
            bail!(
                "the VM harness cannot pass paths with spaces: {}",
                p.display()
            );
        }
    }
    let memory = std::env::var("APISERVER_PROXY_VM_MEMORY").unwrap_or_else(|_| "2G".into());
    let timeout = std::env::var("APISERVER_PROXY_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500u64);

    println!(
        "xtask: booting Debian kernel {} in qemu (software emulation, -smp 2 -m {memory})",
        kernel.release
    );
    let started = Instant::now();
    let qemu_log = results.join("qemu.log");
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2"])
        .args(["-m", &memory, "-machine", "pc", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinux)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", &cmdline])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-device", "virtio-rng-pci"])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=results,security_model=none,multidevs=remap",
            results.display()
        ))
        .args(["-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!("file,id=out,path={}", out_log.display()))
        .args(["-device", "virtserialport,chardev=out,name=out"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&qemu_log)?)
        .stderr(fs::File::create(results.join("qemu.err"))?)
        .spawn()
        .context("cannot start qemu-system-x86_64")?;

    // Copy the job's output to our stdout as it arrives.
    let mut reader = fs::File::open(&out_log)?;
    let mut output = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    let status = loop {
        let n = reader.read(&mut buf)?;
        if n > 0 {
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            output.extend_from_slice(&buf[..n]);
            continue;
        }
        if let Some(status) = child.try_wait()? {
            // Drain what was written just before qemu exited.
            let seen = output.len();
            reader.read_to_end(&mut output)?;
            stdout.write_all(&output[seen..])?;
            break status;
        }
        if started.elapsed() > Duration::from_secs(timeout) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the VM did not finish within {timeout} s (APISERVER_PROXY_VM_TIMEOUT); \
                 console log: {}",
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = String::from_utf8_lossy(&output).into_owned();
    let elapsed = started.elapsed();
    let code = fs::read_to_string(results.join("exit-code"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    match code {
        Some(exit_code) => {
            println!(
                "xtask: VM finished in {:.1} s, job exit code {exit_code} (logs: {})",
                elapsed.as_secs_f64(),
                results.display()
            );
            Ok(Outcome {
                exit_code,
                output,
                results,
            })
        }
        None => bail!(
            "the VM stopped (qemu {status}) without reporting the job's exit code.\n\
             qemu errors: {}\nlast kernel console lines:\n{}",
            read_tail(&results.join("qemu.err"), 20),
            read_tail(&console, 30)
        ),
    }
}

fn read_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `cargo xtask vm-run -- CMD...`
pub fn run_command(command: &[String]) -> Result<i32> {
    let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    let cwd: PathBuf = std::env::current_dir()?;
    let job = format!(
        "cd {}\n{}\n",
        shell_quote(&cwd.to_string_lossy()),
        quoted.join(" ")
    );
    Ok(run_job(&job)?.exit_code)
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
