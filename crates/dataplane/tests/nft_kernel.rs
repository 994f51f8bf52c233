//! The nf_tables codec and client against a real kernel: the host's (which
//! has nf_tables, unlike IPVS, so these are not `#[ignore]`d), each test in
//! its own network namespace. `nft` (Debian's nftables, installed by
//! `cargo xtask test`) is the independent view of what the kernel holds.

use apiserver_proxy_dataplane::nft::client::Nft;
use apiserver_proxy_dataplane::nft::codec::{Expr, NF_INET_LOCAL_OUT, dnat_v4};
use apiserver_proxy_testkit::kernel::{enter_without_ipvs, run};

const TABLE: &str = "bcs-apiserver-proxy";

fn dnat(vip: &str, backend: &str, port: u16) -> Vec<Expr> {
    dnat_v4(
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
fn one_batch_creates_the_table_chain_and_rule_and_a_failed_batch_changes_nothing() {
    let _netns = enter_without_ipvs();
    // A table that is not ours, as kube-proxy's or firewalld's would be.
    run("nft", &["add", "table", "ip", "kube-proxy"]);
    let mut nft = Nft::connect().expect("nf_tables socket");
    nft.apply("create our table", |b| {
        b.new_table(TABLE);
        b.new_base_chain(TABLE, "output", "nat", NF_INET_LOCAL_OUT, -100);
        b.new_rule(TABLE, "output", &dnat("10.103.97.2", "192.168.1.10", 6443));
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
            b.new_rule(TABLE, "missing", &dnat("10.0.0.1", "10.0.0.2", 1));
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
