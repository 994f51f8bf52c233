//! The one error type of the discovery crate.

use std::path::PathBuf;

/// Everything that can go wrong in discovery. Most of these are logged and
/// survived (the current desired set stays); only configuration errors are
/// returned from [`crate::Discovery::start`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovery configuration: {0}")]
    Config(String),

    #[error("cannot build a kube client for {endpoint}: {source}")]
    Client {
        endpoint: String,
        #[source]
        source: kube::Error,
    },

    #[error("backend cache {path}: {source}")]
    CacheIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "backend cache {path} is not valid JSON or not the expected shape ({reason}); ignoring it"
    )]
    CacheCorrupt { path: PathBuf, reason: String },

    #[error(
        "backend cache {path} is not a bcs-apiserver-proxy backend cache (kind {found:?}, expected {expected:?}); ignoring it"
    )]
    CacheForeign {
        path: PathBuf,
        found: Option<String>,
        expected: &'static str,
    },

    #[error(
        "backend cache {path} has version {found}, this build reads version {supported}; ignoring it"
    )]
    CacheVersion {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
}

impl Error {
    /// A stable name for the kind of failure, for metric labels and
    /// matching in logs (the message may change, this does not).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Config(..) => "config",
            Error::Client { .. } => "client",
            Error::CacheIo { .. } => "cache_io",
            Error::CacheCorrupt { .. } => "cache_corrupt",
            Error::CacheForeign { .. } => "cache_foreign",
            Error::CacheVersion { .. } => "cache_version",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
