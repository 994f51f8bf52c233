//! Pure functions: cluster objects to backend sets, and the fail-static rule.

use std::collections::BTreeSet;
use std::net::IpAddr;

use apiserver_proxy_types::{Endpoint, Family};
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The backends an EndpointSlice answer gives a virtual server of `family`:
/// the union over `slices` of the ready (condition `ready` not false)
/// addresses of `family`, each with the slice's port named `port_name`.
///
/// Slices without that port, of another address type, or with addresses
/// that do not parse contribute nothing.
pub fn backends_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    family: Family,
    port_name: &str,
) -> BTreeSet<Endpoint> {
    let mut out = BTreeSet::new();
    for slice in slices {
        let type_ok = match slice.address_type.as_str() {
            "IPv4" => family == Family::Ipv4,
            "IPv6" => family == Family::Ipv6,
            _ => false, // FQDN or unknown: never usable as an IPVS backend
        };
        if !type_ok {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(valid_port)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready);
            if ready == Some(false) {
                continue;
            }
            for addr in &ep.addresses {
                if let Some(ip) = parse_ip(addr, family) {
                    out.insert(Endpoint::new(ip, port));
                }
            }
        }
    }
    out
}

/// The backends a core/v1 Endpoints object gives: the ready `addresses` (not
/// `notReadyAddresses`) of `family` of every subset that has the port named
/// `port_name`.
pub fn backends_from_endpoints<'a>(
    objects: impl IntoIterator<Item = &'a Endpoints>,
    family: Family,
    port_name: &str,
) -> BTreeSet<Endpoint> {
    let mut out = BTreeSet::new();
    for object in objects {
        for subset in object.subsets.iter().flatten() {
            let Some(port) = subset
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| valid_port(p.port))
            else {
                continue;
            };
            for addr in subset.addresses.iter().flatten() {
                if let Some(ip) = parse_ip(&addr.ip, family) {
                    out.insert(Endpoint::new(ip, port));
                }
            }
        }
    }
    out
}

fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

fn parse_ip(s: &str, family: Family) -> Option<IpAddr> {
    let ip: IpAddr = s.trim().parse().ok()?;
    // An IPv4-mapped IPv6 address is still IPv6 to IPVS; keep it as given.
    (Family::of(&ip) == family).then_some(ip)
}

/// What to do with an answer from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Emit the answer as the new desired set.
    Replace,
    /// The answer equals the current set (and it already came from the
    /// cluster): nothing to emit.
    Unchanged,
    /// The answer has no usable backend while the current set has some:
    /// keep the current set (fail-static).
    RejectEmpty,
    /// The answer is empty and so is the current set: nothing to do.
    EmptyStaysEmpty,
    /// The answer lists more backends than allowed: keep the current set.
    RejectOversized,
}

