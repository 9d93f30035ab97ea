//! The ACME cache directory: the account's credentials and each host set's certificate and
//! key, written whole (a temporary file renamed into place) with mode 0600 in a 0700
//! directory, so that a crash never leaves half a key and no other user can read one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::AccountCredentials;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// When a certificate was issued for, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// When to renew: once two thirds of the lifetime have passed (30 days before the end of
    /// a 90-day certificate).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_after - life / 3
    }
}

/// A certificate ready to serve, and its validity.
pub struct Cached {
    pub key: Arc<CertifiedKey>,
    pub validity: Validity,
}

/// 12 hex digits of SHA-256: a file name part that stays short whatever it stands for.
fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A short, stable file name for a host set: the first host and a hash of all of them.
fn stem(hosts: &[String]) -> String {
    let first = hosts.first().map_or("none", String::as_str);
    format!("{first}-{}", short_hash(&hosts.join(",")))
}

pub fn cert_path(dir: &Path, hosts: &[String]) -> PathBuf {
    dir.join(format!("{}.crt", stem(hosts)))
}

pub fn key_path(dir: &Path, hosts: &[String]) -> PathBuf {
    dir.join(format!("{}.key", stem(hosts)))
}

fn account_path(dir: &Path, directory: &str) -> PathBuf {
    dir.join(format!("account-{}.json", short_hash(directory)))
}

/// Creates the directory (0700) if needed.
pub fn prepare(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` with mode 0600, replacing it whole.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub fn save_certificate(
    dir: &Path,
    hosts: &[String],
    chain_pem: &str,
    key_pem: &str,
) -> std::io::Result<()> {
    prepare(dir)?;
    // The key first: a certificate on disk always has its key.
    write_private(&key_path(dir, hosts), key_pem.as_bytes())?;
    write_private(&cert_path(dir, hosts), chain_pem.as_bytes())
}

/// The cached certificate for `hosts`, if there is a readable one.
pub fn load_certificate(dir: &Path, hosts: &[String]) -> Result<Option<Cached>, String> {
    let cert = cert_path(dir, hosts);
    let Ok(chain_pem) = std::fs::read(&cert) else {
        return Ok(None);
    };
    let key_pem = std::fs::read(key_path(dir, hosts))
        .map_err(|e| format!("{} has no readable key: {e}", cert.display()))?;
    parse(&chain_pem, &key_pem)
        .map(Some)
        .map_err(|e| format!("{}: {e}", cert.display()))
}

/// A PEM chain and key as a served certificate.
pub fn parse(chain_pem: &[u8], key_pem: &[u8]) -> Result<Cached, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("holds no certificate".into());
    };
    let validity = validity(leaf)?;
    let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("bad key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("unsupported key: {e}"))?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match()
        .map_err(|_| "the key does not belong to the certificate".to_owned())?;
    Ok(Cached {
        key: Arc::new(key),
        validity,
    })
}

fn validity(leaf: &CertificateDer<'_>) -> Result<Validity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("cannot read the certificate: {e}"))?;
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(Validity {
        not_before: at(cert.validity().not_before.timestamp()),
        not_after: at(cert.validity().not_after.timestamp()),
    })
}

pub fn load_account(dir: &Path, directory: &str) -> Option<AccountCredentials> {
    let bytes = std::fs::read(account_path(dir, directory)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn save_account(
    dir: &Path,
    directory: &str,
    credentials: &AccountCredentials,
) -> std::io::Result<()> {
    prepare(dir)?;
    let json = serde_json::to_vec(credentials).map_err(std::io::Error::other)?;
    write_private(&account_path(dir, directory), &json)
}

pub fn forget_account(dir: &Path, directory: &str) {
    let _ = std::fs::remove_file(account_path(dir, directory));
}
