//! What each subcommand does, in order. Anything that can be refused is
//! checked before the kernel is touched; the state lock is held while the
//! kernel or the state changes; failures midway leave what was done in place.

use std::time::Duration;

use apiserver_proxy_manager::lock::StateLock;
use apiserver_proxy_manager::shell;
use apiserver_proxy_manager::state::{self, SavedVs};
use apiserver_proxy_types::{Endpoint, Family};
use clap::CommandFactory as _;

use crate::boot::Boot;
use crate::cli::{AddArgs, Cli, Command, Common, Output, StatusArgs};
use crate::daemon_page;
use crate::fail::{EXIT_OK, EXIT_UNHEALTHY, Failure};
use crate::node::Node;
use crate::probe::{self, Prober};
use crate::saved::{self, Saved, Source};
use crate::{show, static_pod};
use apiserver_proxy_manager::config::{self, VipMode};
use apiserver_proxy_manager::kernel::{Dataplane, NFT_TABLE};

/// How long to wait for another holder of the state lock (another run of
/// this tool; a running daemon never lets go).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Runs the command; the exit code on success (`status` may say unhealthy).
pub fn run(cli: &Cli) -> Result<u8, Failure> {
    let c = &cli.common;
    match &cli.command {
        Command::Add(a) => add(a, c, false),
        Command::Init(a) => add(a, c, true),
        Command::Delete(v) => delete(v.vs, c),
        Command::List(l) => list(l.output, c),
        Command::Status(a) => status(a, c),
        Command::Reload => reload(c),
        Command::Cleanup(v) => cleanup(v.vs, c),
        Command::StaticPod(a) => {
            out!("{}", static_pod::manifest(a, c)?);
            Ok(EXIT_OK)
        }
        Command::Completions { shell } => {
            out!("{}", shell::completions(Cli::command(), *shell));
            Ok(EXIT_OK)
        }
        Command::Man => {
            out!("{}", shell::man_page(Cli::command()));
            Ok(EXIT_OK)
        }
    }
}

fn lock(c: &Common) -> Result<StateLock, Failure> {
    Ok(StateLock::acquire(&c.state_dir, LOCK_WAIT)?)
}

/// The backends, checked as the config file's seeds are (family, unicast,
/// not the VIP), duplicates dropped with a note.
fn backends_of(a: &AddArgs) -> Result<Vec<Endpoint>, Failure> {
    config::check_vip(a.vs).map_err(|e| Failure::new(e).todo("fix --vs"))?;
    let mut out: Vec<Endpoint> = Vec::new();
    for rs in &a.rs {
        if rs.family() != a.vs.family() {
            return Err(Failure::family_mismatch(*rs, a.vs));
        }
        config::check_backend(a.vs, *rs).map_err(|e| Failure::new(e).todo("fix --rs"))?;
        if out.contains(rs) {
            outln!("note: --rs {rs} is given twice; it is added once");
        } else {
            out.push(*rs);
        }
    }
    if a.vip_mode == VipMode::Route && a.vs.family() == Family::Ipv6 {
        return Err(Failure::new(format!(
            "--vip-mode route is IPv4 only, and {} is IPv6",
            a.vs
        ))
        .todo("use --vip-mode address (the default) for IPv6"));
    }
    Ok(out)
}

/// Probes the backends and picks those to add: the ones that pass, or all
/// of them when none does (never an empty virtual server).
fn choose(backends: &[Endpoint], c: &Common) -> Result<Vec<Endpoint>, Failure> {
    let prober = Prober::new(&c.health);
    outln!("probing {} backend(s): {}", backends.len(), prober.summary);
    let results = prober.probe_all(backends)?;
    probe::show(&results);
    let passing: Vec<Endpoint> = results
        .iter()
        .filter(|r| r.passed)
        .map(|r| r.backend)
        .collect();
    if passing.is_empty() {
        outln!(
            "no backend passed its probe: adding all {} anyway, so that the virtual server is never \
             empty (the daemon takes dead ones out once it runs)",
            backends.len()
        );
        return Ok(backends.to_vec());
    }
    let left_out = backends.len() - passing.len();
    if left_out > 0 {
        outln!(
            "leaving out {left_out} backend(s) that failed (add them once they answer, or use --no-probe)"
        );
    }
    Ok(passing)
}

