//! The client side of the failover comparison: a new TLS connection and
//! `GET /version` through a load balancer every period, whoever answered
//! told apart by the certificate it presented (each fake master has its own).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::now;

/// One client request: start (run clock), latency, who answered.
#[derive(Debug, Clone)]
pub struct Req {
    pub start: f64,
    pub done: bool,
    pub latency: f64,
    /// Index of the master that answered, `None` if the request failed.
    pub backend: Option<usize>,
}

pub type Log = Arc<Mutex<Vec<Req>>>;

fn lock(log: &Log) -> std::sync::MutexGuard<'_, Vec<Req>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// A snapshot of the log.
pub fn snapshot(log: &Log) -> Vec<Req> {
    lock(log).clone()
}

fn which(
    certs: &[CertificateDer<'static>],
    peer: Option<&[CertificateDer<'static>]>,
) -> Option<usize> {
    let leaf = peer?.first()?;
    certs.iter().position(|c| c == leaf)
}

/// One request: connect, TLS (verified, name `kubernetes`), GET /version.
pub async fn request(
    target: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    certs: Arc<Vec<CertificateDer<'static>>>,
    timeout: Duration,
) -> Option<usize> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(target).await.ok()?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("kubernetes").ok()?;
        let mut s = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .ok()?;
        let idx = which(&certs, s.get_ref().1.peer_certificates());
        s.write_all(b"GET /version HTTP/1.1\r\nHost: kubernetes\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.ok()?;
        if buf.starts_with(b"HTTP/1.1 200") {
            idx
        } else {
            None
        }
    };
    tokio::time::timeout(timeout, work).await.ok().flatten()
}

/// Starts a request every `period` against `target` until `stop`; every
/// request is logged at its start and completed when it ends.
pub fn start_loop(
    rt: &tokio::runtime::Handle,
    target: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    certs: Arc<Vec<CertificateDer<'static>>>,
    period: Duration,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) -> Log {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let start = now();
            let i = {
                let mut v = lock(&l);
                v.push(Req {
                    start,
                    done: false,
                    latency: 0.0,
                    backend: None,
                });
                v.len() - 1
            };
            let (l, tls, certs) = (l.clone(), tls.clone(), certs.clone());
            tokio::spawn(async move {
                let backend = request(target, tls, certs, timeout).await;
                let mut v = lock(&l);
                v[i].done = true;
                v[i].latency = now() - start;
                v[i].backend = backend;
            });
        }
    });
    log
}

/// An idle, established connection on the victim (a kubelet watch waiting
/// for data). The receiver gets the run-clock time the client saw it end
/// (error or EOF), or `None` if it was still open at the cap.
pub fn idle_on(
    target: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    certs: &[CertificateDer<'static>],
    victim: usize,
    cap: Duration,
) -> Option<mpsc::Receiver<Option<f64>>> {
    for _ in 0..40 {
        let Ok(tcp) = TcpStream::connect_timeout(&target, Duration::from_secs(3)) else {
            continue;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let name = ServerName::try_from("kubernetes").ok()?;
        let conn = rustls::ClientConnection::new(tls.clone(), name).ok()?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        if s.write_all(b"GET /version HTTP/1.1\r\nHost: kubernetes\r\n\r\n")
            .is_err()
        {
            continue;
        }
        let mut buf = [0u8; 4096];
        if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
            continue;
        }
        let peer: Option<Vec<CertificateDer<'static>>> =
            s.conn.peer_certificates().map(|c| c.to_vec());
        if which(certs, peer.as_deref()) != Some(victim) {
            continue;
        }
        let _ = s.sock.set_read_timeout(Some(cap));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let end = loop {
                match s.read(&mut buf) {
                    Ok(0) => break Some(now()),
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break None;
                    }
                    Err(_) => break Some(now()),
                }
            };
            let _ = tx.send(end);
        });
        return Some(rx);
    }
    None
}
