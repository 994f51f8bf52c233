//! Failover under a big IPVS connection table: a node whose kube-proxy runs
//! in IPVS mode can hold 10^5 to 10^6 connections of its own services, and
//! the daemon reads the table when an apiserver dies (to cut the node's
//! sockets to it). The same crash is measured with an empty table and with
//! `FOREIGN` foreign entries: the time until the master is out of rotation
//! in the kernel and the daemon's peak memory.
//!
//! The foreign entries are made the way real clients make them, through a
//! foreign virtual service: a raw socket sends a SYN then an ACK per flow,
//! and IPVS creates an ESTABLISHED entry for each (the packets then go to a
//! sink interface and vanish).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apiserver_proxy_dataplane::Ipvs;
use socket2::{Domain, Protocol, Socket, Type};

use crate::failover::{Ours, VIP_OURS, addr};
use crate::lb;
use crate::results;
use crate::util::{self, Env, sleep_s};

/// The foreign connections in the table during the second measurement.
pub const FOREIGN: u32 = 200_000;
const FOREIGN_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const FOREIGN_PORT: u16 = 443;
const SINK_DEST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const SINK: &str = "bench-sink0";

pub fn run(env: &Env, ours: &mut Ours) -> Result<results::BigTable> {
    println!("bench: bigtable");
    let trials = if env.quick { 1 } else { 3 };
    let mut empty = Vec::new();
    for _ in 0..trials {
        empty.push(crash_failover(ours)?);
    }
    let made = fill()?;
    let counted = count_entries();
    println!("bench: bigtable: {made} flows sent, {counted} entries in the table");
    let mut full = Vec::new();
    for _ in 0..trials {
        full.push(crash_failover(ours)?);
    }
    let _ = util::sh(
        "ipvsadm",
        &["-D", "-t", &format!("{FOREIGN_VIP}:{FOREIGN_PORT}")],
    );
    Ok(results::BigTable {
        foreign_entries: counted,
        empty,
        full,
    })
}

/// Crashes the third master and measures until the kernel took it out of
/// rotation, with
/// the daemon's memory sampled every 5 ms meanwhile; then brings it back.
fn crash_failover(ours: &mut Ours) -> Result<results::BigTableTrial> {
    let ipvs = Ipvs::connect()?;
    let vip = addr(VIP_OURS);
    let victim = ours.masters[2].clone();
    let gone = victim.addr();
    let pid = ours.daemon.pid();
    let before = util::rss_kib(pid).unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = util::rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t0 = Instant::now();
    victim.stop();
    let mut removed = None;
    while t0.elapsed() < Duration::from_secs(30) {
        // Out of rotation: weight 0 or gone, no new connection goes to it.
        if !lb::dests(&ipvs, vip)
            .iter()
            .any(|(a, w)| *a == gone && *w > 0)
        {
            removed = Some(t0.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The memory is sampled until the master is back in rotation: the
    // read of the connection table that follows the delete (and holds the
    // loop meanwhile) is inside that window.
    let back = Instant::now();
    victim.start();
    lb::wait_in_rotation(vip, &ours.addrs(), Duration::from_secs(300))?;
    let back_s = back.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    sleep_s(1.0);
    Ok(results::BigTableTrial {
        removed_s: removed,
        back_s: Some(back_s),
        rss_before_kib: before,
        rss_peak_kib: peak.load(Ordering::Relaxed),
    })
}

/// Makes `FOREIGN` established entries through a foreign virtual service.
fn fill() -> Result<u32> {
    let service = format!("{FOREIGN_VIP}:{FOREIGN_PORT}");
    let sink = format!("{SINK_DEST}:{FOREIGN_PORT}");
    // The foreign VIP on a dummy, as kube-proxy keeps its ClusterIPs on
    // kube-ipvs0, and a route that swallows what IPVS forwards.
    let foreign_vip = format!("{FOREIGN_VIP}/32");
    for args in [
        &["link", "add", SINK, "type", "dummy"][..],
        &["link", "set", SINK, "up"],
        &["addr", "add", foreign_vip.as_str(), "dev", SINK],
        &["route", "add", "10.99.0.0/16", "dev", SINK],
    ] {
        util::sh("ip", args)?;
    }
    for args in [
        &["-A", "-t", service.as_str(), "-s", "rr"][..],
        &["-a", "-t", service.as_str(), "-r", sink.as_str(), "-m"],
    ] {
        util::sh("ipvsadm", args)?;
    }
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
        .context("a raw socket (IPPROTO_RAW)")?;
    let to = SocketAddr::V4(SocketAddrV4::new(FOREIGN_VIP, 0)).into();
    let mut sent = 0;
    for i in 0..FOREIGN {
        // One client address per 50,000 flows, ports from 10,000 up.
        let src = Ipv4Addr::new(10, 98, (i / 50_000) as u8, 1);
        let sport = 10_000 + (i % 50_000) as u16;
        for (flags, seq) in [(0x02u8, 1000u32), (0x10, 1001)] {
            let p = packet(src, sport, FOREIGN_VIP, FOREIGN_PORT, flags, seq);
            socket.send_to(&p, &to).context("send a flow's packet")?;
        }
        sent += 1;
    }
    Ok(sent)
}

/// Lines in the connection table (its header aside).
fn count_entries() -> u64 {
    match std::fs::read_to_string("/proc/thread-self/net/ip_vs_conn") {
        Ok(t) => t.lines().count().saturating_sub(1) as u64,
        Err(_) => 0,
    }
}

/// An IPv4 TCP packet with no payload: `flags` (SYN 0x02, ACK 0x10).
fn packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45; // version 4, 5 words
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    if flags & 0x10 != 0 {
        t[8..12].copy_from_slice(&1u32.to_be_bytes());
    }
    t[12] = 5 << 4; // data offset: 5 words
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    // The pseudo-header: addresses, protocol, TCP length.
    let mut pseudo = 0u32;
    for pair in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += 6 + 20;
    let tcp_sum = checksum(&p[20..], pseudo);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// The internet checksum of `data`, starting from `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN's checksums verify: summing the header with its checksum
    /// gives 0xffff (complemented: 0).
    #[test]
    fn packets_carry_valid_checksums() {
        let p = packet(
            Ipv4Addr::new(10, 98, 0, 1),
            10_000,
            FOREIGN_VIP,
            FOREIGN_PORT,
            0x02,
            1000,
        );
        assert_eq!(checksum(&p[..20], 0), 0);
        let mut pseudo = 0u32;
        for pair in p[12..20].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        assert_eq!(checksum(&p[20..], pseudo + 6 + 20), 0);
    }
}
