//! `cargo xtask demo`: the daemon against three simulated apiservers, with a
//! live timeline. Runs inside the xtask VM (it needs IPVS and root).
//!
//! Three fake apiservers (TLS, /readyz, the EndpointSlice API) live in
//! network namespaces. The daemon runs with its defaults plus a VIP. A
//! client sends a request through the VIP every 100 ms, and one idle
//! long-lived connection (a kubelet-style watch) sits on the VIP. Then:
//! master 1 crashes, master 2 is black-holed, master 3's /readyz says 500,
//! and all three come back. Every line printed is something observed:
//! the daemon's own log (JSON) for state changes and kernel changes, the
//! client's results, the idle connection's fate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver_proxy_testkit::kernel;
use apiserver_proxy_testkit::master::Master;
use apiserver_proxy_testkit::tls::{Ca, provider};

const VIP: &str = "10.103.97.2:6443";
const PORT: u16 = 6443;

/// A fake apiserver with the name the timeline calls it by.
struct Named {
    name: String,
    m: Master,
}

impl Named {
    fn ip(&self) -> IpAddr {
        self.m.addr().ip()
    }
}

struct Timeline {
    t0: Instant,
}

impl Timeline {
    fn say(&self, who: &str, what: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {who:<8} {what}");
        let _ = std::io::stdout().flush();
    }
}

