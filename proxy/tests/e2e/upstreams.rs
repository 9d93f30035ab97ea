//! The proxy as a front door: HTTPS and HTTP/2 upstreams, header changes, and the move of
//! plain-HTTP clients to HTTPS. Real TLS on both sides, on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::harness::*;
use crate::pki::Pki;

/// An echo upstream (see `Upstream`) behind TLS with `cfg`.
struct TlsUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    async fn start(name: &'static str, cfg: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(cfg);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_echo(TokioIo::new(tls), name).await;
                    }
                });
            }
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn service(id: &str, host: &str, upstream: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    protocol: http\n    hosts: [{host}]\n    upstream: {upstream}\n{extra}"
    )
}

/// A service's `tls` with the certificate `Pki::issue` wrote for `host` in `dir`.
fn tls_block(dir: &std::path::Path, host: &str) -> String {
    format!(
        "    tls:\n      cert_file: {c}/{host}.crt\n      key_file: {c}/{host}.key\n",
        c = dir.display()
    )
}

/// GET over plain HTTP/1.1 from 127.0.0.1: status, response headers, body.
async fn get(proxy: &Proxy, host: &str, path: &str) -> (u16, HeaderMap, String) {
    let stream = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    exchange(stream, host, path).await
}

async fn exchange<S>(stream: S, host: &str, path: &str) -> (u16, HeaderMap, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .header("x-debug", "secret")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn https_upstreams_are_verified_and_speak_http2_when_offered() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    // A self-signed-CA appliance known by a name that is not its address.
    let both = TlsUpstream::start(
        "appliance",
        pki.server_config("pve.lan", &[b"h2", b"http/1.1"]),
    )
    .await;
    let only_h1 = TlsUpstream::start("legacy", pki.server_config("pve.lan", &[b"http/1.1"])).await;
    let trusted = format!(
        "    upstream_tls:\n      ca_file: {}\n      server_name: pve.lan\n",
        ca.display()
    );
    let yaml = [
        "services:\n".to_owned(),
        service("h2", "h2.test", &both.url(), &trusted),
        service(
            "h1",
            "h1.test",
            &both.url(),
            &format!("{trusted}    upstream_protocol: http1\n"),
        ),
        service("legacy", "legacy.test", &only_h1.url(), &trusted),
        // System roots do not know the test CA.
        service("untrusted", "untrusted.test", &both.url(), ""),
        service(
            "wrong-name",
            "wrong.test",
            &both.url(),
            &format!(
                "    upstream_tls:\n      ca_file: {}\n      server_name: other.lan\n",
                ca.display()
            ),
        ),
        service(
            "insecure",
            "insecure.test",
            &both.url(),
            "    upstream_tls:\n      skip_verify: true\n",
        ),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).start().await;

    let (status, _, body) = get(&proxy, "h2.test", "/a?b=1").await;
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["version"], "HTTP/2.0", "ALPN chose h2: {seen}");
    assert_eq!(seen["authority"], "h2.test", "the routed authority: {seen}");
    assert_eq!(seen["proto"], "http");

    for (host, upstream) in [("h1.test", "appliance"), ("legacy.test", "legacy")] {
        let (status, _, body) = get(&proxy, host, "/").await;
        assert_eq!(status, 200, "{host}: {body}");
        let seen = json(&body);
        assert_eq!(seen["version"], "HTTP/1.1", "{host}: {seen}");
        assert_eq!(seen["host"], host);
        assert_eq!(seen["upstream"], upstream);
    }

    for host in ["untrusted.test", "wrong.test"] {
        let (status, _, body) = get(&proxy, host, "/").await;
        assert_eq!(status, 502, "{host}: {body}");
    }

    let (status, _, body) = get(&proxy, "insecure.test", "/").await;
    assert_eq!(status, 200, "{body}");

    let entries = proxy.wait_entries(6).await;
    let error_of = |host: &str| {
        entries
            .iter()
            .find(|e| e["host"] == host)
            .map(|e| e["metadata"]["upstream_error"].clone())
            .unwrap_or_else(|| panic!("no entry for {host}: {entries:?}"))
    };
    assert_eq!(
        error_of("untrusted.test"),
        "upstream certificate not trusted"
    );
    assert_eq!(error_of("wrong.test"), "upstream certificate not trusted");
    let log = proxy.stderr_text();
    assert_eq!(
        log.matches("upstream_tls.skip_verify").count(),
        1,
        "warned once: {log}"
    );
    assert!(
        log.contains("TLS handshake with the upstream failed"),
        "{log}"
    );
}

