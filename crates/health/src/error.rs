//! The crate's one error type: configuration problems found before any
//! probe runs. What happens to a backend is never an `Error`; it is a
//! [`crate::Reason`] on a [`crate::HealthEvent`].

use std::path::PathBuf;

/// Why a checker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("health mode {0:?} is unknown: use https, http or tcp")]
    InvalidMode(String),
    #[error("health check path {0:?} is not an origin-form path: write it like /readyz")]
    InvalidPath(String),
    #[error("health check configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "TLS server name {0:?} is neither a DNS name nor an IP address \
         (apiserver certificates carry `kubernetes`)"
    )]
    InvalidServerName(String),
    #[error(
        "cannot read the cluster CA {path}: {source}; set the CA file, run in a pod \
         (service-account CA), or, for debugging only, skip verification"
    )]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the cluster CA file {path} holds no usable certificate: {detail}")]
    CaInvalid { path: PathBuf, detail: String },
    #[error("cannot read the client certificate {path}: {source}")]
    ClientCertFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("client certificate {cert} and key {key} cannot be used together: {source}")]
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[source] rustls::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable name for the kind of failure, for metric labels and
    /// matching in logs (the message may change, this does not).
    pub fn label(&self) -> &'static str {
        match self {
            Error::InvalidMode(_) => "invalid_mode",
            Error::InvalidPath(_) => "invalid_path",
            Error::InvalidConfig(_) => "invalid_config",
            Error::InvalidServerName(_) => "invalid_server_name",
            Error::CaFile { .. } => "ca_file",
            Error::CaInvalid { .. } => "ca_invalid",
            Error::ClientCertFile { .. } => "client_cert_file",
            Error::ClientCert { .. } => "client_cert",
            Error::Tls(_) => "tls",
        }
    }
}
