//! The nf_tables codec and client against a real kernel: the host's (which
//! has nf_tables, unlike IPVS, so these are not `#[ignore]`d), each test in
//! its own network namespace. `nft` (Debian's nftables, installed by
//! `cargo xtask test`) is the independent view of what the kernel holds.

use apiserver_proxy_dataplane::conntrack::Conntrack;
use apiserver_proxy_dataplane::nft::client::Nft;
use apiserver_proxy_dataplane::nft::table::{NftBackend, NftService, NftTable};
use apiserver_proxy_dataplane::{HostEvent, HostMonitor};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use apiserver_proxy_dataplane::nft::codec::{
    Expr, NF_INET_LOCAL_OUT, NFT_USERDATA_INTEGER_VERDICT_MAP, dnat, dnat_to, match_vip,
    round_robin,
};
use apiserver_proxy_testkit::kernel::{enter_without_ipvs, run};

const TABLE: &str = "bcs-apiserver-proxy";

fn dnat_rule(vip: &str, backend: &str, port: u16) -> Vec<Expr> {
    dnat(
        vip.parse().expect("vip"),
        port,
        backend.parse().expect("backend"),
        port,
    )
}

/// Our table, chain and rule in one batch; the kernel holds exactly what
/// `nft` would have written for the same rule, and a batch with a bad
/// message changes nothing; deleting the table leaves a foreign one alone.
#[test]
fn nftables_one_batch_creates_the_table_chain_and_rule_and_a_failed_batch_changes_nothing() {
    let _netns = enter_without_ipvs();
    // A table that is not ours, as kube-proxy's or firewalld's would be.
    run("nft", &["add", "table", "ip", "kube-proxy"]);
    let mut nft = Nft::connect().expect("nf_tables socket");
    nft.apply("create our table", |b| {
        b.new_table(TABLE);
        b.new_base_chain(TABLE, "output", "nat", NF_INET_LOCAL_OUT, -100);
        b.new_rule(
            TABLE,
            "output",
            &dnat_rule("10.103.97.2", "192.168.1.10", 6443),
        );
    })
    .expect("the batch is applied");
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert!(
        listed.contains("type nat hook output priority dstnat; policy accept;")
            || listed.contains("type nat hook output priority -100; policy accept;"),
        "{listed}"
    );
    assert!(
        listed.contains("ip daddr 10.103.97.2 tcp dport 6443 counter packets 0 bytes 0 dnat ip to 192.168.1.10:6443"),
        "{listed}"
    );

    // A rule for a chain that does not exist: the kernel refuses the whole
    // batch, including the chain it would have added first.
    let err = nft
        .apply("a bad batch", |b| {
            b.new_base_chain(TABLE, "extra", "nat", NF_INET_LOCAL_OUT, -90);
            b.new_rule(TABLE, "missing", &dnat_rule("10.0.0.1", "10.0.0.2", 1));
        })
        .expect_err("refused");
    assert!(err.to_string().contains("a bad batch"), "{err}");
    let after = run("nft", &["list", "table", "inet", TABLE]);
    assert!(
        !after.contains("chain extra"),
        "half a batch was applied: {after}"
    );

    nft.apply("delete our table", |b| b.del_table(TABLE))
        .expect("deleted");
    let ruleset = run("nft", &["list", "ruleset"]);
    assert!(!ruleset.contains(TABLE), "{ruleset}");
    assert!(
        ruleset.contains("table ip kube-proxy"),
        "a foreign table was touched: {ruleset}"
    );
}

/// A listener on the namespace's loopback that greets each connection with
/// its `tag`, then echoes what it gets until the client closes.
fn backend(tag: u8, loopback: &str) -> SocketAddr {
    let listener = TcpListener::bind((loopback, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = c.write_all(&[tag]);
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = c.read(&mut buf) {
                    let _ = c.write_all(&buf[..n]);
                }
            });
        }
    });
    addr
}

const VIP4: &str = "10.103.97.2";

