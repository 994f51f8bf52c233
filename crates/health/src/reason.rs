//! What a backend is ([`State`]) and why ([`Reason`]), plus the failure
//! kinds counted for metrics ([`FailureKind`]).

use std::fmt;
use std::io;

/// The state of one backend, as reported on the event channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Alive, and readiness answered a success status (in `tcp` mode: the
    /// connection is up). In service.
    Ready,
    /// Alive (it speaks TLS/HTTP) but readiness says no, or readiness timed
    /// out: drain it. Out of service, distinct from dead.
    NotReady,
    /// Alive, readiness unknown: `/readyz` answered 401/403 because
    /// anonymous requests are refused. Keep it in service: treating this as
    /// a failure would take every backend of such a cluster down.
    Unknown,
    /// Not reachable: refused, reset and not coming back, silent (keepalive
    /// or connect timeout), or not speaking verifiable TLS.
    Dead,
}

impl State {
    /// Whether traffic should go to a backend in this state.
    pub fn in_service(self) -> bool {
        matches!(self, State::Ready | State::Unknown)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Ready => "alive+ready",
            State::NotReady => "alive+not-ready",
            State::Unknown => "alive+readiness-unknown",
            State::Dead => "dead",
        })
    }
}

/// Which step of talking to a backend ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Connect,
    TlsHandshake,
    Request,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "TCP connect",
            Phase::TlsHandshake => "TLS handshake",
            Phase::Request => "readiness request",
        })
    }
}

/// A TLS failure, sorted by what a person has to fix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlsProblem {
    /// The certificate is trusted but does not carry the verification name:
    /// set `server_name` to a name the certificate has.
    NameMismatch { expected: String, detail: String },
    /// The certificate is not signed by the configured CA: wrong CA file,
    /// or not the apiserver you think.
    UnknownCa { ca: String, detail: String },
    /// The certificate has expired or is not valid yet.
    Validity(String),
    /// The server aborted the handshake (for example it rejected or
    /// required a client certificate).
    Alert(String),
    /// Anything else rustls reports.
    Other(String),
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsProblem::NameMismatch { expected, detail } => write!(
                f,
                "certificate is not valid for the name {expected:?} ({detail}); set the TLS server name to one the certificate carries"
            ),
            TlsProblem::UnknownCa { ca, detail } => write!(
                f,
                "certificate is not signed by the cluster CA {ca} ({detail})"
            ),
            TlsProblem::Validity(d) => write!(f, "certificate is expired or not yet valid ({d})"),
            TlsProblem::Alert(d) => write!(f, "server aborted the TLS handshake: {d}"),
            TlsProblem::Other(d) => write!(f, "TLS error: {d}"),
        }
    }
}

/// Why a backend is in its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `GET path` answered this status (success, 401/403, or failing).
    Status(u16),
    /// `tcp` mode: the connection is up.
    Connected,
    /// The TCP connection was refused (RST to our SYN).
    Refused,
    /// The connection was reset (or aborted, or a write hit a broken pipe).
    Reset,
    /// The backend closed the connection (FIN).
    Closed,
    /// A step did not finish within its timeout.
    Timeout(Phase),
    /// The kernel gave up on the established connection: heartbeat PINGs,
    /// requests or keepalive probes went unacknowledged until
    /// `TCP_USER_TIMEOUT` (black hole).
    KeepaliveTimeout,
    /// A readiness request went unacknowledged by the backend's kernel
    /// through repeated retransmissions: the host went silent while the
    /// request was in flight (black hole), which a slow apiserver never
    /// causes.
    Unacknowledged,
    /// No route, host or network unreachable.
    Unreachable(String),
    /// TLS failed; see [`TlsProblem`].
    Tls(TlsProblem),
    /// The backend answered something that is not HTTP/1.1 or HTTP/2.
    Protocol(String),
    /// Any other socket error.
    Io(String),
    /// The persistent connection was lost (`cause`) and the immediate
    /// reconnect that confirms it failed too (`confirm`).
    Lost {
        cause: Box<Reason>,
        confirm: Box<Reason>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Status(s) => write!(f, "readiness answered HTTP {s}"),
            Reason::Connected => f.write_str("connected"),
            Reason::Refused => f.write_str("connection refused"),
            Reason::Reset => f.write_str("connection reset"),
            Reason::Closed => f.write_str("connection closed by the backend"),
            Reason::Timeout(p) => write!(f, "{p} timed out"),
            Reason::KeepaliveTimeout => f.write_str(
                "backend went silent (heartbeat or keepalive unacknowledged: TCP user timeout)",
            ),
            Reason::Unacknowledged => f.write_str(
                "backend went silent (readiness request retransmitted without acknowledgement)",
            ),
            Reason::Unreachable(d) => write!(f, "unreachable: {d}"),
            Reason::Tls(p) => p.fmt(f),
            Reason::Protocol(d) => write!(f, "HTTP protocol error: {d}"),
            Reason::Io(d) => write!(f, "socket error: {d}"),
            Reason::Lost { cause, confirm } => {
                write!(f, "{cause}, and reconnecting failed: {confirm}")
            }
        }
    }
}

