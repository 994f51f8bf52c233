//! What a node's clients see through the VIP while something happens to it.
//!
//! - [`Prober`]: a client opening a new TLS connection through the VIP every
//!   100 ms (verified as kubelet verifies: the cluster CA, the name
//!   `kubernetes`) and sending one request on it. It keeps every attempt, so
//!   a test can count failures and the longest outage of any phase.
//! - [`IdleWatch`]: a long-lived, idle connection through the VIP, as a
//!   kubelet watch is: a watch of EndpointSlices that receives nothing until
//!   something changes. When the connection ends it reconnects at once, as a
//!   client-go reflector does. A test proves that it is served by a live
//!   apiserver by changing the watched object and waiting for the event.
//!
//! Both run on their own threads, spawned by the caller: they live in the
//! caller's network namespace (see [`crate::kernel::enter`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::tls::{self, Ca};

/// How often the prober starts a new connection.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A connection attempt through the VIP gives up after this long, and so
/// does the TLS handshake with the answer: the client the product promises
/// never fails (the benchmark's, with its 10 s timeout), for which a request
/// may be delayed but must not fail. Shorter, an answer slowed by the
/// emulated VM's saturation (11 events side by side on 2 vCPUs) counted as a
/// failure with no rule or kernel change behind it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(ca.root_store())
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TCP connection to `vip` with a TLS client on it (the handshake happens
/// with the first write).
fn connect(vip: SocketAddr, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect_timeout(&vip, CONNECT_TIMEOUT)?;
    tcp.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    tcp.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("kubernetes").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Reads an HTTP/1.1 response head; the status code.
fn read_head(tls: &mut Tls) -> std::io::Result<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            _ => head.push(byte[0]),
        }
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("response head too long"));
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))
}

/// One new connection, `GET /version`, a 200 answer: true.
fn one_request(vip: SocketAddr, config: &Arc<rustls::ClientConfig>) -> bool {
    let attempt = || -> std::io::Result<u16> {
        let mut tls = connect(vip, config)?;
        tls.write_all(b"GET /version HTTP/1.1\r\nHost: kubernetes\r\nConnection: close\r\n\r\n")?;
        read_head(&mut tls)
    };
    matches!(attempt(), Ok(200))
}

/// One connection attempt of the prober.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub start: Instant,
    pub end: Instant,
    pub ok: bool,
}

/// What the prober saw between two instants.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub failed: u64,
    /// From the start of the first failed attempt of a run of failures to
    /// the start of the next successful one (or the window's end): the
    /// longest time the VIP did not answer, to the prober's resolution.
    pub longest_outage: Duration,
}

/// Sums up `attempts` that started in `[from, to)`.
pub fn window_of(attempts: &[Attempt], from: Instant, to: Instant) -> Window {
    let mut w = Window::default();
    let mut down_since: Option<Instant> = None;
    for a in attempts.iter().filter(|a| a.start >= from && a.start < to) {
        w.requests += 1;
        if a.ok {
            if let Some(since) = down_since.take() {
                w.longest_outage = w.longest_outage.max(a.start - since);
            }
        } else {
            w.failed += 1;
            down_since.get_or_insert(a.start);
        }
    }
    if let Some(since) = down_since {
        let end = attempts
            .iter()
            .filter(|a| a.start >= from && a.start < to)
            .map(|a| a.end)
            .max()
            .unwrap_or(since);
        w.longest_outage = w.longest_outage.max(end.max(since) - since);
    }
    w
}

