//! Writing a file on the node so that nothing else can be hurt and nothing
//! can be half-written: the one way every crate writes its files (the state
//! file, the discovery cache, the boot unit, rc.local, the installed CLI).
//!
//! The folders these files live in can be writable by others (a hostPath
//! the pod shares), so a fixed temporary name is a trap: a symlink planted
//! there would be followed and its target truncated. The temporary file
//! gets a new random name, created exclusively (`O_EXCL`, never following
//! a link), is synced, renamed over the target, and the folder is synced. A
//! crash at any point leaves the old file or the new one, plus at worst a
//! temporary file that [`remove_stale_temp_files`] deletes.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The suffix of temporary files: `.NAME.<random>.tmp`.
const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `path` atomically, creating its folder if needed. With
/// `mode`, the file gets those permission bits (before it appears under its
/// name); without, the temporary file's own (0600).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path)?)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(&dir)?;
    // On any error below, dropping `tmp` removes the temporary file.
    tmp.write_all(bytes)?;
    if let Some(mode) = mode {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(&dir).and_then(|d| d.sync_all())
}

/// Deletes temporary files a crashed [`write_atomic`] left next to `path`
/// (`.NAME.<random>.tmp`, and `.NAME.tmp.<pid>` from older builds). Call it
/// only while nothing writes the same path. Returns how many were removed;
/// errors are ignored (they only leave a small stray file). Only plain
/// files and symlinks are removed (removing a symlink never touches its
/// target), never a folder.
pub fn remove_stale_temp_files(path: &Path) -> usize {
    let Ok(prefix) = temp_prefix(path) else {
        return 0;
    };
    let (Some(prefix), Some(file_name)) =
        (prefix.to_str(), path.file_name().and_then(|n| n.to_str()))
    else {
        return 0;
    };
    let old_prefix = format!(".{file_name}.tmp.");
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = (name.len() > prefix.len() + TEMP_SUFFIX.len()
            && name.starts_with(prefix)
            && name.ends_with(TEMP_SUFFIX))
            || name
                .strip_prefix(&old_prefix)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        let plain = entry.file_type().is_ok_and(|t| !t.is_dir());
        if ours && plain && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The name prefix of temporary files for `path`: `.NAME.`.
fn temp_prefix(path: &Path) -> io::Result<OsString> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let mut prefix = OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one", None).expect("write");
        write_atomic(&path, b"two", Some(0o644)).expect("write again");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
        assert_eq!(names(&dir.path().join("sub")), ["state.json"]);
    }

    /// The old fixed names (`NAME.tmp`, `.NAME.tmp.PID`,
    /// `NAME.apiserver-proxy-tools.tmp`) with a symlink planted on each:
    /// none is followed, the victim keeps its bytes.
    #[test]
    fn never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("write victim");
        for planted in [
            "state.tmp".to_string(),
            format!(".state.json.tmp.{}", std::process::id()),
            "state.apiserver-proxy-tools.tmp".to_string(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(planted)).expect("symlink");
        }
        write_atomic(&path, b"new", Some(0o600)).expect("write");
        assert_eq!(fs::read(&victim).expect("read victim"), b"precious");
        assert!(
            fs::symlink_metadata(&path)
                .expect("stat")
                .file_type()
                .is_file()
        );
    }

    #[test]
    fn a_path_that_is_a_folder_fails_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("taken");
        fs::create_dir(&path).expect("mkdir");
        fs::write(path.join("inside"), b"x").expect("write");
        assert!(write_atomic(&path, b"new", None).is_err());
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn stale_temp_files_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backends.json");
        write_atomic(&path, b"{}", None).expect("write");
        let stale = [".backends.json.a1B2c3.tmp", ".backends.json.tmp.4242"];
        let kept = [
            ".backends.json.tmp",
            ".other.json.a1B2c3.tmp",
            "notes.tmp",
            ".backends.json.tmp.x1",
        ];
        for name in stale.iter().chain(kept.iter()) {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        fs::create_dir(dir.path().join(".backends.json.dir.tmp")).expect("mkdir");
        assert_eq!(remove_stale_temp_files(&path), stale.len());
        let mut want: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
        want.push(".backends.json.dir.tmp".into());
        want.push("backends.json".into());
        want.sort();
        assert_eq!(names(dir.path()), want);
    }
}