#[tokio::test]
async fn h2c_upstreams_get_http2_by_prior_knowledge_and_keep_one_connection() {
    let up = Upstream::start("grpc-ish").await;
    let yaml = [
        "services:\n".to_owned(),
        service("c", "c.test", &up.url(), "    upstream_protocol: h2c\n"),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).start().await;
    let mut sender = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    for path in ["/one", "/two", "/three"] {
        let r = send(&mut sender, "c.test", path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = r.json();
        assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
        assert_eq!(seen["authority"], "c.test");
        assert_eq!(seen["xff"], "127.0.0.1");
    }
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one HTTP/2 connection carried the three requests"
    );
}

#[tokio::test]
async fn headers_are_changed_both_ways_and_the_client_address_stays_decided() {
    let up = Upstream::start("h").await;
    let extra = "    headers:\n      request:\n        set: {X-Env: prod}\n        add: {X-Tag: nb}\n        remove: [X-Debug]\n      response:\n        set: {X-Frame-Options: DENY}\n        remove: [Server]\n";
    let yaml = [
        "services:\n".to_owned(),
        service("h", "h.test", &up.url(), extra),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).start().await;
    let (status, headers, body) = get(&proxy, "h.test", "/").await;
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    let h = &seen["headers"];
    assert_eq!(h["x-env"], serde_json::json!(["prod"]), "{seen}");
    assert_eq!(h["x-tag"], serde_json::json!(["nb"]), "{seen}");
    assert!(h.get("x-debug").is_none(), "removed: {seen}");
    assert_eq!(h["x-real-ip"], serde_json::json!(["127.0.0.1"]), "{seen}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers.get("server").is_none(), "{headers:?}");

    // A header that would forge the client address is refused with the config.
    proxy
        .rewrite_config(
            &[
                "services:\n".to_owned(),
                service(
                    "h",
                    "h.test",
                    &up.url(),
                    "    headers:\n      request:\n        set: {X-Forwarded-For: 10.0.0.1}\n",
                ),
            ]
            .concat(),
            "X-Forwarded-For is managed by the proxy",
        )
        .await;
    let (status, _, _) = get(&proxy, "h.test", "/").await;
    assert_eq!(status, 200, "the running config stays");
}

#[tokio::test]
async fn plain_http_moves_to_https_for_hosts_with_a_certificate() {
    let up = Upstream::start("s").await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    pki.issue(certs.path(), "secure.test");
    pki.issue(certs.path(), "optout.test");
    let tls = |host: &str| tls_block(certs.path(), host);
    let yaml = [
        "services:\n".to_owned(),
        service(
            "secure",
            "secure.test",
            &up.url(),
            &format!(
                "{}    hsts:\n      max_age: 63072000\n      include_subdomains: true\n",
                tls("secure.test")
            ),
        ),
        service(
            "optout",
            "optout.test",
            &up.url(),
            &format!("{}    https_redirect: false\n", tls("optout.test")),
        ),
        service(
            "plain",
            "plain.test",
            &up.url(),
            "    restrictions:\n      cidr_deny: [127.0.0.9]\n",
        ),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).https().start().await;
    let https = proxy.https.unwrap();

    let (status, headers, _) = get(&proxy, "secure.test", "/login?next=%2F").await;
    assert_eq!(status, 308);
    assert_eq!(
        headers["location"],
        format!("https://secure.test:{}/login?next=%2F", https.port())
    );
    assert!(
        headers.get("strict-transport-security").is_none(),
        "not over plain HTTP"
    );

    let (status, _, _) = get(&proxy, "optout.test", "/").await;
    assert_eq!(status, 200, "https_redirect: false");
    let (status, _, _) = get(&proxy, "plain.test", "/").await;
    assert_eq!(status, 200, "no certificate, no redirect");

    let tcp = connect_from("127.0.0.1", https).await.unwrap();
    let stream = pki
        .connector()
        .connect(ServerName::try_from("secure.test").unwrap(), tcp)
        .await
        .unwrap();
    let (status, headers, _) = exchange(stream, "secure.test", "/login").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );

    let entries = proxy.wait_entries(4).await;
    let redirect = entries
        .iter()
        .find(|e| e["status"] == 308)
        .expect("the redirect is logged");
    assert_eq!(
        redirect["deny_reason"], "",
        "allowed, then redirected: {redirect}"
    );
    assert_eq!(redirect["service_id"], "secure");
    assert_eq!(redirect["host"], "secure.test");
}

#[tokio::test]
async fn a_denied_client_is_denied_before_it_is_redirected() {
    let up = Upstream::start("s").await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    pki.issue(certs.path(), "secure.test");
    let yaml = [
        "services:\n".to_owned(),
        service(
            "secure",
            "secure.test",
            &up.url(),
            &format!(
                "{}    restrictions:\n      cidr_deny: [127.0.0.9]\n",
                tls_block(certs.path(), "secure.test")
            ),
        ),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).https().start().await;
    assert_eq!(status_of(&proxy, "127.0.0.9", "secure.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.1", "secure.test").await, 308);
}
