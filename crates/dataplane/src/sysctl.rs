//! The IPVS sysctls the proxy relies on.
//!
//! - `net.ipv4.vs.conntrack=1`: IPVS connections get conntrack entries, so a
//!   host firewall that matches on conntrack state (even only
//!   `ct state invalid drop`) does not drop the replies.
//! - `net.ipv4.vs.expire_nodest_conn=1`: a packet of a connection whose real
//!   server was deleted gets an immediate reset instead of being dropped
//!   silently (the client would hang).
//! - `net.ipv4.vs.expire_quiescent_template`: only matters with persistence.
//!
//! `/proc/sys/net` belongs to the network namespace of the thread that opens
//! the file, so these read and write the calling thread's namespace.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where sysctls live.
pub const PROC_SYS: &str = "/proc/sys";

/// An IPVS sysctl we read or set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvsSysctl {
    /// `net.ipv4.vs.conntrack`
    Conntrack,
    /// `net.ipv4.vs.expire_nodest_conn`
    ExpireNodestConn,
    /// `net.ipv4.vs.expire_quiescent_template`
    ExpireQuiescentTemplate,
}

impl IpvsSysctl {
    pub const ALL: [IpvsSysctl; 3] = [
        IpvsSysctl::Conntrack,
        IpvsSysctl::ExpireNodestConn,
        IpvsSysctl::ExpireQuiescentTemplate,
    ];

    /// The dotted name, as `sysctl` prints it.
    pub fn name(self) -> &'static str {
        match self {
            IpvsSysctl::Conntrack => "net.ipv4.vs.conntrack",
            IpvsSysctl::ExpireNodestConn => "net.ipv4.vs.expire_nodest_conn",
            IpvsSysctl::ExpireQuiescentTemplate => "net.ipv4.vs.expire_quiescent_template",
        }
    }

    /// The path below `/proc/sys`.
    pub fn relative_path(self) -> &'static str {
        match self {
            IpvsSysctl::Conntrack => "net/ipv4/vs/conntrack",
            IpvsSysctl::ExpireNodestConn => "net/ipv4/vs/expire_nodest_conn",
            IpvsSysctl::ExpireQuiescentTemplate => "net/ipv4/vs/expire_quiescent_template",
        }
    }

    fn read_op(self) -> &'static str {
        match self {
            IpvsSysctl::Conntrack => "read net.ipv4.vs.conntrack",
            IpvsSysctl::ExpireNodestConn => "read net.ipv4.vs.expire_nodest_conn",
            IpvsSysctl::ExpireQuiescentTemplate => "read net.ipv4.vs.expire_quiescent_template",
        }
    }

    fn write_op(self) -> &'static str {
        match self {
            IpvsSysctl::Conntrack => "set net.ipv4.vs.conntrack",
            IpvsSysctl::ExpireNodestConn => "set net.ipv4.vs.expire_nodest_conn",
            IpvsSysctl::ExpireQuiescentTemplate => "set net.ipv4.vs.expire_quiescent_template",
        }
    }
}

/// What [`Sysctls::ensure`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysctlChange {
    pub sysctl: IpvsSysctl,
    /// The value before the call.
    pub previous: i32,
    /// The value now.
    pub current: i32,
    /// Whether the file was written (only when the value differed).
    pub written: bool,
}

/// Access to the IPVS sysctls below a `/proc/sys` root (another root only
/// for tests).
#[derive(Debug, Clone)]
pub struct Sysctls {
    root: PathBuf,
}

impl Default for Sysctls {
    fn default() -> Self {
        Sysctls::new()
    }
}

impl Sysctls {
    /// The real ones, in `/proc/sys`.
    pub fn new() -> Sysctls {
        Sysctls {
            root: PathBuf::from(PROC_SYS),
        }
    }

    /// Sysctl files below `root` instead of `/proc/sys`.
    pub fn with_root(root: impl Into<PathBuf>) -> Sysctls {
        Sysctls { root: root.into() }
    }

    /// The file holding `sysctl`.
    pub fn path(&self, sysctl: IpvsSysctl) -> PathBuf {
        self.root.join(sysctl.relative_path())
    }

    /// The current value.
    pub fn read(&self, sysctl: IpvsSysctl) -> Result<i32> {
        let path = self.path(sysctl);
        let mut text = String::new();
        OpenOptions::new()
            .read(true)
            .open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| io_error(sysctl, sysctl.read_op(), &path, e))?;
        text.trim().parse::<i32>().map_err(|_| Error::SysctlValue {
            name: sysctl.name(),
            value: text.trim().to_owned(),
        })
    }

    /// Sets `sysctl` to `value`, writing only if it differs; reports the
    /// previous value.
    pub fn ensure(&self, sysctl: IpvsSysctl, value: i32) -> Result<SysctlChange> {
        let previous = self.read(sysctl)?;
        if previous == value {
            return Ok(SysctlChange {
                sysctl,
                previous,
                current: value,
                written: false,
            });
        }
        let path = self.path(sysctl);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{value}\n").as_bytes()))
            .map_err(|e| io_error(sysctl, sysctl.write_op(), &path, e))?;
        let current = self.read(sysctl)?;
        if current != value {
            return Err(Error::SysctlValue {
                name: sysctl.name(),
                value: format!("{current} after writing {value}"),
            });
        }
        tracing::info!(sysctl = sysctl.name(), previous, value, "set sysctl");
        Ok(SysctlChange {
            sysctl,
            previous,
            current,
            written: true,
        })
    }
}

