//! The load balancers compared: our daemon, haproxy (two configurations),
//! nginx stream, and a bare IPVS service that nothing health-checks.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apiserver_proxy_dataplane::nft::table::NftTable;
use apiserver_proxy_dataplane::{DestSpec, Ipvs, ServiceKey, ServiceSpec};

use crate::util::{self, sh};

/// A peer process (haproxy, nginx), killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// RSS of the process and its children (nginx workers, haproxy threads live in one).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        let mut total = util::rss_kib(pid).unwrap_or(0);
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                total += util::rss_kib(c).unwrap_or(0);
            }
        }
        total
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// haproxy in TCP mode with HTTPS `/readyz` checks. `check` is the
/// per-server check timing (`inter 10s fall 2 rise 2`, ...).
pub fn haproxy(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    backends: &[SocketAddr],
    check: &str,
) -> Result<Proc> {
    let mut cfg = String::new();
    cfg.push_str("global\n    maxconn 20000\n\n");
    cfg.push_str("defaults\n    mode tcp\n    retries 1\n    option redispatch\n");
    cfg.push_str("    timeout connect 5s\n    timeout client 20s\n    timeout server 20s\n    timeout check 10s\n\n");
    cfg.push_str(&format!(
        "frontend fe\n    bind {listen}\n    default_backend be\n\n"
    ));
    cfg.push_str("backend be\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n");
    cfg.push_str(&format!("    default-server {check}\n"));
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server m{} {b} check check-ssl verify none\n",
            i + 1
        ));
    }
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(&path, cfg)?;
    sh("haproxy", &["-c", "-q", "-f", &path.to_string_lossy()])
        .context("haproxy rejects its configuration")?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start haproxy")?;
    Ok(Proc { child })
}

/// nginx stream proxy with passive checks (`max_fails=3 fail_timeout=30s`),
/// connect timeout 1 s and idle timeout 30 s as in the seed document.
pub fn nginx(dir: &Path, name: &str, listen: SocketAddr, backends: &[SocketAddr]) -> Result<Proc> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(&prefix)?;
    let module = [
        "/usr/lib/nginx/modules/ngx_stream_module.so",
        "/usr/share/nginx/modules/ngx_stream_module.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let mut cfg = String::new();
    if let Some(m) = module {
        cfg.push_str(&format!("load_module {m};\n"));
    }
    cfg.push_str(&format!(
        "worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\nevents {{ worker_connections 8192; }}\n",
        p = prefix.display()
    ));
    cfg.push_str("stream {\n    upstream be {\n");
    for b in backends {
        cfg.push_str(&format!(
            "        server {b} max_fails=3 fail_timeout=30s;\n"
        ));
    }
    cfg.push_str(&format!(
        "    }}\n    server {{\n        listen {listen};\n        proxy_connect_timeout 1s;\n        proxy_timeout 30s;\n        proxy_pass be;\n    }}\n}}\n"
    ));
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, cfg)?;
    let p = prefix.to_string_lossy().into_owned();
    let c = path.to_string_lossy().into_owned();
    let err = format!("{p}/error.log");
    sh("nginx", &["-t", "-q", "-p", &p, "-e", &err, "-c", &c])
        .context("nginx rejects its configuration")?;
    let child = Command::new("nginx")
        .args(["-p", &p, "-e", &err, "-c", &c])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx")?;
    Ok(Proc { child })
}

/// A bare IPVS service (rr, masquerade) on a VIP held by dummy interface `ifname`.
/// `vip` as an address on the dummy interface `ifname`, made if missing.
fn vip_on_dummy(ifname: &str, vip: SocketAddr) -> Result<()> {
    if util::sh("ip", &["link", "show", ifname]).is_err() {
        sh("ip", &["link", "add", ifname, "type", "dummy"])?;
        sh("ip", &["link", "set", ifname, "up"])?;
        sh(
            "ip",
            &["addr", "add", &format!("{}/32", vip.ip()), "dev", ifname],
        )?;
    }
    Ok(())
}

pub fn bare_ipvs(ifname: &str, vip: SocketAddr, backends: &[SocketAddr]) -> Result<()> {
    vip_on_dummy(ifname, vip)?;
    let ipvs = Ipvs::connect()?;
    let key = ServiceKey::tcp(vip);
    let _ = ipvs.del_service(&key);
    ipvs.new_service(&ServiceSpec::new(key, "rr"))?;
    for b in backends {
        ipvs.new_dest(&key, &DestSpec::new(*b, 1))?;
    }
    Ok(())
}

