//! Dataplane: requests/s and latency with wrk, directly to a backend and
//! through bare IPVS, our VIP on IPVS, bare nftables DNAT, our VIP on
//! nftables, haproxy and nginx, for new plain connections, keep-alive and
//! new TLS connections.
//!
//! The backends are three listeners of one small server (TLS or plain HTTP
//! on the same port, told apart by the first byte) sharing one two-thread
//! runtime, so a path that spreads load over three backends gets no more
//! server CPU than the direct path to one.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apiserver_proxy_testkit::netns::Netns;
use apiserver_proxy_testkit::tls::provider;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::failover::{Ours, VIP_OURS};
use crate::lb;
use crate::results::{Dataplane, WrkRun};
use crate::util::{Env, sleep_s};

const BARE: &str = "10.103.97.3:6443";
/// Bare nftables DNAT (a round robin in a table of its own, nothing checks
/// the backends), and our daemon on the nftables dataplane.
const BARE_NFT: &str = "10.103.97.5:6443";
const OURS_NFT: &str = "10.103.97.4:6443";

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
            buf.drain(..pos + 4);
            let close = head.contains("connection: close");
            let resp: &[u8] = if close {
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
            };
            if s.write_all(resp).await.is_err() {
                return;
            }
            if close {
                let _ = s.shutdown().await;
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn serve(
    rt: &tokio::runtime::Handle,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    rt.spawn(async move {
        let Ok(l) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await.is_err() {
                    return;
                }
                if first[0] == 0x16 {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        serve_http(s).await;
                    }
                } else {
                    serve_http(tcp).await;
                }
            });
        }
    });
}

fn wrk(url: &str, close: bool, conns: u32, secs: f64) -> Result<(f64, f64, f64, u64)> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{}s", secs as u64),
        "--latency",
        "--timeout",
        "5s",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).output().context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rps = 0.0;
    let (mut p50, mut p99) = (f64::NAN, f64::NAN);
    let mut errors = 0u64;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = ms(v.trim());
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = ms(v.trim());
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok((rps, p50, p99, errors))
}

/// wrk's "1.23ms", "456.00us", "1.01s" in milliseconds.
fn ms(v: &str) -> f64 {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .map(|n| n * factor)
        .unwrap_or(f64::NAN)
}

pub fn run(env: &Env, ours: &mut Ours) -> Result<Dataplane> {
    println!("bench: dataplane");
    let namespaces: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
    let leaf = env.ca.apiserver_cert(&[]);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der.clone()], leaf.private_key())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let mut backends = Vec::new();
    for ns in &namespaces {
        let a = SocketAddr::new(ns.ip(false), 6443);
        let l = ns
            .spawn(move || {
                let l = std::net::TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(l)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("listener thread panicked"))??;
        serve(env.rt.handle(), l, cfg.clone());
        backends.push(a);
    }
    // Our daemon learns the new backends from the API, as after a change of masters.
    let ips: Vec<(IpAddr, Option<bool>)> = backends.iter().map(|b| (b.ip(), Some(true))).collect();
    for m in ours.masters.iter().chain(std::iter::once(&ours.extra)) {
        m.publish(ips.clone());
    }
    let vip: SocketAddr = VIP_OURS.parse()?;
    lb::wait_in_rotation(vip, &backends, Duration::from_secs(120))?;
    lb::bare_ipvs("bare0", BARE.parse()?, &backends)?;
    lb::bare_nft("bare1", BARE_NFT.parse()?, &backends)?;
    // Our daemon on nftables, learning the same backends from the same API.
    let _nft_daemon = lb::Daemon::spawn(
        &env.daemon,
        &env.path("ours-nft-dp"),
        OURS_NFT.parse()?,
        ours.masters[0].addr(),
        &env.ca_file,
        "apiproxy2",
        "127.0.0.1:18006".parse()?,
        &["--dataplane", "nftables"],
    )?;
    lb::wait_in_rotation(OURS_NFT.parse()?, &backends, Duration::from_secs(120))?;
    let _haproxy = lb::haproxy(
        env.dir.path(),
        "haproxy-dp",
        "127.0.0.1:7011".parse()?,
        &backends,
        "inter 2s fall 3 rise 2",
    )?;
    let _nginx = lb::nginx(
        env.dir.path(),
        "nginx-dp",
        "127.0.0.1:7013".parse()?,
        &backends,
    )?;
    sleep_s(3.0);

    let paths: [(&str, String); 7] = [
        ("direct", backends[0].to_string()),
        ("bare-ipvs", BARE.to_string()),
        ("ours", VIP_OURS.to_string()),
        ("bare-nft", BARE_NFT.to_string()),
        ("ours-nft", OURS_NFT.to_string()),
        ("haproxy", "127.0.0.1:7011".to_string()),
        ("nginx", "127.0.0.1:7013".to_string()),
    ];
    let workloads: [(&str, &str, bool); 3] = [
        ("new", "http", true),
        ("keepalive", "http", false),
        ("tls-new", "https", true),
    ];
    let secs = if env.quick { 2.0 } else { 3.0 };
    // Five rounds: with three, the round-to-round spread under emulation
    // (±10–25 %) was larger than the 5 % the goal asks us to resolve.
    let rounds = if env.quick { 1 } else { 5 };
    let conns = 4;
    for (_, target) in &paths {
        let _ = wrk(&format!("http://{target}/"), true, conns, 1.0);
    }
    let mut out = Dataplane {
        duration_s: secs,
        connections: conns,
        rounds,
        runs: Vec::new(),
    };
    for round in 0..rounds {
        for (w, scheme, close) in workloads {
            // Rotate the order each round, so no path always runs first or last.
            for k in 0..paths.len() {
                let (path, target) = &paths[(k + round) % paths.len()];
                let (rps, p50, p99, errors) =
                    wrk(&format!("{scheme}://{target}/"), close, conns, secs)?;
                println!(
                    "bench: dataplane {w:<9} {path:<9} round {round}: {rps:>9.0} req/s p50 {p50:.2} ms p99 {p99:.2} ms errors {errors}"
                );
                out.runs.push(WrkRun {
                    path: path.to_string(),
                    workload: w.to_string(),
                    round,
                    rps,
                    p50_ms: p50,
                    p99_ms: p99,
                    errors,
                });
            }
        }
    }
    // Back to the fake masters for what follows.
    let three: Vec<(IpAddr, Option<bool>)> = ours
        .masters
        .iter()
        .map(|m| (m.addr().ip(), Some(true)))
        .collect();
    for m in ours.masters.iter().chain(std::iter::once(&ours.extra)) {
        m.publish(three.clone());
    }
    let _ = lb::wait_in_rotation(vip, &ours.addrs(), Duration::from_secs(120));
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", lb::BARE_NFT_TABLE])
        .status();
    if let Ok(ipvs) = apiserver_proxy_dataplane::Ipvs::connect() {
        let _ = ipvs.del_service(&apiserver_proxy_dataplane::ServiceKey::tcp(BARE.parse()?));
    }
    drop(namespaces);
    Ok(out)
}
