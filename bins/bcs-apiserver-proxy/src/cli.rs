//! Command line: flags, environment, and the Go version's flag spellings.
//!
//! Precedence, lowest first: built-in defaults < config file < environment
//! (`APISERVER_PROXY_*`) < flags. clap gives each flag its environment
//! variable, so "not given" (None) means "keep what the file said".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apiserver_proxy_manager::config::{
    self, Config, DataplaneChoice, HealthMode, LogFormat, VipMode, VirtualServerConfig,
};
use apiserver_proxy_manager::shell::Shell;
use apiserver_proxy_types::Endpoint;
use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "Node-local load balancer for the kube-apiservers.

Keeps an IPVS virtual server (a VIP such as 10.103.97.2:6443 on this node)
pointed at the healthy apiservers: it watches the cluster's default/kubernetes
EndpointSlices, probes every apiserver over a persistent connection, and
changes the kernel's rules within milliseconds of a failure. Rules stay in the
kernel when the daemon stops, so an upgrade never cuts the node off the API.";

const AFTER: &str = "Examples:
  bcs-apiserver-proxy --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --rs 192.168.1.11:6443
  bcs-apiserver-proxy --config /etc/bcs-apiserver-proxy/config.yaml
  bcs-apiserver-proxy config default > config.yaml
  bcs-apiserver-proxy config check config.yaml

The Go version's flags (-f, --virtualAddress, --lvsScheduler, --managerInterval,
--ipvsPersistDir) and its JSON config file are accepted; see docs/migration.md.

Exit codes: 0 success (a SIGTERM stop too); 1 the daemon or the command failed
(the message says why); 2 the command line could not be parsed.";

#[derive(Parser, Debug)]
#[command(name = "bcs-apiserver-proxy", version = apiserver_proxy_manager::build::LONG_VERSION, about = ABOUT, long_about = ABOUT, after_help = AFTER)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (bash, zsh or fish).
    #[command(after_help = "Install:
  bcs-apiserver-proxy completions bash > /etc/bash_completion.d/bcs-apiserver-proxy")]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the annotated default configuration (YAML).
    Default,
    /// Validate a configuration file and name every problem with its path.
    Check {
        /// The file: our YAML, or the Go version's JSON.
        file: PathBuf,
    },
    /// Print the configuration the daemon would run with, after the file,
    /// the environment and the flags given here.
    Show {
        #[command(flatten)]
        run: Box<RunArgs>,
    },
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Configuration file (YAML, or the Go version's JSON).
    #[arg(
        short = 'c',
        long,
        short_alias = 'f',
        env = "APISERVER_PROXY_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// The virtual server, VIP:PORT ([ADDR]:PORT for IPv6). Replaces the
    /// file's virtual servers.
    #[arg(
        long,
        alias = "virtualAddress",
        env = "APISERVER_PROXY_VS",
        value_name = "VIP:PORT"
    )]
    pub vs: Option<Endpoint>,

    /// A seed apiserver, IP:PORT. Repeat for each; the cluster's own list
    /// replaces the seeds once it answers.
    #[arg(
        long,
        env = "APISERVER_PROXY_RS",
        value_delimiter = ',',
        value_name = "IP:PORT"
    )]
    pub rs: Vec<Endpoint>,

    /// IPVS scheduler (kernel module ip_vs_NAME) [default: rr].
    #[arg(
        long,
        alias = "lvsScheduler",
        env = "APISERVER_PROXY_SCHEDULER",
        value_name = "NAME"
    )]
    pub scheduler: Option<String>,

    /// Dummy interface holding the VIP [default: apiproxy0].
    #[arg(long, env = "APISERVER_PROXY_INTERFACE", value_name = "NAME")]
    pub interface: Option<String>,

    /// How the VIP is reachable: `address` on the dummy interface (workers),
    /// or a `route` only (control-plane nodes that are their own backend)
    /// [default: address].
    #[arg(long, env = "APISERVER_PROXY_VIP_MODE", value_enum)]
    pub vip_mode: Option<VipMode>,

    /// What balances the VIP: `ipvs`, `nftables`, or `auto` (IPVS where the
    /// kernel has it, nftables otherwise; the log says which and why)
    /// [default: auto].
    #[arg(long, value_enum, env = "APISERVER_PROXY_DATAPLANE")]
    pub dataplane: Option<DataplaneChoice>,

    /// Lock, cache and state folder [default: /var/lib/bcs-apiserver-proxy].
    #[arg(
        long,
        alias = "ipvsPersistDir",
        env = "APISERVER_PROXY_STATE_DIR",
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,

    /// Address of /metrics, /healthz and /readyz [default: 0.0.0.0:8004].
    #[arg(long, env = "APISERVER_PROXY_METRICS_ADDR", value_name = "ADDR:PORT", value_parser = config::parse_listen_addr)]
    pub metrics_addr: Option<SocketAddr>,

    /// kubeconfig to watch the cluster with [default: in-cluster credentials].
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Compare the kernel with the desired state this often [default: 250ms].
    #[arg(long, env = "APISERVER_PROXY_RESYNC_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub resync_interval: Option<Duration>,

    /// The Go version's loop interval, in seconds (sets --resync-interval).
    #[arg(long = "managerInterval", hide = true, value_name = "SECONDS")]
    pub manager_interval: Option<u64>,

    /// Weight-0 backends are deleted after this long even with connections
    /// [default: 30s].
    #[arg(long, env = "APISERVER_PROXY_DRAIN_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Option<Duration>,

    #[command(flatten)]
    pub health: HealthArgs,

    #[command(flatten)]
    pub control_plane: ControlPlaneArgs,

    /// Log format [default: text].
    #[arg(long, env = "APISERVER_PROXY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// What to log: a level (error, warn, info, debug, trace) or a filter
    /// per module, such as `info,apiserver_proxy_health=debug`
    /// [default: info].
    #[arg(long, env = "APISERVER_PROXY_LOG", value_name = "LEVEL|FILTER")]
    pub log_level: Option<String>,
}

