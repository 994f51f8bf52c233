//! The boot-time restore: a systemd unit that runs `reload` after the
//! network is up and before kubelet, or, where systemd is absent, a marked
//! block in rc.local. Plus the copy of this binary the restore runs
//! (`--tool-path`, the Go tool's `-toolPath`).
//!
//! Every path is taken below `--root` (`/` unless a test or an image build
//! says otherwise); systemctl runs only against the live system.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::Common;
use crate::fail::Failure;
use apiserver_proxy_manager::config::DataplaneChoice;

pub const UNIT_NAME: &str = "apiserver-proxy-reload.service";
const UNIT_DIR: &str = "etc/systemd/system";
const SYSTEMD_RUNNING: &str = "run/systemd/system";
const BEGIN: &str = "# BEGIN apiserver-proxy-tools: restores the apiserver VIP at boot";
const END: &str = "# END apiserver-proxy-tools";

/// `path` (absolute, as the booted system sees it) below `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn io_failure(what: &str, path: &Path, e: std::io::Error) -> Failure {
    Failure::new(format!("cannot {what} {}: {e}", path.display()))
        .todo("check the path and that you are root")
}

/// Where boot files go, and what they run.
#[derive(Debug, Clone)]
pub struct Boot {
    root: PathBuf,
    tool_path: PathBuf,
    state_dir: PathBuf,
    persist_dir: PathBuf,
    dataplane: DataplaneChoice,
}

impl Boot {
    pub fn new(c: &Common) -> Boot {
        Boot {
            root: c.root.clone(),
            tool_path: c.tool_path.clone(),
            state_dir: c.state_dir.clone(),
            persist_dir: c.persist_dir.clone(),
            dataplane: c.dataplane,
        }
    }

    pub fn unit_path(&self) -> PathBuf {
        self.root.join(UNIT_DIR).join(UNIT_NAME)
    }

    /// systemd is running here (and `--root` is the live system).
    fn systemd_running(&self) -> bool {
        self.root == Path::new("/") && self.root.join(SYSTEMD_RUNNING).is_dir()
    }

    /// systemd is the init system: it runs, or its unit folder exists.
    fn has_systemd(&self) -> bool {
        self.root.join(SYSTEMD_RUNNING).is_dir() || self.root.join(UNIT_DIR).is_dir()
    }

    /// rc.local: Red Hat's real file, else Debian's.
    fn rc_local(&self) -> PathBuf {
        let rhel = self.root.join("etc/rc.d/rc.local");
        if rhel.exists() {
            rhel
        } else {
            self.root.join("etc/rc.local")
        }
    }

    /// The command the restore runs, as words.
    fn reload_words(&self) -> Result<Vec<String>, Failure> {
        let mut words = Vec::new();
        for (flag, path) in [
            ("", &self.tool_path),
            ("--state-dir", &self.state_dir),
            ("--persist-dir", &self.persist_dir),
        ] {
            let text = path.to_str().ok_or_else(|| {
                Failure::new(format!("{} is not valid UTF-8", path.display()))
                    .todo("use a plain path")
            })?;
            if !path.is_absolute() {
                return Err(Failure::new(format!("{text} is not an absolute path"))
                    .todo("the boot-time restore runs from /: give absolute paths"));
            }
            if flag.is_empty() {
                words.push(text.to_string());
                words.push("reload".to_string());
            } else {
                words.push(flag.to_string());
                words.push(text.to_string());
            }
        }
        // The boot-time restore uses the dataplane `init` was given: a node
        // set up on nftables comes back on nftables even if ip_vs loads.
        if self.dataplane != DataplaneChoice::Auto {
            words.push("--dataplane".to_string());
            words.push(self.dataplane.to_string());
        }
        Ok(words)
    }

    /// The command the restore runs, quoted with `quote`.
    fn reload_line(&self, quote: fn(&str) -> String) -> Result<String, Failure> {
        let words: Vec<String> = self.reload_words()?.iter().map(|w| quote(w)).collect();
        Ok(words.join(" "))
    }

