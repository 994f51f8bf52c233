//! The objects a real apiserver writes for the `kubernetes` service.

use super::*;

/// An EndpointSlice of the `kubernetes` service as the apiserver writes it:
/// label `kubernetes.io/service-name=kubernetes`, one port named `https`.
/// `endpoints` are (address, ready) pairs; `None` leaves `ready` unset.
pub fn kubernetes_slice(
    name: &str,
    address_type: &str,
    port: u16,
    endpoints: &[(IpAddr, Option<bool>)],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                "kubernetes".to_string(),
            )])),
            ..Default::default()
        },
        address_type: address_type.to_string(),
        endpoints: endpoints
            .iter()
            .map(|(ip, ready)| SliceEndpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    serving: *ready,
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("https".to_string()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".to_string()),
            app_protocol: None,
        }]),
    }
}

/// The core/v1 Endpoints `kubernetes` as an old apiserver writes it: one
/// subset, ready `addresses`, port `https`.
pub fn kubernetes_endpoints(port: u16, ready: &[IpAddr], not_ready: &[IpAddr]) -> Endpoints {
    let addrs = |ips: &[IpAddr]| {
        (!ips.is_empty()).then(|| {
            ips.iter()
                .map(|ip| EndpointAddress {
                    ip: ip.to_string(),
                    ..Default::default()
                })
                .collect()
        })
    };
    Endpoints {
        metadata: ObjectMeta {
            name: Some("kubernetes".to_string()),
            namespace: Some("default".to_string()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: addrs(ready),
            not_ready_addresses: addrs(not_ready),
            ports: Some(vec![CorePort {
                name: Some("https".to_string()),
                port: i32::from(port),
                protocol: Some("TCP".to_string()),
                app_protocol: None,
            }]),
        }]),
    }
}
