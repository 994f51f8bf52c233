//! The command line: subcommands, options, and the Go tool's spelling
//! (`-cmd add -vs ... -rs ...`), rewritten to ours before clap sees it.

use std::net::SocketAddr;
use std::path::PathBuf;

use apiserver_proxy_manager::config::{
    self, DEFAULT_INTERFACE, DEFAULT_STATE_DIR, DataplaneChoice, HealthMode, VipMode,
};
use apiserver_proxy_manager::shell::Shell;
use apiserver_proxy_types::Endpoint;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fail::Failure;

/// Where `init` installs this binary unless told otherwise (`-toolPath`).
pub const DEFAULT_TOOL_PATH: &str = "/usr/local/bin/apiserver-proxy-tools";
/// The Go tool's state folder (`-persistDir`), read for `ipvsConfig.yaml`.
pub const DEFAULT_PERSIST_DIR: &str = "/root/.bcs";
/// The cluster CA on a kubeadm node: what probes verify apiservers with.
pub const DEFAULT_CA_FILE: &str = "/etc/kubernetes/pki/ca.crt";
pub const DEFAULT_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/bcs-apiserver-proxy/bcs-apiserver-proxy:",
    env!("CARGO_PKG_VERSION")
);

const ABOUT: &str =
    "Sets up a node's apiserver VIP before kubelet starts, and restores it at boot.";

const LONG_ABOUT: &str =
    "Sets up a node's apiserver VIP before kubelet starts, and restores it at boot.

kubelet needs to reach the apiservers before the bcs-apiserver-proxy DaemonSet
can run, and IPVS rules are lost at every reboot. This tool writes the first
rules: a dummy interface (apiproxy0) holding the VIP, and an IPVS virtual
server balancing VIP:PORT over the apiservers. `init` also saves them and
installs a boot-time `reload`. Once the daemon runs, it keeps the rules right.

It only ever touches its own virtual servers (those a state file names, or
whose VIP is on its interface), never flushes the table, never empties a
virtual server, and leaves what is in the kernel in place when something
fails.";

const AFTER_HELP: &str = "Typical node setup:
  apiserver-proxy-tools init --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --rs 192.168.1.11:6443
  apiserver-proxy-tools status
Then point kubelet's kubeconfig at https://10.103.97.2:6443.

The Go tool's syntax works too:
  apiserver-proxy-tools -cmd add -vs 10.103.97.2:6443 -rs 192.168.1.10:6443 -scheduler rr

Exit codes: 0 success; 1 the command failed (the message says what to do);
2 the command line could not be parsed; 3 `status` found something unhealthy.

Needs root (CAP_NET_ADMIN) for everything but `static-pod`. Docs: docs/cli.md.";

#[derive(Parser, Debug)]
#[command(
    name = "apiserver-proxy-tools",
    version = apiserver_proxy_manager::build::LONG_VERSION,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the virtual server and its VIP if missing, and add backends.
    #[command(
        long_about = "Create the virtual server and its VIP if missing, and add backends.

Each backend is probed first (as the daemon would: TLS verified against the
cluster CA, GET /readyz) and the result shown. Backends that fail are left
out, unless none passes: then all are added, so that the virtual server is
never empty (the daemon removes dead ones once it runs). Backends already in
the kernel are kept. Nothing is saved: use `init` for a node that must keep
its rules across reboots.",
        after_help = "Example:
  apiserver-proxy-tools add --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --rs 192.168.1.11:6443
  apiserver-proxy-tools add --vs [fd00::2]:6443 --rs [fd00::10]:6443 --no-probe"
    )]
    Add(AddArgs),

    /// Remove a virtual server (and its VIP, if nothing else uses it).
    #[command(
        long_about = "Remove a virtual server (and its VIP, if nothing else uses it).

