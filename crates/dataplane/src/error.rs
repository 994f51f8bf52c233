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

    #[error("{op}: netlink error: {detail}")]
    Netlink { op: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