    /// The unit's text.
    pub fn unit(&self) -> Result<String, Failure> {
        let exec = self.reload_line(systemd_quote)?;
        Ok(format!(
            "# Installed by `apiserver-proxy-tools init`; `apiserver-proxy-tools cleanup` removes it.
[Unit]
Description=Restore the kube-apiserver VIP and IPVS rules (bcs-apiserver-proxy)
Documentation=https://github.com/bcs-apiserver-proxy/bcs-apiserver-proxy/blob/main/docs/cli.md
Wants=network-online.target
After=network-online.target
Before=kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={}

[Install]
WantedBy=multi-user.target kubelet.service
",
            exec
        ))
    }

    /// The rc.local block's text.
    fn rc_block(&self) -> Result<String, Failure> {
        let line = self.reload_line(shell_quote)?;
        Ok(format!(
            "{BEGIN} (`apiserver-proxy-tools cleanup` removes it)\n{} || true\n{END}\n",
            line
        ))
    }

    /// Copies the running binary to `--tool-path` unless it is there already.
    pub fn install_tool(&self) -> Result<(), Failure> {
        let target = under(&self.root, &self.tool_path);
        let me = std::env::current_exe()
            .map_err(|e| Failure::new(format!("cannot find this program's own file: {e}")))?;
        let same_file = match (me.canonicalize(), target.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same_file {
            outln!("the restore runs {}: this binary", self.tool_path.display());
            return Ok(());
        }
        let mine = std::fs::read(&me).map_err(|e| io_failure("read", &me, e))?;
        if std::fs::read(&target).is_ok_and(|theirs| theirs == mine) {
            outln!("{} is this binary already", target.display());
            return Ok(());
        }
        write_file(&target, &mine, 0o755)?;
        outln!("installed this binary as {}", target.display());
        Ok(())
    }

    /// Installs the boot-time restore; idempotent, and says what it did.
    pub fn install(&self) -> Result<(), Failure> {
        self.install_tool()?;
        self.disable_go_restore()?;
        if !self.has_systemd() {
            return self.install_rc_local();
        }
        let path = self.unit_path();
        let text = self.unit()?;
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            outln!("{} is in place", path.display());
        } else {
            write_file(&path, text.as_bytes(), 0o644)?;
            outln!(
                "installed {}: runs `reload` before kubelet.service",
                path.display()
            );
        }
        if self.systemd_running() {
            systemctl(&["daemon-reload"])?;
            systemctl(&["enable", UNIT_NAME])?;
            outln!("enabled {UNIT_NAME}");
        } else {
            outln!(
                "systemd is not running here: enable it with `systemctl daemon-reload && systemctl enable {UNIT_NAME}`"
            );
        }
        Ok(())
    }

    /// Comments out the Go tool's own restore line (`... -cmd reload ...`)
    /// in rc.local: ours replaces it, and the Go tool's reload would bring
    /// the virtual servers back with its forced `sh` scheduler.
    fn disable_go_restore(&self) -> Result<(), Failure> {
        for path in [
            self.root.join("etc/rc.local"),
            self.root.join("etc/rc.d/rc.local"),
        ] {
            let Ok(old) = std::fs::read_to_string(&path) else {
                continue;
            };
            let new = without_go_restore(&old);
            if new != old {
                let mode = std::fs::metadata(&path).map_or(0o755, |m| m.permissions().mode());
                write_file(&path, new.as_bytes(), mode & 0o7777)?;
                outln!(
                    "disabled the Go tool's restore line in {} (commented out): ours replaces it",
                    path.display()
                );
            }
        }
        Ok(())
    }