Refuses a virtual server this tool or the daemon did not make. The state
file is left as it is: `reload` (at boot) brings the virtual server back.
To remove it for good, with the state and the boot-time restore, use
`cleanup`."
    )]
    Delete(VsArgs),

    /// Show our virtual servers as the kernel holds them.
    #[command(
        long_about = "Show our virtual servers as the kernel holds them: scheduler, backends, weights, and active and inactive connections.

Ours are the virtual servers a state file names (state.json, or the Go tool's
ipvsConfig.yaml) and any whose VIP is on our interface. Others, such as
kube-proxy's, are never shown or touched."
    )]
    List(ListArgs),

    /// `list`, plus a live probe of each backend and the state file's view.
    #[command(
        long_about = "`list`, plus each backend's health and the state file's view.

The health is the running daemon's, from its /status page (--daemon); only
when no daemon answers there does `status` probe each backend itself. The
first line says which.

Exits 0 when everything is healthy: every saved virtual server is in the
kernel with backends in rotation, every backend passes its probe, and every
saved backend is in the kernel. Exits 3 otherwise, after naming each problem,
and 1 when it could not look at all.

`-o json` prints the same report as one JSON document (apiVersion
apiserver-proxy-tools/v1, kind Status; its fields are in docs/cli.md), with
the same exit codes."
    )]
    Status(StatusArgs),

    /// `add`, then save the state and install the boot-time `reload`.
    #[command(
        long_about = "`add`, then save the state and install the boot-time `reload`.

Writes STATE_DIR/state.json (the file the daemon keeps up to date too),
copies this binary to --tool-path if it is not there, and installs
/etc/systemd/system/apiserver-proxy-reload.service, which runs `reload`
after the network is up and before kubelet.service. Where systemd is absent,
a marked block in /etc/rc.local does the same. Safe to run again: it prints
what it installed or found in place.",
        after_help = "Example:
  apiserver-proxy-tools init --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 --rs 192.168.1.11:6443"
    )]
    Init(AddArgs),

    /// Recreate everything from the saved state (run at boot).
    #[command(
        long_about = "Recreate everything from the saved state (run at boot by the unit `init` installs).

Reads STATE_DIR/state.json, and the Go tool's ipvsConfig.yaml from
--persist-dir; where the daemon's last-known-good cache (STATE_DIR/backends.json)
is newer than the state file, its backends are used. Nothing is probed: at
boot the apiservers may not answer yet, and a saved backend is never dropped
for that. The saved scheduler is kept. Backends already in the kernel stay."
    )]
    Reload,

    /// Remove a virtual server, its VIP, the state and the boot-time restore.
    #[command(
        long_about = "Remove a virtual server, its VIP, the state and the boot-time restore: the uninstall path.

The virtual server is removed from the kernel and from the state files. When
no saved virtual server is left, the state file, the daemon's cache, the
systemd unit (or rc.local block) and the now empty dummy interface go too.
The installed binary and the state folder's lock file stay."
    )]
    Cleanup(VsArgs),

    /// Print a static-pod manifest that runs the daemon on this node.
    #[command(
        long_about = "Print a static-pod manifest (YAML) that runs the bcs-apiserver-proxy daemon on this node.

For nodes that need the proxy before any DaemonSet can run, and for control
planes. Save it as /etc/kubernetes/manifests/bcs-apiserver-proxy.yaml. The pod
runs on the host network with NET_ADMIN only, a read-only root filesystem,
the state folder from the host, and the kubelet's kubeconfig (read-only) to
watch the cluster.",
        after_help = "Example:
  apiserver-proxy-tools static-pod --vs 10.103.97.2:6443 --rs 192.168.1.10:6443 \\
    > /etc/kubernetes/manifests/bcs-apiserver-proxy.yaml"
    )]
    StaticPod(StaticPodArgs),
    /// Print a shell completion script (bash, zsh or fish).
    #[command(after_help = "Install:
  apiserver-proxy-tools completions bash > /etc/bash_completion.d/apiserver-proxy-tools
  apiserver-proxy-tools completions zsh > \"${fpath[1]}/_apiserver-proxy-tools\"
  apiserver-proxy-tools completions fish > ~/.config/fish/completions/apiserver-proxy-tools.fish")]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