/// Failure kinds, for counters. A small closed set suits metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    Refused,
    Reset,
    Closed,
    Timeout,
    KeepaliveTimeout,
    Unacknowledged,
    Unreachable,
    Tls,
    HttpStatus,
    Protocol,
    Io,
}

impl FailureKind {
    /// Every kind, for metric series that must be removed together.
    pub const ALL: [FailureKind; 11] = [
        FailureKind::Refused,
        FailureKind::Reset,
        FailureKind::Closed,
        FailureKind::Timeout,
        FailureKind::KeepaliveTimeout,
        FailureKind::Unacknowledged,
        FailureKind::Unreachable,
        FailureKind::Tls,
        FailureKind::HttpStatus,
        FailureKind::Protocol,
        FailureKind::Io,
    ];

    /// A stable lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Reset => "reset",
            FailureKind::Closed => "closed",
            FailureKind::Timeout => "timeout",
            FailureKind::KeepaliveTimeout => "keepalive_timeout",
            FailureKind::Unacknowledged => "unacknowledged",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Tls => "tls",
            FailureKind::HttpStatus => "http_status",
            FailureKind::Protocol => "protocol",
            FailureKind::Io => "io",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reason {
    /// The counter this reason belongs to when it is a failure. `Status` is
    /// always mapped to `HttpStatus`; whether a status is a failure depends
    /// on the configuration, so callers decide that.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        Some(match self {
            Reason::Connected => return None,
            Reason::Status(_) => FailureKind::HttpStatus,
            Reason::Refused => FailureKind::Refused,
            Reason::Reset => FailureKind::Reset,
            Reason::Closed => FailureKind::Closed,
            Reason::Timeout(_) => FailureKind::Timeout,
            Reason::KeepaliveTimeout => FailureKind::KeepaliveTimeout,
            Reason::Unacknowledged => FailureKind::Unacknowledged,
            Reason::Unreachable(_) => FailureKind::Unreachable,
            Reason::Tls(_) => FailureKind::Tls,
            Reason::Protocol(_) => FailureKind::Protocol,
            Reason::Io(_) => FailureKind::Io,
            Reason::Lost { confirm, .. } => return confirm.failure_kind(),
        })
    }

    /// Sorts a socket error. `during` is the step under way; `None` means
    /// the connection was established, where a kernel timeout is keepalive
    /// or `TCP_USER_TIMEOUT` giving up.
    pub(crate) fn from_io(e: &io::Error, during: Option<Phase>, ca: &str, name: &str) -> Reason {
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Reason::Tls(TlsProblem::from_rustls(tls, ca, name));
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Reason::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Reason::Reset,
            io::ErrorKind::UnexpectedEof => Reason::Closed,
            io::ErrorKind::TimedOut => during.map_or(Reason::KeepaliveTimeout, Reason::Timeout),
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Reason::Unreachable(e.to_string())
            }
            _ => Reason::Io(e.to_string()),
        }
    }

    /// The socket error behind a hyper error, sorted; `None` when hyper's
    /// error is its own (a close, a protocol error).
    pub(crate) fn from_hyper_io(e: &hyper::Error, ca: &str, name: &str) -> Option<Reason> {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                return Some(Reason::from_io(io, None, ca, name));
            }
            source = s.source();
        }
        None
    }

    /// Sorts an error from hyper's client connection or request.
    pub(crate) fn from_hyper(e: &hyper::Error, ca: &str, name: &str) -> Reason {
        if let Some(r) = Reason::from_hyper_io(e, ca, name) {
            return r;
        }
        if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
            Reason::Closed
        } else {
            Reason::Protocol(e.to_string())
        }
    }
}

impl TlsProblem {
    pub(crate) fn from_rustls(e: &rustls::Error, ca: &str, name: &str) -> TlsProblem {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::NameMismatch {
                    expected: name.to_string(),
                    detail: format!("{c:?}"),
                },
                C::UnknownIssuer | C::BadSignature => TlsProblem::UnknownCa {
                    ca: ca.to_string(),
                    detail: format!("{c:?}"),
                },
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsProblem::Validity(format!("{c:?}")),
                other => TlsProblem::Other(format!("invalid certificate: {other:?}")),
            },
            rustls::Error::AlertReceived(a) => TlsProblem::Alert(format!("{a:?}")),
            other => TlsProblem::Other(other.to_string()),
        }
    }
}
