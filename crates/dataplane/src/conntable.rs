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

/// The TCP connections through `virtual_addr` (to `dest`, if given) in the
/// table of the calling *thread's* network namespace.
///
/// The table is streamed a line at a time and only matching lines are
/// kept: on a node whose kube-proxy runs in IPVS mode it can hold 10^5 to
/// 10^6 foreign connections, and this is read at the moment failover must
/// be fast, within the daemon's memory limit.
///
/// `/proc/net` is the process's namespace (its main thread's); a thread that
/// entered another namespace (tests do) must read `/proc/thread-self/net`.
pub fn read_through(virtual_addr: SocketAddr, dest: Option<SocketAddr>) -> Result<Vec<IpvsConn>> {
    const OP: &str = "read /proc/thread-self/net/ip_vs_conn";
    let file = match std::fs::File::open("/proc/thread-self/net/ip_vs_conn") {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::IpvsUnavailable),
        Err(source) => return Err(Error::Io { op: OP, source }),
    };
    filter_lines(std::io::BufReader::new(file), virtual_addr, dest)
}

/// [`read_through`] on any reader of the table's text.
pub fn filter_lines(
    reader: impl std::io::BufRead,
    virtual_addr: SocketAddr,
    dest: Option<SocketAddr>,
) -> Result<Vec<IpvsConn>> {
    let mut out = Vec::new();
    let mut line = String::new();
    let mut reader = reader;
    let mut line_no = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|source| Error::Io {
            op: "read /proc/thread-self/net/ip_vs_conn",
            source,
        })?;
        if n == 0 {
            return Ok(out);
        }
        line_no += 1;
        if let Some(c) = parse_line(&line, line_no)?
            && c.protocol == "TCP"
            && c.virtual_addr == virtual_addr
            && dest.is_none_or(|d| c.dest == d)
        {
            out.push(c);
        }
    }
}

/// Parses the proc file's text (the header line is skipped).
///
/// The kernel prints IPv4 addresses as 8 hex digits and IPv6 addresses in
/// colon form, ports as 4 hex digits:
/// `TCP 0A670502 A2C4 0A670502 192B C0A8010A 192B ESTABLISHED 899`
pub fn parse(text: &str) -> Result<Vec<IpvsConn>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(c) = parse_line(line, i + 1)? {
            out.push(c);
        }
    }
    Ok(out)
}

/// One line: `None` for the header and blank lines.
fn parse_line(line: &str, line_no: usize) -> Result<Option<IpvsConn>> {
    let mut fields = [""; 9];
    let mut count = 0;
    for (slot, f) in fields.iter_mut().zip(line.split_whitespace()) {
        *slot = f;
        count += 1;
    }
    if count == 0 || fields[0] == "Pro" {
        return Ok(None);
    }
    let err = |detail: String| Error::ConnTable {
        line: line_no,
        detail,
    };
    if count < 9 {
        return Err(err(format!("expected at least 9 fields, found {count}")));
    }
    let addr = |ip: &str, port: &str| -> Result<SocketAddr> {
        let ip = parse_ip(ip).ok_or_else(|| err(format!("{ip:?} is not an address")))?;
        let port = u16::from_str_radix(port, 16)
            .map_err(|_| err(format!("{port:?} is not a hex port")))?;
        Ok(SocketAddr::new(ip, port))
    };
    Ok(Some(IpvsConn {
        protocol: fields[0].to_string(),
        client: addr(fields[1], fields[2])?,
        virtual_addr: addr(fields[3], fields[4])?,
        dest: addr(fields[5], fields[6])?,
        state: fields[7].to_string(),
        expires: fields[8]
            .parse()
            .map_err(|_| err(format!("{:?} is not a number of seconds", fields[8])))?,
    }))
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
    fn filters_tcp_through_one_vip_and_dest_a_line_at_a_time() {
        let vip = "10.103.5.2:6443".parse().expect("addr");
        let dest = "192.168.1.10:6443".parse().expect("addr");
        let hit = filter_lines(SAMPLE.as_bytes(), vip, Some(dest)).expect("filter");
        assert_eq!(
            hit.len(),
            1,
            "the UDP entry to the same dest is not a TCP socket"
        );
        let all = filter_lines(SAMPLE.as_bytes(), vip, None).expect("filter");
        assert_eq!(all.len(), 2, "both TCP entries through the VIP");
        // Only what matches is kept: 200,000 foreign lines cost nothing
        // but the time to read them.
        let mut big = String::from(SAMPLE);
        for i in 0..200_000u32 {
            big.push_str(&format!(
                "TCP 0A000001 {:04X} 0A600001 01BB C0A80A0A 1F90 ESTABLISHED 900\n",
                i % 65536
            ));
        }
        let hit =
            filter_lines(std::io::BufReader::new(big.as_bytes()), vip, Some(dest)).expect("filter");
        assert_eq!(hit.len(), 1);
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