/// The fail-static rule. `current_from_cluster` says whether the current set
/// already came from the cluster (so an equal answer is not news); an
/// answer longer than `max_backends` is refused whatever the current set.
pub fn decide(
    current: &BTreeSet<Endpoint>,
    current_from_cluster: bool,
    answer: &BTreeSet<Endpoint>,
    max_backends: usize,
) -> Decision {
    if answer.len() > max_backends {
        Decision::RejectOversized
    } else if answer.is_empty() {
        if current.is_empty() {
            Decision::EmptyStaysEmpty
        } else {
            Decision::RejectEmpty
        }
    } else if current_from_cluster && current == answer {
        Decision::Unchanged
    } else {
        Decision::Replace
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort, EndpointSubset};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn slice(ty: &str, port: Option<(&str, i32)>, eps: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            address_type: ty.to_string(),
            endpoints: eps
                .iter()
                .map(|(a, ready)| SliceEndpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: port.map(|(n, p)| {
                vec![EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(p),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn merges_slices_and_keeps_not_false_ready() {
        let a = slice(
            "IPv4",
            Some(("https", 6443)),
            &[
                ("10.0.0.1", Some(true)),
                ("10.0.0.2", None),
                ("10.0.0.3", Some(false)),
            ],
        );
        let b = slice("IPv4", Some(("https", 6443)), &[("10.0.0.4", Some(true))]);
        let got = backends_from_slices([&a, &b], Family::Ipv4, "https");
        let want: BTreeSet<_> = ["10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.4:6443"]
            .into_iter()
            .map(ep)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn family_port_name_and_address_type_filter() {
        let v6 = slice("IPv6", Some(("https", 6443)), &[("fd00::1", Some(true))]);
        let v4 = slice("IPv4", Some(("https", 443)), &[("10.0.0.1", Some(true))]);
        let other_port = slice("IPv4", Some(("metrics", 1)), &[("10.0.0.9", Some(true))]);
        let no_port = slice("IPv4", None, &[("10.0.0.8", Some(true))]);
        let fqdn = slice("FQDN", Some(("https", 443)), &[("example.com", Some(true))]);
        let lying = slice(
            "IPv4",
            Some(("https", 443)),
            &[("fd00::5", Some(true)), ("bad", None)],
        );
        let all = [&v6, &v4, &other_port, &no_port, &fqdn, &lying];
        assert_eq!(
            backends_from_slices(all, Family::Ipv4, "https"),
            [ep("10.0.0.1:443")].into_iter().collect()
        );
        assert_eq!(
            backends_from_slices(all, Family::Ipv6, "https"),
            [ep("[fd00::1]:6443")].into_iter().collect()
        );
        assert!(backends_from_slices([&v4], Family::Ipv4, "other").is_empty());
        let zero = slice("IPv4", Some(("https", 0)), &[("10.0.0.1", None)]);
        assert!(backends_from_slices([&zero], Family::Ipv4, "https").is_empty());
    }

    #[test]
    fn endpoints_fallback_uses_ready_addresses_only() {
        let e = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![
                    EndpointAddress {
                        ip: "10.0.0.1".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "fd00::1".into(),
                        ..Default::default()
                    },
                ]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.2".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![CorePort {
                    name: Some("https".into()),
                    port: 6443,
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        };
        assert_eq!(
            backends_from_endpoints([&e], Family::Ipv4, "https"),
            [ep("10.0.0.1:6443")].into_iter().collect()
        );
        assert_eq!(
            backends_from_endpoints([&e], Family::Ipv6, "https"),
            [ep("[fd00::1]:6443")].into_iter().collect()
        );
        assert!(backends_from_endpoints([&e], Family::Ipv4, "http").is_empty());
    }

    #[test]
    fn fail_static() {
        let one: BTreeSet<_> = [ep("10.0.0.1:6443")].into_iter().collect();
        let two: BTreeSet<_> = [ep("10.0.0.2:6443")].into_iter().collect();
        let none = BTreeSet::new();
        assert_eq!(decide(&one, true, &none, 16), Decision::RejectEmpty);
        assert_eq!(decide(&one, false, &none, 16), Decision::RejectEmpty);
        assert_eq!(decide(&none, false, &none, 16), Decision::EmptyStaysEmpty);
        assert_eq!(decide(&one, true, &one, 16), Decision::Unchanged);
        // Same backends, but the current set came from seeds or the cache:
        // the cluster confirming it is news (the source changes).
        assert_eq!(decide(&one, false, &one, 16), Decision::Replace);
        assert_eq!(decide(&one, true, &two, 16), Decision::Replace);
        assert_eq!(decide(&none, false, &two, 16), Decision::Replace);
    }

    #[test]
    fn an_answer_longer_than_the_cap_is_refused_whatever_the_current_set() {
        let one: BTreeSet<_> = [ep("10.0.0.1:6443")].into_iter().collect();
        let three: BTreeSet<_> = (1..=3).map(|i| ep(&format!("10.0.0.{i}:6443"))).collect();
        assert_eq!(decide(&one, true, &three, 3), Decision::Replace);
        assert_eq!(decide(&one, true, &three, 2), Decision::RejectOversized);
        assert_eq!(
            decide(&BTreeSet::new(), false, &three, 2),
            Decision::RejectOversized
        );
    }
}