/// A connection to `vip`:6443 and the tag of the backend that answered it.
fn through(vip: &str) -> (TcpStream, char) {
    let ip: IpAddr = vip.parse().expect("vip");
    let mut c = TcpStream::connect_timeout(&SocketAddr::new(ip, 6443), Duration::from_secs(2))
        .expect("connect to the VIP");
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut tag = [0u8; 1];
    c.read_exact(&mut tag).expect("the backend answers");
    (c, char::from(tag[0]))
}

/// Backend chains b0 -> `a`, b1 -> `b`, the chain `vip` dispatching over
/// `slots` (a backend's weight is its number of slots), and the output
/// hook's jump to it, in one batch.
fn build(nft: &mut Nft, vip: &str, a: SocketAddr, b: SocketAddr, slots: &[&str]) {
    nft.apply("build", |batch| {
        batch.new_table(TABLE);
        batch.new_chain(TABLE, "b0");
        batch.new_rule(TABLE, "b0", &dnat_to(a.ip(), a.port()));
        batch.new_chain(TABLE, "b1");
        batch.new_rule(TABLE, "b1", &dnat_to(b.ip(), b.port()));
        batch.new_chain(TABLE, "vip");
        batch.new_jump_map(TABLE, 1, slots, &NFT_USERDATA_INTEGER_VERDICT_MAP);
        batch.new_rule(TABLE, "vip", &round_robin(1, slots.len() as u32));
        batch.new_base_chain(TABLE, "output", "nat", NF_INET_LOCAL_OUT, -100);
        let mut to_vip = match_vip(vip.parse().expect("vip"), 6443);
        to_vip.push(Expr::Jump {
            chain: "vip".into(),
        });
        batch.new_rule(TABLE, "output", &to_vip);
    })
    .expect("the batch is applied");
}

/// The round robin the dataplane is built on, end to end on the host
/// kernel: the node's own connections to the VIP go through the NAT output
/// hook, `numgen inc` over a map of jumps alternates the backends exactly,
/// and each backend's chain DNATs to it. All in one batch of our codec.
#[test]
fn nftables_connections_to_the_vip_alternate_over_the_backends() {
    let _netns = enter_without_ipvs();
    // The VIP must be routable for connect(); this host kernel has no dummy
    // interface driver, so it sits on lo here.
    run("ip", &["addr", "add", "10.103.97.2/32", "dev", "lo"]);
    let (a, b) = (backend(b'a', "127.0.0.1"), backend(b'b', "127.0.0.1"));
    let mut nft = Nft::connect().expect("nf_tables socket");
    build(&mut nft, VIP4, a, b, &["b0", "b1"]);
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert!(
        listed.contains("numgen inc mod 2 vmap { 0 : jump b0, 1 : jump b1 }"),
        "{listed}"
    );
    let seen: String = (0..6).map(|_| through(VIP4).1).collect();
    assert!(seen == "ababab" || seen == "bababa", "{seen}");
    // Each backend's counter saw its three connections.
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert_eq!(listed.matches("counter packets 3 ").count(), 2, "{listed}");
}

