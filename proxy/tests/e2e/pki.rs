//! A throwaway certificate authority for the TLS tests, on both sides of the proxy.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsConnector;

/// A CA and what it signs.
pub struct Pki {
    ca_der: CertificateDer<'static>,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Self {
            ca_der: ca.der().clone(),
            ca,
            ca_key,
        }
    }

    /// Writes `<name>.crt` and `<name>.key` into `dir`; returns the certificate's DER.
    pub fn issue(&self, dir: &std::path::Path, name: &str) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    pub fn connector(&self) -> TlsConnector {
        connector_trusting(self.ca_der.clone())
    }

    /// A client trusting this CA that offers `alpn`.
    pub fn connector_offering(&self, alpn: &[&[u8]]) -> TlsConnector {
        connector_offering(self.ca_der.clone(), alpn)
    }

    /// The CA certificate, PEM, written to `dir/ca.pem`; returns the path.
    pub fn write_ca(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    /// A server config for `name`, offering `alpn` (e.g. `h2`, `http/1.1`).
    pub fn server_config(&self, name: &str, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// A TLS client that trusts `root` alone.
pub fn connector_trusting(root: CertificateDer<'static>) -> TlsConnector {
    connector_offering(root, &[])
}

/// A TLS client that trusts `root` alone and offers `alpn` (none when empty).
pub fn connector_offering(root: CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut cfg = cfg;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}
