//! What every section shares: the CA, a scratch folder, the async runtime,
//! one clock, and small readers of /proc and /metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apiserver_proxy_testkit::tls::{Ca, provider};

use crate::RunArgs;

/// The run's one clock: seconds since the first call.
pub fn now() -> f64 {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_secs_f64()
}

pub fn sleep_s(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s.max(0.0)));
}

#[derive(Debug)]
pub struct Env {
    pub ca: Ca,
    pub ca_file: PathBuf,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub tls: Arc<rustls::ClientConfig>,
    pub daemon: PathBuf,
    pub trials: usize,
    pub quick: bool,
}

impl Env {
    pub fn new(args: &RunArgs) -> Result<Env> {
        now();
        let ca = Ca::new("kubernetes-ca");
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.cert.cert_pem)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(ca.root_store())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let trials = if args.quick {
            args.trials.min(3)
        } else {
            args.trials
        };
        Ok(Env {
            ca,
            ca_file,
            dir,
            rt,
            tls: Arc::new(tls),
            daemon: args.daemon.clone(),
            trials,
            quick: args.quick,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Writes a kubeconfig that reaches `server` (`IP:PORT`) with our CA.
pub fn kubeconfig(path: &Path, server: &str, ca_file: &Path) -> Result<()> {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: bench\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            ca_file.display()
        ),
    )
    .with_context(|| format!("write {}", path.display()))
}

/// Runs a command, failing with its output.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// utime + stime of a process in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// VmRSS in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU use of `pid` over `secs` (percent of one core) and its RSS at the end,
/// while `during` runs (called every 100 ms; returns how many events it made).
pub fn watch_process(
    pid: u32,
    secs: f64,
    mut during: impl FnMut(f64),
) -> (Option<f64>, Option<u64>) {
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut max_rss = rss_kib(pid);
    while t0.elapsed().as_secs_f64() < secs {
        during(t0.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(100));
        max_rss = max_rss.max(rss_kib(pid));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)
        .zip(c0)
        .map(|(a, b)| (a - b) / elapsed * 100.0);
    (cpu, max_rss)
}

/// A plain HTTP GET, body as text ("" on any error).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// A reading of a histogram: sum (seconds), count, buckets (le, count).
pub type Histogram = (f64, u64, Vec<(f64, u64)>);

/// The reconcile histogram of a daemon.
pub fn reconcile_histogram(metrics: SocketAddr) -> Option<Histogram> {
    let text = http_get(metrics, "/metrics");
    let name = "apiserver_proxy_reconcile_duration_seconds";
    let mut sum = None;
    let mut count = None;
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(r) = rest.strip_prefix("_sum") {
            if r.starts_with(' ') || r.starts_with('{') {
                sum = value;
            }
        } else if let Some(r) = rest.strip_prefix("_count") {
            if r.starts_with(' ') || r.starts_with('{') {
                count = value.map(|v| v as u64);
            }
        } else if let Some(r) = rest.strip_prefix("_bucket{le=\"") {
            let le = r.split('"').next().unwrap_or("");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            if let Some(v) = value {
                buckets.push((le, v as u64));
            }
        }
    }
    Some((sum?, count?, buckets))
}

/// Mean pass (ms) and the smallest bucket bound holding every pass, between two readings.
pub fn reconcile_window(a: &Histogram, b: &Histogram) -> (Option<f64>, Option<f64>, u64) {
    let n = b.1.saturating_sub(a.1);
    if n == 0 {
        return (None, None, 0);
    }
    let mean = (b.0 - a.0) / n as f64 * 1000.0;
    let bound = b.2.iter().find_map(|(le, c)| {
        let before =
            a.2.iter()
                .find(|(l, _)| l == le)
                .map(|(_, c)| *c)
                .unwrap_or(0);
        (c.saturating_sub(before) == n).then_some(*le * 1000.0)
    });
    (Some(mean), bound.filter(|b| b.is_finite()), n)
}

/// Percentile (0..=100) of values, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}
