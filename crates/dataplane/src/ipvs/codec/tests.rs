//! Host unit tests of the pure codec. Golden bytes from a real kernel are in
//! `tests/ipvs_golden.rs`.

use super::*;

const FAMILY: u16 = 0x20;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A reply message as the kernel would send it: header, genl header, attrs.
fn reply(cmd: u8, seq: u32, flags: u16, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
    let mut m = Vec::new();
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&FAMILY.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&77u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, 1, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

fn control(ty: u16, seq: u32, code: i32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&20u32.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&77u32.to_ne_bytes());
    m.extend_from_slice(&code.to_ne_bytes());
    m
}

fn stats64(a: &mut Vec<u8>, base: u64) {
    for (i, ty) in (IPVS_STATS_ATTR_CONNS..=IPVS_STATS_ATTR_OUTBPS).enumerate() {
        put_attr(a, ty, &(base + i as u64).to_ne_bytes());
    }
    put_attr(a, 11, &[]); // IPVS_STATS_ATTR_PAD
}

fn service_attrs(spec: &ServiceSpec, with_stats: bool) -> Vec<u8> {
    let mut a = Vec::new();
    nest(&mut a, IPVS_CMD_ATTR_SERVICE, |s| {
        put_service(s, spec);
        if with_stats {
            nest(s, IPVS_SVC_ATTR_STATS64, |st| stats64(st, 100));
        }
    });
    a
}

#[test]
fn new_service_request_layout() {
    let spec = ServiceSpec::new(ServiceKey::tcp(sa("10.0.0.1:443")), "rr");
    let msg = encode(FAMILY, 9, &Request::NewService(&spec));
    let m = split_messages(&msg).expect("split");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].ty, FAMILY);
    assert_eq!(m[0].flags, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(m[0].seq, 9);
    let (cmd, attrs) = genl_header("t", m[0].payload).expect("genl");
    assert_eq!(cmd, IPVS_CMD_NEW_SERVICE);
    assert_eq!(m[0].payload[1], IPVS_GENL_VERSION);
    let top = attributes("t", attrs).expect("attrs");
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].0, IPVS_CMD_ATTR_SERVICE);
    let svc = attributes("t", top[0].1).expect("svc");
    let types: Vec<u16> = svc.iter().map(|(t, _)| *t).collect();
    // NEW_SERVICE needs scheduler, flags, timeout and netmask.
    assert_eq!(types, vec![1, 2, 3, 4, 6, 7, 8, 9]);
    // The port is big-endian, everything else host order.
    assert_eq!(find_in(&svc, IPVS_SVC_ATTR_PORT), Some(&[0x01, 0xbb][..]));
    assert_eq!(
        find_in(&svc, IPVS_SVC_ATTR_AF),
        Some(&AF_INET.to_ne_bytes()[..])
    );
    let addr = find_in(&svc, IPVS_SVC_ATTR_ADDR).expect("addr");
    assert_eq!(addr.len(), 16, "padded like union nf_inet_addr");
    assert_eq!(&addr[..4], &[10, 0, 0, 1]);
    assert_eq!(find_in(&svc, IPVS_SVC_ATTR_SCHED_NAME), Some(&b"rr\0"[..]));
    let mut flags = 0u32.to_ne_bytes().to_vec();
    flags.extend_from_slice(&u32::MAX.to_ne_bytes());
    assert_eq!(find_in(&svc, IPVS_SVC_ATTR_FLAGS), Some(&flags[..]));
    assert_eq!(
        find_in(&svc, IPVS_SVC_ATTR_NETMASK),
        Some(&0xffff_ffffu32.to_ne_bytes()[..])
    );
}

#[test]
fn key_only_requests_carry_no_scheduler() {
    let key = ServiceKey::new(Protocol::Udp, sa("[fd00::1]:53"));
    for req in [Request::DelService(&key), Request::GetService(&key)] {
        let msg = encode(FAMILY, 1, &req);
        let m = split_messages(&msg).expect("split");
        let (_, attrs) = genl_header("t", m[0].payload).expect("genl");
        let top = attributes("t", attrs).expect("attrs");
        let svc = attributes("t", top[0].1).expect("svc");
        let types: Vec<u16> = svc.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, vec![1, 2, 3, 4]);
        assert_eq!(
            find_in(&svc, IPVS_SVC_ATTR_PROTOCOL),
            Some(&17u16.to_ne_bytes()[..])
        );
        assert_eq!(
            find_in(&svc, IPVS_SVC_ATTR_AF),
            Some(&AF_INET6.to_ne_bytes()[..])
        );
    }
}

