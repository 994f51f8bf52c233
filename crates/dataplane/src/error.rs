use std::io;

/// Everything that can go wrong while programming the kernel.
///
/// Each message says what a person can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the kernel has no IPVS (generic netlink family \"IPVS\" not found): load it with \
         `modprobe ip_vs`, or use a kernel built with CONFIG_IP_VS"
    )]
    IpvsUnavailable,

    #[error(
        "{op}: permission denied: bcs-apiserver-proxy needs CAP_NET_ADMIN (run as root, or grant the capability)"
    )]
    PermissionDenied { op: &'static str },

    #[error("{op}: netlink socket error: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{op}: the kernel answered errno {errno} ({msg})")]
    Kernel {
        op: &'static str,
        errno: i32,
        msg: String,
    },

    /// The kernel did not answer a netlink request in time.
    #[error("{op}: the kernel did not answer within {after:?}")]
    Timeout {
        op: &'static str,
        after: std::time::Duration,
    },

    #[error("{op}: netlink error: {detail}")]
    Netlink { op: &'static str, detail: String },

    #[error(
        "invalid interface name {name:?}: {reason} (a Linux interface name is 1 to 15 bytes, \
         not \".\" or \"..\", without '/', ':', NUL or whitespace)"
    )]
    InvalidInterfaceName { name: String, reason: &'static str },

    #[error(
        "interface {name:?} does not exist: create it first (ensure_dummy) or fix the configured name"
    )]
    InterfaceNotFound { name: String },

    #[error(
        "the kernel cannot create dummy interfaces: load the module with `modprobe dummy`, \
         or use a kernel built with CONFIG_DUMMY (with the nftables dataplane, \
         `--vip-mode route` (vipMode: route) needs no dummy interface)"
    )]
    DummyUnavailable,

    #[error("{op}: {detail}")]
    InvalidArgument { op: &'static str, detail: String },

    #[error(
        "sysctl {name} does not exist ({path}): IPVS is not loaded; load it with \
         `modprobe ip_vs`, or use a kernel built with CONFIG_IP_VS"
    )]
    IpvsSysctlMissing { name: &'static str, path: String },

    #[error(
        "cannot set sysctl {name}: /proc/sys is read-only here (an unprivileged \
         container); set it on the node instead: `apiserver-proxy-tools init` or \
         `reload` do, or `sysctl -w {name}=VALUE`"
    )]
    SysctlReadOnly { name: &'static str },

    #[error("sysctl {name} ({path}): {source}")]
    Sysctl {
        name: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("sysctl {name}: unexpected value {value:?} (expected an integer)")]
    SysctlValue { name: &'static str, value: String },

    #[error(
        "{op}: the kernel has no IPVS scheduler {scheduler:?}: load it with `modprobe {module}`, \
         or configure a scheduler the kernel has (rr, wrr, lc, wlc, sh, ...)"
    )]
    IpvsSchedulerUnavailable {
        op: &'static str,
        scheduler: String,
        module: String,
    },

    /// The object to create is already there (`EEXIST`).
    #[error("{op}: {what} already exists")]
    Exists { op: &'static str, what: String },

    /// The object to change or delete is not there (`ESRCH`, or `ENOENT` for
    /// a destination).
    #[error("{op}: {what} does not exist")]
    NotFound { op: &'static str, what: String },

    /// A netlink reply the codec could not make sense of (truncated,
    /// malformed, or missing a required attribute).
    #[error("{op}: malformed netlink reply: {detail}")]
    Decode { op: &'static str, detail: String },

    /// The kernel cannot destroy sockets on request (`EOPNOTSUPP` from
    /// SOCK_DESTROY): built without CONFIG_INET_DIAG_DESTROY, or the
    /// `inet_diag`/`tcp_diag` modules are missing.
    #[error(
        "cannot cut the node's connections to a dead apiserver: the kernel lacks \
         CONFIG_INET_DIAG_DESTROY (or the tcp_diag module); clients will notice only \
         through their own timeouts"
    )]
    SockDestroyUnsupported,

    /// A line of /proc/net/ip_vs_conn we could not read.
    #[error("cannot parse the IPVS connection table, line {line}: {detail}")]
    ConnTable { line: usize, detail: String },

    /// The interface exists and is not a dummy: a VIP placed on a real or
    /// virtual link would be answered for on its network (ARP, NDP).
    #[error(
        "interface {name:?} exists and is {kind}, not a dummy interface: a VIP on it would be \
         announced on its network; give a name of our own (the default is apiproxy0)"
    )]
    NotDummy { name: String, kind: String },

    /// A line of /proc/net/tcp or tcp6 we could not read.
    #[error("cannot parse the socket table {file}, line {line}: {detail}")]
    SocketTable {
        file: &'static str,
        line: usize,
        detail: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable name for the kind of failure, for metric labels and
    /// matching in logs (the message may change, this does not).
    pub fn label(&self) -> &'static str {
        match self {
            Error::IpvsUnavailable => "ipvs_unavailable",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::Io { .. } => "io",
            Error::Kernel { .. } => "kernel",
            Error::Timeout { .. } => "timeout",
            Error::Netlink { .. } => "netlink",
            Error::InvalidInterfaceName { .. } => "invalid_interface_name",
            Error::InterfaceNotFound { .. } => "interface_not_found",
            Error::DummyUnavailable => "dummy_unavailable",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::IpvsSysctlMissing { .. } => "ipvs_sysctl_missing",
            Error::SysctlReadOnly { .. } => "sysctl_read_only",
            Error::Sysctl { .. } => "sysctl",
            Error::SysctlValue { .. } => "sysctl_value",
            Error::IpvsSchedulerUnavailable { .. } => "ipvs_scheduler_unavailable",
            Error::Exists { .. } => "exists",
            Error::NotFound { .. } => "not_found",
            Error::Decode { .. } => "decode",
            Error::SockDestroyUnsupported => "sock_destroy_unsupported",
            Error::ConnTable { .. } => "conn_table",
            Error::SocketTable { .. } => "socket_table",
            Error::NotDummy { .. } => "not_dummy",
        }
    }
}