/// A client opening a new TLS connection through the VIP every 100 ms.
#[derive(Debug)]
pub struct Prober {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts probing `vip` (on a new thread in the caller's namespace).
    pub fn start(vip: SocketAddr, ca: &Ca) -> Prober {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = client_config(ca);
        let (log, halt) = (attempts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            while !halt.load(Ordering::Relaxed) {
                let start = Instant::now();
                let ok = one_request(vip, &config);
                lock(&log).push(Attempt {
                    start,
                    end: Instant::now(),
                    ok,
                });
                next += PROBE_EVERY;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    // A slow attempt: start the next one now, not a burst.
                    next = now;
                }
            }
        });
        Prober {
            attempts,
            stop,
            thread: Some(thread),
        }
    }

    /// Every attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        lock(&self.attempts).clone()
    }

    /// What the prober saw since `from`.
    pub fn since(&self, from: Instant) -> Window {
        window_of(
            &self.attempts(),
            from,
            Instant::now() + Duration::from_secs(3600),
        )
    }

    /// Waits until `n` attempts have started after `from` (so that a phase
    /// holds real samples), for at most `limit`.
    pub fn wait_attempts(&self, from: Instant, n: u64, limit: Duration) {
        let start = Instant::now();
        while self.since(from).requests < n {
            assert!(
                start.elapsed() < limit,
                "the prober made fewer than {n} attempts in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the first successful attempt started after `from`; how long
    /// after `from` it started.
    pub fn wait_success(&self, from: Instant, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if let Some(a) = self
                .attempts()
                .iter()
                .find(|a| a.start >= from && a.ok)
                .copied()
            {
                return Some(a.start - from);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What happened to the idle connection.
#[derive(Debug, Default)]
struct WatchLog {
    /// When a connection answered its watch request (the first and every
    /// reconnection).
    connected: Vec<Instant>,
    /// When a connection ended (closed, reset, or failed to be made).
    cut: Vec<Instant>,
    /// When data (a watch event) last arrived, and on which connection.
    data: Vec<Instant>,
}

/// How the idle connection fared after an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleFigure {
    /// Connections that ended after the instant.
    pub cuts: usize,
    /// From the instant to the first event received after the last cut (or
    /// after the instant if none): when it was served again.
    pub served_after: Option<Duration>,
}

impl IdleFigure {
    /// One cell of the report: "kept" (the same connection was served), or
    /// "cut N×, served again after X s", or "NOT served".
    pub fn describe(&self) -> String {
        match (self.cuts, self.served_after) {
            (0, Some(_)) => "kept".into(),
            (n, Some(d)) => format!("cut {n}×, served again after {:.2} s", d.as_secs_f64()),
            (_, None) => "NOT served".into(),
        }
    }
}

/// A long-lived idle connection through the VIP, like a kubelet watch.
#[derive(Debug)]
pub struct IdleWatch {
    log: Arc<Mutex<WatchLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const WATCH_REQUEST: &[u8] = b"GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=true&timeoutSeconds=86400 HTTP/1.1\r\nHost: kubernetes\r\nAccept: application/json\r\n\r\n";

impl IdleWatch {
    /// Opens the watch through `vip` and waits (up to `limit`) until it is
    /// served.
    pub fn open(vip: SocketAddr, ca: &Ca, limit: Duration) -> IdleWatch {
        let log = Arc::new(Mutex::new(WatchLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = client_config(ca);
        let (shared, halt) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                watch_once(vip, &config, &shared, &halt);
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                lock(&shared).cut.push(Instant::now());
                std::thread::sleep(PROBE_EVERY);
            }
        });
        let w = IdleWatch {
            log,
            stop,
            thread: Some(thread),
        };
        let start = Instant::now();
        while lock(&w.log).data.is_empty() {
            assert!(
                start.elapsed() < limit,
                "the idle watch through the VIP was never served within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        w
    }

    /// How the idle connection fared since `from`, without waiting.
    pub fn since(&self, from: Instant) -> IdleFigure {
        let log = lock(&self.log);
        let cuts: Vec<Instant> = log.cut.iter().copied().filter(|c| *c >= from).collect();
        let after = cuts.last().copied().unwrap_or(from);
        let served = log.data.iter().copied().find(|d| *d >= after);
        IdleFigure {
            cuts: cuts.len(),
            served_after: served.map(|s| s - from),
        }
    }

    /// Waits (up to `limit`) for an event to arrive after `from` on a
    /// connection made after the last cut: proof that the idle connection
    /// is served by a live apiserver. Call after changing the watched
    /// object (for example publishing the slice again).
    pub fn wait_served(&self, from: Instant, limit: Duration) -> IdleFigure {
        let start = Instant::now();
        loop {
            let f = self.since(from);
            if f.served_after.is_some() || start.elapsed() > limit {
                return f;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connections made so far (the first included).
    pub fn connections(&self) -> usize {
        lock(&self.log).connected.len()
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One watch connection, from connect to its end.
fn watch_once(
    vip: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    log: &Mutex<WatchLog>,
    halt: &AtomicBool,
) {
    let Ok(mut tls) = connect(vip, config) else {
        return;
    };
    if tls.write_all(WATCH_REQUEST).is_err() || !matches!(read_head(&mut tls), Ok(200)) {
        return;
    }
    lock(log).connected.push(Instant::now());
    // Idle from here: short read timeouts only so that the thread sees
    // `halt`; nothing is sent, as a watch sends nothing.
    if tls
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    while !halt.load(Ordering::Relaxed) {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => lock(log).data.push(Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64, ok: bool) -> Attempt {
        let start = base + Duration::from_millis(ms);
        Attempt {
            start,
            end: start + Duration::from_millis(20),
            ok,
        }
    }

    #[test]
    fn a_window_counts_failures_and_its_longest_outage() {
        let b = Instant::now();
        let log = [
            at(b, 0, true),
            at(b, 100, false),
            at(b, 200, false),
            at(b, 300, true),
            at(b, 400, false),
            at(b, 500, true),
            at(b, 600, false),
        ];
        let all = window_of(&log, b, b + Duration::from_secs(1));
        assert_eq!(all.requests, 7);
        assert_eq!(all.failed, 4);
        assert_eq!(all.longest_outage, Duration::from_millis(200));
        // A window ending in failure: the outage runs to its last attempt's end.
        let tail = window_of(
            &log,
            b + Duration::from_millis(550),
            b + Duration::from_secs(1),
        );
        assert_eq!((tail.requests, tail.failed), (1, 1));
        assert_eq!(tail.longest_outage, Duration::from_millis(20));
        let clean = window_of(&log, b, b + Duration::from_millis(50));
        assert_eq!(
            clean,
            Window {
                requests: 1,
                failed: 0,
                longest_outage: Duration::ZERO
            }
        );
    }

    #[test]
    fn an_idle_figure_reads_kept_cut_or_not_served() {
        let kept = IdleFigure {
            cuts: 0,
            served_after: Some(Duration::from_millis(40)),
        };
        assert!(kept.describe().starts_with("kept"));
        let cut = IdleFigure {
            cuts: 1,
            served_after: Some(Duration::from_millis(1500)),
        };
        assert_eq!(cut.describe(), "cut 1×, served again after 1.50 s");
        let lost = IdleFigure {
            cuts: 2,
            served_after: None,
        };
        assert_eq!(lost.describe(), "NOT served");
    }
}
