//! The IPVS connection table (`/proc/net/ip_vs_conn`): which client went
//! through which virtual server to which real server.
//!
//! The manager needs it for one thing: after deleting a dead real server, find
//! the node's own sockets that were balanced to it, so they can be cut
//! ([`crate::sockdiag`]) instead of hanging until the client's own timeout.
//! Netlink has no dump of IPVS connections, so this reads the proc file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Error, Result};

/// One IPVS connection entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsConn {
    /// `TCP`, `UDP`, `SCTP`...
    pub protocol: String,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The virtual server it connected to.
    pub virtual_addr: SocketAddr,
    /// The real server IPVS chose.
    pub dest: SocketAddr,
    /// `ESTABLISHED`, `TIME_WAIT`, `SYN_RECV`...
    pub state: String,
    /// Seconds until the entry expires.
    pub expires: u64,
}

/// Reads the table of the calling *thread's* network namespace.
///
/// `/proc/net` is the process's namespace (its main thread's); a thread that
/// entered another namespace (tests do) must read `/proc/thread-self/net`.
pub fn read() -> Result<Vec<IpvsConn>> {
    let path = "/proc/thread-self/net/ip_vs_conn";
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::IpvsUnavailable),
        Err(source) => {
            return Err(Error::Io {
                op: "read /proc/thread-self/net/ip_vs_conn",
                source,
            });
        }
    };
    parse(&text)
}

/// Parses the proc file's text (the header line is skipped).
///
/// The kernel prints IPv4 addresses as 8 hex digits and IPv6 addresses in
/// colon form, ports as 4 hex digits:
/// `TCP 0A670502 A2C4 0A670502 192B C0A8010A 192B ESTABLISHED 899`
pub fn parse(text: &str) -> Result<Vec<IpvsConn>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "Pro" {
            continue;
        }
        let err = |detail: String| Error::ConnTable {
            line: line_no,
            detail,
        };
        if fields.len() < 9 {
            return Err(err(format!(
                "expected at least 9 fields, found {}",
                fields.len()
            )));
        }
        let addr = |ip: &str, port: &str| -> Result<SocketAddr> {
            let ip = parse_ip(ip).ok_or_else(|| err(format!("{ip:?} is not an address")))?;
            let port = u16::from_str_radix(port, 16)
                .map_err(|_| err(format!("{port:?} is not a hex port")))?;
            Ok(SocketAddr::new(ip, port))
        };
        out.push(IpvsConn {
            protocol: fields[0].to_string(),
            client: addr(fields[1], fields[2])?,
            virtual_addr: addr(fields[3], fields[4])?,
            dest: addr(fields[5], fields[6])?,
            state: fields[7].to_string(),
            expires: fields[8]
                .parse()
                .map_err(|_| err(format!("{:?} is not a number of seconds", fields[8])))?,
        });
    }
    Ok(out)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        return s.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if s.len() != 8 {
        return None;
    }
    u32::from_str_radix(s, 16)
        .ok()
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
}

/// The TCP connections that went through `virtual_addr` to `dest`.
pub fn tcp_through(
    conns: &[IpvsConn],
    virtual_addr: SocketAddr,
    dest: SocketAddr,
) -> Vec<IpvsConn> {
    conns
        .iter()
        .filter(|c| c.protocol == "TCP" && c.virtual_addr == virtual_addr && c.dest == dest)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shape as printed by ip_vs_conn_seq_show (Debian 6.1): IPv4 as hex,
    // IPv6 in colon form.
    const SAMPLE: &str = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A670502 A2C4 0A670502 192B C0A8010A 192B ESTABLISHED     899
TCP 0A670502 A2C6 0A670502 192B C0A8010B 192B TIME_WAIT         7
UDP 0A000001 D431 0A670502 0035 C0A8010A 0035 UDP             299
TCP fd00:0000:0000:0000:0000:0000:0000:0002 B000 fd00:0000:0000:0000:0000:0000:0000:0002 192B fd77:0000:0000:0001:0000:0000:0000:0002 192B ESTABLISHED 900
";

    #[test]
    fn parses_ipv4_and_ipv6_entries() {
        let conns = parse(SAMPLE).expect("parses");
        assert_eq!(conns.len(), 4);
        assert_eq!(conns[0].client, "10.103.5.2:41668".parse().expect("addr"));
        assert_eq!(
            conns[0].virtual_addr,
            "10.103.5.2:6443".parse().expect("addr")
        );
        assert_eq!(conns[0].dest, "192.168.1.10:6443".parse().expect("addr"));
        assert_eq!(conns[0].state, "ESTABLISHED");
        assert_eq!(conns[0].expires, 899);
        assert_eq!(conns[3].client, "[fd00::2]:45056".parse().expect("addr"));
        assert_eq!(conns[3].dest, "[fd77:0:0:1::2]:6443".parse().expect("addr"));
    }

    #[test]
    fn filters_tcp_through_one_dest() {
        let conns = parse(SAMPLE).expect("parses");
        let hit = tcp_through(
            &conns,
            "10.103.5.2:6443".parse().expect("addr"),
            "192.168.1.10:6443".parse().expect("addr"),
        );
        assert_eq!(
            hit.len(),
            1,
            "the UDP entry to the same dest is not a TCP socket"
        );
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        for bad in [
            "TCP 0A670502 A2C4\n",
            "TCP 0A6705 A2C4 0A670502 192B C0A8010A 192B ESTABLISHED 1\n",
            "TCP 0A670502 ZZZZ 0A670502 192B C0A8010A 192B ESTABLISHED 1\n",
            "TCP 0A670502 A2C4 0A670502 192B C0A8010A 192B ESTABLISHED soon\n",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains("line 1"), "{err}");
        }
    }
}