/// Weights are slots of the map (2:1 gives exactly two of three new
/// connections to the first), and a drain is the backend leaving the map in
/// one batch (flush the chain, its new rule and map): no new connection goes
/// to it, and its established connection keeps working, its NAT binding in
/// conntrack.
#[test]
fn nftables_weights_are_slots_and_a_drained_backend_keeps_its_connections() {
    let _netns = enter_without_ipvs();
    run("ip", &["addr", "add", "10.103.97.2/32", "dev", "lo"]);
    let (a, b) = (backend(b'a', "127.0.0.1"), backend(b'b', "127.0.0.1"));
    let mut nft = Nft::connect().expect("nf_tables socket");
    build(&mut nft, VIP4, a, b, &["b0", "b0", "b1"]);
    let mut kept = Vec::new();
    let mut seen = String::new();
    for _ in 0..6 {
        let (c, tag) = through(VIP4);
        seen.push(tag);
        kept.push((c, tag));
    }
    assert_eq!(seen.matches('a').count(), 4, "weights 2:1 over six: {seen}");
    let (mut on_b, _) = kept
        .into_iter()
        .find(|(_, tag)| *tag == 'b')
        .expect("a connection on b");

    nft.apply("drain b", |batch| {
        batch.flush_chain(TABLE, "vip");
        batch.new_jump_map(TABLE, 2, &["b0"], &NFT_USERDATA_INTEGER_VERDICT_MAP);
        batch.new_rule(TABLE, "vip", &round_robin(2, 1));
    })
    .expect("drained");
    let after: String = (0..4).map(|_| through(VIP4).1).collect();
    assert_eq!(
        after, "aaaa",
        "a new connection went to the drained backend"
    );
    on_b.write_all(b"still there?").expect("write");
    let mut echo = [0u8; 12];
    on_b.read_exact(&mut echo)
        .expect("the established connection to the drained backend works");
    assert_eq!(&echo, b"still there?");
}

/// IPv6 alike: `ip6 daddr`, 16-byte addresses, the NAT in the `ip6` family.
#[test]
fn nftables_ipv6_connections_alternate_too() {
    let _netns = enter_without_ipvs();
    run(
        "ip",
        &["-6", "addr", "add", "fd00::2/128", "dev", "lo", "nodad"],
    );
    let (a, b) = (backend(b'a', "::1"), backend(b'b', "::1"));
    let mut nft = Nft::connect().expect("nf_tables socket");
    build(&mut nft, "fd00::2", a, b, &["b0", "b1"]);
    let seen: String = (0..4).map(|_| through("fd00::2").1).collect();
    assert!(seen == "abab" || seen == "baba", "{seen}");
}

fn service(vip: &str, backends: &[(&str, u32)]) -> NftService {
    NftService {
        vip: vip.parse().expect("vip"),
        scheduler: "rr".into(),
        backends: backends
            .iter()
            .map(|(a, w)| {
                (
                    a.parse().expect("backend"),
                    NftBackend {
                        weight: *w,
                        ..NftBackend::default()
                    },
                )
            })
            .collect(),
    }
}

/// Weights and counters zeroed: what a write asked for.
fn asked(mut s: NftService) -> NftService {
    for b in s.backends.values_mut() {
        *b = NftBackend {
            weight: b.weight,
            ..NftBackend::default()
        };
    }
    s
}