fn io_error(sysctl: IpvsSysctl, op: &'static str, path: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::IpvsSysctlMissing {
            name: sysctl.name(),
            path: path.display().to_string(),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied { op },
        // EROFS: /proc/sys mounted read-only (an unprivileged container,
        // even with CAP_NET_ADMIN). Not a missing capability: say so.
        _ if e.raw_os_error() == Some(30) => Error::SysctlReadOnly {
            name: sysctl.name(),
        },
        _ => Error::Sysctl {
            name: sysctl.name(),
            path: path.display().to_string(),
            source: e,
        },
    }
}

/// Reads an IPVS sysctl of the calling thread's network namespace.
pub fn read_ipvs_sysctl(sysctl: IpvsSysctl) -> Result<i32> {
    Sysctls::new().read(sysctl)
}

/// Sets an IPVS sysctl of the calling thread's network namespace, writing
/// only if it differs.
pub fn ensure_ipvs_sysctl(sysctl: IpvsSysctl, value: i32) -> Result<SysctlChange> {
    Sysctls::new().ensure(sysctl, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(values: &[(IpvsSysctl, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("net/ipv4/vs")).expect("mkdir");
        for (s, v) in values {
            std::fs::write(dir.path().join(s.relative_path()), v).expect("write");
        }
        dir
    }

    #[test]
    fn ensure_reports_previous_and_writes_only_when_different() {
        // No trailing newline: a write would add one, so the file shows
        // whether it was written.
        let dir = fake_root(&[
            (IpvsSysctl::Conntrack, "0"),
            (IpvsSysctl::ExpireNodestConn, "1"),
        ]);
        let s = Sysctls::with_root(dir.path());
        assert_eq!(s.read(IpvsSysctl::Conntrack).expect("read"), 0);

        let same = s.ensure(IpvsSysctl::ExpireNodestConn, 1).expect("ensure");
        assert_eq!((same.previous, same.current, same.written), (1, 1, false));
        let text = std::fs::read_to_string(s.path(IpvsSysctl::ExpireNodestConn)).expect("read");
        assert_eq!(text, "1", "not rewritten");

        let changed = s.ensure(IpvsSysctl::Conntrack, 1).expect("ensure");
        assert_eq!(
            (changed.previous, changed.current, changed.written),
            (0, 1, true)
        );
        let text = std::fs::read_to_string(s.path(IpvsSysctl::Conntrack)).expect("read");
        assert_eq!(text, "1\n");
        let again = s.ensure(IpvsSysctl::Conntrack, 1).expect("ensure");
        assert!(!again.written);
    }

    #[test]
    fn a_missing_file_means_ipvs_is_not_loaded() {
        let dir = fake_root(&[]);
        let s = Sysctls::with_root(dir.path());
        let err = s
            .read(IpvsSysctl::ExpireQuiescentTemplate)
            .expect_err("missing");
        assert!(matches!(err, Error::IpvsSysctlMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("modprobe ip_vs"), "{msg}");
        assert!(
            msg.contains("net.ipv4.vs.expire_quiescent_template"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = fake_root(&[(IpvsSysctl::Conntrack, "yes")]);
        let err = Sysctls::with_root(dir.path())
            .read(IpvsSysctl::Conntrack)
            .expect_err("garbage");
        assert!(matches!(err, Error::SysctlValue { .. }), "{err:?}");
    }

    #[test]
    fn io_errors_map_to_actionable_errors() {
        let path = Path::new("/proc/sys/net/ipv4/vs/conntrack");
        let c = IpvsSysctl::Conntrack;
        let denied = io_error(c, c.write_op(), path, io::Error::from_raw_os_error(13));
        assert!(
            matches!(denied, Error::PermissionDenied { .. }),
            "{denied:?}"
        );
        assert!(denied.to_string().contains("CAP_NET_ADMIN"), "{denied}");
        let eperm = io_error(c, c.write_op(), path, io::Error::from_raw_os_error(1));
        assert!(matches!(eperm, Error::PermissionDenied { .. }), "{eperm:?}");
        let rofs = io_error(c, c.write_op(), path, io::Error::from_raw_os_error(30));
        assert!(matches!(rofs, Error::SysctlReadOnly { .. }), "{rofs:?}");
        assert!(rofs.to_string().contains("read-only"), "{rofs}");
        let missing = io_error(c, c.read_op(), path, io::Error::from_raw_os_error(2));
        assert!(
            matches!(missing, Error::IpvsSysctlMissing { .. }),
            "{missing:?}"
        );
        let other = io_error(c, c.read_op(), path, io::Error::from_raw_os_error(5));
        assert!(matches!(other, Error::Sysctl { .. }), "{other:?}");
    }

    #[test]
    fn names_and_paths_agree() {
        for s in IpvsSysctl::ALL {
            assert_eq!(s.name().replace('.', "/"), s.relative_path());
            assert!(Sysctls::new().path(s).starts_with("/proc/sys/net/ipv4/vs"));
        }
    }
}
