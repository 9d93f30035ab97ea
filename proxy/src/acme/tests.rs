use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use super::cache::{self, Validity};
use super::*;

#[test]
fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let v = Validity {
        not_before: start,
        not_after: start + Duration::from_secs(90 * 86_400),
    };
    assert_eq!(v.renew_at(), start + Duration::from_secs(60 * 86_400));
}

/// A certificate and key as a CA would hand them out, PEM.
fn issued(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn the_cache_keeps_certificates_and_keys_private_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("acme");
    let hosts = vec!["a.test".to_owned(), "b.test".to_owned()];
    assert!(cache::load_certificate(&cache_dir, &hosts)
        .unwrap()
        .is_none());
    let (cert, key) = issued("a.test");
    cache::save_certificate(&cache_dir, &hosts, &cert, &key).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache_dir), 0o700);
    assert_eq!(mode(&cache::cert_path(&cache_dir, &hosts)), 0o600);
    assert_eq!(mode(&cache::key_path(&cache_dir, &hosts)), 0o600);
    let loaded = cache::load_certificate(&cache_dir, &hosts)
        .unwrap()
        .unwrap();
    assert!(loaded.validity.not_after > SystemTime::now());
    // Another host set has its own files.
    assert!(cache::load_certificate(&cache_dir, &hosts[..1])
        .unwrap()
        .is_none());
    // A key that is not the certificate's is refused, not served.
    let (_, other_key) = issued("a.test");
    std::fs::write(cache::key_path(&cache_dir, &hosts), other_key).unwrap();
    let e = cache::load_certificate(&cache_dir, &hosts).err().unwrap();
    assert!(e.contains("does not belong"), "{e}");
    // A truncated or foreign certificate file is refused (and a new one ordered), not served.
    std::fs::write(
        cache::cert_path(&cache_dir, &hosts),
        &cert[..cert.len() / 2],
    )
    .unwrap();
    assert!(cache::load_certificate(&cache_dir, &hosts).is_err());
    std::fs::write(cache::cert_path(&cache_dir, &hosts), "not pem").unwrap();
    let e = cache::load_certificate(&cache_dir, &hosts).err().unwrap();
    assert!(e.contains("holds no certificate"), "{e}");
}

#[test]
fn a_validation_certificate_carries_the_key_authorization_digest() {
    let digest = [7u8; 32];
    let key = order::alpn_certificate("a.test", &digest).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
    // id-pe-acmeIdentifier (RFC 8737), critical, holding the digest as an OCTET STRING.
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("acmeIdentifier extension");
    assert!(ext.critical);
    assert_eq!(&ext.value[2..], &digest);
}

#[test]
fn wanted_host_sets_are_deduplicated_and_challenges_start_empty() {
    let acme = Acme::new(AcmeSettings {
        directory: LETS_ENCRYPT.into(),
        email: None,
        cache_dir: "/nonexistent".into(),
        ca_file: None,
        challenge: ChallengeKind::Http01,
    });
    let mut rx = acme.wanted.subscribe();
    let set = vec!["a.test".to_owned()];
    acme.want(vec![set.clone(), set.clone()]);
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), std::slice::from_ref(&set));
    acme.want(vec![set]);
    assert!(!rx.has_changed().unwrap(), "the same sets are not news");
    assert!(acme.http_challenge("token").is_none());
    assert!(acme.certificate("a.test").is_none());
}
