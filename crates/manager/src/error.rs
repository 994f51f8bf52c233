/// What can go wrong in the manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dataplane(#[from] apiserver_proxy_dataplane::Error),

    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    #[error(
        "another bcs-apiserver-proxy or apiserver-proxy-tools holds the lock {path}: \
         only one may change this node's rules at a time"
    )]
    Locked { path: String },

    #[error("health checks: {0}")]
    Health(#[from] apiserver_proxy_health::Error),

    #[error("discovery: {0}")]
    Discovery(#[from] apiserver_proxy_discovery::Error),

    /// A task on the blocking pool panicked (the kernel handle it held is
    /// lost: the daemon exits and restarts, rules in place).
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    #[error("cannot start an async runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error("{path}: {detail}")]
    StateFile { path: String, detail: String },

    /// The outside control-plane VIP cannot start (its election's settings
    /// or clients).
    #[error("control-plane VIP: {detail}")]
    ControlPlane { detail: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable name for the kind of failure, for metric labels (the
    /// message may change, this does not). A dependency's error gives its
    /// own label ("kernel", "timeout", "ca_file"...): the metric's `during`
    /// label already says which step failed.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Dataplane(e) => e.label(),
            Error::Config(_) => "config",
            Error::Locked { .. } => "locked",
            Error::Health(e) => e.label(),
            Error::Discovery(e) => e.label(),
            Error::Task(_) => "task",
            Error::Runtime(_) => "runtime",
            Error::StateFile { .. } => "state_file",
            Error::ControlPlane { .. } => "control_plane",
            Error::Io { .. } => "io",
        }
    }
}
