//! One ACME order: the account, the challenges published for the CA to check, and the
//! certificate it issues.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;

use super::cache::{self, Cached};
use super::{Acme, ChallengeKind};

/// Why a certificate could not be obtained; every one is retried later.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("the ACME server refused or could not be used: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("--acme-ca-file {0}")]
    CaFile(String),
    #[error("the ACME server offers no {0} challenge for {1}")]
    NoChallenge(&'static str, String),
    #[error("the authorization for {0} is {1:?}")]
    Authorization(String, AuthorizationStatus),
    #[error(
        "the order is {0:?}: the CA could not check the {1} challenge (can it reach this \
         proxy on {2} for these hosts?)"
    )]
    NotValidated(OrderStatus, &'static str, &'static str),
    #[error("the ACME cache: {0}")]
    Cache(String),
}

impl ChallengeKind {
    fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }

    fn port(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "port 80",
            ChallengeKind::TlsAlpn01 => "port 443",
        }
    }
}

/// The cached account, or a new one (saved for the next start).
pub async fn account(acme: &Acme) -> Result<Account, OrderError> {
    let s = &acme.settings;
    let builder = || match &s.ca_file {
        Some(ca) => Account::builder_with_root(ca)
            .map_err(|e| OrderError::CaFile(format!("{}: {e}", ca.display()))),
        None => Account::builder().map_err(OrderError::from),
    };
    if let Some(credentials) = cache::load_account(&s.cache_dir, &s.directory) {
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact = s.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()?.create(&new, s.directory.clone(), None).await?;
    cache::save_account(&s.cache_dir, &s.directory, &credentials)
        .map_err(|e| OrderError::Cache(format!("cannot save the account: {e}")))?;
    tracing::info!(directory = %s.directory, "ACME account created");
    Ok(account)
}

/// Orders a certificate for `hosts`, answers the challenges, and caches what is issued.
pub async fn obtain(
    acme: &Acme,
    account: &Account,
    hosts: &[String],
) -> Result<Cached, OrderError> {
    let kind = acme.settings.challenge;
    let identifiers: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    // Withdrawn when the order ends, however it ends.
    let mut published = Published {
        acme,
        tokens: Vec::new(),
        hosts: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        let host = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(OrderError::Authorization(host, other)),
        }
        let mut challenge = authz
            .challenge(kind.acme_type())
            .ok_or_else(|| OrderError::NoChallenge(kind.name(), host.clone()))?;
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeKind::Http01 => published.token(
                challenge.token.clone(),
                key_authorization.as_str().to_owned(),
            ),
            ChallengeKind::TlsAlpn01 => {
                let cert = alpn_certificate(&host, key_authorization.digest().as_ref())?;
                published.alpn(host, cert);
            }
        }
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(90));
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(OrderError::NotValidated(status, kind.name(), kind.port()));
    }
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    drop(published);
    let dir = &acme.settings.cache_dir;
    cache::save_certificate(dir, hosts, &chain_pem, &key_pem)
        .map_err(|e| OrderError::Cache(format!("cannot save the certificate: {e}")))?;
    cache::parse(chain_pem.as_bytes(), key_pem.as_bytes()).map_err(OrderError::Cache)
}

/// The self-signed certificate a TLS-ALPN-01 validation handshake must see (RFC 8737): the
/// name, and the key authorization's digest in the critical acmeIdentifier extension.
pub fn alpn_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, OrderError> {
    let failed = |e: rcgen::Error| OrderError::Cache(format!("validation certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(failed)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| OrderError::Cache(format!("validation key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| OrderError::Cache(format!("validation key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// Challenge answers being offered to the CA.
struct Published<'a> {
    acme: &'a Acme,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

impl Published<'_> {
    fn token(&mut self, token: String, key_authorization: String) {
        if let Ok(mut tokens) = self.acme.http_tokens.lock() {
            tokens.insert(token.clone(), key_authorization);
        }
        self.tokens.push(token);
    }

    fn alpn(&mut self, host: String, cert: Arc<CertifiedKey>) {
        if let Ok(mut certs) = self.acme.alpn_certs.lock() {
            certs.insert(host.clone(), cert);
        }
        self.hosts.push(host);
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        if let Ok(mut tokens) = self.acme.http_tokens.lock() {
            self.tokens.iter().for_each(|t| drop(tokens.remove(t)));
        }
        if let Ok(mut certs) = self.acme.alpn_certs.lock() {
            self.hosts.iter().for_each(|h| drop(certs.remove(h)));
        }
    }
}