#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Health checks")]
pub struct HealthArgs {
    /// https (default), http, or tcp (liveness only).
    #[arg(
        long,
        alias = "healthScheme",
        env = "APISERVER_PROXY_HEALTH_MODE",
        value_enum
    )]
    pub health_mode: Option<HealthMode>,
    /// Readiness path [default: /readyz].
    #[arg(
        long,
        alias = "healthPath",
        env = "APISERVER_PROXY_HEALTH_PATH",
        value_name = "PATH"
    )]
    pub health_path: Option<String>,
    /// Readiness probe interval, jittered [default: 5s].
    #[arg(long, env = "APISERVER_PROXY_HEALTH_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub health_interval: Option<Duration>,
    /// Readiness probe timeout [default: 2s].
    #[arg(long, env = "APISERVER_PROXY_HEALTH_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub health_timeout: Option<Duration>,
    /// CA bundle to verify apiservers [default: the in-cluster CA].
    #[arg(long, env = "APISERVER_PROXY_HEALTH_CA_FILE", value_name = "FILE")]
    pub health_ca_file: Option<PathBuf>,
    /// Name verified in apiserver certificates [default: kubernetes].
    #[arg(long, env = "APISERVER_PROXY_HEALTH_SERVER_NAME", value_name = "NAME")]
    pub health_server_name: Option<String>,
    /// Client certificate for /readyz where anonymous auth is off (e.g. the
    /// kubelet's).
    #[arg(
        long,
        env = "APISERVER_PROXY_HEALTH_CLIENT_CERT",
        value_name = "FILE",
        requires = "health_client_key"
    )]
    pub health_client_cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(
        long,
        env = "APISERVER_PROXY_HEALTH_CLIENT_KEY",
        value_name = "FILE",
        requires = "health_client_cert"
    )]
    pub health_client_key: Option<PathBuf>,
    /// Do not verify apiserver certificates. Never in production.
    #[arg(long, env = "APISERVER_PROXY_HEALTH_INSECURE_SKIP_VERIFY")]
    pub health_insecure_skip_verify: bool,
}