    fn install_rc_local(&self) -> Result<(), Failure> {
        let path = self.rc_local();
        let old = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "#!/bin/sh\n".to_string(),
            Err(e) => return Err(io_failure("read", &path, e)),
        };
        let new = with_block(&without_block(&old), &self.rc_block()?);
        if new == old && is_executable(&path) {
            outln!("{} already runs `reload` at boot", path.display());
            return Ok(());
        }
        write_file(&path, new.as_bytes(), 0o755)?;
        outln!(
            "no systemd here: added `reload` to {} (runs at boot)",
            path.display()
        );
        Ok(())
    }

    /// Removes the unit (disabling it first where systemd runs) and the
    /// rc.local block.
    pub fn uninstall(&self) -> Result<(), Failure> {
        let path = self.unit_path();
        if path.exists() {
            if self.systemd_running() {
                systemctl(&["disable", UNIT_NAME])?;
            }
            crate::saved::remove_file(&path)?;
            if self.systemd_running() {
                systemctl(&["daemon-reload"])?;
            } else {
                outln!(
                    "systemd is not running here: if {UNIT_NAME} was enabled, run `systemctl disable {UNIT_NAME}` where it runs"
                );
            }
        }
        let rc = self.rc_local();
        if let Ok(old) = std::fs::read_to_string(&rc) {
            let new = without_block(&old);
            if new != old {
                write_file(&rc, new.as_bytes(), 0o755)?;
                outln!("removed `reload` from {}", rc.display());
            }
        }
        Ok(())
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Writes a file with `mode` through the one safe write: a crash leaves the
/// old file or the new one, and a planted symlink is never followed.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    apiserver_proxy_types::file::write_atomic(path, bytes, Some(mode))
        .map_err(|e| io_failure("write", path, e))
}

