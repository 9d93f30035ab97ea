//! TLS termination with tokio-rustls: certificates chosen by SNI from the current routes.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::state::ProxyState;

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The HTTPS listener's config: the certificate follows the routes across reloads.
pub fn sni_config(state: Arc<ProxyState>) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { state }));
    // acme-tls/1 last: only a CA's TLS-ALPN-01 validation offers it, and nothing else.
    cfg.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        crate::acme::ACME_TLS_ALPN.to_vec(),
    ];
    Arc::new(cfg)
}

/// A TCP service that terminates TLS with one certificate.
pub fn single_cert_config(key: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    Arc::new(cfg)
}

struct SniResolver {
    state: Arc<ProxyState>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        let acme = &self.state.acme;
        if is_acme_validation(&hello) {
            return acme.alpn_challenge(name);
        }
        let routes = self.state.routes.load();
        match routes.certificates.get(name) {
            Some(cert) => Some(cert.clone()),
            None => acme.certificate(name),
        }
    }
}

/// A CA's TLS-ALPN-01 validation handshake: it offers `acme-tls/1` alone (RFC 8737).
fn is_acme_validation(hello: &ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut offered| {
        offered.next() == Some(crate::acme::ACME_TLS_ALPN) && offered.next().is_none()
    })
}