/// The outside control-plane VIP's flags (docs/control-plane.md).
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Control-plane VIP")]
pub struct ControlPlaneArgs {
    /// Control-plane mode: also hold this outside VIP (VIP:PORT) for
    /// clients off the cluster, on one control-plane node at a time,
    /// elected through a Lease (docs/control-plane.md). Needs
    /// --control-plane-interface and --control-plane-apiserver.
    #[arg(
        long,
        env = "APISERVER_PROXY_CONTROL_PLANE_VIP",
        value_name = "VIP:PORT"
    )]
    pub control_plane_vip: Option<Endpoint>,
    /// The node's interface on the outside VIP's network (eth0, ens3...).
    #[arg(
        long,
        env = "APISERVER_PROXY_CONTROL_PLANE_INTERFACE",
        value_name = "NAME"
    )]
    pub control_plane_interface: Option<String>,
    /// An apiserver the election reaches the Lease through, IP:PORT; this
    /// node's own first. Repeat for each.
    #[arg(
        long,
        env = "APISERVER_PROXY_CONTROL_PLANE_APISERVERS",
        value_delimiter = ',',
        value_name = "IP:PORT"
    )]
    pub control_plane_apiserver: Vec<Endpoint>,
    /// This node's name in the Lease, unique among the candidates
    /// [default: $NODE_NAME, else the host name].
    #[arg(
        long,
        env = "APISERVER_PROXY_CONTROL_PLANE_IDENTITY",
        value_name = "NAME"
    )]
    pub control_plane_identity: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{s:?} is not a duration: write e.g. 500ms, 5s or 1m"
        )),
    }
}