fn tls_client(ca: &Ca) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(ca.root_store())
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(cfg: &Arc<rustls::ClientConfig>, timeout: Duration) -> std::io::Result<Tls> {
    let vip: SocketAddr = VIP.parse().expect("vip");
    let tcp = TcpStream::connect_timeout(&vip, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let name = rustls::pki_types::ServerName::try_from("kubernetes").expect("name");
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// One short request through the VIP; true if an HTTP answer came back.
fn request(cfg: &Arc<rustls::ClientConfig>) -> bool {
    let Ok(mut s) = connect(cfg, Duration::from_secs(2)) else {
        return false;
    };
    if s.write_all(b"GET /version HTTP/1.1\r\nHost: kubernetes\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn main() {
    let daemon_bin = std::env::args()
        .nth(1)
        .expect("usage: demo PATH-TO-bcs-apiserver-proxy");
    let _netns = kernel::enter();
    let ca = Ca::new("kubernetes-ca");

    let masters: Vec<Named> = (1..=3)
        .map(|n| Named {
            name: format!("master-{n}"),
            m: Master::remote(ca.apiserver_cert(&[]), false, PORT),
        })
        .collect();
    // Every fake apiserver publishes the same EndpointSlice: all three.
    let slice: Vec<(IpAddr, Option<bool>)> = masters.iter().map(|n| (n.ip(), Some(true))).collect();
    for n in &masters {
        n.m.publish(slice.clone());
    }
    for m in &masters {
        println!("setup: {} serves TLS on {}:{PORT}", m.name, m.ip());
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert.cert_pem).expect("write ca");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{}:{PORT}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: demo\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            masters[0].ip(),
            ca_file.display()
        ),
    )
    .expect("write kubeconfig");

    // The timeline starts with the daemon.
    let tl = Arc::new(Timeline { t0: Instant::now() });
    let mut daemon = Command::new(&daemon_bin)
        .args(["--vs", VIP, "--rs", &format!("{}:{PORT}", masters[0].ip())])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--health-ca-file")
        .arg(&ca_file)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--metrics-addr", "127.0.0.1:8004", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    tl.say(
        "setup",
        &format!("daemon started: --vs {VIP}, one seed, defaults otherwise"),
    );

    // The daemon's JSON log, turned into timeline lines.
    let marks: Arc<Mutex<Vec<(String, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let stderr = daemon.stderr.take().expect("stderr");
        let tl = tl.clone();
        let marks = marks.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let f = &v["fields"];
                let msg = f["message"].as_str().unwrap_or("");
                let text = match msg {
                    "backend state changed" => format!(
                        "{} -> {} ({})",
                        f["backend"].as_str().unwrap_or("?"),
                        f["to"].as_str().unwrap_or("?"),
                        f["reason"].as_str().unwrap_or("?")
                    ),
                    "kernel change" => format!("kernel: {}", f["op"].as_str().unwrap_or("?")),
                    "cut node-local connections to a dead apiserver" => {
                        format!("cut {} node-local connection(s)", f["count"])
                    }
                    "desired backends changed" => format!(
                        "desired set from {}: {}",
                        f["source"].as_str().unwrap_or("?"),
                        f["backends"].as_str().unwrap_or("?")
                    ),
                    m if m.starts_with("FAIL-OPEN") => m.to_string(),
                    _ => continue,
                };
                if let Ok(mut m) = marks.lock() {
                    m.push((text.clone(), tl.t0.elapsed().as_secs_f64()));
                }
                tl.say("daemon", &text);
            }
        });
    }

    let cfg = tls_client(&ca);
    // Wait until all three are in the kernel.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if ipvs_dests() == 3 && request(&cfg) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The client loop.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (ok, failed, stop, tl, cfg) = (
            ok.clone(),
            failed.clone(),
            stop.clone(),
            tl.clone(),
            cfg.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if request(&cfg) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tl.say("client", "request through the VIP FAILED");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    // The idle long-lived connection: a watch that waits for data.
    {
        let (stop, tl, cfg) = (stop.clone(), tl.clone(), cfg.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = connect(&cfg, Duration::from_secs(2)) else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let _ = s.sock.set_read_timeout(Some(Duration::from_secs(120)));
                let _ = s.write_all(b"GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=1 HTTP/1.1\r\nHost: kubernetes\r\n\r\n");
                let peer = s.sock.peer_addr().ok();
                tl.say(
                    "idle",
                    &format!("watch connection open via the VIP ({peer:?})"),
                );
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            tl.say(
                                "idle",
                                "watch connection closed by the server; reconnecting",
                            );
                            break;
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            tl.say("idle", &format!("watch connection CUT ({e}); reconnecting"));
                            break;
                        }
                    }
                }
            }
        });
    }

    let step = |what: &str| tl.say("event", what);
    std::thread::sleep(Duration::from_secs(3));
    let (m1, m2, m3) = (&masters[0], &masters[1], &masters[2]);

    step(&format!(
        "CRASH: {} stops (connections reset, new ones refused)",
        m1.name
    ));
    let crash_at = tl.t0.elapsed().as_secs_f64();
    m1.m.stop();
    std::thread::sleep(Duration::from_secs(5));
    step(&format!("RECOVER: {} serves again", m1.name));
    m1.m.start();
    std::thread::sleep(Duration::from_secs(8));

    step(&format!(
        "BLACK HOLE: {} drops every packet, in and out",
        m2.name
    ));
    let hole_at = tl.t0.elapsed().as_secs_f64();
    m2.m.ns().black_hole();
    std::thread::sleep(Duration::from_secs(8));
    step(&format!("RECOVER: {} reachable again", m2.name));
    m2.m.ns().restore();
    std::thread::sleep(Duration::from_secs(8));

    step(&format!(
        "DRAIN: {}'s /readyz answers 500 (graceful shutdown)",
        m3.name
    ));
    let drain_at = tl.t0.elapsed().as_secs_f64();
    let failed_before_drain = failed.load(Ordering::Relaxed);
    m3.m.set_ready(false);
    std::thread::sleep(Duration::from_secs(10));
    let failed_in_drain = failed.load(Ordering::Relaxed) - failed_before_drain;
    step(&format!("RECOVER: {}'s /readyz answers 200", m3.name));
    m3.m.set_ready(true);
    // Rise 2 at the default 5 s interval: back within about 10 s.
    std::thread::sleep(Duration::from_secs(14));

    // The control plane changes: master-3 leaves the EndpointSlice, then
    // returns. The daemon's watch must carry that to the kernel.
    let three: Vec<(IpAddr, Option<bool>)> = masters.iter().map(|n| (n.ip(), Some(true))).collect();
    step(&format!("API: {} removed from the EndpointSlice", m3.name));
    let api_remove_at = tl.t0.elapsed().as_secs_f64();
    for n in &masters {
        n.m.publish(three[..2].to_vec());
    }
    std::thread::sleep(Duration::from_secs(4));
    step(&format!("API: {} listed again", m3.name));
    let api_add_at = tl.t0.elapsed().as_secs_f64();
    for n in &masters {
        n.m.publish(three.clone());
    }
    std::thread::sleep(Duration::from_secs(6));

    // Tampering: someone deletes our virtual server (as `ipvsadm -C` or a
    // kube-proxy cleanup would). The periodic resync must put it back.
    step("TAMPER: `ipvsadm -D` deletes our virtual server");
    let failed_before_tamper = failed.load(Ordering::Relaxed);
    let _ = Command::new("ipvsadm").args(["-D", "-t", VIP]).status();
    let tampered = Instant::now();
    let mut repaired = None;
    while tampered.elapsed() < Duration::from_secs(10) {
        if ipvs_dests() == 3 {
            repaired = Some(tampered.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match repaired {
        Some(t) => step(&format!(
            "REPAIRED: the virtual server and its 3 backends are back ({:.0} ms)",
            t * 1000.0
        )),
        None => step("NOT REPAIRED within 10 s"),
    }
    std::thread::sleep(Duration::from_secs(3));
    let failed_in_tamper = failed.load(Ordering::Relaxed) - failed_before_tamper;
    stop.store(true, Ordering::Relaxed);

    // Footprint: resident memory, and CPU over an idle stretch with three
    // healthy backends (the client loop has stopped).
    let pid = daemon.id();
    std::thread::sleep(Duration::from_secs(1));
    let cpu_before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = cpu_seconds(pid)
        .zip(cpu_before)
        .map(|(a, b)| (a - b) / 10.0);
    let rss = rss_kib(pid);

    let first_after = |t: f64, needle: &str| -> Option<f64> {
        marks
            .lock()
            .ok()?
            .iter()
            .find(|(text, at)| *at >= t && text.contains(needle))
            .map(|(_, at)| at - t)
    };
    let ms = |d: Option<f64>| d.map_or("not seen".to_string(), |d| format!("{:.0} ms", d * 1000.0));
    println!();
    println!("Summary (emulated VM: compare ratios, not absolute times)");
    println!(
        "  crash      -> deleted from IPVS: {}",
        ms(first_after(
            crash_at,
            &format!(
                "DelDest {{ vip: Endpoint({VIP}), backend: Endpoint({}",
                m1.ip()
            )
        ))
    );
    println!(
        "  black hole -> deleted from IPVS: {}",
        ms(first_after(
            hole_at,
            &format!(
                "DelDest {{ vip: Endpoint({VIP}), backend: Endpoint({}",
                m2.ip()
            )
        ))
    );
    println!(
        "  /readyz 500 -> weight 0:         {}",
        ms(first_after(
            drain_at,
            &format!(
                "SetWeight {{ vip: Endpoint({VIP}), backend: Endpoint({}",
                m3.ip()
            )
        ))
    );
    println!("  client requests failed during the drain: {failed_in_drain}");
    println!(
        "  EndpointSlice: removed -> weight 0: {}",
        ms(first_after(
            api_remove_at,
            &format!(
                "SetWeight {{ vip: Endpoint({VIP}), backend: Endpoint({}:{PORT}), weight: 0",
                m3.ip()
            )
        ))
    );
    println!(
        "  EndpointSlice: listed  -> in IPVS:  {}",
        ms(first_after(
            api_add_at,
            &format!("Endpoint({}:{PORT}), weight: 1", m3.ip())
        ))
    );
    println!("  tampering (`ipvsadm -D`) -> repaired: {}", ms(repaired));
    println!("  client requests failed while our virtual server was gone: {failed_in_tamper}");
    println!(
        "  client requests in all: {} ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "  daemon resident memory: {}",
        rss.map_or("unknown".into(), |k| format!(
            "{:.1} MiB",
            k as f64 / 1024.0
        ))
    );
    println!(
        "  daemon CPU while idle (3 healthy backends, 10 s): {}",
        idle_cpu.map_or("unknown".into(), |c| format!(
            "{:.2} % of a core",
            c * 100.0
        ))
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// How many destinations with a non-zero weight our virtual server has, as
/// `ipvsadm` (not the daemon) sees it.
fn ipvs_dests() -> usize {
    kernel::ipvsadm_dests(VIP)
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .count()
}

/// utime + stime of a process, in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
