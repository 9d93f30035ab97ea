//! TLS to `https://` upstreams: which roots to trust, which name to check, which HTTP versions
//! to offer by ALPN. Built once per service when the routes compile, never per request.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use nb_api::validate::HttpUpstream;
use nb_api::{UpstreamProtocol, UpstreamTlsSpec};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

/// How one service's proxy connections to its upstream are secured.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Offers HTTP/2 and HTTP/1.1 by ALPN (HTTP/1.1 only for `upstream_protocol: http1`).
    pub negotiated: TlsConnector,
    /// Offers HTTP/1.1 only: upgraded requests (WebSocket) need it.
    pub http1: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// `None` for a plain `http://` upstream. The error names the problem for the operator.
    pub fn build(
        service: &str,
        upstream: &HttpUpstream,
        spec: Option<&UpstreamTlsSpec>,
        protocol: UpstreamProtocol,
    ) -> Result<Option<Self>, String> {
        if !upstream.tls {
            return Ok(None);
        }
        let spec = spec.cloned().unwrap_or_default();
        let name = spec.server_name.as_deref().unwrap_or(&upstream.host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("\"{name}\" cannot be used as a TLS server name"))?;
        let builder = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let config = if spec.skip_verify {
            warn_once(service);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate))
                .with_no_client_auth()
        } else {
            let roots = match &spec.ca_file {
                Some(file) => Arc::new(roots_from(Path::new(file))?),
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = config.clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(c))
        };
        let negotiated = match protocol {
            UpstreamProtocol::Http1 => with_alpn(&[b"http/1.1"]),
            UpstreamProtocol::Auto | UpstreamProtocol::H2c => with_alpn(&[b"h2", b"http/1.1"]),
        };
        Ok(Some(Self {
            negotiated,
            http1: with_alpn(&[b"http/1.1"]),
            server_name,
        }))
    }
}

fn roots_from(file: &Path) -> Result<RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read CA file {}: {e}", file.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{} holds no usable PEM certificate",
            file.display()
        ));
    }
    Ok(roots)
}

/// The operating system's CA store, read once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        Arc::new(roots)
    });
    if roots.is_empty() {
        return Err(
            "the system has no CA certificates (install ca-certificates, or set \
             upstream_tls.ca_file)"
                .into(),
        );
    }
    Ok(roots.clone())
}

/// Says once per service and process that its upstream's certificate is not checked.
fn warn_once(service: &str) {
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.iter().any(|s| s == service) {
        warned.push(service.to_owned());
        tracing::warn!(
            service,
            "upstream_tls.skip_verify: the upstream's certificate is not verified; anyone on \
             the path can read and change this service's traffic"
        );
    }
}

/// `skip_verify`: any certificate is accepted, but the handshake's signatures are still checked
/// with the key the certificate holds, so the session is at least with its holder.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}
