//! A throw-away PKI for tests: a cluster CA, apiserver serving certificates
//! (carrying the name `kubernetes`, as every real apiserver certificate does,
//! plus the IPs they listen on) and client certificates.
//!
//! Everything is generated in memory per test run; nothing is read from disk.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate and its private key, in both DER (for rustls) and PEM (for
/// files handed to the code under test).
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertKey {
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub cert: CertKey,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A fresh CA with the given common name (e.g. "kubernetes").
    pub fn new(common_name: &str) -> Ca {
        let key = KeyPair::generate().expect("generate CA key");
        let key_der = key.serialize_der();
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA");
        let cert = CertKey {
            cert_der: issuer.der().clone(),
            key_der,
            cert_pem: issuer.pem(),
            key_pem,
        };
        Ca { issuer, cert }
    }

    /// A serving certificate for the given DNS names and IPs.
    pub fn server_cert(&self, dns_names: &[&str], ips: &[IpAddr]) -> CertKey {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("server"),
        );
        for name in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into().expect("DNS SAN")));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// The serving certificate a real kube-apiserver has: `kubernetes` and
    /// friends, plus the given IPs.
    pub fn apiserver_cert(&self, ips: &[IpAddr]) -> CertKey {
        self.server_cert(
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips,
        )
    }

    /// A client certificate, as a kubelet's (`system:node:NAME`).
    pub fn client_cert(&self, common_name: &str, organization: &str) -> CertKey {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> CertKey {
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        CertKey {
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A root store trusting only this CA.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.cert_der.clone())
            .expect("add CA to root store");
        roots
    }
}

/// The workspace's one crypto provider. kube and rustls default to different
/// ones and mixing them panics at run time, so tests build configs with this.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config serving `leaf` (optionally asking for client
/// certificates signed by `client_ca`), offering HTTP/1.1 and h2 over ALPN.
pub fn server_config(leaf: &CertKey, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.root_store()),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(vec![leaf.cert_der.clone()], leaf.private_key())
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn apiserver_cert_chains_to_its_ca_and_names_kubernetes() {
        let ca = Ca::new("kubernetes");
        let leaf = ca.apiserver_cert(&["10.0.0.1".parse().expect("ip")]);
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        // A server config builds from it, so key and certificate match.
        let _ = server_config(&leaf, Some(&ca));
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(ca.root_store()),
            provider(),
        )
        .build()
        .expect("verifier");
        let name = rustls::pki_types::ServerName::try_from("kubernetes").expect("name");
        verifier
            .verify_server_cert(
                &leaf.cert_der,
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("leaf verifies against the CA as `kubernetes`");
        let other = Ca::new("other");
        let stranger = other.apiserver_cert(&[]);
        assert!(
            verifier
                .verify_server_cert(
                    &stranger.cert_der,
                    &[],
                    &name,
                    &[],
                    rustls::pki_types::UnixTime::now()
                )
                .is_err()
        );
    }
}