#[test]
fn dest_requests_carry_the_service_key_and_the_destination() {
    let key = ServiceKey::tcp(sa("10.0.0.1:443"));
    let mut dest = DestSpec::new(sa("10.0.1.1:6443"), 3);
    dest.upper_threshold = 100;
    dest.lower_threshold = 10;
    let msg = encode(FAMILY, 1, &Request::NewDest(&key, &dest));
    let m = split_messages(&msg).expect("split");
    let (cmd, attrs) = genl_header("t", m[0].payload).expect("genl");
    assert_eq!(cmd, IPVS_CMD_NEW_DEST);
    let top = attributes("t", attrs).expect("attrs");
    assert_eq!(
        top.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![IPVS_CMD_ATTR_SERVICE, IPVS_CMD_ATTR_DEST]
    );
    let d = attributes("t", top[1].1).expect("dest");
    assert_eq!(
        d.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![11, 1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        find_in(&d, IPVS_DEST_ATTR_PORT),
        Some(&6443u16.to_be_bytes()[..])
    );
    assert_eq!(
        find_in(&d, IPVS_DEST_ATTR_FWD_METHOD),
        Some(&0u32.to_ne_bytes()[..])
    );

    let msg = encode(FAMILY, 1, &Request::DelDest(&key, sa("10.0.1.1:6443")));
    let m = split_messages(&msg).expect("split");
    let (cmd, attrs) = genl_header("t", m[0].payload).expect("genl");
    assert_eq!(cmd, IPVS_CMD_DEL_DEST);
    let top = attributes("t", attrs).expect("attrs");
    let d = attributes("t", top[1].1).expect("dest");
    assert_eq!(
        d.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![11, 1, 2]
    );
}

#[test]
fn dumps_ask_for_a_dump() {
    let key = ServiceKey::tcp(sa("10.0.0.1:443"));
    for req in [Request::DumpServices, Request::DumpDests(&key)] {
        let msg = encode(FAMILY, 1, &req);
        let m = split_messages(&msg).expect("split");
        assert_eq!(m[0].flags & NLM_F_DUMP, NLM_F_DUMP);
    }
    let msg = encode(FAMILY, 1, &Request::GetInfo);
    assert_eq!(msg.len(), 20);
    assert_eq!(msg[16], IPVS_CMD_GET_INFO);
}

#[test]
fn resolve_family_goes_to_the_controller() {
    let msg = encode(FAMILY, 5, &Request::ResolveFamily);
    let m = split_messages(&msg).expect("split");
    assert_eq!(m[0].ty, GENL_ID_CTRL);
    let (cmd, attrs) = genl_header("t", m[0].payload).expect("genl");
    assert_eq!(cmd, CTRL_CMD_GETFAMILY);
    let a = attributes("t", attrs).expect("attrs");
    assert_eq!(find_in(&a, CTRL_ATTR_FAMILY_NAME), Some(&b"IPVS\0"[..]));
}

#[test]
fn a_service_round_trips_through_a_reply() {
    for (addr, sched, flags, timeout) in [
        ("10.0.0.1:443", "rr", 0, 0),
        ("[fd00::1]:6443", "wrr", 1, 300),
    ] {
        let mut spec = ServiceSpec::new(ServiceKey::tcp(sa(addr)), sched);
        spec.flags = flags;
        spec.timeout = timeout;
        let msg = reply(
            IPVS_CMD_NEW_SERVICE,
            4,
            NLM_F_MULTI,
            &service_attrs(&spec, true),
        );
        let mut dg = msg.clone();
        dg.extend_from_slice(&control(NLMSG_DONE, 4, 0));
        let services = parse_service_dump(&[&dg], 4).expect("parse");
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].spec, spec);
        assert_eq!(services[0].stats.conns, 100);
        assert_eq!(services[0].stats.outbps, 109);
    }
}

#[test]
fn ipv6_netmask_defaults_to_a_prefix_length() {
    let spec = ServiceSpec::new(ServiceKey::tcp(sa("[fd00::1]:443")), "rr");
    assert_eq!(spec.netmask, 128);
    let spec = ServiceSpec::new(ServiceKey::tcp(sa("10.0.0.1:443")), "rr");
    assert_eq!(spec.netmask, 0xffff_ffff);
}