/// The table layer reads back exactly what it wrote, for both families and
/// two virtual servers side by side; a backend removed and a weight set to
/// 0 come back so; what someone else breaks reads as missing; deleting one
/// virtual server leaves the other, and cleanup leaves a foreign table.
#[test]
fn nftables_the_table_reads_back_what_it_wrote_and_what_was_broken() {
    let _netns = enter_without_ipvs();
    run("nft", &["add", "table", "inet", "kube-proxy"]);
    let mut t = NftTable::connect().expect("nf_tables socket");
    t.check().expect("nf_tables answers");
    let v4 = service(
        "10.103.97.2:6443",
        &[("192.168.1.10:6443", 1), ("192.168.1.11:6443", 1)],
    );
    let v6 = service("[fd00::2]:6443", &[("[fd00::10]:6443", 1)]);
    assert!(t.read(&[v4.vip]).expect("read").is_empty());
    t.write(&v4).expect("write v4");
    t.write(&v6).expect("write v6");
    let read = t.read(&[v4.vip, v6.vip]).expect("read");
    assert_eq!(
        read.into_iter().map(asked).collect::<Vec<_>>(),
        [v4.clone(), v6.clone()]
    );
    assert_eq!(t.list().expect("list"), [v4.vip, v6.vip]);
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert!(
        listed.contains("comment \"vip 10.103.97.2:6443 rr\""),
        "{listed}"
    );

    // Drain one, remove the other, add a third: one write.
    let changed = service(
        "10.103.97.2:6443",
        &[("192.168.1.10:6443", 0), ("192.168.1.12:6443", 1)],
    );
    t.write(&changed).expect("write");
    let read = t.read(&[changed.vip]).expect("read");
    assert_eq!(
        read.into_iter().map(asked).collect::<Vec<_>>(),
        std::slice::from_ref(&changed)
    );
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert!(!listed.contains("192.168.1.11"), "{listed}");

    // Someone flushes a backend's chain: that backend reads as missing.
    run(
        "nft",
        &[
            "flush",
            "chain",
            "inet",
            TABLE,
            "be-10.103.97.2-6443-192.168.1.12-6443",
        ],
    );
    let read = t.read(&[changed.vip]).expect("read");
    assert!(
        !read[0]
            .backends
            .contains_key(&"192.168.1.12:6443".parse().expect("a")),
        "{read:?}"
    );
    // Someone flushes the VIP's chain: every weight reads as 0.
    t.write(&changed).expect("repair");
    run(
        "nft",
        &["flush", "chain", "inet", TABLE, "vip-10.103.97.2-6443"],
    );
    let read = t.read(&[changed.vip]).expect("read");
    assert!(read[0].backends.values().all(|b| b.weight == 0), "{read:?}");
    // Someone flushes the output chain: the VIP reads as missing.
    t.write(&changed).expect("repair");
    run("nft", &["flush", "chain", "inet", TABLE, "output"]);
    assert!(t.read(&[changed.vip, v6.vip]).expect("read").is_empty());
    t.write(&changed).expect("repair");
    t.write(&v6).expect("repair");
    assert_eq!(t.read(&[changed.vip]).expect("read").len(), 1);

    assert!(t.delete(changed.vip).expect("delete"));
    assert!(!t.delete(changed.vip).expect("delete again"));
    assert_eq!(t.list().expect("list"), [v6.vip]);
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert!(!listed.contains("10.103.97.2"), "{listed}");

    assert!(t.delete_table().expect("cleanup"));
    assert!(!t.delete_table().expect("cleanup again"));
    let ruleset = run("nft", &["list", "ruleset"]);
    assert!(ruleset.contains("table inet kube-proxy"), "{ruleset}");
    assert!(!ruleset.contains(TABLE), "{ruleset}");
}

