//! The node's own TCP sockets (`/proc/net/tcp` and `tcp6`): which local
//! clients are connected to a virtual server.
//!
//! The IPVS connection table ([`crate::conntable`]) names a connection's
//! real server, but an entry can outlive its service or vanish with it (a
//! flush, kube-proxy's cleanup). The socket table is what the node's
//! clients actually hold: after a virtual server had to be created again,
//! it is where the sockets left hanging on the old one are found.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Error, Result};

/// `TCP_ESTABLISHED` in the `st` column.
const ESTABLISHED: &str = "01";

/// One socket: its local and remote address, and whether it is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub established: bool,
}

/// The established sockets of the calling *thread's* network namespace
/// whose remote end is `remote` (IPv4 and IPv6 tables).
pub fn established_to(remote: SocketAddr) -> Result<Vec<TcpSocket>> {
    // `/proc/net` is the process's namespace; a thread that entered
    // another one (tests do) must read `/proc/thread-self/net`.
    let (file, op, path) = if remote.is_ipv4() {
        (
            "tcp",
            "read /proc/thread-self/net/tcp",
            "/proc/thread-self/net/tcp",
        )
    } else {
        (
            "tcp6",
            "read /proc/thread-self/net/tcp6",
            "/proc/thread-self/net/tcp6",
        )
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { op, source })?;
    Ok(parse(&text, file)?
        .into_iter()
        .filter(|s| s.established && s.remote == remote)
        .collect())
}

/// Parses the text of `/proc/net/tcp` or `tcp6` (`file` names it in
/// errors); the header line is skipped.
///
/// Addresses are the raw network-order bytes printed as native-endian
/// 32-bit words in hex (one word for IPv4, four for IPv6); ports are
/// plain hex numbers.
pub fn parse(text: &str, file: &'static str) -> Result<Vec<TcpSocket>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "sl" {
            continue;
        }
        let err = |detail: String| Error::SocketTable {
            file,
            line: i + 1,
            detail,
        };
        if fields.len() < 4 {
            return Err(err(format!(
                "expected at least 4 fields, found {}",
                fields.len()
            )));
        }
        let addr = |field: &str| -> Result<SocketAddr> {
            parse_addr(field).ok_or_else(|| err(format!("{field:?} is not an address:port")))
        };
        out.push(TcpSocket {
            local: addr(fields[1])?,
            remote: addr(fields[2])?,
            established: fields[3] == ESTABLISHED,
        });
    }
    Ok(out)
}

fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // From the kernel (x86_64, 6.x): a listener on 127.0.0.1:34023 and one
    // connection to it from port 36184, both ends, as
    // `cat /proc/net/tcp` printed them (trailing columns cut).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   1: 0100007F:84E7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 33161 1 0000000003d6141c 100 0 0 10 0
   2: 0100007F:8D58 0100007F:84E7 01 00000000:00000000 00:00000000 00000000     0        0 33162 2 000000007fe2e351 20 0 0 10 -1
   3: 0100007F:84E7 0100007F:8D58 01 00000000:00000000 00:00000000 00000000     0        0 33163 1 00000000822a91d2 20 0 0 10 -1
";

    // The same for [::1]:57275 and a client from port 55444 (`cat /proc/net/tcp6`).
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:DFBB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 33164 1 00000000576f2567 100 0 0 10 0
   1: 00000000000000000000000001000000:D894 00000000000000000000000001000000:DFBB 01 00000000:00000000 00:00000000 00000000     0        0 33165 2 00000000061fe637 20 0 0 10 -1
";

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn reads_the_kernels_ipv4_table() {
        let s = parse(TCP, "tcp").expect("parse");
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            TcpSocket {
                local: a("127.0.0.1:34023"),
                remote: a("0.0.0.0:0"),
                established: false
            }
        );
        assert_eq!(
            s[1],
            TcpSocket {
                local: a("127.0.0.1:36184"),
                remote: a("127.0.0.1:34023"),
                established: true
            }
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn reads_the_kernels_ipv6_table() {
        let s = parse(TCP6, "tcp6").expect("parse");
        assert_eq!(s[0].local, a("[::1]:57275"));
        assert!(!s[0].established);
        assert_eq!(s[1].local, a("[::1]:55444"));
        assert_eq!(s[1].remote, a("[::1]:57275"));
        assert!(s[1].established);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        let e = parse("  sl  local\n   0: 0100007F:84E7 zz:0000 01\n", "tcp")
            .expect_err("bad")
            .to_string();
        assert!(e.contains("tcp, line 2") && e.contains("zz:0000"), "{e}");
        let e = parse("   0: 0100007F:84E7\n", "tcp")
            .expect_err("short")
            .to_string();
        assert!(e.contains("at least 4 fields"), "{e}");
    }

    #[test]
    fn the_calling_threads_table_lists_a_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let found = established_to(l.local_addr().expect("addr")).expect("read");
        assert!(
            found
                .iter()
                .any(|s| s.local == c.local_addr().expect("local")),
            "{found:?}"
        );
    }
}