#[test]
fn firewall_mark_and_unknown_protocol_services_are_skipped() {
    let mut a = Vec::new();
    nest(&mut a, IPVS_CMD_ATTR_SERVICE, |s| {
        put_attr(s, IPVS_SVC_ATTR_AF, &AF_INET.to_ne_bytes());
        put_attr(s, IPVS_SVC_ATTR_FWMARK, &7u32.to_ne_bytes());
        put_attr(s, IPVS_SVC_ATTR_SCHED_NAME, b"rr\0");
    });
    let msg = reply(IPVS_CMD_NEW_SERVICE, 1, 0, &a);
    assert_eq!(parse_service_message(&msg[16..]).expect("parse"), None);

    let mut a = Vec::new();
    nest(&mut a, IPVS_CMD_ATTR_SERVICE, |s| {
        put_attr(s, IPVS_SVC_ATTR_AF, &AF_INET.to_ne_bytes());
        put_attr(s, IPVS_SVC_ATTR_PROTOCOL, &50u16.to_ne_bytes());
        put_attr(s, IPVS_SVC_ATTR_ADDR, &[0; 16]);
        put_attr(s, IPVS_SVC_ATTR_PORT, &[0, 80]);
    });
    let msg = reply(IPVS_CMD_NEW_SERVICE, 1, 0, &a);
    assert_eq!(parse_service_message(&msg[16..]).expect("parse"), None);
}

#[test]
fn a_missing_required_attribute_is_named() {
    let spec = ServiceSpec::new(ServiceKey::tcp(sa("10.0.0.1:443")), "rr");
    let mut a = Vec::new();
    nest(&mut a, IPVS_CMD_ATTR_SERVICE, |s| {
        put_service_key(s, &spec.key)
    });
    let msg = reply(IPVS_CMD_NEW_SERVICE, 1, 0, &a);
    let err = parse_service_message(&msg[16..]).expect_err("no scheduler");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("scheduler name missing"), "{err}");
}

#[test]
fn truncation_anywhere_is_an_error_not_a_panic() {
    let spec = ServiceSpec::new(ServiceKey::tcp(sa("[fd00::1]:443")), "sh");
    let msg = reply(IPVS_CMD_NEW_SERVICE, 3, 0, &service_attrs(&spec, true));
    for cut in 0..msg.len() {
        let short = &msg[..cut];
        // Either the datagram split or the attributes fail; never a panic
        // and never a service made of half the bytes.
        let r = parse_service_dump(&[short], 3);
        assert!(
            r.is_err() || r.as_ref().is_ok_and(|v| v.is_empty()),
            "{cut}: {r:?}"
        );
    }
    // The netlink length kept, the attribute lengths lie.
    let mut bad = msg.clone();
    bad[20] = 0xff;
    bad[21] = 0x0f;
    let err = parse_service_dump(&[&bad], 3).expect_err("bad nest length");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
}

#[test]
fn short_addresses_are_errors() {
    let mut a = Vec::new();
    nest(&mut a, IPVS_CMD_ATTR_SERVICE, |s| {
        put_attr(s, IPVS_SVC_ATTR_AF, &AF_INET6.to_ne_bytes());
        put_attr(s, IPVS_SVC_ATTR_PROTOCOL, &6u16.to_ne_bytes());
        put_attr(s, IPVS_SVC_ATTR_ADDR, &[0xfd, 0, 0, 1]);
        put_attr(s, IPVS_SVC_ATTR_PORT, &[1, 0xbb]);
    });
    let msg = reply(IPVS_CMD_NEW_SERVICE, 1, 0, &a);
    let err = parse_service_message(&msg[16..]).expect_err("4-byte v6");
    assert!(
        err.to_string().contains("IPv6 address has 4 bytes"),
        "{err}"
    );
}

