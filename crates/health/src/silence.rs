//! Telling a silent peer from a slow one while a request is outstanding.
//!
//! While our request is unacknowledged the kernel stops keepalive and times
//! the connection out only `TCP_USER_TIMEOUT` after the send. A live host's
//! kernel acknowledges data within a round trip even when the apiserver is
//! slow to answer, so a request segment that the kernel has had to
//! retransmit twice (no ACK for two retransmission timeouts, at least
//! 200 ms + 400 ms) means the host has gone silent: a black hole, not a slow
//! apiserver.
//!
//! The socket's retransmission count is read from
//! `/proc/thread-self/net/tcp{,6}`, only while a request has been
//! outstanding for a while; a healthy `/readyz` answers in milliseconds and
//! never gets here.
//!
//! Where and on which thread: that file shows the network namespace of the
//! thread that opens it, and reading it costs time proportional to the
//! node's TCP sockets. So the file is opened ([`open_table`]) right after the
//! socket is created, on the same thread in the same poll (the socket's own
//! namespace, whatever the other threads are in), and kept open with the
//! connection; each read ([`SocketTable::read`]) rewinds it and reads it on
//! tokio's blocking pool, never on an async worker. (`getsockopt(TCP_INFO)`
//! would be O(1), but neither socket2 nor nix offers it without `unsafe`.)
//!
//! The same line also tells whether a keepalive probe is unanswered right
//! now. On a live link its answer comes within a round trip, so one caught
//! outstanding means the host is probably silent already; the readiness
//! request then waits for the kernel to settle it (answer, or abort at
//! `TCP_USER_TIMEOUT`) instead of going into the void and starting the
//! slower in-flight path. That costs one read per readiness probe.

use std::fs::File;
use std::io::{Read, Seek};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the retransmission count is read while a request waits.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// Unanswered retransmissions of our data that mean "silent".
const SILENT_RETRANSMITS: u32 = 2;

/// The kernel's view of one TCP socket, from procfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retransmits {
    /// Bytes written but not acknowledged (or not yet sent).
    pub(crate) unacked: u32,
    /// Retransmission timeouts in a row without an ACK (`icsk_retransmits`).
    pub(crate) retransmits: u32,
    /// Keepalive probes sent and not answered yet (`icsk_probes_out`).
    pub(crate) keepalive_unanswered: u32,
}

impl Retransmits {
    pub(crate) fn silent(self) -> bool {
        self.unacked > 0 && self.retransmits >= SILENT_RETRANSMITS
    }
}

/// Opens the TCP table (`/proc/thread-self/net/tcp`, or `tcp6` for `v6`) of
/// the calling thread's network namespace; `None` without procfs. Call it on
/// the thread that creates the socket, before any `.await`: the open file
/// keeps showing that namespace, whichever thread reads it later. Opening is
/// a path lookup in procfs, independent of the number of sockets.
pub(crate) fn open_table(v6: bool) -> Option<File> {
    File::open(if v6 {
        "/proc/thread-self/net/tcp6"
    } else {
        "/proc/thread-self/net/tcp"
    })
    .ok()
}

