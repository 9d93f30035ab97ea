//! Automatic certificates (ACME, RFC 8555) for the hosts of HTTP services with
//! `tls: {acme: true}`: one certificate per service's host set, ordered from the configured CA,
//! proved by an HTTP-01 or TLS-ALPN-01 challenge the proxy answers itself, cached on disk
//! (mode 0600) so a restart reuses it, and renewed when a third of its validity is left.
//!
//! The data plane only reads: the TLS resolver asks [`Acme::certificate`] (and, for a
//! validation handshake, [`Acme::alpn_challenge`]); the HTTP handler asks
//! [`Acme::http_challenge`]. Everything else happens in one background task.

mod cache;
mod order;
mod renew;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

pub use renew::run;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ALPN protocol of a TLS-ALPN-01 validation handshake (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Which challenge proves the proxy holds a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChallengeKind {
    /// `GET http://NAME/.well-known/acme-challenge/TOKEN` on port 80 (the plain listener).
    #[value(name = "http-01")]
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on port 443 (the HTTPS listener).
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The CA's directory URL.
    pub directory: String,
    /// `mailto:` contact for the account, optional.
    pub email: Option<String>,
    /// Account key and certificates, kept across restarts.
    pub cache_dir: PathBuf,
    /// Trust this CA (PEM) for the directory's HTTPS instead of the system's (a private CA,
    /// or a test server such as pebble).
    pub ca_file: Option<PathBuf>,
    pub challenge: ChallengeKind,
}

/// The ACME state the data plane reads, and what the background task should obtain.
pub struct Acme {
    settings: AcmeSettings,
    /// Issued certificates by host name (ACME hosts are exact names).
    issued: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01: token ⇒ key authorization, while an order is being validated.
    http_tokens: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: host ⇒ its validation certificate, while an order is being validated.
    alpn_certs: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// The host sets the routes want certificates for (sorted, deduplicated).
    wanted: watch::Sender<Vec<Vec<String>>>,
}

impl Acme {
    pub fn new(settings: AcmeSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            issued: ArcSwap::default(),
            http_tokens: Mutex::default(),
            alpn_certs: Mutex::default(),
            wanted: watch::Sender::new(Vec::new()),
        })
    }

    /// The issued certificate for `host` (any case), if there is one yet.
    pub fn certificate(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.issued.load().get(&*lower(host)).cloned()
    }

    /// The key authorization for an HTTP-01 `token` being validated.
    pub fn http_challenge(&self, token: &str) -> Option<String> {
        let tokens = self.http_tokens.lock().ok()?;
        tokens.get(token).cloned()
    }

    /// The TLS-ALPN-01 validation certificate for `host`, while its order is being validated.
    pub fn alpn_challenge(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let certs = self.alpn_certs.lock().ok()?;
        certs.get(&*lower(host)).cloned()
    }

    /// Tells the background task which host sets the running routes need.
    pub fn want(&self, mut sets: Vec<Vec<String>>) {
        sets.sort();
        sets.dedup();
        self.wanted.send_if_modified(|now| {
            let changed = *now != sets;
            *now = sets;
            changed
        });
    }

    fn install(&self, hosts: &[String], key: Arc<CertifiedKey>) {
        self.issued.rcu(|now| {
            let mut next = HashMap::clone(now);
            for host in hosts {
                next.insert(host.clone(), key.clone());
            }
            next
        });
    }
}

/// `host` in lower case, copied only when it is not already.
fn lower(host: &str) -> std::borrow::Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

/// The path under which an HTTP-01 token is asked for.
pub const HTTP_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