/// What the nf_tables monitor reports within `limit` (polled).
fn events_within(m: &mut HostMonitor, limit: Duration) -> Vec<HostEvent> {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while started.elapsed() < limit {
        out.extend(m.drain().expect("drain"));
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

/// The nf_tables monitor reports a change to our table by another process
/// (the `nft` binary), and stays quiet for our own writes and for other
/// tables' changes.
#[test]
fn nftables_monitor_reports_others_changes_to_our_table_only() {
    let _netns = enter_without_ipvs();
    let mut m = HostMonitor::open_nftables().expect("monitor");
    let mut t = NftTable::connect().expect("nf_tables socket");
    t.write(&service("10.103.97.2:6443", &[("192.168.1.10:6443", 1)]))
        .expect("write");
    run("nft", &["add", "table", "inet", "kube-proxy"]);
    run("nft", &["add", "chain", "inet", "kube-proxy", "services"]);
    let quiet = events_within(&mut m, Duration::from_millis(300));
    assert!(quiet.is_empty(), "{quiet:?}");

    run(
        "nft",
        &["flush", "chain", "inet", TABLE, "vip-10.103.97.2-6443"],
    );
    let seen = events_within(&mut m, Duration::from_millis(300));
    assert!(
        matches!(seen.as_slice(), [HostEvent::OurRulesChanged { by_pid }] if *by_pid != 0),
        "{seen:?}"
    );
    run("nft", &["delete", "table", "inet", TABLE]);
    let seen = events_within(&mut m, Duration::from_millis(300));
    assert_eq!(seen.len(), 1, "{seen:?}");
}

/// The counting chains see every packet of a connection through the VIP,
/// both ways, per backend (the NAT chain's counter sees only the first):
/// 100 bytes echoed over one connection read back as at least 100 bytes in
/// and out for the backend that served it, and nothing for the other.
#[test]
fn nftables_every_packet_is_counted_per_backend_both_ways() {
    let _netns = enter_without_ipvs();
    run("ip", &["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    let a = backend(b'a', "127.0.0.1");
    let b = backend(b'b', "127.0.0.1");
    let vip: SocketAddr = format!("{VIP4}:6443").parse().expect("vip");
    let mut t = NftTable::connect().expect("nf_tables socket");
    let mut want = service(&vip.to_string(), &[]);
    for x in [a, b] {
        want.backends.insert(
            x,
            NftBackend {
                weight: 1,
                ..NftBackend::default()
            },
        );
    }
    t.write(&want).expect("write");
    let (mut c, tag) = through(VIP4);
    let served = if tag == 'a' { a } else { b };
    let idle = if tag == 'a' { b } else { a };
    for _ in 0..10 {
        c.write_all(&[7u8; 10]).expect("send");
        let mut back = [0u8; 10];
        c.read_exact(&mut back).expect("echo");
    }
    let read = t.read(&[vip]).expect("read").remove(0);
    let s = read.backends[&served];
    assert_eq!(s.connections, 1, "{read:?}");
    assert!(s.in_packets >= 11 && s.out_packets >= 11, "{read:?}");
    // Payload plus the IP and TCP headers of every packet.
    assert!(s.in_bytes >= 100 + 40 * s.in_packets, "{read:?}");
    assert!(s.out_bytes >= 101 + 40 * s.out_packets, "{read:?}");
    let i = read.backends[&idle];
    assert_eq!((i.in_packets, i.out_packets), (0, 0), "{read:?}");
}

/// ctnetlink on the host kernel: the dump of a VIP's connections is
/// filtered by the kernel (a connection to elsewhere is not even sent), an
/// entry names the backend the NAT chose, and deleting it removes it.
#[test]
fn nftables_conntrack_lists_and_deletes_the_vips_connections_only() {
    let _netns = enter_without_ipvs();
    run("ip", &["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    let a = backend(b'a', "127.0.0.1");
    let b = backend(b'b', "127.0.0.1");
    let vip: SocketAddr = format!("{VIP4}:6443").parse().expect("vip");
    let mut want = service(&vip.to_string(), &[]);
    want.backends.insert(
        a,
        NftBackend {
            weight: 1,
            ..NftBackend::default()
        },
    );
    NftTable::connect()
        .expect("nf_tables")
        .write(&want)
        .expect("write");
    let (through_vip, tag) = through(VIP4);
    assert_eq!(tag, 'a');
    let _elsewhere = TcpStream::connect(b).expect("a connection not through the VIP");

    let mut ct = Conntrack::connect().expect("ctnetlink");
    let entries = ct.entries_to(vip, None).expect("dump");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(ct.last_dump_len(), 1, "the kernel sent more than the VIP's");
    let e = &entries[0];
    assert_eq!(
        (e.client, e.backend, e.state),
        (through_vip.local_addr().expect("local"), a, "ESTABLISHED")
    );
    assert_eq!(ct.entries_to(vip, Some(b)).expect("dump"), []);
    assert_eq!(ct.delete(&entries).expect("delete"), 1);
    assert_eq!(ct.delete(&entries).expect("gone already"), 0);
    assert_eq!(ct.entries_to(vip, None).expect("dump"), []);
}

/// The outside VIP on a node that holds it: a client in another namespace
/// reaches a backend in a third through the VIP (prerouting DNAT), the
/// backend sees the connection come from this node (masquerade: its reply
/// must come back through us), and the rules are idempotent, repaired when
/// deleted, and removed when no longer wanted.
#[test]
fn nftables_the_outside_vip_is_balanced_for_clients_off_the_node_and_masqueraded() {
    use apiserver_proxy_testkit::netns::Netns;
    let _netns = enter_without_ipvs();
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding");
    run("ip", &["addr", "add", "192.168.50.100/32", "dev", "lo"]);
    let client = Netns::new();
    let backend_host = Netns::new();
    let backend: SocketAddr = SocketAddr::new(IpAddr::V4(backend_host.ipv4), 6443);
    // The backend answers with the address the connection came from.
    let server = backend_host.spawn(move || {
        let l = TcpListener::bind(backend).expect("bind");
        for mut c in l.incoming().flatten().take(3) {
            let peer = c.peer_addr().expect("peer").ip().to_string();
            let _ = c.write_all(peer.as_bytes());
        }
    });
    let vip: SocketAddr = "192.168.50.100:6443".parse().expect("vip");
    let mut table = NftTable::connect().expect("nf_tables");
    table
        .write(&service(
            "192.168.50.100:6443",
            &[(&backend.to_string(), 1)],
        ))
        .expect("virtual server");
    let changes = table.ensure_outside(&[vip], true).expect("outside");
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(
        table.ensure_outside(&[vip], true).expect("again"),
        Vec::<String>::new()
    );
    let ask = || {
        let out = client.exec(
            "bash",
            &[
                "-c",
                "exec 3<>/dev/tcp/192.168.50.100/6443 && timeout 5 cat <&3",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let seen = ask();
    assert_eq!(
        seen,
        backend_host.peer_ipv4.to_string(),
        "the backend saw the connection from this node, not from the client {}",
        client.ipv4
    );
    // Someone deletes the masquerade: the next pass puts it back.
    let listed = run(
        "nft",
        &["-a", "list", "chain", "inet", TABLE, "postrouting"],
    );
    let handle = listed
        .lines()
        .find(|l| l.contains("masquerade"))
        .and_then(|l| l.rsplit("handle ").next())
        .expect("masquerade rule")
        .trim()
        .to_string();
    run(
        "nft",
        &[
            "delete",
            "rule",
            "inet",
            TABLE,
            "postrouting",
            "handle",
            &handle,
        ],
    );
    let changes = table.ensure_outside(&[vip], true).expect("repair");
    assert_eq!(
        changes,
        [format!("outside VIP {vip}: added its masquerade")]
    );
    assert_eq!(ask(), backend_host.peer_ipv4.to_string());
    // A masquerade with our comment but without its address match would
    // masquerade everything: replaced by ours.
    run(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            TABLE,
            "postrouting",
            "masquerade",
            "comment",
            "\"masquerade 192.168.50.100:6443\"",
        ],
    );
    let changes = table.ensure_outside(&[vip], true).expect("repair");
    assert_eq!(
        changes,
        ["removed a stale rule from our postrouting chain".to_string()],
        "the sound rule stays, the bare one goes"
    );
    let listed = run("nft", &["list", "chain", "inet", TABLE, "postrouting"]);
    assert_eq!(listed.matches("masquerade").count(), 2, "{listed}");
    assert!(
        listed.contains("ct original ip daddr 192.168.50.100 masquerade"),
        "{listed}"
    );
    // IPVS balances by itself: only the masquerade, no prerouting jump.
    let changes = table.ensure_outside(&[vip], false).expect("ipvs");
    assert_eq!(changes.len(), 1, "{changes:?}");
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert!(!listed.contains("outside 192.168.50.100:6443"), "{listed}");
    // No longer wanted: gone, and the virtual server itself is untouched.
    table.ensure_outside(&[], true).expect("none");
    let listed = run("nft", &["list", "table", "inet", TABLE]);
    assert!(!listed.contains("masquerade"), "{listed}");
    assert!(listed.contains("vip 192.168.50.100:6443 rr"), "{listed}");
    assert_eq!(table.read(&[vip]).expect("read").len(), 1);
    drop(server);
}