#[test]
fn destination_with_old_32_bit_stats_and_no_family() {
    let mut a = Vec::new();
    nest(&mut a, IPVS_CMD_ATTR_DEST, |d| {
        put_attr(d, IPVS_DEST_ATTR_ADDR, &addr16(sa("10.0.1.1:1").ip()));
        put_attr(d, IPVS_DEST_ATTR_PORT, &6443u16.to_be_bytes());
        put_attr(d, IPVS_DEST_ATTR_FWD_METHOD, &3u32.to_ne_bytes());
        put_attr(d, IPVS_DEST_ATTR_WEIGHT, &7u32.to_ne_bytes());
        put_attr(d, IPVS_DEST_ATTR_U_THRESH, &9u32.to_ne_bytes());
        put_attr(d, IPVS_DEST_ATTR_L_THRESH, &1u32.to_ne_bytes());
        put_attr(d, IPVS_DEST_ATTR_ACTIVE_CONNS, &2u32.to_ne_bytes());
        put_attr(d, IPVS_DEST_ATTR_INACT_CONNS, &3u32.to_ne_bytes());
        put_attr(d, IPVS_DEST_ATTR_PERSIST_CONNS, &4u32.to_ne_bytes());
        nest(d, IPVS_DEST_ATTR_STATS, |s| {
            put_attr(s, IPVS_STATS_ATTR_CONNS, &5u32.to_ne_bytes());
            put_attr(s, IPVS_STATS_ATTR_INBYTES, &(1u64 << 40).to_ne_bytes());
        });
    });
    let msg = reply(IPVS_CMD_NEW_DEST, 1, 0, &a);
    let d = parse_dest_message(&msg[16..], Family::Ipv4).expect("dest");
    assert_eq!(d.spec.addr, sa("10.0.1.1:6443"));
    assert_eq!(d.spec.forward, Forward::Route);
    assert_eq!(
        (
            d.spec.weight,
            d.spec.upper_threshold,
            d.spec.lower_threshold
        ),
        (7, 9, 1)
    );
    assert_eq!(
        (d.active_conns, d.inactive_conns, d.persist_conns),
        (2, 3, 4)
    );
    assert_eq!(d.stats.conns, 5);
    assert_eq!(d.stats.inbytes, 1 << 40);
}

#[test]
fn collect_sorts_acks_errors_and_foreign_sequence_numbers() {
    let mut r = Vec::new();
    assert_eq!(
        collect(&control(NLMSG_ERROR, 5, 0), 5, &mut Vec::new()).expect("ack"),
        Ok(true)
    );
    assert_eq!(
        collect(&control(NLMSG_ERROR, 5, -17), 5, &mut Vec::new()).expect("err"),
        Err(17)
    );
    assert_eq!(
        collect(&control(NLMSG_ERROR, 4, -17), 5, &mut Vec::new()).expect("late"),
        Ok(false)
    );
    assert_eq!(
        collect(&control(NLMSG_DONE, 5, 0), 5, &mut Vec::new()).expect("done"),
        Ok(true)
    );
    assert_eq!(
        collect(&control(NLMSG_DONE, 5, -3), 5, &mut Vec::new()).expect("done err"),
        Err(3)
    );
    let err = collect(&[20, 0, 0], 5, &mut r).expect_err("garbage");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let positive = control(NLMSG_ERROR, 5, 17);
    let err = collect(&positive, 5, &mut Vec::new()).expect_err("positive");
    assert!(err.to_string().contains("not a negative errno"), "{err}");
    let mut too_long = control(NLMSG_ERROR, 5, 0);
    too_long[0] = 200;
    assert!(collect(&too_long, 5, &mut r).is_err());
}

#[test]
fn info_and_family_replies() {
    let mut a = Vec::new();
    put_attr(
        &mut a,
        IPVS_INFO_ATTR_VERSION,
        &0x0001_0201u32.to_ne_bytes(),
    );
    put_attr(&mut a, IPVS_INFO_ATTR_CONN_TAB_SIZE, &4096u32.to_ne_bytes());
    let msg = reply(IPVS_CMD_SET_INFO, 1, 0, &a);
    let info = parse_info_message(&msg[16..]).expect("info");
    assert_eq!(info.version, (1, 2, 1));
    assert_eq!(info.conn_table_size, 4096);
    assert_eq!(info.to_string(), "IPVS 1.2.1 (connection table size 4096)");

    let mut a = Vec::new();
    put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, b"IPVS\0");
    put_attr(&mut a, CTRL_ATTR_FAMILY_ID, &0x21u16.to_ne_bytes());
    let msg = reply(CTRL_CMD_NEWFAMILY, 1, 0, &a);
    assert_eq!(parse_family_message(&msg[16..]).expect("family"), 0x21);
}

#[test]
fn forwarding_codes() {
    for f in [
        Forward::Masquerade,
        Forward::Local,
        Forward::Tunnel,
        Forward::Route,
    ] {
        assert_eq!(Forward::from_code(f.code()), Some(f));
    }
    assert_eq!(Forward::from_code(4), None);
    assert_eq!(Forward::default(), Forward::Masquerade);
}

#[test]
fn keys_print_for_people() {
    let key = ServiceKey::tcp(sa("[fd00::1]:443"));
    assert_eq!(key.to_string(), "IPVS service TCP [fd00::1]:443");
}

fn find_in<'a>(attrs: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
}
