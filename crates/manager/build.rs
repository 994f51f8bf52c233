//! Records what the binaries say about their build (`--version`,
//! `apiserver_proxy_build_info`): the git revision of the checkout and the
//! compiler's version. Neither is fatal: outside a git checkout, or without
//! git, the revision is `unknown`.

use std::path::Path;
use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = root.join(".git");
    // A new commit or checkout moves HEAD or the branch it names. (Not the
    // index: every `git add` would rebuild the manager and both binaries;
    // `-dirty` is therefore as of the last commit or checkout built.)
    for watched in ["HEAD", "packed-refs", "refs/heads"] {
        let path = git.join(watched);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let root = root.to_string_lossy().into_owned();
    let revision = output("git", &["-C", &root, "rev-parse", "--short=12", "HEAD"])
        .map(|rev| {
            // Uncommitted changes to tracked files: say so.
            let dirty = output(
                "git",
                &["-C", &root, "status", "--porcelain", "--untracked-files=no"],
            )
            .is_some();
            if dirty { format!("{rev}-dirty") } else { rev }
        })
        .unwrap_or_else(|| "unknown".to_string());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let compiler = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=APISERVER_PROXY_GIT_REVISION={revision}");
    println!("cargo:rustc-env=APISERVER_PROXY_RUSTC_VERSION={compiler}");
}
