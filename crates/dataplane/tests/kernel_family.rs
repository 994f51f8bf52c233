//! The first real-kernel test: it proves the VM harness reaches a kernel with
//! IPVS, and that the host (which has none) gets a clear message instead.

use apiserver_proxy_dataplane::{Error, Ipvs};

#[test]
#[ignore = "real-kernel: needs IPVS, run by `cargo xtask test` in the VM"]
fn resolves_the_ipvs_generic_netlink_family() {
    let _netns = apiserver_proxy_testkit::kernel::enter();
    let ipvs = Ipvs::connect().expect("IPVS family must resolve on a kernel with ip_vs loaded");
    // Generic netlink ids below GENL_MIN_ID (16) are reserved for the controller.
    assert!(ipvs.family_id() >= 16, "family id {}", ipvs.family_id());
}

/// On the host this runs for real: without IPVS, connecting must say so in
/// words a person can act on. In the VM (where IPVS exists) it checks nothing.
#[test]
fn a_kernel_without_ipvs_gets_an_actionable_error() {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        return;
    }
    let err = Ipvs::connect().expect_err("the host kernel has no IPVS");
    assert!(matches!(err, Error::IpvsUnavailable), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("modprobe ip_vs") && msg.contains("CONFIG_IP_VS"),
        "{msg}"
    );
}