fn systemctl(args: &[&str]) -> Result<(), Failure> {
    let shown = format!("systemctl {}", args.join(" "));
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| Failure::new(format!("cannot run `{shown}`: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "`{shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .todo(format!("run `{shown}` by hand")))
    }
}

/// Marks a line this tool commented out.
const GO_DISABLED: &str =
    "# disabled by apiserver-proxy-tools init, which restores at boot instead: ";

/// Whether an rc.local line runs the Go tool's restore: `-cmd reload` in
/// any of the spellings Go's flag package accepts.
fn is_go_restore(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.first().is_none_or(|w| w.starts_with('#')) {
        return false;
    }
    words.iter().enumerate().any(|(i, w)| match *w {
        "-cmd" | "--cmd" => words.get(i + 1) == Some(&"reload"),
        w => w == "-cmd=reload" || w == "--cmd=reload",
    })
}

/// `text` with the Go tool's restore lines commented out; our own block
/// (which may run `reload` in the Go syntax too) is left alone.
fn without_go_restore(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with(BEGIN) {
            inside = true;
        } else if inside && line.trim_end() == END {
            inside = false;
        } else if !inside && is_go_restore(line) {
            out.push_str(GO_DISABLED);
        }
        out.push_str(line);
    }
    out
}

/// `text` without our marked block.
fn without_block(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with(BEGIN) {
            inside = true;
        } else if inside && line.trim_end() == END {
            inside = false;
        } else if !inside {
            out.push_str(line);
        }
    }
    out
}

/// `text` with `block` before a final `exit 0` (which would end rc.local
/// before it), else at the end.
fn with_block(text: &str, block: &str) -> String {
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let exit_at = lines.iter().rposition(|l| l.trim() == "exit 0");
    let mut out = String::new();
    let at = exit_at.unwrap_or(lines.len());
    for l in lines.drain(..at) {
        out.push_str(l);
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(block);
    for l in lines {
        out.push_str(l);
    }
    out
}

fn plain(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+,@".contains(c))
}

/// A word for a POSIX shell.
fn shell_quote(word: &str) -> String {
    if plain(word) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A word for systemd's ExecStart (C-style quoting; `%` and `$` expand).
fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if plain(word) {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn boot(root: &Path, extra: &[&str]) -> Boot {
        let mut args = vec!["t", "reload", "--root", root.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        Boot::new(&crate::cli::Cli::parse_from(args).common)
    }

    /// Regression: boot files were written through the fixed name
    /// `NAME.apiserver-proxy-tools.tmp`, opened with `File::create`, which
    /// follows a planted symlink and truncates its target.
    #[test]
    fn boot_files_never_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let path = dir.path().join("rc.local");
        std::os::unix::fs::symlink(&victim, path.with_extension("apiserver-proxy-tools.tmp"))
            .expect("symlink");
        write_file(&path, b"#!/bin/sh\n", 0o755).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn the_unit_runs_reload_before_kubelet_after_the_network() {
        let b = boot(Path::new("/r"), &["--state-dir", "/var/lib/my state"]);
        let unit = b.unit().expect("unit");
        for want in [
            "After=network-online.target",
            "Wants=network-online.target",
            "Before=kubelet.service",
            "Type=oneshot",
            "ExecStart=/usr/local/bin/apiserver-proxy-tools reload --state-dir \"/var/lib/my state\" --persist-dir /root/.bcs",
            "WantedBy=multi-user.target kubelet.service",
        ] {
            assert!(unit.contains(want), "{want} missing:\n{unit}");
        }
        assert_eq!(
            b.unit_path(),
            Path::new("/r/etc/systemd/system").join(UNIT_NAME)
        );
    }

    #[test]
    fn relative_paths_are_refused() {
        let err = boot(Path::new("/r"), &["--tool-path", "bin/x"])
            .unit()
            .expect_err("relative");
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b"), "/a/b");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(systemd_quote("/a b"), "\"/a b\"");
        assert_eq!(systemd_quote("/a%b"), "\"/a%%b\"");
    }

    #[test]
    fn the_rc_local_block_goes_before_exit_and_comes_out_cleanly() {
        let b = boot(Path::new("/r"), &[]);
        let block = b.rc_block().expect("block");
        let original = "#!/bin/sh -e\necho hi\nexit 0\n";
        let with = with_block(&without_block(original), &block);
        assert!(with.starts_with("#!/bin/sh -e\necho hi\n# BEGIN"), "{with}");
        assert!(
            with.ends_with("# END apiserver-proxy-tools\nexit 0\n"),
            "{with}"
        );
        assert!(
            with.contains("apiserver-proxy-tools reload --state-dir"),
            "{with}"
        );
        // Idempotent, and removable without a trace.
        assert_eq!(with_block(&without_block(&with), &block), with);
        assert_eq!(without_block(&with), original);
    }

    #[test]
    fn install_and_uninstall_below_a_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let tool = root.path().join("usr/local/bin/apiserver-proxy-tools");
        // No systemd below this root: rc.local.
        let b = boot(root.path(), &[]);
        b.install().expect("install");
        assert!(tool.exists() && is_executable(&tool));
        let rc = root.path().join("etc/rc.local");
        assert!(is_executable(&rc));
        let text = std::fs::read_to_string(&rc).expect("rc.local");
        assert!(
            text.contains("/usr/local/bin/apiserver-proxy-tools reload"),
            "{text}"
        );
        b.install().expect("again");
        assert_eq!(std::fs::read_to_string(&rc).expect("rc.local"), text);
        b.uninstall().expect("uninstall");
        assert_eq!(
            std::fs::read_to_string(&rc).expect("rc.local"),
            "#!/bin/sh\n"
        );

        // With systemd's folder: the unit, never rc.local.
        std::fs::create_dir_all(root.path().join(UNIT_DIR)).expect("mkdir");
        b.install().expect("install");
        assert!(b.unit_path().exists());
        assert!(!std::fs::read_to_string(&rc).expect("rc").contains("reload"));
        b.uninstall().expect("uninstall");
        assert!(!b.unit_path().exists());
    }

    #[test]
    fn init_disables_the_go_tools_restore_line_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let rc = root.path().join("etc/rc.local");
        std::fs::create_dir_all(rc.parent().expect("dir")).expect("mkdir");
        let go = "#!/bin/sh -e\n/usr/local/bin/apiserver-proxy-tools -cmd reload -persistDir /root/.bcs\nexit 0\n";
        std::fs::write(&rc, go).expect("write");
        let boot = boot(root.path(), &[]);
        boot.disable_go_restore().expect("disable");
        let text = std::fs::read_to_string(&rc).expect("read");
        assert!(
            text.contains(&format!(
                "{GO_DISABLED}/usr/local/bin/apiserver-proxy-tools -cmd reload"
            )),
            "{text}"
        );
        assert!(text.ends_with("exit 0\n"), "{text}");
        boot.disable_go_restore().expect("again");
        assert_eq!(
            std::fs::read_to_string(&rc).expect("read"),
            text,
            "idempotent"
        );
        for (line, go) in [
            ("apiserver-proxy-tools --cmd=reload", true),
            ("/opt/bin/tool -vs 1.2.3.4:6443 -cmd reload", true),
            ("# apiserver-proxy-tools -cmd reload", false),
            ("apiserver-proxy-tools reload --state-dir /x", false),
            ("echo -cmd add", false),
        ] {
            assert_eq!(is_go_restore(line), go, "{line}");
        }
    }
}