fn add(a: &AddArgs, c: &Common, init: bool) -> Result<u8, Failure> {
    let backends = backends_of(a)?;
    if init {
        // A state file we could not rewrite stops `init` before any change.
        Saved::load_strict(c)?;
    }
    // The kernel is asked first, so that a node without IPVS or a caller
    // without CAP_NET_ADMIN (not root) hears so before any probe result,
    // and before the state folder and its lock are created.
    let mut node = Node::connect(c.dataplane)?;
    // A virtual server someone else made (kube-proxy's) is never taken
    // over: ours are named by a state file or have their VIP on our
    // interface.
    if node.exists(a.vs)? && !owned(&mut node, &Saved::load(c), c, &c.interface, a.vs)? {
        return Err(refuse_foreign(&node, a.vs, &c.interface));
    }
    let _lock = lock(c)?;
    node.say_dataplane();
    let chosen = if a.no_probe {
        backends.clone()
    } else {
        choose(&backends, c)?
    };
    node.place_vip(&c.interface, a.vs, a.vip_mode, &backends)?;
    let scheduler = node.converge(a.vs, a.scheduler.as_deref(), &chosen)?;
    if !init {
        return Ok(EXIT_OK);
    }
    let count = backends.len();
    let path = saved::remember(c, a.vip_mode, SavedVs::new(a.vs, scheduler, backends))?;
    outln!(
        "saved {} with {count} backend(s) in {}",
        a.vs,
        path.display()
    );
    Boot::new(c).install()?;
    Ok(EXIT_OK)
}

/// Whether `vs` is ours: a state file names it, or its VIP is on our
/// interface. Anything else in the kernel is never touched.
fn owned(
    node: &mut Node,
    saved: &Saved,
    c: &Common,
    interface: &str,
    vs: Endpoint,
) -> Result<bool, Failure> {
    Ok(saved.find(c, vs).is_some() || node.vip_on(interface, vs.ip())?)
}

fn refuse_foreign(node: &Node, vs: Endpoint, interface: &str) -> Failure {
    let f = Failure::new(format!(
        "virtual server {vs} is not ours: no state file names it and its VIP is not on {interface}"
    ));
    match node.dataplane() {
        Dataplane::Ipvs => f.todo(format!(
            "it was made by something else (kube-proxy?) and is left alone; remove it with `ipvsadm -D -t {vs}` if you really mean to"
        )),
        Dataplane::Nftables => f.todo(format!(
            "it is in our nftables table, but no state file of this --state-dir names it; \
             give the --state-dir that made it, or remove it with `nft delete table inet {NFT_TABLE}` \
             (every virtual server of ours)"
        )),
    }
}

fn delete(vs: Endpoint, c: &Common) -> Result<u8, Failure> {
    let saved = Saved::load_strict(c)?;
    let interface = saved.interface(c).to_string();
    let _lock = lock(c)?;
    let mut node = Node::connect(c.dataplane)?;
    if !owned(&mut node, &saved, c, &interface, vs)? {
        if node.exists(vs)? {
            return Err(refuse_foreign(&node, vs, &interface));
        }
        outln!("virtual server {vs} does not exist: nothing to delete");
        return Ok(EXIT_OK);
    }
    if !node.delete_service(vs)? {
        outln!("virtual server {vs} is not in the kernel");
    }
    node.release_vip(&interface, vs.ip())?;
    if let Some(r) = saved.find(c, vs) {
        let file = match r.source {
            Source::StateFile => &saved.state_path,
            Source::GoFile => &saved.go_path,
            Source::Cache => &saved.cache_path,
        };
        outln!(
            "note: {} still lists {vs}, so `reload` (at boot) brings it back; \
             `apiserver-proxy-tools cleanup --vs {vs}` removes it for good",
            file.display()
        );
    }
    Ok(EXIT_OK)
}

fn list(output: Output, c: &Common) -> Result<u8, Failure> {
    let saved = Saved::load_strict(c)?;
    let mut node = Node::connect(c.dataplane)?;
    let ours = node.ours(saved.interface(c), &saved.vips(c))?;
    let listed = show::listed(&ours, &node.read(&ours)?);
    match output {
        Output::Table => out!("{}", show::list_table(&listed)),
        Output::Json => outln!("{}", show::json(&listed)),
    }
    Ok(EXIT_OK)
}

