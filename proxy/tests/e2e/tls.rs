use tokio_rustls::rustls::pki_types::ServerName;

use crate::harness::*;
use crate::pki::Pki;

#[tokio::test]
async fn https_certificates_are_chosen_by_sni() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let dir_certs = tempfile::tempdir().unwrap();
    let a_der = pki.issue(certs.path(), "a.test");
    let b_der = pki.issue(dir_certs.path(), "b.test");
    let yaml = format!(
        r#"
services:
  - id: a
    protocol: http
    hosts: [a.test]
    upstream: {}
    tls:
      cert_file: {c}/a.test.crt
      key_file: {c}/a.test.key
  - id: b
    protocol: http
    hosts: [b.test]
    upstream: {}
"#,
        a.url(),
        b.url(),
        c = certs.path().display()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .https()
        .arg("--tls-dir")
        .arg(dir_certs.path().display().to_string())
        .start()
        .await;
    let https = proxy.https.unwrap();
    let connector = pki.connector();
    for (name, der, upstream) in [("a.test", &a_der, "a"), ("b.test", &b_der, "b")] {
        let tcp = connect_from("127.0.0.1", https).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .expect("handshake");
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(&presented, der, "certificate for {name}");
        let r = request_over(tls, name, "/", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["upstream"], upstream);
        assert_eq!(r.json()["proto"], "https");
    }
    // No certificate for an unknown name: the handshake fails, nothing is served.
    let tcp = connect_from("127.0.0.1", https).await.unwrap();
    let res = connector
        .connect(ServerName::try_from("c.test").unwrap(), tcp)
        .await;
    assert!(res.is_err());
    let entries = proxy.wait_entries(2).await;
    assert_eq!(entries.len(), 2);
}

#[tokio::test]
async fn tcp_service_can_terminate_tls() {
    let echo_up = EchoUpstream::start().await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    pki.issue(certs.path(), "db.test");
    let yaml = format!(
        "services:\n  - id: db\n    protocol: tcp\n    listen: 127.0.0.1:{{p}}\n    upstream: {}\n    tls:\n      cert_file: {c}/db.test.crt\n      key_file: {c}/db.test.key\n",
        echo_up.addr,
        c = certs.path().display()
    );
    let proxy = ProxyBuilder::new(&yaml).port("p").start().await;
    let tcp = connect_from("127.0.0.1", proxy.port("p")).await.unwrap();
    let mut tls = pki
        .connector()
        .connect(ServerName::try_from("db.test").unwrap(), tcp)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"plaintext upstream").await.unwrap();
    let mut got = [0u8; 18];
    tls.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"plaintext upstream");
}

#[tokio::test]
async fn a_missing_certificate_rejects_the_config_at_start() {
    let yaml = "services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    tls:\n      cert_file: /nonexistent/a.crt\n      key_file: /nonexistent/a.key\n";
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nb-proxy"))
        .args(["--http-listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service \"a\"") && err.contains("/nonexistent/a.crt"),
        "{err}"
    );
}

#[tokio::test]
async fn wildcard_certificates_by_sni() {
    let up = Upstream::start("w").await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    pki.issue(certs.path(), "*.apps.test");
    let yaml = format!(
        "services:\n  - id: w\n    protocol: http\n    hosts: [\"*.apps.test\"]\n    upstream: {}\n    tls:\n      cert_file: \"{c}/*.apps.test.crt\"\n      key_file: \"{c}/*.apps.test.key\"\n",
        up.url(),
        c = certs.path().display()
    );
    let proxy = ProxyBuilder::new(&yaml).https().start().await;
    let tcp = connect_from("127.0.0.1", proxy.https.unwrap())
        .await
        .unwrap();
    let tls = pki
        .connector()
        .connect(ServerName::try_from("x.apps.test").unwrap(), tcp)
        .await
        .expect("wildcard certificate chosen for x.apps.test");
    let r = request_over(tls, "x.apps.test", "/", &[]).await.unwrap();
    assert_eq!(r.json()["upstream"], "w");
}

