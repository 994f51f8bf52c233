//! One error type for the whole CLI: what went wrong and what to do about
//! it, printed as a single line `error: WHAT (WHAT TO DO)`.

use std::fmt;

use apiserver_proxy_manager::{DataplaneError as DpError, Error as ManagerError};
use apiserver_proxy_types::Endpoint;

/// Everything worked (and, for `status`, everything is healthy).
pub const EXIT_OK: u8 = 0;
/// The command failed: bad input found after parsing, or a problem that
/// stopped it (the message says what to do).
pub const EXIT_FAILURE: u8 = 1;
/// The command line could not be parsed (unknown flag or command, a value
/// that is not what the flag takes, something missing), as clap and most
/// Unix tools say it, and as the daemon does: nothing was attempted.
pub const EXIT_USAGE: u8 = 2;
/// `status` only: it could look, and something is unhealthy.
pub const EXIT_UNHEALTHY: u8 = 3;

/// A failure, said in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    what: String,
    todo: Option<String>,
}

impl Failure {
    pub fn new(what: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            todo: None,
        }
    }

    /// Adds what a person can do about it (shown in parentheses).
    pub fn todo(mut self, todo: impl Into<String>) -> Failure {
        self.todo = Some(todo.into());
        self
    }

    /// A backend of another address family than its virtual server's.
    pub fn family_mismatch(backend: Endpoint, vs: Endpoint) -> Failure {
        Failure::new(format!(
            "{backend} is {} but the virtual server {vs} is {}",
            backend.family(),
            vs.family()
        ))
        .todo("IPVS cannot mix address families in one virtual server: give backends of the virtual server's family")
    }

    /// Puts `context` in front of what went wrong.
    pub fn context(mut self, context: impl fmt::Display) -> Failure {
        self.what = format!("{context}: {}", self.what);
        self
    }
}

/// Folds any multi-line text (serde and kernel messages can have several)
/// into one line.
pub fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_line(&self.what))?;
        if let Some(todo) = &self.todo {
            write!(f, " ({})", one_line(todo))?;
        }
        Ok(())
    }
}

impl From<DpError> for Failure {
    fn from(e: DpError) -> Failure {
        // The dataplane's messages already say what to do where a person
        // can do something (modprobe, CAP_NET_ADMIN, a scheduler module).
        let f = Failure::new(e.to_string());
        match e {
            DpError::Kernel { .. }
            | DpError::Netlink { .. }
            | DpError::Io { .. }
            | DpError::Decode { .. }
            | DpError::Timeout { .. } => f.todo(
                "nothing was rolled back: what is in the kernel stays; run the command again",
            ),
            _ => f,
        }
    }
}

impl From<ManagerError> for Failure {
    fn from(e: ManagerError) -> Failure {
        match e {
            ManagerError::Dataplane(d) => d.into(),
            ManagerError::Locked { .. } => Failure::new(e.to_string()).todo(
                "a running bcs-apiserver-proxy daemon holds it for as long as it runs and manages \
                 this node's rules itself; stop it first to change them by hand",
            ),
            ManagerError::StateFile { .. } => Failure::new(e.to_string()).todo(
                "fix the file or move it away; `apiserver-proxy-tools init` writes a new one",
            ),
            ManagerError::Health(h) => Failure::new(format!("cannot probe the backends: {h}"))
                .todo("fix the --health-* options, or skip the probes with --no-probe"),
            other => Failure::new(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_with_what_to_do() {
        let f = Failure::new("bad\nthing").todo("do  this");
        assert_eq!(f.to_string(), "bad; thing (do  this)");
        let f = Failure::new("x").context("reading y");
        assert_eq!(f.to_string(), "reading y: x");
    }

    #[test]
    fn kernel_errors_say_what_to_do() {
        let f: Failure = DpError::IpvsUnavailable.into();
        assert!(f.to_string().contains("modprobe ip_vs"), "{f}");
        let f: Failure = DpError::PermissionDenied { op: "x" }.into();
        assert!(f.to_string().contains("CAP_NET_ADMIN"), "{f}");
        let f: Failure = ManagerError::Locked {
            path: "/s/lock".into(),
        }
        .into();
        assert!(f.to_string().contains("stop it first"), "{f}");
    }
}