#[derive(Args, Debug, Clone)]
pub struct AddArgs {
    /// The virtual server, VIP:PORT ([ADDR]:PORT for IPv6).
    #[arg(long, value_name = "VIP:PORT")]
    pub vs: Endpoint,

    /// An apiserver, IP:PORT of the virtual server's family. Repeat for each
    /// (or separate them with commas).
    #[arg(long, required = true, value_delimiter = ',', value_name = "IP:PORT")]
    pub rs: Vec<Endpoint>,

    /// IPVS scheduler (kernel module ip_vs_NAME) [default: rr, or what an
    /// existing virtual server has].
    #[arg(long, value_parser = scheduler, value_name = "NAME")]
    pub scheduler: Option<String>,

    /// Add the backends without probing them.
    #[arg(long)]
    pub no_probe: bool,

    /// How the VIP is reachable: an `address` on the dummy interface
    /// (workers), or a `route` via lo (control-plane nodes that are their own
    /// backend, IPv4 only).
    #[arg(long, value_enum, default_value_t = VipMode::Address)]
    pub vip_mode: VipMode,
}

#[derive(Args, Debug, Clone)]
pub struct VsArgs {
    /// The virtual server, VIP:PORT ([ADDR]:PORT for IPv6).
    #[arg(long, value_name = "VIP:PORT")]
    pub vs: Endpoint,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Where the daemon's /status page is (its --metrics-addr; 127.0.0.1
    /// for a daemon listening on every address).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8004")]
    pub daemon: SocketAddr,

    /// Probe every backend from here even if the daemon answers.
    #[arg(long)]
    pub no_daemon: bool,
}

#[derive(Args, Debug, Clone)]
pub struct StaticPodArgs {
    /// The virtual server, VIP:PORT. The daemon takes one on its command
    /// line; for several, use --config with a file on the host.
    #[arg(long, value_name = "VIP:PORT", required_unless_present = "config")]
    pub vs: Vec<Endpoint>,

    /// A seed apiserver, IP:PORT (repeat). The cluster's own list replaces
    /// the seeds once it answers.
    #[arg(long, value_delimiter = ',', value_name = "IP:PORT")]
    pub rs: Vec<Endpoint>,

    /// The daemon's image.
    #[arg(long, default_value = DEFAULT_IMAGE, value_name = "IMAGE")]
    pub image: String,

    /// IPVS scheduler [default: the daemon's, rr].
    #[arg(long, value_parser = scheduler, value_name = "NAME")]
    pub scheduler: Option<String>,

    /// Where the daemon serves /metrics, /healthz and /readyz (the pod's
    /// probes use its port).
    #[arg(long, default_value = config::DEFAULT_METRICS_ADDR, value_name = "ADDR:PORT")]
    pub metrics_addr: SocketAddr,

    /// The kubeconfig the daemon watches the cluster with, mounted read-only
    /// from the host (with /var/lib/kubelet/pki, where kubelet keeps the
    /// client certificate it names).
    #[arg(long, default_value = DEFAULT_KUBECONFIG, value_name = "FILE")]
    pub kubeconfig: PathBuf,

    /// A daemon configuration file on the host, mounted read-only and passed
    /// as --config (for several virtual servers).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Also hold this outside control-plane VIP (VIP:PORT) for clients off
    /// the cluster, on one control-plane node at a time (see
    /// docs/control-plane.md): for `kubeadm init` with
    /// controlPlaneEndpoint, give a kubeconfig that may write Leases before
    /// the cluster's RBAC exists (/etc/kubernetes/super-admin.conf). Adds
    /// NET_RAW for the ARP / neighbour announcements.
    #[arg(long, value_name = "VIP:PORT", requires = "control_plane_interface")]
    pub control_plane_vip: Option<Endpoint>,

