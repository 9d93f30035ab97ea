//! Automatic certificates against Debian's `pebble` ACME test server, started per test with
//! `pebble-challtestsrv` as its DNS (every name ⇒ 127.0.0.1), so the CA really checks the
//! HTTP-01 and TLS-ALPN-01 challenges against the proxy's listeners.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nb_e2e::ports::reserve_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::harness::*;
use crate::pki::{connector_trusting, Pki};

struct Pebble {
    dir: tempfile::TempDir,
    directory: String,
    management: u16,
    pki: Pki,
    children: Vec<Child>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pebble {
    /// Validates challenges on `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01); issues
    /// certificates valid for `validity_secs`.
    async fn start(http_port: u16, tls_port: u16, validity_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        pki.issue(dir.path(), "localhost");
        let (api, management, dns, dns_management) = (
            reserve_port(),
            reserve_port(),
            reserve_port(),
            reserve_port(),
        );
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("localhost.crt"),
            "privateKey": dir.path().join("localhost.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) runs");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (Debian package pebble) runs");
        let p = Self {
            directory: format!("https://localhost:{api}/dir"),
            management,
            pki,
            children: vec![dns_server, pebble],
            dir,
        };
        // Generous: pebble starts slowly when the whole suite loads both cores (2.5 s was
        // once not enough in a full run).
        for port in [api, management] {
            poll(600, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            })
            .await
            .unwrap_or_else(|| panic!("pebble listens on {port}: {}", p.log()));
        }
        p
    }

    fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read("pebble.log") + &read("pebble.err")
    }

    /// The CA pebble's HTTPS (its own, from the test's PKI) is signed by.
    fn ca_file(&self) -> PathBuf {
        self.pki.write_ca(self.dir.path())
    }

    /// The root pebble issues under (random per run), from its management interface.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.management))
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = self.pki.connector().connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw);
        let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        CertificateDer::from_pem_slice(body.as_bytes()).expect("a PEM root")
    }
}

/// The proxy flags that point it at `pebble`.
fn acme_flags(b: ProxyBuilder, directory: &str, ca: &Path, cache: &Path) -> ProxyBuilder {
    b.arg("--acme-directory")
        .arg(directory)
        .arg("--acme-ca-file")
        .arg(ca.to_str().unwrap())
        .arg("--acme-cache-dir")
        .arg(cache.to_str().unwrap())
        .arg("--acme-email")
        .arg("ops@example.test")
}

/// The CA checks from 127.0.0.1, which the service's rules deny: challenges are answered
/// before access rules.
fn acme_service(up: &Upstream) -> String {
    format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    tls: {{acme: true}}\n    restrictions:\n      cidr_deny: [127.0.0.1/32, 127.0.0.9/32]\n",
        up.url()
    )
}

