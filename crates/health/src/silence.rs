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
//! `/proc/thread-self/net/tcp{,6}` (the calling thread's network namespace),
//! only while a request has been outstanding for a while; a healthy
//! `/readyz` answers in milliseconds and never gets here.
//!
//! The same line also tells whether a keepalive probe is unanswered right
//! now. On a live link its answer comes within a round trip, so one caught
//! outstanding means the host is probably silent already; the readiness
//! request then waits for the kernel to settle it (answer, or abort at
//! `TCP_USER_TIMEOUT`) instead of going into the void and starting the
//! slower in-flight path. That costs one read per readiness probe.

use std::net::{IpAddr, SocketAddr};
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

/// Reads the socket `local` → `peer` from procfs; `None` when procfs is not
/// there or the socket is not found (then only the timeouts apply).
pub(crate) fn read(local: SocketAddr, peer: SocketAddr) -> Option<Retransmits> {
    let file = match peer.ip() {
        IpAddr::V4(_) => "/proc/thread-self/net/tcp",
        IpAddr::V6(_) => "/proc/thread-self/net/tcp6",
    };
    let table = std::fs::read_to_string(file).ok()?;
    find(&table, local, peer)
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
    fn reads_a_real_socket_of_this_thread() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let r = read(
            client.local_addr().expect("local"),
            client.peer_addr().expect("peer"),
        );
        assert_eq!(
            r,
            Some(Retransmits {
                unacked: 0,
                retransmits: 0,
                keepalive_unanswered: 0,
            })
        );
    }
}