    /// The node's interface on the outside VIP's network (eth0, ens3...).
    #[arg(long, value_name = "NAME", requires = "control_plane_vip")]
    pub control_plane_interface: Option<String>,

    /// An apiserver the election reaches its Lease through, this node's own
    /// first (repeat) [default: the --rs seeds].
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "IP:PORT",
        requires = "control_plane_vip"
    )]
    pub control_plane_apiserver: Vec<Endpoint>,
}

/// Options every subcommand accepts (the Go tool took its flags with any
/// command).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Node options")]
pub struct Common {
    /// The daemon's state folder: its lock, state.json and backends.json.
    #[arg(
        long,
        global = true,
        env = STATE_DIR_ENV,
        default_value = DEFAULT_STATE_DIR,
        value_name = "DIR",
    )]
    pub state_dir: PathBuf,

    /// The Go tool's folder, read for its ipvsConfig.yaml (Go: -persistDir).
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_PERSIST_DIR,
        value_name = "DIR",
    )]
    pub persist_dir: PathBuf,

    /// The dummy interface holding the VIPs.
    #[arg(
        long,
        global = true,
        env = "APISERVER_PROXY_INTERFACE",
        default_value = DEFAULT_INTERFACE,
        value_parser = interface,
        value_name = "NAME",
    )]
    pub interface: String,

    /// What balances the VIP: ipvs, nftables (our table `inet
    /// bcs-apiserver-proxy`), or auto (IPVS where the kernel has it,
    /// nftables otherwise). `init` writes a choice other than auto into
    /// the boot-time restore.
    #[arg(
        long,
        global = true,
        env = "APISERVER_PROXY_DATAPLANE",
        value_enum,
        default_value_t = DataplaneChoice::Auto,
        value_name = "DATAPLANE",
    )]
    pub dataplane: DataplaneChoice,

    /// Where `init` installs this binary for the boot-time restore to run
    /// (Go: -toolPath).
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_TOOL_PATH,
        value_name = "PATH",
    )]
    pub tool_path: PathBuf,

    /// The file system root that boot files (the systemd unit, rc.local, the
    /// installed binary) go below. For tests and image builds.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "APISERVER_PROXY_TOOLS_ROOT",
        default_value = "/"
    )]
    pub root: PathBuf,

    #[command(flatten)]
    pub health: HealthArgs,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Probes")]
pub struct HealthArgs {
    /// Probe kind: https (TLS, then GET the path), http, or tcp (connect
    /// only) (Go: -healthScheme).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = HealthMode::Https,
    )]
    pub health_scheme: HealthMode,

    /// Readiness path (Go: -healthPath).
    #[arg(
        long,
        global = true,
        default_value = "/readyz",
        value_parser = health_path,
        value_name = "PATH",
    )]
    pub health_path: String,

    /// CA that signs the apiservers' certificates [default:
    /// /etc/kubernetes/pki/ca.crt; without it, probes cannot verify
    /// certificates and say so].
    #[arg(long, global = true, value_name = "FILE")]
    pub health_ca_file: Option<PathBuf>,

    /// Name verified in the apiservers' certificates.
    #[arg(long, global = true, default_value = "kubernetes", value_name = "NAME")]
    pub health_server_name: String,

    /// Do not verify the apiservers' certificates.
    #[arg(long, global = true)]
    pub health_insecure_skip_verify: bool,

    /// How long a probe may take for the TLS handshake and the readiness
    /// answer (the daemon's --health-timeout). Raise it for a slow control
    /// plane: `add` and `init` leave out a backend that does not answer in
    /// time (unless none does).
    #[arg(
        long,
        global = true,
        default_value = "2s",
        value_parser = probe_timeout,
        value_name = "DURATION"
    )]
    pub health_timeout: std::time::Duration,
}

