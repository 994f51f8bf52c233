//! How the daemon reaches the API: straight to a known apiserver, never
//! through the virtual server we provide or a ClusterIP (see
//! `docs/discovery.md`).

use apiserver_proxy_types::Endpoint;

use crate::Error;

/// The name every apiserver serving certificate carries; used to verify a
/// server reached by IP.
pub const DEFAULT_TLS_SERVER_NAME: &str = "kubernetes";

/// `base` (from a kubeconfig or in-cluster credentials: CA, token or client
/// certificate) pointed at `endpoint` directly: `https://IP:PORT`, verifying
/// the certificate for `tls_server_name` instead of the IP, without any
/// proxy. A base with an `http` URL (tests) stays plain HTTP.
pub fn config_for_endpoint(
    base: &kube::Config,
    endpoint: Endpoint,
    tls_server_name: &str,
) -> Result<kube::Config, Error> {
    let plain = base.cluster_url.scheme_str() == Some("http");
    let scheme = if plain { "http" } else { "https" };
    let url = format!("{scheme}://{endpoint}");
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("cannot make a URL of {endpoint}: {e}")))?;
    let mut config = base.clone();
    config.cluster_url = uri;
    config.proxy_url = None;
    config.tls_server_name = (!plain).then(|| tls_server_name.to_string());
    Ok(config)
}

/// A kube client for `endpoint`; see [`config_for_endpoint`].
pub fn client_for_endpoint(
    base: &kube::Config,
    endpoint: Endpoint,
    tls_server_name: &str,
) -> Result<kube::Client, Error> {
    let config = config_for_endpoint(base, endpoint, tls_server_name)?;
    kube::Client::try_from(config).map_err(|source| Error::Client {
        endpoint: endpoint.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_at_the_endpoint_and_verifies_kubernetes() {
        let mut base = kube::Config::new("https://10.96.0.1:443/".parse().expect("uri"));
        base.proxy_url = Some("http://proxy:3128".parse().expect("uri"));
        let c = config_for_endpoint(
            &base,
            "192.168.1.10:6443".parse().expect("ep"),
            "kubernetes",
        )
        .expect("config");
        assert_eq!(c.cluster_url.to_string(), "https://192.168.1.10:6443/");
        assert_eq!(c.tls_server_name.as_deref(), Some("kubernetes"));
        assert!(c.proxy_url.is_none());
        let c = config_for_endpoint(&base, "[fd00::10]:6443".parse().expect("ep"), "kubernetes")
            .expect("config");
        assert_eq!(c.cluster_url.to_string(), "https://[fd00::10]:6443/");
        let plain = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        let c = config_for_endpoint(&plain, "127.0.0.1:8080".parse().expect("ep"), "kubernetes")
            .expect("config");
        assert_eq!(c.cluster_url.to_string(), "http://127.0.0.1:8080/");
        assert!(c.tls_server_name.is_none());
    }
}