/// The table of the bare nftables DNAT.
pub const BARE_NFT_TABLE: &str = "bench-bare-nft";

/// Bare nftables DNAT on `vip` (an address on the dummy `ifname`): the
/// least a hand-written round robin needs, `numgen inc mod N map`, in a
/// table of its own; nothing checks the backends.
pub fn bare_nft(ifname: &str, vip: SocketAddr, backends: &[SocketAddr]) -> Result<()> {
    vip_on_dummy(ifname, vip)?;
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {}", b.ip()))
        .collect();
    let port = backends.first().map_or(6443, SocketAddr::port);
    let rules = format!(
        "table ip {BARE_NFT_TABLE} {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n  \
         ip daddr {} tcp dport {} dnat to numgen inc mod {} map {{ {} }} : {port}\n }}\n}}\n",
        vip.ip(),
        vip.port(),
        backends.len(),
        map.join(", ")
    );
    let path = std::env::temp_dir().join("bench-bare-nft.nft");
    std::fs::write(&path, rules)?;
    let _ = util::sh("nft", &["delete", "table", "ip", BARE_NFT_TABLE]);
    sh("nft", &["-f", path.to_str().unwrap_or_default()])?;
    Ok(())
}

/// Our daemon with its defaults, plus what a node needs to say: the VIP,
/// one seed, the kubeconfig and the CA, and any `extra` flags.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub metrics: SocketAddr,
}

impl Daemon {
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per daemon, every argument a flag"
    )]
    pub fn spawn(
        bin: &Path,
        dir: &Path,
        vip: SocketAddr,
        seed: SocketAddr,
        ca_file: &Path,
        interface: &str,
        metrics: SocketAddr,
        extra: &[&str],
    ) -> Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let kubeconfig = dir.join("kubeconfig");
        util::kubeconfig(&kubeconfig, &seed.to_string(), ca_file)?;
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let child = Command::new(bin)
            .arg("--vs")
            .arg(vip.to_string())
            .arg("--rs")
            .arg(seed.to_string())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--health-ca-file")
            .arg(ca_file)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--interface")
            .arg(interface)
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .args(["--log-format", "json"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Daemon { child, metrics })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The destinations of `vip` with their weights (empty if no service).
pub fn dests(ipvs: &Ipvs, vip: SocketAddr) -> Vec<(SocketAddr, u32)> {
    ipvs.destinations(&ServiceKey::tcp(vip))
        .map(|d| {
            d.into_iter()
                .map(|d| (d.spec.addr, d.spec.weight))
                .collect()
        })
        .unwrap_or_default()
}

/// A view of the kernel's virtual servers on whichever dataplane holds
/// one: IPVS, else our nftables table (the two daemons of a run use
/// different VIPs). Its sockets stay open: a watcher polls every 10 ms,
/// and must cost the node no more on one dataplane than on the other.
pub struct KernelView {
    ipvs: Option<Ipvs>,
    nft: Option<NftTable>,
}

impl KernelView {
    pub fn open() -> KernelView {
        KernelView {
            ipvs: Ipvs::connect().ok(),
            nft: NftTable::connect().ok(),
        }
    }

    /// The backends of `vip` and their weights.
    pub fn dests(&mut self, vip: SocketAddr) -> Vec<(SocketAddr, u32)> {
        if let Some(ipvs) = &self.ipvs {
            let d = dests(ipvs, vip);
            if !d.is_empty() {
                return d;
            }
        }
        self.nft
            .as_mut()
            .and_then(|t| t.read(&[vip]).ok())
            .map(|s| {
                s.into_iter()
                    .flat_map(|s| s.backends.into_iter().map(|(a, b)| (a, b.weight)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Waits until `vip` has exactly `want` in rotation (weight > 0).
pub fn wait_in_rotation(vip: SocketAddr, want: &[SocketAddr], limit: Duration) -> Result<f64> {
    let t0 = util::now();
    let mut view = KernelView::open();
    loop {
        let mut have: Vec<SocketAddr> = view
            .dests(vip)
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(a, _)| a)
            .collect();
        have.sort();
        let mut w = want.to_vec();
        w.sort();
        if have == w {
            return Ok(util::now() - t0);
        }
        if util::now() - t0 > limit.as_secs_f64() {
            bail!("{vip}: wanted {w:?} in rotation, the kernel has {have:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