/// Go's flag package accepts `-name` for long flags. We rewrite the Go
/// version's spellings to `--name` before clap sees them; only these names,
/// so that ordinary short flags keep their meaning.
pub fn normalize_legacy_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const GO_LONG: &[&str] = &[
        "virtualAddress",
        "lvsScheduler",
        "managerInterval",
        "ipvsPersistDir",
        "healthScheme",
        "healthPath",
        "kubeconfig",
    ];
    args.into_iter()
        .map(|a| {
            let Some(rest) = a.strip_prefix('-') else {
                return a;
            };
            if rest.starts_with('-') {
                return a;
            }
            let name = rest.split('=').next().unwrap_or(rest);
            if GO_LONG.contains(&name) {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Builds the effective configuration: file (or defaults), then flags and
/// environment on top, then the whole-config checks.
/// The log format an error must be printed in even when the configuration
/// could not be built: the flag (or environment), else what the file says
/// if it can be read at all, else text.
pub fn requested_log_format(args: &RunArgs) -> LogFormat {
    if let Some(f) = args.log_format {
        return f;
    }
    args.config
        .as_deref()
        .and_then(|path| config::load_file(path).ok())
        .map_or(LogFormat::Text, |loaded| loaded.config.log_format)
}

pub fn effective_config(args: &RunArgs) -> Result<(Config, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut c = match &args.config {
        Some(path) => {
            let loaded = config::load_file(path)?;
            for w in loaded.warnings {
                warnings.push(format!("{}: {w}", path.display()));
            }
            loaded.config
        }
        None => Config::default(),
    };
    if let Some(s) = &args.scheduler {
        config::check_scheduler(s).map_err(anyhow::Error::msg)?;
    }
    match args.vs {
        Some(vip) => {
            c.virtual_servers = vec![VirtualServerConfig {
                vip,
                scheduler: args.scheduler.clone().unwrap_or_else(|| "rr".into()),
                seeds: args.rs.clone(),
                port_name: "https".into(),
            }];
        }
        None => {
            if let Some(s) = &args.scheduler {
                for vs in &mut c.virtual_servers {
                    vs.scheduler = s.clone();
                }
            }
            if !args.rs.is_empty() {
                match c.virtual_servers.as_mut_slice() {
                    [only] => only.seeds = args.rs.clone(),
                    [] => bail!("--rs needs a virtual server: add --vs VIP:PORT"),
                    _ => bail!(
                        "--rs is ambiguous with {} virtual servers in the config file: \
                         give --vs too, or put the seeds in the file",
                        c.virtual_servers.len()
                    ),
                }
            }
        }
    }
    if let Some(i) = &args.interface {
        config::check_interface_name(i).map_err(anyhow::Error::msg)?;
        c.interface = i.clone();
    }
    if let Some(d) = args.dataplane {
        c.dataplane = d;
    }
    if let Some(vip) = args.control_plane.control_plane_vip {
        c.control_plane.vip = Some(vip);
    }
    if let Some(i) = &args.control_plane.control_plane_interface {
        c.control_plane.interface = i.clone();
    }
    if !args.control_plane.control_plane_apiserver.is_empty() {
        c.control_plane.apiservers = args.control_plane.control_plane_apiserver.clone();
    }
    if let Some(id) = &args.control_plane.control_plane_identity {
        c.control_plane.identity = id.clone();
    }
    if let Some(m) = args.vip_mode {
        c.vip_mode = m;
    }
    if let Some(d) = &args.state_dir {
        c.state_dir = d.clone();
    }
    if let Some(a) = args.metrics_addr {
        c.metrics_addr = a;
    }
    if let Some(k) = &args.kubeconfig {
        c.kubeconfig = Some(k.clone());
    }
    if let Some(secs) = args.manager_interval {
        if secs == 0 {
            bail!("--managerInterval must be at least 1 (seconds)");
        }
        c.resync_interval = Duration::from_secs(secs);
    }
    if let Some(d) = args.resync_interval {
        c.resync_interval = d;
    }
    if let Some(d) = args.drain_timeout {
        c.drain_timeout = d;
    }
    let h = &args.health;
    if let Some(m) = h.health_mode {
        c.health.mode = m;
    }
    if let Some(p) = &h.health_path {
        config::check_path(p).context("--health-path")?;
        c.health.path = p.clone();
    }
    if let Some(d) = h.health_interval {
        c.health.interval = d;
    }
    if let Some(d) = h.health_timeout {
        c.health.timeout = d;
    }
    config::check_timeout(c.health.timeout, c.health.interval).context("health")?;
    if let Some(f) = &h.health_ca_file {
        c.health.ca_file = Some(f.clone());
    }
    if let Some(n) = &h.health_server_name {
        c.health.server_name = n.clone();
    }
    if let Some(f) = &h.health_client_cert {
        c.health.client_cert = Some(f.clone());
    }
    if let Some(f) = &h.health_client_key {
        c.health.client_key = Some(f.clone());
    }
    if h.health_insecure_skip_verify {
        c.health.insecure_skip_verify = true;
    }
    if let Some(f) = args.log_format {
        c.log_format = f;
    }
    config::validate(&c).context("invalid configuration")?;
    Ok((c, warnings))
}

#[cfg(test)]
mod fuzz {
    use super::*;

    use apiserver_proxy_testkit::fuzz::command_line_words as words;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// Any command line is parsed into a configuration or refused with
        /// a message, never a panic.
        #[test]
        fn any_command_line_is_an_answer(words in words()) {
            let args = normalize_legacy_args(
                std::iter::once("bcs-apiserver-proxy".to_string()).chain(words),
            );
            if let Ok(cli) = Cli::try_parse_from(args)
                && cli.command.is_none()
            {
                let _ = effective_config(&cli.run);
            }
        }
    }
}