/// The certificate chain presented for `name` on `port`, when it verifies against `root`.
async fn verified_chain(port: u16, root: &CertificateDer<'static>, name: &str) -> Option<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let server = ServerName::try_from(name.to_owned()).unwrap();
    let tls = connector_trusting(root.clone())
        .connect(server, tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

/// Waits up to `secs` for a verified certificate for `name` other than `not`.
async fn wait_for_certificate(
    port: u16,
    root: &CertificateDer<'static>,
    name: &str,
    not: Option<&[u8]>,
    secs: u64,
) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if let Some(cert) = verified_chain(port, root, name).await {
            if not != Some(cert.as_slice()) {
                return Some(cert);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_certificate_is_issued_by_http_01_kept_private_and_reused_after_a_restart() {
    let up = Upstream::start("web").await;
    let (http, https) = (reserve_port(), reserve_port());
    let pebble = Pebble::start(http, reserve_port(), 3600).await;
    let root = pebble.issuing_root().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("acme");
    let start = |directory: &str| {
        acme_flags(
            ProxyBuilder::new(&acme_service(&up)),
            directory,
            &pebble.ca_file(),
            &cache,
        )
        .http_port(http)
        .arg("--https-listen")
        .arg(format!("127.0.0.1:{https}"))
        .start()
    };
    let proxy = start(&pebble.directory).await;
    let Some(first) = wait_for_certificate(https, &root, "web.test", None, 30).await else {
        panic!(
            "no certificate from pebble\nproxy: {}\npebble: {}",
            std::fs::read_to_string(&proxy.stderr).unwrap_or_default(),
            pebble.log()
        );
    };
    // The CA fetched the token through the proxy's plain listener.
    let entries = proxy.wait_entries(1).await;
    let challenge = entries
        .iter()
        .find(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/.well-known/acme-challenge/"))
        })
        .expect("the CA's HTTP-01 request is in the access log");
    assert_eq!(challenge["status"], 200);

    // Plain HTTP is redirected to the new certificate, after the access rules; a token the
    // proxy is not answering is an ordinary request.
    assert_eq!(status_of(&proxy, "127.0.0.10", "web.test").await, 308);
    assert_eq!(status_of(&proxy, "127.0.0.9", "web.test").await, 403);
    let unknown = get_from(
        &proxy,
        "127.0.0.9",
        "web.test",
        "/.well-known/acme-challenge/x",
    )
    .await;
    assert_eq!(unknown.status, 403);

    // A handshake that offers only acme-tls/1 while no order is open gets no certificate at
    // all (not the served one, and no way to reach the service).
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https))
        .await
        .unwrap();
    let validation = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("web.test").unwrap(), tcp)
        .await;
    assert!(
        validation.is_err(),
        "no validation certificate outside an order"
    );

    // The account and the certificate are cached privately.
    assert_eq!(mode(&cache), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let has = |suffix: &str| files.iter().any(|f| f.to_string_lossy().ends_with(suffix));
    assert!(has(".json") && has(".crt") && has(".key"), "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    drop(proxy);

    // Restarted with a CA that cannot be reached: the cached certificate is served at once.
    let dead = format!("https://localhost:{}/dir", reserve_port());
    let proxy = start(&dead).await;
    let again = wait_for_certificate(https, &root, "web.test", None, 5).await;
    assert_eq!(
        again.as_deref(),
        Some(first.as_slice()),
        "the cached certificate"
    );
    let log = std::fs::read_to_string(&proxy.stderr).unwrap();
    assert!(
        log.contains("ACME certificate loaded from the cache"),
        "{log}"
    );
}

#[tokio::test]
async fn tls_alpn_01_issues_and_a_short_lived_certificate_is_renewed() {
    let up = Upstream::start("web").await;
    let https = reserve_port();
    // HTTP-01 would be checked on a port nothing listens on: only TLS-ALPN-01 can succeed.
    let pebble = Pebble::start(reserve_port(), https, 12).await;
    let root = pebble.issuing_root().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let proxy = acme_flags(
        ProxyBuilder::new(&acme_service(&up)),
        &pebble.directory,
        &pebble.ca_file(),
        &cache_dir.path().join("acme"),
    )
    .arg("--acme-challenge")
    .arg("tls-alpn-01")
    .arg("--https-listen")
    .arg(format!("127.0.0.1:{https}"))
    .start()
    .await;
    let stderr = || std::fs::read_to_string(&proxy.stderr).unwrap_or_default();
    let Some(first) = wait_for_certificate(https, &root, "web.test", None, 30).await else {
        panic!(
            "no certificate\nproxy: {}\npebble: {}",
            stderr(),
            pebble.log()
        );
    };
    // Renewed when a third of its 12 s is left, and served without a restart.
    let Some(renewed) = wait_for_certificate(https, &root, "web.test", Some(&first), 30).await
    else {
        panic!("not renewed\nproxy: {}\npebble: {}", stderr(), pebble.log());
    };
    assert_ne!(first, renewed);
    assert!(
        stderr().matches("ACME certificate obtained").count() >= 2,
        "{}",
        stderr()
    );
    let entries = proxy.entries();
    assert!(
        entries.iter().all(|e| !e["path"]
            .as_str()
            .unwrap_or("")
            .starts_with("/.well-known/")),
        "no HTTP-01 request: {entries:?}"
    );
}