fn status(a: &StatusArgs, c: &Common) -> Result<u8, Failure> {
    let saved = Saved::load_strict(c)?;
    let mut node = Node::connect(c.dataplane)?;
    let ours = node.ours(saved.interface(c), &saved.vips(c))?;
    let listed = show::listed(&ours, &node.read(&ours)?);
    let mut backends: Vec<Endpoint> = Vec::new();
    for vs in &listed {
        let in_kernel = vs.backends.iter().map(|b| b.address);
        let kept = saved
            .find(c, vs.vip)
            .map(|r| r.vs.backends)
            .unwrap_or_default();
        for b in in_kernel.chain(kept) {
            if !backends.contains(&b) {
                backends.push(b);
            }
        }
    }
    // The daemon's view when it runs; our own probes otherwise.
    let daemon = if a.no_daemon {
        Err("--no-daemon".to_string())
    } else {
        daemon_page::fetch(a.daemon)
    };
    let (probes, summary, source) = match &daemon {
        Ok(page) => (
            daemon_page::as_probes(page),
            format!(
                "none from here: the daemon's checks, from its /status page at {}",
                a.daemon
            ),
            show::ViewSource::Daemon {
                address: a.daemon,
                page,
                problems: daemon_page::problems(page),
            },
        ),
        Err(why) => {
            let prober = Prober::new(&c.health);
            let probes = if backends.is_empty() {
                Vec::new()
            } else {
                prober.probe_all(&backends)?
            };
            (
                probes,
                prober.summary.clone(),
                show::ViewSource::OwnProbes {
                    daemon: a.daemon,
                    why: why.clone(),
                },
            )
        }
    };
    let report = show::status(
        &saved,
        &saved.restore_list(c),
        &listed,
        &probes,
        &summary,
        &source,
        (&node.dataplane().to_string(), node.why()),
    );
    match a.output {
        Output::Table => out!("{}", report.text),
        Output::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&report.json).unwrap_or_default()
        ),
    }
    Ok(if report.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_UNHEALTHY
    })
}

fn reload(c: &Common) -> Result<u8, Failure> {
    let saved = Saved::load(c);
    for w in &saved.warnings {
        eprintln!("warning: {w}");
    }
    let mut failures = saved.problems.clone();
    let list = saved.restore_list(c);
    if list.is_empty() {
        return Err(failures.pop().unwrap_or_else(|| {
            Failure::new(format!(
                "nothing to restore: no state file at {} and no {} in {}",
                saved.state_path.display(),
                state::GO_FILE_NAME,
                c.persist_dir.display()
            ))
            .todo("set the node up with `apiserver-proxy-tools init`")
        }));
    }
    let _lock = lock(c)?;
    let mut node = Node::connect(c.dataplane)?;
    node.say_dataplane();
    for r in &list {
        let vs = &r.vs;
        outln!(
            "restoring {} ({}, {} backend(s), {})",
            vs.vip,
            vs.scheduler,
            vs.backends.len(),
            r.describe_source()
        );
        if vs.backends.is_empty() {
            failures.push(
                Failure::new(format!(
                    "{} has no saved backend, in the state file or the daemon's cache: not created",
                    vs.vip
                ))
                .todo("an empty virtual server only drops connections; run `init` with its --rs"),
            );
            continue;
        }
        let done = node
            .place_vip(&r.interface, vs.vip, r.vip_mode, &vs.backends)
            .and_then(|()| node.converge(vs.vip, Some(&vs.scheduler), &vs.backends));
        if let Err(f) = done {
            failures.push(f.context(format!("restoring {}", vs.vip)));
        }
    }
    match failures.pop() {
        None => Ok(EXIT_OK),
        Some(last) => {
            for f in failures {
                eprintln!("error: {f}");
            }
            Err(last)
        }
    }
}

fn cleanup(vs: Endpoint, c: &Common) -> Result<u8, Failure> {
    let saved = Saved::load_strict(c)?;
    let interface = saved.interface(c).to_string();
    let _lock = lock(c)?;
    let mut node = Node::connect(c.dataplane)?;
    if owned(&mut node, &saved, c, &interface, vs)? {
        node.delete_service(vs)?;
        node.release_vip(&interface, vs.ip())?;
        node.remove_table_if_empty()?;
    } else if node.exists(vs)? {
        return Err(refuse_foreign(&node, vs, &interface));
    }
    let left = saved::forget(c, vs)?;
    saved::forget_go(c, vs)?;
    let go_left = state::load_go(&c.persist_dir)?.is_some();
    if left > 0 || go_left {
        outln!("kept the boot-time restore and {interface}: other virtual servers are still saved");
        return Ok(EXIT_OK);
    }
    Boot::new(c).uninstall()?;
    node.remove_interface_if_unused(&interface)?;
    outln!(
        "cleaned up {vs}: nothing of it is left (the binary at {} and the lock file in {} stay)",
        c.tool_path.display(),
        c.state_dir.display()
    );
    Ok(EXIT_OK)
}