/// A probe timeout: a duration from 100ms to 1m.
fn probe_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as 2s or 500ms ({e})"))?;
    if (std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(60)).contains(&d) {
        Ok(d)
    } else {
        Err(format!("{s:?}: give a timeout from 100ms to 1m"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

fn scheduler(s: &str) -> Result<String, String> {
    config::check_scheduler(s).map(|()| s.to_string())
}

fn interface(s: &str) -> Result<String, String> {
    config::check_interface_name(s).map(|()| s.to_string())
}

fn health_path(s: &str) -> Result<String, String> {
    config::check_path(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// The Go tool's flag names and ours. Go's flag package reads `-name` and
/// `--name` alike, with the value after `=` or in the next argument.
const GO_FLAGS: &[(&str, &str)] = &[
    ("vs", "vs"),
    ("rs", "rs"),
    ("scheduler", "scheduler"),
    ("persistDir", "persist-dir"),
    ("toolPath", "tool-path"),
    ("healthScheme", "health-scheme"),
    ("healthPath", "health-path"),
    ("help", "help"),
];

/// `-name`, `--name`, `-name=value` or `--name=value`: the name and the
/// inline value.
fn flag_parts(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    match body.split_once('=') {
        Some((name, value)) => Some((name, Some(value))),
        None => Some((body, None)),
    }
}

/// Rewrites the Go tool's command line to ours: `-cmd NAME` becomes the
/// subcommand, and its single-dash (or camelCase) flags become our long
/// flags. Anything else passes through for clap to judge; after `--` nothing
/// is touched.
pub fn normalize_go_args(args: Vec<String>) -> Result<Vec<String>, Failure> {
    normalize_go_args_with(args, std::env::var_os(STATE_DIR_ENV).is_some())
}

const STATE_DIR_ENV: &str = "APISERVER_PROXY_STATE_DIR";

/// [`normalize_go_args`], told whether the state folder is set in the
/// environment.
///
/// The Go tool's `-persistDir` is also the folder the Go daemon's
/// `--ipvsPersistDir` names, which is our daemon's state folder: so it sets
/// `--state-dir` too, unless one is given, and a migrated node's CLI and
/// daemon share one folder and one lock.
fn normalize_go_args_with(
    args: Vec<String>,
    state_dir_in_env: bool,
) -> Result<Vec<String>, Failure> {
    let mut iter = args.into_iter();
    let mut out: Vec<String> = iter.next().into_iter().collect();
    let mut command = None;
    let mut go_persist_dir: Option<String> = None;
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(iter.by_ref());
            break;
        }
        match flag_parts(&arg) {
            Some(("cmd", inline)) => {
                let value = match inline {
                    Some(v) => Some(v.to_string()),
                    None => iter.next(),
                };
                match value.filter(|v| !v.is_empty() && !v.starts_with('-')) {
                    Some(v) => command = Some(v),
                    None => {
                        return Err(Failure::new("-cmd needs a command")
                            .todo("for example -cmd add; the Go tool's commands are add, delete, init and reload"));
                    }
                }
            }
            Some(("persistDir", inline)) => {
                let value = match inline {
                    Some(v) => Some(v.to_string()),
                    None => iter.next(),
                };
                match value {
                    Some(v) => {
                        out.push(format!("--persist-dir={v}"));
                        go_persist_dir = Some(v);
                    }
                    // clap says what is missing.
                    None => out.push("--persist-dir".into()),
                }
            }
            Some((name, inline)) => match GO_FLAGS.iter().find(|(go, _)| *go == name) {
                Some((_, ours)) => out.push(match inline {
                    Some(v) => format!("--{ours}={v}"),
                    None => format!("--{ours}"),
                }),
                None => out.push(arg),
            },
            None => out.push(arg),
        }
    }
    let explicit_state_dir = out
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--state-dir" || a.starts_with("--state-dir="));
    if let Some(dir) = go_persist_dir
        && !explicit_state_dir
        && !state_dir_in_env
    {
        out.insert(1.min(out.len()), format!("--state-dir={dir}"));
    }
    if let Some(c) = command {
        out.insert(1.min(out.len()), c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use apiserver_proxy_testkit::fuzz::command_line_words as words;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// Any command line, ours or the Go tool's, is parsed or refused
        /// with a message, never a panic.
        #[test]
        fn any_command_line_is_an_answer(words in words()) {
            let args: Vec<String> =
                std::iter::once("apiserver-proxy-tools".to_string()).chain(words).collect();
            if let Ok(args) = normalize_go_args_with(args, false) {
                let _ = Cli::try_parse_from(args);
            }
        }
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn normalized(s: &[&str]) -> Vec<String> {
        normalize_go_args(strings(s)).expect("normalize")
    }

    #[test]
    fn the_go_syntax_becomes_ours() {
        assert_eq!(
            normalized(&[
                "t",
                "-cmd",
                "add",
                "-vs",
                "10.103.97.2:6443",
                "-rs",
                "192.168.1.10:6443",
                "-rs=192.168.1.11:6443",
                "-scheduler",
                "rr",
                "--persistDir",
                "/p",
                "-toolPath=/t",
                "-healthScheme",
                "https",
                "-healthPath",
                "/healthz",
            ]),
            strings(&[
                "t",
                "add",
                "--state-dir=/p",
                "--vs",
                "10.103.97.2:6443",
                "--rs",
                "192.168.1.10:6443",
                "--rs=192.168.1.11:6443",
                "--scheduler",
                "rr",
                "--persist-dir=/p",
                "--tool-path=/t",
                "--health-scheme",
                "https",
                "--health-path",
                "/healthz",
            ])
        );
        assert_eq!(
            normalized(&["t", "-vs", "1.2.3.4:1", "--cmd=delete"]),
            strings(&["t", "delete", "--vs", "1.2.3.4:1"])
        );
    }

    #[test]
    fn the_go_persist_dir_is_the_state_folder_too_unless_one_is_given() {
        let go =
            |args: &[&str], env| normalize_go_args_with(strings(args), env).expect("normalize");
        assert_eq!(
            go(&["t", "-cmd", "reload", "-persistDir", "/root/.bcs"], false),
            strings(&[
                "t",
                "reload",
                "--state-dir=/root/.bcs",
                "--persist-dir=/root/.bcs"
            ])
        );
        let given = ["t", "reload", "-persistDir=/g", "--state-dir", "/s"];
        assert_eq!(
            go(&given, false),
            strings(&["t", "reload", "--persist-dir=/g", "--state-dir", "/s"])
        );
        assert_eq!(
            go(&["t", "reload", "-persistDir", "/g"], true),
            strings(&["t", "reload", "--persist-dir=/g"])
        );
        // Ours alone changes nothing: --persist-dir is only where the Go
        // tool's file is read.
        let ours = ["t", "reload", "--persist-dir", "/g"];
        assert_eq!(go(&ours, false), strings(&ours));
        // And clap parses what comes out.
        let cli = Cli::try_parse_from(go(&["t", "-cmd", "reload", "-persistDir", "/g"], false))
            .expect("parses");
        assert_eq!(cli.common.state_dir, PathBuf::from("/g"));
        assert_eq!(cli.common.persist_dir, PathBuf::from("/g"));
    }

    #[test]
    fn our_syntax_passes_through() {
        let ours = [
            "t", "status", "-o", "json", "--vs", "x", "--", "-cmd", "-vs",
        ];
        assert_eq!(normalized(&ours), strings(&ours));
    }

    #[test]
    fn cmd_without_a_value_is_one_clear_error() {
        for args in [&["t", "-cmd"][..], &["t", "-cmd", "-vs", "1.2.3.4:5"]] {
            let err = normalize_go_args(strings(args)).expect_err("no value");
            assert!(err.to_string().contains("-cmd add"), "{err}");
        }
    }

    #[test]
    fn the_parser_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