/// The line of one connection (`local` → `peer`) in a TCP table opened by
/// [`open_table`] in the connection's namespace.
#[derive(Debug, Clone)]
pub(crate) struct SocketTable {
    file: Arc<Mutex<File>>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl SocketTable {
    pub(crate) fn new(file: File, local: SocketAddr, peer: SocketAddr) -> SocketTable {
        SocketTable {
            file: Arc::new(Mutex::new(file)),
            local,
            peer,
        }
    }

    /// Reads the socket's line on the blocking pool; `None` when the table
    /// cannot be read or the socket is not in it (then only the timeouts
    /// apply).
    pub(crate) async fn read(&self) -> Option<Retransmits> {
        let table = self.clone();
        tokio::task::spawn_blocking(move || table.read_blocking())
            .await
            .ok()
            .flatten()
    }

    /// The read itself: blocking, proportional to the node's TCP sockets.
    fn read_blocking(&self) -> Option<Retransmits> {
        // A read cancelled by its caller may still be running: the lock
        // keeps the two from sharing the file position.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.rewind().ok()?;
        let mut table = String::new();
        file.read_to_string(&mut table).ok()?;
        find(&table, self.local, self.peer)
    }
}

/// procfs prints an address as the raw bytes of each 32-bit word, read as a
/// native-endian integer, in upper-case hex; then `:PORT` in hex.
fn proc_addr(addr: SocketAddr) -> String {
    let hex: String = match addr.ip() {
        IpAddr::V4(ip) => format!("{:08X}", u32::from_ne_bytes(ip.octets())),
        IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{hex}:{:04X}", addr.port())
}

pub(crate) fn find(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<Retransmits> {
    let (local, peer) = (proc_addr(local), proc_addr(peer));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || f[1] != local || f[2] != peer {
            return None;
        }
        let (tx, _rx) = f[4].split_once(':')?;
        Some(Retransmits {
            unacked: u32::from_str_radix(tx, 16).ok()?,
            retransmits: u32::from_str_radix(f[6], 16).ok()?,
            keepalive_unanswered: f[8].parse().ok()?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_socket_by_its_addresses() {
        // Written by hand in the kernel's format, for 10.77.1.1:40000 ->
        // 10.77.1.2:6443 on a little- or big-endian host alike.
        let local: SocketAddr = "10.77.1.1:40000".parse().expect("addr");
        let peer: SocketAddr = "10.77.1.2:6443".parse().expect("addr");
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
             1: {} {} 01 0000006E:00000000 01:00000014 00000002     0        1 2 1 0 20 4 30 10 -1\n",
            proc_addr(local),
            proc_addr(peer)
        );
        let r = find(&table, local, peer).expect("found");
        assert_eq!(
            r,
            Retransmits {
                unacked: 0x6e,
                retransmits: 2,
                keepalive_unanswered: 1,
            }
        );
        assert!(r.silent());
        assert_eq!(find(&table, peer, local), None);
        let v6: SocketAddr = "[fd77::1]:443".parse().expect("addr");
        assert_eq!(proc_addr(v6).len(), 32 + 5);
    }

    #[test]
    fn reads_a_real_socket_twice_through_one_open_table() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let table = open_table(false).expect("procfs");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let table = SocketTable::new(
            table,
            client.local_addr().expect("local"),
            client.peer_addr().expect("peer"),
        );
        let idle = Some(Retransmits {
            unacked: 0,
            retransmits: 0,
            keepalive_unanswered: 0,
        });
        // The second read rewinds: same answer.
        assert_eq!(table.read_blocking(), idle);
        assert_eq!(table.read_blocking(), idle);
    }

    #[test]
    fn a_table_opened_in_the_sockets_namespace_is_read_from_any_thread() {
        // Regression (blocking procfs reads on async workers): reads now run
        // on tokio's blocking pool, whose threads need not share the
        // namespace of the thread that made the socket. The table opened
        // beside the socket keeps showing the socket's namespace.
        let (table, client) = std::thread::spawn(|| {
            apiserver_proxy_testkit::netns::isolate();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let file = open_table(false).expect("procfs");
            let client = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            let table = SocketTable::new(
                file,
                client.local_addr().expect("local"),
                client.peer_addr().expect("peer"),
            );
            (table, (client, listener))
        })
        .join()
        .expect("isolated thread");
        // This thread is in another namespace, where the socket is not.
        assert!(table.read_blocking().is_some(), "socket not found");
        drop(client);
    }

    #[test]
    fn a_slow_table_read_does_not_stall_the_runtime() {
        // Regression: the table was read with std::fs inline on the async
        // worker, stalling every task on it for the length of the read (with
        // many sockets, every 200 ms per slow backend). Here the read is
        // made to block (its lock is held); a timer on the same
        // single-threaded runtime must still fire.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let table = SocketTable::new(
            open_table(false).expect("procfs"),
            client.local_addr().expect("local"),
            client.peer_addr().expect("peer"),
        );
        let held = table.file.lock().expect("lock");
        let (done, finished) = std::sync::mpsc::channel();
        let reader = table.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let first = rt.block_on(async {
                tokio::select! {
                    biased;
                    r = reader.read() => format!("read first: {r:?}"),
                    () = tokio::time::sleep(Duration::from_millis(50)) => "timer".to_string(),
                }
            });
            let _ = done.send(first);
            rt.shutdown_background();
        });
        let first = finished.recv_timeout(Duration::from_secs(20));
        drop(held);
        assert_eq!(first.as_deref(), Ok("timer"), "the runtime stalled");
        runtime.join().expect("runtime thread");
    }
}