/// The certificate the HTTPS listener presents for `name`.
async fn presented(proxy: &Proxy, pki: &Pki, name: &str) -> Vec<u8> {
    let tcp = connect_from("127.0.0.1", proxy.https.unwrap())
        .await
        .unwrap();
    let tls = pki
        .connector()
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn changed_certificate_files_are_served_without_a_config_change() {
    let up = Upstream::start("a").await;
    let pki = Pki::new();
    let own = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a_der = pki.issue(own.path(), "a.test");
    let b_der = pki.issue(dir.path(), "b.test");
    let yaml = format!(
        "services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: {u}\n    tls:\n      cert_file: {c}/a.test.crt\n      key_file: {c}/a.test.key\n  - id: b\n    protocol: http\n    hosts: [b.test]\n    upstream: {u}\n",
        u = up.url(),
        c = own.path().display()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .https()
        .arg("--tls-dir")
        .arg(dir.path().display().to_string())
        .start()
        .await;
    assert_eq!(presented(&proxy, &pki, "a.test").await, a_der);
    assert_eq!(presented(&proxy, &pki, "b.test").await, b_der);

    // Renewed in place (as certbot or an ACME client would): a service's own files and a
    // --tls-dir pair, the same --tls-dir mechanism managed mode relies on.
    let a2 = pki.issue(own.path(), "a.test");
    proxy.wait_log_count("certificates reloaded", 1).await;
    let b2 = pki.issue(dir.path(), "b.test");
    proxy.wait_log_count("certificates reloaded", 2).await;
    assert_eq!(presented(&proxy, &pki, "a.test").await, a2);
    assert_eq!(presented(&proxy, &pki, "b.test").await, b2);

    // A certificate written without its key yet is refused, once, and the old pair serves on.
    // (A renewal above may have been caught between its two files: count from here.)
    let rejected = || {
        proxy
            .stderr_text()
            .matches("changed certificate files rejected")
            .count()
    };
    let before = rejected();
    let reloads = proxy.stderr_text().matches("certificates reloaded").count();
    let other = tempfile::tempdir().unwrap();
    pki.issue(other.path(), "a.test");
    std::fs::copy(
        other.path().join("a.test.crt"),
        own.path().join("a.test.crt"),
    )
    .unwrap();
    proxy
        .wait_log_count("changed certificate files rejected", before + 1)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(rejected(), before + 1, "reported once");
    assert_eq!(presented(&proxy, &pki, "a.test").await, a2);
    // Its key arrives: served.
    std::fs::copy(
        other.path().join("a.test.key"),
        own.path().join("a.test.key"),
    )
    .unwrap();
    proxy
        .wait_log_count("certificates reloaded", reloads + 1)
        .await;
    assert_ne!(presented(&proxy, &pki, "a.test").await, a2);
    let r = request_over(
        pki.connector()
            .connect(
                ServerName::try_from("a.test").unwrap(),
                connect_from("127.0.0.1", proxy.https.unwrap())
                    .await
                    .unwrap(),
            )
            .await
            .unwrap(),
        "a.test",
        "/",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn http2_over_tls_is_chosen_by_alpn_only() {
    let up = Upstream::start("a").await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    pki.issue(certs.path(), "a.test");
    let yaml = format!(
        "services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: {}\n",
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .https()
        .arg("--tls-dir")
        .arg(certs.path().display().to_string())
        .start()
        .await;
    let https = proxy.https.unwrap();
    let handshake = |alpn: &'static [&'static [u8]]| {
        let connector = pki.connector_offering(alpn);
        async move {
            let tcp = connect_from("127.0.0.1", https).await.unwrap();
            let name = ServerName::try_from("a.test").unwrap();
            connector.connect(name, tcp).await.expect("handshake")
        }
    };
    let h2_get = |tls| async move {
        let mut sender = http2_client(tls).await?;
        let req = hyper::Request::get("https://a.test/")
            .body(http_body_util::Full::default())
            .unwrap();
        sender.send_request(req).await
    };
    // ALPN h2: HTTP/2.
    let tls = handshake(&[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let resp = h2_get(tls).await.expect("an HTTP/2 answer");
    assert_eq!(
        (resp.status(), resp.version()),
        (hyper::StatusCode::OK, hyper::Version::HTTP_2)
    );
    // ALPN http/1.1, or none: HTTP/1.1.
    const HTTP1: &[&[u8]] = &[b"http/1.1"];
    for alpn in [HTTP1, &[]] {
        let tls = handshake(alpn).await;
        let r = request_over(tls, "a.test", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "ALPN {alpn:?}");
    }
    // HTTP/2 without ALPN (prior knowledge) is for cleartext only (RFC 9113, section 3.3):
    // over TLS the connection speaks HTTP/1.1, and the preface is no HTTP/1.1 request.
    let tls = handshake(&[]).await;
    assert!(h2_get(tls).await.is_err(), "HTTP/2 without ALPN was served");
}
